//! What a run writes: the per-layer table on the terminal, `layers.csv` (tidy statistics),
//! `sequences.csv` (per sequence and layer), `manifest.json`, and the JSON document of
//! `--format json`. Files are written atomically (temporary file, then rename); an output
//! directory is probed before the compute so that an unwritable one fails early.

use crate::config::Config;
use crate::engine::RunOutput;
use crate::metrics::{summarize, Metric, Summary};
use anyhow::Context;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Statistics over sequences: `summaries[layer]` lists (metric, summary) for the metrics that
/// were computed at that layer.
pub fn summaries(out: &RunOutput) -> Vec<Vec<(Metric, Summary)>> {
    let layers = out.per_sequence.first().map_or(0, |h| h.len());
    (0..layers)
        .map(|l| {
            Metric::ALL
                .into_iter()
                .filter_map(|metric| {
                    let vals: Vec<f64> = out.per_sequence.iter().filter_map(|h| h[l].get(metric)).collect();
                    (!vals.is_empty()).then(|| (metric, summarize(metric, &vals)))
                })
                .collect()
        })
        .collect()
}

/// The configuration with every derived default filled in.
pub fn resolved(cfg: &Config) -> Config {
    let mut c = cfg.clone();
    c.head_rank = Some(cfg.head_rank());
    c.value_dim = Some(cfg.value_dim());
    c.temperature = Some(cfg.temperature());
    c
}

/// A number for JSON: non-finite values become the strings "inf", "-inf", "nan".
pub fn num(x: f64) -> Value {
    if x.is_finite() {
        json!(x)
    } else if x.is_nan() {
        json!("nan")
    } else if x > 0.0 {
        json!("inf")
    } else {
        json!("-inf")
    }
}

/// Where the non-finite values of a run are: counts per layer and metric (non-zero only), split
/// into withheld values and numerical faults. The engine marks both as NaN, so the split is by
/// metric ([`Metric::withheld_below_floor`]), corrected by the sequences' recorded faults
/// ([`Nonfinite::with_faults`]): a faulted sequence's values are faults in every metric.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Nonfinite {
    /// All non-finite values, per layer and metric.
    pub by_layer: BTreeMap<usize, BTreeMap<String, usize>>,
    /// The withheld part of `by_layer`.
    withheld_by_layer: BTreeMap<usize, BTreeMap<String, usize>>,
    pub withheld: usize,
    pub faults: usize,
}

impl Nonfinite {
    pub fn of_stats(stats: &[Vec<(Metric, Summary)>]) -> Nonfinite {
        let mut n = Nonfinite::default();
        for (layer, ms) in stats.iter().enumerate() {
            for (metric, s) in ms {
                n.add(layer, metric.name(), s.nonfinite);
            }
        }
        n
    }

    /// The non-finite values of a run: its statistics', with its sequences' faults.
    pub fn of_run(out: &RunOutput, stats: &[Vec<(Metric, Summary)>]) -> Nonfinite {
        Nonfinite::of_stats(stats).with_faults(out.faults.iter().map(|f| f.layer))
    }

    pub fn add(&mut self, layer: usize, metric: &str, count: usize) {
        if count == 0 {
            return;
        }
        *self.by_layer.entry(layer).or_default().entry(metric.to_string()).or_default() += count;
        if Metric::from_name(metric).is_some_and(Metric::withheld_below_floor) {
            *self.withheld_by_layer.entry(layer).or_default().entry(metric.to_string()).or_default() += count;
            self.withheld += count;
        } else {
            self.faults += count;
        }
    }

    /// Counts as faults the values of the sequences that met a numerical fault (one per fault,
    /// given by its layer): from that layer on, such a sequence has one NaN in every metric, which
    /// in a withheld metric is not a withheld value.
    pub fn with_faults(mut self, fault_layers: impl IntoIterator<Item = usize>) -> Nonfinite {
        for first in fault_layers {
            for (_, metrics) in self.withheld_by_layer.range_mut(first..) {
                for count in metrics.values_mut().filter(|c| **c > 0) {
                    *count -= 1;
                    self.withheld -= 1;
                    self.faults += 1;
                }
            }
        }
        self
    }

