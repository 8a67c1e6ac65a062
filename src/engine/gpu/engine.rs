//! The GPU engine: the tracked-precision model of `model` in f32 WGSL kernels. Every sequence of
//! a chunk lives on the device as n + 1 rows (R, then the mean m) plus its log scales (g, l);
//! weights and inputs are drawn on the device from the counter-based generator; per-layer,
//! per-sequence metric ingredients are the only data read back, once per chunk. Each sequence's
//! work is the same whatever the chunk, so results do not depend on the chunk size.

use super::profile::{KernelTimes, Profiler};
use super::GpuContext;
use crate::config::{Activation, Attention, Config, Input, Mask, Mlp, Norm, NormKind, Weights};
use crate::engine::SequenceFault;
use crate::metrics::{LayerMetrics, RawAttention, RawMetrics};
use crate::model::state::Tracked;
use crate::model::{weight_matrix, weight_sequence};
use crate::rng::{GaussianBlock, Purpose, Stream};
use std::collections::HashMap;

/// Values read back per sequence and layer (see shaders/metrics.wgsl).
const RAW: usize = 16;
/// Smallest sigma_2 / sigma_1 the GPU engine reports: power iteration in f32 resolves
/// lambda_2 to about eps_f32 lambda_1, i.e. three digits of sigma_2 / sigma_1 at 1e-2.
pub const GPU_SIGMA_RATIO_FLOOR: f64 = 1e-2;
/// Lanczos steps of the metrics kernel (KMAX in shaders/metrics.wgsl).
const LANCZOS_STEPS: usize = 32;

/// The compiled kernels.
pub struct Kernels {
    pipelines: HashMap<(&'static str, &'static str), wgpu::ComputePipeline>,
}

impl Kernels {
    pub fn new(ctx: &GpuContext) -> anyhow::Result<Self> {
        let mut pipelines = HashMap::new();
        for shader in super::SHADERS {
            for entry in shader.entries {
                pipelines.insert((shader.name, *entry), ctx.pipeline_entry(shader.name, entry)?);
            }
        }
        Ok(Kernels { pipelines })
    }
}

/// A uniform block built field by field (u32 and f32, in the WGSL struct's order).
#[derive(Clone, Default)]
struct P(Vec<u32>);
impl P {
    fn u(mut self, v: usize) -> Self {
        self.0.push(u32::try_from(v).expect("kernel parameter fits u32"));
        self
    }
    fn f(mut self, v: f64) -> Self {
        self.0.push((v as f32).to_bits());
        self
    }
    fn bytes(mut self) -> Vec<u8> {
        // At least the largest Params struct of any kernel (a larger binding is allowed).
        while self.0.len() % 4 != 0 || self.0.len() < 32 {
            self.0.push(0);
        }
        bytemuck::cast_slice(&self.0).to_vec()
    }
}

/// A tracked state on the device: n + 1 rows of `w` floats per sequence, and (g, l, -, -).
struct St {
    data: wgpu::Buffer,
    scal: wgpu::Buffer,
    w: usize,
}

/// One chunk of sequences being simulated.
struct Chunk<'a> {
    ctx: &'a GpuContext,
    k: &'a Kernels,
    cfg: &'a Config,
    enc: Option<wgpu::CommandEncoder>,
    batch: usize,
    first: usize,
    n: usize,
    ps: usize,
    pre: wgpu::Buffer,
    colbuf: wgpu::Buffer,
    abuf: wgpu::Buffer,
    hs: wgpu::Buffer,
    ent: wgpu::Buffer,
    cmat: wgpu::Buffer,
    vecs: wgpu::Buffer,
    cparts: wgpu::Buffer,
    raw: wgpu::Buffer,
    /// Per sequence: the code of the first layer part whose output is not a valid state (0: none).
    faults: wgpu::Buffer,
    /// The layer being applied (1-based) and the part (PART_*), for the fault codes.
    layer: usize,
    part: usize,
    /// Test hook [`CUT_HOOK`]: layer + 1 whose metrics canary reports a cut (0: none).
    cut_hook: usize,
    tiles: usize,
    /// The dense attention matrices of one head (layers with a spectrum only).
    amat: Option<wgpu::Buffer>,
    /// Per layer (after layer k at index k) and sequence: the spectrum summed over heads.
    spectra: Spectra,
    error: Option<anyhow::Error>,
    /// Per-kernel timestamps (`--profile`).
    profiler: Option<&'a mut Profiler>,
}

