//! Weights and input tokens drawn on the device (shaders/generate.wgsl) from the counter-based
//! generator, so nothing large crosses the bus; orthogonal weights and orthonormal inputs are
//! made on the host, as the CPU engine makes them, and uploaded.

use super::chunk::{groups_1d, storage, u, Chunk, St};
use crate::config::{Input, Weights};
use crate::model::{weight_matrix, weight_sequence};
use crate::rng::{GaussianBlock, Purpose, Stream};

/// The uniform block of `weights` (shaders/generate.wgsl `Params`).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct WeightParams {
    pub(super) key0: u32,
    pub(super) key1: u32,
    pub(super) stream: u32,
    pub(super) seq_base: u32,
    pub(super) shared_seq: u32,
    pub(super) rows: u32,
    pub(super) cols: u32,
    pub(super) batch: u32,
    /// A [`WeightCode`].
    pub(super) mode: u32,
    pub(super) scale: f32,
    pub(super) out_offset: u32,
    pub(super) _pad: u32,
}

/// The uniform block of `inputs` (shaders/generate.wgsl `InputParams`).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct InputParams {
    pub(super) key0: u32,
    pub(super) key1: u32,
    pub(super) stream: u32,
    pub(super) shared_stream: u32,
    pub(super) seq_base: u32,
    pub(super) n: u32,
    pub(super) d: u32,
    pub(super) batch: u32,
    /// An [`InputCode`].
    pub(super) family: u32,
    pub(super) rho: f32,
    pub(super) ps: u32,
    pub(super) _pad: u32,
}

/// How `weights` fills a matrix (its `mode`), times its scale.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum WeightCode {
    Gaussian = 0,
    ScaledIdentity = 1,
}

impl WeightCode {
    /// The draw and its scale for a weight family with `rows` inputs (fan-in); orthogonal
    /// weights are made on the host and `None` is never drawn.
    pub(super) fn of(family: Weights, rows: usize) -> (WeightCode, f64) {
        match family {
            Weights::Gaussian(std) => (WeightCode::Gaussian, std.unwrap_or(1.0 / (rows as f64).sqrt())),
            Weights::Identity => (WeightCode::ScaledIdentity, 1.0),
            Weights::ScaledIdentity(c) => (WeightCode::ScaledIdentity, c),
            Weights::Orthogonal | Weights::None => unreachable!("made on the host / never drawn"),
        }
    }
}

/// Which tokens `inputs` draws (its `family`), with the token correlation rho of `Shared`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum InputCode {
    Gaussian = 0,
    Sphere = 1,
    Shared = 2,
}

impl InputCode {
    /// The draw and its rho for an input family; orthonormal inputs are made on the host.
    pub(super) fn of(input: Input) -> (InputCode, f64) {
        match input {
            Input::Gaussian => (InputCode::Gaussian, 0.0),
            Input::Sphere => (InputCode::Sphere, 0.0),
            Input::Shared(rho) => (InputCode::Shared, rho),
            Input::Orthonormal => unreachable!("made on the host"),
        }
    }
}

impl Chunk<'_> {
    /// A weight matrix (rows x cols) per weight-sequence of the chunk, drawn on the device.
    pub(super) fn weights(
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
        let (mode, scale) = WeightCode::of(family, rows);
        let seq_base = if per_seq { self.first as u32 } else { crate::rng::SHARED_SEQUENCE };
        let p = WeightParams {
            key0: cfg.seed as u32,
            key1: (cfg.seed >> 32) as u32,
            stream: stream.0,
            seq_base,
            shared_seq: u32::from(!per_seq),
            rows: u(rows),
            cols: u(cols),
            batch: u(count),
            mode: mode as u32,
            scale: scale as f32,
            out_offset: 0,
            _pad: 0,
        };
        let (gx, gy) = groups_1d(rows * cols);
        self.dispatch("generate", "weights", &p, &[(1, &buf)], (gx, gy, count as u32));
        buf
    }

    /// The input tokens of every sequence of the chunk into x, composed into a state.
    pub(super) fn inputs(&mut self, x: &St) {
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
            let (family, rho) = InputCode::of(cfg.input);
            let p = InputParams {
                key0: cfg.seed as u32,
                key1: (cfg.seed >> 32) as u32,
                stream: Stream::new(Purpose::Input, 0, 0).0,
                shared_stream: Stream::new(Purpose::InputShared, 0, 0).0,
                seq_base: u(self.first),
                n: u(n),
                d: u(d),
                batch: u(self.batch),
                family: family as u32,
                rho: rho as f32,
                ps: u(self.ps),
                _pad: 0,
            };
            let pre = self.pre.clone();
            self.dispatch(
                "generate",
                "inputs",
                &p,
                &[(1, &x.data), (2, &pre)],
                ((n + 1).div_ceil(64) as u32, 1, self.batch as u32),
            );
        }
        self.compose(x, 1, d);
    }
}
