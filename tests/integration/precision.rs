//! The f32 engine against the f64 engine on random configurations: the tracked representation
//! must keep f32 within float accuracy of f64 on every metric, however small the residual.

use rankcollapse::config::Config;
use rankcollapse::engine::cpu::simulate;
use rankcollapse::metrics::{LayerMetrics, Metric};

/// A small deterministic generator for choosing configurations (seed printed on failure).
struct Pick(u64);
impl Pick {
    fn next(&mut self, k: usize) -> usize {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) % k as u64) as usize
    }
    fn of<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.next(xs.len())]
    }
}

pub fn random_config(seed: u64) -> Config {
    let mut p = Pick(seed);
    let tokens = [3, 5, 8, 13, 17][p.next(5)];
    let width = [4, 6, 9, 16][p.next(4)];
    let heads = [1, 2][p.next(2)];
    let mut c = Config {
        depth: 3 + p.next(6),
        tokens,
        width: width * heads,
        heads,
        sequences: 2,
        seed,
        mask: p.of(&["full", "causal", "window:2", "causal-window:3"]).parse().unwrap(),
        attention: p.of(&["softmax", "softmax", "softmax", "markov", "identity", "uniform"]).parse().unwrap(),
        remove_outlier: p.next(4) == 0,
        norm: p.of(&["none", "pre-ln", "post-ln", "pre-rms", "post-rms", "post-sphere"]).parse().unwrap(),
        skip: p.of(&["none", "standard", "scaled:0.7,0.9"]).parse().unwrap(),
        mlp: p.of(&["none", "relu:2", "gelu:1"]).parse().unwrap(),
        value: p.of(&["gaussian", "orthogonal", "gaussian:1"]).parse().unwrap(),
        out_proj: p.of(&["identity", "gaussian"]).parse().unwrap(),
        input: p.of(&["gaussian", "sphere", "shared:0.5"]).parse().unwrap(),
        spectrum_every: 1,
        ..Config::default()
    };
    if let rankcollapse::config::Mask::Window(w) | rankcollapse::config::Mask::CausalWindow(w) = c.mask {
        if w > c.tokens {
            c.mask = rankcollapse::config::Mask::Full;
        }
    }
    if c.heads > 1 && c.value == rankcollapse::config::Weights::Orthogonal {
        c.value = rankcollapse::config::Weights::Gaussian(None);
    }
    if p.next(3) == 0 {
        // Pure attention with a full mask: the residual falls doubly exponentially.
        c.mask = rankcollapse::config::Mask::Full;
        c.attention = rankcollapse::config::Attention::Softmax;
        c.norm = rankcollapse::config::Norm::None;
        c.skip = rankcollapse::config::Skip::None;
        c.mlp = rankcollapse::config::Mlp::None;
        c.remove_outlier = false;
        c.depth = 6 + p.next(3);
    }
    c.validate().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    c
}

/// Error of an f32 value `a` against the f64 value `b` of metric `name` after layer `l`, as a
/// fraction of the f32 tolerance. Rounding errors of the state grow with depth (up to 3x per layer
/// under pure attention, the cubic map): a value metric may differ by 2e-5 * 3^l relative (at
/// most 1e-2), a log metric by the same amount absolutely, or by 2e-4 relative to its size (deep
/// residuals grow like their error).
pub fn f32_score(name: &str, l: usize, a: f64, b: f64) -> f64 {
    let value_tol = (2e-5 * 3f64.powi(l as i32)).min(1e-2);
    if name.starts_with("log10_") {
        ((a - b).abs() / value_tol).min((a - b).abs() / b.abs() / 2e-4)
    } else {
        let scale = if b.abs() < 1e-3 && name != "sigma_ratio" { 1.0 } else { b.abs() };
        (a - b).abs() / scale / value_tol
    }
}

/// Worst score and deepest residual over the comparisons of an f32 engine with the f64 engine.
pub struct Tally {
    pub worst: (f64, String),
    pub deepest: f64,
}

impl Tally {
    pub fn new() -> Self {
        Tally { worst: (0.0, String::new()), deepest: 0.0 }
    }

    /// Every metric of every sequence and layer of `lo` (engine `label`, f32) against `hi` (the
    /// f64 engine) for configuration `c`, asserted within `f32_score` <= 1 (or only printed with
    /// `report_only`). `skip_unresolved` leaves out sigma_ratio where either engine withheld it
    /// (their resolution floors differ).
    #[allow(clippy::too_many_arguments)]
    pub fn compare(
        &mut self,
        seed: u64,
        c: &Config,
        label: &str,
        lo: &[Vec<LayerMetrics>],
        hi: &[Vec<LayerMetrics>],
        skip_unresolved: bool,
        report_only: bool,
    ) {
        for (s, (hl, hh)) in lo.iter().zip(hi).enumerate() {
            for (l, (ml, mh)) in hl.iter().zip(hh).enumerate() {
                for metric in Metric::ALL {
                    let name = metric.name();
                    let (a, b) = match (ml.get(metric), mh.get(metric)) {
                        (Some(a), Some(b)) => (a, b),
                        (None, None) => continue,
                        other => panic!("seed {seed} seq {s} layer {l} {name}: presence differs {other:?}"),
                    };
                    if skip_unresolved && metric.withheld_below_floor() && (a.is_nan() || b.is_nan()) {
                        continue;
                    }
                    if metric == Metric::Log10ResFro && b.is_finite() {
                        self.deepest = self.deepest.min(b);
                    }
                    if a == b {
                        continue;
                    }
                    let score = f32_score(name, l, a, b);
                    let what = format!(
                        "seed {seed} seq {s} layer {l} {name}: {label} {a} vs f64 {b} (config {c:?})"
                    );
                    if report_only && score > 1.0 {
                        println!("{score:.2} {what}");
                        continue;
                    }
                    assert!(score <= 1.0, "{what}");
                    if score > self.worst.0 {
                        self.worst = (score, what);
                    }
                }
            }
        }
    }

    /// Prints the tally and checks that the configurations went deep into the collapse.
    pub fn finish(&self) {
        println!("deepest log10 residual compared: {:.1}", self.deepest);
        assert!(self.deepest < -30.0, "the random configurations never went below log10 residual -30");
        println!("worst error / tolerance: {:.3} at {}", self.worst.0, self.worst.1);
    }
}

#[test]
fn f32_engine_tracks_f64_engine_on_random_configurations() {
    let mut tally = Tally::new();
    for seed in 100..124u64 {
        let c = random_config(seed);
        tally.compare(seed, &c, "f32", &simulate::<f32>(&c), &simulate::<f64>(&c), false, false);
    }
    tally.finish();
}
