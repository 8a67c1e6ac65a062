//! The f64 CPU engine against an independent arbitrary-precision reference.
//!
//! The reference is the *plain* model, straight from the definitions in DESIGN.md: the dense token
//! matrix X (n x d) in MPFR floats (rug), one layer at a time, with the crate's own weight and input
//! draws converted exactly from f64, so both sides see the same numbers. It shares no code with the
//! tracked representation X = e^g (1 m^T + e^l R) of the engine: no mean/residual split, no
//! linearisation, no log scales; only ordinary matrix products, row softmax, norms and activations
//! at a precision high enough that the tiny residual X - 1 xbar^T survives the subtraction.
//!
//! Precision: every reference quantity carries an absolute error of about 2^-bits relative to |X|,
//! so a residual 10^-D is resolved when bits >> 3.32 D; the second singular value of a collapsed X
//! is ~10^-D sigma_1 and comes out of X^T X (scale sigma_1^2), so it needs about twice the digits.
//! The precision is chosen by the reference itself (grown until it covers twice the deepest
//! residual it sees, plus a margin) and then checked by a second run at a higher precision: the two
//! must agree far tighter than the tolerance of the comparison with the engine.
//!
//! Tolerance: |engine - reference| <= tol * max(1, |reference|), tol = 1e-9 for every metric; for a
//! log10 residual of -300 that is 3e-7 in the log, a relative error of 7e-7 in the residual itself.
//! The one allowance is for sigma_2(A) and sigma_1(A - 11^T/n), which the engine computes with a
//! Lanczos tolerance (see `LANCZOS_TOL`). GELU needs none: the engine's erfc/Gauss-Legendre forms
//! agree with the reference's erf to ~1e-15.
//!
//! Layout: one test follows pure attention down to log10 residual -1000; table-driven tests cover
//! every layer part; one checks exactly zero residuals. The last section holds the disagreements
//! this reference found, one test each, compared just as strictly and named after the cause; the
//! table tests leave out exactly those comparisons (marked where they do).

use ndarray::Array2;
use rankcollapse::config::{Activation, Attention, Config, Mlp, Norm, NormKind};
use rankcollapse::engine::cpu::simulate;
use rankcollapse::metrics::sigma_ratio_floor;
use rankcollapse::metrics::Metric;
use rankcollapse::model::{input_tokens, layer_weights_f64, LayerWeights};
use rug::Float;
use std::fmt::Write as _;

/// Smallest reference precision (bits).
const MIN_BITS: u32 = 512;
/// Largest reference precision the tests allow themselves (bits).
const MAX_BITS: u32 = 60_000;
/// Precision used for O(1) spectral quantities once their matrix is formed exactly enough (bits).
const SPECTRAL_BITS: u32 = 320;
/// Relative tolerance of every engine-vs-reference comparison.
const TOL: f64 = 1e-9;
/// The engine's attention spectrum comes from Lanczos on A^T A in f64, stopped when the top Ritz
/// values move by less than 1e-12 lambda_1 (`attention_spectrum`, by design: matrix-free). An
/// eigenvalue of A^T A is therefore only known to about LANCZOS_TOL lambda_1 in absolute terms,
/// and a singular value sigma to min(sqrt(delta), delta / (2 sigma)) with delta = LANCZOS_TOL
/// sigma_1^2: for sigma_2(A) of a nearly rank-one A (collapsed tokens) and sigma_1(A - 11^T/n) of a
/// nearly uniform A that is ~1e-6 sigma_1, far above `TOL`. These two metrics (and only they) are
/// compared with that allowance added; every comparison that needs it is counted and reported.
const LANCZOS_TOL: f64 = 1e-12;

// ---------------------------------------------------------------------------------------------
// Dense matrices of MPFR floats.

#[derive(Clone, Debug)]
struct Mat {
    rows: usize,
    cols: usize,
    prec: u32,
    a: Vec<Float>,
}

impl Mat {
    fn zeros(prec: u32, rows: usize, cols: usize) -> Self {
        Mat { rows, cols, prec, a: vec![Float::new(prec); rows * cols] }
    }

    fn from_f64(prec: u32, m: &Array2<f64>) -> Self {
        let (rows, cols) = m.dim();
        let a = m.iter().map(|&v| Float::with_val(prec, v)).collect();
        Mat { rows, cols, prec, a }
    }

    fn identity(prec: u32, n: usize) -> Self {
        let mut m = Mat::zeros(prec, n, n);
        for i in 0..n {
            m.set(i, i, Float::with_val(prec, 1));
        }
        m
    }

    fn at(&self, i: usize, j: usize) -> &Float {
        &self.a[i * self.cols + j]
    }

    fn set(&mut self, i: usize, j: usize, v: Float) {
        self.a[i * self.cols + j] = v;
    }

    fn row(&self, i: usize) -> &[Float] {
        &self.a[i * self.cols..(i + 1) * self.cols]
    }

    /// The same matrix rounded to another precision.
    fn with_prec(&self, prec: u32) -> Self {
        let a = self.a.iter().map(|v| Float::with_val(prec, v)).collect();
        Mat { rows: self.rows, cols: self.cols, prec, a }
    }

    fn mul(&self, o: &Mat) -> Mat {
        assert_eq!(self.cols, o.rows, "shape mismatch in product");
        let p = self.prec;
        let mut out = Mat::zeros(p, self.rows, o.cols);
        for i in 0..self.rows {
            for j in 0..o.cols {
                let mut acc = Float::new(p);
                for k in 0..self.cols {
                    acc += Float::with_val(p, self.at(i, k) * o.at(k, j));
                }
                out.set(i, j, acc);
            }
        }
        out
    }

    fn t(&self) -> Mat {
        let mut out = Mat::zeros(self.prec, self.cols, self.rows);
        for i in 0..self.rows {
            for j in 0..self.cols {
                out.set(j, i, self.at(i, j).clone());
            }
        }
        out
    }

    /// a self + b other.
    fn lincomb(&self, a: &Float, b: &Float, o: &Mat) -> Mat {
        let p = self.prec;
        let a = self
            .a
            .iter()
            .zip(&o.a)
            .map(|(x, y)| Float::with_val(p, a * x) + Float::with_val(p, b * y))
            .collect();
        Mat { rows: self.rows, cols: self.cols, prec: p, a }
    }

    fn max_abs(&self) -> Float {
        let mut m = Float::new(self.prec);
        for v in &self.a {
            let av = Float::with_val(self.prec, v.abs_ref());
            if av > m {
                m = av;
            }
        }
        m
    }

