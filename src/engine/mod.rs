//! Engines: who runs the model, the CPU engine (f64/f32) or the GPU engine (f32); `auto` picks
//! one and says why.

pub mod cpu;
pub mod gpu;
pub mod result;
mod stoppable;

pub use result::{RunOutput, SequenceFault};
pub use stoppable::{run_until_stopped, Computed};

use crate::config::{Config, Engine};

/// Runs the configuration on the engine it asks for; `auto` takes the GPU engine on a hardware
/// adapter (or on the one `--adapter` names) and the CPU engine otherwise, and says why.
pub fn run(cfg: &Config) -> anyhow::Result<RunOutput> {
    let out = pick_and_run(cfg)?;
    report_faults(&out.faults);
    if cfg.profile && !out.engine.starts_with("gpu") {
        eprintln!(
            "warning: --profile times the GPU engine's kernels; this run used the {} engine (profile \
             it with perf or valgrind --tool=callgrind, see BENCHMARKS.md)",
            out.engine
        );
    }
    Ok(out)
}

fn pick_and_run(cfg: &Config) -> anyhow::Result<RunOutput> {
    match cfg.engine {
        Engine::Cpu => cpu::run(cfg, "requested with --engine cpu".to_string()),
        Engine::Gpu => gpu_run(cfg, "requested with --engine gpu"),
        Engine::Auto => {
            if let Some(why) = gpu::fit::unsupported(cfg) {
                return cpu::run(cfg, format!("auto: {why}, using the CPU engine"));
            }
            let selector = gpu::adapter_selector(cfg.adapter.as_deref());
            let list = gpu::adapters();
            let infos: Vec<wgpu::AdapterInfo> = list.iter().map(|a| a.info.clone()).collect();
            match gpu::choose_adapter(&infos, selector.as_deref()) {
                // A selector that names no adapter is reported by the GPU engine's own choice.
                _ if selector.is_some() => {
                    gpu_run(cfg, "auto: the adapter was chosen (--adapter / WGPU_ADAPTER_NAME)")
                }
                Ok(gpu::AdapterChoice::Hardware(i)) => {
                    let a = &list[i];
                    let why = format!("auto: hardware adapter {} ({:?})", a.info.name, a.info.device_type);
                    gpu_run(cfg, &why)
                }
                _ => {
                    let seen: Vec<String> =
                        list.iter().map(|a| format!("{} ({:?})", a.info.name, a.info.device_type)).collect();
                    let seen = if seen.is_empty() { "none".to_string() } else { seen.join(", ") };
                    cpu::run(
                        cfg,
                        format!("auto: no hardware GPU adapter (adapters: {seen}), using the CPU engine"),
                    )
                }
            }
        }
    }
}

/// The GPU engine (f32) on the adapter `--adapter` or WGPU_ADAPTER_NAME names, else the first
/// hardware adapter, else the first.
pub fn gpu_run(cfg: &Config, why: &str) -> anyhow::Result<RunOutput> {
    if let Some(e) = gpu::fit::unsupported(cfg) {
        anyhow::bail!("the GPU engine cannot run this configuration: {e}");
    }
    let ctx = gpu::GpuContext::new(cfg.adapter.as_deref())?;
    let start = std::time::Instant::now();
    let chunk = match cfg.chunk {
        0 => gpu::fit::chunk_size(cfg, &ctx.device.limits(), cfg.gpu_memory_mb << 20),
        c => c,
    };
    let kernels = gpu::chunk::Kernels::new(&ctx)?;
    let sim = gpu::run::simulate_checked(&ctx, &kernels, cfg, chunk, cfg.profile)?;
    match &sim.profile {
        Some(Ok(rows)) => eprint!(
            "GPU profile ({}, timestamp queries, {} sequences x {} layers):\n{}",
            ctx.info.name,
            cfg.sequences,
            cfg.depth,
            gpu::profile::table(rows, start.elapsed().as_secs_f64())
        ),
        Some(Err(why)) => eprintln!("warning: no GPU profile: {why}"),
        None => {}
    }
    let chunks = if sim.retries.is_empty() {
        format!("chunk {chunk}")
    } else {
        format!("chunk {chunk}, reduced to {} after {} failed chunks", sim.chunk, sim.retries.len())
    };
    Ok(RunOutput {
        per_sequence: sim.per_sequence,
        faults: sim.faults,
        engine: "gpu-f32".into(),
        engine_reason: format!("{why}; adapter {} ({:?}), {chunks}", ctx.info.name, ctx.info.backend),
        compute_seconds: start.elapsed().as_secs_f64(),
        sigma_ratio_floor: gpu::metrics::GPU_SIGMA_RATIO_FLOOR,
        threads: 1,
    })
}

/// Names each numerical fault on stderr (the first ten, then a count).
pub fn report_faults(faults: &[SequenceFault]) {
    for f in faults.iter().take(10) {
        eprintln!(
            "error: sequence {} layer {} {}: {} (its metrics from this layer on are NaN)",
            f.sequence, f.layer, f.part, f.what
        );
    }
    if faults.len() > 10 {
        eprintln!("error: ... and {} more sequences with a numerical fault", faults.len() - 10);
    }
}
