//! Sweeps: `sweep run` (this process's shard of a spec, resumable), `sweep plan` (points,
//! shards, cost, and Slurm / Kubernetes job files), `sweep status` and `sweep merge` (from the
//! files alone). Slurm job arrays and Kubernetes Indexed Jobs are the distributed engine: each
//! task runs one shard, chosen from its environment. A stop request (SIGINT/SIGTERM, see
//! `signals`) abandons the point in flight without recording it.

pub mod emit;
pub mod spec;
pub mod store;
pub mod workers;

pub use workers::{parse_devices, Devices};

use crate::output::Nonfinite;
use crate::signals::stop_requested;
use spec::{Point, Shard, Spec};
use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

/// The effective spec: the file plus `--set` overrides.
pub fn load(spec_file: &Path, sets: &[String]) -> anyhow::Result<Spec> {
    let text = std::fs::read_to_string(spec_file)
        .map_err(|e| anyhow::anyhow!("reading sweep spec {}: {e}", spec_file.display()))?;
    let sets: Vec<(String, toml::Value)> =
        sets.iter().map(|s| spec::parse_set(s)).collect::<anyhow::Result<_>>()?;
    Spec::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", spec_file.display()))?.with_overrides(&sets)
}

pub struct RunOptions<'a> {
    pub out: &'a Path,
    pub force: bool,
    pub shard: Option<Shard>,
    pub threads: Option<usize>,
    /// The workers and the engine for the points whose configuration says auto (`--devices`).
    pub devices: Devices,
    /// The number of the signal that asked to stop (0: none), set by `signals::stop_on_signals`.
    pub stop: &'a AtomicUsize,
}

/// What `sweep run` did with this process's shard.
#[derive(Debug, Default)]
pub struct RunReport {
    /// Points of the shard (done before or now).
    pub shard_points: usize,
    /// Points of the shard whose record says done.
    pub done: usize,
    /// Points that failed in this run.
    pub failed: usize,
    /// Why each GPU worker that lost its device stopped (`--devices gpu:...`).
    pub lost: Vec<String>,
    /// Points of the shard left undone because every GPU worker lost its device (not recorded).
    pub unfinished: Vec<String>,
    /// Done points of the shard with non-finite values: (id, withheld, faults).
    pub nonfinite: Vec<(String, usize, usize)>,
    /// Whether this run wrote `merged.csv` (the sweep is complete).
    pub merged: bool,
    /// The stop request that ended the run early: the signal, and the points abandoned (those in
    /// flight; none, or one per worker).
    pub interrupted: Option<(usize, Vec<String>)>,
}

impl RunReport {
    /// The exit code without an interruption: 1 when a point failed, has non-finite values or
    /// was left undone by lost devices.
    pub fn code(&self) -> i32 {
        i32::from(self.failed > 0 || !self.nonfinite.is_empty() || !self.unfinished.is_empty())
    }
}

/// Stray temporary files older than this are removed when a sweep starts, whichever host wrote
/// them; a live write takes milliseconds.
const STALE_TEMP_AGE: Duration = Duration::from_secs(3600);

/// Runs every point of this process's shard that is not finished, on the workers of `--devices`
/// (`workers`). A stop request abandons the points in flight (not recorded, so a rerun computes
/// them) and returns at once.
pub fn run(spec: &Spec, opts: &RunOptions) -> anyhow::Result<RunReport> {
    let points = spec.expand()?;
    crate::output::probe_output_dir(opts.out)?;
    store::init(opts.out, spec, opts.force)?;
    crate::output::probe_output_dir(&opts.out.join("points"))?;
    let stale: Vec<_> = [opts.out.to_path_buf(), opts.out.join("points")]
        .iter()
        .flat_map(|d| crate::output::remove_stale_temps(d, STALE_TEMP_AGE))
        .collect();
    if !stale.is_empty() {
        log(&format!("removed {} stray temporary files of an interrupted run", stale.len()));
    }
    let shard = match opts.shard {
        Some(s) => s,
        None => Shard::from_env(|k| std::env::var(k).ok())?.unwrap_or(Shard::ALL),
    };
    let mine: Vec<&Point> = shard.select(&points);
    if let Some(engine) = opts.devices.engine() {
        let asks = |p: &&&Point| p.config.engine != crate::config::Engine::Auto && p.config.engine != engine;
        if let Some(p) = mine.iter().find(asks) {
            anyhow::bail!(
                "--devices {} contradicts point {} of this shard, whose engine is {} (drop --devices, \
                 or --set engine=auto)",
                opts.devices,
                p.id,
                p.config.engine
            );
        }
    }
    let todo: Vec<&Point> = mine
        .iter()
        .copied()
        .filter(|p| opts.force || store::status(opts.out, p) != store::Status::Done)
        .collect();
    let skipped = mine.len() - todo.len();
    log(&format!(
        "sweep {}: {} points, shard {}/{} has {}, {} already done, {} to run",
        spec.name,
        points.len(),
        shard.index,
        shard.count,
        mine.len(),
        skipped,
        todo.len()
    ));
    let job = workers::Job { out: opts.out, threads: opts.threads, devices: &opts.devices, stop: opts.stop };
    let outcome = workers::run_points(todo, skipped, &job)?;
    let mut report = RunReport {
        shard_points: mine.len(),
        failed: outcome.failed,
        lost: outcome.lost,
        unfinished: outcome.unfinished,
        interrupted: outcome.interrupted,
        ..RunReport::default()
    };
    let shard_census = store::census(opts.out, mine.iter().copied());
    report.done = shard_census.done;
    report.nonfinite = shard_census.nonfinite;
    if report.interrupted.is_none() && stop_requested(opts.stop).is_none() {
        let census = store::census(opts.out, &points);
        if census.done == points.len() {
            let merged = store::merged_csv(opts.out, spec, &points)?;
            crate::output::write_atomic(&opts.out.join("merged.csv"), &merged)?;
            report.merged = true;
            log(&format!("sweep {} complete: {} written", spec.name, opts.out.join("merged.csv").display()));
        }
    }
    Ok(report)
}

