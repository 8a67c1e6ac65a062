//! The second pass over the rows of one head: each row's D = A - q as signs and log magnitudes
//! (one function per regime), turned into pivoted weights on the row's own scale and applied to
//! the residual block by block; then D R brought to one scale and composed into the output state.

use super::logs::{deviation_from_uniform, ln_abs_expm1, log_weights};
use super::scores::{HeadScores, Row};
use super::{attention_spectrum, Reference, Regime, ROW_BLOCK};
use crate::model::state::{exp_or_zero, scaled_sum, Tracked};
use crate::model::Real;
use ndarray::{s, Array1, Array2};

/// What the second pass accumulates over the rows of one head: A R as q R and D R (each row of
/// D R on its own scale e^{ld + row_log_i}), and the statistics of A.
pub(super) struct RowPass<'s, 'a, T> {
    scores: &'s HeadScores<'a, T>,
    reference: Reference,
    /// q is the same for every row, so its part of A R is one vector (q_const).
    constant_reference: bool,
    /// log of the factor that multiplies D (the linear regime keeps e^{lb} out of the weights).
    ld: f64,
    dense_a: Option<Array2<f64>>,
    entropy: f64,
    y_q: Array2<T>,
    y_d: Array2<T>,
    q_const: Option<Array1<T>>,
    row_log: Vec<f64>,
    // Buffers reused from row to row (no allocation per row).
    log_d: Vec<f64>,
    sign_d: Vec<f64>,
    w: Vec<f64>,
}

impl<'s, 'a, T: Real> RowPass<'s, 'a, T> {
    pub(super) fn new(scores: &'s HeadScores<'a, T>, reference: Reference, spectrum: bool) -> Self {
        let (n, d) = (scores.n, scores.x.width());
        // The reference part of A R is one row for every query when q is the same for all rows.
        let constant_reference = match reference {
            Reference::OneHot(_) => true,
            Reference::Base => scores.base_is_shared(),
        };
        let ld = if scores.regime == Regime::Linear { scores.lb } else { 0.0 };
        RowPass {
            scores,
            reference,
            constant_reference,
            ld,
            dense_a: spectrum.then(|| Array2::<f64>::zeros((n, n))),
            entropy: 0.0,
            y_q: Array2::<T>::zeros((n, d)),
            y_d: Array2::<T>::zeros((n, d)),
            q_const: None,
            row_log: vec![f64::NEG_INFINITY; n],
            log_d: Vec::new(),
            sign_d: Vec::new(),
            w: Vec::new(),
        }
    }

    /// Every block of rows, then the output state, the mean row entropy and the spectrum.
    pub(super) fn run(mut self) -> (Tracked<T>, f64, Option<[f64; 3]>) {
        let n = self.scores.n;
        let mut i0 = 0;
        while i0 < n {
            let i1 = (i0 + ROW_BLOCK).min(n);
            self.block(i0, i1);
            i0 = i1;
        }
        self.finish()
    }

    /// Queries i0..i1: each row's weights of q and of D over the keys the block spans, then both
    /// applied to that span of the residual (q R only when it differs from row to row).
    fn block(&mut self, i0: usize, i1: usize) {
        let scores = self.scores;
        let (lo, hi, rows) = scores.block_rows(i0, i1);
        let span = hi - lo;
        let mut wq = Array2::<T>::zeros((i1 - i0, span));
        let mut wd = Array2::<T>::zeros((i1 - i0, span));
        for (ri, row) in rows.iter().enumerate() {
            self.weigh_row(i0 + ri, row);
            for k in 0..row.len() {
                wd[[ri, row.lo - lo + k]] = T::c(self.w[k]);
                if !self.constant_reference {
                    wq[[ri, row.lo - lo + k]] = T::c(self.reference.q(row, k));
                }
            }
        }
        let r_span = scores.x.res.slice(s![lo..hi, ..]);
        if !self.constant_reference {
            self.y_q.slice_mut(s![i0..i1, ..]).assign(&wq.dot(&r_span));
        }
        self.y_d.slice_mut(s![i0..i1, ..]).assign(&wd.dot(&r_span));
    }

    /// Row i: its weights of D (left in self.w) and their scale, its entropy and dense entries,
    /// and q R once when q is the same for every row.
    fn weigh_row(&mut self, i: usize, row: &Row) {
        let len = row.len();
        self.log_d.clear();
        self.log_d.resize(len, f64::NEG_INFINITY);
        self.sign_d.clear();
        self.sign_d.resize(len, 0.0);
        let pivot = self.deviation(row);
        // The D_ij sum to zero exactly: the pivot (the largest) is replaced by minus the sum of
        // the others, so the sum never depends on its cancellation-prone value. Each row is
        // scaled by its own e^{phi_i} so nothing underflows.
        self.w.clear();
        self.w.resize(len, 0.0);
        let log_d = &self.log_d;
        let pivot =
            pivot.unwrap_or_else(|| (0..len).max_by(|&a, &b| log_d[a].total_cmp(&log_d[b])).unwrap_or(0));
        let phi = log_weights(&self.log_d, &self.sign_d, pivot, &mut self.w);
        self.row_log[i] = phi;
        self.row_entropy(i, row, pivot, phi);
        if self.constant_reference && self.q_const.is_none() {
            // sum_j q_j r_j as sum_j (q_j - 1/n) r_j (R is centred): exact when q is uniform
            // to many digits, which matters when it is the whole output mean.
            let res = &self.scores.x.res;
            self.q_const = Some(match self.reference {
                Reference::OneHot(k) => res.row(k).to_owned(),
                Reference::Base => deviation_from_uniform(&row.z).mapv(T::c).dot(res),
            });
        }
    }

