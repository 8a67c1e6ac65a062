//! Known answers: exact collapse under uniform attention, rank one preserved, the Chafai edge of
//! random Markov matrices, and the cubic rate of pure attention.

use ndarray::Array2;
use rankcollapse::config::Config;
use rankcollapse::engine::cpu::simulate;
use rankcollapse::metrics::{LayerMetrics, Metric};
use rankcollapse::model::{apply_layer, layer_weights, Tracked};

fn cfg(f: impl FnOnce(&mut Config)) -> Config {
    let mut c = Config { depth: 4, tokens: 16, width: 8, sequences: 3, seed: 11, ..Config::default() };
    f(&mut c);
    c.validate().unwrap();
    c
}

fn series(runs: &[Vec<LayerMetrics>], metric: Metric) -> Vec<Vec<f64>> {
    runs.iter().map(|h| h.iter().map(|m| m.get(metric).unwrap()).collect()).collect()
}

#[test]
fn uniform_attention_with_full_mask_collapses_in_one_layer_exactly() {
    let c = cfg(|c| c.attention = "uniform".parse().unwrap());
    let runs = simulate::<f64>(&c);
    for (s, h) in runs.iter().enumerate() {
        assert!(h[0].get(Metric::Log10ResFro).unwrap() > -1.0, "seed 11 seq {s}: input already collapsed");
        for (l, m) in h.iter().enumerate().skip(1) {
            assert_eq!(m.get(Metric::ResFro), Some(0.0), "seed 11 seq {s} layer {l}");
            assert_eq!(m.get(Metric::Log10ResFro), Some(f64::NEG_INFINITY), "seed 11 seq {s} layer {l}");
            assert_eq!(m.get(Metric::Log10ResDong), Some(f64::NEG_INFINITY), "seed 11 seq {s} layer {l}");
            assert!(
                m.iter().filter_map(|(_, v)| v).all(|v| !v.is_nan()),
                "seed 11 seq {s} layer {l}: NaN in {m:?}"
            );
        }
    }
    // The same uniform attention under a causal mask does not collapse in one layer.
    let c = cfg(|c| {
        c.attention = "uniform".parse().unwrap();
        c.mask = "causal".parse().unwrap();
    });
    let runs = simulate::<f64>(&c);
    assert!(runs[0][1].get(Metric::Log10ResFro).unwrap() > -3.0);
}

#[test]
fn identical_tokens_stay_identical_through_every_part() {
    for (norm, skip, mlp) in [
        ("none", "none", "none"),
        ("pre-ln", "standard", "gelu:2"),
        ("post-ln", "scaled:0.5,1", "relu:2"),
        ("post-rms", "standard", "none"),
        ("pre-sphere", "standard", "relu:1"),
    ] {
        let c = cfg(|c| {
            c.input = "shared:1".parse().unwrap();
            c.norm = norm.parse().unwrap();
            c.skip = skip.parse().unwrap();
            c.mlp = mlp.parse().unwrap();
            c.norm_bias = 0.3;
        });
        for (s, h) in simulate::<f64>(&c).iter().enumerate() {
            for (l, m) in h.iter().enumerate() {
                assert_eq!(
                    m.get(Metric::Log10ResFro),
                    Some(f64::NEG_INFINITY),
                    "{norm}/{skip}/{mlp} seed 11 seq {s} layer {l}"
                );
                assert!(
                    m.iter().filter_map(|(_, v)| v).all(|v| !v.is_nan()),
                    "{norm}/{skip}/{mlp} layer {l}: NaN in {m:?}"
                );
            }
        }
    }
}

#[test]
fn rank_one_tokens_stay_rank_one_under_attention() {
    // X = c v^T with distinct c_i: not collapsed (residual O(1)) but rank one.
    // A causal mask collapses only exponentially, so the state stays far from collapse.
    let c = cfg(|c| {
        c.depth = 3;
        c.mask = "causal".parse().unwrap();
    });
    let n = c.tokens;
    let x =
        Array2::from_shape_fn((n, c.width), |(i, j)| (1.0 + 0.3 * i as f64) * ((j as f64) * 0.7 + 0.2).sin());
    let mut state = Tracked::from_matrix(x);
    for layer in 0..c.depth {
        let w = layer_weights::<f64>(&c, layer, 0);
        state = apply_layer(&c, &w, &state, false).0;
        let m = rankcollapse::metrics::layer_metrics(&state, None);
        let ratio = m.get(Metric::Log10SigmaRatio).unwrap();
        let res = m.get(Metric::Log10ResFro).unwrap();
        let stable = m.get(Metric::StableRank).unwrap();
        let gram = m.get(Metric::GramStableRank).unwrap();
        // sigma_2 = 0 lies below the resolution of sigma_2 / sigma_1: it is withheld (NaN).
        let floor = rankcollapse::metrics::sigma_ratio_floor::<f64>().log10();
        assert!(ratio.is_nan() || ratio < floor, "layer {}: log10 sigma2/sigma1 = {ratio}", layer + 1);
        assert!(
            (stable - 1.0).abs() < 1e-12 && (gram - 1.0).abs() < 1e-12,
            "layer {}: {stable} {gram}",
            layer + 1
        );
        assert!(res > -8.0, "layer {}: the test needs a non-collapsed rank-one state, res {res}", layer + 1);
    }
}

