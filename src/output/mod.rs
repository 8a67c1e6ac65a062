//! What a run writes: the per-layer table on the terminal, `layers.csv` (tidy statistics),
//! `sequences.csv` (per sequence and layer), `manifest.json`, and the JSON document of
//! `--format json`. Files are written atomically (`atomic.rs`); the split of non-finite values
//! into withheld values and faults is `nonfinite.rs`.

mod atomic;
mod nonfinite;

pub use atomic::{probe_output_dir, remove_stale_temps, write_atomic, FAIL_WRITE_HOOK};
pub use nonfinite::Nonfinite;

use crate::config::Config;
use crate::engine::RunOutput;
use crate::metrics::{summarize, Metric, Summary};
use serde_json::{json, Value};

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
