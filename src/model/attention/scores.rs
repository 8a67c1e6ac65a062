//! The scores of one head, set up once per head (the mean-token part, the factors of the b-scores,
//! the regime their bound allows, the base distribution shared by all rows), the rows of scores
//! built from them block by block, and the first pass that picks the reference q.

use super::logs::{ln_abs_expm1, log_sum_exp, log_sum_exp_parts, softmax};
use super::{Reference, Regime, ROW_BLOCK};
use crate::config::{Attention, Config, Mask};
use crate::model::state::{exp_or_zero, Tracked};
use crate::model::{HeadWeights, Real};
use ndarray::{s, Array1, Array2, ArrayView1};
use std::borrow::Cow;

/// The scores of one row, enough to form every weight of that row exactly.
pub(super) struct Row<'a> {
    pub(super) lo: usize,
    /// The logits of p.
    pub(super) z: Cow<'a, [f64]>,
    /// Base distribution p (softmax of the mean-token scores, or the fixed A) and its logs.
    pub(super) p: Cow<'a, [f64]>,
    pub(super) log_p: Cow<'a, [f64]>,
    /// x_ij = e^{2g} s^2 b_ij (split regime) or b_ij (linear regime); empty when A = p.
    pub(super) x: Vec<f64>,
    /// l_i = log sum_j p_j e^{x_ij} (split regime), kept as the index k of its largest term
    /// (or none when every |x| <= 1) and the rest: l_i = log p_k + x_k + corr, or l_i = corr.
    pub(super) l_arg: Option<usize>,
    pub(super) corr: f64,
}

impl Row<'_> {
    pub(super) fn len(&self) -> usize {
        self.p.len()
    }
    /// t_ij = x_ij - l_i without cancellation (split regime): log A_ij = log p_j + t_ij.
    pub(super) fn t(&self, j: usize) -> f64 {
        match self.l_arg {
            None => self.x[j] - self.corr,
            Some(k) if k == j => -self.log_p[k] - self.corr,
            Some(k) => (self.x[j] - self.x[k]) - self.log_p[k] - self.corr,
        }
    }
    /// log A_ij (split regime or A = p).
    pub(super) fn log_a(&self, j: usize) -> f64 {
        if self.x.is_empty() {
            self.log_p[j]
        } else {
            self.log_p[j] + self.t(j)
        }
    }
    /// Split regime: the row's x and its l_i, as a log1p when every |x| <= 1 (the tiny
    /// correction is the whole of l_i) or as the largest term of the sum plus log1p of the rest.
    fn set_split_scores(&mut self, x: Vec<f64>) {
        self.x = x;
        if self.x.iter().all(|v| v.abs() <= 1.0) {
            self.corr = self.p.iter().zip(&self.x).map(|(p, x)| p * x.exp_m1()).sum::<f64>().ln_1p();
        } else {
            let terms: Vec<f64> = self.log_p.iter().zip(&self.x).map(|(lp, x)| lp + x).collect();
            let (k, corr) = log_sum_exp_parts(&terms);
            self.l_arg = Some(k);
            self.corr = corr;
        }
    }
}

/// The factors of a softmax head's scores: the mean-token part a_j = tau <m W_Q, r_j W_K>, and the
/// query and key projections of the residual, whose products are the b-scores.
struct SoftmaxFactors<T> {
    a: Array1<f64>,
    qr: Array2<T>,
    kr: Array2<T>,
}

/// Everything about one head's scores that does not depend on the query row.
pub(super) struct HeadScores<'a, T> {
    pub(super) cfg: &'a Config,
    head: &'a HeadWeights<T>,
    pub(super) x: &'a Tracked<T>,
    pub(super) n: usize,
    mask: Mask,
    tau: f64,
    /// None unless a softmax head with a non-zero residual.
    factors: Option<SoftmaxFactors<T>>,
    /// log e^{2g} s^2, the factor of the b-scores.
    pub(super) lb: f64,
    /// log of the Cauchy-Schwarz bound of e^{2g} s^2 |b_ij|.
    log_bound: f64,
    pub(super) regime: Regime,
    /// e^{2g} s and e^{2g} s^2, the factors of the a- and b-scores.
    fa: f64,
    fb: f64,
    /// z, p and log p when every row has the same ones.
    shared_base: Option<(Vec<f64>, Vec<f64>, Vec<f64>)>,
}

/// The largest row norm of m (a factor of the Cauchy-Schwarz bound).
fn max_row_norm<T: Real>(m: &Array2<T>) -> f64 {
    m.rows().into_iter().map(|r| r.dot(&r).f()).fold(0.0, f64::max).sqrt()
}

