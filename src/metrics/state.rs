//! The CPU engine's raw metric quantities, measured in f64 on the tracked state (so residuals
//! stay exact far below float epsilon): norms, Lanczos spectra of the Gram matrix, the secular
//! form of sigma_2 when the mean dominates, and the mean |cos| in blocks of rows.

use super::{sigma_ratio_floor, LayerMetrics, RawAttention, RawMetrics};
use crate::linalg::{dot, lanczos_top};
use crate::model::state::{exp_or_zero, Tracked};
use crate::model::{AttentionStats, Real};
use ndarray::{s, Array1, Array2, Axis};

/// All metrics of one sequence, plus the attention statistics of the layer that produced it, at
/// the resolution of a state stored in `T`.
pub fn layer_metrics<T: Real>(x: &Tracked<T>, attn: Option<&AttentionStats>) -> LayerMetrics {
    LayerMetrics::from_raw(&raw_metrics(x, attn), x.tokens(), sigma_ratio_floor::<T>())
}

/// The raw quantities of [`LayerMetrics::from_raw`], measured on the state.
pub fn raw_metrics<T: Real>(x: &Tracked<T>, attn: Option<&AttentionStats>) -> RawMetrics {
    let n = x.tokens();
    let nf = n as f64;
    let m: Array1<f64> = x.mean.mapv(|v| v.f());
    let r: Array2<f64> = x.res.mapv(|v| v.f());
    // R^T in row-major order: ndarray's product with a transposed view is an order slower.
    let rt: Array2<f64> = r.t().as_standard_layout().into_owned();
    let l = x.log_res;
    let s = exp_or_zero(l);
    let m2 = m.dot(&m);

    let norm_1inf = |a: &Array2<f64>| {
        let col = a.map(|x| x.abs()).sum_axis(Axis(0)).fold(0.0f64, |acc, x| acc.max(*x));
        let row = a.map(|x| x.abs()).sum_axis(Axis(1)).fold(0.0f64, |acc, x| acc.max(*x));
        (col * row).sqrt()
    };
    let dense = x.dense();

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
    let (mut res_gram_fro2, mut res_mean_sq) = (f64::NAN, f64::NAN);
    let (mut log_sigma2_sq, mut log_sigma2_scale) = (f64::NAN, f64::NAN);
    if sigma1_sq > 0.0 {
        // |C|_F^2 = |R R^T|_F^2 (the smaller Gram) and m^T C m = |R m|^2.
        res_gram_fro2 =
            if r.nrows() <= r.ncols() { r.dot(&rt) } else { rt.dot(&r) }.iter().map(|a| a * a).sum::<f64>();
        let rm = r.dot(&m);
        res_mean_sq = rm.dot(&rm);
        (log_sigma2_sq, log_sigma2_scale) = second_eigenvalue(&r, &rt, &m, l, top[1], &start, steps);
    }
    let res_gram_top = (l > f64::NEG_INFINITY).then(|| lanczos_top(d, 1, &start, 1e-13, steps, c_apply)[0]);
    RawMetrics {
        log_scale: x.log_scale,
        log_res: l,
        mean_sq: m2,
        log_norm_1inf_res: norm_1inf(&r).ln(),
        log_norm_1inf_state: norm_1inf(&dense).ln(),
        gram_top: sigma1_sq,
        res_gram_fro2,
        res_mean_sq,
        log_sigma2_sq,
        log_sigma2_scale,
        res_gram_top,
        mean_abs_cos: mean_abs_cos(&dense),
        attention: attn.map(|a| RawAttention { entropy: a.entropy, spectrum: a.spectrum }),
    }
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
