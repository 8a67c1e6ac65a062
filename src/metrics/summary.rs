//! Statistics of one metric over sequences: mean, std, median, p05, p95, with the values left
//! out (NaN, or infinities where the metric's aggregation does not allow them) counted.

use super::{Aggregation, Metric};
use serde::Serialize;

/// Statistics of one metric over sequences.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub mean: f64,
    pub std: f64,
    pub median: f64,
    pub p05: f64,
    pub p95: f64,
    /// Values that entered the statistics.
    pub count: usize,
    /// Faulty values (NaN, or infinite where infinity is not a legitimate value), excluded.
    pub nonfinite: usize,
}

/// Aggregates the values of one metric over sequences. For log metrics -inf is legitimate (an
/// exactly zero residual): the mean is -inf if any value is, the std is 0 if all are, and
/// infinite if they are mixed; quantiles are taken on the sorted values.
pub fn summarize(metric: Metric, values: &[f64]) -> Summary {
    let log = metric.aggregation() == Aggregation::Log;
    let legit = |x: f64| x.is_finite() || (log && x == f64::NEG_INFINITY);
    let mut good: Vec<f64> = values.iter().cloned().filter(|x| legit(*x)).collect();
    let nonfinite = values.len() - good.len();
    good.sort_by(|a, b| a.total_cmp(b));
    let count = good.len();
    if count == 0 {
        return Summary {
            mean: f64::NAN,
            std: f64::NAN,
            median: f64::NAN,
            p05: f64::NAN,
            p95: f64::NAN,
            count,
            nonfinite,
        };
    }
    let neg_inf = good.iter().filter(|x| **x == f64::NEG_INFINITY).count();
    let (mean, std) = if neg_inf == count {
        (f64::NEG_INFINITY, 0.0)
    } else if neg_inf > 0 {
        (f64::NEG_INFINITY, f64::INFINITY)
    } else {
        let mean = good.iter().sum::<f64>() / count as f64;
        let var = if count > 1 {
            good.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (count - 1) as f64
        } else {
            0.0
        };
        (mean, var.sqrt())
    };
    Summary {
        mean,
        std,
        median: quantile(&good, 0.5),
        p05: quantile(&good, 0.05),
        p95: quantile(&good, 0.95),
        count,
        nonfinite,
    }
}

/// Linear-interpolation quantile of sorted values (numpy's default); exact at the data points.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    if lo == hi || sorted[lo] == sorted[hi] {
        return sorted[lo];
    }
    let f = pos - lo as f64;
    if sorted[lo] == f64::NEG_INFINITY {
        return if f < 1.0 { f64::NEG_INFINITY } else { sorted[hi] };
    }
    sorted[lo] + f * (sorted[hi] - sorted[lo])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_logs_handles_exact_zeros() {
        let s = summarize(Metric::Log10ResFro, &[f64::NEG_INFINITY, f64::NEG_INFINITY]);
        assert_eq!((s.mean, s.std, s.count, s.nonfinite), (f64::NEG_INFINITY, 0.0, 2, 0));
        let s = summarize(Metric::ResFro, &[1.0, 2.0, f64::NAN, 3.0, f64::INFINITY]);
        assert_eq!((s.mean, s.median, s.count, s.nonfinite), (2.0, 2.0, 3, 2));
        assert!((s.std - 1.0).abs() < 1e-15);
        let s = summarize(Metric::ResFro, &(0..=100).map(f64::from).collect::<Vec<_>>());
        assert_eq!((s.p05, s.p95), (5.0, 95.0));
    }
}