fn describe(p: &Point) -> String {
    let mut parts: Vec<String> = p.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    parts.push(format!("repeat={}", p.repeat));
    parts.join(" ")
}

fn log(msg: &str) {
    eprintln!("[rankcollapse] {msg}");
}

/// Floating-point operations of one point (documented estimate for planning): per sequence and
/// layer, the score and weighted-sum products 2 n^2 (r + d_v) per head, the projections
/// 2 n d (2 r + d_v) per head plus the output projection 2 n H d_v d, and the MLP 4 n d h.
pub fn estimated_flops(cfg: &crate::config::Config) -> f64 {
    let (n, d, h) = (cfg.tokens as f64, cfg.width as f64, cfg.heads as f64);
    let (r, dv, hid) = (cfg.head_rank() as f64, cfg.value_dim() as f64, cfg.mlp_hidden() as f64);
    let per_layer = h * (2.0 * n * n * (r + dv) + 2.0 * n * d * (2.0 * r + dv))
        + 2.0 * n * h * dv * d
        + 4.0 * n * d * hid;
    per_layer * cfg.depth as f64 * cfg.sequences as f64
}

/// `sweep plan`: points per shard and their estimated cost under the assignment `sweep run`
/// uses ([`spec::assign_shards`]), and how far the largest shard is above the mean.
pub fn plan(spec: &Spec, shards: usize) -> anyhow::Result<String> {
    if shards == 0 {
        anyhow::bail!("--shards 0 is invalid: must be at least 1");
    }
    let points = spec.expand()?;
    let mut counts = vec![0usize; shards];
    let mut flops = vec![0f64; shards];
    for (p, s) in points.iter().zip(spec::assign_shards(&points, shards)) {
        counts[s] += 1;
        flops[s] += estimated_flops(&p.config);
    }
    let mut out = format!(
        "sweep {}: {} points ({} repeats), {} shards\n",
        spec.name,
        points.len(),
        spec.repeats,
        shards
    );
    out += &format!("{:>6} {:>8} {:>14}\n", "shard", "points", "est. FLOP");
    for (i, (n, f)) in counts.iter().zip(&flops).enumerate() {
        out += &format!("{:>6} {:>8} {:>14.3e}\n", i, n, f);
    }
    let largest = flops.iter().copied().fold(0.0, f64::max);
    let mean = flops.iter().sum::<f64>() / shards as f64;
    // The array finishes with its largest task: this ratio is the wall time over a perfect split.
    if mean > 0.0 {
        out +=
            &format!("largest shard: {:.3} x the mean ({largest:.3e} vs {mean:.3e} FLOP)\n", largest / mean);
    }
    Ok(out)
}

/// `sweep status`: the census of a sweep directory; exit code 0 only when it is complete.
pub fn status(dir: &Path) -> anyhow::Result<(String, i32)> {
    let (spec, points) = stored(dir)?;
    let c = store::census(dir, &points);
    let mut out = format!(
        "sweep {}: {} points: {} done, {} failed, {} missing; {} done with non-finite values\n",
        spec.name,
        points.len(),
        c.done,
        c.failed.len(),
        c.missing.len(),
        c.nonfinite.len()
    );
    for (id, why) in &c.failed {
        out += &format!("failed  {id}: {why}\n");
    }
    for (id, withheld, faults) in &c.nonfinite {
        out += &format!("nonfinite {id}: {}\n", Nonfinite::totals(*withheld, *faults).message(None));
    }
    for id in c.missing.iter().take(20) {
        out += &format!("missing {id}\n");
    }
    if c.missing.len() > 20 {
        out += &format!("... and {} more missing\n", c.missing.len() - 20);
    }
    Ok((out, if c.done == points.len() { 0 } else { 1 }))
}

/// `sweep merge`: writes the merged CSV; returns the report and the exit code (1 when
/// incomplete, unless a partial result is accepted).
pub fn merge(dir: &Path, output: Option<&Path>, allow_partial: bool) -> anyhow::Result<(String, i32)> {
    let (spec, points) = stored(dir)?;
    let c = store::census(dir, &points);
    let complete = c.done == points.len();
    let (mut report, _) = status(dir)?;
    if !complete && !allow_partial {
        report += "not merged: the sweep is incomplete (use --allow-partial to merge what is there)\n";
        return Ok((report, 1));
    }
    let path = output.map(Path::to_path_buf).unwrap_or_else(|| dir.join("merged.csv"));
    crate::output::write_atomic(&path, &store::merged_csv(dir, &spec, &points)?)?;
    report += &format!("merged {} of {} points into {}\n", c.done, points.len(), path.display());
    if !c.nonfinite.is_empty() {
        let (withheld, faults) = c.nonfinite.iter().fold((0, 0), |(w, f), (_, pw, pf)| (w + pw, f + pf));
        report += &format!(
            "{} merged points have non-finite values left out of their statistics (the nonfinite column): {}\n",
            c.nonfinite.len(),
            Nonfinite::totals(withheld, faults).message(None)
        );
    }
    Ok((report, 0))
}

fn stored(dir: &Path) -> anyhow::Result<(Spec, Vec<Point>)> {
    let path = store::spec_path(dir);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        anyhow::anyhow!("{} is not a sweep directory (reading {}: {e})", dir.display(), path.display())
    })?;
    let spec = Spec::parse(&text)?;
    let points = spec.expand()?;
    Ok((spec, points))
}
