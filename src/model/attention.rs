//! Attention as an exact map of the tracked state (DESIGN.md "Numerics").
//!
//! With X = e^g (1 m^T + s R), s = e^l, the scores of a softmax head are, up to terms constant
//! along a row, z_ij = e^{2g} (s a_j + s^2 b_ij) with a_j = tau <m W_Q, r_j W_K> and
//! b_ij = tau <r_i W_Q, r_j W_K>. We write A_ij = p_j (1 + e_ij), p = softmax of the a-part over
//! the mask, and accumulate P_i = sum_j p_j r_j and E_i = sum_j p_j e_ij r_j separately, so the
//! small differences between rows are computed directly and never as a difference of large
//! numbers. Two regimes, chosen per head from the bound |b_ij| <= tau |q_i| |k_j|:
//! * split: e_ij = expm1(x_ij - l_i) with x = e^{2g} s^2 b and l_i = log sum_k p_k e^{x_ik},
//!   computed as log1p(sum_k p_k expm1(x_ik)) when |x| <= 1 and by log-sum-exp otherwise;
//!   the weight p_j e_ij is formed in logs where p_j underflows. It is exact in every regime,
//!   and keeps P row-independent under the full mask even when the scores are huge;
//! * linear (e^{2g} s^2 |b| < eps): e_ij = e^{2g} s^2 (b_ij - sum_k p_k b_ik), the factor kept
//!   as a log, so the rule holds however far below the float range the residual goes.
//!
//! Rows are processed in blocks; the n x n matrix is only formed when its spectrum is requested.

