//! Metric definitions (per layer and sequence, computed from the tracked state so that residuals
//! stay exact far below float epsilon) and their aggregation over sequences.

use crate::linalg::{dot, lanczos_top};
use crate::model::state::{exp_or_zero, Tracked};
use crate::model::{AttentionStats, Real};
use ndarray::{s, Array1, Array2, Axis};
use serde::Serialize;

/// Metric names, in the order of `layers.csv` and of [`LayerMetrics::values`].
pub const METRICS: [&str; 16] = [
    "res_fro",
    "log10_res_fro",
    "res_dong",
    "log10_res_dong",
    "mu",
    "log10_mu",
    "stable_rank",
    "gram_stable_rank",
    "stable_rank_centered",
    "sigma_ratio",
    "log10_sigma_ratio",
    "mean_abs_cos",
    "attn_sigma1",
    "attn_sigma2",
    "attn_centered_sigma1",
    "attn_entropy",
];

/// Log metrics: -inf is a legitimate value (an exactly zero residual); their statistics are
/// statistics of the log.
pub fn is_log_metric(name: &str) -> bool {
    name.starts_with("log10_")
}

/// The metrics of one sequence after one layer (layer 0: the input). `None`: not computed here.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerMetrics {
    pub values: [Option<f64>; 16],
}

impl LayerMetrics {
    pub fn get(&self, name: &str) -> Option<f64> {
        METRICS.iter().position(|m| *m == name).and_then(|k| self.values[k])
    }

    /// The metrics of a layer whose state a numerical fault made invalid: every metric such a
    /// layer reports (the attention entropy after an attention layer, its spectrum where
    /// `spectrum`), each NaN, so that it is counted as non-finite and never averaged. The invalid
    /// state itself is never measured.
    pub fn faulted(attention: bool, spectrum: bool) -> LayerMetrics {
        let mut values = [Some(f64::NAN); 16];
        if !(attention && spectrum) {
            values[12..15].fill(None);
        }
        if !attention {
            values[15] = None;
        }
        LayerMetrics { values }
    }
}

const LN10: f64 = std::f64::consts::LN_10;

/// All state metrics of one sequence, plus the attention statistics of the layer that produced it.
pub fn layer_metrics<T: Real>(x: &Tracked<T>, attn: Option<&AttentionStats>) -> LayerMetrics {
    let n = x.tokens();
    let nf = n as f64;
    let m: Array1<f64> = x.mean.mapv(|v| v.f());
    let r: Array2<f64> = x.res.mapv(|v| v.f());
    // R^T in row-major order: ndarray's product with a transposed view is an order slower.
    let rt: Array2<f64> = r.t().as_standard_layout().into_owned();
    let (g, l) = (x.log_scale, x.log_res);
    let s = exp_or_zero(l);
    let m2 = m.dot(&m);
    let mut v: [Option<f64>; 16] = [None; 16];

    // Residuals. |X - 1 xbar^T|_F = e^{g+l} sqrt(n); |X|_F = e^g sqrt(n (|m|^2 + s^2)).
    let ln_total = 0.5 * (m2 + s * s).ln();
    let log_res_fro = if l == f64::NEG_INFINITY { f64::NEG_INFINITY } else { l - ln_total };
    v[0] = Some(exp_or_zero(log_res_fro));
    v[1] = Some(log_res_fro / LN10);
    let norm_1inf = |a: &Array2<f64>| {
        let col = a.map(|x| x.abs()).sum_axis(Axis(0)).fold(0.0f64, |acc, x| acc.max(*x));
        let row = a.map(|x| x.abs()).sum_axis(Axis(1)).fold(0.0f64, |acc, x| acc.max(*x));
        (col * row).sqrt()
    };
    let dense = x.dense();
    let log_dong = if l == f64::NEG_INFINITY {
        f64::NEG_INFINITY
    } else {
        l + norm_1inf(&r).ln() - norm_1inf(&dense).ln()
    };
    v[2] = Some(exp_or_zero(log_dong));
    v[3] = Some(log_dong / LN10);
    let log_mu = g + l + 0.5 * nf.ln();
    v[4] = Some(exp_or_zero(log_mu));
    v[5] = Some(log_mu / LN10);

    // Spectra of X through G = X^T X = n m m^T + s^2 R^T R (the cross terms vanish: 1^T R = 0).
    let d = x.width();
    let start: Vec<f64> = (0..d).map(|i| 1.0 + 0.5 * ((i as f64) * 0.618_033_988_7).fract()).collect();
    let c_apply = |vv: &[f64], out: &mut [f64]| {
        let rv = r.dot(&ndarray::ArrayView1::from(vv));
        out.copy_from_slice(rt.dot(&rv).as_slice().unwrap());
    };
    let g_apply = |vv: &[f64], out: &mut [f64]| {
        c_apply(vv, out);
        let mv = nf * dot(m.as_slice().unwrap(), vv);
        for k in 0..d {
            out[k] = s * s * out[k] + mv * m[k];
        }
    };
    let steps = d.min(200);
    let top = lanczos_top(d, 2, &start, 1e-13, steps, g_apply);
    let sigma1_sq = top[0];
    let fro2 = nf * (m2 + s * s);
    if sigma1_sq > 0.0 {
        v[6] = Some(fro2 / sigma1_sq);
        // |G|_F^2 with C = R^T R: |C|_F^2 = |R R^T|_F^2 (the smaller Gram) and m^T C m = |R m|^2.
        let c_fro2 =
            if r.nrows() <= r.ncols() { r.dot(&rt) } else { rt.dot(&r) }.iter().map(|a| a * a).sum::<f64>();
        let rm = r.dot(&m);
        let g_fro2 = nf * nf * m2 * m2 + 2.0 * nf * s * s * rm.dot(&rm) + s.powi(4) * c_fro2;
        v[7] = Some(g_fro2 / (sigma1_sq * sigma1_sq));
        let (log_sigma2_sq, scale) = second_eigenvalue(&r, &rt, &m, l, top[1], &start, steps);
        // sigma_2 is resolved only down to sigma_ratio_floor of the matrix it was computed from
        // (X itself, or R when the mean dominates); below that it is not a number we can give.
        let log_ratio = 0.5 * (log_sigma2_sq - sigma1_sq.ln());
        let resolved = log_sigma2_sq == f64::NEG_INFINITY
            || 0.5 * (log_sigma2_sq - scale) >= sigma_ratio_floor::<T>().ln();
        v[9] = Some(if resolved { exp_or_zero(log_ratio) } else { f64::NAN });
        v[10] = Some(if resolved { log_ratio / LN10 } else { f64::NAN });
    }
    if l > f64::NEG_INFINITY {
        let c_top = lanczos_top(d, 1, &start, 1e-13, steps, c_apply);
        v[8] = Some(nf / c_top[0]);
    }
    v[11] = Some(mean_abs_cos(&dense));

    if let Some(a) = attn {
        if let Some([s1, s2, sc]) = a.spectrum {
            v[12] = Some(s1);
            v[13] = Some(s2);
            v[14] = Some(sc);
        }
        v[15] = Some(a.entropy);
    }
    LayerMetrics { values: v }
}