    fn scaled(&self, c: &Float) -> Mat {
        let p = self.prec;
        let a = self.a.iter().map(|v| Float::with_val(p, v * c)).collect();
        Mat { rows: self.rows, cols: self.cols, prec: p, a }
    }

    fn fro2(&self) -> Float {
        let mut acc = Float::new(self.prec);
        for v in &self.a {
            acc += Float::with_val(self.prec, v.square_ref());
        }
        acc
    }

    fn is_zero(&self) -> bool {
        self.a.iter().all(|v| v.is_zero())
    }

    /// Columns side by side.
    fn hcat(parts: &[Mat]) -> Mat {
        let rows = parts[0].rows;
        let prec = parts[0].prec;
        let cols = parts.iter().map(|m| m.cols).sum();
        let mut out = Mat::zeros(prec, rows, cols);
        let mut at = 0;
        for m in parts {
            for i in 0..rows {
                for j in 0..m.cols {
                    out.set(i, at + j, m.at(i, j).clone());
                }
            }
            at += m.cols;
        }
        out
    }
}

fn fl(prec: u32, x: f64) -> Float {
    Float::with_val(prec, x)
}

/// Largest eigenvalue and a unit eigenvector of the symmetric positive semi-definite `g`, by
/// repeated squaring (G^(2^k), renormalised) until the iterate is a fixed point, then the Rayleigh
/// quotient of its dominant column. Exact to the working precision for any spectral gap that is
/// not itself below the working precision (and for a degenerate top eigenvalue too).
fn top_eig(g: &Mat) -> (Float, Vec<Float>) {
    let p = g.prec;
    let d = g.rows;
    let big = g.max_abs();
    if big.is_zero() {
        let mut v = vec![Float::new(p); d];
        v[0] = Float::with_val(p, 1);
        return (Float::new(p), v);
    }
    let mut s = g.scaled(&Float::with_val(p, 1 / &big));
    let thresh = Float::with_val(p, Float::i_exp(1, -(p as i32) + 16));
    for _ in 0..200 {
        let sq = s.mul(&s);
        let m = sq.max_abs();
        let next = sq.scaled(&Float::with_val(p, 1 / &m));
        let diff = next
            .a
            .iter()
            .zip(&s.a)
            .map(|(x, y)| Float::with_val(p, x - y).abs())
            .fold(Float::new(p), |acc, v| if v > acc { v } else { acc });
        s = next;
        if diff <= thresh {
            break;
        }
    }
    let best = (0..d)
        .max_by(|&a, &b| {
            let na = (0..d).fold(Float::new(p), |acc, i| acc + Float::with_val(p, s.at(i, a).square_ref()));
            let nb = (0..d).fold(Float::new(p), |acc, i| acc + Float::with_val(p, s.at(i, b).square_ref()));
            na.partial_cmp(&nb).unwrap()
        })
        .unwrap();
    let mut v: Vec<Float> = (0..d).map(|i| s.at(i, best).clone()).collect();
    let norm = v.iter().fold(Float::new(p), |acc, x| acc + Float::with_val(p, x.square_ref())).sqrt();
    for x in v.iter_mut() {
        *x /= &norm;
    }
    let mut lambda = Float::new(p);
    for i in 0..d {
        for j in 0..d {
            lambda += Float::with_val(p, g.at(i, j) * &v[i]) * &v[j];
        }
    }
    (lambda, v)
}

/// The two largest eigenvalues of the symmetric PSD `g`: lambda_1 and the top eigenvalue of
/// P g P with P = I - v v^T (v: the top eigenvector).
fn top_two_eig(g: &Mat) -> (Float, Float) {
    let p = g.prec;
    let d = g.rows;
    let (l1, v) = top_eig(g);
    let mut proj = Mat::identity(p, d);
    for i in 0..d {
        for j in 0..d {
            let pij = Float::with_val(p, proj.at(i, j) - Float::with_val(p, &v[i] * &v[j]));
            proj.set(i, j, pij);
        }
    }
    let (l2, _) = top_eig(&proj.mul(g).mul(&proj));
    (l1, l2)
}

// ---------------------------------------------------------------------------------------------
// The plain model.

/// Row softmax of a vector of logits.
fn softmax(prec: u32, z: &[Float]) -> Vec<Float> {
    let mut top = z[0].clone();
    for v in z {
        if *v > top {
            top = v.clone();
        }
    }
    let e: Vec<Float> = z.iter().map(|v| Float::with_val(prec, v - &top).exp()).collect();
    let sum = Float::with_val(prec, Float::sum(e.iter()));
    e.iter().map(|v| Float::with_val(prec, v / &sum)).collect()
}

/// Attention statistics of one layer averaged over heads: entropy, sigma_1(A), sigma_2(A),
/// sigma_1(A - 11^T/n).
#[derive(Clone, Copy, Debug)]
struct AttnRef {
    entropy: f64,
    spectrum: [f64; 3],
}

/// The attention matrix of one head (n x n, zero outside the mask).
fn attention_matrix(cfg: &Config, head: &rankcollapse::model::HeadWeights<f64>, x: &Mat) -> Mat {
    let p = x.prec;
    let n = x.rows;
    let mut a = Mat::zeros(p, n, n);
    let scores = (cfg.attention == Attention::Softmax).then(|| {
        let q = x.mul(&Mat::from_f64(p, &head.query));
        let k = x.mul(&Mat::from_f64(p, &head.key));
        q.mul(&k.t()).scaled(&fl(p, cfg.temperature()))
    });
    for i in 0..n {
        let (lo, hi) = cfg.mask.range(i, n);
        let row: Vec<Float> = match cfg.attention {
            Attention::Softmax => {
                let z: Vec<Float> = (lo..hi).map(|j| scores.as_ref().unwrap().at(i, j).clone()).collect();
                softmax(p, &z)
            }
            Attention::Markov => {
                let lg = head.markov_logits.as_ref().expect("markov logits");
                let z: Vec<Float> = (lo..hi).map(|j| fl(p, lg[[i, j]])).collect();
                softmax(p, &z)
            }
            Attention::Uniform => (lo..hi).map(|_| Float::with_val(p, 1) / (hi - lo) as u32).collect(),
            Attention::Identity => (lo..hi).map(|j| Float::with_val(p, if j == i { 1 } else { 0 })).collect(),
        };
        for (k, v) in row.into_iter().enumerate() {
            a.set(i, lo + k, v);
        }
    }
    a
}

