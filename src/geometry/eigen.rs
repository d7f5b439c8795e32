//! Eigen-decomposition of a symmetric matrix in f64: cyclic Jacobi rotations for the small C x C
//! problems of ordinary classifiers, Householder tridiagonalisation + implicit QL beyond.
//! Jacobi keeps small eigenvalues accurate relative to their own size (G's spectrum spans many
//! orders of magnitude), where a QR-based solver only resolves them relative to the largest; but
//! Jacobi's sweeps cost ~10x more, too slow at C = 1000.

/// Up to this size the Jacobi solver is used.
pub const JACOBI_MAX: usize = 32;

/// Eigenvalues (descending) and the matching unit eigenvectors (as rows) of a symmetric
/// `n x n` row-major matrix.
pub fn symmetric_eigen(matrix: &[f64], n: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    if n <= JACOBI_MAX {
        jacobi_eigen(matrix, n)
    } else {
        tridiagonal_eigen(matrix, n)
    }
}

/// Cyclic Jacobi rotations (Golub & Van Loan 8.5).
pub fn jacobi_eigen(matrix: &[f64], n: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
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

/// Householder reduction to tridiagonal form, then the implicit QL algorithm (the EISPACK routines
/// tred2 and tql2, as in JAMA), O(n^3). The transformation is kept transposed, `vt[c * n + r]` =
/// V[r][c], so the inner loops walk memory in order.
pub fn tridiagonal_eigen(matrix: &[f64], n: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    assert_eq!(matrix.len(), n * n);
    if n == 0 {
        return (Vec::new(), Vec::new());
    }
    let mut vt = matrix.to_vec(); // symmetric, so V^T = V to start
    let mut d = vec![0.0f64; n];
    let mut e = vec![0.0f64; n];
    let at = |r: usize, c: usize| c * n + r; // index of V[r][c] in vt
                                             // tred2
    for j in 0..n {
        d[j] = vt[at(n - 1, j)];
    }
    for i in (1..n).rev() {
        let scale: f64 = d[..i].iter().map(|x| x.abs()).sum();
        let mut h = 0.0;
        if scale == 0.0 {
            e[i] = d[i - 1];
            for j in 0..i {
                d[j] = vt[at(i - 1, j)];
                vt[at(i, j)] = 0.0;
                vt[at(j, i)] = 0.0;
            }
        } else {
            for dk in &mut d[..i] {
                *dk /= scale;
                h += *dk * *dk;
            }
            let mut f = d[i - 1];
            let mut g = h.sqrt();
            if f > 0.0 {
                g = -g;
            }
            e[i] = scale * g;
            h -= f * g;
            d[i - 1] = f - g;
            e[..i].fill(0.0);
            for j in 0..i {
                f = d[j];
                vt[at(j, i)] = f;
                g = e[j] + vt[at(j, j)] * f;
                let col = &vt[j * n..j * n + i]; // V[k][j] for k < i
                for k in j + 1..i {
                    g += col[k] * d[k];
                    e[k] += col[k] * f;
                }
                e[j] = g;
            }
            f = 0.0;
            for j in 0..i {
                e[j] /= h;
                f += e[j] * d[j];
            }
            let hh = f / (h + h);
            for j in 0..i {
                e[j] -= hh * d[j];
            }
            for j in 0..i {
                let (f, g) = (d[j], e[j]);
                let col = &mut vt[j * n..j * n + i];
                for k in j..i {
                    col[k] -= f * e[k] + g * d[k];
                }
                d[j] = vt[at(i - 1, j)];
                vt[at(i, j)] = 0.0;
            }
        }
        d[i] = h;
    }
    // Accumulate the transformations.
    for i in 0..n - 1 {
        vt[at(n - 1, i)] = vt[at(i, i)];
        vt[at(i, i)] = 1.0;
        let h = d[i + 1];
        if h != 0.0 {
            for k in 0..=i {
                d[k] = vt[at(k, i + 1)] / h;
            }
            for j in 0..=i {
                let (next, col) = column_pair(&mut vt, n, i + 1, j);
                let g: f64 = next[..=i].iter().zip(&col[..=i]).map(|(a, b)| a * b).sum();
                col[..=i]
                    .iter_mut()
                    .zip(&d[..=i])
                    .for_each(|(v, dk)| *v -= g * dk);
            }
        }
        for k in 0..=i {
            vt[at(k, i + 1)] = 0.0;
        }
    }
    for j in 0..n {
        d[j] = vt[at(n - 1, j)];
        vt[at(n - 1, j)] = 0.0;
    }
    vt[at(n - 1, n - 1)] = 1.0;
    e[0] = 0.0;
    // tql2
    for i in 1..n {
        e[i - 1] = e[i];
    }
    e[n - 1] = 0.0;
    let mut f = 0.0;
    let mut tst1: f64 = 0.0;
    let eps = f64::EPSILON;
    for l in 0..n {
        tst1 = tst1.max(d[l].abs() + e[l].abs());
        let mut m = l;
        while m < n - 1 && e[m].abs() > eps * tst1 {
            m += 1;
        }
        if m > l {
            for _iteration in 0..100 {
                let mut g = d[l];
                let mut p = (d[l + 1] - g) / (2.0 * e[l]);
                let mut r = p.hypot(1.0);
                if p < 0.0 {
                    r = -r;
                }
                d[l] = e[l] / (p + r);
                d[l + 1] = e[l] * (p + r);
                let dl1 = d[l + 1];
                let mut h = g - d[l];
                for di in &mut d[l + 2..n] {
                    *di -= h;
                }
                f += h;
                p = d[m];
                let (mut c, mut c2, mut c3) = (1.0, 1.0, 1.0);
                let el1 = e[l + 1];
                let (mut s, mut s2) = (0.0, 0.0);
                for i in (l..m).rev() {
                    c3 = c2;
                    c2 = c;
                    s2 = s;
                    g = c * e[i];
                    h = c * p;
                    r = p.hypot(e[i]);
                    e[i + 1] = s * r;
                    s = e[i] / r;
                    c = p / r;
                    p = c * d[i] - s * g;
                    d[i + 1] = h + s * (c * g + s * d[i]);
                    // Rotate eigenvector columns i and i + 1 (rows of vt).
                    let (vi, vi1) = column_pair(&mut vt, n, i, i + 1);
                    for (a, b) in vi.iter_mut().zip(vi1.iter_mut()) {
                        let hk = *b;
                        *b = s * *a + c * hk;
                        *a = c * *a - s * hk;
                    }
                }
                p = -s * s2 * c3 * el1 * e[l] / dl1;
                e[l] = s * p;
                d[l] = c * p;
                if e[l].abs() <= eps * tst1 {
                    break;
                }
            }
        }
        d[l] += f;
        e[l] = 0.0;
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| d[j].total_cmp(&d[i]));
    let values = order.iter().map(|&i| d[i]).collect();
    let vectors = order.iter().map(|&i| vt[i * n..(i + 1) * n].to_vec()).collect();
    (values, vectors)
}

/// Rows a and b (a != b) of an n-column row-major matrix, both mutable.
fn column_pair(m: &mut [f64], n: usize, a: usize, b: usize) -> (&mut [f64], &mut [f64]) {
    assert_ne!(a, b);
    if a < b {
        let (lo, hi) = m.split_at_mut(b * n);
        (&mut lo[a * n..(a + 1) * n], &mut hi[..n])
    } else {
        let (lo, hi) = m.split_at_mut(a * n);
        (&mut hi[..n], &mut lo[b * n..(b + 1) * n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both solvers agree on a random symmetric matrix and reconstruct it.
    #[test]
    fn tridiagonal_ql_matches_jacobi() {
        for n in [1, 2, 5, 37] {
            let mut a = vec![0.0; n * n];
            for i in 0..n {
                for j in 0..=i {
                    let v = ((i * 31 + j * 17) as f64 * 0.37).sin();
                    a[i * n + j] = v;
                    a[j * n + i] = v;
                }
            }
            let (vj, _) = jacobi_eigen(&a, n);
            let (vq, xq) = tridiagonal_eigen(&a, n);
            for (x, y) in vj.iter().zip(&vq) {
                assert!((x - y).abs() < 1e-12, "n {n}: {vj:?} vs {vq:?}");
            }
            for i in 0..n {
                for j in 0..n {
                    let back: f64 = (0..n).map(|k| xq[k][i] * vq[k] * xq[k][j]).sum();
                    assert!((back - a[i * n + j]).abs() < 1e-12);
                    let dot: f64 = (0..n).map(|k| xq[i][k] * xq[j][k]).sum();
                    assert!((dot - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
                }
            }
        }
    }

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
