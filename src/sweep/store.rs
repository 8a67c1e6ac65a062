//! The on-disk store of a sweep: `DIR/sweep.toml` (the effective spec) and one JSON record per
//! point in `DIR/points/<id>.json`, each written atomically, so any set of processes (shards,
//! restarts after a kill) leaves only whole records. Status and merge read the files alone.

use super::spec::{Point, Spec};
use crate::output::{num, write_atomic, Nonfinite};
use anyhow::Context;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

pub fn spec_path(dir: &Path) -> PathBuf {
    dir.join("sweep.toml")
}

pub fn point_path(dir: &Path, id: &str) -> PathBuf {
    dir.join("points").join(format!("{id}.json"))
}

/// What the files say about a point.
#[derive(Clone, Debug, PartialEq)]
pub enum Status {
    Done,
    Failed(String),
    Missing,
}

/// Reads a point's record; an unreadable or partial record counts as missing.
pub fn read_record(dir: &Path, point: &Point) -> Option<Value> {
    let text = std::fs::read_to_string(point_path(dir, &point.id)).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    (v["id"] == point.id.as_str()).then_some(v)
}

pub fn status(dir: &Path, point: &Point) -> Status {
    status_of(read_record(dir, point).as_ref())
}

fn status_of(record: Option<&Value>) -> Status {
    match record {
        Some(v) if v["status"] == "done" => Status::Done,
        Some(v) if v["status"] == "failed" => {
            Status::Failed(v["error"].as_str().unwrap_or("unknown").to_string())
        }
        _ => Status::Missing,
    }
}

/// Writes the effective spec, or checks that the directory already holds the same sweep.
pub fn init(dir: &Path, spec: &Spec, force: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("points")).with_context(|| format!("creating {}", dir.display()))?;
    let text = spec.to_toml();
    let path = spec_path(dir);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        if existing != text && !force {
            anyhow::bail!(
                "{} holds a different sweep (its sweep.toml differs from this spec); use another --out, or --force to replace it",
                dir.display()
            );
        }
        if existing == text {
            return Ok(());
        }
    }
    write_atomic(&path, text.as_bytes())
}

/// The record of a finished or failed point.
pub fn record(point: &Point, outcome: Result<(crate::engine::RunOutput, Value), String>) -> Value {
    let base = json!({
        "id": point.id,
        "index": point.index,
        "repeat": point.repeat,
        "params": point.params,
        "config": point.config,
        "seed": point.config.seed,
        "tool_version": env!("CARGO_PKG_VERSION"),
        "git_commit": env!("RANKCOLLAPSE_GIT_COMMIT"),
    });
    let mut v = base;
    match outcome {
        Ok((out, layers)) => {
            let nonfinite = nonfinite_of(&layers).with_faults(out.faults.iter().map(|f| f.layer));
            v["status"] = json!("done");
            // Visible without reading the layers: the counts, split into values withheld below
            // their resolution floor and numerical faults, and where they are.
            v["nonfinite"] = json!(nonfinite.total());
            v["nonfinite_withheld"] = json!(nonfinite.withheld);
            v["nonfinite_faults"] = json!(nonfinite.faults);
            v["nonfinite_by_layer"] = nonfinite.by_layer_json();
            v["faults"] = json!(out.faults);
            v["engine"] = json!(out.engine);
            v["engine_reason"] = json!(out.engine_reason);
            v["adapter"] = Value::Null;
            v["timings"] = json!({ "compute_seconds": out.compute_seconds });
            v["layers"] = layers;
        }
        Err(reason) => {
            v["status"] = json!("failed");
            v["error"] = json!(reason);
        }
    }
    v
}

/// Per-layer statistics as the records store them.
pub fn layers_json(stats: &[Vec<(crate::metrics::Metric, crate::metrics::Summary)>]) -> Value {
    Value::Array(
        stats
            .iter()
            .enumerate()
            .flat_map(|(l, ms)| {
                ms.iter().map(move |(name, s)| {
                    json!({
                        "layer": l, "metric": name.name(), "mean": num(s.mean), "std": num(s.std),
                        "median": num(s.median), "p05": num(s.p05), "p95": num(s.p95),
                        "count": s.count, "nonfinite": s.nonfinite,
                    })
                })
            })
            .collect(),
    )
}