    pub fn total(&self) -> usize {
        self.withheld + self.faults
    }

    /// `{ "<layer>": { "<metric>": count } }`, only where the count is not zero.
    pub fn by_layer_json(&self) -> Value {
        json!(self.by_layer.iter().map(|(l, ms)| (l.to_string(), ms)).collect::<BTreeMap<_, _>>())
    }

    /// The counts of several runs added up (a sweep's points), without where the values are.
    pub fn totals(withheld: usize, faults: usize) -> Nonfinite {
        Nonfinite { withheld, faults, ..Nonfinite::default() }
    }

    /// The one wording of the non-finite values left out of the statistics, for the warning of
    /// `run` and the reports of `sweep run`, `status` and `merge`: "4 withheld values (below
    /// 1.2e-7 of the sigma_1 they are resolved against; not a fault): sigma_ratio 4 (layers 3-5);
    /// 2 numerical faults: res_fro 2 (layers 2-3)". `floor` is the resolution floor of
    /// sigma_ratio where one floor holds for every value (a sweep's points may differ: None). A
    /// run's values say where they are and leave out an empty part; [`Nonfinite::totals`] say
    /// both counts.
    pub fn message(&self, floor: Option<f64>) -> String {
        let why = match floor {
            Some(floor) => format!("below {floor:.1e} of the sigma_1 they are resolved against"),
            None => "sigma_ratio below its resolution floor".to_string(),
        };
        let withheld = format!("{} withheld values ({why}; not a fault)", self.withheld);
        let faults = format!("{} numerical faults", self.faults);
        if self.by_layer.is_empty() {
            return format!("{withheld}; {faults}");
        }
        let mut parts = Vec::new();
        if self.withheld > 0 {
            parts.push(format!("{withheld}: {}", self.describe(true)));
        }
        if self.faults > 0 {
            parts.push(format!("{faults}: {}", self.describe(false)));
        }
        parts.join("; ")
    }

