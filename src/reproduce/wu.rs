//! Wu, Ajorlou, Wang, Jegelka, Jadbabaie 2024: mu(X) = |X - 1 xbar^T|_F under the complete,
//! causal, two-sided window and causal-window masks (pure attention, orthogonal value matrices);
//! the fitted exponential rate against the window size and the mask graph's radius; the score
//! scale (temperature); and with LayerNorm, collapse for orthogonal value matrices but
//! non-trivial equilibria for constructed ones (driving `model::apply_layer` with our own weights).

use super::figure::{Figure, Series};
use super::{base_config, by_layer, fmt, fmt_list, layer_mean, slope, Claim, Options, Report};
use crate::config::{Attention, Config, Mask, Norm, NormKind, Weights};
use crate::metrics::Metric;
use crate::model::{apply_layer_checked, HeadWeights, LayerWeights, Tracked};
use ndarray::Array2;
use std::path::Path;

/// Pure attention with orthogonal value matrices, as in Wu et al.'s mask experiments.
pub fn mask_config(opts: &Options, tokens: usize, depth: usize, sequences: usize, mask: Mask) -> Config {
    Config { tokens, width: 32, depth, sequences, mask, value: Weights::Orthogonal, ..base_config(opts) }
}

/// Per-layer mean log10 mu.
pub fn log10_mu(cfg: &Config) -> anyhow::Result<Vec<f64>> {
    layer_mean(cfg, Metric::Log10Mu)
}

/// The exponential rate: minus the slope of log10 mu per layer over the second half of the layers.
pub fn rate(log10_mu: &[f64]) -> f64 {
    let half = log10_mu.len() / 2;
    let xs: Vec<f64> = (half..log10_mu.len()).map(|l| l as f64).collect();
    -slope(&xs, &log10_mu[half..])
}

/// Total collapse over the run: log10 mu(0) - log10 mu(L).
pub fn total_collapse(log10_mu: &[f64]) -> f64 {
    log10_mu[0] - log10_mu[log10_mu.len() - 1]
}

/// Whether `values` strictly decrease: the masks, listed from the one claimed to collapse fastest
/// to the one claimed slowest, collapse in that order.
pub fn strictly_decreasing(values: &[f64]) -> bool {
    values.windows(2).all(|w| w[0] > w[1])
}

/// Radius of the two-sided window graph (edges |i - j| < w) on n tokens: the smallest
/// eccentricity, reached at the middle token.
pub fn window_radius(n: usize, w: usize) -> usize {
    ((n - 1) / 2).div_ceil(w - 1)
}

/// One pure-attention layer with uniform causal attention (W_Q = W_K = 0), the given value
/// matrix (row convention: x -> x W) and post-sphere normalisation: Wu et al.'s LayerNorm
/// dynamics x_i <- N(W^T sum_{j <= i} x_j / i).
pub fn sphere_config(n: usize, d: usize, depth: usize) -> Config {
    Config {
        tokens: n,
        width: d,
        depth,
        mask: Mask::Causal,
        attention: Attention::Uniform,
        norm: Norm::Post(NormKind::Sphere),
        value: Weights::Identity,
        out_proj: Weights::None,
        sequences: 1,
        spectrum_every: 0,
        ..Config::default()
    }
}

/// Runs `depth` layers of the sphere dynamics from tokens `x` (rows), returning the row-normalised
/// tokens after every layer (index 0: the input, normalised).
pub fn sphere_trajectory(
    value: &Array2<f64>,
    x: Array2<f64>,
    depth: usize,
) -> anyhow::Result<Vec<Array2<f64>>> {
    let (n, d) = x.dim();
    let cfg = sphere_config(n, d, depth);
    cfg.validate()?;
    let w = LayerWeights {
        heads: vec![HeadWeights {
            query: Array2::zeros((d, 0)),
            key: Array2::zeros((d, 0)),
            value: value.clone(),
            markov_logits: None,
        }],
        out_proj: None,
        mlp: None,
    };
    let unit = |m: Array2<f64>| {
        let mut m = m;
        for mut row in m.rows_mut() {
            let norm = row.dot(&row).sqrt();
            row /= norm;
        }
        m
    };
    let mut state = Tracked::from_matrix(x.clone());
    let mut out = vec![unit(x)];
    for layer in 1..=depth {
        let (next, _, fault) = apply_layer_checked(&cfg, &w, &state, false);
        if let Some(f) = fault {
            anyhow::bail!("layer {layer} {}: {}", f.part, f.what);
        }
        state = next;
        out.push(unit(state.dense()));
    }
    Ok(out)
}

