//! The MLP sublayer as an exact map: H = X W1 = e^g (1 h + s G), then the activation written as
//! f(h + s g) = f(h) + s D with D computed directly (never as a difference of two close numbers),
//! then W2.
//! * ReLU is positively homogeneous; D follows from a case split on the signs of h and h + s g.
//! * GELU(x) = x Phi(x) is not: with H = e^g h and delta = e^g s g,
//!   GELU(H + delta) - GELU(H) = delta [Phi(H + delta) + H mean_{[H, H+delta]} phi], the mean of
//!   the normal density over the interval by 8-point Gauss-Legendre (|delta| <= 1), or through
//!   tail-accurate differences of erfc (|delta| > 1).

use super::state::{exp_or_zero, Tracked};
use super::Real;
use crate::config::{Activation, Config, Mlp};
use ndarray::Array2;

/// 8-point Gauss-Legendre nodes and weights on [-1, 1] (positive half).
const GL_NODES: [f64; 4] =
    [0.183_434_642_495_649_8, 0.525_532_409_916_329, 0.796_666_477_413_626_7, 0.960_289_856_497_536_3];
const GL_WEIGHTS: [f64; 4] =
    [0.362_683_783_378_362, 0.313_706_645_877_887_3, 0.222_381_034_453_374_5, 0.101_228_536_290_376_3];

pub fn mlp<T: Real>(cfg: &Config, w: &(Array2<T>, Array2<T>), x: &Tracked<T>) -> Tracked<T> {
    let act = match cfg.mlp {
        Mlp::None => return x.clone(),
        Mlp::Hidden(a, _) => a,
    };
    let h = x.linear(w.0.view());
    activate(act, &h).linear(w.1.view())
}

/// The standard normal CDF.
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

/// Phi(a) - Phi(b), accurate in both tails.
fn cdf_diff(a: f64, b: f64) -> f64 {
    let r = std::f64::consts::SQRT_2;
    if a >= 0.0 && b >= 0.0 {
        0.5 * (libm::erfc(b / r) - libm::erfc(a / r))
    } else if a <= 0.0 && b <= 0.0 {
        0.5 * (libm::erfc(-a / r) - libm::erfc(-b / r))
    } else {
        normal_cdf(a) - normal_cdf(b)
    }
}

fn normal_pdf(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

/// (GELU(big + delta) - GELU(big)) / delta for delta = unit * g, returned as the factor that
/// multiplies g; `unit` may underflow to zero (then it is the derivative).
fn gelu_slope(big: f64, delta: f64) -> f64 {
    if delta.abs() <= 1.0 {
        let mut avg = 0.0;
        for k in 0..4 {
            let t = 0.5 * GL_NODES[k];
            avg += 0.5
                * GL_WEIGHTS[k]
                * (normal_pdf(big + delta * (0.5 + t)) + normal_pdf(big + delta * (0.5 - t)));
        }
        normal_cdf(big + delta) + big * avg
    } else {
        normal_cdf(big + delta) + big * cdf_diff(big + delta, big) / delta
    }
}

/// GELU of a value given as e^g * h.
fn gelu_scaled(g: f64, h: f64) -> f64 {
    h * normal_cdf(exp_or_zero(g) * h)
}

/// The elementwise activation of a tracked state.
pub fn activate<T: Real>(act: Activation, x: &Tracked<T>) -> Tracked<T> {
    let (n, d) = (x.tokens(), x.width());
    let s = exp_or_zero(x.log_res);
    let g = x.log_scale;
    let hm: Vec<f64> = x.mean.iter().map(|v| v.f()).collect();
    let mut y = Array2::<T>::zeros((n, d));
    let mean = match act {
        Activation::Relu => {
            for i in 0..n {
                for j in 0..d {
                    let (h, r) = (hm[j], x.res[[i, j]].f());
                    let delta = if s == 0.0 {
                        // h + s r has the sign of h unless h is exactly zero.
                        if h > 0.0 {
                            r
                        } else if h < 0.0 {
                            0.0
                        } else {
                            r.max(0.0)
                        }
                    } else {
                        let z = h + s * r;
                        match (h > 0.0, z > 0.0) {
                            (true, true) => r,
                            (false, false) => 0.0,
                            (true, false) => -h / s,
                            (false, true) => h / s + r,
                        }
                    };
                    y[[i, j]] = T::c(delta);
                }
            }
            hm.iter().map(|&h| T::c(h.max(0.0))).collect()
        }
        Activation::Gelu => {
            let unit = exp_or_zero(g + x.log_res);
            let big: Vec<f64> = hm.iter().map(|&h| exp_or_zero(g) * h).collect();
            for i in 0..n {
                for j in 0..d {
                    let r = x.res[[i, j]].f();
                    y[[i, j]] = T::c(r * gelu_slope(big[j], unit * r));
                }
            }
            hm.iter().map(|&h| T::c(gelu_scaled(g, h))).collect()
        }
    };
    Tracked::compose(g, vec![(0.0, mean)], x.log_res, y)
}