/// Smallest sigma_2 / sigma_1 (of the matrix it is computed from) that the metrics report: the
/// Lanczos value of sigma_2^2 carries an error of eps sigma_1^2 (so below sqrt(eps / 1e-6) it has
/// fewer than six digits), and a state stored in `T` knows sigma_2 only to eps_T sigma_1 (three
/// digits left at 1e3 eps_T).
pub fn sigma_ratio_floor<T: Real>() -> f64 {
    (f64::EPSILON / 1e-6).sqrt().max(T::EPS * 1e3)
}

/// log sigma_2(X)^2 (given l = log s), and the log of the squared scale it was resolved against
/// (log sigma_1(X)^2, or log of s^2 |R|_F^2 when the mean dominates). When the mean dominates (s^2 <= |m|^2 / 4), the second eigenvalue of
/// G = beta u u^T + s^2 C (beta = n |m|^2, u = m / |m|, C = R^T R) is s^2 x with x the top
/// eigenvalue of P C P - t (P C u)(P C u)^T on u-perp, t = 1 / (beta / s^2 + u^T C u - x): a fixed
/// point reached in a few steps that keeps full relative accuracy however small s is. Otherwise
/// the Lanczos value of G is already accurate.
fn second_eigenvalue(
    r: &Array2<f64>,
    rt: &Array2<f64>,
    m: &Array1<f64>,
    l: f64,
    direct: f64,
    start: &[f64],
    steps: usize,
) -> (f64, f64) {
    let m2 = m.dot(m);
    let nf = r.nrows() as f64;
    if l == f64::NEG_INFINITY {
        return (f64::NEG_INFINITY, 0.0);
    }
    let s = exp_or_zero(l);
    if s * s > m2 / 4.0 || m2 == 0.0 {
        return (direct.max(0.0).ln(), (nf * (m2 + s * s)).ln());
    }
    // Work with s^2 / beta as a log so that nothing underflows when s does.
    let log_s2_over_beta = 2.0 * l - (r.nrows() as f64 * m2).ln();
    let u = m / m2.sqrt();
    let c_apply = |v: &Array1<f64>| rt.dot(&r.dot(v));
    let project = |v: &mut Array1<f64>| {
        let c = v.dot(&u);
        v.scaled_add(-c, &u);
    };
    let cu = c_apply(&u);
    let ucu = u.dot(&cu);
    let mut pcu = cu.clone();
    project(&mut pcu);
    let mut start_v = Array1::from(start.to_vec());
    project(&mut start_v);
    let mut x = 0.0;
    for _ in 0..20 {
        // t = 1 / (beta/s^2 + u^T C u - x) = (s^2/beta) / (1 + (s^2/beta)(u^T C u - x))
        let q = exp_or_zero(log_s2_over_beta);
        let t = q / (1.0 + q * (ucu - x));
        let next = lanczos_top(r.ncols(), 1, start_v.as_slice().unwrap(), 1e-14, steps, |vv, out| {
            let mut v = Array1::from(vv.to_vec());
            project(&mut v);
            let mut w = c_apply(&v);
            w.scaled_add(-t * pcu.dot(&v), &pcu);
            project(&mut w);
            out.copy_from_slice(w.as_slice().unwrap());
        })[0];
        let done = (next - x).abs() <= 1e-15 * next.abs();
        x = next;
        if done {
            break;
        }
    }
    (2.0 * l + x.max(0.0).ln(), 2.0 * l + nf.ln())
}

