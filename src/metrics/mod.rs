//! The reported metrics: the [`Metric`] names, and the one formula ([`LayerMetrics::from_raw`])
//! that turns the raw per-sequence quantities an engine measured ([`RawMetrics`]) into them.
//! Both engines go through it: the CPU engine measures its raw quantities in `state.rs`, the GPU
//! engine reads them back from `shaders/metrics.wgsl`. Aggregation over sequences: `summary.rs`.

mod state;
mod summary;

pub use state::{layer_metrics, mean_abs_cos, mean_abs_cos_dense, mean_abs_cos_in_blocks, raw_metrics};
pub use summary::{summarize, Summary};

use crate::model::state::exp_or_zero;
use crate::model::Real;
use std::fmt;

/// A metric of one sequence after one layer, in the order of `layers.csv` and `sequences.csv`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    ResFro,
    Log10ResFro,
    ResDong,
    Log10ResDong,
    Mu,
    Log10Mu,
    StableRank,
    GramStableRank,
    StableRankCentered,
    SigmaRatio,
    Log10SigmaRatio,
    MeanAbsCos,
    AttnSigma1,
    AttnSigma2,
    AttnCenteredSigma1,
    AttnEntropy,
}

/// How a metric's values are aggregated over sequences.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregation {
    /// Statistics of the values; any non-finite value is left out and counted.
    Plain,
    /// Statistics of a log10: -inf is a legitimate value (an exactly zero residual) and enters
    /// the statistics; only NaN and +inf are left out.
    Log,
}

impl Metric {
    /// Every metric, in output order.
    pub const ALL: [Metric; 16] = [
        Metric::ResFro,
        Metric::Log10ResFro,
        Metric::ResDong,
        Metric::Log10ResDong,
        Metric::Mu,
        Metric::Log10Mu,
        Metric::StableRank,
        Metric::GramStableRank,
        Metric::StableRankCentered,
        Metric::SigmaRatio,
        Metric::Log10SigmaRatio,
        Metric::MeanAbsCos,
        Metric::AttnSigma1,
        Metric::AttnSigma2,
        Metric::AttnCenteredSigma1,
        Metric::AttnEntropy,
    ];

    /// The attention spectrum: sigma_1(A), sigma_2(A), sigma_1(A - 11^T/n), mean over heads.
    pub const SPECTRUM: [Metric; 3] = [Metric::AttnSigma1, Metric::AttnSigma2, Metric::AttnCenteredSigma1];

    /// The name in every output (CSV columns and rows, JSON keys, warnings, `--metric`).
    pub fn name(self) -> &'static str {
        match self {
            Metric::ResFro => "res_fro",
            Metric::Log10ResFro => "log10_res_fro",
            Metric::ResDong => "res_dong",
            Metric::Log10ResDong => "log10_res_dong",
            Metric::Mu => "mu",
            Metric::Log10Mu => "log10_mu",
            Metric::StableRank => "stable_rank",
            Metric::GramStableRank => "gram_stable_rank",
            Metric::StableRankCentered => "stable_rank_centered",
            Metric::SigmaRatio => "sigma_ratio",
            Metric::Log10SigmaRatio => "log10_sigma_ratio",
            Metric::MeanAbsCos => "mean_abs_cos",
            Metric::AttnSigma1 => "attn_sigma1",
            Metric::AttnSigma2 => "attn_sigma2",
            Metric::AttnCenteredSigma1 => "attn_centered_sigma1",
            Metric::AttnEntropy => "attn_entropy",
        }
    }

    /// The metric of a name, as written in the outputs.
    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == name)
    }

    pub fn aggregation(self) -> Aggregation {
        if self.name().starts_with("log10_") {
            Aggregation::Log
        } else {
            Aggregation::Plain
        }
    }

    pub fn is_log(self) -> bool {
        self.aggregation() == Aggregation::Log
    }

    /// Metrics whose non-finite values are withheld by design (below the resolution floor of the
    /// engine that produced them, see [`sigma_ratio_floor`]) rather than numerical faults.
    pub fn withheld_below_floor(self) -> bool {
        matches!(self, Metric::SigmaRatio | Metric::Log10SigmaRatio)
    }

    /// Position in [`Metric::ALL`] (and in [`LayerMetrics`]).
    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The metrics of one sequence after one layer (layer 0: the input). `None`: not computed here.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerMetrics {
    values: [Option<f64>; 16],
}