    /// "sigma_ratio 4 (layers 3-5), log10_sigma_ratio 4 (layers 3-5)": the counts per metric and
    /// the layers where they occur, of the withheld values or of the faults, for warnings and
    /// `sweep status`.
    pub fn describe(&self, withheld: bool) -> String {
        let mut per_metric: BTreeMap<&str, (usize, Vec<usize>)> = BTreeMap::new();
        for (l, ms) in &self.by_layer {
            for (m, total) in ms {
                let held = self.withheld_by_layer.get(l).and_then(|w| w.get(m)).copied().unwrap_or(0);
                let k = if withheld { held } else { total - held };
                if k > 0 {
                    let e = per_metric.entry(m.as_str()).or_default();
                    e.0 += k;
                    e.1.push(*l);
                }
            }
        }
        let order = |m: &str| Metric::from_name(m).map_or(usize::MAX, |m| m as usize);
        let mut metrics: Vec<_> = per_metric.into_iter().collect();
        metrics.sort_by_key(|(m, _)| order(m));
        metrics
            .iter()
            .map(|(m, (k, layers))| format!("{m} {k} (layers {})", ranges(layers)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// "0-2, 5": sorted layer numbers as ranges.
fn ranges(xs: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < xs.len() {
        let mut j = i;
        while j + 1 < xs.len() && xs[j + 1] == xs[j] + 1 {
            j += 1;
        }
        out.push(if i == j { xs[i].to_string() } else { format!("{}-{}", xs[i], xs[j]) });
        i = j + 1;
    }
    out.join(", ")
}

pub fn manifest(
    cfg: &Config,
    out: &RunOutput,
    stats: &[Vec<(Metric, Summary)>],
    total_seconds: f64,
) -> Value {
    let nonfinite = Nonfinite::of_run(out, stats);
    json!({
        "tool": "rankcollapse",
        "version": env!("CARGO_PKG_VERSION"),
        "git_commit": env!("RANKCOLLAPSE_GIT_COMMIT"),
        "config": resolved(cfg),
        "seed": cfg.seed,
        "engine": out.engine,
        "engine_reason": out.engine_reason,
        "adapter": Value::Null,
        "threads": out.threads,
        "timings": { "compute_seconds": out.compute_seconds, "total_seconds": total_seconds },
        "nonfinite": nonfinite.total(),
        "nonfinite_withheld": nonfinite.withheld,
        "nonfinite_faults": nonfinite.faults,
        "nonfinite_by_layer": nonfinite.by_layer_json(),
        "faults": out.faults,
        "created_unix": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    })
}

/// The whole result as one JSON document (for `--format json`).
pub fn result_json(manifest: Value, stats: &[Vec<(Metric, Summary)>]) -> Value {
    let layers: Vec<Value> = stats
        .iter()
        .enumerate()
        .map(|(l, ms)| {
            let metrics: serde_json::Map<String, Value> = ms
                .iter()
                .map(|(name, s)| {
                    (
                        name.to_string(),
                        json!({
                            "mean": num(s.mean), "std": num(s.std), "median": num(s.median),
                            "p05": num(s.p05), "p95": num(s.p95), "count": s.count, "nonfinite": s.nonfinite,
                        }),
                    )
                })
                .collect();
            json!({ "layer": l, "metrics": metrics })
        })
        .collect();
    json!({ "manifest": manifest, "layers": layers })
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so a
/// reader (or a resumed sweep) sees the old file or the whole new one. On any error the
/// temporary file is removed and `path` is left as it was.
///
/// Test hook: `RANKCOLLAPSE_TEST_FAIL_WRITE=<file name>` sends the bytes for that file to
/// `/dev/full` instead of its temporary file, so the write fails with the operating system's
/// own "no space left on device" on this code path.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = dir.join(temp_name(name));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let written = (|| -> anyhow::Result<()> {
        let mut file = file;
        if std::env::var(FAIL_WRITE_HOOK).is_ok_and(|v| v == name) {
            file = std::fs::OpenOptions::new().write(true).open("/dev/full")?;
        }
        file.write_all(bytes).with_context(|| format!("writing {}", tmp.display()))?;
        file.sync_all().with_context(|| format!("writing {}", tmp.display()))?;
        drop(file);
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// The test hook of [`write_atomic`].
pub const FAIL_WRITE_HOOK: &str = "RANKCOLLAPSE_TEST_FAIL_WRITE";

/// What marks a temporary file of [`write_atomic`]: `.<name>.tmp-<host>-<pid>-<n>`.
const TEMP_MARKER: &str = ".tmp-";

/// A temporary name unique among the processes of all hosts that share a directory (host, pid
/// and a counter); `create_new` refuses a clash all the same.
fn temp_name(target: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(".{target}{TEMP_MARKER}{}-{}-{n}", host(), std::process::id())
}

/// This host's name as file names may carry it ("" where the system does not say).
fn host() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '_' { c } else { '_' })
            .collect()
    })
}

/// Removes the temporary files of [`write_atomic`] in `dir` that no live process is writing:
/// those of a process of this host that no longer exists (ended by SIGKILL or a second signal),
/// and any last modified more than `older_than` ago (another host's, whose process this host
/// cannot see). Returns what it removed.
pub fn remove_stale_temps(dir: &Path, older_than: std::time::Duration) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let (now, here, me) = (std::time::SystemTime::now(), host(), std::process::id().to_string());
    let mut removed = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(tag) = name.strip_prefix('.').and_then(|n| n.rsplit_once(TEMP_MARKER)).map(|(_, t)| t)
        else {
            continue;
        };
        // tag = <host>-<pid>-<n>; the host may itself hold '-' only as '_'.
        let mut fields = tag.rsplitn(3, '-');
        let (_n, pid, from) = (fields.next(), fields.next().unwrap_or(""), fields.next().unwrap_or(""));
        let dead_here = !here.is_empty()
            && from == here
            && pid != me
            && !pid.is_empty()
            && !Path::new("/proc").join(pid).exists();
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).is_ok_and(|age| age > older_than));
        if (dead_here || old) && std::fs::remove_file(e.path()).is_ok() {
            removed.push(e.path());
        }
    }
    removed
}

