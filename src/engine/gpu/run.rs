//! The GPU engine's run: the tracked-precision model of `model` in f32 WGSL kernels. Every
//! sequence of a chunk lives on the device as n + 1 rows (R, then the mean m) plus its log scales
//! (g, l); weights and inputs are drawn on the device from the counter-based generator;
//! per-layer, per-sequence metric ingredients are the only data read back, once per chunk. Each
//! sequence's work is the same whatever the chunk, so results do not depend on the chunk size.
//! Failed chunks are retried smaller, and the fault codes of the check kernel are decoded here.

use super::check::FaultPart;
use super::chunk::{new_chunk, Kernels, Spectra};
use super::fit::{check_fits, LLVMPIPE_LOOP_LIMIT};
use super::metrics::{layer_metrics_from_raw, RAW};
use super::profile::{KernelTimes, Profiler};
use super::GpuContext;
use crate::config::{Config, Norm};
use crate::engine::result::SequenceFault;
use crate::metrics::LayerMetrics;
use crate::model::LayerPart;

/// Metrics of every sequence at every layer, on the GPU.
pub fn simulate(ctx: &GpuContext, cfg: &Config, chunk: usize) -> anyhow::Result<Vec<Vec<LayerMetrics>>> {
    simulate_with(ctx, &Kernels::new(ctx)?, cfg, chunk)
}

/// [`simulate`] with kernels compiled beforehand (benchmarks, repeated runs).
pub fn simulate_with(
    ctx: &GpuContext,
    kernels: &Kernels,
    cfg: &Config,
    chunk: usize,
) -> anyhow::Result<Vec<Vec<LayerMetrics>>> {
    Ok(simulate_checked(ctx, kernels, cfg, chunk, false)?.per_sequence)
}

/// What a GPU run produced, and how its chunks went.
#[derive(Clone, Debug)]
pub struct Simulation {
    pub per_sequence: Vec<Vec<LayerMetrics>>,
    /// The chunk size the run ended with (smaller than asked after a retry).
    pub chunk: usize,
    /// One line per chunk that failed and was retried smaller.
    pub retries: Vec<String>,
    /// Sequences whose state a layer part made invalid (their metrics from that layer on are NaN).
    pub faults: Vec<SequenceFault>,
    /// With `profile`: per kernel, passes and nanoseconds (slowest first), or why there are none.
    pub profile: Option<Result<KernelTimes, String>>,
}

/// Test hook: `RANKCOLLAPSE_TEST_GPU_OOM_ABOVE=S` makes every chunk of more than S sequences
/// fail as out of memory, so that the retry path runs for real.
pub const OOM_HOOK: &str = "RANKCOLLAPSE_TEST_GPU_OOM_ABOVE";

/// Test hook: `RANKCOLLAPSE_TEST_CUT_METRICS=L` makes the metrics kernel's canary report that the
/// driver cut its loops short at layer L (0 = the input), as llvmpipe does past its loop limit,
/// so that the detection's read-back and report run for real.
pub const CUT_HOOK: &str = "RANKCOLLAPSE_TEST_CUT_METRICS";

/// [`simulate_with`], reporting retries: a chunk that fails (out of memory, a binding or buffer
/// limit) is run again in halves, down to one sequence; results do not depend on the chunk size.
/// A lost device is not retried: the error says so.
pub fn simulate_checked(
    ctx: &GpuContext,
    kernels: &Kernels,
    cfg: &Config,
    chunk: usize,
    profile: bool,
) -> anyhow::Result<Simulation> {
    check_fits(cfg, &ctx.device.limits(), &ctx.info)?;
    ctx.check()?;
    let mut profiler = profile.then(|| Profiler::new(ctx));
    let mut chunk = chunk.max(1);
    let mut retries = Vec::new();
    let mut faults = Vec::new();
    let mut out = Vec::with_capacity(cfg.sequences);
    let mut first = 0;
    while first < cfg.sequences {
        let batch = chunk.min(cfg.sequences - first);
        let timer = profiler.as_mut().and_then(|p| p.as_mut().ok());
        let (raw, spectra, codes) = match run_chunk_scoped(ctx, kernels, cfg, first, batch, timer) {
            Ok(r) => r,
            Err(e) if batch > 1 && ctx.lost().is_none() => {
                chunk = batch / 2;
                let line = format!(
                    "a chunk of {batch} sequences (from sequence {first}) failed: {e:#}; retrying in chunks of {chunk}"
                );
                eprintln!("[rankcollapse] {line}");
                retries.push(line);
                continue;
            }
            Err(e) => return Err(e.context(format!("GPU chunk of sequences {first}..{}", first + batch))),
        };
        for b in 0..batch {
            let history: Vec<LayerMetrics> = (0..=cfg.depth)
                .map(|layer| {
                    let at = (b * (cfg.depth + 1) + layer) * RAW;
                    let spectrum = spectra[layer].get(b).copied();
                    layer_metrics_from_raw(&raw[at..at + RAW], cfg.tokens, layer > 0, spectrum)
                })
                .collect();
            out.push(history);
        }
        // Per sequence, the first fault: a layer part that made the state invalid (the check
        // kernel's code), or a metrics kernel whose loops the driver cut short (raw value 15).
        for b in 0..batch {
            let cut = (0..=cfg.depth).find(|layer| raw[(b * (cfg.depth + 1) + layer) * RAW + 15] != 0.0);
            let cut = cut.map(|layer| {
                let what = format!(
                    "the adapter {} stopped the metrics kernel's loops short (llvmpipe stops every loop \
                     of an invocation after {LLVMPIPE_LOOP_LIMIT} passes); use a hardware GPU or --engine cpu",
                    ctx.info.name
                );
                (layer, LayerPart::Metrics.name(), what)
            });
            let state = (codes[b] != 0).then(|| {
                let (layer, part, what) = decode_fault(codes[b]);
                (layer, part, what.to_string())
            });
            let first_fault = match (cut, state) {
                (Some(c), Some(s)) => Some(if s.0 <= c.0 { s } else { c }),
                (c, s) => c.or(s),
            };
            let Some((layer, part, what)) = first_fault else { continue };
            // Nothing from the faulty layer on is a number: never averaged into a mean.
            for (l, m) in out[first + b].iter_mut().enumerate().skip(layer) {
                *m = LayerMetrics::faulted(l > 0, cfg.spectrum_at(l));
            }
            faults.push(SequenceFault { sequence: first + b, layer, part: part.to_string(), what });
        }
        first += batch;
    }
    let profile = profiler.map(|p| p.map(|p| p.totals()));
    Ok(Simulation { per_sequence: out, chunk, retries, profile, faults })
}

