//! Property tests (proptest): parsers never panic and round-trip, and any configuration that
//! validates runs without a panic and without a non-finite residual.

use proptest::prelude::*;
use rankcollapse::config::{Config, Input, Mask, Mlp, Norm, Skip, Weights};
use rankcollapse::engine::cpu::simulate;
use rankcollapse::metrics::Metric;
use rankcollapse::sweep::spec::Spec;

fn round_trips<T: std::str::FromStr + std::fmt::Display + PartialEq + std::fmt::Debug>(s: &str) {
    if let Ok(v) = s.parse::<T>() {
        let again: T = v.to_string().parse().unwrap_or_else(|_| panic!("{s:?} -> {v} does not parse back"));
        assert_eq!(again, v, "{s:?}");
    }
}

const WORDS: &[&str] = &[
    "full",
    "causal",
    "window:",
    "causal-window:",
    "none",
    "pre-ln",
    "post-ln",
    "rms",
    "sphere",
    "standard",
    "scaled:",
    "relu:",
    "gelu:",
    "gaussian",
    "gaussian:",
    "orthogonal",
    "identity",
    "scaled-identity:",
    "shared:",
    "orthonormal",
    "0",
    "1",
    "-1",
    "2.5",
    "1e308",
    "nan",
    "inf",
    ",",
    ":",
    " ",
];

/// `cases` cases from a fixed seed (20261123, or PROPTEST_RNG_SEED), so that a failure reproduces.
fn seeded(cases: u32) -> ProptestConfig {
    let defaults = ProptestConfig::default();
    let rng_seed = match defaults.rng_seed {
        proptest::test_runner::RngSeed::Random => proptest::test_runner::RngSeed::Fixed(20261123),
        fixed => fixed,
    };
    ProptestConfig { cases, rng_seed, ..defaults }
}

fn phrase() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(WORDS), 0..4).prop_map(|w| w.concat())
}

proptest! {
    #![proptest_config(seeded(512))]

    #[test]
    fn value_parsers_never_panic_and_round_trip(s in prop_oneof![phrase(), ".{0,12}"]) {
        round_trips::<Mask>(&s);
        round_trips::<Norm>(&s);
        round_trips::<Skip>(&s);
        round_trips::<Mlp>(&s);
        round_trips::<Weights>(&s);
        round_trips::<Input>(&s);
    }

    #[test]
    fn sweep_specs_never_panic(body in ".{0,80}", key in prop::sample::select(&["depth", "mask", "tokens", "x", "seed"][..])) {
        let text = format!("[sweep]\nname = \"p\"\n[grid]\n{key} = {body}\n");
        if let Ok(spec) = Spec::parse(&text) {
            let _ = spec.expand();
        }
        let _ = Spec::parse(&body);
    }
}

proptest! {
    // About two thirds of the drawn configurations validate (the rest test the rejection path).
    #![proptest_config(seeded(256))]

    /// Any configuration that validates runs, and its residuals are finite or exactly zero.
    #[test]
    fn valid_configurations_run_without_non_finite_residuals(
        tokens in 2usize..7, width in 1usize..6, heads in 1usize..3, depth in 1usize..4,
        mask in prop::sample::select(&["full", "causal", "window:1", "window:2", "causal-window:2"][..]),
        attention in prop::sample::select(&["softmax", "markov", "uniform", "identity"][..]),
        norm in prop::sample::select(&["none", "pre-ln", "post-ln", "pre-rms", "post-rms", "pre-sphere", "post-sphere"][..]),
        skip in prop::sample::select(&["none", "standard", "scaled:0.5,2", "scaled:1,-1", "scaled:0,1"][..]),
        mlp in prop::sample::select(&["none", "relu:1", "gelu:2"][..]),
        value in prop::sample::select(&["gaussian", "gaussian:1", "gaussian:0", "identity", "scaled-identity:3", "orthogonal"][..]),
        qk in prop::sample::select(&["gaussian", "gaussian:3", "gaussian:0"][..]),
        input in prop::sample::select(&["gaussian", "sphere", "shared:0.9", "shared:1", "orthonormal"][..]),
        remove_outlier in any::<bool>(), seed in 0u64..1000,
    ) {
        let cfg = Config {
            tokens, width: width * heads, heads, depth, sequences: 2, seed, remove_outlier,
            mask: mask.parse().unwrap(), attention: attention.parse().unwrap(), norm: norm.parse().unwrap(),
            skip: skip.parse().unwrap(), mlp: mlp.parse().unwrap(), value: value.parse().unwrap(),
            qk: qk.parse().unwrap(), input: input.parse().unwrap(), ..Config::default()
        };
        if cfg.validate().is_ok() {
            for (s, h) in simulate::<f64>(&cfg).iter().enumerate() {
                for (l, m) in h.iter().enumerate() {
                    for name in [Metric::Log10ResFro, Metric::Log10ResDong, Metric::Log10Mu] {
                        let v = m.get(name).unwrap();
                        prop_assert!(v.is_finite() || v == f64::NEG_INFINITY, "{name} = {v} at seq {s} layer {l}: {cfg:?}");
                    }
                    for name in [Metric::StableRank, Metric::MeanAbsCos, Metric::GramStableRank] {
                        if let Some(v) = m.get(name) {
                            prop_assert!(v.is_finite(), "{name} = {v} at seq {s} layer {l}: {cfg:?}");
                        }
                    }
                }
            }
        }
    }
}