impl LayerMetrics {
    /// No metric computed.
    pub fn empty() -> LayerMetrics {
        LayerMetrics { values: [None; 16] }
    }

    pub fn get(&self, metric: Metric) -> Option<f64> {
        self.values[metric.index()]
    }

    pub fn set(&mut self, metric: Metric, value: Option<f64>) {
        self.values[metric.index()] = value;
    }

    /// (metric, value) in output order, `None` where not computed.
    pub fn iter(&self) -> impl Iterator<Item = (Metric, Option<f64>)> + '_ {
        Metric::ALL.into_iter().map(|m| (m, self.get(m)))
    }

    /// The metrics of a layer whose state a numerical fault made invalid: every metric such a
    /// layer reports (the attention entropy after an attention layer, its spectrum where
    /// `spectrum`), each NaN, so that it is counted as non-finite and never averaged. The invalid
    /// state itself is never measured.
    pub fn faulted(attention: bool, spectrum: bool) -> LayerMetrics {
        let mut m = LayerMetrics { values: [Some(f64::NAN); 16] };
        if !(attention && spectrum) {
            for s in Metric::SPECTRUM {
                m.set(s, None);
            }
        }
        if !attention {
            m.set(Metric::AttnEntropy, None);
        }
        m
    }

    /// The one metric formula: the metrics of a state of `tokens` tokens from the raw quantities
    /// an engine measured on it. `sigma_ratio_floor` is the resolution floor of the engine and
    /// float type that measured them (below it the sigma ratio is withheld: NaN).
    ///
    /// With X = e^g (1 m^T + e^l R), |R|_F^2 = n and s = e^l: |X - 1 xbar^T|_F = e^{g+l} sqrt(n)
    /// and |X|_F = e^g sqrt(n (|m|^2 + s^2)), so every residual is a difference of logs that
    /// stays exact however small the residual is. The Gram matrix G = X^T X = n m m^T + s^2 R^T R
    /// (the cross terms vanish: 1^T R = 0) gives the spectra.
    pub fn from_raw(raw: &RawMetrics, tokens: usize, sigma_ratio_floor: f64) -> LayerMetrics {
        const LN10: f64 = std::f64::consts::LN_10;
        let nf = tokens as f64;
        let (g, l, m2) = (raw.log_scale, raw.log_res, raw.mean_sq);
        let s = exp_or_zero(l);
        let mut v = LayerMetrics::empty();
        let mut log_pair = |plain: Metric, log: Metric, ln: f64| {
            v.set(plain, Some(exp_or_zero(ln)));
            v.set(log, Some(ln / LN10));
        };
        let log_res_fro =
            if l == f64::NEG_INFINITY { f64::NEG_INFINITY } else { l - 0.5 * (m2 + s * s).ln() };
        log_pair(Metric::ResFro, Metric::Log10ResFro, log_res_fro);
        let log_dong = if l == f64::NEG_INFINITY {
            f64::NEG_INFINITY
        } else {
            l + raw.log_norm_1inf_res - raw.log_norm_1inf_state
        };
        log_pair(Metric::ResDong, Metric::Log10ResDong, log_dong);
        let log_mu = if g == f64::NEG_INFINITY || l == f64::NEG_INFINITY {
            f64::NEG_INFINITY
        } else {
            g + l + 0.5 * nf.ln()
        };
        log_pair(Metric::Mu, Metric::Log10Mu, log_mu);

        let sigma1_sq = raw.gram_top;
        if sigma1_sq > 0.0 {
            let fro2 = nf * (m2 + s * s);
            v.set(Metric::StableRank, Some(fro2 / sigma1_sq));
            // |G|_F^2 = n^2 |m|^4 + 2 n s^2 |R m|^2 + s^4 |R^T R|_F^2.
            let g_fro2 =
                nf * nf * m2 * m2 + 2.0 * nf * s * s * raw.res_mean_sq + s.powi(4) * raw.res_gram_fro2;
            v.set(Metric::GramStableRank, Some(g_fro2 / (sigma1_sq * sigma1_sq)));
            // sigma_2 is resolved only down to the floor of the matrix it was computed from (X
            // itself, or R when the mean dominates); below that it is not a number we can give.
            let log_ratio = 0.5 * (raw.log_sigma2_sq - sigma1_sq.ln());
            let resolved = raw.log_sigma2_sq == f64::NEG_INFINITY
                || 0.5 * (raw.log_sigma2_sq - raw.log_sigma2_scale) >= sigma_ratio_floor.ln();
            v.set(Metric::SigmaRatio, Some(if resolved { exp_or_zero(log_ratio) } else { f64::NAN }));
            v.set(Metric::Log10SigmaRatio, Some(if resolved { log_ratio / LN10 } else { f64::NAN }));
        }
        if let Some(c_top) = raw.res_gram_top {
            v.set(Metric::StableRankCentered, Some(nf / c_top));
        }
        v.set(Metric::MeanAbsCos, Some(raw.mean_abs_cos));
        if let Some(a) = &raw.attention {
            if let Some(spectrum) = a.spectrum {
                for (m, x) in Metric::SPECTRUM.into_iter().zip(spectrum) {
                    v.set(m, Some(x));
                }
            }
            v.set(Metric::AttnEntropy, Some(a.entropy));
        }
        v
    }
}

