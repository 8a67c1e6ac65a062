//! Plots of a metric against layer, as SVG and PNG, from a run's `layers.csv` or a merged sweep CSV.
//!
//! - A run (`layer,metric,mean,std,median,p05,p95,count,nonfinite`) gives one line, the mean over
//!   sequences, with the p05-p95 band of the sequences around it.
//! - A merged sweep (`point_id,repeat,<params...>,layer,metric,mean,...`) gives one line per value of
//!   the `by` parameter: at each layer the arithmetic mean of the `mean` column over every row with
//!   that value (all other points and repeats), as the caption says. The mean follows IEEE rules,
//!   like the run statistics themselves: one -inf (an exactly zero residual) makes it -inf.
//!
//! Non-finite values (and values <= 0 on a log axis) leave gaps in their line; they never panic.
//! `log10_*` metrics are drawn on a linear axis of their values, `res_fro`, `res_dong`, `mu` and
//! `sigma_ratio` on a log axis, every other metric on a linear axis.
//!
//! Text is rendered by plotters' pure-Rust `ab_glyph` path with DejaVu Sans embedded from
//! `assets/DejaVuSans.ttf` (license in `assets/README`), so no system font library is needed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::types::RangedCoordi64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

/// What to draw.
pub struct PlotSpec {
    /// The metric, as named in the CSV's `metric` column (`log10_res_fro`, `stable_rank`, ...).
    pub metric: String,
    /// For a merged sweep: the parameter column that picks the line; `None` takes the first
    /// parameter with more than one value. Must be `None` for a run's `layers.csv`.
    pub by: Option<String>,
    /// The title above the plot; `None` gives "<metric> per layer" (and "by <param>" for a sweep).
    pub title: Option<String>,
}

/// Width and height of both images, in pixels.
const SIZE: (u32, u32) = (1024, 640);
/// The embedded font (DejaVu Sans, see `assets/README` for its license).
const FONT: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/DejaVuSans.ttf"));
/// The family name the embedded font is registered under.
const FAMILY: &str = "sans-serif";
/// Metrics drawn on a log10-scaled y axis.
const LOG_AXIS_METRICS: [&str; 4] = ["res_fro", "res_dong", "mu", "sigma_ratio"];
/// Lines with at most this many layers get a marker on every value.
const MAX_MARKED_POINTS: usize = 40;
/// Line colours (Tableau 10); more lines than this get evenly spaced hues instead.
const PALETTE: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

/// Reads `input` (a run's layers.csv, or a merged sweep CSV) and writes `<out_stem>.svg` and
/// `<out_stem>.png`; returns the two paths.
///
/// `<out_stem>` gets `.svg` / `.png` appended (an existing dot in it is kept), and missing parent
/// directories are created. Errors name the file and what is wrong: an unreadable or empty file,
/// a malformed row, an unknown metric (with the metrics present), an unknown or inapplicable `by`
/// (with the parameters present), or a metric with nothing finite to draw.
pub fn plot_file(input: &Path, spec: &PlotSpec, out_stem: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let table = read_table(input)?;
    let plot = prepare(&table, spec)?;

    let svg_path = with_suffix(out_stem, ".svg");
    let png_path = with_suffix(out_stem, ".png");
    if let Some(dir) = svg_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating directory {}", dir.display()))?;
    }
    register_embedded_font()?;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        render(&root, &plot).map_err(|e| anyhow!("drawing the SVG plot of {}: {e}", input.display()))?;
        root.present().map_err(|e| anyhow!("drawing the SVG plot of {}: {e}", input.display()))?;
    }
    std::fs::write(&svg_path, svg).with_context(|| format!("writing {}", svg_path.display()))?;

    {
        let root = BitMapBackend::new(&png_path, SIZE).into_drawing_area();
        render(&root, &plot).map_err(|e| anyhow!("drawing the PNG plot of {}: {e}", input.display()))?;
        root.present().map_err(|e| anyhow!("writing {}: {e}", png_path.display()))?;
    }
    Ok((svg_path, png_path))
}