/// The non-finite counts of a record's `layers` (as [`layers_json`] writes them).
pub fn nonfinite_of(layers: &Value) -> Nonfinite {
    let mut n = Nonfinite::default();
    for row in layers.as_array().into_iter().flatten() {
        let (Some(layer), Some(metric), Some(count)) =
            (row["layer"].as_u64(), row["metric"].as_str(), row["nonfinite"].as_u64())
        else {
            continue;
        };
        n.add(layer as usize, metric, count as usize);
    }
    n
}

/// The non-finite counts of a point record: its layers', with its sequences' faults.
pub fn nonfinite_of_record(rec: &Value) -> Nonfinite {
    let layers = rec["faults"].as_array().into_iter().flatten().filter_map(|f| f["layer"].as_u64());
    nonfinite_of(&rec["layers"]).with_faults(layers.map(|l| l as usize))
}

fn float_of(v: &Value) -> String {
    match v {
        Value::Number(n) => n.as_f64().map_or_else(String::new, |x| x.to_string()),
        Value::String(s) => s.parse::<f64>().map_or_else(|_| s.clone(), |x| x.to_string()),
        _ => String::new(),
    }
}

/// Counts of a sweep's points by status, with the ids of the failed (and why) and the missing,
/// and the done points whose statistics left out non-finite values.
#[derive(Debug, Default)]
pub struct Census {
    pub done: usize,
    pub failed: Vec<(String, String)>,
    pub missing: Vec<String>,
    /// Done points with non-finite values: (id, withheld, faults).
    pub nonfinite: Vec<(String, usize, usize)>,
}

pub fn census<'a>(dir: &Path, points: impl IntoIterator<Item = &'a Point>) -> Census {
    let mut c = Census::default();
    for p in points {
        let rec = read_record(dir, p);
        match status_of(rec.as_ref()) {
            Status::Done => {
                c.done += 1;
                let n = rec.as_ref().map(nonfinite_of_record).unwrap_or_default();
                if n.total() > 0 {
                    c.nonfinite.push((p.id.clone(), n.withheld, n.faults));
                }
            }
            Status::Failed(why) => c.failed.push((p.id.clone(), why)),
            Status::Missing => c.missing.push(p.id.clone()),
        }
    }
    c
}

/// One tidy CSV of every finished point x layer x metric, in canonical point order:
/// `point_id,repeat,<swept parameters>,layer,metric,mean,std,median,p05,p95,count,nonfinite`.
pub fn merged_csv(dir: &Path, spec: &Spec, points: &[Point]) -> anyhow::Result<Vec<u8>> {
    let params: Vec<&String> = spec.grid.keys().collect();
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["point_id".to_string(), "repeat".to_string()];
    header.extend(params.iter().map(|p| p.to_string()));
    header.extend(
        ["layer", "metric", "mean", "std", "median", "p05", "p95", "count", "nonfinite"]
            .iter()
            .map(|s| s.to_string()),
    );
    w.write_record(&header)?;
    for p in points {
        let Some(rec) = read_record(dir, p).filter(|r| r["status"] == "done") else { continue };
        for row in rec["layers"].as_array().into_iter().flatten() {
            let mut out = vec![p.id.clone(), p.repeat.to_string()];
            out.extend(params.iter().map(|k| p.params.get(*k).cloned().unwrap_or_default()));
            out.push(row["layer"].to_string());
            out.push(row["metric"].as_str().unwrap_or("").to_string());
            for key in ["mean", "std", "median", "p05", "p95"] {
                out.push(float_of(&row[key]));
            }
            out.push(row["count"].to_string());
            out.push(row["nonfinite"].to_string());
            w.write_record(&out)?;
        }
    }
    Ok(w.into_inner()?)
}
