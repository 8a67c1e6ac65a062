//! What to draw: the lines (and a run's p05-p95 band) of one metric, grouped and averaged as the
//! module doc of `plot` says, with their axis scale, title, note and value ranges.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};

use super::table::{Row, Table};
use super::PlotSpec;

/// Metrics drawn on a log10-scaled y axis.
const LOG_AXIS_METRICS: [&str; 4] = ["res_fro", "res_dong", "mu", "sigma_ratio"];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Scale {
    Linear,
    Log,
}

/// One line: (layer, value) sorted by layer; `None` marks a layer whose value cannot be drawn,
/// which breaks the line there. Layers absent from the CSV are simply joined across.
pub(super) struct Line {
    pub(super) label: String,
    pub(super) points: Vec<(i64, Option<f64>)>,
}

/// A run's p05-p95 band, (layer, Some((p05, p95))) with the same gap convention as [`Line`].
pub(super) struct Band {
    pub(super) label: String,
    pub(super) points: Vec<(i64, Option<(f64, f64)>)>,
}

pub(super) struct Plot {
    pub(super) title: String,
    /// Small print under the plot: what a line is, and the source file.
    pub(super) note: String,
    pub(super) metric: String,
    pub(super) scale: Scale,
    pub(super) lines: Vec<Line>,
    pub(super) band: Option<Band>,
    pub(super) layers: (i64, i64),
    pub(super) values: (f64, f64),
}

fn scale_of(metric: &str) -> Scale {
    if !metric.starts_with("log10_") && LOG_AXIS_METRICS.contains(&metric) {
        Scale::Log
    } else {
        Scale::Linear
    }
}

/// The y coordinate of a value: itself on a linear axis, its log10 on a log axis (where the axis
/// is linear in log10 and labelled in powers of ten); `None` where it cannot be drawn.
fn drawable(v: f64, scale: Scale) -> Option<f64> {
    match scale {
        Scale::Linear => v.is_finite().then_some(v),
        Scale::Log => (v.is_finite() && v > 0.0).then(|| v.log10()),
    }
}

pub(super) fn prepare(table: &Table, spec: &PlotSpec) -> anyhow::Result<Plot> {
    let p = table.path.display();
    let metric = spec.metric.as_str();
    let mut metrics: Vec<&str> = Vec::new();
    for r in &table.rows {
        if !metrics.contains(&r.metric.as_str()) {
            metrics.push(&r.metric);
        }
    }
    if !metrics.contains(&metric) {
        bail!("{p}: unknown metric {metric:?}; metrics present: {}", metrics.join(", "));
    }
    let rows: Vec<&Row> = table.rows.iter().filter(|r| r.metric == metric).collect();
    let scale = scale_of(metric);
    let source = short_path(&table.path);

    let (lines, band, title, mut note) = match &table.params {
        None => {
            if let Some(by) = &spec.by {
                bail!(
                    "{p}: is a single run's layers.csv with no sweep parameters, so `by` ({by:?}) does \
                     not apply; it needs a merged sweep CSV"
                );
            }
            let mut by_layer: BTreeMap<i64, Vec<&Row>> = BTreeMap::new();
            for r in &rows {
                by_layer.entry(r.layer).or_default().push(r);
            }
            let line = Line {
                label: "mean over sequences".to_string(),
                points: by_layer
                    .iter()
                    .map(|(&l, rs)| (l, drawable(ieee_mean(rs.iter().map(|r| r.mean)), scale)))
                    .collect(),
            };
            let band_points: Vec<(i64, Option<(f64, f64)>)> = by_layer
                .iter()
                .map(|(&l, rs)| {
                    let lo = drawable(ieee_mean(rs.iter().map(|r| r.p05)), scale);
                    let hi = drawable(ieee_mean(rs.iter().map(|r| r.p95)), scale);
                    (l, lo.zip(hi))
                })
                .collect();
            let band = band_points
                .iter()
                .any(|(_, b)| b.is_some())
                .then(|| Band { label: "p05-p95 over sequences".to_string(), points: band_points });
            let title = format!("{metric} per layer");
            let note = format!(
                "line: mean over sequences{}; source: {source}",
                if band.is_some() { ", band: 5th to 95th percentile" } else { "" }
            );
            (vec![line], band, title, note)
        }
        Some(params) => {
            let by_index = match &spec.by {
                Some(by) => params.iter().position(|n| n == by).ok_or_else(|| {
                    anyhow!(
                        "{p}: unknown sweep parameter {by:?} for `by`; parameters: {}",
                        if params.is_empty() { "none".to_string() } else { params.join(", ") }
                    )
                })?,
                None => default_by(params, &table.rows),
            };
            let by_name = params.get(by_index).cloned();
            let value_of = |r: &Row| by_index_value(r, by_index);

            let mut values: Vec<String> = Vec::new();
            for r in &rows {
                let v = value_of(r);
                if !values.contains(&v) {
                    values.push(v);
                }
            }
            sort_values(&mut values);

            let mut groups: HashMap<&str, BTreeMap<i64, Vec<f64>>> = HashMap::new();
            let mut runs: HashMap<&str, HashSet<&(String, String)>> = HashMap::new();
            for r in &rows {
                let v = values.iter().find(|v| **v == value_of(r)).expect("value collected above");
                groups.entry(v.as_str()).or_default().entry(r.layer).or_default().push(r.mean);
                runs.entry(v.as_str()).or_default().insert(&r.run_key);
            }
            let lines: Vec<Line> = values
                .iter()
                .map(|v| Line {
                    label: match &by_name {
                        Some(name) => format!("{name}={v}"),
                        None => "all points".to_string(),
                    },
                    points: groups[v.as_str()]
                        .iter()
                        .map(|(&l, ms)| (l, drawable(ieee_mean(ms.iter().copied()), scale)))
                        .collect(),
                })
                .collect();

            let counts: Vec<usize> = values.iter().map(|v| runs[v.as_str()].len()).collect();
            let (lo, hi) =
                (counts.iter().min().copied().unwrap_or(0), counts.iter().max().copied().unwrap_or(0));
            let n = match (lo, hi) {
                (1, 1) => "1 point/repeat run".to_string(),
                _ if lo == hi => format!("{lo} point/repeat runs"),
                _ => format!("{lo} to {hi} point/repeat runs"),
            };
            let (title, what) = match &by_name {
                Some(name) => (
                    format!("{metric} per layer by {name}"),
                    format!("each line: mean of `mean` over the {n} with that {name}"),
                ),
                None => (format!("{metric} per layer"), format!("line: mean of `mean` over all {n}")),
            };
            (lines, None, title, format!("{what}; source: {source}"))
        }
    };

    let gaps: usize = lines.iter().map(|l| l.points.iter().filter(|(_, v)| v.is_none()).count()).sum();
    if gaps > 0 {
        let why = if scale == Scale::Log { "not finite or <= 0 (log axis)" } else { "not finite" };
        let _ = write!(note, "; gaps: {gaps} value(s) {why}");
    }

    let mut ys: Vec<f64> = lines.iter().flat_map(|l| l.points.iter().filter_map(|(_, v)| *v)).collect();
    if let Some(b) = &band {
        ys.extend(b.points.iter().filter_map(|(_, v)| *v).flat_map(|(lo, hi)| [lo, hi]));
    }
    if lines.iter().all(|l| l.points.iter().all(|(_, v)| v.is_none())) {
        let what = if scale == Scale::Log { "finite positive values (log axis)" } else { "finite values" };
        bail!("{p}: metric {metric:?} has no {what} to plot");
    }
    let layers = rows.iter().fold((i64::MAX, i64::MIN), |(lo, hi), r| (lo.min(r.layer), hi.max(r.layer)));
    let values = ys.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &y| (lo.min(y), hi.max(y)));

    Ok(Plot {
        title: spec.title.clone().unwrap_or(title),
        note,
        metric: metric.to_string(),
        scale,
        lines,
        band,
        layers,
        values,
    })
}

