//! A chunk of sequences on the device: the compiled kernels, the chunk's buffers and tracked
//! states, and the one dispatch path (a typed uniform block, the bindings, the grid) that every
//! kernel family's wrapper goes through.

use super::check::FaultPart;
use super::metrics::{LANCZOS_STEPS, RAW};
use super::profile::Profiler;
use super::run::CUT_HOOK;
use super::{GpuContext, SHADERS};
use crate::config::Config;
use std::collections::HashMap;

/// The compiled kernels.
pub struct Kernels {
    pipelines: HashMap<(&'static str, &'static str), wgpu::ComputePipeline>,
}

impl Kernels {
    pub fn new(ctx: &GpuContext) -> anyhow::Result<Self> {
        let mut pipelines = HashMap::new();
        for shader in SHADERS {
            for entry in shader.entries {
                pipelines.insert((shader.name, *entry), ctx.pipeline_entry(shader.name, entry)?);
            }
        }
        Ok(Kernels { pipelines })
    }
}

/// A tracked state on the device: n + 1 rows of `w` floats per sequence, and (g, l, -, -).
pub(super) struct St {
    pub(super) data: wgpu::Buffer,
    pub(super) scal: wgpu::Buffer,
    pub(super) w: usize,
}

/// One chunk of sequences being simulated.
pub(super) struct Chunk<'a> {
    pub(super) ctx: &'a GpuContext,
    k: &'a Kernels,
    pub(super) cfg: &'a Config,
    enc: Option<wgpu::CommandEncoder>,
    pub(super) batch: usize,
    pub(super) first: usize,
    pub(super) n: usize,
    pub(super) ps: usize,
    pub(super) pre: wgpu::Buffer,
    pub(super) colbuf: wgpu::Buffer,
    pub(super) abuf: wgpu::Buffer,
    pub(super) hs: wgpu::Buffer,
    pub(super) ent: wgpu::Buffer,
    pub(super) cmat: wgpu::Buffer,
    pub(super) vecs: wgpu::Buffer,
    pub(super) cparts: wgpu::Buffer,
    pub(super) raw: wgpu::Buffer,
    /// Per sequence: the code of the first layer part whose output is not a valid state (0: none).
    pub(super) faults: wgpu::Buffer,
    /// The layer being applied (1-based) and the part (none while the input is drawn), for the
    /// fault codes.
    pub(super) layer: usize,
    pub(super) part: Option<FaultPart>,
    /// Test hook [`CUT_HOOK`](super::run::CUT_HOOK): layer + 1 whose metrics canary reports a cut (0: none).
    pub(super) cut_hook: usize,
    pub(super) tiles: usize,
    /// The dense attention matrices of one head (layers with a spectrum only).
    pub(super) amat: Option<wgpu::Buffer>,
    /// Per layer (after layer k at index k) and sequence: the spectrum summed over heads.
    pub(super) spectra: Spectra,
    pub(super) error: Option<anyhow::Error>,
    /// Per-kernel timestamps (`--profile`).
    pub(super) profiler: Option<&'a mut Profiler>,
}

pub(super) fn storage(ctx: &GpuContext, label: &str, floats: usize) -> wgpu::Buffer {
    ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: (floats.max(4) * 4) as u64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

/// Workgroups for `count` invocations of a 64-wide kernel that folds y into x (65535 max each).
pub(super) fn groups_1d(count: usize) -> (u32, u32) {
    let g = count.div_ceil(64);
    let x = g.min(65535);
    (x as u32, g.div_ceil(65535).max(1) as u32)
}

/// A kernel parameter as the u32 of a uniform field.
pub(super) fn u(v: usize) -> u32 {
    u32::try_from(v).expect("kernel parameter fits u32")
}

impl<'a> Chunk<'a> {
    fn encoder(&mut self) -> &mut wgpu::CommandEncoder {
        if self.enc.is_none() {
            self.enc = Some(self.ctx.device.create_command_encoder(&Default::default()));
        }
        self.enc.as_mut().unwrap()
    }

    pub(super) fn flush(&mut self) {
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

    /// Records one pass of `family`'s `entry` with `params` as its uniform block (binding 0).
    pub(super) fn dispatch<P: bytemuck::Pod>(
        &mut self,
        family: &'static str,
        entry: &'static str,
        params: &P,
        bufs: &[(u32, &wgpu::Buffer)],
        grid: (u32, u32, u32),
    ) {
        let pipeline = &self.k.pipelines[&(family, entry)];
        let uniform = self.ctx.buffer_with(entry, bytemuck::bytes_of(params), wgpu::BufferUsages::UNIFORM);
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

    pub(super) fn copy(&mut self, from: &St, to: &St) {
        assert_eq!(from.w, to.w);
        let size = (self.batch * (self.n + 1) * from.w * 4) as u64;
        let scal = (self.batch * 4 * 4) as u64;
        let enc = self.encoder();
        enc.copy_buffer_to_buffer(&from.data, 0, &to.data, 0, size);
        enc.copy_buffer_to_buffer(&from.scal, 0, &to.scal, 0, scal);
    }
}

/// Work buffers of a chunk.
pub(super) struct Bufs {
    pub(super) x: St,
    pub(super) nrm: St,
    pub(super) f: St,
    pub(super) s: St,
    pub(super) cat: St,
    pub(super) h1: St,
    pub(super) h2: St,
    pub(super) v: wgpu::Buffer,
    pub(super) q: wgpu::Buffer,
    pub(super) k: wgpu::Buffer,
}

/// A chunk of sequences [first, first + batch) and its work buffers.
pub(super) fn new_chunk<'a>(
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
        part: None,
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
pub(super) type Spectra = Vec<Vec<[f64; 3]>>;
