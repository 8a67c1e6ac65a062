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
//!
//! `table` reads the CSV, `series` prepares the lines, `chart` and `axis` draw them; `draw` (the
//! font, SVG and PNG output) is shared with the reproductions' figures (`reproduce::figure`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Context;

use series::prepare;
use table::read_table;

mod axis;
mod chart;
pub(crate) mod draw;
mod series;
mod table;

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
    draw::save_svg_and_png(&plot, SIZE, &svg_path, &png_path, |format, _| {
        format!("drawing the {format} plot of {}", input.display())
    })?;
    Ok((svg_path, png_path))
}

/// `stem` with `suffix` appended to its last component (unlike `with_extension`, keeps dots).
fn with_suffix(stem: &Path, suffix: &str) -> PathBuf {
    let mut s: OsString = stem.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}
