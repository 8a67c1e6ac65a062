//! Batched products over the n + 1 rows of a state (shaders/linear.wgsl): `matmul` for the
//! weights of every projection, `gram` for the R^T R the metrics take their spectra from.

use super::chunk::{u, Chunk, St};

/// The uniform block of shaders/linear.wgsl (`Params`): offsets, batch strides (bs) and row
/// strides (rs) of X, W and Y.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct LinearParams {
    pub(super) rows: u32,
    pub(super) inner: u32,
    pub(super) cols: u32,
    pub(super) batch: u32,
    pub(super) x_off: u32,
    pub(super) x_bs: u32,
    pub(super) x_rs: u32,
    pub(super) w_bs: u32,
    pub(super) y_off: u32,
    pub(super) y_bs: u32,
    pub(super) y_rs: u32,
    pub(super) ps: u32,
    /// 1: write the pre-composition scalars of the input state for compose.
    pub(super) set_pre: u32,
    pub(super) _p0: u32,
    pub(super) _p1: u32,
    pub(super) _p2: u32,
}

impl Chunk<'_> {
    /// Y = X W over all n + 1 rows of the state X (inner = X's width).
    pub(super) fn matmul(
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
        let p = LinearParams {
            rows: u(rows),
            inner: u(inner),
            cols: u(cols),
            batch: u(self.batch),
            x_off: 0,
            x_bs: u(rows * x.w),
            x_rs: u(x.w),
            w_bs: u(w_bs),
            y_off: 0,
            y_bs: u(rows * cols),
            y_rs: u(cols),
            ps: u(self.ps),
            set_pre: u32::from(set_pre),
            _p0: 0,
            _p1: 0,
            _p2: 0,
        };
        let pre = self.pre.clone();
        self.dispatch(
            "linear",
            "matmul",
            &p,
            &[(1, &x.data), (2, w), (3, y), (4, &x.scal), (5, &pre)],
            (cols.div_ceil(16) as u32, rows.div_ceil(16) as u32, self.batch as u32),
        );
    }

    /// out = x W, composed into a state.
    pub(super) fn linear(&mut self, x: &St, w: &wgpu::Buffer, out: &St) {
        self.matmul(x, w, x.w, out.w, &out.data, true);
        self.compose(out, 1, out.w);
    }

    /// C[b] = R^T R (d x d) of the residual rows of x, into the chunk's `cmat`.
    pub(super) fn gram(&mut self, x: &St) {
        let (n, d) = (self.n, x.w);
        let p = LinearParams {
            rows: u(n),
            inner: u(d),
            cols: u(d),
            batch: u(self.batch),
            x_off: 0,
            x_bs: u((n + 1) * d),
            ..bytemuck::Zeroable::zeroed()
        };
        let cmat = self.cmat.clone();
        self.dispatch(
            "linear",
            "gram",
            &p,
            &[(1, &x.data), (3, &cmat)],
            (d.div_ceil(16) as u32, d.div_ceil(16) as u32, self.batch as u32),
        );
    }
}