#[test]
fn random_markov_attention_has_sigma2_near_two_over_sqrt_n() {
    // Entries e^g, g ~ N(-ln2/2, ln2), have mean 1 and variance 1, so the bulk edge of A is
    // 2/sqrt(n) (Chafai); the log-normal tails make single draws at finite n scatter upwards,
    // hence the median over seeds.
    let n = 2048;
    let base = cfg(|c| {
        c.attention = "markov".parse().unwrap();
        c.tokens = n;
        c.width = 4;
        c.depth = 1;
        c.sequences = 1;
    });
    let mut edge = Vec::new();
    for seed in [3u64, 4, 5] {
        let c = Config { seed, ..base.clone() };
        let m = &simulate::<f64>(&c)[0][1];
        let s1 = m.get(Metric::AttnSigma1).unwrap();
        let s2 = m.get(Metric::AttnSigma2).unwrap() * (n as f64).sqrt();
        let sc = m.get(Metric::AttnCenteredSigma1).unwrap() * (n as f64).sqrt();
        println!("seed {seed}: sigma1 {s1:.4}, sigma2 sqrt(n) {s2:.4}, centred sigma1 sqrt(n) {sc:.4}");
        assert!((s1 - 1.0).abs() < 0.01, "seed {seed}: sigma1 {s1}");
        assert!((1.9..2.4).contains(&s2), "seed {seed}: sigma2 sqrt(n) {s2}");
        assert!((sc - s2).abs() < 0.05 * s2, "seed {seed}: centred sigma1 {sc} vs sigma2 {s2}");
        edge.push(s2);
    }
    edge.sort_by(f64::total_cmp);
    assert!((edge[1] - 2.0).abs() < 0.08, "median sigma2 sqrt(n) {edge:?}");
}

/// Ratios of successive log10 residuals once the residual is below `below`.
fn ratios_below(h: &[f64], below: f64) -> Vec<f64> {
    h.windows(2).filter(|w| w[0] < below).map(|w| w[1] / w[0]).collect()
}

#[test]
fn pure_attention_collapses_with_the_cubic_exponent() {
    let c = cfg(|c| {
        c.depth = 9;
        c.tokens = 32;
        c.width = 32;
        c.sequences = 4;
        c.spectrum_every = 0;
    });
    let runs = series(&simulate::<f64>(&c), Metric::Log10ResFro);
    for (s, h) in runs.iter().enumerate() {
        let ratios = ratios_below(h, -20.0);
        println!("seed 11 seq {s}: log10 res {h:.2?} ratios {ratios:.4?}");
        assert!(ratios.len() >= 3, "seed 11 seq {s}: too few layers below -20: {h:?}");
        // r_{l+1} ~ c r_l^3 gives ratio 3 + log c / log r_l: within a few percent below -20,
        // tending to 3 as the residual shrinks.
        for (k, r) in ratios.iter().enumerate() {
            assert!((r - 3.0).abs() < 0.05 * 3.0, "seed 11 seq {s}: ratio {r} in {h:?}");
            if k > 0 {
                assert!(
                    (r - 3.0).abs() <= (ratios[k - 1] - 3.0).abs() + 1e-9,
                    "seed 11 seq {s}: not tending to 3: {ratios:?}"
                );
            }
        }
        let deep = ratios_below(h, -200.0);
        assert!(
            !deep.is_empty() && deep.iter().all(|r| (r - 3.0).abs() < 0.005 * 3.0),
            "seed 11 seq {s}: {deep:?}"
        );
    }
    // The check is not vacuous: a causal mask collapses only exponentially (ratios near 1).
    let causal = cfg(|c| {
        c.depth = 40;
        c.mask = "causal".parse().unwrap();
        c.value = "orthogonal".parse().unwrap();
        c.spectrum_every = 0;
    });
    let h = &series(&simulate::<f64>(&causal), Metric::Log10ResFro)[0];
    let ratios = ratios_below(h, -5.0);
    assert!(!ratios.is_empty() && ratios.iter().all(|r| (r - 3.0).abs() > 0.5), "causal: {h:?}");
}