use super::state::{exp_or_zero, scaled_sum, Tracked};
use super::{AttentionStats, HeadWeights, LayerWeights, Real};
use crate::config::{Attention, Config, Mask};
use crate::linalg::lanczos_top;
use ndarray::{s, Array1, Array2};

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
    let is_softmax = cfg.attention == Attention::Softmax;
    let (a_part, qr, kr) = if is_softmax && l > f64::NEG_INFINITY {
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
    let regime = match (&qr, &kr) {
        (Some(q), Some(k)) => {
            let max_row =
                |m: &Array2<T>| m.rows().into_iter().map(|r| r.dot(&r).f()).fold(0.0, f64::max).sqrt();
            let bound = tau * max_row(q) * max_row(k);
            let lbb = if bound > 0.0 { lb + bound.ln() } else { f64::NEG_INFINITY };
            if lbb < T::EPS.ln() {
                Regime::Linear
            } else {
                Regime::Split
            }
        }
        _ => Regime::Linear,
    };
    let fa = exp_or_zero(la);
    let fb = exp_or_zero(lb);
    // log of the factor that multiplies the E accumulator.
    let le = if regime == Regime::Linear { lb } else { 0.0 };
    let const_p = mask == Mask::Full && matches!(cfg.attention, Attention::Uniform | Attention::Softmax);

    let mut dense_a = spectrum.then(|| Array2::<f64>::zeros((n, n)));
    let mut entropy = 0.0;
    let mut y_p = Array2::<T>::zeros((n, d));
    let mut y_e = Array2::<T>::zeros((n, d));
    let mut p_const: Option<Array1<f64>> = None;

    let mut i0 = 0;
    while i0 < n {
        let i1 = (i0 + ROW_BLOCK).min(n);
        let lo = mask.range(i0, n).0;
        let hi = (i0..i1).map(|i| mask.range(i, n).1).max().unwrap();
        let span = hi - lo;
        let b_blk = match (&qr, &kr) {
            (Some(q), Some(k)) => Some(q.slice(s![i0..i1, ..]).dot(&k.slice(s![lo..hi, ..]).t())),
            _ => None,
        };
        let mut wp = Array2::<T>::zeros((i1 - i0, span));
        let mut we = Array2::<T>::zeros((i1 - i0, span));
        for i in i0..i1 {
            let (rlo, rhi) = mask.range(i, n);
            let len = rhi - rlo;
            // Base weights p over the row's neighbourhood (in f64), and their logs.
            let logits: Vec<f64> = match cfg.attention {
                Attention::Softmax => (rlo..rhi)
                    .map(|j| {
                        let a = a_part.as_ref().map_or(0.0, |a| a[j]);
                        if fa == 0.0 {
                            0.0
                        } else {
                            fa * a
                        }
                    })
                    .collect(),
                Attention::Markov => {
                    let lg = head.markov_logits.as_ref().expect("markov logits");
                    (rlo..rhi).map(|j| lg[[i, j]].f()).collect()
                }
                Attention::Uniform => vec![0.0; len],
                Attention::Identity => {
                    (rlo..rhi).map(|j| if j == i { 0.0 } else { f64::NEG_INFINITY }).collect()
                }
            };
            let (p, log_p) = softmax(&logits);
            // Weights of the E accumulator (softmax only): p_j e_ij (split) or p_j (b_ij - <b>_p)
            // (linear, times e^{lb} outside).
            let mut pe = vec![0.0f64; len];
            if is_softmax {
                if let Some(bb) = b_blk.as_ref() {
                    let b: Vec<f64> = (rlo..rhi).map(|j| bb[[i - i0, j - lo]].f() * tau).collect();
                    if regime == Regime::Split {
                        let x: Vec<f64> = b.iter().map(|&v| fb * v).collect();
                        let li = if x.iter().all(|v| v.abs() <= 1.0) {
                            p.iter().zip(&x).map(|(p, x)| p * x.exp_m1()).sum::<f64>().ln_1p()
                        } else {
                            log_sum_exp(log_p.iter().zip(&x).map(|(lp, x)| lp + x))
                        };
                        for k in 0..len {
                            let t = x[k] - li;
                            pe[k] =
                                if p[k] > 1e-300 { p[k] * t.exp_m1() } else { (log_p[k] + t).exp() - p[k] };
                        }
                    } else {
                        let mean_b = p.iter().zip(&b).map(|(p, b)| p * b).sum::<f64>();
                        for k in 0..len {
                            pe[k] = p[k] * (b[k] - mean_b);
                        }
                    }
                }
            }
            // The attention row itself: entropy and, if asked, the dense matrix.
            let mut h = 0.0;
            for k in 0..len {
                let a = if regime == Regime::Linear { p[k] + fb * pe[k] } else { p[k] + pe[k] };
                if a > 0.0 {
                    h -= a * a.ln();
                }
                if let Some(m) = dense_a.as_mut() {
                    m[[i, rlo + k]] = a;
                }
            }
            entropy += h / n as f64;
            if const_p && p_const.is_none() {
                p_const = Some(Array1::from(p.clone()));
            }
            for k in 0..len {
                we[[i - i0, rlo - lo + k]] = T::c(pe[k]);
                if !const_p {
                    wp[[i - i0, rlo - lo + k]] = T::c(p[k]);
                }
            }
        }
        let r_span = x.res.slice(s![lo..hi, ..]);
        if !const_p {
            y_p.slice_mut(s![i0..i1, ..]).assign(&wp.dot(&r_span));
        }
        y_e.slice_mut(s![i0..i1, ..]).assign(&we.dot(&r_span));
        i0 = i1;
    }

    let mut mean_terms = Vec::new();
    if !cfg.remove_outlier {
        mean_terms.push((0.0, x.mean.clone()));
    }
    let out = if l == f64::NEG_INFINITY {
        // Identical tokens stay identical under any row-stochastic A.
        Tracked::compose(g, mean_terms, f64::NEG_INFINITY, Array2::zeros((n, d)))
    } else if const_p {
        // Every row has the same p: P is one vector, its centred part is exactly zero.
        let p = p_const.unwrap().mapv(T::c);
        mean_terms.push((l, p.dot(&x.res)));
        Tracked::compose(g, mean_terms, l + le, y_e)
    } else {
        let (ly, y) = scaled_sum(vec![(0.0, y_p), (le, y_e)], ndarray::Ix2(n, d));
        Tracked::compose(g, mean_terms, l + ly, y)
    };
    let spec = dense_a.map(|a| attention_spectrum(&a));
    (out, entropy, spec)
}

/// Numerically stable softmax: the probabilities and their logs.
fn softmax(logits: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let lse = log_sum_exp(logits.iter().cloned());
    let log_p: Vec<f64> = logits.iter().map(|z| z - lse).collect();
    (log_p.iter().map(|l| l.exp()).collect(), log_p)
}

fn log_sum_exp(xs: impl Iterator<Item = f64> + Clone) -> f64 {
    let top = xs.clone().fold(f64::NEG_INFINITY, f64::max);
    if top == f64::NEG_INFINITY {
        return top;
    }
    top + xs.map(|x| (x - top).exp()).sum::<f64>().ln()
}

/// [sigma_1(A), sigma_2(A), sigma_1(A - 11^T/n)] by Lanczos on A^T A (matrix-free products).
pub fn attention_spectrum(a: &Array2<f64>) -> [f64; 3] {
    let n = a.nrows();
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
                let mut r = a.t().dot(&av);
                r -= s;
                out.copy_from_slice(r.as_slice().unwrap());
            } else {
                out.copy_from_slice(a.t().dot(&av).as_slice().unwrap());
            }
        }
    };
    let top = lanczos_top(n, 2, &start, 1e-12, steps, gram(false));
    let centred = lanczos_top(n, 1, &start, 1e-12, steps, gram(true));
    [top[0].max(0.0).sqrt(), top[1].max(0.0).sqrt(), centred[0].max(0.0).sqrt()]
}
