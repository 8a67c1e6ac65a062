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
        Engine::Auto => {
            "auto: the GPU engine is not yet complete (issue 4), using the CPU engine".to_string()
        }
        Engine::Gpu => return gpu_run(cfg),
    };
    cpu::run(cfg, reason)
}

/// The GPU engine on the adapter WGPU_ADAPTER_NAME names (else the first), f32.
pub fn gpu_run(cfg: &Config) -> anyhow::Result<RunOutput> {
    let ctx = gpu::GpuContext::new(None)?;
    let start = std::time::Instant::now();
    let budget = std::env::var("RANKCOLLAPSE_GPU_MEMORY_MB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1024)
        << 20;
    let chunk = match std::env::var("RANKCOLLAPSE_CHUNK").ok().and_then(|v| v.parse::<usize>().ok()) {
        Some(c) if c > 0 => c,
        _ => gpu::engine::chunk_size(cfg, &ctx.device.limits(), budget),
    };
    let per_sequence = gpu::engine::simulate(&ctx, cfg, chunk)?;
    Ok(RunOutput {
        per_sequence,
        engine: "gpu-f32".into(),
        engine_reason: format!(
            "requested with --engine gpu; adapter {} ({:?}), chunk {chunk}",
            ctx.info.name, ctx.info.backend
        ),
        compute_seconds: start.elapsed().as_secs_f64(),
        threads: 1,
    })
}
