//! What a run writes: the per-layer table on the terminal, `layers.csv` (tidy statistics),
//! `sequences.csv` (per sequence and layer), `manifest.json`, and the JSON document of
//! `--format json`. Files are written atomically (temporary file, then rename).

use crate::config::Config;
use crate::engine::RunOutput;
use crate::metrics::{summarize, Summary, METRICS};
use anyhow::Context;
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;

/// Statistics over sequences: `summaries[layer]` lists (metric, summary) for the metrics that
/// were computed at that layer.
pub fn summaries(out: &RunOutput) -> Vec<Vec<(&'static str, Summary)>> {
    let layers = out.per_sequence.first().map_or(0, |h| h.len());
    (0..layers)
        .map(|l| {
            METRICS
                .iter()
                .enumerate()
                .filter_map(|(k, name)| {
                    let vals: Vec<f64> = out.per_sequence.iter().filter_map(|h| h[l].values[k]).collect();
                    (!vals.is_empty()).then(|| (*name, summarize(name, &vals)))
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

/// Number of faulty (non-finite) values over all layers and metrics.
pub fn total_nonfinite(stats: &[Vec<(&'static str, Summary)>]) -> usize {
    stats.iter().flatten().map(|(_, s)| s.nonfinite).sum()
}

pub fn manifest(
    cfg: &Config,
    out: &RunOutput,
    stats: &[Vec<(&'static str, Summary)>],
    total_seconds: f64,
) -> Value {
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
        "nonfinite": total_nonfinite(stats),
        "created_unix": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    })
}

/// The whole result as one JSON document (for `--format json`).
pub fn result_json(manifest: Value, stats: &[Vec<(&'static str, Summary)>]) -> Value {
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

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile_in(dir, path)?;
    tmp.1.write_all(bytes).with_context(|| format!("writing {}", tmp.0.display()))?;
    tmp.1.sync_all().ok();
    drop(tmp.1);
    std::fs::rename(&tmp.0, path)
        .with_context(|| format!("renaming {} to {}", tmp.0.display(), path.display()))?;
    Ok(())
}

fn tempfile_in(dir: &Path, target: &Path) -> anyhow::Result<(std::path::PathBuf, std::fs::File)> {
    let name = target.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let file = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    Ok((tmp, file))
}

pub fn layers_csv(stats: &[Vec<(&'static str, Summary)>]) -> anyhow::Result<Vec<u8>> {
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
    header.extend(METRICS.iter().map(|m| m.to_string()));
    w.write_record(&header)?;
    for (s, hist) in out.per_sequence.iter().enumerate() {
        for (l, m) in hist.iter().enumerate() {
            let mut rec = vec![s.to_string(), l.to_string()];
            rec.extend(m.values.iter().map(|v| v.map_or(String::new(), |x| x.to_string())));
            w.write_record(&rec)?;
        }
    }
    Ok(w.into_inner()?)
}

/// The readable per-layer table: the main metrics as mean ± std over sequences.
pub fn table(stats: &[Vec<(&'static str, Summary)>]) -> String {
    let cols = [
        ("log10_res_fro", "log10 res_fro"),
        ("log10_res_dong", "log10 res_dong"),
        ("stable_rank", "stable rank"),
        ("log10_sigma_ratio", "log10 sigma2/sigma1"),
        ("mean_abs_cos", "mean |cos|"),
        ("attn_entropy", "attn entropy"),
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
