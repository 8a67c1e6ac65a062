//! Dong, Cordonnier, Loukas 2021: the residual to rank one in their composite (1,inf) norm for
//! pure attention, attention + MLP, attention + skip and the full block at BERT-base dimensions;
//! then pure attention followed to log10 residual below -100, the ratio of successive log
//! residuals (-> 3, the exponent of their cubic bound), and the bound itself beside it.

use super::figure::{Figure, Series};
use super::{base_config, by_layer, fmt, fmt_list, layer_mean, Claim, Options, Report};
use crate::config::{Config, Mlp, Norm, Skip, Weights};
use crate::metrics::{layer_metrics, Metric};
use crate::model::{apply_layer_checked, input_tokens, layer_weights_f64, Tracked};
use ndarray::{Array2, Axis};
use rayon::prelude::*;
use std::path::Path;

/// BERT-base at initialisation: n = 128, d = 768, 12 heads, every weight N(0, 0.02^2), tokens
/// sharing a common component (token correlation rho).
pub fn bert_base(opts: &Options, depth: usize, sequences: usize) -> Config {
    let w = Weights::Gaussian(Some(0.02));
    Config {
        depth,
        tokens: 128,
        width: 768,
        heads: 12,
        qk: w,
        value: w,
        out_proj: w,
        mlp_weights: w,
        input: crate::config::Input::Shared(0.5),
        sequences,
        ..base_config(opts)
    }
}

/// The four architectures of the comparison: (label, config).
pub fn variants(base: &Config) -> Vec<(&'static str, Config)> {
    let mlp = Mlp::Hidden(crate::config::Activation::Gelu, 4.0);
    vec![
        ("pure attention", base.clone()),
        ("attention + MLP", Config { mlp, ..base.clone() }),
        ("attention + skip", Config { skip: Skip::Standard, ..base.clone() }),
        (
            "full block (skip, MLP, post-LN)",
            Config {
                skip: Skip::Standard,
                mlp,
                norm: Norm::Post(crate::config::NormKind::Layer),
                ..base.clone()
            },
        ),
    ]
}

/// |M|_{1,inf} = sqrt(max column abs sum x max row abs sum).
pub fn norm_1inf(m: &Array2<f64>) -> f64 {
    let col = m.map(|x| x.abs()).sum_axis(Axis(0)).fold(0.0f64, |a, &x| a.max(x));
    let row = m.map(|x| x.abs()).sum_axis(Axis(1)).fold(0.0f64, |a, &x| a.max(x));
    (col * row).sqrt()
}

/// What the deep pure-attention run measured, per layer (layer 0 = input), mean over sequences.
pub struct Deep {
    /// log10 of the relative residual res_dong.
    pub log10_res: Vec<f64>,
    /// log10 of the absolute residual |X - 1 xbar^T|_{1,inf}.
    pub log10_abs: Vec<f64>,
    /// beta = max over layers and heads of |W_Q W_K^T|_1 |W_V W_O|_{1,inf} (Dong et al.'s beta).
    pub beta: f64,
}

/// Runs `cfg` through the model layer by layer (as the CPU engine does, f64) and records the
/// absolute residual beside the relative one, and the weights' beta.
pub fn deep_run(cfg: &Config) -> anyhow::Result<Deep> {
    cfg.validate()?;
    let weights: Vec<_> = (0..cfg.depth).map(|l| layer_weights_f64(cfg, l, 0)).collect();
    let dv = cfg.value_dim();
    let mut beta: f64 = 0.0;
    for w in &weights {
        for (h, head) in w.heads.iter().enumerate() {
            let qk = head.query.dot(&head.key.t());
            let vo = match &w.out_proj {
                Some(o) => head.value.dot(&o.slice(ndarray::s![h * dv..(h + 1) * dv, ..])),
                None => head.value.clone(),
            };
            let col1 = qk.map(|x| x.abs()).sum_axis(Axis(0)).fold(0.0f64, |a, &x| a.max(x));
            beta = beta.max(col1 * norm_1inf(&vo));
        }
    }
    let per_seq: Vec<[Vec<f64>; 2]> = (0..cfg.sequences)
        .into_par_iter()
        .map(|s| -> anyhow::Result<[Vec<f64>; 2]> {
            let mut x = Tracked::from_matrix(input_tokens(cfg, s));
            let mut rel = Vec::with_capacity(cfg.depth + 1);
            let mut abs = Vec::with_capacity(cfg.depth + 1);
            let mut record = |x: &Tracked<f64>| {
                rel.push(layer_metrics(x, None).get(Metric::Log10ResDong).unwrap_or(f64::NAN));
                abs.push((x.log_scale + x.log_res + norm_1inf(&x.res).ln()) / std::f64::consts::LN_10);
            };
            record(&x);
            for (layer, w) in weights.iter().take(cfg.depth).enumerate() {
                let (y, _, fault) = apply_layer_checked(cfg, w, &x, false);
                if let Some(f) = fault {
                    // A mean over sequences must not take in a state the representation lost.
                    anyhow::bail!("sequence {s} layer {} {}: {}", layer + 1, f.part, f.what);
                }
                x = y;
                record(&x);
            }
            Ok([rel, abs])
        })
        .collect::<anyhow::Result<_>>()?;
    let layers = cfg.depth + 1;
    // Mean over sequences of quantity k (0: relative, 1: absolute) at every layer.
    let mean = |k: usize| -> Vec<f64> {
        (0..layers).map(|l| per_seq.iter().map(|p| p[k][l]).sum::<f64>() / per_seq.len() as f64).collect()
    };
    Ok(Deep { log10_res: mean(0), log10_abs: mean(1), beta })
}

