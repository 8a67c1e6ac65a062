//! Line charts of the reproductions: several named series of (x, y) points on linear axes, as
//! SVG and PNG (plotters, the embedded DejaVu Sans). Quantities that span many decades are given
//! to it as log10 values and labelled so; `rankcollapse plot` (src/plot/) draws metric-vs-layer
//! from CSV files, these charts draw whatever a preset measured (n, H, window size, ...).

use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

use crate::plot::draw::{save_svg_and_png, segments, Drawing, FAMILY};

/// One line of a chart; non-finite points leave a gap.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// Drawn thin and grey, as a reference curve (a bound, a prediction, a baseline).
    pub reference: bool,
}

impl Series {
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series { label: label.into(), points, reference: false }
    }
    pub fn reference(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series { label: label.into(), points, reference: true }
    }
}

pub struct Figure {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

/// Width and height of both images: small enough to commit the PNGs.
const SIZE: (u32, u32) = (800, 500);

impl Figure {
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
        series: Vec<Series>,
    ) -> Self {
        Figure { title: title.into(), x_label: x_label.into(), y_label: y_label.into(), series }
    }

    /// Writes `<dir>/<name>.svg` and `<dir>/<name>.png`; returns the PNG's file name.
    pub fn save(&self, dir: &Path, name: &str) -> anyhow::Result<String> {
        let svg_path: PathBuf = dir.join(format!("{name}.svg"));
        let png_path: PathBuf = dir.join(format!("{name}.png"));
        save_svg_and_png(self, SIZE, &svg_path, &png_path, |_, path| format!("drawing {}", path.display()))?;
        Ok(format!("{name}.png"))
    }
}

impl Drawing for Figure {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        root.fill(&WHITE).map_err(err)?;
        let finite = || {
            self.series.iter().flat_map(|s| s.points.iter()).filter(|(x, y)| x.is_finite() && y.is_finite())
        };
        let (mut x0, mut x1, mut y0, mut y1) =
            (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
        for &(x, y) in finite() {
            (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
        }
        if x0 > x1 {
            return Err(format!("{}: nothing finite to draw", self.title));
        }
        let pad = |lo: f64, hi: f64| {
            let p = if hi > lo { 0.05 * (hi - lo) } else { 0.5 * lo.abs().max(1.0) };
            (lo - p)..(hi + p)
        };
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, (FAMILY, 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(pad(x0, x1), pad(y0, y1))
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(self.x_label.as_str())
            .y_desc(self.y_label.as_str())
            .axis_desc_style((FAMILY, 15))
            .label_style((FAMILY, 12))
            .light_line_style(RGBColor(238, 238, 238))
            .draw()
            .map_err(err)?;
        // Data lines take the palette in order; reference lines are greys, darkest first.
        let (mut data, mut refs) = (0, 0);
        for s in &self.series {
            let colour = if s.reference {
                let grey = (40 + 50 * refs).min(190) as u8;
                refs += 1;
                RGBColor(grey, grey, grey)
            } else {
                let (r, g, b) = Palette99::pick(data).to_rgba().rgb();
                data += 1;
                RGBColor(r, g, b)
            };
            let style = if s.reference { colour.stroke_width(1) } else { colour.stroke_width(2) };
            let drawable: Vec<(f64, Option<f64>)> =
                s.points.iter().map(|&(x, y)| (x, (x.is_finite() && y.is_finite()).then_some(y))).collect();
            let mut first = true;
            for seg in segments(&drawable) {
                let drawn = chart.draw_series(LineSeries::new(seg.clone(), style)).map_err(err)?;
                if first {
                    drawn.label(s.label.clone()).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                    });
                    first = false;
                }
                if !s.reference && seg.len() <= 40 {
                    chart
                        .draw_series(seg.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                        .map_err(err)?;
                }
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .label_font((FAMILY, 12))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(err)?;
        Ok(())
    }
}
