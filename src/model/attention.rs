//! Attention as an exact map of the tracked state (DESIGN.md "Numerics").
//!
//! With X = e^g (1 m^T + s R), s = e^l, the scores of a softmax head are, up to terms constant
//! along a row, z_ij = e^{2g} (s a_j + s^2 b_ij) with a_j = tau <m W_Q, r_j W_K> and
//! b_ij = tau <r_i W_Q, r_j W_K>. We write A_ij = q_j + D_ij with sum_j D_ij = 0 and accumulate
//! q R and D R separately, so the small differences between rows are computed directly and never
//! as a difference of large numbers. The reference q is p = softmax of the a-part over the mask
//! (under the full mask one row for all queries, so q R has an exactly zero centred part), or
//! e_k when every row picks the same key k (saturated softmax; a first pass over the rows checks
//! it only when the score bound allows it). Two regimes, chosen per head from the bound
//! |b_ij| <= tau |q_i| |k_j|:
//! * split: D_ij = p_j expm1(x_ij - l_i) with x = e^{2g} s^2 b and l_i = log sum_k p_k e^{x_ik}
//!   (log p and l_i kept as their largest term plus log1p of the rest, so tiny corrections
//!   survive), or D_ij = A_ij off the key k for the one-hot reference;
//! * linear (e^{2g} s^2 |b| < eps): D_ij = e^{2g} s^2 p_j (b_ij - sum_k p_k b_ik), the factor kept
//!   as a log, so the rule holds however far below the float range the residual goes.
//!
//! D is formed from logs with a per-row scale (weights far below f64 still count), and its
//! largest, cancellation-prone entry (the pivot) is replaced by minus the sum of the others.
//!
//! Rows are processed in blocks; the n x n matrix is only formed when its spectrum is requested.

use super::state::{exp_or_zero, scaled_sum, Tracked};
use super::{AttentionStats, HeadWeights, LayerWeights, Real};
use crate::config::{Attention, Config, Mask};
use crate::linalg::lanczos_top;
use ndarray::{s, Array1, Array2};
use std::borrow::Cow;

const ROW_BLOCK: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Regime {
    Split,
    Linear,
}

/// The attention sublayer: every head, the concatenation and the output projection.
pub fn attention_layer<T: Real>(
    cfg: &Config,
    w: &LayerWeights<T>,
    x: &Tracked<T>,
    spectrum: bool,
) -> (Tracked<T>, AttentionStats) {
    let mut outs = Vec::with_capacity(w.heads.len());
    let mut stats = AttentionStats { entropy: 0.0, spectrum: spectrum.then_some([0.0; 3]) };
    for head in &w.heads {
        let (ax, entropy, spec) = attend(cfg, head, x, spectrum);
        outs.push(ax.linear(head.value.view()));
        stats.entropy += entropy / w.heads.len() as f64;
        if let (Some(total), Some(s)) = (stats.spectrum.as_mut(), spec) {
            for k in 0..3 {
                total[k] += s[k] / w.heads.len() as f64;
            }
        }
    }
    let cat = if outs.len() == 1 { outs.pop().unwrap() } else { Tracked::concat(&outs) };
    let out = match &w.out_proj {
        Some(wo) => cat.linear(wo.view()),
        None => cat,
    };
    (out, stats)
}

/// The scores of one row, enough to form every weight of that row exactly.
struct Row<'a> {
    lo: usize,
    /// The logits of p.
    z: Cow<'a, [f64]>,
    /// Base distribution p (softmax of the mean-token scores, or the fixed A) and its logs.
    p: Cow<'a, [f64]>,
    log_p: Cow<'a, [f64]>,
    /// x_ij = e^{2g} s^2 b_ij (split regime) or b_ij (linear regime); empty when A = p.
    x: Vec<f64>,
    /// l_i = log sum_j p_j e^{x_ij} (split regime), kept as the index k of its largest term
    /// (or none when every |x| <= 1) and the rest: l_i = log p_k + x_k + corr, or l_i = corr.
    l_arg: Option<usize>,
    corr: f64,
}

