//! Amsel, Yehudai, Bruna 2024: the nearest-neighbour target on the sphere. A context of N points
//! x_j and a query y, all uniform on S^{d-1}; the target is f(X, y) = x_{j*} with
//! j* = argmax_j <y, x_j>. A head of rank r scores beta <U^T y, U^T x_j> with U (d x r, orthonormal
//! columns, random) and returns sum_j softmax_j x_j (W_V = I); H such heads are combined by a
//! least-squares read-out y_hat = sum_h W_h head_h (W_h in R^{d x d}, small ridge). One full-rank
//! head (U = I) with beta -> infinity is f exactly. This is a small dedicated f64 experiment: it
//! needs a read-out fitted over many samples, which the rank-collapse engine does not do.

use super::figure::{Figure, Series};
use super::{fmt, fmt_list, Claim, Options, Report};
use crate::linalg::orthonormalize_rows;
use crate::rng::{GaussianBlock, Purpose, Stream};
use nalgebra::DMatrix;
use ndarray::{Array1, Array2, Axis};
use rayon::prelude::*;
use std::path::Path;

/// Context points per sample.
pub const CONTEXT: usize = 8;
/// Inverse temperatures tried for the low-rank heads (the best on a validation set is kept).
const BETAS: [f64; 4] = [1.0, 4.0, 16.0, 64.0];
/// Ridge of the least-squares read-out, relative to the mean diagonal of F^T F.
const RIDGE: f64 = 1e-8;

/// One sample: context (N x d, unit rows), query (d), target (the context row nearest the query).
pub struct Sample {
    pub context: Array2<f64>,
    pub query: Array1<f64>,
    pub target: Array1<f64>,
}

fn unit_rows(mut m: Array2<f64>) -> Array2<f64> {
    for mut row in m.rows_mut() {
        let norm = row.dot(&row).sqrt();
        row /= norm;
    }
    m
}

/// `count` samples in dimension d; `set` separates training, validation and test draws.
pub fn samples(d: usize, count: usize, seed: u64, set: usize) -> Vec<Sample> {
    (0..count)
        .into_par_iter()
        .map(|s| {
            let block = GaussianBlock::new(seed, Stream::new(Purpose::Input, set, d), s as u32);
            let g = block.normals((CONTEXT + 1) * d);
            let all = unit_rows(Array2::from_shape_vec((CONTEXT + 1, d), g).unwrap());
            let query = all.row(CONTEXT).to_owned();
            let context = all.slice(ndarray::s![..CONTEXT, ..]).to_owned();
            let scores = context.dot(&query);
            let best = (0..CONTEXT).max_by(|&a, &b| scores[a].total_cmp(&scores[b])).unwrap();
            Sample { target: context.row(best).to_owned(), context, query }
        })
        .collect()
}

/// The projections U_h (d x r, orthonormal columns) of heads 0..heads: head h is the same draw
/// whatever the number of heads, so the feature sets of increasing H are nested.
pub fn projections(d: usize, rank: usize, heads: usize, seed: u64) -> Vec<Array2<f64>> {
    (0..heads)
        .map(|h| {
            if rank == d {
                return Array2::eye(d);
            }
            let mut g =
                GaussianBlock::new(seed, Stream::new(Purpose::Query, rank, h), d as u32).normals(rank * d);
            orthonormalize_rows(&mut g, rank, d);
            Array2::from_shape_vec((rank, d), g).unwrap().reversed_axes()
        })
        .collect()
}

/// The output of one head on one sample: sum_j softmax_j(beta <U^T y, U^T x_j>) x_j.
pub fn head_output(u: &Array2<f64>, beta: f64, s: &Sample) -> Array1<f64> {
    let q = s.query.dot(u);
    let k = s.context.dot(u);
    let z = k.dot(&q) * beta;
    let top = z.fold(f64::NEG_INFINITY, |a, &b| a.max(b));
    let w = z.mapv(|v| (v - top).exp());
    let total = w.sum();
    (w / total).dot(&s.context)
}

fn features(us: &[Array2<f64>], beta: f64, set: &[Sample]) -> Array2<f64> {
    let d = set[0].query.len();
    let mut f = Array2::zeros((set.len(), us.len() * d));
    f.axis_iter_mut(Axis(0)).into_par_iter().zip(set.par_iter()).for_each(|(mut row, s)| {
        for (h, u) in us.iter().enumerate() {
            row.slice_mut(ndarray::s![h * d..(h + 1) * d]).assign(&head_output(u, beta, s));
        }
    });
    f
}