impl<'a, T: Real> HeadScores<'a, T> {
    /// The per-head pieces of the scores, the regime and, under the full mask, the shared p.
    pub(super) fn new(cfg: &'a Config, head: &'a HeadWeights<T>, x: &'a Tracked<T>) -> Self {
        let n = x.tokens();
        let (g, l) = (x.log_scale, x.log_res);
        let tau = cfg.temperature();
        let is_softmax = cfg.attention == Attention::Softmax && l > f64::NEG_INFINITY;
        let factors = is_softmax.then(|| {
            let qm = x.mean.dot(&head.query);
            let qr = x.res.dot(&head.query);
            let kr = x.res.dot(&head.key);
            let a: Array1<f64> = kr.dot(&qm).mapv(|v| v.f() * tau);
            SoftmaxFactors { a, qr, kr }
        });
        let la = 2.0 * g + l;
        let lb = 2.0 * g + 2.0 * l;
        // Regime from the Cauchy-Schwarz bound of the b-scores (no extra pass over them).
        let log_bound = match &factors {
            Some(f) => {
                let bound = tau * max_row_norm(&f.qr) * max_row_norm(&f.kr);
                if bound > 0.0 {
                    lb + bound.ln()
                } else {
                    f64::NEG_INFINITY
                }
            }
            None => f64::NEG_INFINITY,
        };
        let regime = if log_bound < T::EPS.ln() { Regime::Linear } else { Regime::Split };
        let (fa, fb) = (exp_or_zero(la), exp_or_zero(lb));
        let mut scores = HeadScores {
            cfg,
            head,
            x,
            n,
            mask: cfg.mask,
            tau,
            factors,
            lb,
            log_bound,
            regime,
            fa,
            fb,
            shared_base: None,
        };
        scores.shared_base = scores.base_is_shared().then(|| {
            let z = scores.logits_of(0, 0, n);
            let (p, log_p) = softmax(&z);
            (z, p, log_p)
        });
        scores
    }

    /// The logits of p depend on the query only through its key range (softmax of the mean-token
    /// scores, uniform): under the full mask every row has the same p, computed once.
    pub(super) fn base_is_shared(&self) -> bool {
        self.mask == Mask::Full && matches!(self.cfg.attention, Attention::Softmax | Attention::Uniform)
    }

    /// The logits of p for query i over its keys rlo..rhi.
    fn logits_of(&self, i: usize, rlo: usize, rhi: usize) -> Vec<f64> {
        match self.cfg.attention {
            Attention::Softmax => (rlo..rhi)
                .map(|j| match (&self.factors, self.fa) {
                    (Some(f), fa) if fa > 0.0 => fa * f.a[j],
                    _ => 0.0,
                })
                .collect(),
            Attention::Markov => {
                let lg = self.head.markov_logits.as_ref().expect("markov logits");
                (rlo..rhi).map(|j| lg[[i, j]].f()).collect()
            }
            Attention::Uniform => vec![0.0; rhi - rlo],
            Attention::Identity => (rlo..rhi).map(|j| if j == i { 0.0 } else { f64::NEG_INFINITY }).collect(),
        }
    }

    /// The scores of row i; b_row holds its b-scores from key b_lo on (none when A = p).
    fn row_of(&self, i: usize, b_row: Option<ArrayView1<T>>, b_lo: usize) -> Row<'_> {
        let (rlo, rhi) = self.mask.range(i, self.n);
        let (z, p, log_p) = match &self.shared_base {
            Some((z, p, log_p)) => (Cow::Borrowed(&z[..]), Cow::Borrowed(&p[..]), Cow::Borrowed(&log_p[..])),
            None => {
                let z = self.logits_of(i, rlo, rhi);
                let (p, log_p) = softmax(&z);
                (Cow::Owned(z), Cow::Owned(p), Cow::Owned(log_p))
            }
        };
        let mut row = Row { lo: rlo, z, p, log_p, x: Vec::new(), l_arg: None, corr: 0.0 };
        if let Some(b) = b_row {
            if self.regime == Regime::Split {
                row.set_split_scores((rlo..rhi).map(|j| self.fb * (b[j - b_lo].f() * self.tau)).collect());
            } else {
                row.x = (rlo..rhi).map(|j| b[j - b_lo].f() * self.tau).collect();
            }
        }
        row
    }

    /// The rows of one block of queries, with the key range they span.
    pub(super) fn block_rows(&self, i0: usize, i1: usize) -> (usize, usize, Vec<Row<'_>>) {
        let lo = self.mask.range(i0, self.n).0;
        let hi = (i0..i1).map(|i| self.mask.range(i, self.n).1).max().unwrap();
        let b_blk =
            self.factors.as_ref().map(|f| f.qr.slice(s![i0..i1, ..]).dot(&f.kr.slice(s![lo..hi, ..]).t()));
        let rows = (i0..i1).map(|i| self.row_of(i, b_blk.as_ref().map(|b| b.row(i - i0)), lo)).collect();
        (lo, hi, rows)
    }

    /// Pass 1: q = e_k when every row is nearly one-hot on the same key k and e_k is closer to
    /// the rows than p (or, when p differs from row to row, when the rest weighs under 1/2); else
    /// q = p. Only run when the softmax may saturate (split regime, score bound above 1).
    pub(super) fn choose_reference(&self) -> Reference {
        if !(self.regime == Regime::Split && self.log_bound > 0.0) {
            return Reference::Base;
        }
        let n = self.n;
        let mut winner: Option<usize> = None;
        let mut common = true;
        let (mut worst_base, mut worst_onehot) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
        let mut i0 = 0;
        // Blocks of 1, 2, 4, ... rows: the common case (no common winner) stops after two rows.
        let mut rows_now = 1;
        while i0 < n && common {
            let i1 = (i0 + rows_now).min(n);
            rows_now = (rows_now * 2).min(ROW_BLOCK);
            for row in self.block_rows(i0, i1).2 {
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
        let base_is_constant = self.mask == Mask::Full;
        match (common, winner) {
            (true, Some(k))
                if worst_onehot < worst_base || (!base_is_constant && worst_onehot < 0.5f64.ln()) =>
            {
                Reference::OneHot(k)
            }
            _ => Reference::Base,
        }
    }
}