impl Row<'_> {
    fn len(&self) -> usize {
        self.p.len()
    }
    /// t_ij = x_ij - l_i without cancellation (split regime): log A_ij = log p_j + t_ij.
    fn t(&self, j: usize) -> f64 {
        match self.l_arg {
            None => self.x[j] - self.corr,
            Some(k) if k == j => -self.log_p[k] - self.corr,
            Some(k) => (self.x[j] - self.x[k]) - self.log_p[k] - self.corr,
        }
    }
    /// log A_ij (split regime or A = p).
    fn log_a(&self, j: usize) -> f64 {
        if self.x.is_empty() {
            self.log_p[j]
        } else {
            self.log_p[j] + self.t(j)
        }
    }
}

/// The reference distribution q of the decomposition A_ij = q_j + D_ij, the same for every row
/// when possible so that its part of A R has an exactly zero centred part.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Reference {
    /// q = p (mean-token softmax, or the fixed matrix): the near-uniform and linear regimes.
    Base,
    /// q = e_k: every row is (nearly) one-hot on the same key k (saturated softmax).
    OneHot(usize),
}

/// One head: A X (or (A - 11^T/n) X) as a tracked state, the mean row entropy of A, and the
/// spectrum [sigma_1(A), sigma_2(A), sigma_1(A - 11^T/n)] when requested.
pub fn attend<T: Real>(
    cfg: &Config,
    head: &HeadWeights<T>,
    x: &Tracked<T>,
    spectrum: bool,
) -> (Tracked<T>, f64, Option<[f64; 3]>) {
    let n = x.tokens();
    let d = x.width();
    let (g, l) = (x.log_scale, x.log_res);
    let mask = cfg.mask;
    let tau = cfg.temperature();

    // Per-head pieces of the scores.
    let is_softmax = cfg.attention == Attention::Softmax && l > f64::NEG_INFINITY;
    let (a_part, qr, kr) = if is_softmax {
        let qm = x.mean.dot(&head.query);
        let qr = x.res.dot(&head.query);
        let kr = x.res.dot(&head.key);
        let a: Array1<f64> = kr.dot(&qm).mapv(|v| v.f() * tau);
        (Some(a), Some(qr), Some(kr))
    } else {
        (None, None, None)
    };
    let la = 2.0 * g + l;
    let lb = 2.0 * g + 2.0 * l;
    // Regime from the Cauchy-Schwarz bound of the b-scores (no extra pass over them).
    let log_bound = match (&qr, &kr) {
        (Some(q), Some(k)) => {
            let max_row =
                |m: &Array2<T>| m.rows().into_iter().map(|r| r.dot(&r).f()).fold(0.0, f64::max).sqrt();
            let bound = tau * max_row(q) * max_row(k);
            if bound > 0.0 {
                lb + bound.ln()
            } else {
                f64::NEG_INFINITY
            }
        }
        _ => f64::NEG_INFINITY,
    };
    let regime = if log_bound < T::EPS.ln() { Regime::Linear } else { Regime::Split };
    let fa = exp_or_zero(la);
    let fb = exp_or_zero(lb);

    // The logits of p depend on the query only through its key range (softmax of the mean-token
    // scores, uniform): under the full mask every row has the same p, computed once.
    let logits_of = |i: usize, rlo: usize, rhi: usize| -> Vec<f64> {
        match cfg.attention {
            Attention::Softmax => (rlo..rhi)
                .map(|j| match (&a_part, fa) {
                    (Some(a), f) if f > 0.0 => f * a[j],
                    _ => 0.0,
                })
                .collect(),
            Attention::Markov => {
                let lg = head.markov_logits.as_ref().expect("markov logits");
                (rlo..rhi).map(|j| lg[[i, j]].f()).collect()
            }
            Attention::Uniform => vec![0.0; rhi - rlo],
            Attention::Identity => (rlo..rhi).map(|j| if j == i { 0.0 } else { f64::NEG_INFINITY }).collect(),
        }
    };
    let shared_base =
        (mask == Mask::Full && matches!(cfg.attention, Attention::Softmax | Attention::Uniform)).then(|| {
            let z = logits_of(0, 0, n);
            let (p, log_p) = softmax(&z);
            (z, p, log_p)
        });
    let row_of = |i: usize, b_row: Option<ndarray::ArrayView1<T>>, b_lo: usize| -> Row {
        let (rlo, rhi) = mask.range(i, n);
        let (z, p, log_p) = match &shared_base {
            Some((z, p, log_p)) => (Cow::Borrowed(&z[..]), Cow::Borrowed(&p[..]), Cow::Borrowed(&log_p[..])),
            None => {
                let z = logits_of(i, rlo, rhi);
                let (p, log_p) = softmax(&z);
                (Cow::Owned(z), Cow::Owned(p), Cow::Owned(log_p))
            }
        };
        let mut row = Row { lo: rlo, z, p, log_p, x: Vec::new(), l_arg: None, corr: 0.0 };
        if let Some(b) = b_row {
            if regime == Regime::Split {
                row.x = (rlo..rhi).map(|j| fb * (b[j - b_lo].f() * tau)).collect();
                if row.x.iter().all(|v| v.abs() <= 1.0) {
                    row.corr = row.p.iter().zip(&row.x).map(|(p, x)| p * x.exp_m1()).sum::<f64>().ln_1p();
                } else {
                    let terms: Vec<f64> = row.log_p.iter().zip(&row.x).map(|(lp, x)| lp + x).collect();
                    let (k, corr) = log_sum_exp_parts(&terms);
                    row.l_arg = Some(k);
                    row.corr = corr;
                }
            } else {
                row.x = (rlo..rhi).map(|j| b[j - b_lo].f() * tau).collect();
            }
        }
        row
    };
    // The rows of one block of queries, with the key range they span.
    let block_rows = |i0: usize, i1: usize| -> (usize, usize, Vec<Row>) {
        let lo = mask.range(i0, n).0;
        let hi = (i0..i1).map(|i| mask.range(i, n).1).max().unwrap();
        let b_blk = match (&qr, &kr) {
            (Some(q), Some(k)) => Some(q.slice(s![i0..i1, ..]).dot(&k.slice(s![lo..hi, ..]).t())),
            _ => None,
        };
        let rows = (i0..i1).map(|i| row_of(i, b_blk.as_ref().map(|b| b.row(i - i0)), lo)).collect();
        (lo, hi, rows)
    };

    // Pass 1, only when the softmax may saturate: is every row nearly one-hot on the same key?
    let mut reference = Reference::Base;
    if regime == Regime::Split && log_bound > 0.0 {
        let mut winner: Option<usize> = None;
        let mut common = true;
        let (mut worst_base, mut worst_onehot) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
        let mut i0 = 0;
        // Blocks of 1, 2, 4, ... rows: the common case (no common winner) stops after two rows.
        let mut rows_now = 1;
        while i0 < n && common {
            let i1 = (i0 + rows_now).min(n);
            rows_now = (rows_now * 2).min(ROW_BLOCK);
            for row in block_rows(i0, i1).2 {
                let k = (0..row.len()).max_by(|&a, &b| row.log_a(a).total_cmp(&row.log_a(b))).unwrap();
                let k_abs = row.lo + k;
                if *winner.get_or_insert(k_abs) != k_abs {
                    common = false;
                    break;
                }
                // Distances of the row from e_k and from p, as logs (they can be far below f64).
                let off_winner: Vec<f64> = (0..row.len()).filter(|&j| j != k).map(|j| row.log_a(j)).collect();
                let to_base: Vec<f64> =
                    (0..row.len()).map(|j| row.log_p[j] + ln_abs_expm1(row.t(j))).collect();
                worst_onehot = worst_onehot.max(log_sum_exp(&off_winner));
                worst_base = worst_base.max(log_sum_exp(&to_base));
            }
            i0 = i1;
        }
        let base_is_constant = mask == Mask::Full;
        if let (true, Some(k)) = (common, winner) {
            if worst_onehot < worst_base || (!base_is_constant && worst_onehot < 0.5f64.ln()) {
                reference = Reference::OneHot(k);
            }
        }
    }
    // The reference part of A R is one row for every query when q is the same for all rows.
    let constant_reference = match reference {
        Reference::OneHot(_) => true,
        Reference::Base => {
            mask == Mask::Full && matches!(cfg.attention, Attention::Uniform | Attention::Softmax)
        }
    };
    // log of the factor that multiplies D (the linear regime keeps e^{lb} out of the weights).
    let ld = if regime == Regime::Linear { lb } else { 0.0 };

    let mut dense_a = spectrum.then(|| Array2::<f64>::zeros((n, n)));
    let mut entropy = 0.0;
    let mut y_q = Array2::<T>::zeros((n, d));
    let mut y_d = Array2::<T>::zeros((n, d));
    let mut q_const: Option<Array1<T>> = None;
    let mut row_log = vec![f64::NEG_INFINITY; n];
    let (mut log_d, mut sign_d, mut w) = (Vec::new(), Vec::new(), Vec::new());

    let mut i0 = 0;
    while i0 < n {
        let i1 = (i0 + ROW_BLOCK).min(n);
        let (lo, hi, rows) = block_rows(i0, i1);
        let span = hi - lo;
        let mut wq = Array2::<T>::zeros((i1 - i0, span));
        let mut wd = Array2::<T>::zeros((i1 - i0, span));
        for (ri, row) in rows.iter().enumerate() {
            let i = i0 + ri;
            let len = row.len();
            // D_ij = A_ij - q_j as sign and log magnitude.
            // Buffers reused from row to row (no allocation per row).
            log_d.clear();
            log_d.resize(len, f64::NEG_INFINITY);
            sign_d.clear();
            sign_d.resize(len, 0.0);
            let mut pivot = None;
            match reference {
                Reference::OneHot(k) => {
                    for j in 0..len {
                        if row.lo + j != k {
                            log_d[j] = row.log_a(j);
                            sign_d[j] = 1.0;
                        }
                    }
                    pivot = Some(k - row.lo);
                }
                Reference::Base if row.x.is_empty() => {}
                Reference::Base if regime == Regime::Split => {
                    for j in 0..len {
                        let t = row.t(j);
                        sign_d[j] = t.signum();
                        log_d[j] = row.log_p[j] + ln_abs_expm1(t);
                    }
                    // The largest term of l_i is the entry whose t is a difference of tiny
                    // corrections that may have underflowed: it is the pivot.
                    pivot = row.l_arg;
                }
                Reference::Base => {
                    let mean_b = row.p.iter().zip(&row.x).map(|(p, b)| p * b).sum::<f64>();
                    for j in 0..len {
                        let dev = row.x[j] - mean_b;
                        sign_d[j] = dev.signum();
                        log_d[j] = row.log_p[j] + dev.abs().ln();
                    }
                }
            }
            // The D_ij sum to zero exactly: the pivot (the largest) is replaced by minus the sum of
            // the others, so the sum never depends on its cancellation-prone value. Each row is
            // scaled by its own e^{phi_i} so nothing underflows.
            w.clear();
            w.resize(len, 0.0);
            let pivot =
                pivot.unwrap_or_else(|| (0..len).max_by(|&a, &b| log_d[a].total_cmp(&log_d[b])).unwrap_or(0));
            let phi = log_weights(&log_d, &sign_d, pivot, &mut w);
            row_log[i] = phi;
            // q_j of the reference distribution (no per-row allocation).
            let q = |j: usize| match reference {
                Reference::OneHot(k) => f64::from(u8::from(row.lo + j == k)),
                Reference::Base => row.p[j],
            };
            // The attention row itself: entropy and, if asked, the dense matrix.
            let unit = exp_or_zero(ld + phi);
            // log A_ij is known exactly off the pivot where the scores are kept as logs (split
            // regime, or A = p): no logarithm per weight. The pivot's t may have cancelled, so
            // its log is taken of the weight itself, as in the linear regime.
            let exact_log = regime == Regime::Split || row.x.is_empty();
            let mut h = 0.0;
            for k in 0..len {
                let a = q(k) + unit * w[k];
                if a > 0.0 {
                    h -= a * if exact_log && k != pivot { row.log_a(k) } else { a.ln() };
                }
                if let Some(m) = dense_a.as_mut() {
                    m[[i, row.lo + k]] = a;
                }
            }
            entropy += h / n as f64;
            if constant_reference && q_const.is_none() {
                // sum_j q_j r_j as sum_j (q_j - 1/n) r_j (R is centred): exact when q is uniform
                // to many digits, which matters when it is the whole output mean.
                q_const = Some(match reference {
                    Reference::OneHot(k) => x.res.row(k).to_owned(),
                    Reference::Base => deviation_from_uniform(&row.z).mapv(T::c).dot(&x.res),
                });
            }
            for k in 0..len {
                wd[[ri, row.lo - lo + k]] = T::c(w[k]);
                if !constant_reference {
                    wq[[ri, row.lo - lo + k]] = T::c(q(k));
                }
            }
        }
        let r_span = x.res.slice(s![lo..hi, ..]);
        if !constant_reference {
            y_q.slice_mut(s![i0..i1, ..]).assign(&wq.dot(&r_span));
        }
        y_d.slice_mut(s![i0..i1, ..]).assign(&wd.dot(&r_span));
        i0 = i1;
    }

    // Bring the rows of D R to one scale e^{ld + top}.
    let top = row_log.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if top > f64::NEG_INFINITY {
        for (i, mut row) in y_d.rows_mut().into_iter().enumerate() {
            let f = T::c(exp_or_zero(row_log[i] - top));
            row.mapv_inplace(|v| v * f);
        }
    }
    let ld = ld + top;
    let mut mean_terms = Vec::new();
    if !cfg.remove_outlier {
        mean_terms.push((0.0, x.mean.clone()));
    }
    let out = if l == f64::NEG_INFINITY {
        // Identical tokens stay identical under any row-stochastic A.
        Tracked::compose(g, mean_terms, f64::NEG_INFINITY, Array2::zeros((n, d)))
    } else if let Some(qr_const) = q_const {
        // Every row has the same q: its part of A R is one vector (into the mean), centred part zero.
        mean_terms.push((l, qr_const));
        Tracked::compose(g, mean_terms, l + ld, y_d)
    } else {
        let (ly, y) = scaled_sum(vec![(0.0, y_q), (ld, y_d)], ndarray::Ix2(n, d));
        Tracked::compose(g, mean_terms, l + ly, y)
    };
    let spec = dense_a.map(|a| attention_spectrum(&a));
    (out, entropy, spec)
}

