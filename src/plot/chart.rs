//! Drawing a prepared plot: the chart and its mesh, the band and lines in their colours, and the
//! legend in the corner that hides the fewest points.

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::types::RangedCoordi64;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::axis::{decade_label, tick_label, DecadeAxis};
use super::draw::{segments, Drawing, FAMILY};
use super::series::{Plot, Scale};

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

impl Drawing for Plot {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        render(root, self)
    }
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