/// `stem` with `suffix` appended to its last component (unlike `with_extension`, keeps dots).
fn with_suffix(stem: &Path, suffix: &str) -> PathBuf {
    let mut s: OsString = stem.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn register_embedded_font() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        bail!("the embedded font assets/DejaVuSans.ttf could not be parsed")
    }
}

// ---------------------------------------------------------------------------------------------
// Reading

/// One CSV row, reduced to what a plot needs.
struct Row {
    /// Values of the sweep's parameter columns (empty for a run).
    params: Vec<String>,
    /// `point_id` and `repeat` of a sweep row (empty for a run).
    run_key: (String, String),
    layer: i64,
    metric: String,
    mean: f64,
    p05: f64,
    p95: f64,
}

struct Table {
    path: PathBuf,
    /// `None` for a run's layers.csv, the parameter column names for a merged sweep.
    params: Option<Vec<String>>,
    rows: Vec<Row>,
}

fn read_table(path: &Path) -> anyhow::Result<Table> {
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

// ---------------------------------------------------------------------------------------------
// What to draw

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scale {
    Linear,
    Log,
}

/// One line: (layer, value) sorted by layer; `None` marks a layer whose value cannot be drawn,
/// which breaks the line there. Layers absent from the CSV are simply joined across.
struct Line {
    label: String,
    points: Vec<(i64, Option<f64>)>,
}

/// A run's p05-p95 band, (layer, Some((p05, p95))) with the same gap convention as [`Line`].
struct Band {
    label: String,
    points: Vec<(i64, Option<(f64, f64)>)>,
}

struct Plot {
    title: String,
    /// Small print under the plot: what a line is, and the source file.
    note: String,
    metric: String,
    scale: Scale,
    lines: Vec<Line>,
    band: Option<Band>,
    layers: (i64, i64),
    values: (f64, f64),
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

fn prepare(table: &Table, spec: &PlotSpec) -> anyhow::Result<Plot> {
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

// ---------------------------------------------------------------------------------------------
// Drawing

type DrawResult = Result<(), String>;

fn color(i: usize, n: usize) -> RGBColor {
    if n <= PALETTE.len() {
        let (r, g, b) = PALETTE[i % PALETTE.len()];
        RGBColor(r, g, b)
    } else {
        let rgb = HSLColor(i as f64 / n as f64, 0.75, 0.42).to_rgba();
        RGBColor(rgb.0, rgb.1, rgb.2)
    }
}

/// Splits (layer, Option<v>) into maximal runs of drawable values.
fn segments<T: Copy>(points: &[(i64, Option<T>)]) -> Vec<Vec<(i64, T)>> {
    let mut out: Vec<Vec<(i64, T)>> = Vec::new();
    let mut cur: Vec<(i64, T)> = Vec::new();
    for &(l, v) in points {
        match v {
            Some(v) => cur.push((l, v)),
            None if !cur.is_empty() => out.push(std::mem::take(&mut cur)),
            None => {}
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn render<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, plot: &Plot) -> DrawResult {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let (w, h) = root.dim_in_pixel();
    let (upper, lower) = root.split_vertically(h as i32 - 30);
    lower
        .draw(&Text::new(plot.note.clone(), (16, 6), (FAMILY, 15).into_font().color(&RGBColor(80, 80, 80))))
        .map_err(err)?;

    let (l0, l1) =
        if plot.layers.0 == plot.layers.1 { (plot.layers.0 - 1, plot.layers.1 + 1) } else { plot.layers };
    let (v0, v1) = plot.values;
    match plot.scale {
        Scale::Linear => {
            let pad = if v1 > v0 { 0.05 * (v1 - v0) } else { (0.1 * v0.abs()).max(1.0) };
            // Clamped so that hi - lo stays finite (values beyond +-f64::MAX / 4 go off the axis).
            let lim = f64::MAX / 4.0;
            let lo = (v0 - pad).clamp(-lim, lim);
            let mut hi = (v1 + pad).clamp(-lim, lim);
            if hi <= lo {
                hi = lo + (0.1 * lo.abs()).max(1.0);
            }
            draw_chart(&upper, plot, (l0, l1), lo..hi, &tick_label, w)
        }
        Scale::Log => draw_chart(&upper, plot, (l0, l1), DecadeAxis::new(v0, v1), &decade_label, w),
    }
}

/// A y axis linear in log10 of the value, from one whole decade to another, with ticks on whole
/// decades (every 1, 2, 5, 10, 20, ... decades, at most about 10) and light lines between.
/// (plotters' own log axis drops its tick labels over ranges of many decades.)
struct DecadeAxis {
    range: std::ops::Range<f64>,
    bold: Vec<f64>,
    light: Vec<f64>,
}

impl DecadeAxis {
    fn new(lo: f64, hi: f64) -> Self {
        let (lo, hi) = (lo.floor(), hi.ceil().max(lo.floor() + 1.0));
        let span = hi - lo;
        let mut step = 1.0;
        let mut k = 0;
        // Bounded: the data are finite log10 values (|v| < 400), the bound only guards against
        // an infinite span.
        while span / step > 10.0 && k < 60 {
            step *= [2.0, 2.5, 2.0][k % 3];
            k += 1;
        }
        let (lo, hi) = ((lo / step).floor() * step, (hi / step).ceil() * step);
        let count = ((hi - lo) / step).round() as i64;
        let mut bold: Vec<f64> = (0..=count).map(|i| lo + i as f64 * step).collect();
        if count <= 2 {
            // One or two decades: label 2 and 5 times each power of ten as well.
            bold = (0..count)
                .flat_map(|i| [1.0, 2.0, 5.0].map(|m: f64| lo + i as f64 + m.log10()))
                .chain([hi])
                .collect();
        }
        let light: Vec<f64> = if step == 1.0 && count <= 6 {
            // 2, 3, ..., 9 times each power of ten
            (0..count).flat_map(|i| (2..10).map(move |m| lo + i as f64 + f64::from(m).log10())).collect()
        } else {
            let sub = if k % 3 == 1 { step / 2.0 } else { step / 5.0 };
            let n = ((hi - lo) / sub).round() as i64;
            if sub >= 1.0 {
                (0..=n).map(|i| lo + i as f64 * sub).collect()
            } else {
                Vec::new()
            }
        };
        DecadeAxis { range: lo..hi, bold, light }
    }
}

impl Ranged for DecadeAxis {
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let f = (value - self.range.start) / (self.range.end - self.range.start);
        limit.0 + (f * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<H: plotters::coord::ranged1d::KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.light.clone()
        } else {
            self.bold.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.range.clone()
    }
}

/// The label of a tick at log10 value `v`: for a whole decade 0.001 ... 10000, else 1e-12; for
/// 2 or 5 times a decade as [`tick_label`] writes 10^v.
fn decade_label(v: &f64) -> String {
    if (v - v.round()).abs() > 1e-9 {
        return tick_label(&10f64.powf(*v));
    }
    let e = v.round() as i32;
    match e {
        -3..=-1 => format!("0.{}1", "0".repeat((-e - 1) as usize)),
        0..=4 => format!("1{}", "0".repeat(e as usize)),
        _ => format!("1e{e}"),
    }
}

/// A tick label on a linear axis: plain for moderate magnitudes, scientific otherwise.
fn tick_label(v: &f64) -> String {
    let v = *v;
    let a = v.abs();
    if v == 0.0 {
        "0".to_string()
    } else if (1e-3..1e5).contains(&a) {
        let s = format!("{v:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s == "-0" {
            "0".to_string()
        } else {
            s.to_string()
        }
    } else {
        let s = format!("{v:.1e}");
        s.replace(".0e", "e")
    }
}

fn draw_chart<DB, Y>(
    area: &DrawingArea<DB, Shift>,
    plot: &Plot,
    layers: (i64, i64),
    y: Y,
    y_label: &dyn Fn(&f64) -> String,
    width: u32,
) -> DrawResult
where
    DB: DrawingBackend,
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let x: RangedCoordi64 = (layers.0..layers.1).into();
    let mut chart = ChartBuilder::on(area)
        .caption(&plot.title, (FAMILY, 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(84)
        .build_cartesian_2d(x, y)
        .map_err(err)?;
    let span = (layers.1 - layers.0).max(1) as usize;
    chart
        .configure_mesh()
        .x_desc("layer")
        .y_desc(plot.metric.as_str())
        .axis_desc_style((FAMILY, 18))
        .label_style((FAMILY, 14))
        .x_labels(span.min(12) + 1)
        .y_labels(10)
        .y_label_formatter(y_label)
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(205, 205, 205))
        .draw()
        .map_err(err)?;

    let n = plot.lines.len();
    if let Some(band) = &plot.band {
        let fill = color(0, n).mix(0.18);
        for seg in segments(&band.points) {
            let mut poly: Vec<(i64, f64)> = seg.iter().map(|&(l, (lo, _))| (l, lo)).collect();
            poly.extend(seg.iter().rev().map(|&(l, (_, hi))| (l, hi)));
            if seg.len() == 1 {
                let (l, (lo, hi)) = seg[0];
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(l, lo), (l, hi)],
                        fill.stroke_width(6),
                    )))
                    .map_err(err)?;
            } else {
                chart.draw_series(std::iter::once(Polygon::new(poly, fill.filled()))).map_err(err)?;
            }
        }
        chart
            .draw_series(std::iter::empty::<Polygon<(i64, f64)>>())
            .map_err(err)?
            .label(band.label.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 20, y + 6)], fill.filled()));
    }
    for (i, line) in plot.lines.iter().enumerate() {
        let c = color(i, n);
        let style = c.stroke_width(2);
        chart
            .draw_series(std::iter::empty::<PathElement<(i64, f64)>>())
            .map_err(err)?
            .label(line.label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3)));
        // Markers on every value while they stay readable (sparse metrics such as attn_* with
        // --spectrum-every), and always on a value with gaps on both sides.
        let markers = line.points.len() <= MAX_MARKED_POINTS;
        for seg in segments(&line.points) {
            if seg.len() > 1 {
                chart.draw_series(LineSeries::new(seg.iter().copied(), style)).map_err(err)?;
            }
            if markers || seg.len() == 1 {
                chart.draw_series(seg.iter().map(|&p| Circle::new(p, 4, c.filled()))).map_err(err)?;
            }
        }
    }

    let entries = plot.lines.len() + usize::from(plot.band.is_some());
    let longest = plot
        .lines
        .iter()
        .map(|l| l.label.chars().count())
        .chain(plot.band.iter().map(|b| b.label.len()))
        .max();
    chart
        .configure_series_labels()
        .position(legend_position(plot, entries, longest.unwrap_or(0), width))
        .margin(10)
        .label_font((FAMILY, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(160, 160, 160))
        .draw()
        .map_err(err)?;
    Ok(())
}

