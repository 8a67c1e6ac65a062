//! The log-domain arithmetic of attention weights: softmax with its logs, log-sum-exp kept as
//! (largest term, log1p of the rest), ln |e^t - 1| and the pivoted weights, so that corrections
//! far below the largest term, or below the float range, survive.

use ndarray::Array1;

/// The weights w_k = sign_k e^{log_d_k - phi} (phi: the largest log_d off the pivot), the pivot
/// minus the sum of the others; returns phi.
pub(super) fn log_weights(log_d: &[f64], sign_d: &[f64], pivot: usize, w: &mut [f64]) -> f64 {
    let phi = (0..log_d.len()).filter(|&k| k != pivot).map(|k| log_d[k]).fold(f64::NEG_INFINITY, f64::max);
    if phi > f64::NEG_INFINITY {
        for k in 0..log_d.len() {
            if k != pivot {
                w[k] = sign_d[k] * (log_d[k] - phi).exp();
            }
        }
        w[pivot] = -w.iter().sum::<f64>();
    }
    phi
}

/// ln |e^t - 1| without cancellation.
pub(super) fn ln_abs_expm1(t: f64) -> f64 {
    if t > 1.0 {
        t + (-(-t).exp()).ln_1p()
    } else if t < -1.0 {
        (-t.exp()).ln_1p()
    } else {
        t.exp_m1().abs().ln()
    }
}

/// p_j - 1/n for p = softmax(z) over all n keys, as expm1(z_j - ell) / n with
/// ell = log mean e^z: exact even when p is uniform to many digits.
pub(super) fn deviation_from_uniform(z: &[f64]) -> Array1<f64> {
    let n = z.len() as f64;
    let ell = if z.iter().all(|v| v.abs() <= 1.0) {
        (z.iter().map(|v| v.exp_m1()).sum::<f64>() / n).ln_1p()
    } else {
        log_sum_exp(z) - n.ln()
    };
    z.iter().map(|v| (v - ell).exp_m1() / n).collect()
}

/// Numerically stable softmax: the probabilities and their logs, log p_j = (z_j - z_k) - corr
/// with k the largest logit, so log p_k = -corr keeps its tiny value when p is saturated.
pub(super) fn softmax(logits: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let (k, corr) = log_sum_exp_parts(logits);
    let top = logits[k];
    let log_p: Vec<f64> =
        logits.iter().enumerate().map(|(j, z)| if j == k { -corr } else { (z - top) - corr }).collect();
    (log_p.iter().map(|l| l.exp()).collect(), log_p)
}

/// log sum_j e^{x_j} = x_k + corr with k the largest term and corr = log1p(sum of the others
/// relative to it): the tiny correction survives when one term dominates.
pub(super) fn log_sum_exp_parts(xs: &[f64]) -> (usize, f64) {
    let k = (0..xs.len()).max_by(|&a, &b| xs[a].total_cmp(&xs[b])).unwrap_or(0);
    let top = xs[k];
    if top == f64::NEG_INFINITY {
        return (k, 0.0);
    }
    let rest: f64 = xs.iter().enumerate().filter(|(j, _)| *j != k).map(|(_, x)| (x - top).exp()).sum();
    (k, rest.ln_1p())
}

pub(super) fn log_sum_exp(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NEG_INFINITY;
    }
    let (k, corr) = log_sum_exp_parts(xs);
    xs[k] + corr
}