/// The weights w_k = sign_k e^{log_d_k - phi} (phi: the largest log_d off the pivot), the pivot
/// minus the sum of the others; returns phi.
fn log_weights(log_d: &[f64], sign_d: &[f64], pivot: usize, w: &mut [f64]) -> f64 {
    let phi = (0..log_d.len()).filter(|&k| k != pivot).map(|k| log_d[k]).fold(f64::NEG_INFINITY, f64::max);
    if phi > f64::NEG_INFINITY {
        for k in 0..log_d.len() {
            if k != pivot {
                w[k] = sign_d[k] * (log_d[k] - phi).exp();
            }
        }
        w[pivot] = -w.iter().sum::<f64>();
    }
    phi
}

/// ln |e^t - 1| without cancellation.
fn ln_abs_expm1(t: f64) -> f64 {
    if t > 1.0 {
        t + (-(-t).exp()).ln_1p()
    } else if t < -1.0 {
        (-t.exp()).ln_1p()
    } else {
        t.exp_m1().abs().ln()
    }
}

/// p_j - 1/n for p = softmax(z) over all n keys, as expm1(z_j - ell) / n with
/// ell = log mean e^z: exact even when p is uniform to many digits.
fn deviation_from_uniform(z: &[f64]) -> Array1<f64> {
    let n = z.len() as f64;
    let ell = if z.iter().all(|v| v.abs() <= 1.0) {
        (z.iter().map(|v| v.exp_m1()).sum::<f64>() / n).ln_1p()
    } else {
        log_sum_exp(z) - n.ln()
    };
    z.iter().map(|v| (v - ell).exp_m1() / n).collect()
}

