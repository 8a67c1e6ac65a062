//! Engines: who runs the model. Only the CPU engine exists in this build; `auto` resolves to it
//! and says why.

pub mod cpu;
pub mod gpu;

use crate::config::{Config, Engine};
use crate::metrics::LayerMetrics;

/// What a run produced: metrics per sequence and layer, plus how it was run.
#[derive(Clone, Debug)]
pub struct RunOutput {
    /// `per_sequence[s][l]`: sequence s after layer l (l = 0 is the input).
    pub per_sequence: Vec<Vec<LayerMetrics>>,
    /// The engine that ran ("cpu-f64", ...).
    pub engine: String,
    /// Why that engine was chosen.
    pub engine_reason: String,
    /// Seconds spent in the engine.
    pub compute_seconds: f64,
    pub threads: usize,
}

/// Runs the configuration on the engine it asks for.
pub fn run(cfg: &Config) -> anyhow::Result<RunOutput> {
    let reason = match cfg.engine {
        Engine::Cpu => "requested with --engine cpu".to_string(),
        Engine::Auto => "auto: no GPU engine in this build, using the CPU engine".to_string(),
        Engine::Gpu => anyhow::bail!("engine gpu is not available in this build; use cpu or auto"),
    };
    cpu::run(cfg, reason)
}