/// What an engine measures on one sequence's state X = e^g (1 m^T + e^l R) after one layer: the
/// ingredients of every metric, each in f64, named as in [`LayerMetrics::from_raw`].
#[derive(Clone, Debug, PartialEq)]
pub struct RawMetrics {
    /// g (-inf: X = 0).
    pub log_scale: f64,
    /// l (-inf: no residual).
    pub log_res: f64,
    /// |m|^2.
    pub mean_sq: f64,
    /// log |R|_{1,inf} and log |X / e^g|_{1,inf}, |M|_{1,inf} = sqrt(max column sum x max row sum).
    pub log_norm_1inf_res: f64,
    pub log_norm_1inf_state: f64,
    /// sigma_1(X / e^g)^2, the top eigenvalue of G (0 or less: no spectrum metrics).
    pub gram_top: f64,
    /// |R^T R|_F^2 and |R m|^2, the parts of |G|_F^2.
    pub res_gram_fro2: f64,
    pub res_mean_sq: f64,
    /// log sigma_2(X / e^g)^2, and the log of the squared scale it was resolved against.
    pub log_sigma2_sq: f64,
    pub log_sigma2_scale: f64,
    /// sigma_1(R)^2, when measured (a residual to measure it on).
    pub res_gram_top: Option<f64>,
    pub mean_abs_cos: f64,
    /// The attention statistics of the layer that produced the state (none for the input).
    pub attention: Option<RawAttention>,
}

/// The attention statistics of one layer, mean over heads.
#[derive(Clone, Debug, PartialEq)]
pub struct RawAttention {
    /// Mean row entropy of A (nats).
    pub entropy: f64,
    /// sigma_1(A), sigma_2(A), sigma_1(A - 11^T/n), when the spectrum was computed.
    pub spectrum: Option<[f64; 3]>,
}

/// Smallest sigma_2 / sigma_1 (of the matrix it is computed from) that the CPU engine reports: the
/// Lanczos value of sigma_2^2 carries an error of eps sigma_1^2 (so below sqrt(eps / 1e-6) it has
/// fewer than six digits), and a state stored in `T` knows sigma_2 only to eps_T sigma_1 (three
/// digits left at 1e3 eps_T).
pub fn sigma_ratio_floor<T: Real>() -> f64 {
    (f64::EPSILON / 1e-6).sqrt().max(T::EPS * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_round_trip_and_keep_the_output_order() {
        let names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
        assert_eq!(names[0], "res_fro");
        assert_eq!(names[15], "attn_entropy");
        for (k, m) in Metric::ALL.into_iter().enumerate() {
            assert_eq!(m.index(), k, "{m}");
            assert_eq!(Metric::from_name(m.name()), Some(m));
            assert_eq!(m.is_log(), m.name().starts_with("log10_"), "{m}");
        }
        assert_eq!(Metric::from_name("res"), None);
    }
}
