//! The metric ingredients of each sequence and layer (shaders/metrics.wgsl: the mean |cos| over
//! token pairs, the Gram matrix's leading eigenvalues by Lanczos, ...), read back once per chunk
//! as `RawMetrics`, which `metrics::LayerMetrics::from_raw` (the one formula of both engines) turns
//! into the metrics on the host.

use super::chunk::{u, Chunk, St};
use crate::metrics::{LayerMetrics, RawAttention, RawMetrics};

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
