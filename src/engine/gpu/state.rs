//! The tracked state's own kernels (shaders/state.wgsl): `compose` turns the "pre" form a kernel
//! wrote into a tracked state, and `skip` forms a x + b f with the log scales combined exactly.

use super::check::FaultPart;
use super::chunk::{groups_1d, u, Chunk, St};

/// The uniform block of `compose` (shaders/state.wgsl `Params`).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct ComposeParams {
    pub(super) n: u32,
    pub(super) w: u32,
    pub(super) batch: u32,
    pub(super) ps: u32,
    pub(super) blocks: u32,
    pub(super) block_w: u32,
    pub(super) _p0: u32,
    pub(super) _p1: u32,
}

/// The uniform block of `skip` (shaders/state.wgsl `SkipParams`).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct SkipParams {
    pub(super) n: u32,
    pub(super) w: u32,
    pub(super) batch: u32,
    pub(super) ps: u32,
    pub(super) a: f32,
    pub(super) b: f32,
    pub(super) _p0: u32,
    pub(super) _p1: u32,
}

impl Chunk<'_> {
    /// Turns the pre-form rows in `st` (scales in `pre`) into a state.
    pub(super) fn compose(&mut self, st: &St, blocks: usize, block_w: usize) {
        let p = ComposeParams {
            n: u(self.n),
            w: u(st.w),
            batch: u(self.batch),
            ps: u(self.ps),
            blocks: u(blocks),
            block_w: u(block_w),
            _p0: 0,
            _p1: 0,
        };
        let (pre, colbuf) = (self.pre.clone(), self.colbuf.clone());
        // Before compose folds a NaN or an infinity into a valid-looking state.
        let code = super::check::fault_code(self.layer, self.part);
        self.check_logs(st, &pre, (self.ps, 2 + blocks), &pre, code, 0);
        self.dispatch(
            "state",
            "compose",
            &p,
            &[(1, &st.data), (2, &pre), (3, &st.scal), (4, &colbuf)],
            (self.batch as u32, 1, 1),
        );
    }

    /// out = a x + b f (or f itself for no skip).
    pub(super) fn skip(&mut self, x: &St, f: &St, out: &St) {
        self.part = Some(FaultPart::Skip);
        let (a, b) = self.cfg.skip.coefficients();
        if (a, b) == (0.0, 1.0) {
            return self.copy(f, out);
        }
        let p = SkipParams {
            n: u(self.n),
            w: u(x.w),
            batch: u(self.batch),
            ps: u(self.ps),
            a: a as f32,
            b: b as f32,
            _p0: 0,
            _p1: 0,
        };
        let (gx, gy) = groups_1d((self.n + 1) * x.w);
        let pre = self.pre.clone();
        self.dispatch(
            "state",
            "skip",
            &p,
            &[(1, &x.data), (2, &x.scal), (3, &f.data), (4, &f.scal), (5, &out.data), (6, &pre)],
            (gx, gy, self.batch as u32),
        );
        self.compose(out, 1, out.w);
        self.check(out, None);
    }
}