/// sigma_1(A), sigma_2(A), sigma_1(A - 11^T/n) and the mean row entropy of A.
/// At the working precision: sigma_2 of a nearly rank-one A is tiny and comes out of A^T A.
fn attention_stats(a: &Mat) -> (f64, [f64; 3]) {
    let n = a.rows;
    let p = a.prec;
    let mut h = Float::new(p);
    for v in &a.a {
        if *v > 0 {
            h -= Float::with_val(p, v * Float::with_val(p, v.ln_ref()));
        }
    }
    let entropy = (h / n as u32).to_f64();
    let (l1, l2) = top_two_eig(&a.t().mul(a));
    let inv_n = Float::with_val(p, 1) / n as u32;
    let centred = Mat { a: a.a.iter().map(|v| Float::with_val(p, v - &inv_n)).collect(), ..a.clone() };
    let (c1, _) = top_eig(&centred.t().mul(&centred));
    (entropy, [l1.sqrt().to_f64(), l2.max(&Float::new(p)).sqrt().to_f64(), c1.sqrt().to_f64()])
}

/// The attention sublayer: concat_h(A_h X W_V^h) W_O.
fn ref_attention(cfg: &Config, w: &LayerWeights<f64>, x: &Mat) -> (Mat, AttnRef) {
    let p = x.prec;
    let n = x.rows;
    let heads = w.heads.len();
    let mut outs = Vec::new();
    let mut stats = AttnRef { entropy: 0.0, spectrum: [0.0; 3] };
    for head in &w.heads {
        let a = attention_matrix(cfg, head, x);
        let (entropy, spec) = attention_stats(&a);
        stats.entropy += entropy / heads as f64;
        for (total, v) in stats.spectrum.iter_mut().zip(spec) {
            *total += v / heads as f64;
        }
        let a_used = if cfg.remove_outlier {
            let inv_n = Float::with_val(p, 1) / n as u32;
            Mat { a: a.a.iter().map(|v| Float::with_val(p, v - &inv_n)).collect(), ..a }
        } else {
            a
        };
        outs.push(a_used.mul(x).mul(&Mat::from_f64(p, &head.value)));
    }
    let cat = Mat::hcat(&outs);
    let out = match &w.out_proj {
        Some(wo) => cat.mul(&Mat::from_f64(p, wo)),
        None => cat,
    };
    (out, stats)
}

/// Token (row) normalisation.
fn ref_norm(cfg: &Config, x: &Mat) -> Mat {
    let kind = match cfg.norm {
        Norm::None => return x.clone(),
        Norm::Pre(k) | Norm::Post(k) => k,
    };
    let p = x.prec;
    let d = x.cols as u32;
    let eps = fl(p, cfg.norm_eps);
    let gain = fl(p, cfg.norm_gain);
    let bias = fl(p, cfg.norm_bias);
    let mut out = Mat::zeros(p, x.rows, x.cols);
    for i in 0..x.rows {
        let row = x.row(i);
        let (centred, denom): (Vec<Float>, Float) = match kind {
            NormKind::Layer => {
                let mean = Float::with_val(p, Float::sum(row.iter())) / d;
                let c: Vec<Float> = row.iter().map(|v| Float::with_val(p, v - &mean)).collect();
                let var = c.iter().fold(Float::new(p), |acc, v| acc + Float::with_val(p, v.square_ref())) / d;
                (c, (var + &eps).sqrt())
            }
            NormKind::Rms => {
                let ms =
                    row.iter().fold(Float::new(p), |acc, v| acc + Float::with_val(p, v.square_ref())) / d;
                (row.to_vec(), (ms + &eps).sqrt())
            }
            NormKind::Sphere => {
                let s = row.iter().fold(Float::new(p), |acc, v| acc + Float::with_val(p, v.square_ref()));
                (row.to_vec(), s.sqrt())
            }
        };
        for (j, v) in centred.iter().enumerate() {
            let y = Float::with_val(p, &gain * v) / &denom + &bias;
            out.set(i, j, y);
        }
    }
    out
}

/// The MLP sublayer act(X W1) W2.
fn ref_mlp(cfg: &Config, w: &(Array2<f64>, Array2<f64>), x: &Mat) -> Mat {
    let p = x.prec;
    let act = match cfg.mlp {
        Mlp::None => return x.clone(),
        Mlp::Hidden(a, _) => a,
    };
    let mut h = x.mul(&Mat::from_f64(p, &w.0));
    let sqrt2 = Float::with_val(p, 2).sqrt();
    for v in h.a.iter_mut() {
        *v = match act {
            Activation::Relu => {
                if *v > 0 {
                    v.clone()
                } else {
                    Float::new(p)
                }
            }
            Activation::Gelu => {
                let phi = (Float::with_val(p, &*v / &sqrt2).erf() + 1u32) / 2u32;
                Float::with_val(p, &*v * &phi)
            }
        };
    }
    h.mul(&Mat::from_f64(p, &w.1))
}

/// out = a X + b F.
fn ref_skip(cfg: &Config, x: &Mat, f: &Mat) -> Mat {
    let (a, b) = cfg.skip.coefficients();
    x.lincomb(&fl(x.prec, a), &fl(x.prec, b), f)
}