/// The corner whose legend box would cover the fewest points of the lines and band.
fn legend_position(plot: &Plot, entries: usize, longest_label: usize, width: u32) -> SeriesLabelPosition {
    // Rough size of the legend box as a fraction of the plotting area (about 900 x 500 pixels).
    let plot_w = (width as f64 - 130.0).max(100.0);
    let box_w = ((longest_label as f64 * 8.5 + 60.0) / plot_w).min(1.0);
    let box_h = ((entries as f64 * 20.0 + 30.0) / 500.0).min(1.0);
    let (l0, l1) = (plot.layers.0 as f64, plot.layers.1.max(plot.layers.0 + 1) as f64);
    let (v0, v1) = plot.values;
    let norm =
        |l: i64, v: f64| ((l as f64 - l0) / (l1 - l0), if v1 > v0 { (v - v0) / (v1 - v0) } else { 0.5 });
    // Points along every segment (interpolated, so long straight stretches count too).
    let mut pts: Vec<(f64, f64)> = Vec::new();
    let mut add = |seg: &[(i64, f64)]| {
        for pair in seg.windows(2) {
            let (a, b) = (norm(pair[0].0, pair[0].1), norm(pair[1].0, pair[1].1));
            for k in 0..8 {
                let s = k as f64 / 8.0;
                pts.push((a.0 + s * (b.0 - a.0), a.1 + s * (b.1 - a.1)));
            }
        }
        if let Some(&(l, v)) = seg.last() {
            pts.push(norm(l, v));
        }
    };
    for line in &plot.lines {
        for seg in segments(&line.points) {
            add(&seg);
        }
    }
    if let Some(b) = &plot.band {
        for seg in segments(&b.points) {
            add(&seg.iter().map(|&(l, (lo, _))| (l, lo)).collect::<Vec<_>>());
            add(&seg.iter().map(|&(l, (_, hi))| (l, hi)).collect::<Vec<_>>());
        }
    }
    let corners = [
        (SeriesLabelPosition::UpperRight, true, true),
        (SeriesLabelPosition::UpperLeft, false, true),
        (SeriesLabelPosition::LowerLeft, false, false),
        (SeriesLabelPosition::LowerRight, true, false),
    ];
    let covered = |right: bool, upper: bool| {
        pts.iter()
            .filter(|&&(x, y)| {
                let in_x = if right { x >= 1.0 - box_w } else { x <= box_w };
                let in_y = if upper { y >= 1.0 - box_h } else { y <= box_h };
                in_x && in_y
            })
            .count()
    };
    let mut best = (usize::MAX, SeriesLabelPosition::UpperRight);
    for (pos, right, upper) in corners {
        let c = covered(right, upper);
        if c < best.0 {
            best = (c, pos);
        }
    }
    best.1
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
    fn gaps_split_lines() {
        let pts = [(0, Some(1.0)), (1, None), (2, Some(2.0)), (3, Some(3.0)), (4, None)];
        assert_eq!(segments(&pts), vec![vec![(0, 1.0)], vec![(2, 2.0), (3, 3.0)]]);
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

    #[test]
    fn tick_labels_are_compact() {
        assert_eq!(tick_label(&0.5), "0.5");
        assert_eq!(tick_label(&-1000.0), "-1000");
        assert_eq!(tick_label(&1e-12), "1e-12");
        assert_eq!(tick_label(&0.0), "0");
        assert_eq!(decade_label(&-2.0), "0.01");
        assert_eq!(decade_label(&3.0), "1000");
        assert_eq!(decade_label(&-120.0), "1e-120");
    }

    #[test]
    fn decade_axis_labels_whole_decades_at_both_ends() {
        let a = DecadeAxis::new(-125.3, -0.1);
        assert_eq!(a.bold.first(), Some(&-140.0));
        assert_eq!(a.bold.last(), Some(&0.0));
        assert!(a.bold.len() <= 11, "{:?}", a.bold);
        let a = DecadeAxis::new(-2.5, -0.3);
        assert_eq!(a.bold, vec![-3.0, -2.0, -1.0, 0.0]);
        assert_eq!(a.light.len(), 3 * 8);
        let a = DecadeAxis::new(-0.5, -0.5);
        let labels: Vec<String> = a.bold.iter().map(decade_label).collect();
        assert_eq!(labels, ["0.1", "0.2", "0.5", "1"]);
        assert_eq!(decade_label(&(2f64.log10() - 7.0)), "2e-7");
    }
}