/// The two-token counterexample's value matrix (row convention x -> x W): e_1 W = e_1,
/// e_2 W = a e_1 + b e_2 with 0 < b < 1. e_1 is the dominant eigenvector, so token 1 = e_1 is a
/// stable fixed point; token 2 (angle t from e_1) follows t -> angle_map(a, b, t).
pub fn two_token_value(a: f64, b: f64) -> Array2<f64> {
    ndarray::arr2(&[[1.0, 0.0], [a, b]])
}

/// One layer of token 2's angle when token 1 = e_1: the direction of W^T (e_1 + x_2).
pub fn angle_map(a: f64, b: f64, t: f64) -> f64 {
    (b * t.sin()).atan2(1.0 + t.cos() + a * t.sin())
}

/// The fixed points t != 0 of `angle_map`: 1 + (1 - b) cos t + a sin t = 0, i.e.
/// R cos(t + phi) = -1 with R = |(1 - b, -a)|, phi = atan2(-a, 1 - b) (radians, in (-pi, pi]).
pub fn two_token_fixed_points(a: f64, b: f64) -> Vec<f64> {
    let r = ((1.0 - b).powi(2) + a * a).sqrt();
    if r < 1.0 {
        return Vec::new();
    }
    let phi = (-a).atan2(1.0 - b);
    let wrap = |t: f64| (t + std::f64::consts::PI).rem_euclid(std::f64::consts::TAU) - std::f64::consts::PI;
    let c = (-1.0 / r).acos();
    vec![wrap(c - phi), wrap(-c - phi)]
}

/// The rank-k construction's value matrix on R^d (row convention): e_i W = e_i - e_{i-1}, i.e.
/// W_V = I - S with S the shift e_i -> e_{i-1}. Then W_V maps the causal mean of e_1..e_i to
/// e_i / i, so X = (e_1, ..., e_k) is a fixed point of the normalised dynamics for every k.
pub fn shift_value(d: usize) -> Array2<f64> {
    Array2::from_shape_fn((d, d), |(i, j)| {
        if i == j {
            1.0
        } else if j + 1 == i {
            -1.0
        } else {
            0.0
        }
    })
}

/// Singular values of the dense tokens, largest first.
pub fn singular_values(x: &Array2<f64>) -> Vec<f64> {
    let m = nalgebra::DMatrix::from_fn(x.nrows(), x.ncols(), |i, j| x[[i, j]]);
    let mut s: Vec<f64> = m.singular_values().iter().copied().collect();
    s.sort_by(|a, b| b.total_cmp(a));
    s
}

/// Numerical rank: singular values above `rel` times the largest.
pub fn numerical_rank(x: &Array2<f64>, rel: f64) -> usize {
    let s = singular_values(x);
    s.iter().filter(|&&v| v > rel * s[0]).count()
}

/// Tokens for the rank-k equilibrium of `shift_value(d)` with n = d tokens: e_1..e_k, then
/// positive combinations of e_1..e_k (inside the invariant subspace), drawn from `seed`.
pub fn rank_k_start(d: usize, k: usize, seed: u64) -> Array2<f64> {
    let g =
        crate::rng::GaussianBlock::new(seed, crate::rng::Stream::new(crate::rng::Purpose::Input, 1, k), 0)
            .normals(d * d);
    Array2::from_shape_fn((d, d), |(i, j)| {
        if i < k {
            if i == j {
                1.0
            } else {
                0.0
            }
        } else if j < k {
            g[i * d + j].abs() + 0.1
        } else {
            0.0
        }
    })
}

