//! The mathematics at one point x (shared/REFERENCE.md sections 1-2): probabilities, the Jacobian
//! J of the logits, the spectrum of the local data matrix G = J^T (diag p - p p^T) J, an
//! orthonormal basis of the data-leaf directions D_x = span{grad log p_i}, and the projections
//! onto D_x and onto ker G. G (n x n) is never formed: with B = diag(sqrt p)(I - 1 p^T) J, G = B^T B,
//! whose nonzero spectrum is that of the C x C matrix B B^T.

pub mod directions;
pub mod eigen;
pub mod jacobian;
pub mod plane;

use rayon::prelude::*;

use crate::model::matmul::{matmul, Threads, View};
use crate::model::Network;

/// Eigenvalues below this fraction of the largest count as zero for the rank and the leaf basis.
/// G's true spectrum spans many decades (the papers report lambda_9 / lambda_1 ~ 1e-7), while the
/// null direction sqrt(p) of B B^T sits at f64 round-off (~1e-16 relative): 1e-12 separates them.
pub const RANK_RTOL: f64 = 1e-12;

/// Up to this rank the leaf basis is re-orthonormalised by Gram-Schmidt.
pub const REORTHOGONALISE_MAX: usize = 64;

/// Everything dataleaf knows about the model's geometry at one input.
#[derive(Debug, Clone)]
pub struct LocalGeometry {
    /// Values per input (n).
    pub n: usize,
    pub logits: Vec<f32>,
    /// softmax(logits), computed in f64.
    pub probs: Vec<f64>,
    /// d logits / d pixels, C x n row-major.
    pub jacobian: Vec<f32>,
    /// All C eigenvalues of G, descending, clamped at 0.
    pub eigenvalues: Vec<f64>,
    /// Number of eigenvalues above RANK_RTOL times the largest (0 when G = 0 or at NaN).
    pub rank: usize,
    /// trace G = sum_i p_i |grad log p_i|^2.
    pub trace: f64,
    /// Orthonormal basis of D_x: `rank` rows of length n (U^T).
    pub leaf_basis: Vec<Vec<f64>>,
}

