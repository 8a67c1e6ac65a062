//! The twin-test API: one layer part, or the metrics kernel, applied on its own to given states,
//! so that each kernel family can be checked against its CPU twin (tests) and timed (benches).

use super::chunk::{new_chunk, Kernels, St};
use super::metrics::{from_sentinel, layer_metrics_from_raw, to_sentinel, RAW};
use super::GpuContext;
use crate::config::Config;
use crate::metrics::LayerMetrics;
use crate::model::state::Tracked;

/// One part of a layer, applied on its own by [`apply_part`] (the kernel families against their
/// CPU twins in the tests).
#[derive(Clone, Copy, Debug)]
pub enum Part<'a> {
    Attention,
    Norm,
    Mlp,
    /// The skip connection a x + b f, with f per sequence.
    Skip(&'a [Tracked<f64>]),
}

/// Writes the states (entry b into sequence b of the chunk) into `st`.
fn upload(ctx: &GpuContext, st: &St, xs: &[Tracked<f64>]) {
    let mut data = Vec::new();
    let mut scal = Vec::new();
    for x in xs {
        data.extend(x.res.iter().map(|v| *v as f32));
        data.extend(x.mean.iter().map(|v| *v as f32));
        scal.extend([to_sentinel(x.log_scale), to_sentinel(x.log_res), 0.0, 0.0]);
    }
    ctx.queue.write_buffer(&st.data, 0, bytemuck::cast_slice(&data));
    ctx.queue.write_buffer(&st.scal, 0, bytemuck::cast_slice(&scal));
}

/// Applies one part of layer `layer` to the given states (entry b is sequence b of `cfg`) on the
/// GPU, and returns the composed results.
pub fn apply_part(
    ctx: &GpuContext,
    kernels: &Kernels,
    cfg: &Config,
    layer: usize,
    part: Part,
    states: &[Tracked<f64>],
) -> anyhow::Result<Vec<Tracked<f64>>> {
    let (mut c, b) = new_chunk(ctx, kernels, cfg, 0, states.len());
    upload(ctx, &b.x, states);
    let out = match part {
        Part::Attention => {
            c.attention(&b.x, &b.f, &b, layer);
            &b.f
        }
        Part::Norm => {
            c.normalise(&b.x, &b.f);
            &b.f
        }
        Part::Mlp => {
            c.mlp(&b.x, &b.f, &b, layer);
            &b.f
        }
        Part::Skip(fs) => {
            upload(ctx, &b.f, fs);
            c.skip(&b.x, &b.f, &b.s);
            &b.s
        }
    };
    c.flush();
    let (n, w) = (c.n, out.w);
    let data = ctx.read_back::<f32>(&out.data, (states.len() * (n + 1) * w * 4) as u64)?;
    let scal = ctx.read_back::<f32>(&out.scal, (states.len() * 16) as u64)?;
    Ok((0..states.len())
        .map(|s| {
            let rows = &data[s * (n + 1) * w..(s + 1) * (n + 1) * w];
            Tracked {
                log_scale: from_sentinel(scal[4 * s]),
                log_res: from_sentinel(scal[4 * s + 1]),
                res: ndarray::Array2::from_shape_fn((n, w), |(i, j)| f64::from(rows[i * w + j])),
                mean: ndarray::Array1::from_shape_fn(w, |j| f64::from(rows[n * w + j])),
            }
        })
        .collect())
}

/// The metrics kernel on the given states (the twin of `metrics::layer_metrics`).
pub fn metrics_of(
    ctx: &GpuContext,
    kernels: &Kernels,
    cfg: &Config,
    states: &[Tracked<f64>],
) -> anyhow::Result<Vec<LayerMetrics>> {
    let (mut c, b) = new_chunk(ctx, kernels, cfg, 0, states.len());
    upload(ctx, &b.x, states);
    c.metrics(&b.x, 0, false);
    c.flush();
    let layers = cfg.depth + 1;
    let raw = ctx.read_back::<f32>(&c.raw, (states.len() * layers * RAW * 4) as u64)?;
    Ok((0..states.len())
        .map(|s| layer_metrics_from_raw(&raw[s * layers * RAW..][..RAW], cfg.tokens, false, None))
        .collect())
}