pub fn reproduce(dir: &Path, opts: &Options, report: &mut Report) -> anyhow::Result<()> {
    let (n, depth, sequences) = if opts.quick { (32, 30, 2) } else { (64, 60, 8) };
    report.setup.push(format!(
        "Setup: pure attention (no skip, MLP or normalisation), one head, n = {n} tokens, d = 32, W_Q, W_K \
         gaussian with std 1/sqrt(d), W_V Haar orthogonal (`--value orthogonal`), gaussian inputs, {depth} \
         layers, {sequences} sequences, seed {}. mu(X) = |X - 1 xbar^T|_F (`log10_mu`, mean over sequences). \
         Rate: minus the least-squares slope of log10 mu per layer over the second half of the layers.",
        opts.seed
    ));

    // Masks.
    let w = 8;
    let masks = [Mask::Full, Mask::Causal, Mask::CausalWindow(w), Mask::Window(w)];
    let mut series = Vec::new();
    let mut totals = Vec::new();
    let mut text = Vec::new();
    for &mask in &masks {
        let curve = log10_mu(&mask_config(opts, n, depth, sequences, mask))?;
        totals.push(total_collapse(&curve));
        text.push(format!("{mask}: {} (rate {}/layer)", fmt(total_collapse(&curve)), fmt(rate(&curve))));
        // The complete mask collapses doubly exponentially: draw it until it leaves the chart.
        series.push(Series::new(
            mask.to_string(),
            by_layer(&curve).into_iter().take_while(|p| p.1 > -40.0).collect(),
        ));
    }
    report.claims.push(Claim::new(
        "collapse log10 mu(0) - log10 mu(L) by mask",
        "all masks collapse (exponentially); the complete mask fastest, local (window) masks slowest",
        text.join("; "),
        Some(strictly_decreasing(&totals)),
    ));
    report.figure(
        dir,
        "mu_by_mask",
        format!("Wu: log10 mu per layer by mask (W = {w}; the complete mask leaves the chart below -40)"),
        Figure::new("Wu et al.: masks, pure attention, orthogonal W_V", "layer", "log10 mu(X)", series),
    )?;

    // Rate against window size and radius.
    let windows = [2usize, 4, 8, 16];
    let mut two = Vec::new();
    let mut causal = Vec::new();
    for &w in &windows {
        two.push(rate(&log10_mu(&mask_config(opts, n, depth, sequences, Mask::Window(w)))?));
        causal.push(rate(&log10_mu(&mask_config(opts, n, depth, sequences, Mask::CausalWindow(w)))?));
    }
    let radii: Vec<usize> = windows.iter().map(|&w| window_radius(n, w)).collect();
    report.claims.push(Claim::new(
        format!("fitted rate (per layer, log10) for window:W, W = {windows:?} (graph radius {radii:?})"),
        "the rate falls as the window shrinks (the bound's rate worsens with the mask graph's radius)",
        fmt_list(&two),
        Some(strictly_decreasing(&two.iter().rev().copied().collect::<Vec<_>>())),
    ));
    report.claims.push(Claim::new(
        format!("fitted rate for causal-window:W, W = {windows:?}"),
        "slower for smaller windows",
        fmt_list(&causal),
        Some(causal[0] < causal[causal.len() - 1]),
    ));
    report.figure(
        dir,
        "rate_vs_window",
        "Wu: fitted exponential rate against the window size",
        Figure::new(
            format!("Wu et al.: collapse rate against window size (n = {n})"),
            "window W",
            "rate: -d log10 mu / d layer",
            vec![
                Series::new(
                    "window:W (two-sided)",
                    windows.iter().map(|&w| w as f64).zip(two.iter().copied()).collect(),
                ),
                Series::new(
                    "causal-window:W",
                    windows.iter().map(|&w| w as f64).zip(causal.iter().copied()).collect(),
                ),
            ],
        ),
    )?;

    // Score scale (temperature), causal and window masks.
    let taus = [0.25, 1.0, 4.0, 16.0, 64.0];
    let base_tau = 1.0 / (32f64).sqrt();
    let mut series = Vec::new();
    for mask in [Mask::Causal, Mask::Window(w)] {
        let (mut rates, mut totals) = (Vec::new(), Vec::new());
        for &t in &taus {
            let cfg =
                Config { temperature: Some(t * base_tau), ..mask_config(opts, n, depth, sequences, mask) };
            let curve = log10_mu(&cfg)?;
            rates.push(rate(&curve));
            totals.push(total_collapse(&curve));
        }
        report.claims.push(Claim::new(
            format!("{mask}: fitted rate and total collapse for score scale tau = {taus:?} x 1/sqrt(d_qk)"),
            "collapse stays exponential at every finite temperature; the rate bound depends on the \
             temperature through the smallest attention weight",
            format!("rates {}; collapse {}", fmt_list(&rates), fmt_list(&totals)),
            Some(rates.iter().all(|&r| r > 0.0)),
        ));
        series.push(Series::new(mask.to_string(), taus.iter().map(|t| t.log2()).zip(totals).collect()));
    }
    report.figure(
        dir,
        "rate_vs_temperature",
        "Wu: total collapse log10 mu(0) - log10 mu(L) against the score scale (`--temperature`)",
        Figure::new("Wu et al.: score scale", "log2 (tau sqrt(d_qk))", "log10 mu(0) - log10 mu(L)", series),
    )?;

    // LayerNorm with orthogonal value matrices: still collapses.
    let mut series = Vec::new();
    let mut text = Vec::new();
    let mut collapsed = true;
    for (norm, name) in
        [(Norm::Post(NormKind::Sphere), "post-sphere"), (Norm::Post(NormKind::Layer), "post-ln")]
    {
        for mask in [Mask::Causal, Mask::Window(w)] {
            let cfg = Config { norm, ..mask_config(opts, n, depth, sequences, mask) };
            let curve = log10_mu(&cfg)?;
            collapsed &= rate(&curve) > 0.0;
            text.push(format!("{name} {mask}: {} -> {}", fmt(curve[0]), fmt(*curve.last().unwrap())));
            series.push(Series::new(format!("{name}, {mask}"), by_layer(&curve)));
        }
    }
    report.claims.push(Claim::new(
        "LayerNorm (and its idealisation, the sphere projection) with orthogonal W_V: log10 mu, layer 0 -> L",
        "collapse to rank one still happens exponentially for this class of value matrices",
        text.join("; "),
        Some(collapsed),
    ));
    report.figure(
        dir,
        "layernorm_orthogonal",
        "Wu: with post-LayerNorm or sphere normalisation and orthogonal W_V the tokens still collapse",
        Figure::new("Wu et al.: with LayerNorm, orthogonal W_V", "layer", "log10 mu(X)", series),
    )?;

    counterexample(dir, opts, report)?;
    rank_k(dir, opts, report)
}

