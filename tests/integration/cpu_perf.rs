//! The CPU engine's performance rewrites against their slow, obvious twins.

use ndarray::Array2;
use rankcollapse::metrics::{mean_abs_cos, mean_abs_cos_dense, mean_abs_cos_in_blocks};

/// Deterministic, awkward test matrices: mixed signs, a zero row, a duplicated row.
fn tokens(n: usize, d: usize, seed: u64) -> Array2<f64> {
    let mut x = Array2::from_shape_fn((n, d), |(i, j)| {
        let t = ((i * 7919 + j * 104_729) as u64 ^ seed) as f64;
        (t * 0.618_033_988_749_895).fract() - 0.5 + if j == 0 { 0.3 } else { 0.0 }
    });
    if n > 2 {
        x.row_mut(1).fill(0.0);
        let r = x.row(0).to_owned();
        x.row_mut(n - 1).assign(&r);
    }
    x
}

#[test]
fn blocked_mean_abs_cos_matches_the_dense_gram() {
    for &(n, d) in &[(2, 1), (3, 5), (17, 3), (31, 64), (67, 13), (130, 7)] {
        let x = tokens(n, d, 42);
        let dense = mean_abs_cos_dense(&x);
        for rows in [1, 2, 5, 16, 64, n - 1, n, n + 3] {
            let blocked = mean_abs_cos_in_blocks(&x, rows);
            assert!(
                (blocked - dense).abs() <= 1e-14 * dense.abs().max(1e-300),
                "n {n} d {d} block rows {rows} (seed 42): blocked {blocked:e} dense {dense:e}"
            );
        }
        assert!((mean_abs_cos(&x) - dense).abs() <= 1e-14 * dense, "n {n} d {d}: default blocks");
    }
}

#[test]
fn mean_abs_cos_of_a_long_context_stays_in_linear_memory() {
    // n = 3001 with the default block (4M entries: 1397 rows) spans three blocks.
    let x = tokens(3001, 9, 7);
    let (blocked, dense) = (mean_abs_cos(&x), mean_abs_cos_dense(&x));
    assert!((blocked - dense).abs() <= 1e-13 * dense, "seed 7: blocked {blocked:e} dense {dense:e}");
}
