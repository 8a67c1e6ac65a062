//! Small dense linear algebra in f64 that the metrics and the weight generation need: the top
//! eigenvalues of a matrix-free symmetric operator (block Lanczos with full reorthogonalisation)
//! and Gram-Schmidt orthonormalisation. Cyclic Jacobi is kept as the slow, obvious twin the
//! Lanczos test checks against.

/// All eigenvalues of the symmetric `n x n` matrix `a` (row-major), largest first, by cyclic
/// Jacobi rotations (accurate to a few ulps of the largest eigenvalue).
#[doc(hidden)]
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
/// by `apply(v, out)`, by block Lanczos (block size k + 2) with full reorthogonalisation and
/// Rayleigh-Ritz on the explicit projected matrix. A block sees eigenvalues of multiplicity up to
/// its size (single-vector Lanczos cannot: A = I has sigma_2 = 1, not 0); when the Krylov space
/// becomes invariant it is extended with fresh pseudo-random vectors, so it ends exact once it
/// is the whole space. Stops when the top `k` Ritz values move by at most `rel_tol` times the
/// largest between checks, or at `max_basis` vectors. `start` seeds the first block.
pub fn lanczos_top(
    dim: usize,
    k: usize,
    start: &[f64],
    rel_tol: f64,
    max_basis: usize,
    mut apply: impl FnMut(&[f64], &mut [f64]),
) -> Vec<f64> {
    let block = (k + 2).min(dim.max(1));
    let limit = max_basis.max(block).min(dim);
    let mut basis: Vec<Vec<f64>> = Vec::new();
    let mut images: Vec<Vec<f64>> = Vec::new();
    let mut projected: Vec<Vec<f64>> = Vec::new();
    let mut fresh = 0u64;
    // Deterministic pseudo-random vectors: the start vector, then Weyl sequences.
    let random_vector = |fresh: &mut u64| -> Vec<f64> {
        *fresh += 1;
        let a = 0.754_877_666_246_692_7 * (*fresh as f64 + 1.0);
        (0..dim)
            .map(|i| ((i as f64 + 1.0) * a + 0.5 * (*fresh as f64)).sin() + 0.1 * ((i * 7 + 3) % 11) as f64)
            .collect()
    };
    let mut candidates: Vec<Vec<f64>> = vec![start.to_vec()];
    while candidates.len() < block {
        candidates.push(random_vector(&mut fresh));
    }
    let mut previous: Option<Vec<f64>> = None;
    let mut next_check = block.max(k);
    loop {
        let mut added = Vec::new();
        for mut v in std::mem::take(&mut candidates) {
            if basis.len() >= limit {
                break;
            }
            for attempt in 0..3 {
                let before = dot(&v, &v).sqrt();
                for _ in 0..2 {
                    for q in &basis {
                        let c = dot(&v, q);
                        v.iter_mut().zip(q).for_each(|(x, y)| *x -= c * y);
                    }
                }
                let after = dot(&v, &v).sqrt();
                if after > 1e-10 * before && after > 0.0 {
                    v.iter_mut().for_each(|x| *x /= after);
                    let mut image = vec![0.0; dim];
                    apply(&v, &mut image);
                    // Row of the projected matrix T = Q^T A Q (symmetrised), built as Q grows.
                    let row: Vec<f64> = (0..basis.len())
                        .map(|j| 0.5 * (dot(&v, &images[j]) + dot(&basis[j], &image)))
                        .chain(std::iter::once(dot(&v, &image)))
                        .collect();
                    projected.push(row);
                    basis.push(v);
                    images.push(image);
                    added.push(basis.len() - 1);
                    break;
                }
                if attempt == 2 {
                    break;
                }
                v = random_vector(&mut fresh);
            }
        }
        let m = basis.len();
        let done = m >= limit || (added.is_empty() && m >= dim);
        if m >= next_check || done || added.is_empty() {
            let mut t = nalgebra::DMatrix::<f64>::zeros(m, m);
            for (i, row) in projected.iter().enumerate() {
                for (j, v) in row.iter().enumerate() {
                    t[(i, j)] = *v;
                    t[(j, i)] = *v;
                }
            }
            let mut ritz: Vec<f64> = nalgebra::SymmetricEigen::new(t).eigenvalues.iter().cloned().collect();
            ritz.sort_by(|a, b| b.total_cmp(a));
            ritz.resize(k.max(ritz.len()), 0.0);
            ritz.truncate(k);
            let scale = ritz[0].abs();
            let converged =
                previous.as_ref().is_some_and(|p| (0..k).all(|i| (ritz[i] - p[i]).abs() <= rel_tol * scale));
            if converged || done || m >= dim {
                return ritz;
            }
            previous = Some(ritz);
            next_check = (m * 3 / 2).max(m + block);
        }
        candidates = if added.is_empty() {
            (0..block).map(|_| random_vector(&mut fresh)).collect()
        } else {
            added.iter().map(|&i| images[i].clone()).collect()
        };
    }
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