    /// D_ij = A_ij - q_j of one row as sign and log magnitude, by reference and regime; the pivot
    /// when the regime knows which entry is cancellation-prone.
    fn deviation(&mut self, row: &Row) -> Option<usize> {
        let (log_d, sign_d) = (&mut self.log_d[..], &mut self.sign_d[..]);
        match self.reference {
            Reference::OneHot(k) => Some(onehot_deviation(row, k, log_d, sign_d)),
            // A = p: D = 0.
            Reference::Base if row.x.is_empty() => None,
            Reference::Base if self.scores.regime == Regime::Split => split_deviation(row, log_d, sign_d),
            Reference::Base => {
                linear_deviation(row, log_d, sign_d);
                None
            }
        }
    }

    /// The attention row A_ij = q_j + e^{ld + phi} w_j: its entropy into the mean and, if asked,
    /// its entries into the dense matrix.
    fn row_entropy(&mut self, i: usize, row: &Row, pivot: usize, phi: f64) {
        let unit = exp_or_zero(self.ld + phi);
        // log A_ij is known exactly off the pivot where the scores are kept as logs (split
        // regime, or A = p): no logarithm per weight. The pivot's t may have cancelled, so
        // its log is taken of the weight itself, as in the linear regime.
        let exact_log = self.scores.regime == Regime::Split || row.x.is_empty();
        let mut h = 0.0;
        for k in 0..row.len() {
            let a = self.reference.q(row, k) + unit * self.w[k];
            if a > 0.0 {
                h -= a * if exact_log && k != pivot { row.log_a(k) } else { a.ln() };
            }
            if let Some(m) = self.dense_a.as_mut() {
                m[[i, row.lo + k]] = a;
            }
        }
        self.entropy += h / self.scores.n as f64;
    }

    /// Brings the rows of D R to one scale e^{ld + top} and composes A X: the mean (unless the
    /// outlier is removed), q R into the mean when it is one vector, the rest into the residual.
    fn finish(mut self) -> (Tracked<T>, f64, Option<[f64; 3]>) {
        let x = self.scores.x;
        let (n, d) = (x.tokens(), x.width());
        let (g, l) = (x.log_scale, x.log_res);
        let top = self.row_log.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        if top > f64::NEG_INFINITY {
            for (i, mut row) in self.y_d.rows_mut().into_iter().enumerate() {
                let f = T::c(exp_or_zero(self.row_log[i] - top));
                row.mapv_inplace(|v| v * f);
            }
        }
        let ld = self.ld + top;
        let mut mean_terms = Vec::new();
        if !self.scores.cfg.remove_outlier {
            mean_terms.push((0.0, x.mean.clone()));
        }
        let out = if l == f64::NEG_INFINITY {
            // Identical tokens stay identical under any row-stochastic A.
            Tracked::compose(g, mean_terms, f64::NEG_INFINITY, Array2::zeros((n, d)))
        } else if let Some(qr_const) = self.q_const {
            // Every row has the same q: its part of A R is one vector (into the mean), centred part zero.
            mean_terms.push((l, qr_const));
            Tracked::compose(g, mean_terms, l + ld, self.y_d)
        } else {
            let (ly, y) = scaled_sum(vec![(0.0, self.y_q), (ld, self.y_d)], ndarray::Ix2(n, d));
            Tracked::compose(g, mean_terms, l + ly, y)
        };
        let spec = self.dense_a.map(|a| attention_spectrum(&a));
        (out, self.entropy, spec)
    }
}

/// One-hot reference q = e_k (saturated softmax): D_ij = A_ij off the key k, whose logs are
/// known exactly; the key k itself (D_ik = A_ik - 1, all cancellation) is the pivot.
fn onehot_deviation(row: &Row, k: usize, log_d: &mut [f64], sign_d: &mut [f64]) -> usize {
    for j in 0..row.len() {
        if row.lo + j != k {
            log_d[j] = row.log_a(j);
            sign_d[j] = 1.0;
        }
    }
    k - row.lo
}

/// Split regime, q = p: D_ij = p_j expm1(t_ij), exact from the logs of p and of t. The largest
/// term of l_i is the entry whose t is a difference of tiny corrections that may have
/// underflowed: it is the pivot (none when every |x| <= 1).
fn split_deviation(row: &Row, log_d: &mut [f64], sign_d: &mut [f64]) -> Option<usize> {
    for j in 0..row.len() {
        let t = row.t(j);
        sign_d[j] = t.signum();
        log_d[j] = row.log_p[j] + ln_abs_expm1(t);
    }
    row.l_arg
}

/// Linear regime (e^{2g} s^2 |b| < eps), q = p: D_ij = p_j (b_ij - sum_k p_k b_ik) up to the
/// factor e^{lb}, which stays in ld so the rule holds however small the residual is.
fn linear_deviation(row: &Row, log_d: &mut [f64], sign_d: &mut [f64]) {
    let mean_b = row.p.iter().zip(&row.x).map(|(p, b)| p * b).sum::<f64>();
    for j in 0..row.len() {
        let dev = row.x[j] - mean_b;
        sign_d[j] = dev.signum();
        log_d[j] = row.log_p[j] + dev.abs().ln();
    }
}
