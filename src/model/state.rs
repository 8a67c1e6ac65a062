//! The tracked representation of one sequence, X = e^g (1 m^T + e^l R), and the exact maps that
//! every layer part is built from. R has zero column means and |R|_F^2 = n (or is zero with
//! l = -inf when the tokens are identical); m and e^l are normalised so max(|m|, e^l) = 1.
//! The two scales live in f64 logs, so collapse far below float epsilon (and growth far above
//! the float range) stays representable; only O(1) numbers are stored in the float type `T`.

use super::Real;
use ndarray::{Array, Array1, Array2, ArrayView2, Axis, Dimension, Ix1, Ix2};

#[derive(Clone, Debug)]
pub struct Tracked<T> {
    /// g: log of the global scale.
    pub log_scale: f64,
    /// m: the token mean in units of e^g.
    pub mean: Array1<T>,
    /// l: log of the residual scale relative to e^g.
    pub log_res: f64,
    /// R: centred residual, |R|_F^2 = n, or zero.
    pub res: Array2<T>,
}

/// A term e^log * v of a sum.
pub type Scaled<V> = (f64, V);

impl<T: Real> Tracked<T> {
    pub fn tokens(&self) -> usize {
        self.res.nrows()
    }
    pub fn width(&self) -> usize {
        self.res.ncols()
    }

    /// Builds the state e^g (1 (sum of mean terms)^T + e^lr Y) for an arbitrary (uncentred) Y:
    /// the column mean of Y moves into the mean, the rest is normalised into (l, R).
    pub fn compose(g: f64, mean_terms: Vec<Scaled<Array1<T>>>, lr: f64, mut y: Array2<T>) -> Self {
        let n = y.nrows();
        let d = y.ncols();
        // Shifted mean, x_0 + mean(x_i - x_0): exact when all rows are equal, so identical
        // tokens give an exactly zero residual.
        let col_mean = if n == 0 {
            Array1::zeros(d)
        } else {
            let first = y.row(0).to_owned();
            let nt = T::c(n as f64);
            let mut mean = Array1::zeros(d);
            for j in 0..d {
                let diff_sum = y.column(j).iter().fold(T::zero(), |acc, v| acc + (*v - first[j]));
                mean[j] = first[j] + diff_sum / nt;
            }
            mean
        };
        y -= &col_mean.view().insert_axis(Axis(0));
        let mut terms = mean_terms;
        if lr > f64::NEG_INFINITY {
            terms.push((lr, col_mean));
        }
        let (lm, mean) = scaled_sum(terms, Ix1(d));
        let (lr, res) = normalise_residual(lr, y);
        Self::normalised(g, lm, mean, lr, res, n)
    }

    /// Final normalisation: max(|m|, e^l) = 1, with the common factor moved into g.
    fn normalised(g: f64, lm: f64, mean: Array1<T>, lr: f64, res: Array2<T>, n: usize) -> Self {
        // |m| on m / max|m|: the squares of entries near the float range would overflow.
        let big = mean.iter().map(|x| x.to_f64().unwrap().abs()).fold(0.0, f64::max);
        let norm_m = if big > 0.0 && big.is_finite() {
            mean.iter().map(|x| (x.to_f64().unwrap() / big).powi(2)).sum::<f64>().sqrt() * big
        } else {
            big
        };
        let log_m = if norm_m > 0.0 && lm > f64::NEG_INFINITY { lm + norm_m.ln() } else { f64::NEG_INFINITY };
        let top = log_m.max(lr);
        if top == f64::NEG_INFINITY {
            let d = mean.len();
            return Tracked {
                log_scale: f64::NEG_INFINITY,
                mean: Array1::zeros(d),
                log_res: f64::NEG_INFINITY,
                res: Array2::zeros((n, d)),
            };
        }
        let mean = if log_m == f64::NEG_INFINITY {
            Array1::zeros(mean.len())
        } else {
            // (x / |m|) * e^{log|m| - top}: both factors are at most one, nothing overflows.
            let f = (log_m - top).exp() / norm_m;
            mean.mapv(|x| T::c(x.to_f64().unwrap() * f))
        };
        Tracked { log_scale: g + top, mean, log_res: lr - top, res }
    }

    /// The tokens of a dense matrix.
    pub fn from_matrix(x: Array2<T>) -> Self {
        let d = x.ncols();
        Self::compose(0.0, vec![(0.0, Array1::zeros(d))], 0.0, x)
    }

    /// X W for a d_in x d_out matrix W: m W and R W (R W stays centred).
    pub fn linear(&self, w: ArrayView2<T>) -> Self {
        if self.log_scale == f64::NEG_INFINITY {
            return Self::zero(self.tokens(), w.ncols());
        }
        Self::compose(self.log_scale, vec![(0.0, self.mean.dot(&w))], self.log_res, self.res.dot(&w))
    }

    pub fn zero(n: usize, d: usize) -> Self {
        Self::normalised(
            0.0,
            f64::NEG_INFINITY,
            Array1::zeros(d),
            f64::NEG_INFINITY,
            Array2::zeros((n, d)),
            n,
        )
    }

