//! The MLP sublayer: its two projections around the activation, which shaders/activation.wgsl
//! applies as an exact map of the tracked state (the CPU twin is `model::mlp`).

use super::check::FaultPart;
use super::chunk::{groups_1d, u, Bufs, Chunk, St};
use crate::config::{Activation, Mlp};
use crate::rng::Purpose;

/// The uniform block of shaders/activation.wgsl (`Params`).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct ActivationParams {
    pub(super) n: u32,
    pub(super) w: u32,
    pub(super) batch: u32,
    pub(super) ps: u32,
    /// An [`ActivationCode`].
    pub(super) kind: u32,
    pub(super) _p0: u32,
    pub(super) _p1: u32,
    pub(super) _p2: u32,
}

/// Which activation the kernel applies (its `kind`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum ActivationCode {
    Relu = 0,
    Gelu = 1,
}

impl From<Activation> for ActivationCode {
    fn from(act: Activation) -> ActivationCode {
        match act {
            Activation::Relu => ActivationCode::Relu,
            Activation::Gelu => ActivationCode::Gelu,
        }
    }
}

impl Chunk<'_> {
    /// out = the MLP of x (a copy of x without an MLP).
    pub(super) fn mlp(&mut self, x: &St, out: &St, b: &Bufs, layer: usize) {
        self.part = Some(FaultPart::Mlp);
        let cfg = self.cfg;
        let act = match cfg.mlp {
            Mlp::None => return self.copy(x, out),
            Mlp::Hidden(a, _) => a,
        };
        let (d, hidden) = (cfg.width, cfg.mlp_hidden());
        let w1 = self.weights(cfg.mlp_weights, d, hidden, Purpose::MlpIn, layer, 0);
        let w2 = self.weights(cfg.mlp_weights, hidden, d, Purpose::MlpOut, layer, 0);
        self.linear(x, &w1, &b.h1);
        let p = ActivationParams {
            n: u(self.n),
            w: u(hidden),
            batch: u(self.batch),
            ps: u(self.ps),
            kind: ActivationCode::from(act) as u32,
            _p0: 0,
            _p1: 0,
            _p2: 0,
        };
        let (gx, gy) = groups_1d((self.n + 1) * hidden);
        let pre = self.pre.clone();
        self.dispatch(
            "activation",
            "activate",
            &p,
            &[(1, &b.h1.data), (2, &b.h1.scal), (3, &b.h2.data), (4, &pre)],
            (gx, gy, self.batch as u32),
        );
        self.compose(&b.h2, 1, hidden);
        self.linear(&b.h2, &w2, out);
        self.check(out, None);
    }
}