/// Creates `dir` if needed and checks that a file can be created, written, synced and removed
/// there, so an unwritable or full output directory is an error before any compute. The error
/// names the directory and carries the operating system's error.
pub fn probe_output_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("output directory {} cannot be created", dir.display()))?;
    let probe = dir.join(temp_name("write-probe"));
    let written = std::fs::OpenOptions::new().write(true).create_new(true).open(&probe).and_then(|mut f| {
        let r = f.write_all(b"rankcollapse write probe\n").and_then(|_| f.sync_all());
        drop(f);
        let removed = std::fs::remove_file(&probe);
        r.and(removed)
    });
    written.with_context(|| format!("output directory {} is not writable", dir.display()))
}

pub fn layers_csv(stats: &[Vec<(Metric, Summary)>]) -> anyhow::Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["layer", "metric", "mean", "std", "median", "p05", "p95", "count", "nonfinite"])?;
    for (l, ms) in stats.iter().enumerate() {
        for (name, s) in ms {
            w.write_record([
                l.to_string(),
                name.to_string(),
                s.mean.to_string(),
                s.std.to_string(),
                s.median.to_string(),
                s.p05.to_string(),
                s.p95.to_string(),
                s.count.to_string(),
                s.nonfinite.to_string(),
            ])?;
        }
    }
    Ok(w.into_inner()?)
}

pub fn sequences_csv(out: &RunOutput) -> anyhow::Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["sequence".to_string(), "layer".to_string()];
    header.extend(Metric::ALL.iter().map(|m| m.to_string()));
    w.write_record(&header)?;
    for (s, hist) in out.per_sequence.iter().enumerate() {
        for (l, m) in hist.iter().enumerate() {
            let mut rec = vec![s.to_string(), l.to_string()];
            rec.extend(m.iter().map(|(_, v)| v.map_or(String::new(), |x| x.to_string())));
            w.write_record(&rec)?;
        }
    }
    Ok(w.into_inner()?)
}