/// Mean |cos| over all pairs of distinct tokens, in blocks of rows: each block of unit rows is
/// multiplied by the rows from its first one on, so memory stays linear in n (a block is at most
/// `COS_BLOCK_ELEMENTS` entries; the dense n x n Gram would be 2 GB at n = 16384) and only the
/// upper triangle is computed. Pairs are summed row by row in the order of [`mean_abs_cos_dense`].
pub fn mean_abs_cos(x: &Array2<f64>) -> f64 {
    mean_abs_cos_in_blocks(x, COS_BLOCK_ELEMENTS / x.nrows().max(1))
}

/// [`mean_abs_cos`] with blocks of `rows` rows (tests pick awkward block sizes).
#[doc(hidden)]
pub fn mean_abs_cos_in_blocks(x: &Array2<f64>, rows: usize) -> f64 {
    let n = x.nrows();
    let unit = unit_rows(x);
    let rows = rows.clamp(1, n.max(1));
    let mut total = 0.0;
    let mut i0 = 0;
    while i0 < n {
        let i1 = (i0 + rows).min(n);
        let gram = unit.slice(s![i0..i1, ..]).dot(&unit.slice(s![i0.., ..]).t());
        for i in i0..i1 {
            let row = gram.row(i - i0);
            for j in i + 1..n {
                total += row[j - i0].abs().min(1.0);
            }
        }
        i0 = i1;
    }
    total / (n * (n - 1) / 2) as f64
}

/// Largest block of the Gram matrix that [`mean_abs_cos`] forms (32 MB of f64).
const COS_BLOCK_ELEMENTS: usize = 1 << 22;

/// The rows of `x` scaled to unit length (zero rows stay zero).
fn unit_rows(x: &Array2<f64>) -> Array2<f64> {
    let mut unit = x.clone();
    for mut row in unit.rows_mut() {
        let norm = row.dot(&row).sqrt();
        if norm > 0.0 {
            row /= norm;
        }
    }
    unit
}

/// [`mean_abs_cos`] through the whole n x n Gram matrix: the slow, obvious twin for tests.
#[doc(hidden)]
pub fn mean_abs_cos_dense(x: &Array2<f64>) -> f64 {
    let n = x.nrows();
    let unit = unit_rows(x);
    let gram = unit.dot(&unit.t());
    let mut total = 0.0;
    for i in 0..n {
        for j in i + 1..n {
            total += gram[[i, j]].abs().min(1.0);
        }
    }
    total / (n * (n - 1) / 2) as f64
}

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
pub fn summarize(name: &str, values: &[f64]) -> Summary {
    let log = is_log_metric(name);
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
        let s = summarize("log10_res_fro", &[f64::NEG_INFINITY, f64::NEG_INFINITY]);
        assert_eq!((s.mean, s.std, s.count, s.nonfinite), (f64::NEG_INFINITY, 0.0, 2, 0));
        let s = summarize("res_fro", &[1.0, 2.0, f64::NAN, 3.0, f64::INFINITY]);
        assert_eq!((s.mean, s.median, s.count, s.nonfinite), (2.0, 2.0, 3, 2));
        assert!((s.std - 1.0).abs() < 1e-15);
        let s = summarize("res_fro", &(0..=100).map(f64::from).collect::<Vec<_>>());
        assert_eq!((s.p05, s.p95), (5.0, 95.0));
    }
}