fn targets(set: &[Sample]) -> Array2<f64> {
    let d = set[0].query.len();
    let mut y = Array2::zeros((set.len(), d));
    for (mut row, s) in y.rows_mut().into_iter().zip(set) {
        row.assign(&s.target);
    }
    y
}

/// Mean squared error |y_hat - f|^2 (the target has norm 1, so this is relative).
fn mse(pred: &Array2<f64>, y: &Array2<f64>) -> f64 {
    (pred - y).mapv(|v| v * v).sum() / y.nrows() as f64
}

/// Least-squares read-out W (features x d) by the normal equations with a small ridge.
fn fit(f: &Array2<f64>, y: &Array2<f64>) -> anyhow::Result<Array2<f64>> {
    let ftf = f.t().dot(f);
    let fty = f.t().dot(y);
    let p = ftf.nrows();
    let ridge = RIDGE * (0..p).map(|i| ftf[[i, i]]).sum::<f64>() / p as f64;
    let a = DMatrix::from_fn(p, p, |i, j| ftf[[i, j]] + if i == j { ridge } else { 0.0 });
    let b = DMatrix::from_fn(p, y.ncols(), |i, j| fty[[i, j]]);
    let chol = a
        .cholesky()
        .ok_or_else(|| anyhow::anyhow!("the read-out's normal equations are not positive definite"))?;
    let w = chol.solve(&b);
    Ok(Array2::from_shape_fn((p, y.ncols()), |(i, j)| w[(i, j)]))
}

/// The data sets of one dimension: training, validation (picks beta), test.
pub struct Data {
    pub train: Vec<Sample>,
    pub valid: Vec<Sample>,
    pub test: Vec<Sample>,
}

impl Data {
    pub fn new(d: usize, train: usize, test: usize, seed: u64) -> Self {
        Data {
            train: samples(d, train, seed, 0),
            valid: samples(d, test, seed, 1),
            test: samples(d, test, seed, 2),
        }
    }
}

/// Test error of the least-squares read-out over `heads` random heads of rank `rank`, with the
/// beta of BETAS that does best on the validation set; returns (error, beta).
pub fn readout_error(data: &Data, rank: usize, heads: usize, seed: u64) -> anyhow::Result<(f64, f64)> {
    let d = data.train[0].query.len();
    let us = projections(d, rank, heads, seed);
    let (ytr, yva, yte) = (targets(&data.train), targets(&data.valid), targets(&data.test));
    let mut best = (f64::INFINITY, f64::NAN, f64::NAN);
    for beta in BETAS {
        let w = fit(&features(&us, beta, &data.train), &ytr)?;
        let valid = mse(&features(&us, beta, &data.valid).dot(&w), &yva);
        if valid < best.0 {
            best = (valid, beta, mse(&features(&us, beta, &data.test).dot(&w), &yte));
        }
    }
    Ok((best.2, best.1))
}

/// Test error of one full-rank head (U = I, W_V = I, no read-out fitted) at inverse temperature beta.
pub fn full_rank_error(set: &[Sample], beta: f64) -> f64 {
    let d = set[0].query.len();
    let eye = Array2::eye(d);
    set.iter().map(|s| (&head_output(&eye, beta, s) - &s.target).mapv(|v| v * v).sum()).sum::<f64>()
        / set.len() as f64
}

/// Whether the full-rank head's errors at increasing beta fall to below 1e-5.
pub fn full_rank_converges(errors: &[f64]) -> bool {
    falls(errors, 0.0) && errors.last().is_some_and(|e| *e < 1e-5)
}

/// Whether `errors` (in the order of increasing H) fall overall and never rise by more than `slack`.
pub fn falls(errors: &[f64], slack: f64) -> bool {
    errors.len() >= 2
        && errors.windows(2).all(|w| w[1] <= w[0] * (1.0 + slack))
        && errors[errors.len() - 1] < errors[0]
}

