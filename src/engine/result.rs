//! What an engine run produces, whichever engine ran it: per-sequence metrics, the numerical
//! faults met, and how the run was made. Both engines build it; the dispatcher only passes it on.

use crate::metrics::LayerMetrics;

/// What a run produced: metrics per sequence and layer, plus how it was run.
#[derive(Clone, Debug)]
pub struct RunOutput {
    /// `per_sequence[s][l]`: sequence s after layer l (l = 0 is the input).
    pub per_sequence: Vec<Vec<LayerMetrics>>,
    /// Sequences that met a numerical fault (their metrics from its layer on are NaN).
    pub faults: Vec<SequenceFault>,
    /// The engine that ran ("cpu-f64", ...).
    pub engine: String,
    /// Why that engine was chosen.
    pub engine_reason: String,
    /// Seconds spent in the engine.
    pub compute_seconds: f64,
    /// The smallest sigma_2 / sigma_1 this engine and float type resolve: below it the sigma
    /// ratios are withheld (NaN), see `metrics::sigma_ratio_floor`.
    pub sigma_ratio_floor: f64,
    pub threads: usize,
}

/// A numerical fault: the first layer part that made a sequence's state invalid (a value the
/// tracked representation cannot hold). That sequence's metrics from this layer on are NaN, so
/// they are counted as non-finite and never averaged.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SequenceFault {
    pub sequence: usize,
    /// 1-based: the layer whose part failed.
    pub layer: usize,
    /// The name of the `model::LayerPart` that failed (attention, norm, mlp, skip, weights,
    /// metrics).
    pub part: String,
    pub what: String,
}