/// One layer, in the order of `model::apply_layer`.
fn ref_layer(cfg: &Config, w: &LayerWeights<f64>, x: &Mat) -> (Mat, AttnRef) {
    let norm = |x: &Mat| ref_norm(cfg, x);
    let mlp = |x: &Mat| ref_mlp(cfg, w.mlp.as_ref().unwrap(), x);
    let has_mlp = w.mlp.is_some();
    match cfg.norm {
        Norm::Pre(_) => {
            let (f, stats) = ref_attention(cfg, w, &norm(x));
            let mut y = ref_skip(cfg, x, &f);
            if has_mlp {
                let f = mlp(&norm(&y));
                y = ref_skip(cfg, &y, &f);
            }
            (y, stats)
        }
        Norm::Post(_) => {
            let (f, stats) = ref_attention(cfg, w, x);
            let mut y = norm(&ref_skip(cfg, x, &f));
            if has_mlp {
                let f = mlp(&y);
                y = norm(&ref_skip(cfg, &y, &f));
            }
            (y, stats)
        }
        Norm::None => {
            let (f, stats) = ref_attention(cfg, w, x);
            let mut y = ref_skip(cfg, x, &f);
            if has_mlp {
                let f = mlp(&y);
                y = ref_skip(cfg, &y, &f);
            }
            (y, stats)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics of the dense reference state.

/// The compared metrics, in this order.
const COMPARED: [&str; 12] = [
    "log10_res_fro",
    "log10_res_dong",
    "log10_mu",
    "stable_rank",
    "gram_stable_rank",
    "stable_rank_centered",
    "log10_sigma_ratio",
    "mean_abs_cos",
    "attn_entropy",
    "attn_sigma1",
    "attn_sigma2",
    "attn_centered_sigma1",
];

#[derive(Clone, Debug)]
struct RefMetrics {
    /// Values of `COMPARED`; `None` where the metric is undefined (attention at layer 0, centred
    /// stable rank of an exactly rank-one X).
    values: [Option<f64>; 12],
    /// X - 1 xbar^T is exactly zero.
    exact_zero: bool,
}

/// |M|_{1,inf} = sqrt(max column abs sum * max row abs sum).
fn norm_1inf(m: &Mat) -> Float {
    let p = m.prec;
    let mut col_max = Float::new(p);
    for j in 0..m.cols {
        let s = (0..m.rows).fold(Float::new(p), |acc, i| acc + Float::with_val(p, m.at(i, j).abs_ref()));
        if s > col_max {
            col_max = s;
        }
    }
    let mut row_max = Float::new(p);
    for i in 0..m.rows {
        let s = (0..m.cols).fold(Float::new(p), |acc, j| acc + Float::with_val(p, m.at(i, j).abs_ref()));
        if s > row_max {
            row_max = s;
        }
    }
    (col_max * row_max).sqrt()
}

fn log10_of(x: Float) -> f64 {
    x.log10().to_f64()
}

fn ref_metrics(x: &Mat, attn: Option<&AttnRef>) -> RefMetrics {
    let p = x.prec;
    let (n, d) = (x.rows, x.cols);
    // Centred tokens as averages of exact pairwise differences: identical rows give exactly zero.
    let mut c = Mat::zeros(p, n, d);
    for i in 0..n {
        for j in 0..d {
            let mut acc = Float::new(p);
            for k in 0..n {
                acc += Float::with_val(p, x.at(i, j) - x.at(k, j));
            }
            c.set(i, j, acc / n as u32);
        }
    }
    let exact_zero = c.is_zero();
    let fro_c2 = c.fro2();
    let fro_x2 = x.fro2();
    let fro_c = Float::with_val(p, fro_c2.sqrt_ref());
    let fro_x = Float::with_val(p, fro_x2.sqrt_ref());
    let mut v: [Option<f64>; 12] = [None; 12];
    v[0] = Some(log10_of(Float::with_val(p, &fro_c / &fro_x)));
    v[1] = Some(log10_of(norm_1inf(&c) / norm_1inf(x)));
    v[2] = Some(log10_of(fro_c.clone()));

    // Spectra of X: the Gram matrix at full precision (sigma_2 of a collapsed X is tiny next to
    // sigma_1), the O(1) ratios at a modest one.
    let gram = x.t().mul(x);
    let (l1, l2) = top_two_eig(&gram);
    let sp = SPECTRAL_BITS;
    let l1s = Float::with_val(sp, &l1);
    v[3] = Some((Float::with_val(sp, &fro_x2) / &l1s).to_f64());
    let gram_fro2 = gram.with_prec(sp).fro2();
    v[4] = Some((gram_fro2 / Float::with_val(sp, l1s.square_ref())).to_f64());
    if !exact_zero {
        let cs = c.with_prec(sp);
        let (lc, _) = top_eig(&cs.t().mul(&cs));
        v[5] = Some((cs.fro2() / lc).to_f64());
    }
    v[6] = Some(if exact_zero {
        f64::NEG_INFINITY
    } else {
        let ratio = Float::with_val(p, &l2 / &l1);
        log10_of(ratio) / 2.0
    });
    // Mean |cos| over pairs of distinct tokens.
    let mut total = Float::new(p);
    let norms: Vec<Float> = (0..n)
        .map(|i| {
            x.row(i).iter().fold(Float::new(p), |acc, t| acc + Float::with_val(p, t.square_ref())).sqrt()
        })
        .collect();
    for i in 0..n {
        for k in i + 1..n {
            let mut dot = Float::new(p);
            for j in 0..d {
                dot += Float::with_val(p, x.at(i, j) * x.at(k, j));
            }
            let cos = (dot / &norms[i] / &norms[k]).abs();
            total += if cos > 1 { Float::with_val(p, 1) } else { cos };
        }
    }
    v[7] = Some((total / (n * (n - 1) / 2) as u32).to_f64());
    if let Some(a) = attn {
        v[8] = Some(a.entropy);
        v[9] = Some(a.spectrum[0]);
        v[10] = Some(a.spectrum[1]);
        v[11] = Some(a.spectrum[2]);
    }
    RefMetrics { values: v, exact_zero }
}

/// The reference metrics of sequence `seq`, layers 0..=depth, at `bits` bits.
fn reference_at(cfg: &Config, seq: usize, bits: u32) -> Vec<RefMetrics> {
    let mut x = Mat::from_f64(bits, &input_tokens(cfg, seq));
    let mut out = vec![ref_metrics(&x, None)];
    for layer in 0..cfg.depth {
        let w = layer_weights_f64(cfg, layer, seq);
        let (y, stats) = ref_layer(cfg, &w, &x);
        out.push(ref_metrics(&y, Some(&stats)));
        x = y;
    }
    out
}

/// Digits the reference must resolve: the deepest finite log10 residual, sigma ratio of X and
/// sigma_2 of the attention matrix.
fn deepest_digits(r: &[RefMetrics]) -> f64 {
    r.iter()
        .flat_map(|m| [m.values[0], m.values[1], m.values[6], m.values[10].map(f64::log10)])
        .flatten()
        .filter(|v| v.is_finite())
        .fold(0.0, |acc: f64, v| acc.max(-v))
}

/// The bits needed to resolve `r`: twice its deepest digits (sigma_2 of a collapsed X lives at the
/// square of the residual) plus a margin.
fn bits_needed(r: &[RefMetrics]) -> u32 {
    ((2.0 * deepest_digits(r) + 60.0) * std::f64::consts::LOG2_10).ceil() as u32
}

/// The reference of one sequence at a precision it chose itself, cross-checked at a higher one.
/// Returns the metrics, the precision used and the largest disagreement of the cross-check. An
/// exactly zero residual is only believed when the higher precision finds it too (tokens that agree
/// below the working precision round to identical rows).
fn reference(cfg: &Config, seq: usize) -> (Vec<RefMetrics>, u32, f64) {
    let mut bits = MIN_BITS;
    loop {
        assert!(bits <= MAX_BITS, "reference needs more than {MAX_BITS} bits: seq {seq}; {}", describe(cfg));
        let r = reference_at(cfg, seq, bits);
        let need = bits_needed(&r);
        if need > bits {
            bits = (need + need / 4).max(2 * bits);
            continue;
        }
        let high = bits + bits / 2;
        let check = reference_at(cfg, seq, high);
        let same_zeros = r.iter().zip(&check).all(|(a, b)| a.exact_zero == b.exact_zero);
        if !same_zeros || bits_needed(&check) > bits {
            bits = (bits_needed(&check) + bits_needed(&check) / 4).max(2 * bits);
            continue;
        }
        let mut worst = 0.0f64;
        for (a, b) in r.iter().zip(&check) {
            for k in 0..COMPARED.len() {
                if let (Some(x), Some(y)) = (a.values[k], b.values[k]) {
                    if x != y {
                        worst = worst.max(rel_err(x, y));
                    }
                }
            }
        }
        assert!(
            worst <= 1e-3 * TOL,
            "reference not converged in precision ({bits} vs {high} bits): worst {worst:e}; seq {seq}; {}",
            describe(cfg)
        );
        return (r, bits, worst);
    }
}

// ---------------------------------------------------------------------------------------------
// Comparison.

fn describe(cfg: &Config) -> String {
    serde_json::to_string(cfg).unwrap()
}

/// |a - b| / max(1, |b|); 0 when equal (both -inf included), infinite when one is not finite.
fn rel_err(a: f64, b: f64) -> f64 {
    if a == b {
        0.0
    } else if !(a.is_finite() && b.is_finite()) {
        f64::INFINITY
    } else {
        (a - b).abs() / b.abs().max(1.0)
    }
}

/// The extra absolute error allowed for a singular value `sigma` of A next to `sigma1`, from the
/// engine's Lanczos tolerance (see `LANCZOS_TOL`).
fn lanczos_allowance(sigma: f64, sigma1: f64) -> f64 {
    let delta = LANCZOS_TOL * sigma1 * sigma1;
    delta.sqrt().min(delta / (2.0 * sigma.abs()))
}

/// Outcome of one case: the worst error of each metric and every failure.
#[derive(Default)]
struct Outcome {
    worst: Vec<(&'static str, f64, String)>,
    failures: Vec<String>,
    deepest: f64,
    bits: u32,
    exact_zero_layers: usize,
    /// Comparisons that passed only with `lanczos_allowance`.
    lanczos: Vec<String>,
    /// Worst |engine - reference| / sigma_1(A) among those.
    lanczos_worst: f64,
    /// Values the engine withheld (NaN) where the truth is indeed beyond its resolution.
    withheld: Vec<String>,
}

/// Runs the engine and the reference on `cfg` and compares every layer of every sequence, every
/// metric of `COMPARED` except those in `skip`.
fn compare(name: &str, cfg: &Config, skip: &[&str], verbose: bool) -> Outcome {
    cfg.validate().unwrap_or_else(|e| panic!("{name}: invalid config {}: {e}", describe(cfg)));
    let engine = simulate::<f64>(cfg);
    assert_eq!(engine.len(), cfg.sequences);
    let mut out =
        Outcome { worst: COMPARED.iter().map(|m| (*m, 0.0, String::new())).collect(), ..Default::default() };
    for (seq, eng) in engine.iter().enumerate() {
        assert_eq!(eng.len(), cfg.depth + 1);
        let (reference, bits, _) = reference(cfg, seq);
        out.bits = out.bits.max(bits);
        for (layer, (e, r)) in eng.iter().zip(&reference).enumerate() {
            if r.exact_zero {
                out.exact_zero_layers += 1;
            }
            if let Some(v) = r.values[0] {
                if v.is_finite() {
                    out.deepest = out.deepest.min(v);
                }
            }
            if verbose {
                let ev = e.get(Metric::Log10ResFro).unwrap();
                let rv = r.values[0].unwrap();
                let prev = (layer > 0).then(|| reference[layer - 1].values[0].unwrap());
                let ratio = prev.map_or(String::new(), |p| format!(", ratio to previous {:.3}", rv / p));
                println!(
                    "  {name} seq {seq} layer {layer:2}: log10_res_fro engine {ev:>24.16e} reference {rv:>24.16e} rel.err {:.2e}{ratio}",
                    rel_err(ev, rv)
                );
            }
            for (k, metric) in COMPARED.iter().enumerate() {
                if skip.contains(metric) || skip.contains(&format!("{metric}@{layer}").as_str()) {
                    continue;
                }
                let ev = e.get(Metric::from_name(metric).expect("COMPARED holds metric names"));
                let rv = r.values[k];
                let (ev, rv) = match (ev, rv) {
                    (Some(a), Some(b)) => (a, b),
                    (None, None) => continue,
                    // The engine computes the attention spectrum only where asked.
                    (None, Some(_)) if k >= 9 && !cfg.spectrum_at(layer) => continue,
                    (a, b) => {
                        out.failures.push(format!(
                            "{name}: seq {seq} layer {layer} {metric}: engine {a:?} vs reference {b:?} (one is missing); seed {}; config {}",
                            cfg.seed,
                            describe(cfg)
                        ));
                        continue;
                    }
                };
                if ev.is_nan() {
                    // The engine withholds what it cannot resolve. That is right only where the
                    // truth is beyond its resolution: a sigma ratio below the documented floor (of
                    // X, or of the residual when the mean dominates).
                    let floor =
                        sigma_ratio_floor::<f64>().log10() + 1.0 + r.values[0].unwrap_or(0.0).min(0.0);
                    let justified = *metric == "log10_sigma_ratio" && rv < floor;
                    let what = format!("seq {seq} layer {layer} {metric}: engine NaN, reference {rv:e}");
                    if justified {
                        out.withheld.push(what);
                    } else {
                        out.failures.push(format!(
                            "{name}: {what} (not beyond the engine's resolution); seed {}; config {}",
                            cfg.seed,
                            describe(cfg)
                        ));
                    }
                    continue;
                }
                let err = rel_err(ev, rv);
                if err > out.worst[k].1 || (err.is_nan() && !out.worst[k].1.is_nan()) {
                    out.worst[k] =
                        (metric, err, format!("seq {seq} layer {layer}: engine {ev:e} reference {rv:e}"));
                }
                if err > TOL && (*metric == "attn_sigma2" || *metric == "attn_centered_sigma1") {
                    let sigma1 = r.values[9].unwrap();
                    let diff = (ev - rv).abs();
                    if diff <= TOL * rv.abs().max(1.0) + lanczos_allowance(rv, sigma1) {
                        out.lanczos_worst = out.lanczos_worst.max(diff / sigma1);
                        out.lanczos.push(format!(
                            "seq {seq} layer {layer} {metric}: engine {ev:e} reference {rv:e}"
                        ));
                        continue;
                    }
                }
                if err.is_nan() || err > TOL {
                    out.failures.push(format!(
                        "{name}: seq {seq} layer {layer} {metric}: engine {ev:.17e} vs reference {rv:.17e}, rel.err {err:.3e} > {TOL:e}; seed {}; config {}",
                        cfg.seed,
                        describe(cfg)
                    ));
                }
            }
        }
    }
    out
}

fn summary(name: &str, o: &Outcome) -> String {
    let mut s = format!(
        "{name}: deepest log10_res_fro {:.1}, reference {} bits, exact-zero layers {}; worst rel.err:",
        o.deepest, o.bits, o.exact_zero_layers
    );
    for (m, e, _) in &o.worst {
        if *e > 0.0 {
            let _ = write!(s, " {m} {e:.1e}");
        }
    }
    if !o.lanczos.is_empty() {
        let _ = write!(
            s,
            "\n    {} attention singular values matched only within the engine's Lanczos tolerance (worst {:.1e} sigma_1), e.g. {}",
            o.lanczos.len(),
            o.lanczos_worst,
            o.lanczos[0]
        );
    }
    if !o.withheld.is_empty() {
        let _ = write!(
            s,
            "\n    {} values withheld by the engine (NaN) where the truth is beyond its resolution, e.g. {}",
            o.withheld.len(),
            o.withheld[0]
        );
    }
    s
}

/// One comparison: a name, the configuration, and the metrics left out, as "metric" (every layer)
/// or "metric@layer"; each left-out comparison is made strictly by a test that names the
/// disagreement.
struct Case {
    name: String,
    cfg: Config,
    skip: &'static [&'static str],
    /// Whether the engine may withhold values here (everywhere else a withheld value fails).
    may_withhold: bool,
}

fn case(name: impl Into<String>, cfg: Config) -> Case {
    Case { name: name.into(), cfg, skip: &[], may_withhold: false }
}

fn case_beyond_resolution(name: impl Into<String>, cfg: Config) -> Case {
    Case { may_withhold: true, ..case(name, cfg) }
}

/// Compares every case, prints one summary line each, and fails listing every disagreement.
fn run_cases(cases: Vec<Case>) {
    let mut failures = Vec::new();
    for c in cases {
        let o = compare(&c.name, &c.cfg, c.skip, false);
        println!("{}", summary(&c.name, &o));
        failures.extend(o.failures);
        if !c.may_withhold && !o.withheld.is_empty() {
            failures
                .push(format!("{}: the engine withheld values it should resolve: {:?}", c.name, o.withheld));
        }
    }
    assert!(failures.is_empty(), "{} disagreements:\n{}", failures.len(), failures.join("\n"));
}

fn parse<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().unwrap()
}

/// A stack that collapses far below epsilon when nothing stops it.
fn deep() -> Config {
    Config { depth: 6, qk: parse("gaussian:1"), ..base() }
}

fn base() -> Config {
    Config { depth: 4, tokens: 5, width: 4, sequences: 2, seed: 7, threads: 1, ..Default::default() }
}

// ---------------------------------------------------------------------------------------------
// Tests.

/// Pure attention (softmax, full mask, no norm / skip / MLP) followed through doubly exponential
/// collapse far below f64 epsilon: the engine must match the reference at every layer.
#[test]
fn pure_attention_matches_reference_far_below_epsilon() {
    let cfg = Config { depth: 8, seed: 3, qk: parse("gaussian:1"), ..base() };
    let o = compare("pure-attention", &cfg, &[], true);
    println!("{}", summary("pure-attention", &o));
    assert!(o.failures.is_empty(), "{} disagreements:\n{}", o.failures.len(), o.failures.join("\n"));
    assert!(
        o.deepest < -300.0,
        "the residual only reached log10 {}; pick a deeper configuration: {}",
        o.deepest,
        describe(&cfg)
    );
}

/// Every mask with every attention kind (uniform on the full mask has its own test: its residual
/// is exactly zero), on a stack deep enough to collapse far below epsilon where the kind allows,
/// and the outlier-removed variants.
#[test]
fn masks_and_attention_kinds_match_reference() {
    let mut cases = Vec::new();
    for mask in ["full", "causal", "window:2", "causal-window:2"] {
        for att in ["softmax", "markov", "uniform", "identity"] {
            if (mask, att) == ("full", "uniform") {
                continue;
            }
            let cfg = Config { mask: parse(mask), attention: parse(att), seed: 11, ..deep() };
            let mut c = case(format!("{att}/{mask}"), cfg);
            if att == "identity" {
                // sigma_2(I) = 1: see attention_spectrum_of_degenerate_matrices_matches_reference.
                c.skip = &["attn_sigma2"];
            }
            cases.push(c);
        }
    }
    // Softmax on the full mask with the outlier removed: see
    // remove_outlier_softmax_full_mask_matches_reference.
    for (mask, att) in [
        ("causal", "softmax"),
        ("causal", "markov"),
        ("full", "markov"),
        ("window:2", "uniform"),
        ("causal-window:2", "softmax"),
        ("window:3", "identity"),
    ] {
        let cfg =
            Config { mask: parse(mask), attention: parse(att), remove_outlier: true, seed: 12, ..base() };
        let mut c = case(format!("remove-outlier {att}/{mask}"), cfg);
        if att == "identity" {
            c.skip = &["attn_sigma2"];
        }
        cases.push(c);
    }
    cases.push(case(
        "softmax/full temperature 2 qk gaussian:1.5",
        Config { temperature: Some(2.0), qk: parse("gaussian:1.5"), seed: 13, ..deep() },
    ));
    cases.push(case(
        "softmax/causal qk orthogonal",
        Config { mask: parse("causal"), qk: parse("orthogonal"), seed: 14, ..deep() },
    ));
    cases.push(case("softmax/full head_rank 1", Config { head_rank: Some(1), seed: 15, ..deep() }));
    run_cases(cases);
}

/// Several heads, with and without an output projection, and head rank / value dim overrides.
#[test]
fn multi_head_matches_reference() {
    run_cases(vec![
        case(
            "heads 2 out_proj gaussian",
            Config { heads: 2, out_proj: parse("gaussian"), seed: 21, ..deep() },
        ),
        case("heads 2 out_proj none", Config { heads: 2, out_proj: parse("none"), seed: 22, ..deep() }),
        case(
            "heads 2 markov causal out_proj gaussian:0.7",
            Config {
                heads: 2,
                attention: parse("markov"),
                mask: parse("causal"),
                out_proj: parse("gaussian:0.7"),
                seed: 23,
                ..base()
            },
        ),
        case(
            "heads 3 head_rank 1 value_dim 2 window:2 out_proj gaussian",
            Config {
                heads: 3,
                head_rank: Some(1),
                value_dim: Some(2),
                mask: parse("window:2"),
                out_proj: parse("gaussian"),
                seed: 24,
                ..deep()
            },
        ),
    ]);
}

/// Every normalisation, alone on a collapsing stack (the norm then acts on tokens that agree far
/// below epsilon), with a standard skip, and with gain / bias / eps that are not the defaults.
#[test]
fn norms_match_reference() {
    let mut cases = Vec::new();
    for norm in ["pre-ln", "post-ln", "pre-rms", "post-rms", "pre-sphere", "post-sphere"] {
        cases.push(case(format!("{norm} collapsing"), Config { norm: parse(norm), seed: 31, ..deep() }));
        cases.push(case(
            format!("{norm} skip standard"),
            Config { norm: parse(norm), skip: parse("standard"), seed: 32, ..base() },
        ));
    }
    cases.push(case(
        "post-ln gain 1.5 bias 0.25 eps 1e-3",
        Config {
            norm: parse("post-ln"),
            norm_gain: 1.5,
            norm_bias: 0.25,
            norm_eps: 1e-3,
            seed: 33,
            ..deep()
        },
    ));
    cases.push(case(
        "pre-rms gain 0.8 bias -0.3 skip standard",
        Config {
            norm: parse("pre-rms"),
            norm_gain: 0.8,
            norm_bias: -0.3,
            skip: parse("standard"),
            seed: 34,
            ..base()
        },
    ));
    cases.push(case(
        "post-sphere gain 2 bias 0.1 causal",
        Config {
            norm: parse("post-sphere"),
            norm_gain: 2.0,
            norm_bias: 0.1,
            mask: parse("causal"),
            seed: 35,
            ..deep()
        },
    ));
    cases.push(case(
        "pre-ln eps 10 (eps dominates the variance)",
        Config { norm: parse("pre-ln"), norm_eps: 10.0, seed: 36, ..deep() },
    ));
    run_cases(cases);
}

/// Skip connections and both MLP activations, on collapsing stacks (no skip: the MLP acts on
/// tokens that agree far below epsilon) and on ordinary transformer blocks.
#[test]
fn skips_and_mlps_match_reference() {
    let mut cases = vec![
        case("skip standard", Config { skip: parse("standard"), seed: 41, ..base() }),
        case("skip scaled:0.5,1.5", Config { skip: parse("scaled:0.5,1.5"), seed: 42, ..base() }),
        case(
            "skip scaled:1,-0.5 causal",
            Config { skip: parse("scaled:1,-0.5"), mask: parse("causal"), seed: 43, ..base() },
        ),
    ];
    for mlp in ["relu:2", "gelu:2"] {
        cases.push(case(format!("mlp {mlp} collapsing"), Config { mlp: parse(mlp), seed: 44, ..deep() }));
        cases.push(case(
            format!("mlp {mlp} pre-ln skip standard"),
            Config { mlp: parse(mlp), norm: parse("pre-ln"), skip: parse("standard"), seed: 45, ..base() },
        ));
        cases.push(case(
            format!("mlp {mlp} post-rms skip scaled:0.5,1.5 mlp_weights gaussian:1"),
            Config {
                mlp: parse(mlp),
                norm: parse("post-rms"),
                skip: parse("scaled:0.5,1.5"),
                mlp_weights: parse("gaussian:1"),
                seed: 46,
                ..base()
            },
        ));
        cases.push(case(
            format!("mlp {mlp} pre-sphere collapsing"),
            Config { mlp: parse(mlp), norm: parse("pre-sphere"), seed: 47, ..deep() },
        ));
        // Large pre-activations (GELU tails); pre-ln keeps the attention scores moderate (with
        // no norm they saturate the softmax: see saturated_softmax_matches_reference).
        cases.push(case(
            format!("mlp {mlp} mlp_weights gaussian:3 pre-ln collapsing"),
            Config {
                mlp: parse(mlp),
                mlp_weights: parse("gaussian:3"),
                norm: parse("pre-ln"),
                seed: 48,
                ..deep()
            },
        ));
    }
    run_cases(cases);
}

/// Value-matrix families, input families, shared layers and per-sequence networks.
#[test]
fn weights_and_inputs_match_reference() {
    let mut cases = Vec::new();
    // value gaussian:1 on a collapsing stack: see clustered_tokens_match_reference.
    for value in ["orthogonal", "identity", "scaled-identity:1.3"] {
        cases.push(case(format!("value {value}"), Config { value: parse(value), seed: 51, ..deep() }));
    }
    cases.push(case(
        "value gaussian:1 (default qk)",
        Config { value: parse("gaussian:1"), seed: 51, ..base() },
    ));
    for input in ["gaussian", "sphere", "shared:0.9"] {
        cases.push(case(format!("input {input}"), Config { input: parse(input), seed: 52, ..deep() }));
    }
    let mut orthonormal = case(
        "input orthonormal (4 tokens, width 5)",
        Config { input: parse("orthonormal"), tokens: 4, width: 5, seed: 53, ..deep() },
    );
    // sigma_2 / sigma_1 = 1 at the input: see
    // attention_spectrum_of_degenerate_matrices_matches_reference.
    orthonormal.skip = &["log10_sigma_ratio@0"];
    cases.push(orthonormal);
    cases.push(case(
        "input shared:0.9 post-ln skip standard",
        Config {
            input: parse("shared:0.9"),
            norm: parse("post-ln"),
            skip: parse("standard"),
            seed: 54,
            ..base()
        },
    ));
    cases.push(case("share_layers", Config { share_layers: true, seed: 55, ..deep() }));
    cases.push(case(
        "per_sequence_weights (3 sequences)",
        Config { per_sequence_weights: true, sequences: 3, seed: 56, ..deep() },
    ));
    cases.push(case(
        "share_layers + per_sequence_weights markov",
        Config {
            share_layers: true,
            per_sequence_weights: true,
            attention: parse("markov"),
            seed: 57,
            ..base()
        },
    ));
    cases.push(case(
        "6 tokens width 6 causal-window:3 value orthogonal",
        Config {
            tokens: 6,
            width: 6,
            mask: parse("causal-window:3"),
            value: parse("orthogonal"),
            seed: 58,
            ..deep()
        },
    ));
    run_cases(cases);
}

/// Uniform attention on the full mask maps X to 1 xbar^T exactly: the residual is exactly zero,
/// and the engine must say so with -inf (not a tiny number), with or without norms and MLPs.
#[test]
fn uniform_full_attention_gives_an_exactly_zero_residual() {
    let cases = vec![
        case("uniform/full", Config { attention: parse("uniform"), seed: 61, ..base() }),
        case(
            "uniform/full post-ln mlp relu:2",
            Config {
                attention: parse("uniform"),
                norm: parse("post-ln"),
                mlp: parse("relu:2"),
                seed: 62,
                ..base()
            },
        ),
        case(
            "uniform/full pre-rms mlp gelu:2 heads 2 out_proj gaussian",
            Config {
                attention: parse("uniform"),
                norm: parse("pre-rms"),
                mlp: parse("gelu:2"),
                heads: 2,
                out_proj: parse("gaussian"),
                seed: 63,
                ..base()
            },
        ),
    ];
    let mut failures = Vec::new();
    for c in cases {
        let (name, cfg) = (&c.name, &c.cfg);
        let o = compare(name, cfg, c.skip, false);
        println!("{}", summary(name, &o));
        failures.extend(o.failures);
        assert_eq!(
            o.exact_zero_layers,
            cfg.sequences * cfg.depth,
            "{name}: the reference residual is not exactly zero after every layer; config {}",
            describe(cfg)
        );
        for (seq, history) in simulate::<f64>(cfg).iter().enumerate() {
            for (layer, m) in history.iter().enumerate().skip(1) {
                for metric in
                    [Metric::Log10ResFro, Metric::Log10ResDong, Metric::Log10Mu, Metric::Log10SigmaRatio]
                {
                    let v = m.get(metric);
                    assert_eq!(
                        v,
                        Some(f64::NEG_INFINITY),
                        "{name}: seq {seq} layer {layer} {metric} = {v:?}, expected -inf; config {}",
                        describe(cfg)
                    );
                }
                assert_eq!(
                    m.get(Metric::ResFro),
                    Some(0.0),
                    "{name}: seq {seq} layer {layer}; config {}",
                    describe(cfg)
                );
            }
        }
    }
    assert!(failures.is_empty(), "{} disagreements:\n{}", failures.len(), failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Disagreements found by the reference: each test below compares strictly and names the cause.

/// Spectra with a repeated top eigenvalue. A = I (identity attention) has sigma_2(A) = 1, and
/// orthonormal input rows have sigma_2(X) = sigma_1(X); the engine finds both with single-vector
/// Lanczos, whose Krylov space sees only one direction of a repeated eigenvalue, so it reports
/// sigma_2 = 0 (log10_sigma_ratio -inf or ~-8) instead of 1 (log10_sigma_ratio 0).
#[test]
fn attention_spectrum_of_degenerate_matrices_matches_reference() {
    run_cases(vec![
        case("identity/full (A = I)", Config { attention: parse("identity"), depth: 2, seed: 71, ..base() }),
        case(
            "input orthonormal (4 tokens, width 5)",
            Config { input: parse("orthonormal"), tokens: 4, width: 5, depth: 2, seed: 53, ..base() },
        ),
    ]);
}

/// Softmax on the full mask with the outlier removed, (A - 11^T/n) X, on collapsing tokens: the
/// output mean is sum_j (p_j - 1/n) r_j with p_j - 1/n tiny, and the engine forms it as
/// sum_j p_j r_j, relying on the column sums of R being exactly zero; their rounding
/// (eps |R| / n) swamps the true mean once |p - 1/n| approaches eps. The relative error of the
/// engine's mean grows 1e-16, 4e-13, 1e-5 over layers 1..3 and then the rounding noise, which
/// does not shrink with the tokens, dominates X: at layer 6 the engine reports log10_res_fro
/// -16.5 and -88.5 (a collapse) where the true values are -0.2 and -0.3 (no collapse, which is
/// the point of removing the outlier). res_dong, mean |cos| and the sigma ratio follow.
#[test]
fn remove_outlier_softmax_full_mask_matches_reference() {
    run_cases(vec![case_beyond_resolution(
        "remove-outlier softmax/full",
        Config { remove_outlier: true, depth: 6, seed: 12, ..base() },
    )]);
}

/// Value std 1 makes the tokens grow and the attention hard: tokens merge in clusters (two tokens
/// agree to 1e-89 while the clusters stay O(1) apart, so the residual to the mean is O(1)), and
/// when a later layer merges the clusters the residual is set by the in-cluster differences. The
/// tracked state keeps only the residual to the *mean* exact; in-cluster differences are rounded
/// at eps |R|, so the engine's residual floors near 1e-13..1e-16 where the true one is 1e-50 or
/// 1e-126.
///
/// Known limitation, not fixed: a representation that resolves clusters (a tracked state per
/// cluster) would be needed. Run with `--ignored` to see it.
#[test]
#[ignore = "known limitation of the tracked representation: clusters tighter than eps |R| that later merge"]
fn clustered_tokens_match_reference() {
    run_cases(vec![case(
        "value gaussian:1 qk gaussian:1",
        Config { value: parse("gaussian:1"), seed: 51, ..deep() },
    )]);
}

/// Scores so large that the softmax is saturated while the tokens are still O(1) apart: the
/// residual falls by 15 to 580 orders of magnitude in one layer, set by the exponentially small
/// weights of the losing keys. Each row of A sums to one, so the row-dependent part of the winning
/// key's weight is minus the sum of the losing ones; the engine forms it as
/// p_k expm1(x_ik - l_i) with l_i a log-sum-exp of O(1..100) numbers, whose rounding (eps |x|)
/// exceeds that row-dependent part, so it is lost: the residual comes out wrong by an O(1) factor
/// (-14.93 against -14.81 in the first case), and once the losing weights fall below the f64
/// range the engine reports an exactly zero residual (-inf) where the true one is 10^-582.
#[test]
fn saturated_softmax_matches_reference() {
    run_cases(vec![
        case(
            "pure attention value scaled-identity:4 qk gaussian:1",
            Config {
                value: parse("scaled-identity:4"),
                qk: parse("gaussian:1"),
                depth: 3,
                sequences: 1,
                seed: 1,
                ..base()
            },
        ),
        case(
            "mlp relu:2 mlp_weights gaussian:3 qk gaussian:1",
            Config {
                mlp: parse("relu:2"),
                mlp_weights: parse("gaussian:3"),
                qk: parse("gaussian:1"),
                depth: 3,
                seed: 48,
                ..base()
            },
        ),
    ]);
}