/// [`run_chunk`] inside out-of-memory and validation error scopes: any error of the chunk, or a
/// lost device, is returned as `Err` (never a panic, never a read-back of a failed chunk).
fn run_chunk_scoped(
    ctx: &GpuContext,
    k: &Kernels,
    cfg: &Config,
    first: usize,
    batch: usize,
    profiler: Option<&mut Profiler>,
) -> anyhow::Result<ChunkOut> {
    if let Some(limit) = std::env::var(OOM_HOOK).ok().and_then(|v| v.trim().parse::<usize>().ok()) {
        if batch > limit {
            anyhow::bail!("out of device memory (injected by {OOM_HOOK}={limit})");
        }
    }
    let oom = ctx.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let invalid = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
    let out = run_chunk(ctx, k, cfg, first, batch, profiler);
    let invalid = pollster::block_on(invalid.pop());
    let oom = pollster::block_on(oom.pop());
    ctx.check()?;
    if let Some(e) = oom {
        anyhow::bail!("out of device memory: {e}");
    }
    if let Some(e) = invalid {
        anyhow::bail!("{e}");
    }
    out
}

/// What a chunk reads back: the raw metric values, the spectra and the fault code per sequence.
type ChunkOut = (Vec<f32>, Spectra, Vec<u32>);

/// Runs sequences [first, first + batch) and returns their raw read-back values and spectra.
fn run_chunk(
    ctx: &GpuContext,
    k: &Kernels,
    cfg: &Config,
    first: usize,
    batch: usize,
    profiler: Option<&mut Profiler>,
) -> anyhow::Result<ChunkOut> {
    let (mut c, b) = new_chunk(ctx, k, cfg, first, batch);
    c.profiler = profiler;
    let hidden = cfg.mlp_hidden();
    c.inputs(&b.x);
    c.metrics(&b.x, 0, false);
    c.flush();
    let has_mlp = hidden > 0;
    for layer in 0..cfg.depth {
        c.layer = layer + 1;
        match cfg.norm {
            Norm::Pre(_) => {
                c.normalise(&b.x, &b.nrm);
                c.attention(&b.nrm, &b.f, &b, layer);
                c.skip(&b.x, &b.f, &b.s);
                c.copy(&b.s, &b.x);
                if has_mlp {
                    c.normalise(&b.x, &b.nrm);
                    c.mlp(&b.nrm, &b.f, &b, layer);
                    c.skip(&b.x, &b.f, &b.s);
                    c.copy(&b.s, &b.x);
                }
            }
            Norm::Post(_) => {
                c.attention(&b.x, &b.f, &b, layer);
                c.skip(&b.x, &b.f, &b.s);
                c.normalise(&b.s, &b.x);
                if has_mlp {
                    c.mlp(&b.x, &b.f, &b, layer);
                    c.skip(&b.x, &b.f, &b.s);
                    c.normalise(&b.s, &b.x);
                }
            }
            Norm::None => {
                c.attention(&b.x, &b.f, &b, layer);
                c.skip(&b.x, &b.f, &b.s);
                c.copy(&b.s, &b.x);
                if has_mlp {
                    c.mlp(&b.x, &b.f, &b, layer);
                    c.skip(&b.x, &b.f, &b.s);
                    c.copy(&b.s, &b.x);
                }
            }
        }
        c.metrics(&b.x, layer + 1, true);
        c.flush();
        ctx.lose_if_hooked();
    }
    if let Some(e) = c.error.take() {
        return Err(e.context("reading back the attention matrices"));
    }
    let raw = ctx.read_back::<f32>(&c.raw, (batch * (cfg.depth + 1) * RAW * 4) as u64)?;
    let faults = ctx.read_back::<u32>(&c.faults, (batch * 4) as u64)?;
    Ok((raw, std::mem::take(&mut c.spectra), faults))
}

/// What a fault code of shaders/check.wgsl says: (layer, part, what).
fn decode_fault(code: u32) -> (usize, &'static str, &'static str) {
    let number = code % 8;
    let part = FaultPart::from_number(number);
    let what = if part == Some(FaultPart::AttentionUnderflow) {
        "the residual fell below the range of its f32 log scale (l = -inf from a state with a residual)"
    } else {
        "a NaN or an infinity in the state (R, m, or the log scales g, l)"
    };
    let name = match part {
        Some(part) => part.part().name(),
        None if number == 0 => "",
        None => "unknown part",
    };
    ((code / 8) as usize, name, what)
}
