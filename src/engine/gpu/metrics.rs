//! The metric ingredients of each sequence and layer (shaders/metrics.wgsl: the mean |cos| over
//! token pairs, the Gram matrix's leading eigenvalues by Lanczos, ...), read back once per chunk
//! and turned into `LayerMetrics` on the host with the CPU engine's formulas.

use super::chunk::{u, Chunk, St};
use crate::metrics::LayerMetrics;

/// The uniform block of shaders/metrics.wgsl (`Params`).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct MetricsParams {
    pub(super) n: u32,
    pub(super) d: u32,
    pub(super) batch: u32,
    pub(super) tiles: u32,
    pub(super) layer: u32,
    pub(super) layers: u32,
    pub(super) has_attn: u32,
    /// Test hook: layer + 1 at which the canary reports a cut (0 = never).
    pub(super) cut_hook: u32,
}

/// Values read back per sequence and layer (see shaders/metrics.wgsl).
pub(super) const RAW: usize = 16;
/// Smallest sigma_2 / sigma_1 the GPU engine reports: power iteration in f32 resolves
/// lambda_2 to about eps_f32 lambda_1, i.e. three digits of sigma_2 / sigma_1 at 1e-2.
pub const GPU_SIGMA_RATIO_FLOOR: f64 = 1e-2;
/// Lanczos steps of the metrics kernel (KMAX in shaders/metrics.wgsl).
pub(super) const LANCZOS_STEPS: usize = 32;

impl Chunk<'_> {
    /// The metric ingredients of state x after `layer` into the read-back buffer.
    pub(super) fn metrics(&mut self, x: &St, layer: usize, has_attn: bool) {
        let (n, d) = (self.n, x.w);
        self.gram(x);
        let p = MetricsParams {
            n: u(n),
            d: u(d),
            batch: u(self.batch),
            tiles: u(self.tiles),
            layer: u(layer),
            layers: u(self.cfg.depth + 1),
            has_attn: u32::from(has_attn),
            cut_hook: u(self.cut_hook),
        };
        let cparts = self.cparts.clone();
        self.dispatch(
            "metrics",
            "cosines",
            &p,
            &[(1, &x.data), (2, &x.scal), (3, &cparts)],
            (self.tiles as u32, 1, self.batch as u32),
        );
        let (cmat, vecs, ent, raw) =
            (self.cmat.clone(), self.vecs.clone(), self.ent.clone(), self.raw.clone());
        self.dispatch(
            "metrics",
            "metrics",
            &p,
            &[(1, &x.data), (2, &x.scal), (3, &cparts), (4, &cmat), (5, &vecs), (6, &ent), (7, &raw)],
            (self.batch as u32, 1, 1),
        );
    }
}

pub(super) fn to_sentinel(x: f64) -> f32 {
    if x == f64::NEG_INFINITY {
        -1e30
    } else {
        x as f32
    }
}

pub(super) fn from_sentinel(x: f32) -> f64 {
    if x <= -1e29 {
        f64::NEG_INFINITY
    } else {
        f64::from(x)
    }
}

/// The metrics of one sequence and layer from the values the metrics kernel read back, with the
/// formulas of `metrics::layer_metrics` (in f64 on the host).
pub fn layer_metrics_from_raw(raw: &[f32], n: usize, has_attn: bool) -> LayerMetrics {
    const LN10: f64 = std::f64::consts::LN_10;
    let nf = n as f64;
    let g = from_sentinel(raw[0]);
    let l = from_sentinel(raw[1]);
    let m2 = f64::from(raw[2]);
    let s = if l == f64::NEG_INFINITY { 0.0 } else { l.exp() };
    let mut v: [Option<f64>; 16] = [None; 16];
    let exp0 = |x: f64| if x == f64::NEG_INFINITY { 0.0 } else { x.exp() };
    let log_res_fro = if l == f64::NEG_INFINITY { f64::NEG_INFINITY } else { l - 0.5 * (m2 + s * s).ln() };
    v[0] = Some(exp0(log_res_fro));
    v[1] = Some(log_res_fro / LN10);
    let log_dong = if l == f64::NEG_INFINITY {
        f64::NEG_INFINITY
    } else {
        l + from_sentinel(raw[3]) - from_sentinel(raw[4])
    };
    v[2] = Some(exp0(log_dong));
    v[3] = Some(log_dong / LN10);
    let log_mu = if g == f64::NEG_INFINITY || l == f64::NEG_INFINITY {
        f64::NEG_INFINITY
    } else {
        g + l + 0.5 * nf.ln()
    };
    v[4] = Some(exp0(log_mu));
    v[5] = Some(log_mu / LN10);
    let lam_g = f64::from(raw[5]);
    let fro2 = nf * (m2 + s * s);
    if lam_g > 0.0 {
        v[6] = Some(fro2 / lam_g);
        let g_fro2 = nf * nf * m2 * m2 + 2.0 * nf * s * s * f64::from(raw[7]) + s.powi(4) * f64::from(raw[6]);
        v[7] = Some(g_fro2 / (lam_g * lam_g));
        let lsig2 = from_sentinel(raw[9]);
        let lscale = f64::from(raw[10]);
        let log_ratio = 0.5 * (lsig2 - lam_g.ln());
        let resolved = lsig2 == f64::NEG_INFINITY || 0.5 * (lsig2 - lscale) >= GPU_SIGMA_RATIO_FLOOR.ln();
        v[9] = Some(if resolved { exp0(log_ratio) } else { f64::NAN });
        v[10] = Some(if resolved { log_ratio / LN10 } else { f64::NAN });
    }
    if l > f64::NEG_INFINITY && raw[8] > 0.0 {
        v[8] = Some(nf / f64::from(raw[8]));
    }
    v[11] = Some(f64::from(raw[11]));
    if has_attn {
        v[15] = Some(f64::from(raw[12]));
    }
    LayerMetrics { values: v }
}