fn storage(ctx: &GpuContext, label: &str, floats: usize) -> wgpu::Buffer {
    ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: (floats.max(4) * 4) as u64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

/// Workgroups for `count` invocations of a 64-wide kernel that folds y into x (65535 max each).
fn groups_1d(count: usize) -> (u32, u32) {
    let g = count.div_ceil(64);
    let x = g.min(65535);
    (x as u32, g.div_ceil(65535).max(1) as u32)
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

impl<'a> Chunk<'a> {
    fn encoder(&mut self) -> &mut wgpu::CommandEncoder {
        if self.enc.is_none() {
            self.enc = Some(self.ctx.device.create_command_encoder(&Default::default()));
        }
        self.enc.as_mut().unwrap()
    }

    fn flush(&mut self) {
        if let Some(mut enc) = self.enc.take() {
            if let Some(p) = &self.profiler {
                p.resolve(&mut enc);
            }
            self.ctx.queue.submit([enc.finish()]);
            if let Some(p) = self.profiler.as_deref_mut() {
                if let Err(e) = p.collect(self.ctx) {
                    self.error.get_or_insert(e.context("reading the profile's timestamps"));
                }
            }
        }
    }

    fn dispatch(
        &mut self,
        family: &'static str,
        entry: &'static str,
        params: P,
        bufs: &[(u32, &wgpu::Buffer)],
        grid: (u32, u32, u32),
    ) {
        let pipeline = &self.k.pipelines[&(family, entry)];
        let uniform = self.ctx.buffer_with(entry, &params.bytes(), wgpu::BufferUsages::UNIFORM);
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() }];
        entries.extend(
            bufs.iter()
                .map(|(b, buf)| wgpu::BindGroupEntry { binding: *b, resource: buf.as_entire_binding() }),
        );
        let bind = self.ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(entry),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        if self.profiler.as_ref().is_some_and(|p| p.full()) {
            self.flush();
        }
        self.encoder();
        let enc = self.enc.as_mut().unwrap();
        let timestamp_writes = self.profiler.as_deref_mut().map(|p| p.pass((family, entry)));
        let mut pass =
            enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(entry), timestamp_writes });
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &bind, &[]);
        pass.dispatch_workgroups(grid.0, grid.1, grid.2);
    }

    fn state(&self, label: &str, w: usize) -> St {
        St {
            data: storage(self.ctx, label, self.batch * (self.n + 1) * w),
            scal: storage(self.ctx, label, self.batch * 4),
            w,
        }
    }

    fn copy(&mut self, from: &St, to: &St) {
        assert_eq!(from.w, to.w);
        let size = (self.batch * (self.n + 1) * from.w * 4) as u64;
        let scal = (self.batch * 4 * 4) as u64;
        let enc = self.encoder();
        enc.copy_buffer_to_buffer(&from.data, 0, &to.data, 0, size);
        enc.copy_buffer_to_buffer(&from.scal, 0, &to.scal, 0, scal);
    }

    /// Flags the sequences whose state `st` (the output of the part being applied) is not valid;
    /// `before` (the part's input) also lets attention flag a residual that fell off the log
    /// scale's range. Each part calls it on its output (not the copies a plain part makes).
    fn check(&mut self, st: &St, before: Option<&St>) {
        let code = 8 * self.layer + self.part;
        let underflow = match before {
            Some(_) if self.cfg.attention == Attention::Softmax => 8 * self.layer + ATTENTION_UNDERFLOW,
            _ => 0,
        };
        let before = before.unwrap_or(st).scal.clone();
        self.check_logs(st, &st.scal.clone(), (4, 2), &before, code, underflow);
    }

    /// The check kernel on st's rows with the log scales `logs` ((stride, count) per sequence).
    fn check_logs(
        &mut self,
        st: &St,
        logs: &wgpu::Buffer,
        (stride, count): (usize, usize),
        before: &wgpu::Buffer,
        code: usize,
        underflow: usize,
    ) {
        let p = P::default().u(self.n).u(st.w).u(code).u(underflow).u(stride).u(count);
        let faults = self.faults.clone();
        self.dispatch(
            "check",
            "check",
            p,
            &[(1, &st.data), (2, logs), (3, before), (4, &faults)],
            (self.batch as u32, 1, 1),
        );
    }

    /// Turns the pre-form rows in `st` (scales in `pre`) into a state.
    fn compose(&mut self, st: &St, blocks: usize, block_w: usize) {
        let p = P::default().u(self.n).u(st.w).u(self.batch).u(self.ps).u(blocks).u(block_w);
        let (pre, colbuf) = (self.pre.clone(), self.colbuf.clone());
        // Before compose folds a NaN or an infinity into a valid-looking state.
        self.check_logs(st, &pre, (self.ps, 2 + blocks), &pre, 8 * self.layer + self.part, 0);
        self.dispatch(
            "state",
            "compose",
            p,
            &[(1, &st.data), (2, &pre), (3, &st.scal), (4, &colbuf)],
            (self.batch as u32, 1, 1),
        );
    }

    /// A weight matrix (rows x cols) per weight-sequence of the chunk, drawn on the device.
    fn weights(
        &mut self,
        family: Weights,
        rows: usize,
        cols: usize,
        purpose: Purpose,
        layer: usize,
        head: usize,
    ) -> wgpu::Buffer {
        let cfg = self.cfg;
        let li = if cfg.share_layers { 0 } else { layer };
        let stream = Stream::new(purpose, li, head);
        let per_seq = cfg.per_sequence_weights;
        let count = if per_seq { self.batch } else { 1 };
        if family == Weights::Orthogonal {
            // Orthonormalisation is a sequential O(d^3) step: done once on the host, as the CPU
            // engine does it, and uploaded.
            let mut data = Vec::with_capacity(count * rows * cols);
            for b in 0..count {
                let seq = weight_sequence(cfg, self.first + b);
                let m = weight_matrix(family, rows, cols, GaussianBlock::new(cfg.seed, stream, seq));
                data.extend(m.iter().map(|v| *v as f32));
            }
            return self.ctx.buffer_with(
                "orthogonal weights",
                bytemuck::cast_slice(&data),
                wgpu::BufferUsages::STORAGE,
            );
        }
        let buf = storage(self.ctx, "weights", count * rows * cols);
        let (mode, scale) = match family {
            Weights::Gaussian(std) => (0, std.unwrap_or(1.0 / (rows as f64).sqrt())),
            Weights::Identity => (1, 1.0),
            Weights::ScaledIdentity(c) => (1, c),
            Weights::Orthogonal | Weights::None => unreachable!("handled above / never drawn"),
        };
        let seq_base = if per_seq { self.first as u32 } else { crate::rng::SHARED_SEQUENCE };
        let p = P::default()
            .u(cfg.seed as u32 as usize)
            .u((cfg.seed >> 32) as usize)
            .u(stream.0 as usize)
            .u(seq_base as usize)
            .u(usize::from(!per_seq))
            .u(rows)
            .u(cols)
            .u(count)
            .u(mode)
            .f(scale)
            .u(0);
        let (gx, gy) = groups_1d(rows * cols);
        self.dispatch("generate", "weights", p, &[(1, &buf)], (gx, gy, count as u32));
        buf
    }

    /// Y = X W over all n + 1 rows of the state X (inner = X's width).
    fn matmul(
        &mut self,
        x: &St,
        w: &wgpu::Buffer,
        inner: usize,
        cols: usize,
        y: &wgpu::Buffer,
        set_pre: bool,
    ) {
        let rows = self.n + 1;
        let w_bs = if self.cfg.per_sequence_weights { inner * cols } else { 0 };
        let p = P::default()
            .u(rows)
            .u(inner)
            .u(cols)
            .u(self.batch)
            .u(0)
            .u(rows * x.w)
            .u(x.w)
            .u(w_bs)
            .u(0)
            .u(rows * cols)
            .u(cols)
            .u(self.ps)
            .u(usize::from(set_pre));
        let pre = self.pre.clone();
        self.dispatch(
            "linear",
            "matmul",
            p,
            &[(1, &x.data), (2, w), (3, y), (4, &x.scal), (5, &pre)],
            (cols.div_ceil(16) as u32, rows.div_ceil(16) as u32, self.batch as u32),
        );
    }

    fn linear(&mut self, x: &St, w: &wgpu::Buffer, out: &St) {
        self.matmul(x, w, x.w, out.w, &out.data, true);
        self.compose(out, 1, out.w);
    }

    fn inputs(&mut self, x: &St) {
        let cfg = self.cfg;
        let (n, d) = (self.n, cfg.width);
        if cfg.input == Input::Orthonormal {
            let mut data = Vec::with_capacity(self.batch * (n + 1) * d);
            for b in 0..self.batch {
                let m = crate::model::input_tokens(cfg, self.first + b);
                data.extend(m.iter().map(|v| *v as f32));
                data.extend(std::iter::repeat_n(0.0f32, d));
            }
            self.ctx.queue.write_buffer(&x.data, 0, bytemuck::cast_slice(&data));
            let mut pre = vec![0f32; self.batch * self.ps];
            for b in 0..self.batch {
                pre[b * self.ps + 1] = -1e30;
            }
            self.ctx.queue.write_buffer(&self.pre, 0, bytemuck::cast_slice(&pre));
        } else {
            let (family, rho) = match cfg.input {
                Input::Gaussian => (0, 0.0),
                Input::Sphere => (1, 0.0),
                Input::Shared(rho) => (2, rho),
                Input::Orthonormal => unreachable!(),
            };
            let p = P::default()
                .u(cfg.seed as u32 as usize)
                .u((cfg.seed >> 32) as usize)
                .u(Stream::new(Purpose::Input, 0, 0).0 as usize)
                .u(Stream::new(Purpose::InputShared, 0, 0).0 as usize)
                .u(self.first)
                .u(n)
                .u(d)
                .u(self.batch)
                .u(family)
                .f(rho)
                .u(self.ps);
            let pre = self.pre.clone();
            self.dispatch(
                "generate",
                "inputs",
                p,
                &[(1, &x.data), (2, &pre)],
                ((n + 1).div_ceil(64) as u32, 1, self.batch as u32),
            );
        }
        self.compose(x, 1, d);
    }

    fn normalise(&mut self, x: &St, out: &St) {
        self.part = PART_NORM;
        let cfg = self.cfg;
        let kind = match cfg.norm {
            Norm::None => return self.copy(x, out),
            Norm::Pre(k) | Norm::Post(k) => k,
        };
        let kind = match kind {
            NormKind::Layer => 0,
            NormKind::Rms => 1,
            NormKind::Sphere => 2,
        };
        let p = P::default()
            .u(self.n)
            .u(x.w)
            .u(self.batch)
            .u(self.ps)
            .u(kind)
            .f(cfg.norm_eps)
            .f(cfg.norm_gain)
            .f(cfg.norm_bias);
        let pre = self.pre.clone();
        self.dispatch(
            "norm",
            "normalise",
            p,
            &[(1, &x.data), (2, &x.scal), (3, &out.data), (4, &pre)],
            (self.batch as u32, 1, 1),
        );
        self.compose(out, 1, out.w);
        self.check(out, None);
    }

    /// out = a x + b f (or f itself for no skip).
    fn skip(&mut self, x: &St, f: &St, out: &St) {
        self.part = PART_SKIP;
        let (a, b) = self.cfg.skip.coefficients();
        if (a, b) == (0.0, 1.0) {
            return self.copy(f, out);
        }
        let p = P::default().u(self.n).u(x.w).u(self.batch).u(self.ps).f(a).f(b);
        let (gx, gy) = groups_1d((self.n + 1) * x.w);
        let pre = self.pre.clone();
        self.dispatch(
            "state",
            "skip",
            p,
            &[(1, &x.data), (2, &x.scal), (3, &f.data), (4, &f.scal), (5, &out.data), (6, &pre)],
            (gx, gy, self.batch as u32),
        );
        self.compose(out, 1, out.w);
        self.check(out, None);
    }

    fn attention(&mut self, x: &St, out: &St, b: &Bufs, layer: usize) {
        self.part = PART_ATTENTION;
        let cfg = self.cfg;
        let (d, r, dv, heads, n) = (cfg.width, cfg.head_rank(), cfg.value_dim(), cfg.heads, self.n);
        let softmax = cfg.attention == Attention::Softmax;
        let (mask, window) = match cfg.mask {
            Mask::Full => (0, 0),
            Mask::Causal => (1, 0),
            Mask::Window(w) => (2, w),
            Mask::CausalWindow(w) => (3, w),
        };
        let kind = match cfg.attention {
            Attention::Softmax => 0,
            Attention::Markov => 1,
            Attention::Uniform => 2,
            Attention::Identity => 3,
        };
        let rowconst =
            cfg.mask == Mask::Full && matches!(cfg.attention, Attention::Softmax | Attention::Uniform);
        let li = if cfg.share_layers { 0 } else { layer };
        for h in 0..heads {
            let wv = self.weights(cfg.value, d, dv, Purpose::Value, layer, h);
            self.matmul(x, &wv, d, dv, &b.v, false);
            if softmax {
                let wq = self.weights(cfg.qk, d, r, Purpose::Query, layer, h);
                let wk = self.weights(cfg.qk, d, r, Purpose::Key, layer, h);
                self.matmul(x, &wq, d, r, &b.q, false);
                self.matmul(x, &wk, d, r, &b.k, false);
                let p = P::default()
                    .u(n)
                    .u(r)
                    .u(dv)
                    .u(self.batch)
                    .u(0)
                    .u(0)
                    .u(0)
                    .u(0)
                    .u(0)
                    .u(0)
                    .u(0)
                    .f(cfg.temperature());
                let (abuf, hs) = (self.abuf.clone(), self.hs.clone());
                self.dispatch(
                    "attention",
                    "prep",
                    p,
                    &[(1, &b.q), (2, &b.k), (3, &x.scal), (4, &abuf), (5, &hs)],
                    (self.batch as u32, 1, 1),
                );
                // Saturated softmax: does every row pick the same key? (Both return at once
                // outside the argmax regime.)
                let p = P::default().u(n).u(r).u(dv).u(self.batch).u(mask).u(window).u(kind);
                let p = p.u(0).u(0).u(0).u(0).f(cfg.temperature());
                self.dispatch(
                    "attention",
                    "argmax_rows",
                    p,
                    &[(1, &b.q), (2, &b.k), (4, &abuf), (5, &hs)],
                    (n.div_ceil(64) as u32, 1, self.batch as u32),
                );
                let p = P::default().u(n).u(r).u(dv).u(self.batch).u(mask).u(window).u(kind);
                self.dispatch("attention", "onehot", p, &[(4, &abuf), (5, &hs)], (self.batch as u32, 1, 1));
            }
            let per_seq = cfg.per_sequence_weights;
            let seq_base = if per_seq { self.first as u32 } else { crate::rng::SHARED_SEQUENCE };
            let p = P::default()
                .u(n)
                .u(r)
                .u(dv)
                .u(self.batch)
                .u(mask)
                .u(window)
                .u(kind)
                .u(usize::from(cfg.remove_outlier))
                .u(h)
                .u(heads)
                .u(self.ps)
                .f(cfg.temperature())
                .u(cfg.seed as u32 as usize)
                .u((cfg.seed >> 32) as usize)
                .u(Stream::new(Purpose::Markov, li, h).0 as usize)
                .u(seq_base as usize)
                .u(usize::from(!per_seq))
                .u(usize::from(rowconst));
            let (abuf, hs, pre, ent) =
                (self.abuf.clone(), self.hs.clone(), self.pre.clone(), self.ent.clone());
            // Every kind binds every buffer: the layout is what the entry point statically uses.
            let bufs = [
                (1, &b.q),
                (2, &b.k),
                (3, &x.scal),
                (4, &abuf),
                (5, &hs),
                (6, &b.v),
                (7, &b.cat.data),
                (8, &pre),
                (9, &ent),
            ];
            self.dispatch(
                "attention",
                "attend",
                p.clone(),
                &bufs,
                (n.div_ceil(64) as u32, dv.div_ceil(16) as u32, self.batch as u32),
            );
            if cfg.spectrum_at(layer + 1) {
                self.spectrum(&p, &bufs, layer, heads);
            }
        }
        self.compose(&b.cat, heads, dv);
        if cfg.out_proj == Weights::None {
            self.copy(&b.cat, out);
        } else {
            let wo = self.weights(cfg.out_proj, heads * dv, d, Purpose::Output, layer, 0);
            self.linear(&b.cat, &wo, out);
        }
        self.check(out, Some(x));
    }

    /// Adds this head's share of [sigma_1(A), sigma_2(A), sigma_1(A - 11^T/n)] of every sequence
    /// to the spectra of `layer` + 1: the dense matrix is formed on the device and read back, the
    /// spectrum taken in f64 on the host (the CPU engine's `attention_spectrum`).
    fn spectrum(&mut self, p: &P, bufs: &[(u32, &wgpu::Buffer)], layer: usize, heads: usize) {
        let Some(amat) = self.amat.clone() else { return };
        let mut with_out: Vec<(u32, &wgpu::Buffer)> =
            bufs.iter().copied().filter(|(i, _)| matches!(i, 1..=5)).collect();
        with_out.push((10, &amat));
        let n = self.n;
        self.dispatch(
            "attention",
            "dense",
            p.clone(),
            &with_out,
            (n.div_ceil(64) as u32, 1, self.batch as u32),
        );
        self.flush();
        let a = match self.ctx.read_back::<f32>(&amat, (self.batch * n * n * 4) as u64) {
            Ok(a) => a,
            Err(e) => {
                self.error.get_or_insert(e);
                return;
            }
        };
        use rayon::prelude::*;
        let spec: Vec<[f64; 3]> = a
            .par_chunks(n * n)
            .map(|m| {
                let dense = ndarray::Array2::from_shape_fn((n, n), |(i, j)| f64::from(m[i * n + j]));
                crate::model::attention::attention_spectrum(&dense)
            })
            .collect();
        let total = &mut self.spectra[layer + 1];
        if total.is_empty() {
            total.resize(self.batch, [0.0; 3]);
        }
        for (t, s) in total.iter_mut().zip(spec) {
            for k in 0..3 {
                t[k] += s[k] / heads as f64;
            }
        }
    }

    fn mlp(&mut self, x: &St, out: &St, b: &Bufs, layer: usize) {
        self.part = PART_MLP;
        let cfg = self.cfg;
        let act = match cfg.mlp {
            Mlp::None => return self.copy(x, out),
            Mlp::Hidden(a, _) => a,
        };
        let (d, hidden) = (cfg.width, cfg.mlp_hidden());
        let w1 = self.weights(cfg.mlp_weights, d, hidden, Purpose::MlpIn, layer, 0);
        let w2 = self.weights(cfg.mlp_weights, hidden, d, Purpose::MlpOut, layer, 0);
        self.linear(x, &w1, &b.h1);
        let kind = match act {
            Activation::Relu => 0,
            Activation::Gelu => 1,
        };
        let p = P::default().u(self.n).u(hidden).u(self.batch).u(self.ps).u(kind);
        let (gx, gy) = groups_1d((self.n + 1) * hidden);
        let pre = self.pre.clone();
        self.dispatch(
            "activation",
            "activate",
            p,
            &[(1, &b.h1.data), (2, &b.h1.scal), (3, &b.h2.data), (4, &pre)],
            (gx, gy, self.batch as u32),
        );
        self.compose(&b.h2, 1, hidden);
        self.linear(&b.h2, &w2, out);
        self.check(out, None);
    }

    /// The metric ingredients of state x after `layer` into the read-back buffer.
    fn metrics(&mut self, x: &St, layer: usize, has_attn: bool) {
        let (n, d) = (self.n, x.w);
        let p = P::default().u(n).u(d).u(d).u(self.batch).u(0).u((n + 1) * d);
        let cmat = self.cmat.clone();
        self.dispatch(
            "linear",
            "gram",
            p,
            &[(1, &x.data), (3, &cmat)],
            (d.div_ceil(16) as u32, d.div_ceil(16) as u32, self.batch as u32),
        );
        let layers = self.cfg.depth + 1;
        let (batch, tiles) = (self.batch, self.tiles);
        let cut_hook = self.cut_hook;
        let p = || {
            P::default().u(n).u(d).u(batch).u(tiles).u(layer).u(layers).u(usize::from(has_attn)).u(cut_hook)
        };
        let cparts = self.cparts.clone();
        self.dispatch(
            "metrics",
            "cosines",
            p(),
            &[(1, &x.data), (2, &x.scal), (3, &cparts)],
            (self.tiles as u32, 1, self.batch as u32),
        );
        let (vecs, ent, raw) = (self.vecs.clone(), self.ent.clone(), self.raw.clone());
        self.dispatch(
            "metrics",
            "metrics",
            p(),
            &[(1, &x.data), (2, &x.scal), (3, &cparts), (4, &cmat), (5, &vecs), (6, &ent), (7, &raw)],
            (self.batch as u32, 1, 1),
        );
    }
}

