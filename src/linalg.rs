//! Small dense linear algebra in f64 that the metrics and the weight generation need: symmetric
//! eigenvalues (cyclic Jacobi), the top eigenvalues of a matrix-free symmetric operator (Lanczos
//! with full reorthogonalisation), and Gram-Schmidt orthonormalisation.

/// All eigenvalues of the symmetric `n x n` matrix `a` (row-major), largest first, by cyclic
/// Jacobi rotations (accurate to a few ulps of the largest eigenvalue).
pub fn symmetric_eigenvalues(mut a: Vec<f64>, n: usize) -> Vec<f64> {
    assert_eq!(a.len(), n * n);
    for _sweep in 0..64 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum();
        let diag: f64 = (0..n).map(|i| a[i * n + i] * a[i * n + i]).sum();
        if off <= 1e-32 * diag || off == 0.0 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let akp = a[k * n + p];
                    let akq = a[k * n + q];
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let apk = a[p * n + k];
                    let aqk = a[q * n + k];
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
            }
        }
    }
    let mut ev: Vec<f64> = (0..n).map(|i| a[i * n + i]).collect();
    ev.sort_by(|x, y| y.total_cmp(x));
    ev
}

/// The `k` largest eigenvalues (largest first) of a symmetric operator of dimension `dim`, given
/// by `apply(v, out)`, by Lanczos with full reorthogonalisation from the start vector `start`.
/// Runs until the top `k` Ritz values are stable to `rel_tol` or the Krylov space is the whole
/// space (then the result is exact up to rounding).
pub fn lanczos_top(
    dim: usize,
    k: usize,
    start: &[f64],
    rel_tol: f64,
    max_steps: usize,
    mut apply: impl FnMut(&[f64], &mut [f64]),
) -> Vec<f64> {
    let mut basis: Vec<Vec<f64>> = Vec::new();
    let mut alpha: Vec<f64> = Vec::new();
    let mut beta: Vec<f64> = Vec::new();
    let mut v = start.to_vec();
    let norm = dot(&v, &v).sqrt();
    if norm == 0.0 {
        v = vec![1.0 / (dim as f64).sqrt(); dim];
    } else {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    let mut w = vec![0.0; dim];
    let mut previous: Vec<f64> = Vec::new();
    let steps = max_steps.min(dim).max(1);
    for step in 0..steps {
        apply(&v, &mut w);
        let a = dot(&w, &v);
        basis.push(v.clone());
        alpha.push(a);
        // Full reorthogonalisation (twice is enough).
        for _ in 0..2 {
            for b in &basis {
                let c = dot(&w, b);
                w.iter_mut().zip(b).for_each(|(x, y)| *x -= c * y);
            }
        }
        let b = dot(&w, &w).sqrt();
        let ritz = tridiagonal_eigenvalues(&alpha, &beta);
        let scale = ritz.first().map_or(0.0, |x| x.abs());
        let converged = ritz.len() >= k
            && previous.len() >= k
            && (0..k).all(|i| (ritz[i] - previous[i]).abs() <= rel_tol * scale);
        previous = ritz;
        if converged || b <= 1e-14 * scale.max(f64::MIN_POSITIVE) || step + 1 == steps {
            break;
        }
        beta.push(b);
        v.iter_mut().zip(&w).for_each(|(x, y)| *x = y / b);
    }
    previous.resize(k.max(previous.len()), 0.0);
    previous.truncate(k);
    previous
}

fn tridiagonal_eigenvalues(alpha: &[f64], beta: &[f64]) -> Vec<f64> {
    let m = alpha.len();
    let mut t = vec![0.0; m * m];
    for i in 0..m {
        t[i * m + i] = alpha[i];
        if i + 1 < m {
            t[i * m + i + 1] = beta[i];
            t[(i + 1) * m + i] = beta[i];
        }
    }
    symmetric_eigenvalues(t, m)
}

pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Orthonormalises the rows of the row-major `rows x cols` matrix in place (rows <= cols) by
/// modified Gram-Schmidt applied twice, then fixes signs so that the result is the Q factor of a
/// QR decomposition with positive diagonal (Haar distributed when the input is gaussian).
pub fn orthonormalize_rows(m: &mut [f64], rows: usize, cols: usize) {
    assert!(rows <= cols && m.len() == rows * cols);
    for i in 0..rows {
        let first_norm = dot(&m[i * cols..(i + 1) * cols], &m[i * cols..(i + 1) * cols]).sqrt();
        for _ in 0..2 {
            for j in 0..i {
                let (head, tail) = m.split_at_mut(i * cols);
                let prev = &head[j * cols..(j + 1) * cols];
                let row = &mut tail[..cols];
                let c = dot(row, prev);
                row.iter_mut().zip(prev).for_each(|(x, y)| *x -= c * y);
            }
        }
        let row = &mut m[i * cols..(i + 1) * cols];
        let norm = dot(row, row).sqrt();
        assert!(norm > 1e-12 * first_norm.max(1e-300), "rank-deficient draw in orthonormalize_rows");
        row.iter_mut().for_each(|x| *x /= norm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_and_lanczos_agree_on_a_known_spectrum() {
        // Q diag(5, 3, 1, 0.5, 0.1) Q^T with Q from Gram-Schmidt of fixed rows.
        let n = 5;
        let mut q: Vec<f64> = (0..n * n).map(|k| ((k * 7 + 3) % 11) as f64 - 5.0).collect();
        orthonormalize_rows(&mut q, n, n);
        let lam = [5.0, 3.0, 1.0, 0.5, 0.1];
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = (0..n).map(|k| q[k * n + i] * lam[k] * q[k * n + j]).sum();
            }
        }
        let ev = symmetric_eigenvalues(a.clone(), n);
        for (e, l) in ev.iter().zip(lam) {
            assert!((e - l).abs() < 1e-12, "{ev:?}");
        }
        let top = lanczos_top(n, 2, &[1.0, 0.3, -0.2, 0.5, 0.7], 1e-14, 100, |v, out| {
            for i in 0..n {
                out[i] = (0..n).map(|j| a[i * n + j] * v[j]).sum();
            }
        });
        assert!((top[0] - 5.0).abs() < 1e-10 && (top[1] - 3.0).abs() < 1e-10, "{top:?}");
    }
}
