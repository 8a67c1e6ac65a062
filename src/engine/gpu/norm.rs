//! LayerNorm, RMSNorm and the sphere projection as exact maps of the tracked state
//! (shaders/norm.wgsl; the CPU twin is `model::norm`).

use super::check::FaultPart;
use super::chunk::{u, Chunk, St};
use crate::config::{Norm, NormKind};

/// The uniform block of shaders/norm.wgsl (`Params`).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct NormParams {
    pub(super) n: u32,
    pub(super) d: u32,
    pub(super) batch: u32,
    pub(super) ps: u32,
    /// A [`NormCode`].
    pub(super) kind: u32,
    pub(super) eps: f32,
    pub(super) gain: f32,
    pub(super) bias: f32,
}

/// Which normalisation the kernel applies (its `kind`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum NormCode {
    Layer = 0,
    Rms = 1,
    Sphere = 2,
}

impl From<NormKind> for NormCode {
    fn from(kind: NormKind) -> NormCode {
        match kind {
            NormKind::Layer => NormCode::Layer,
            NormKind::Rms => NormCode::Rms,
            NormKind::Sphere => NormCode::Sphere,
        }
    }
}

impl Chunk<'_> {
    /// out = the normalised x (a copy of x without a norm).
    pub(super) fn normalise(&mut self, x: &St, out: &St) {
        self.part = Some(FaultPart::Norm);
        let cfg = self.cfg;
        let kind = match cfg.norm {
            Norm::None => return self.copy(x, out),
            Norm::Pre(k) | Norm::Post(k) => k,
        };
        let p = NormParams {
            n: u(self.n),
            d: u(x.w),
            batch: u(self.batch),
            ps: u(self.ps),
            kind: NormCode::from(kind) as u32,
            eps: cfg.norm_eps as f32,
            gain: cfg.norm_gain as f32,
            bias: cfg.norm_bias as f32,
        };
        let pre = self.pre.clone();
        self.dispatch(
            "norm",
            "normalise",
            &p,
            &[(1, &x.data), (2, &x.scal), (3, &out.data), (4, &pre)],
            (self.batch as u32, 1, 1),
        );
        self.compose(out, 1, out.w);
        self.check(out, None);
    }
}