/// Work buffers of a chunk.
struct Bufs {
    x: St,
    nrm: St,
    f: St,
    s: St,
    cat: St,
    h1: St,
    h2: St,
    v: wgpu::Buffer,
    q: wgpu::Buffer,
    k: wgpu::Buffer,
}

/// A chunk of sequences [first, first + batch) and its work buffers.
fn new_chunk<'a>(
    ctx: &'a GpuContext,
    k: &'a Kernels,
    cfg: &'a Config,
    first: usize,
    batch: usize,
) -> (Chunk<'a>, Bufs) {
    let n = cfg.tokens;
    let d = cfg.width;
    let (r, dv, heads) = (cfg.head_rank(), cfg.value_dim(), cfg.heads);
    let hidden = cfg.mlp_hidden();
    let widest = d.max(heads * dv).max(hidden);
    let ps = 2 + heads.max(1);
    let tiles = n.div_ceil(64);
    let c = Chunk {
        ctx,
        k,
        cfg,
        enc: None,
        batch,
        first,
        n,
        ps,
        pre: storage(ctx, "pre", batch * ps),
        colbuf: storage(ctx, "colbuf", batch * 2 * widest),
        abuf: storage(ctx, "scores", batch * 3 * n),
        hs: storage(ctx, "head scalars", batch * 8),
        ent: storage(ctx, "entropy", batch * n),
        cmat: storage(ctx, "gram", batch * d * d),
        vecs: storage(ctx, "vectors", batch * (LANCZOS_STEPS + 3) * d),
        cparts: storage(ctx, "cosines", batch * tiles),
        raw: storage(ctx, "raw", batch * (cfg.depth + 1) * RAW),
        faults: storage(ctx, "faults", batch),
        layer: 0,
        part: 0,
        cut_hook: std::env::var(CUT_HOOK)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .map_or(0, |l| l + 1),
        tiles,
        amat: (cfg.spectrum_every > 0).then(|| storage(ctx, "attention matrices", batch * n * n)),
        spectra: vec![Vec::new(); cfg.depth + 1],
        error: None,
        profiler: None,
    };
    let b = Bufs {
        x: c.state("x", d),
        nrm: c.state("norm", d),
        f: c.state("sublayer", d),
        s: c.state("sum", d),
        cat: c.state("heads", heads * dv),
        h1: c.state("hidden", hidden.max(1)),
        h2: c.state("activated", hidden.max(1)),
        v: storage(ctx, "values", batch * (n + 1) * dv),
        q: storage(ctx, "queries", batch * (n + 1) * r),
        k: storage(ctx, "keys", batch * (n + 1) * r),
    };
    (c, b)
}

