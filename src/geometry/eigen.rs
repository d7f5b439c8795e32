//! Eigen-decomposition of a small symmetric matrix by cyclic Jacobi rotations, in f64.
//! Jacobi keeps small eigenvalues accurate relative to their own size (G's spectrum spans many
//! orders of magnitude), where a QR-based solver only resolves them relative to the largest.

/// Eigenvalues (descending) and the matching unit eigenvectors (as rows) of a symmetric
/// `n x n` row-major matrix.
pub fn symmetric_eigen(matrix: &[f64], n: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    assert_eq!(matrix.len(), n * n);
    let mut a = matrix.to_vec();
    let mut v = vec![0.0; n * n]; // columns are eigenvectors
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    for _sweep in 0..60 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum();
        let diag: f64 = (0..n).map(|i| a[i * n + i] * a[i * n + i]).sum();
        if off <= f64::EPSILON * f64::EPSILON * diag || off == 0.0 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let (app, aqq) = (a[p * n + p], a[q * n + q]);
                // Rotation angle that zeroes a[p][q] (Golub & Van Loan, sym.schur2).
                let tau = (aqq - app) / (2.0 * apq);
                let t = tau.signum() / (tau.abs() + (1.0 + tau * tau).sqrt());
                let t = if tau == 0.0 { 1.0 } else { t };
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[j * n + j].total_cmp(&a[i * n + i]));
    let values = order.iter().map(|&i| a[i * n + i]).collect();
    let vectors = order
        .iter()
        .map(|&i| (0..n).map(|k| v[k * n + i]).collect())
        .collect();
    (values, vectors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconstructs_a_graded_matrix() {
        // A = Q diag(1, 1e-4, 1e-9, 0) Q^T for a rotation Q.
        let n = 4;
        let lambda = [1.0, 1e-4, 1e-9, 0.0];
        let q: Vec<Vec<f64>> = (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| ((i * 7 + j * 3) as f64).sin() + if i == j { 2.0 } else { 0.0 })
                    .collect()
            })
            .collect();
        // Orthonormalise q's rows (Gram-Schmidt).
        let mut basis: Vec<Vec<f64>> = Vec::new();
        for row in q {
            let mut r = row.clone();
            for b in &basis {
                let d: f64 = r.iter().zip(b).map(|(x, y)| x * y).sum();
                r.iter_mut().zip(b).for_each(|(x, y)| *x -= d * y);
            }
            let norm = r.iter().map(|x| x * x).sum::<f64>().sqrt();
            basis.push(r.iter().map(|x| x / norm).collect());
        }
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = (0..n).map(|k| basis[k][i] * lambda[k] * basis[k][j]).sum();
            }
        }
        let (values, vectors) = symmetric_eigen(&a, n);
        for k in 0..3 {
            assert!((values[k] - lambda[k]).abs() <= 1e-6 * lambda[k], "{values:?}");
            let dot: f64 = vectors[k].iter().zip(&basis[k]).map(|(x, y)| x * y).sum();
            assert!((dot.abs() - 1.0).abs() < 1e-6);
        }
        assert!(values[3].abs() < 1e-15);
    }
}
