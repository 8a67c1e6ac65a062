//! Naderi, Nait Saada, Tanner 2024 ("Mind the gap"): the attention matrix has an outlier singular
//! value ~1 and a bulk ~2/sqrt(n); rank collapse in width; the fix A - 11^T/n.

use super::figure::{Figure, Series};
use super::{base_config, by_layer, fmt, fmt_list, layer_means, layer_stats, Claim, Options, Report};
use crate::config::{Attention, Config, Input, Norm, NormKind, Skip, Weights};
use crate::metrics::Metric;
use std::path::Path;

/// One layer of `attention` on n tokens with the attention spectrum computed.
pub fn spectrum_config(opts: &Options, attention: Attention, n: usize, sequences: usize) -> Config {
    Config { tokens: n, width: n, depth: 1, attention, sequences, spectrum_every: 1, ..base_config(opts) }
}

/// (sigma_1, sigma_2 sqrt(n)) of the attention matrix after one layer, medians over sequences
/// (key-query attention at large n has the odd sequence with a much larger sigma_2).
pub fn attention_spectrum(cfg: &Config) -> anyhow::Result<(f64, f64)> {
    let m = layer_stats(cfg, &[Metric::AttnSigma1, Metric::AttnSigma2], |s| s.median)?;
    Ok((m[0][1], m[1][1] * (cfg.tokens as f64).sqrt()))
}

/// Whether sigma_2 sqrt(n) at the largest n lies within `tol` of `target`.
pub fn levels_at(scaled_sigma2: &[f64], target: f64, tol: f64) -> bool {
    scaled_sigma2.last().is_some_and(|s| (s - target).abs() <= tol)
}

/// Stable rank (Gram definition) per layer at d = n.
pub fn depth_config(opts: &Options, n: usize, depth: usize, sequences: usize) -> Config {
    Config { tokens: n, width: n, depth, sequences, ..base_config(opts) }
}

/// Gram stable rank after layer 1 of random Markov attention on orthonormal inputs (d = n,
/// orthogonal W_V, so the singular values of X_1 are those of A or A - 11^T/n).
pub fn first_layer_stable_rank(
    opts: &Options,
    n: usize,
    remove_outlier: bool,
    sequences: usize,
) -> anyhow::Result<f64> {
    let cfg = Config {
        tokens: n,
        width: n,
        depth: 1,
        attention: Attention::Markov,
        remove_outlier,
        input: Input::Orthonormal,
        value: Weights::Orthogonal,
        sequences,
        ..base_config(opts)
    };
    Ok(layer_means(&cfg, &[Metric::GramStableRank])?[0][1])
}

/// Whether the fix raises the stable rank in every variant (pairs in the same order); the check
/// fails when the two lists are swapped.
pub fn fix_raises(without: &[f64], with: &[f64]) -> bool {
    without.len() == with.len() && without.iter().zip(with).all(|(a, b)| b > &(a * 1.05))
}

/// Whether the values grow with n: the last is at least `factor` times the first.
pub fn grows(values: &[f64], factor: f64) -> bool {
    values.len() >= 2 && values[values.len() - 1] >= factor * values[0]
}