/// Per layer and sequence: [sigma_1(A), sigma_2(A), sigma_1(A - 11^T/n)], mean over heads.
type Spectra = Vec<Vec<[f64; 3]>>;

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

/// The layer parts named by the fault codes of shaders/check.wgsl (code = 8 layer + part).
const FAULT_PARTS: [&str; 6] = ["", "attention", "norm", "mlp", "skip", "attention"];
const PART_ATTENTION: usize = 1;
const PART_NORM: usize = 2;
const PART_MLP: usize = 3;
const PART_SKIP: usize = 4;
const ATTENTION_UNDERFLOW: usize = 5;

/// What a fault code says: (layer, part, what).
fn decode_fault(code: u32) -> (usize, &'static str, &'static str) {
    let part = (code % 8) as usize;
    let what = if part == ATTENTION_UNDERFLOW {
        "the residual fell below the range of its f32 log scale (l = -inf from a state with a residual)"
    } else {
        "a NaN or an infinity in the state (R, m, or the log scales g, l)"
    };
    ((code / 8) as usize, FAULT_PARTS.get(part).copied().unwrap_or("unknown part"), what)
}

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
                (layer, "metrics", what)
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

fn to_sentinel(x: f64) -> f32 {
    if x == f64::NEG_INFINITY {
        -1e30
    } else {
        x as f32
    }
}