/// Numerically stable softmax: the probabilities and their logs, log p_j = (z_j - z_k) - corr
/// with k the largest logit, so log p_k = -corr keeps its tiny value when p is saturated.
fn softmax(logits: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let (k, corr) = log_sum_exp_parts(logits);
    let top = logits[k];
    let log_p: Vec<f64> =
        logits.iter().enumerate().map(|(j, z)| if j == k { -corr } else { (z - top) - corr }).collect();
    (log_p.iter().map(|l| l.exp()).collect(), log_p)
}

/// log sum_j e^{x_j} = x_k + corr with k the largest term and corr = log1p(sum of the others
/// relative to it): the tiny correction survives when one term dominates.
fn log_sum_exp_parts(xs: &[f64]) -> (usize, f64) {
    let k = (0..xs.len()).max_by(|&a, &b| xs[a].total_cmp(&xs[b])).unwrap_or(0);
    let top = xs[k];
    if top == f64::NEG_INFINITY {
        return (k, 0.0);
    }
    let rest: f64 = xs.iter().enumerate().filter(|(j, _)| *j != k).map(|(_, x)| (x - top).exp()).sum();
    (k, rest.ln_1p())
}

fn log_sum_exp(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NEG_INFINITY;
    }
    let (k, corr) = log_sum_exp_parts(xs);
    xs[k] + corr
}

