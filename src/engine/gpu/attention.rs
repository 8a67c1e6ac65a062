//! Masked attention on the tracked state (shaders/attention.wgsl; the CPU twin is
//! `model::attention`): per head the value, query and key projections, the saturated-softmax
//! check, the streaming `attend`, and the dense matrix of the layers whose spectrum is asked for.

use super::check::FaultPart;
use super::chunk::{u, Bufs, Chunk, St};
use crate::config::{Attention, Mask, Weights};
use crate::rng::{Purpose, Stream};

/// The uniform block of shaders/attention.wgsl (`Params`), shared by its five entry points.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct AttentionParams {
    pub(super) n: u32,
    pub(super) r: u32,
    pub(super) dv: u32,
    pub(super) batch: u32,
    /// A [`MaskCode`].
    pub(super) mask: u32,
    pub(super) window: u32,
    /// An [`AttentionCode`].
    pub(super) kind: u32,
    /// 1: remove the outlier (`--remove-outlier`).
    pub(super) remove: u32,
    pub(super) head: u32,
    pub(super) heads: u32,
    pub(super) ps: u32,
    pub(super) tau: f32,
    pub(super) key0: u32,
    pub(super) key1: u32,
    pub(super) stream: u32,
    pub(super) seq_base: u32,
    pub(super) shared_seq: u32,
    /// 1: every row of A is the same (full mask, softmax or uniform).
    pub(super) rowconst: u32,
    pub(super) _p0: u32,
    pub(super) _p1: u32,
}

/// Which keys a query sees (the kernel's `mask`); the window width goes in `window`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum MaskCode {
    Full = 0,
    Causal = 1,
    Window = 2,
    CausalWindow = 3,
}

impl MaskCode {
    /// The mask and its window width (0 without a window).
    pub(super) fn of(mask: Mask) -> (MaskCode, usize) {
        match mask {
            Mask::Full => (MaskCode::Full, 0),
            Mask::Causal => (MaskCode::Causal, 0),
            Mask::Window(w) => (MaskCode::Window, w),
            Mask::CausalWindow(w) => (MaskCode::CausalWindow, w),
        }
    }
}

/// How the attention matrix is made (the kernel's `kind`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum AttentionCode {
    Softmax = 0,
    Markov = 1,
    Uniform = 2,
    Identity = 3,
}

impl From<Attention> for AttentionCode {
    fn from(attention: Attention) -> AttentionCode {
        match attention {
            Attention::Softmax => AttentionCode::Softmax,
            Attention::Markov => AttentionCode::Markov,
            Attention::Uniform => AttentionCode::Uniform,
            Attention::Identity => AttentionCode::Identity,
        }
    }
}

impl Chunk<'_> {
    /// out = the attention sublayer of x (heads concatenated, then the output projection).
    pub(super) fn attention(&mut self, x: &St, out: &St, b: &Bufs, layer: usize) {
        self.part = Some(FaultPart::Attention);
        let cfg = self.cfg;
        let (d, r, dv, heads, n) = (cfg.width, cfg.head_rank(), cfg.value_dim(), cfg.heads, self.n);
        let softmax = cfg.attention == Attention::Softmax;
        let (mask, window) = MaskCode::of(cfg.mask);
        let kind = AttentionCode::from(cfg.attention);
        let rowconst =
            cfg.mask == Mask::Full && matches!(cfg.attention, Attention::Softmax | Attention::Uniform);
        let li = if cfg.share_layers { 0 } else { layer };
        // The shape of every head's kernels; the fields an entry point does not read stay 0.
        let shape = AttentionParams {
            n: u(n),
            r: u(r),
            dv: u(dv),
            batch: u(self.batch),
            ..bytemuck::Zeroable::zeroed()
        };
        let masked = AttentionParams { mask: mask as u32, window: u(window), kind: kind as u32, ..shape };
        for h in 0..heads {
            let wv = self.weights(cfg.value, d, dv, Purpose::Value, layer, h);
            self.matmul(x, &wv, d, dv, &b.v, false);
            if softmax {
                let wq = self.weights(cfg.qk, d, r, Purpose::Query, layer, h);
                let wk = self.weights(cfg.qk, d, r, Purpose::Key, layer, h);
                self.matmul(x, &wq, d, r, &b.q, false);
                self.matmul(x, &wk, d, r, &b.k, false);
                let p = AttentionParams { tau: cfg.temperature() as f32, ..shape };
                let (abuf, hs) = (self.abuf.clone(), self.hs.clone());
                self.dispatch(
                    "attention",
                    "prep",
                    &p,
                    &[(1, &b.q), (2, &b.k), (3, &x.scal), (4, &abuf), (5, &hs)],
                    (self.batch as u32, 1, 1),
                );
                // Saturated softmax: does every row pick the same key? (Both return at once
                // outside the argmax regime.)
                let p = AttentionParams { tau: cfg.temperature() as f32, ..masked };
                self.dispatch(
                    "attention",
                    "argmax_rows",
                    &p,
                    &[(1, &b.q), (2, &b.k), (4, &abuf), (5, &hs)],
                    (n.div_ceil(64) as u32, 1, self.batch as u32),
                );
                self.dispatch(
                    "attention",
                    "onehot",
                    &masked,
                    &[(4, &abuf), (5, &hs)],
                    (self.batch as u32, 1, 1),
                );
            }
            let per_seq = cfg.per_sequence_weights;
            let seq_base = if per_seq { self.first as u32 } else { crate::rng::SHARED_SEQUENCE };
            let p = AttentionParams {
                remove: u32::from(cfg.remove_outlier),
                head: u(h),
                heads: u(heads),
                ps: u(self.ps),
                tau: cfg.temperature() as f32,
                key0: cfg.seed as u32,
                key1: (cfg.seed >> 32) as u32,
                stream: Stream::new(Purpose::Markov, li, h).0,
                seq_base,
                shared_seq: u32::from(!per_seq),
                rowconst: u32::from(rowconst),
                ..masked
            };
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
                &p,
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
    fn spectrum(&mut self, p: &AttentionParams, bufs: &[(u32, &wgpu::Buffer)], layer: usize, heads: usize) {
        let Some(amat) = self.amat.clone() else { return };
        let mut with_out: Vec<(u32, &wgpu::Buffer)> =
            bufs.iter().copied().filter(|(i, _)| matches!(i, 1..=5)).collect();
        with_out.push((10, &amat));
        let n = self.n;
        self.dispatch("attention", "dense", p, &with_out, (n.div_ceil(64) as u32, 1, self.batch as u32));
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
}