fn from_sentinel(x: f32) -> f64 {
    if x <= -1e29 {
        f64::NEG_INFINITY
    } else {
        f64::from(x)
    }
}

/// The raw metric quantities of one sequence and layer from the values the metrics kernel read
/// back (see shaders/metrics.wgsl), with the attention spectrum formed on the host where there is
/// one; `metrics::LayerMetrics::from_raw` turns them into the metrics.
pub fn raw_metrics_from_readback(raw: &[f32], has_attn: bool, spectrum: Option<[f64; 3]>) -> RawMetrics {
    let l = from_sentinel(raw[1]);
    RawMetrics {
        log_scale: from_sentinel(raw[0]),
        log_res: l,
        mean_sq: f64::from(raw[2]),
        log_norm_1inf_res: from_sentinel(raw[3]),
        log_norm_1inf_state: from_sentinel(raw[4]),
        gram_top: f64::from(raw[5]),
        res_gram_fro2: f64::from(raw[6]),
        res_mean_sq: f64::from(raw[7]),
        log_sigma2_sq: from_sentinel(raw[9]),
        log_sigma2_scale: f64::from(raw[10]),
        res_gram_top: (l > f64::NEG_INFINITY && raw[8] > 0.0).then(|| f64::from(raw[8])),
        mean_abs_cos: f64::from(raw[11]),
        attention: has_attn.then(|| RawAttention { entropy: f64::from(raw[12]), spectrum }),
    }
}

/// The metrics of one sequence and layer from the values the metrics kernel read back.
pub fn layer_metrics_from_raw(
    raw: &[f32],
    n: usize,
    has_attn: bool,
    spectrum: Option<[f64; 3]>,
) -> LayerMetrics {
    LayerMetrics::from_raw(&raw_metrics_from_readback(raw, has_attn, spectrum), n, GPU_SIGMA_RATIO_FLOOR)
}