pub fn reproduce(dir: &Path, opts: &Options, report: &mut Report) -> anyhow::Result<()> {
    let dims = [8usize, 16, 32, 64];
    let max_features = if opts.quick { 256 } else { 512 };
    let heads_list = [1usize, 2, 4, 8, 16, 32, 64, 128];
    let test = if opts.quick { 1000 } else { 4000 };
    report.setup.push(format!(
        "Setup (our reading of the paper's nearest-neighbour task): N = {CONTEXT} context points and a query, \
         uniform on S^(d-1); target f = the context point with the largest inner product with the query. \
         A rank-r head scores beta <U^T y, U^T x_j> with a random U (d x r, orthonormal columns) and returns \
         sum_j softmax_j x_j; H heads are combined by a least-squares read-out sum_h W_h head_h (W_h d x d, \
         ridge {RIDGE:.0e}), fitted on max(60 H d, 2000) samples (H d: the largest read-out of that d); beta in {BETAS:?} is chosen on a validation \
         set; the error is the mean squared error on {test} fresh test samples (|f| = 1, so the trivial \
         predictor 0 has error 1). Read-outs are limited to H d <= {max_features} features."
    ));

    // Error against H, per d, rank-1 heads.
    let mut series = Vec::new();
    let mut rows = Vec::new();
    let mut common = Vec::new();
    for &d in &dims {
        let hs: Vec<usize> = heads_list.iter().copied().filter(|h| h * d <= max_features).collect();
        let train = (60 * hs.last().unwrap() * d).max(2000);
        let data = Data::new(d, train, test, opts.seed);
        let mut errs = Vec::new();
        for &h in &hs {
            let (e, beta) = readout_error(&data, 1, h, opts.seed)?;
            errs.push(e);
            rows.push(format!("d={d} H={h}: {} (beta {beta})", fmt(e)));
        }
        series.push(Series::new(
            format!("d = {d}"),
            hs.iter().map(|&h| (h as f64).log2()).zip(errs.iter().copied()).collect(),
        ));
        report.claims.push(Claim::new(
            format!("d = {d}: error of H rank-1 heads with a fitted read-out, H = {hs:?}"),
            "falls with H, but slowly: low-rank heads need exponentially many heads in d",
            fmt_list(&errs),
            Some(falls(&errs, 0.02)),
        ));
        common.push(errs[hs.iter().position(|&h| h == 4).unwrap_or(0)]);
        let betas = [1e2, 1e4, 1e6];
        let exact: Vec<f64> = betas.iter().map(|&b| full_rank_error(&data.test, b)).collect();
        report.claims.push(Claim::new(
            format!("d = {d}: one full-rank head (U = I, W_V = I, no read-out), beta = 1e2, 1e4, 1e6"),
            "represents f exactly as beta -> infinity (the error is the weight left on the other points)",
            fmt_list(&exact),
            Some(full_rank_converges(&exact)),
        ));
    }
    report.claims.push(Claim::new(
        format!("H = 4 rank-1 heads with a fitted read-out, d = {dims:?}"),
        "harder in higher dimension (the number of heads needed grows exponentially with d)",
        fmt_list(&common),
        Some(common.windows(2).all(|w| w[1] > w[0])),
    ));
    report.setup.push(format!("Per point: {}.", rows.join("; ")));
    report.figure(
        dir,
        "error_vs_heads",
        "Amsel: error of the least-squares read-out over H random rank-1 heads, per d",
        Figure::new(
            "Nearest-neighbour target: rank-1 heads",
            "log2 H (number of rank-1 heads)",
            "test mean squared error",
            series,
        ),
    )?;

    // Error against the head rank at a fixed parameter count H r = d.
    let d = if opts.quick { 16 } else { 32 };
    let data = Data::new(d, (60 * d * d).max(2000), test, opts.seed);
    let mut pts = Vec::new();
    let mut errs = Vec::new();
    let mut r = 1;
    while r <= d {
        let (e, _) = readout_error(&data, r, d / r, opts.seed)?;
        pts.push(((r as f64).log2(), e));
        errs.push(e);
        r *= 2;
    }
    let exact = full_rank_error(&data.test, 1e6);
    report.claims.push(Claim::new(
        format!("d = {d}, H r = d: error for r = 1, 2, 4, ..., d"),
        "at a fixed budget H r, higher rank is better; full rank (H = 1) is exact as beta grows",
        format!("{} (one full-rank head without read-out, beta 1e6: {})", fmt_list(&errs), fmt(exact)),
        Some(falls(&errs, 0.05)),
    ));
    report.figure(
        dir,
        "error_vs_rank",
        format!("Amsel: error against head rank at a fixed parameter count H r = {d}"),
        Figure::new(
            format!("Nearest-neighbour target, d = {d}, H r = d"),
            "log2 r (head rank), H = d / r",
            "test mean squared error",
            vec![Series::new("fitted read-out", pts)],
        ),
    )?;
    Ok(())
}