pub fn reproduce(dir: &Path, opts: &Options, report: &mut Report) -> anyhow::Result<()> {
    let ns: Vec<usize> = if opts.quick { vec![32, 64, 128, 256] } else { vec![32, 64, 128, 256, 512, 1024] };
    let sequences = if opts.quick { 2 } else { 4 };
    report.setup.push(format!(
        "Setup, spectra: one layer, d = n, gaussian inputs, n in {ns:?}, {sequences} sequences, seed {}. Random \
         Markov attention (`--attention markov`): logits iid N(-ln2/2, ln2), row softmax. Key-query attention: \
         softmax(X W_Q W_K^T X^T / sqrt(d)), W_Q, W_K gaussian with std 1/sqrt(d). sigma_1, sigma_2 of A by \
         Lanczos (`--spectrum-every 1`: attn_sigma1, attn_sigma2), medians over sequences.",
        opts.seed
    ));
    let mut s1 = Vec::new();
    let mut series2 = Vec::new();
    let mut scaled_by = Vec::new();
    for (attention, label) in
        [(Attention::Markov, "random Markov"), (Attention::Softmax, "key-query softmax")]
    {
        let mut pts1 = Vec::new();
        let mut scaled = Vec::new();
        for &n in &ns {
            let (a, b) = attention_spectrum(&spectrum_config(opts, attention, n, sequences))?;
            pts1.push(((n as f64).log2(), a));
            scaled.push(b);
        }
        series2.push(Series::new(
            label,
            ns.iter().map(|&n| (n as f64).log2()).zip(scaled.iter().copied()).collect(),
        ));
        s1.push(Series::new(label, pts1));
        scaled_by.push((label, scaled));
    }
    let markov = &scaled_by[0].1;
    let softmax = &scaled_by[1].1;
    report.claims.push(Claim::new(
        format!("random Markov: sigma_2(A) sqrt(n), n = {ns:?}"),
        "-> 2 (bulk edge 2/sqrt(n), Chafai); sigma_1 = 1",
        fmt_list(markov),
        Some(levels_at(markov, 2.0, 0.15)),
    ));
    report.claims.push(Claim::new(
        format!("key-query softmax: sigma_2(A) sqrt(n), n = {ns:?}"),
        "levels off (sigma_2 = O(1/sqrt(n))) while sigma_1 stays ~1: a spectral gap",
        fmt_list(softmax),
        Some(softmax[softmax.len() - 1] < 1.5 * softmax[softmax.len() / 2]),
    ));
    report.figure(
        dir,
        "sigma2_vs_n",
        "Naderi: sigma_2 of the attention matrix times sqrt(n), against n",
        Figure::new("Mind the gap: sigma_2(A) sqrt(n)", "log2 n", "sigma_2(A) sqrt(n)", {
            let mut s = series2;
            s.push(Series::reference(
                "2",
                vec![((ns[0] as f64).log2(), 2.0), ((ns[ns.len() - 1] as f64).log2(), 2.0)],
            ));
            s
        }),
    )?;
    report.figure(
        dir,
        "sigma1_vs_n",
        "Naderi: the outlier singular value sigma_1(A), against n",
        Figure::new("Mind the gap: the outlier sigma_1(A)", "log2 n", "sigma_1(A)", s1),
    )?;

    // Stable rank against depth at d = n = 150.
    let (depth, seqs) = if opts.quick { (12, 2) } else { (30, 4) };
    report.setup.push(format!(
        "Setup, depth: d = n = 150, key-query softmax and random Markov attention, W_V gaussian std 1/sqrt(d), gaussian inputs, \
         {depth} layers, {seqs} sequences; A or A - 11^T/n (`--remove-outlier`), each with or without \
         post-LayerNorm and skip connections; baseline: identity attention (`--attention identity`), the same \
         value matrices. Metric: `gram_stable_rank` = sum sigma_i^4 / sigma_1^4 of X. \
         With key-query softmax attention and no skip connection, A - 11^T/n still collapses here: its rows \
         are the deviations of softmax from uniform, about (1/n) (z_ij - mean_j z_ij) with z = X M X^T, so \
         (A - 11^T/n) X ~ X M X^T X / n depends on X and acts like a power iteration on its top singular \
         directions (our reading; the input-independent random Markov attention behaves as the paper \
         states)."
    ));
    let ln = Norm::Post(NormKind::Layer);
    let identity = layer_means(
        &Config { attention: Attention::Identity, ..depth_config(opts, 150, depth, seqs) },
        &[Metric::GramStableRank],
    )?
    .remove(0);
    for (attention, name) in [(Attention::Softmax, "key-query softmax"), (Attention::Markov, "random Markov")]
    {
        let mut series = Vec::new();
        let mut without = Vec::new();
        let mut with = Vec::new();
        for fix in [false, true] {
            for (norm, skip, what) in [
                (Norm::None, Skip::None, "plain"),
                (ln, Skip::None, "LN"),
                (Norm::None, Skip::Standard, "skip"),
                (ln, Skip::Standard, "LN + skip"),
            ] {
                let cfg = Config {
                    attention,
                    remove_outlier: fix,
                    norm,
                    skip,
                    ..depth_config(opts, 150, depth, seqs)
                };
                let curve = layer_means(&cfg, &[Metric::GramStableRank])?.remove(0);
                if fix { &mut with } else { &mut without }.push(*curve.last().unwrap());
                series.push(Series::new(
                    format!("{}, {what}", if fix { "A - 11^T/n" } else { "A" }),
                    by_layer(&curve),
                ));
            }
        }
        series.push(Series::reference("identity attention", by_layer(&identity)));
        report.claims.push(Claim::new(
            format!("{name}: stable rank after {depth} layers, A (plain, LN, skip, LN + skip)"),
            "collapses towards 1 (rank collapse in depth, worsened by the spectral gap)",
            fmt_list(&without),
            Some(without.iter().all(|v| *v < 1.5)),
        ));
        report.claims.push(Claim::new(
            format!("{name}: stable rank after {depth} layers, A - 11^T/n (same four)"),
            "removing the outlier keeps the stable rank higher, comparable to the identity baseline",
            format!("{} (identity attention: {})", fmt_list(&with), fmt(*identity.last().unwrap())),
            Some(fix_raises(&without, &with)),
        ));
        let stem = if attention == Attention::Softmax {
            "stable_rank_vs_depth_softmax"
        } else {
            "stable_rank_vs_depth_markov"
        };
        report.figure(dir, stem, format!("Naderi: Gram stable rank against depth, {name} attention: A and A - 11^T/n, with and without LayerNorm and skip, and identity attention"), Figure::new(format!("Mind the gap: stable rank against depth, {name}, d = n = 150"), "layer", "gram stable rank", series))?;
    }

    // First-layer stable rank against n.
    let ns1: Vec<usize> = if opts.quick { vec![32, 64, 128, 256] } else { vec![32, 64, 128, 256, 512, 1024] };
    let mut plain = Vec::new();
    let mut fixed = Vec::new();
    for &n in &ns1 {
        plain.push(first_layer_stable_rank(opts, n, false, sequences)?);
        fixed.push(first_layer_stable_rank(opts, n, true, sequences)?);
    }
    report.setup.push(
        "Setup, width: one layer of random Markov attention on orthonormal inputs (`--input orthonormal`, d = n), \
         W_V Haar orthogonal, so X_1 has the singular values of A (or A - 11^T/n)."
            .into(),
    );
    report.claims.push(Claim::new(
        format!("layer-1 stable rank, A, n = {ns1:?}"),
        "stays ~1 whatever n (rank collapse in width: the outlier dominates)",
        fmt_list(&plain),
        Some(!grows(&plain, 1.5)),
    ));
    report.claims.push(Claim::new(
        format!("layer-1 stable rank, A - 11^T/n, n = {ns1:?}"),
        "grows with n (the bulk alone: sum s^4 / s_max^4 ~ n/8 for the quarter-circle law)",
        format!(
            "{} (n/8: {})",
            fmt_list(&fixed),
            ns1.iter().map(|n| fmt(*n as f64 / 8.0)).collect::<Vec<_>>().join(", ")
        ),
        Some(grows(&fixed, 4.0)),
    ));
    let log2 = |v: &[usize]| v.iter().map(|&n| (n as f64).log2()).collect::<Vec<_>>();
    report.figure(
        dir,
        "first_layer_stable_rank",
        "Naderi: stable rank after one layer against n, with and without the fix",
        Figure::new(
            "Mind the gap: first-layer stable rank against n",
            "log2 n",
            "gram stable rank of X_1",
            vec![
                Series::new("A", log2(&ns1).into_iter().zip(plain.iter().copied()).collect()),
                Series::new("A - 11^T/n", log2(&ns1).into_iter().zip(fixed.iter().copied()).collect()),
            ],
        ),
    )?;
    Ok(())
}