/// [sigma_1(A), sigma_2(A), sigma_1(A - 11^T/n)] by Lanczos on A^T A (matrix-free products).
pub fn attention_spectrum(a: &Array2<f64>) -> [f64; 3] {
    let n = a.nrows();
    // A^T in row-major order: ndarray's product with a transposed view is an order slower.
    let at = a.t().as_standard_layout().into_owned();
    let at = &at;
    let start: Vec<f64> = (0..n).map(|i| 1.0 + 0.5 * ((i as f64) * 0.7548776662).fract()).collect();
    let steps = n.min(300);
    let gram = |centre: bool| {
        move |v: &[f64], out: &mut [f64]| {
            let v = ndarray::ArrayView1::from(v);
            let mut av = a.dot(&v);
            if centre {
                // (A - 11^T/n) v = A v - 1 (sum v) / n
                av -= v.sum() / n as f64;
            }
            if centre {
                // (A - 11^T/n)^T w = A^T w - 1 (sum w) / n
                let s = av.sum() / n as f64;
                let mut r = at.dot(&av);
                r -= s;
                out.copy_from_slice(r.as_slice().unwrap());
            } else {
                out.copy_from_slice(at.dot(&av).as_slice().unwrap());
            }
        }
    };
    let top = lanczos_top(n, 2, &start, 1e-12, steps, gram(false));
    let centred = lanczos_top(n, 1, &start, 1e-12, steps, gram(true));
    [top[0].max(0.0).sqrt(), top[1].max(0.0).sqrt(), centred[0].max(0.0).sqrt()]
}
