//! The y axes of a plot: `DecadeAxis` for log-scaled metrics, and the tick labels of both kinds.

use plotters::prelude::*;

/// A y axis linear in log10 of the value, from one whole decade to another, with ticks on whole
/// decades (every 1, 2, 5, 10, 20, ... decades, at most about 10) and light lines between.
/// (plotters' own log axis drops its tick labels over ranges of many decades.)
pub(super) struct DecadeAxis {
    range: std::ops::Range<f64>,
    bold: Vec<f64>,
    light: Vec<f64>,
}

impl DecadeAxis {
    pub(super) fn new(lo: f64, hi: f64) -> Self {
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
pub(super) fn decade_label(v: &f64) -> String {
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
pub(super) fn tick_label(v: &f64) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
