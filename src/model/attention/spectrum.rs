//! The spectrum of an attention matrix, [sigma_1(A), sigma_2(A), sigma_1(A - 11^T/n)], matrix-free
//! by Lanczos: the CPU engine forms A only when a layer's spectrum is requested, and the GPU engine
//! reads its dense A back to the same function.

use crate::linalg::lanczos_top;
use ndarray::Array2;

/// [sigma_1(A), sigma_2(A), sigma_1(A - 11^T/n)] by Lanczos on A^T A (matrix-free products).
pub fn attention_spectrum(a: &Array2<f64>) -> [f64; 3] {
    let n = a.nrows();
    // A^T in row-major order: ndarray's product with a transposed view is an order slower.
    let at = a.t().as_standard_layout().into_owned();
    let at = &at;
    let start: Vec<f64> = (0..n).map(|i| 1.0 + 0.5 * ((i as f64) * 0.7548776662).fract()).collect();
    let steps = n.min(300);
    let gram = |centre: bool| {
        move |v: &[f64], out: &mut [f64]| {
            let v = ndarray::ArrayView1::from(v);
            let mut av = a.dot(&v);
            if centre {
                // (A - 11^T/n) v = A v - 1 (sum v) / n
                av -= v.sum() / n as f64;
            }
            if centre {
                // (A - 11^T/n)^T w = A^T w - 1 (sum w) / n
                let s = av.sum() / n as f64;
                let mut r = at.dot(&av);
                r -= s;
                out.copy_from_slice(r.as_slice().unwrap());
            } else {
                out.copy_from_slice(at.dot(&av).as_slice().unwrap());
            }
        }
    };
    let top = lanczos_top(n, 2, &start, 1e-12, steps, gram(false));
    let centred = lanczos_top(n, 1, &start, 1e-12, steps, gram(true));
    [top[0].max(0.0).sqrt(), top[1].max(0.0).sqrt(), centred[0].max(0.0).sqrt()]
}