/// The two-token causal counterexample, through the model's own layers.
fn counterexample(dir: &Path, opts: &Options, report: &mut Report) -> anyhow::Result<()> {
    let (a, b) = (-2.0, 0.5);
    let depth = if opts.quick { 60 } else { 120 };
    let value = two_token_value(a, b);
    let fixed = two_token_fixed_points(a, b);
    // The stable one: |derivative of the angle map| < 1 there.
    let slope_at = |t: f64| (angle_map(a, b, t + 1e-6) - angle_map(a, b, t - 1e-6)) / 2e-6;
    let (stable, unstable) =
        if slope_at(fixed[0]).abs() < 1.0 { (fixed[0], fixed[1]) } else { (fixed[1], fixed[0]) };
    let deg = |t: f64| t.to_degrees();
    report.setup.push(format!(
        "LayerNorm counterexample (our construction, after the paper's): n = 2 tokens, d = 2, causal mask, \
         uniform attention (W_Q = W_K = 0), post-sphere normalisation x <- x/|x| (the LayerNorm Wu et al. \
         analyse; with centred features and a gain it is LayerNorm), and a value matrix with e_1 W_V = e_1, \
         e_2 W_V = a e_1 + b e_2, a = {a}, b = {b}. Token 1 attends only to itself and e_1 is W_V's dominant \
         eigenvector, so x_1 = e_1 is fixed and stable (perturbations shrink by b per layer). Token 2 = \
         (cos t, sin t) follows the direction of W_V^T (e_1 + x_2): besides t = 0 its fixed points solve \
         1 + (1 - b) cos t + a sin t = 0, here t = {} degrees (stable, slope {}) and t = {} degrees (unstable, \
         slope {}). So every start of token 2 beyond the unstable angle settles on a rank-2 equilibrium, at \
         {} degrees from token 1, while starts on the other side collapse onto token 1: both behaviours, \
         for one value matrix. Run through `model::apply_layer` with these weights, {depth} layers.",
        fmt(deg(stable)),
        fmt(slope_at(stable)),
        fmt(deg(unstable)),
        fmt(slope_at(unstable)),
        fmt(deg(stable))
    ));
    let starts = [10.0f64, 30.0, 60.0, 120.0, 170.0, -45.0, -150.0];
    let mut series = Vec::new();
    let mut outcomes = Vec::new();
    let mut agrees = true;
    for &start in &starts {
        let t0 = start.to_radians();
        let x = ndarray::arr2(&[[1.0, 0.0], [t0.cos(), t0.sin()]]);
        let traj = sphere_trajectory(&value, x, depth)?;
        let angles: Vec<f64> = traj.iter().map(|m| m[[1, 1]].atan2(m[[1, 0]]).to_degrees()).collect();
        let last = traj.last().unwrap();
        let end = *angles.last().unwrap();
        // Predicted from the angle map: iterate it from the same start.
        let predicted = (0..depth).fold(t0, |t, _| angle_map(a, b, t)).to_degrees();
        agrees &= (end - predicted).abs() < 1e-6 && (last[[0, 0]] - 1.0).abs() < 1e-12;
        outcomes.push(format!("{start} -> {}", fmt(end)));
        series.push(Series::new(format!("start {start} deg"), by_layer(&angles)));
    }
    report.claims.push(Claim::new(
        format!("two tokens, causal, sphere LayerNorm: angle of token 2 from token 1 after {depth} layers, by start (degrees)"),
        "token 1 stays fixed, token 2 converges to a different point: no collapse to rank one",
        format!("{} (predicted equilibria: 0 and {})", outcomes.join(", "), fmt(deg(stable))),
        Some(agrees && outcomes.iter().any(|o| o.ends_with(&fmt(deg(stable))))),
    ));
    report.figure(dir, "two_token_equilibrium", format!("Wu: with LayerNorm (sphere) token 2 either collapses onto token 1 or settles {} degrees away, depending on where it starts", fmt(deg(stable))), Figure::new("Wu et al.: two-token counterexample", "layer", "angle of token 2 from token 1 (degrees)", series))?;
    Ok(())
}

