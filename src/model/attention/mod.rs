//! Attention as an exact map of the tracked state (docs/DESIGN.md, "Numerics").
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

mod logs;
mod rows;
mod scores;
mod spectrum;

pub use spectrum::attention_spectrum;

use super::state::Tracked;
use super::{AttentionStats, HeadWeights, LayerWeights, Real};
use crate::config::Config;
use rows::RowPass;
use scores::{HeadScores, Row};

const ROW_BLOCK: usize = 64;

/// How D is formed for a head, chosen from the bound of its b-scores.
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

/// The reference distribution q of the decomposition A_ij = q_j + D_ij, the same for every row
/// when possible so that its part of A R has an exactly zero centred part.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Reference {
    /// q = p (mean-token softmax, or the fixed matrix): the near-uniform and linear regimes.
    Base,
    /// q = e_k: every row is (nearly) one-hot on the same key k (saturated softmax).
    OneHot(usize),
}

impl Reference {
    /// q_j of this row's reference distribution.
    fn q(self, row: &Row, j: usize) -> f64 {
        match self {
            Reference::OneHot(k) => f64::from(u8::from(row.lo + j == k)),
            Reference::Base => row.p[j],
        }
    }
}

/// One head: A X (or (A - 11^T/n) X) as a tracked state, the mean row entropy of A, and the
/// spectrum [sigma_1(A), sigma_2(A), sigma_1(A - 11^T/n)] when requested.
pub fn attend<T: Real>(
    cfg: &Config,
    head: &HeadWeights<T>,
    x: &Tracked<T>,
    spectrum: bool,
) -> (Tracked<T>, f64, Option<[f64; 3]>) {
    let scores = HeadScores::new(cfg, head, x);
    let reference = scores.choose_reference();
    RowPass::new(&scores, reference, spectrum).run()
}
