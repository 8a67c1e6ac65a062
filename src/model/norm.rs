//! Token normalisation (LayerNorm, RMSNorm, sphere) as an exact map of the tracked state.
//!
//! For tokens y_i = c + s u_i (c: the mean token, centred over features for LayerNorm; u_i: the
//! residual rows), with s0^2 = |c|^2/D + eps and s_i^2 = s0^2 + 2 s cov_i + s^2 v_i
//! (cov_i = <c, u_i>/D, v_i = |u_i|^2/D; D = d, or 1 for the sphere), the identity
//!   N(y_i) - N(c) = s [u_i / s_i - c (2 cov_i + s v_i) / (s_i s0 (s_i + s0))]
//! gives the residual of the output directly, with the factor s exact. The global scale enters
//! only through eps (eps' = eps e^{-2g}); when eps' > 1 everything is rescaled by
//! k = eps'^{-1/2} (kept as a log) so nothing overflows.

use super::state::{exp_or_zero, Tracked};
use super::Real;
use crate::config::{Config, Norm, NormKind};
use ndarray::{Array1, Array2};

/// The normalisation the configuration asks for (identity when `--norm none`).
pub fn normalise<T: Real>(cfg: &Config, x: &Tracked<T>) -> Tracked<T> {
    let kind = match cfg.norm {
        Norm::None => return x.clone(),
        Norm::Pre(k) | Norm::Post(k) => k,
    };
    normalise_kind(kind, cfg.norm_eps, cfg.norm_gain, cfg.norm_bias, x)
}

pub fn normalise_kind<T: Real>(kind: NormKind, eps: f64, gain: f64, bias: f64, x: &Tracked<T>) -> Tracked<T> {
    let n = x.tokens();
    let d = x.width();
    let (centre, denom, eps) = match kind {
        NormKind::Layer => (true, d as f64, eps),
        NormKind::Rms => (false, d as f64, eps),
        NormKind::Sphere => (false, 1.0, 0.0),
    };
    let bias_term = (0.0, Array1::from_elem(d, T::c(bias)));
    if x.log_scale == f64::NEG_INFINITY {
        // N(0) = 0 for every kind: only the bias remains.
        return Tracked::compose(0.0, vec![bias_term], f64::NEG_INFINITY, Array2::zeros((n, d)));
    }
    // eps in the units of the state, and the rescaling k that keeps it at most one.
    let ln_eps = if eps > 0.0 { eps.ln() - 2.0 * x.log_scale } else { f64::NEG_INFINITY };
    let lk = if ln_eps > 0.0 { -0.5 * ln_eps } else { 0.0 };
    let eps_hat = exp_or_zero(ln_eps + 2.0 * lk);
    let kk = (2.0 * lk).exp();

    let feature_centre = |v: Vec<f64>| -> Vec<f64> {
        if centre {
            let mu = v.iter().sum::<f64>() / v.len() as f64;
            v.into_iter().map(|a| a - mu).collect()
        } else {
            v
        }
    };
    let c: Vec<f64> = feature_centre(x.mean.iter().map(|v| v.f()).collect());
    let s = exp_or_zero(x.log_res);
    let c2 = c.iter().map(|a| a * a).sum::<f64>() / denom;
    let s0 = (kk * c2 + eps_hat).sqrt();
    let rows: Vec<Vec<f64>> =
        x.res.rows().into_iter().map(|r| feature_centre(r.iter().map(|v| v.f()).collect())).collect();
    let v: Vec<f64> = rows.iter().map(|u| u.iter().map(|a| a * a).sum::<f64>() / denom).collect();
    let vmax = v.iter().cloned().fold(0.0, f64::max);

    if kk * s * s * vmax <= s0 * s0 && s0 > 0.0 {
        // Expansion around N(c): the residual is small next to the mean (or eps).
        let mut y = Array2::<T>::zeros((n, d));
        for (i, u) in rows.iter().enumerate() {
            let cov = c.iter().zip(u).map(|(a, b)| a * b).sum::<f64>() / denom;
            let si2 = if s > 1e-3 {
                c.iter().zip(u).map(|(a, b)| (a + s * b).powi(2)).sum::<f64>() / denom * kk + eps_hat
            } else {
                s0 * s0 + kk * (2.0 * s * cov + s * s * v[i])
            };
            let si = si2.max(0.0).sqrt();
            if si == 0.0 {
                continue;
            }
            let corr = kk * (2.0 * cov + s * v[i]) / (si * s0 * (si + s0));
            for j in 0..d {
                y[[i, j]] = T::c(gain * (u[j] / si - c[j] * corr));
            }
        }
        let mean_part = Array1::from_iter(c.iter().map(|a| T::c(gain * a / s0)));
        Tracked::compose(0.0, vec![bias_term, (lk, mean_part)], lk + x.log_res, y)
    } else {
        // Direct: the residual dominates, the output tokens differ at O(1).
        let mut y = Array2::<T>::zeros((n, d));
        for (i, u) in rows.iter().enumerate() {
            let z: Vec<f64> = c.iter().zip(u).map(|(a, b)| a + s * b).collect();
            let si = (kk * z.iter().map(|a| a * a).sum::<f64>() / denom + eps_hat).sqrt();
            if si == 0.0 {
                continue;
            }
            for j in 0..d {
                y[[i, j]] = T::c(gain * z[j] / si);
            }
        }
        Tracked::compose(0.0, vec![bias_term], lk, y)
    }
}
