//! Reading the CSV a plot is drawn from: a run's `layers.csv` or a merged sweep CSV, reduced to
//! the rows a plot needs, with errors that name the file, the line and the column.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};

/// One CSV row, reduced to what a plot needs.
pub(super) struct Row {
    /// Values of the sweep's parameter columns (empty for a run).
    pub(super) params: Vec<String>,
    /// `point_id` and `repeat` of a sweep row (empty for a run).
    pub(super) run_key: (String, String),
    pub(super) layer: i64,
    pub(super) metric: String,
    pub(super) mean: f64,
    pub(super) p05: f64,
    pub(super) p95: f64,
}

pub(super) struct Table {
    pub(super) path: PathBuf,
    /// `None` for a run's layers.csv, the parameter column names for a merged sweep.
    pub(super) params: Option<Vec<String>>,
    pub(super) rows: Vec<Row>,
}

pub(super) fn read_table(path: &Path) -> anyhow::Result<Table> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let p = path.display();
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(bytes.as_slice());
    let header: Vec<String> = reader
        .headers()
        .with_context(|| format!("{p}: reading the CSV header"))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    if header.iter().all(|h| h.is_empty()) {
        bail!("{p}: empty file (expected a CSV header such as layer,metric,mean,...)");
    }
    let col = |name: &str| header.iter().position(|h| h == name);
    let need = |name: &str| {
        col(name).ok_or_else(|| {
            anyhow!(
                "{p}: no `{name}` column (header: {}); expected a run's layers.csv or a merged sweep CSV",
                header.join(",")
            )
        })
    };
    let (layer_i, metric_i, mean_i) = (need("layer")?, need("metric")?, need("mean")?);
    let (p05_i, p95_i) = (col("p05"), col("p95"));
    let sweep = match col("point_id") {
        None => None,
        Some(point_i) => {
            let repeat_i = need("repeat")?;
            if repeat_i >= layer_i {
                bail!("{p}: the `repeat` column must come before `layer` (the parameters sit between them)");
            }
            Some((point_i, repeat_i))
        }
    };
    let params = sweep.map(|(_, repeat_i)| header[repeat_i + 1..layer_i].to_vec());

    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.with_context(|| format!("{p}: reading a CSV row"))?;
        let line = record.position().map_or(0, |pos| pos.line());
        let field = |i: usize| record.get(i).unwrap_or("").trim();
        let number = |i: usize| {
            parse_number(field(i)).ok_or_else(|| {
                anyhow!("{p}: line {line}: column `{}` is not a number: {:?}", header[i], field(i))
            })
        };
        let layer = field(layer_i)
            .parse::<i64>()
            .map_err(|_| anyhow!("{p}: line {line}: `layer` is not an integer: {:?}", field(layer_i)))?;
        let (run_key, row_params) = match (sweep, &params) {
            (Some((point_i, repeat_i)), Some(names)) => (
                (field(point_i).to_string(), field(repeat_i).to_string()),
                (0..names.len()).map(|k| field(repeat_i + 1 + k).to_string()).collect(),
            ),
            _ => ((String::new(), String::new()), Vec::new()),
        };
        rows.push(Row {
            params: row_params,
            run_key,
            layer,
            metric: field(metric_i).to_string(),
            mean: number(mean_i)?,
            p05: p05_i.map(number).transpose()?.unwrap_or(f64::NAN),
            p95: p95_i.map(number).transpose()?.unwrap_or(f64::NAN),
        });
    }
    if rows.is_empty() {
        bail!("{p}: no data rows (only the header)");
    }
    Ok(Table { path: path.to_path_buf(), params, rows })
}

/// A CSV number: decimal or scientific, `inf`/`-inf`/`NaN` in any case; an empty cell is NaN.
fn parse_number(s: &str) -> Option<f64> {
    match s.to_ascii_lowercase().as_str() {
        "" | "nan" | "-nan" | "+nan" => Some(f64::NAN),
        "inf" | "+inf" | "infinity" | "+infinity" => Some(f64::INFINITY),
        "-inf" | "-infinity" => Some(f64::NEG_INFINITY),
        _ => s.parse::<f64>().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_including_non_finite() {
        assert_eq!(parse_number("1.5e-3"), Some(1.5e-3));
        assert_eq!(parse_number("inf"), Some(f64::INFINITY));
        assert_eq!(parse_number("-inf"), Some(f64::NEG_INFINITY));
        assert!(parse_number("NaN").unwrap().is_nan());
        assert!(parse_number("").unwrap().is_nan());
        assert_eq!(parse_number("abc"), None);
    }
}