/// The readable per-layer table: the main metrics as mean ± std over sequences.
pub fn table(stats: &[Vec<(Metric, Summary)>]) -> String {
    let cols = [
        (Metric::Log10ResFro, "log10 res_fro"),
        (Metric::Log10ResDong, "log10 res_dong"),
        (Metric::StableRank, "stable rank"),
        (Metric::Log10SigmaRatio, "log10 sigma2/sigma1"),
        (Metric::MeanAbsCos, "mean |cos|"),
        (Metric::AttnEntropy, "attn entropy"),
    ];
    let fmt = |x: f64| {
        if x.is_finite() && x != 0.0 && (x.abs() >= 1e5 || x.abs() < 1e-3) {
            format!("{x:.3e}")
        } else if x.is_finite() {
            format!("{x:.4}")
        } else {
            format!("{x}")
        }
    };
    let mut out = format!("{:>5}", "layer");
    for (_, title) in cols {
        out += &format!("  {title:>24}");
    }
    out += "\n";
    for (l, ms) in stats.iter().enumerate() {
        out += &format!("{l:>5}");
        for (key, _) in cols {
            let cell = ms
                .iter()
                .find(|(n, _)| *n == key)
                .map(|(_, s)| {
                    let bad = if s.nonfinite > 0 { format!(" [{} bad]", s.nonfinite) } else { String::new() };
                    format!("{} ± {}{bad}", fmt(s.mean), fmt(s.std))
                })
                .unwrap_or_else(|| "-".to_string());
            out += &format!("  {cell:>24}");
        }
        out += "\n";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two sequences at depth 3, sequence 1 faulted at layer 2: its NaN in sigma_ratio at layers
    /// 2 and 3 are faults, and sequence 0's withheld sigma_ratio at layer 3 stays withheld.
    #[test]
    fn faulted_sequences_count_as_faults_in_withheld_metrics_too() {
        let mut n = Nonfinite::default();
        n.add(2, "sigma_ratio", 1);
        n.add(2, "res_fro", 1);
        n.add(3, "sigma_ratio", 2);
        n.add(3, "res_fro", 1);
        assert_eq!((n.withheld, n.faults), (3, 2), "by metric alone");
        let n = n.with_faults([2]);
        assert_eq!((n.withheld, n.faults), (1, 4));
        assert_eq!(n.total(), 5);
        assert_eq!(n.describe(true), "sigma_ratio 1 (layers 3)");
        assert_eq!(n.describe(false), "res_fro 2 (layers 2-3), sigma_ratio 2 (layers 2-3)");
        // The per-layer map (the manifest's) still holds every value.
        assert_eq!(n.by_layer[&3]["sigma_ratio"], 2);
        // A fault never turns more values into faults than there are.
        let mut m = Nonfinite::default();
        m.add(1, "log10_sigma_ratio", 1);
        let m = m.with_faults([1, 1, 1]);
        assert_eq!((m.withheld, m.faults), (0, 1));
    }

    /// A run's values say where they are and leave out an empty part; a sweep's totals say both
    /// counts (`sweep status` lists "0 withheld values" of a point that only faulted).
    #[test]
    fn the_nonfinite_message_of_a_run_and_of_totals() {
        let mut n = Nonfinite::default();
        n.add(3, "sigma_ratio", 4);
        assert_eq!(
            n.message(Some(1.5e-5)),
            "4 withheld values (below 1.5e-5 of the sigma_1 they are resolved against; not a fault): \
             sigma_ratio 4 (layers 3)"
        );
        assert_eq!(
            Nonfinite::totals(0, 64).message(None),
            "0 withheld values (sigma_ratio below its resolution floor; not a fault); 64 numerical faults"
        );
    }

    #[test]
    fn stray_temporary_files_of_dead_writers_on_this_host_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join(format!(".a.json{TEMP_MARKER}{}-4294967295-0", host()));
        let mine = dir.path().join(temp_name("b.json"));
        let elsewhere = dir.path().join(format!(".c.json{TEMP_MARKER}otherhost-1-0"));
        let unrelated = dir.path().join(".hidden");
        for p in [&dead, &mine, &elsewhere, &unrelated] {
            std::fs::write(p, b"").unwrap();
        }
        let removed = remove_stale_temps(dir.path(), std::time::Duration::from_secs(3600));
        assert_eq!(removed, vec![dead.clone()]);
        assert!(mine.exists() && elsewhere.exists() && unrelated.exists());
        // Past the age limit, any writer's temporary file goes (not other files).
        let removed = remove_stale_temps(dir.path(), std::time::Duration::ZERO);
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert!(unrelated.exists());
    }

    #[test]
    fn a_failed_atomic_write_leaves_the_old_file_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.txt");
        write_atomic(&path, b"old").unwrap();
        // A target inside a missing directory fails at creation; a directory in the way of the
        // rename fails after the bytes are written.
        assert!(write_atomic(&dir.path().join("missing/f.txt"), b"x").is_err());
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/inside"), b"").unwrap();
        let err = write_atomic(&dir.path().join("d"), b"new").unwrap_err();
        assert!(format!("{err:#}").contains("renaming"), "{err:#}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.contains(TEMP_MARKER)), "{names:?}");
    }
}