fn by_index_value(r: &Row, by_index: usize) -> String {
    r.params.get(by_index).cloned().unwrap_or_default()
}

/// The first parameter with more than one distinct value, else the first parameter (one line).
fn default_by(params: &[String], rows: &[Row]) -> usize {
    (0..params.len())
        .find(|&k| {
            let first = rows.first().map(|r| by_index_value(r, k));
            rows.iter().any(|r| Some(by_index_value(r, k)) != first)
        })
        .unwrap_or(0)
}

/// Numeric order when every value is a number ("2" < "8" < "16"), else natural order
/// ("window:2" < "window:16"), text compared as text and digit runs as numbers.
fn sort_values(values: &mut [String]) {
    if values.iter().all(|v| v.trim().parse::<f64>().is_ok()) {
        values.sort_by(|a, b| a.trim().parse::<f64>().unwrap().total_cmp(&b.trim().parse::<f64>().unwrap()));
    } else {
        values.sort_by_cached_key(|a| natural_key(a));
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Chunk {
    /// A digit run: compared by length without leading zeros, then by digits (= numerically).
    Number(usize, String),
    Text(String),
}

fn natural_key(s: &str) -> Vec<Chunk> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        let digit = c.is_ascii_digit();
        let mut run = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_ascii_digit() != digit {
                break;
            }
            run.push(c);
            chars.next();
        }
        out.push(if digit {
            let trimmed = run.trim_start_matches('0').to_string();
            Chunk::Number(trimmed.len(), trimmed)
        } else {
            Chunk::Text(run)
        });
    }
    out
}

/// Arithmetic mean with IEEE semantics: any NaN gives NaN, an infinity gives that infinity.
fn ieee_mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        sum / n as f64
    }
}

/// The last two components of `path` (`run-a/layers.csv`), to keep the note short.
fn short_path(path: &Path) -> String {
    let parts: Vec<_> = path.components().collect();
    let tail = &parts[parts.len().saturating_sub(2)..];
    tail.iter().collect::<PathBuf>().display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_sort_numerically_then_naturally() {
        let mut v: Vec<String> = ["16", "2", "8"].iter().map(|s| s.to_string()).collect();
        sort_values(&mut v);
        assert_eq!(v, ["2", "8", "16"]);
        let mut v: Vec<String> = ["window:16", "full", "window:2"].iter().map(|s| s.to_string()).collect();
        sort_values(&mut v);
        assert_eq!(v, ["full", "window:2", "window:16"]);
    }

    #[test]
    fn axis_scale_by_metric() {
        assert_eq!(scale_of("res_fro"), Scale::Log);
        assert_eq!(scale_of("sigma_ratio"), Scale::Log);
        assert_eq!(scale_of("log10_res_fro"), Scale::Linear);
        assert_eq!(scale_of("stable_rank"), Scale::Linear);
    }

    #[test]
    fn ieee_mean_propagates_infinities() {
        assert_eq!(ieee_mean([1.0, 3.0].into_iter()), 2.0);
        assert_eq!(ieee_mean([1.0, f64::NEG_INFINITY].into_iter()), f64::NEG_INFINITY);
        assert!(ieee_mean(std::iter::empty()).is_nan());
    }
}
