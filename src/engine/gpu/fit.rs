//! Whether and how a configuration fits a GPU adapter: what the GPU engine cannot run at all,
//! llvmpipe's loop limit, the largest storage binding, and the chunk size a memory budget allows.

use super::metrics::LANCZOS_STEPS;
use crate::config::{Attention, Config};

/// Why the GPU engine cannot run this configuration at all, if it cannot.
pub fn unsupported(cfg: &Config) -> Option<String> {
    (cfg.attention == Attention::Markov && cfg.tokens > 65535).then(|| {
        format!(
            "markov attention draws its logits by index i n + j < 2^32, so tokens <= 65535 (got {})",
            cfg.tokens
        )
    })
}

/// llvmpipe (lavapipe) stops a shader's loops after this many loop-header passes per invocation
/// (all loops of the invocation together, nested ones included; gallivm's
/// LP_MAX_TGSI_LOOP_ITERATIONS) and goes on with a wrong result.
pub const LLVMPIPE_LOOP_LIMIT: usize = 65535;

/// The most loop-header passes one invocation of our kernels makes for this configuration (an
/// upper estimate): a query row's three passes over its keys (the last with the inner loops over
/// the head's rank and value columns, and Philox's rounds for Markov logits), a token's pass over
/// the others for the cosines, a column's four passes over the rows in `compose`.
pub fn loop_iterations(cfg: &Config) -> usize {
    let n = cfg.tokens;
    // compose: one invocation per column (of the widest state) makes four passes over the rows.
    let widest = cfg.width.max(cfg.heads * cfg.value_dim()).max(cfg.mlp_hidden());
    let compose = 4 * (n + 1) * widest.div_ceil(256) + 8;
    let cosines = n * (cfg.width + 2) + cfg.width + 1;
    let scores = match cfg.attention {
        Attention::Softmax => cfg.head_rank() + 1,
        Attention::Markov => 33,
        Attention::Uniform => 0,
        Attention::Identity => return cosines.max(compose),
    };
    let per_key = 1 + scores + cfg.value_dim().min(16) + 1;
    (n * (2 + per_key)).max(cosines).max(compose)
}

/// Checks that one sequence fits the adapter's largest storage binding, and that no loop is cut
/// short on an adapter that cuts loops (llvmpipe).
pub fn check_fits(cfg: &Config, limits: &wgpu::Limits, adapter: &wgpu::AdapterInfo) -> anyhow::Result<()> {
    if adapter.name.contains("llvmpipe") && loop_iterations(cfg) > LLVMPIPE_LOOP_LIMIT {
        anyhow::bail!(
            "the software adapter {} stops shader loops after {LLVMPIPE_LOOP_LIMIT} iterations and would \
             return wrong numbers: this configuration runs up to {} per invocation (tokens {} x the \
             head's rank, value columns and width); use --engine cpu, a hardware GPU, or fewer tokens / \
             a smaller width",
            adapter.name,
            loop_iterations(cfg),
            cfg.tokens
        );
    }
    let (_, biggest) = bytes_per_sequence(cfg);
    let limit = limits.max_storage_buffer_binding_size as usize;
    if biggest > limit {
        let hint = if cfg.spectrum_every > 0 && cfg.tokens * cfg.tokens * 4 > limit {
            " (the n x n attention matrix of --spectrum-every: use --spectrum-every 0 or fewer tokens)"
        } else {
            ""
        };
        anyhow::bail!(
            "one sequence needs a {biggest}-byte buffer, over this adapter's largest storage binding of {limit} bytes{hint}"
        );
    }
    Ok(())
}

/// Chunk size: what fits the memory budget and the adapter's binding limit.
pub fn chunk_size(cfg: &Config, limits: &wgpu::Limits, budget_bytes: usize) -> usize {
    let (per_seq, biggest) = bytes_per_sequence(cfg);
    let by_budget = budget_bytes / per_seq.max(1);
    let by_binding = (limits.max_storage_buffer_binding_size as usize) / biggest.max(1);
    by_budget.min(by_binding).clamp(1, 65535).min(cfg.sequences.max(1))
}

/// Bytes of device memory one sequence needs (the largest buffers), for chunk sizing.
pub fn bytes_per_sequence(cfg: &Config) -> (usize, usize) {
    let (n, d) = (cfg.tokens + 1, cfg.width);
    let cat = cfg.heads * cfg.value_dim();
    let hidden = cfg.mlp_hidden();
    let widest = d.max(cat).max(hidden);
    let per_w = if cfg.per_sequence_weights { weight_floats(cfg) } else { 0 };
    let floats = n * d * 4
        + n * cat
        + 2 * n * hidden
        + n * cfg.value_dim()
        + 2 * n * cfg.head_rank()
        + widest
        + 5 * n
        + d * d
        + (LANCZOS_STEPS + 3) * d
        + per_w;
    // The dense attention matrix of the layers whose spectrum is requested.
    let dense = if cfg.spectrum_every > 0 { cfg.tokens * cfg.tokens } else { 0 };
    let floats = floats + dense;
    let biggest = (n * widest).max(d * d).max((LANCZOS_STEPS + 3) * d).max(dense);
    (floats * 4, biggest * 4)
}

fn weight_floats(cfg: &Config) -> usize {
    let (d, r, dv) = (cfg.width, cfg.head_rank(), cfg.value_dim());
    2 * d * r + d * dv + cfg.heads * dv * d + 2 * d * cfg.mlp_hidden()
}