/// Numerically stable softmax in f64. Non-finite logits give NaN probabilities.
pub fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().map(|&s| s as f64).fold(f64::NEG_INFINITY, f64::max);
    let exp: Vec<f64> = logits.iter().map(|&s| (s as f64 - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

impl LocalGeometry {
    /// The geometry at pixel-space image `x` (fast Jacobian: one forward, one reverse pass over C rows).
    pub fn at(network: &Network, x: &[f32]) -> LocalGeometry {
        let (logits, jacobian) = jacobian::logits_and_jacobian(network, x);
        LocalGeometry::from_jacobian(logits, jacobian, x.len())
    }

    /// Build from logits and J (C x n). NaN anywhere gives the defined degenerate result: rank 0,
    /// an empty leaf basis (both projections then send d to 0 and d).
    pub fn from_jacobian(logits: Vec<f32>, jacobian: Vec<f32>, n: usize) -> LocalGeometry {
        let c = logits.len();
        let probs = softmax(&logits);
        let finite = probs.iter().all(|p| p.is_finite()) && jacobian.iter().all(|v| v.is_finite());
        if !finite {
            return LocalGeometry {
                n,
                logits,
                probs,
                jacobian,
                eigenvalues: vec![0.0; c],
                rank: 0,
                trace: 0.0,
                leaf_basis: Vec::new(),
            };
        }
        // B = diag(sqrt p) (I - 1 p^T) J in f64, C x n: row i is sqrt(p_i) (J_i - pbar), pbar = p^T J.
        let mut mean = vec![0.0f64; n];
        for (k, &p) in probs.iter().enumerate() {
            mean.iter_mut()
                .zip(&jacobian[k * n..(k + 1) * n])
                .for_each(|(m, &j)| *m += p * j as f64);
        }
        let mut b = vec![0.0f64; c * n];
        b.par_chunks_mut(n.max(1)).enumerate().for_each(|(i, row)| {
            let s = probs[i].sqrt();
            row.iter_mut()
                .zip(&jacobian[i * n..(i + 1) * n])
                .zip(&mean)
                .for_each(|((x, &j), m)| *x = s * (j as f64 - m));
        });
        drop(mean);
        // K = B B^T, C x C: the nonzero spectrum of G = B^T B.
        let mut gram = vec![0.0f64; c * c];
        matmul(
            &mut gram,
            View::rows(&b, c, n),
            View::transposed(&b, c, n),
            false,
            Threads::All,
        );
        for i in 0..c {
            for j in 0..i {
                let v = 0.5 * (gram[i * c + j] + gram[j * c + i]);
                gram[i * c + j] = v;
                gram[j * c + i] = v;
            }
        }
        let trace: f64 = (0..c).map(|i| gram[i * c + i]).sum();
        let (values, vectors) = eigen::symmetric_eigen(&gram, c);
        let eigenvalues: Vec<f64> = values.iter().map(|v| v.max(0.0)).collect();
        let top = eigenvalues.first().copied().unwrap_or(0.0);
        let rank = eigenvalues
            .iter()
            .filter(|&&v| top > 0.0 && v > RANK_RTOL * top)
            .count();
        // Eigenvectors of G: u_k = B^T v_k / sqrt(lambda_k), all at once as U^T = Lambda^-1/2 V^T B.
        let mut scaled_v = vec![0.0f64; rank * c];
        for (k, (v, &lambda)) in vectors.iter().zip(&eigenvalues).take(rank).enumerate() {
            scaled_v[k * c..(k + 1) * c]
                .iter_mut()
                .zip(v)
                .for_each(|(s, x)| *s = x / lambda.sqrt());
        }
        let mut u = vec![0.0f64; rank * n];
        matmul(
            &mut u,
            View::rows(&scaled_v, rank, c),
            View::rows(&b, c, n),
            false,
            Threads::All,
        );
        drop(b);
        let mut leaf_basis: Vec<Vec<f64>> = Vec::with_capacity(rank);
        for row in u.chunks(n.max(1)).take(rank) {
            let mut u = row.to_vec();
            // Re-orthonormalised against round-off while that is cheap (O(rank^2 n)); at ImageNet
            // scale the solver's orthogonality (~eps lambda_1 / lambda_k) has to do.
            if rank <= REORTHOGONALISE_MAX {
                for prev in &leaf_basis {
                    let d = dot(&u, prev);
                    u.iter_mut().zip(prev).for_each(|(x, p)| *x -= d * p);
                }
            }
            let norm = dot(&u, &u).sqrt();
            if norm > 0.5 {
                u.iter_mut().for_each(|x| *x /= norm);
                leaf_basis.push(u);
            }
        }
        let rank = leaf_basis.len();
        LocalGeometry {
            n,
            logits,
            probs,
            jacobian,
            eigenvalues,
            rank,
            trace,
            leaf_basis,
        }
    }

    pub fn num_classes(&self) -> usize {
        self.logits.len()
    }

    /// The predicted class.
    pub fn argmax(&self) -> usize {
        crate::model::argmax(&self.logits)
    }

    pub fn max_prob(&self) -> f64 {
        self.probs.iter().cloned().fold(0.0, f64::max)
    }

    /// P_leaf v = U U^T v: the part of v along the data leaf.
    pub fn project_leaf<T: Copy + Into<f64>>(&self, v: &[T]) -> Vec<f64> {
        let mut out = vec![0.0f64; self.n];
        for u in &self.leaf_basis {
            let c: f64 = u.iter().zip(v).map(|(a, &b)| a * b.into()).sum();
            out.iter_mut().zip(u).for_each(|(o, a)| *o += c * a);
        }
        out
    }

    /// P_kernel v = v - P_leaf v: the part of v across leaves (in ker G).
    pub fn project_kernel<T: Copy + Into<f64>>(&self, v: &[T]) -> Vec<f64> {
        let leaf = self.project_leaf(v);
        v.iter().zip(&leaf).map(|(&a, b)| a.into() - b).collect()
    }

    /// v^T G v = sum_i p_i (grad log p_i . v)^2 = |B v|^2, without forming G.
    pub fn quadratic_form(&self, v: &[f64]) -> f64 {
        let c = self.num_classes();
        let n = self.n;
        let jv: Vec<f64> = (0..c)
            .map(|k| {
                self.jacobian[k * n..(k + 1) * n]
                    .iter()
                    .zip(v)
                    .map(|(&j, x)| j as f64 * x)
                    .sum()
            })
            .collect();
        let mean: f64 = self.probs.iter().zip(&jv).map(|(p, x)| p * x).sum();
        self.probs
            .iter()
            .zip(&jv)
            .map(|(p, x)| p * (x - mean) * (x - mean))
            .sum()
    }
}

pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}