/// log r_{l+1} / log r_l for successive layers (from layer 1 on: the input's log is near 0).
pub fn successive_log_ratios(log10_res: &[f64]) -> Vec<f64> {
    log10_res.windows(2).skip(1).map(|w| w[1] / w[0]).collect()
}

/// Whether the last ratio is within `tol` of 3 (the cubic exponent of Dong et al.'s bound).
pub fn ratio_near_three(ratios: &[f64], tol: f64) -> bool {
    ratios.last().is_some_and(|r| (r - 3.0).abs() <= tol)
}

/// log10 of Dong et al.'s bound at layer `start + j`, started from the measured absolute residual
/// at layer `start`: ((3^j - 1)/2) log10(4 gamma beta H / sqrt(d_qk)) + 3^j log10 |res_start|.
pub fn log10_bound(log10_c: f64, log10_start: f64, j: usize) -> f64 {
    let p = 3f64.powi(j as i32);
    (p - 1.0) / 2.0 * log10_c + p * log10_start
}

pub fn reproduce(dir: &Path, opts: &Options, report: &mut Report) -> anyhow::Result<()> {
    let (depth, sequences) = if opts.quick { (6, 2) } else { (12, 8) };
    let base = bert_base(opts, depth, sequences);
    report.setup.push(format!(
        "Setup: BERT-base at initialisation, n = 128 tokens, d = 768, 12 heads (d_qk = 64), every weight \
         (W_Q, W_K, W_V, W_O, both MLP matrices) N(0, 0.02^2), input tokens x_i = sqrt(rho) v + sqrt(1 - rho) g_i \
         with rho = 0.5 (a shared component, `--input shared:0.5`), GELU MLP of width 4d, post-LayerNorm in the \
         full block; {depth} layers, {sequences} sequences, one network for all sequences, seed {}. Metric: \
         `log10_res_dong` = log10 |X - 1 xbar^T|_(1,inf) / |X|_(1,inf), mean over sequences. The same runs from \
         the command line: `rankcollapse run --tokens 128 --width 768 --heads 12 --qk gaussian:0.02 --value \
         gaussian:0.02 --out-proj gaussian:0.02 --mlp-weights gaussian:0.02 --input shared:0.5 --depth {depth} \
         --sequences {sequences} --spectrum-every 0` plus `--mlp gelu:4`, `--skip standard`, or all three with \
         `--norm post-ln`.",
        opts.seed
    ));
    let mut series = Vec::new();
    let mut finals = Vec::new();
    for (label, cfg) in variants(&base) {
        let curve = layer_mean(&cfg, Metric::Log10ResDong)?;
        finals.push((label, curve[0], *curve.last().unwrap()));
        series.push(Series::new(label, by_layer(&curve)));
    }
    let [pure, mlp, skip, full] = [finals[0], finals[1], finals[2], finals[3]];
    report.claims.push(Claim::new(
        format!("pure attention, log10 res_dong at layer 0 -> {depth}"),
        "collapses to rank one doubly exponentially",
        format!("{} -> {}", fmt(pure.1), fmt(pure.2)),
        Some(pure.2 < -20.0),
    ));
    report.claims.push(Claim::new(
        format!("attention + MLP, layer 0 -> {depth}"),
        "MLPs do not stop the collapse (they can only slow it, through their Lipschitz constant)",
        format!("{} -> {}", fmt(mlp.1), fmt(mlp.2)),
        Some(mlp.2 < -20.0),
    ));
    report.claims.push(Claim::new(
        format!("attention + skip, layer 0 -> {depth}"),
        "skip connections prevent rank collapse",
        format!("{} -> {}", fmt(skip.1), fmt(skip.2)),
        Some(skip.2 > skip.1 - 1.0),
    ));
    report.claims.push(Claim::new(
        format!("full block, layer 0 -> {depth}"),
        "no collapse with skip connections (LayerNorm plays no role in the bound)",
        format!("{} -> {}", fmt(full.1), fmt(full.2)),
        Some(full.2 > full.1 - 1.0),
    ));
    report.figure(
        dir,
        "residual_by_architecture",
        "Dong: log10 of the relative (1,inf) residual per layer, four architectures",
        Figure::new(
            "Dong et al.: BERT-base at initialisation",
            "layer",
            "log10 res_dong (mean over sequences)",
            series,
        ),
    )?;

    // Pure attention, deeper, with the absolute residual and the bound.
    let deep_depth = if opts.quick { 5 } else { 8 };
    let cfg = Config { depth: deep_depth, ..base.clone() };
    let deep = deep_run(&cfg)?;
    let ratios = successive_log_ratios(&deep.log10_res);
    let (h, dqk) = (cfg.heads as f64, cfg.head_rank() as f64);
    let log10_c = (4.0 * deep.beta * h / dqk.sqrt()).log10();
    let lowest = *deep.log10_res.last().unwrap();
    report.setup.push(format!(
        "Deep run: pure attention with the same weights and inputs, {deep_depth} layers. The bound is Dong et \
         al.'s bound for L layers of pure attention, |res(SAN(X))|_(1,inf) <= (4 gamma beta H / sqrt(d_qk))^((3^L - 1)/2) |res(X)|_(1,inf)^(3^L), \
         with beta = max over layers and heads of |W_Q W_K^T|_1 |W_V W_O|_(1,inf) (W_O: the head's rows of the \
         output projection), measured from the drawn weights: beta = {}, and gamma = 1 (our choice: in \
         the paper gamma is a term that depends on the attention entries, which we did not evaluate), \
         so 4 gamma beta H / sqrt(d_qk) = {}. The bound is on the absolute residual, so it is drawn beside the \
         measured absolute residual log10 |X - 1 xbar^T|_(1,inf), started from the input and from layers 1 and 2 \
         (a bound started at layer k uses the measured residual there). It decreases only when \
         |res|_(1,inf) < (4 gamma beta H / sqrt(d_qk))^(-1/2) = {}.",
        fmt(deep.beta),
        fmt(10f64.powf(log10_c)),
        fmt(10f64.powf(-log10_c / 2.0))
    ));
    report.claims.push(Claim::new(
        format!("pure attention, log10 res_dong after {deep_depth} layers"),
        "(the paper's figures stop where float precision does, near -7 / -16)",
        fmt(lowest),
        Some(lowest < -100.0),
    ));
    report.claims.push(Claim::new(
        "ratio of successive log residuals, layers 1->2, 2->3, ...",
        "tends to 3 (r_{l+1} <= c r_l^3)",
        fmt_list(&ratios),
        Some(ratio_near_three(&ratios, 0.1)),
    ));
    let mut bound_holds = true;
    let mut series = vec![Series::new("measured |res|_(1,inf)", by_layer(&deep.log10_abs))];
    for start in 0..3.min(deep_depth) {
        let pts: Vec<(f64, f64)> = (start..=deep_depth)
            .map(|l| (l as f64, log10_bound(log10_c, deep.log10_abs[start], l - start)))
            .take_while(|(_, b)| b.abs() < 1e4)
            .collect();
        bound_holds &= pts.iter().all(|&(l, b)| deep.log10_abs[l as usize] <= b + 1e-9);
        series.push(Series::reference(format!("bound from layer {start}"), pts));
    }
    report.claims.push(Claim::new(
        "measured absolute residual against the bound",
        "below the bound at every layer",
        format!("measured log10 |res|_(1,inf): {}", fmt_list(&deep.log10_abs)),
        Some(bound_holds),
    ));
    report.figure(
        dir,
        "deep_pure_attention",
        "Dong: pure attention followed far below float precision, with the bound started from layers 0, 1, 2",
        Figure::new(
            "Dong et al.: pure attention, BERT-base, and the bound",
            "layer",
            "log10 |X - 1 xbar^T|_(1,inf)",
            series,
        ),
    )?;
    let rel: Vec<f64> = deep.log10_res.clone();
    report.figure(
        dir,
        "log_ratio",
        "Dong: ratio of successive log10 res_dong, tending to 3",
        Figure::new(
            "Dong et al.: successive log ratio",
            "layer l",
            "log10 res(l+1) / log10 res(l)",
            vec![
                Series::new(
                    "measured",
                    ratios.iter().enumerate().map(|(k, &r)| ((k + 1) as f64, r)).collect(),
                ),
                Series::reference("3", vec![(1.0, 3.0), ((rel.len() - 2) as f64, 3.0)]),
            ],
        ),
    )?;
    Ok(())
}