/// Equilibria of every rank k = 1..d for one value matrix.
fn rank_k(dir: &Path, opts: &Options, report: &mut Report) -> anyhow::Result<()> {
    let d = if opts.quick { 4 } else { 6 };
    let depth = 60;
    let value = shift_value(d);
    report.setup.push(format!(
        "Equilibria of every rank (our construction): n = d = {d} tokens, causal mask, uniform attention, sphere \
         normalisation, one value matrix W_V = I - S (S e_i = e_(i-1): a single Jordan block). With uniform \
         causal attention token i sees the mean m_i = (e_1 + ... + e_i)/i of the tokens before it, and \
         W_V m_i = e_i / i telescopes, so tokens e_1, ..., e_k are a fixed point for every k; span(e_1..e_k) is \
         invariant, so tokens k+1..n started inside it (positive combinations) stay there and settle too. Each \
         start runs {depth} layers through `model::apply_layer`. The same matrix from a generic start (all n \
         tokens perturbed by 1e-3) is also shown: these equilibria are not attracting in every direction. W_V is a \
         Jordan block, so a perturbation of the first k tokens grows polynomially (~ t^(k-1)); rounding errors \
         of 1e-16 therefore show as a per-layer change that grows with k (the `last change` column; the check \
         asks for rank k and a last change below 1e-4)."
    ));
    let mut pts = Vec::new();
    let mut all = true;
    let mut text = Vec::new();
    for k in 1..=d {
        let traj = sphere_trajectory(&value, rank_k_start(d, k, opts.seed), depth)?;
        let (a, b) = (&traj[depth - 1], &traj[depth]);
        let change = (b - a).mapv(f64::abs).fold(0.0f64, |m, &v| m.max(v));
        let rank = numerical_rank(b, 1e-8);
        all &= rank == k && change < 1e-4;
        text.push(format!("k={k}: rank {rank}, last change {}", fmt(change)));
        pts.push((k as f64, rank as f64));
    }
    let perturbed = Array2::eye(d)
        + Array2::from_shape_vec(
            (d, d),
            crate::rng::GaussianBlock::new(
                opts.seed,
                crate::rng::Stream::new(crate::rng::Purpose::Input, 2, 0),
                0,
            )
            .normals(d * d),
        )?
        .mapv(|v| 1e-3 * v);
    let traj = sphere_trajectory(&value, perturbed, depth)?;
    let generic_rank = numerical_rank(traj.last().unwrap(), 1e-8);
    report.claims.push(Claim::new(
        format!("one W_V (d = {d}): numerical rank (singular values > 1e-8 sigma_1) after {depth} layers from the rank-k start"),
        "the dynamics with LayerNorm have equilibria of every rank between 1 and full, simultaneously",
        format!("{}; generic perturbed start: rank {generic_rank}", text.join("; ")),
        Some(all),
    ));
    report.figure(
        dir,
        "rank_k_equilibria",
        "Wu: one value matrix, equilibria of each rank k = 1..d",
        Figure::new(
            format!("Wu et al.: equilibria of every rank, W_V = I - S, d = {d}"),
            "k (rank of the start)",
            "numerical rank after the run",
            vec![Series::new("rank of the settled tokens", pts)],
        ),
    )?;
    Ok(())
}