    /// a X + b F, with the scales combined by log-sum-exp (a skip connection).
    pub fn affine_sum(a: f64, x: &Self, b: f64, f: &Self) -> Self {
        let n = x.tokens();
        let d = x.width();
        let parts: Vec<(f64, T, &Self)> = [(a, x), (b, f)]
            .into_iter()
            .filter(|(c, s)| *c != 0.0 && s.log_scale > f64::NEG_INFINITY)
            .map(|(c, s)| (s.log_scale + c.abs().ln(), T::c(c.signum()), s))
            .collect();
        if parts.is_empty() {
            return Self::zero(n, d);
        }
        let g = parts.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
        let mean_terms = parts.iter().map(|(lg, sign, s)| (lg - g, s.mean.mapv(|v| v * *sign))).collect();
        let res_terms: Vec<Scaled<Array2<T>>> = parts
            .iter()
            .filter(|(_, _, s)| s.log_res > f64::NEG_INFINITY)
            .map(|(lg, sign, s)| (lg - g + s.log_res, s.res.mapv(|v| v * *sign)))
            .collect();
        let (lr, y) = scaled_sum(res_terms, Ix2(n, d));
        Self::compose(g, mean_terms, lr, y)
    }

    /// Concatenation along features (the heads of an attention layer).
    pub fn concat(parts: &[Self]) -> Self {
        let n = parts[0].tokens();
        let g = parts.iter().map(|p| p.log_scale).fold(f64::NEG_INFINITY, f64::max);
        let total: usize = parts.iter().map(|p| p.width()).sum();
        if g == f64::NEG_INFINITY {
            return Self::zero(n, total);
        }
        let lr = parts.iter().map(|p| p.log_scale - g + p.log_res).fold(f64::NEG_INFINITY, f64::max);
        let mut mean = Array1::zeros(total);
        let mut y = Array2::zeros((n, total));
        let mut at = 0;
        for p in parts {
            let w = p.width();
            let fm = T::c(exp_or_zero(p.log_scale - g));
            mean.slice_mut(ndarray::s![at..at + w]).assign(&p.mean.mapv(|v| v * fm));
            if lr > f64::NEG_INFINITY {
                let fr = T::c(exp_or_zero(p.log_scale - g + p.log_res - lr));
                y.slice_mut(ndarray::s![.., at..at + w]).assign(&p.res.mapv(|v| v * fr));
            }
            at += w;
        }
        Self::compose(g, vec![(0.0, mean)], lr, y)
    }

    /// What is wrong with this state, if a value in it is not a number the representation allows:
    /// g or l NaN or +inf (-inf is an exact zero), or a non-finite entry of m or R.
    pub fn fault(&self) -> Option<String> {
        let bad = |x: f64| x.is_nan() || x == f64::INFINITY;
        if bad(self.log_scale) {
            return Some(format!("log scale g = {}", self.log_scale));
        }
        if bad(self.log_res) {
            return Some(format!("residual log scale l = {}", self.log_res));
        }
        let mean = self.mean.iter().filter(|x| !x.is_finite()).count();
        let res = self.res.iter().filter(|x| !x.is_finite()).count();
        (mean + res > 0).then(|| {
            format!(
                "{mean} of {} token-mean entries and {res} of {} residual entries are not finite",
                self.mean.len(),
                self.res.len()
            )
        })
    }

    /// The dense tokens in units of e^g, in f64: 1 m^T + e^l R.
    pub fn dense(&self) -> Array2<f64> {
        let s = exp_or_zero(self.log_res);
        let mut x = self.res.mapv(|v| v.to_f64().unwrap() * s);
        x += &self.mean.mapv(|v| v.to_f64().unwrap()).insert_axis(Axis(0));
        x
    }
}

/// e^x, with e^-inf = 0.
pub fn exp_or_zero(x: f64) -> f64 {
    if x == f64::NEG_INFINITY {
        0.0
    } else {
        x.exp()
    }
}

/// sum_k e^{l_k} v_k as e^L v with L = max l_k (every factor e^{l_k - L} is at most one).
pub fn scaled_sum<T: Real, D: Dimension>(terms: Vec<Scaled<Array<T, D>>>, shape: D) -> Scaled<Array<T, D>> {
    // A term that is exactly zero must not set the scale (it would flush the others to zero).
    let terms: Vec<_> = terms.into_iter().filter(|(_, v)| v.iter().any(|x| *x != T::zero())).collect();
    let top = terms.iter().map(|t| t.0).fold(f64::NEG_INFINITY, f64::max);
    let mut out = Array::zeros(shape);
    if top == f64::NEG_INFINITY {
        return (top, out);
    }
    for (l, v) in terms {
        let f = T::c(exp_or_zero(l - top));
        out.zip_mut_with(&v, |o, x| *o += f * *x);
    }
    (top, out)
}

/// Scales a centred Y to |R|_F^2 = n, moving the factor into the log scale.
fn normalise_residual<T: Real>(lr: f64, y: Array2<T>) -> (f64, Array2<T>) {
    let n = y.nrows();
    let big = y.iter().map(|v| v.to_f64().unwrap().abs()).fold(0.0, f64::max);
    if lr == f64::NEG_INFINITY || big == 0.0 || !big.is_finite() {
        if !big.is_finite() {
            // A fault upstream: keep the non-finite values visible to the metrics.
            return (lr, y);
        }
        return (f64::NEG_INFINITY, Array2::zeros(y.raw_dim()));
    }
    // Norm computed on Y / max|Y| so that neither the squares overflow nor underflow.
    let fro = y.iter().map(|v| (v.to_f64().unwrap() / big).powi(2)).sum::<f64>().sqrt() * big;
    let f = (n as f64).sqrt() / fro;
    (lr + (fro / (n as f64).sqrt()).ln(), y.mapv(|v| T::c(v.to_f64().unwrap() * f)))
}
