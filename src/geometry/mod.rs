//! The mathematics at one point x (shared/REFERENCE.md sections 1-2): probabilities, the Jacobian
//! J of the logits, the spectrum of the local data matrix G = J^T (diag p - p p^T) J, an
//! orthonormal basis of the data-leaf directions D_x = span{grad log p_i}, and the projections
//! onto D_x and onto ker G. G (n x n) is never formed: with B = diag(sqrt p)(I - 1 p^T) J, G = B^T B,
//! whose nonzero spectrum is that of the C x C matrix B B^T.

pub mod directions;
pub mod eigen;
pub mod gram;
pub mod jacobian;
pub mod plane;

use crate::model::matmul::{matmul, Threads, View};
use crate::model::Network;

/// Eigenvalues below this fraction of the largest count as zero for the rank and the leaf basis.
/// G's true spectrum spans many decades (the papers report lambda_9 / lambda_1 ~ 1e-7), while the
/// null direction sqrt(p) of B B^T sits at f64 round-off (~1e-16 relative): 1e-12 separates them.
pub const RANK_RTOL: f64 = 1e-12;

/// Up to this rank the leaf basis is re-orthonormalised by Gram-Schmidt.
pub const REORTHOGONALISE_MAX: usize = 64;

/// How much of the geometry to compute at a point (shared/REFERENCE.md section 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeometryOptions {
    /// Keep only the K most probable classes in G (renormalising nothing); `None`, or K >= C, is
    /// the exact G over all C classes.
    pub top_k: Option<usize>,
    /// Compute the orthonormal leaf basis U (O(C^2 n) work, C n f64 of memory). The projections
    /// do not need it; only views that show the directions do.
    pub basis: bool,
}

impl Default for GeometryOptions {
    /// Exact, with the basis: what `LocalGeometry::at` has always computed.
    fn default() -> Self {
        GeometryOptions {
            top_k: None,
            basis: true,
        }
    }
}

impl GeometryOptions {
    /// What a walk needs: the projections and the spectrum, no basis.
    pub fn walk(top_k: Option<usize>) -> GeometryOptions {
        GeometryOptions { top_k, basis: false }
    }

    /// The number of classes G keeps for a model of `classes` classes.
    pub fn kept(&self, classes: usize) -> usize {
        self.top_k.map_or(classes, |k| k.min(classes))
    }

    /// K = 0 keeps nothing: refused with the reason.
    pub fn check(&self) -> Result<(), String> {
        match self.top_k {
            Some(0) => Err("top-k must be at least 1 (K classes of the model kept in G)".into()),
            _ => Ok(()),
        }
    }
}

/// Everything dataleaf knows about the model's geometry at one input.
#[derive(Debug, Clone)]
pub struct LocalGeometry {
    /// Values per input (n).
    pub n: usize,
    pub logits: Vec<f32>,
    /// softmax(logits), computed in f64, all C classes.
    pub probs: Vec<f64>,
    /// The R classes G is made of: all C in order when exact, else the K most probable (descending p).
    pub classes: Vec<usize>,
    /// 1 - sum of p_i over `classes`: the probability mass top-k leaves out (0 when exact).
    pub dropped_mass: f64,
    /// d logits / d pixels for `classes`, R x n row-major (R = C, all of J, when exact).
    pub jacobian: Vec<f32>,
    /// J^T p = sum over all C classes of p_i J_i (n).
    pub mean_gradient: Vec<f64>,
    /// All R eigenvalues of G, descending, clamped at 0.
    pub eigenvalues: Vec<f64>,
    /// Number of eigenvalues above RANK_RTOL times the largest (0 when G = 0 or at NaN).
    pub rank: usize,
    /// trace G = sum_i p_i |grad log p_i|^2.
    pub trace: f64,
    /// V_r Lambda_r^-1 V_r^T (R x R) over the kept rank: (B B^T)^+, so P_leaf = B^T (B B^T)^+ B.
    pub gram_pinv: Vec<f64>,
    /// Orthonormal basis of D_x: `rank` rows of length n (U^T); empty unless asked for.
    pub leaf_basis: Vec<Vec<f64>>,
    /// Whether `leaf_basis` was computed (projections then use it, as they always did).
    pub has_basis: bool,
}

/// Numerically stable softmax in f64. Non-finite logits give NaN probabilities.
pub fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().map(|&s| s as f64).fold(f64::NEG_INFINITY, f64::max);
    let exp: Vec<f64> = logits.iter().map(|&s| (s as f64 - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

/// The `k` most probable classes, descending p (ties: the lower class first).
pub fn top_classes(probs: &[f64], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    order.truncate(k);
    order
}

impl LocalGeometry {
    /// The exact geometry at pixel-space image `x`, with the leaf basis (one forward, one reverse
    /// pass over C rows).
    pub fn at(network: &Network, x: &[f32]) -> LocalGeometry {
        LocalGeometry::with(network, x, GeometryOptions::default())
    }

    /// The geometry at `x` as `options` ask: top-k pulls back only K + 1 cotangent rows (the K
    /// identity rows of the most probable classes and p itself, for J^T p).
    pub fn with(network: &Network, x: &[f32], options: GeometryOptions) -> LocalGeometry {
        let c = network.num_classes();
        match options.top_k.filter(|&k| k < c) {
            None => {
                let (logits, jacobian) = jacobian::logits_and_jacobian(network, x);
                LocalGeometry::from_jacobian_with(logits, jacobian, x.len(), options.basis)
            }
            Some(k) => {
                let top = jacobian::logits_and_top_rows(network, x, k);
                LocalGeometry::from_top_rows(top, x.len(), options.basis)
            }
        }
    }

    /// The top-k geometry from what the K + 1 reverse rows gave (`jacobian::logits_and_top_rows`).
    pub fn from_top_rows(top: jacobian::TopRows, n: usize, basis: bool) -> LocalGeometry {
        let mean = top.mean.iter().map(|&v| v as f64).collect();
        LocalGeometry::build(top.logits, top.probs, top.classes, top.rows, mean, n, basis)
    }

    /// Build from logits and J (C x n), with the basis. NaN anywhere gives the defined degenerate
    /// result: rank 0, an empty leaf basis (both projections then send d to 0 and d).
    pub fn from_jacobian(logits: Vec<f32>, jacobian: Vec<f32>, n: usize) -> LocalGeometry {
        LocalGeometry::from_jacobian_with(logits, jacobian, n, true)
    }

    /// The exact geometry from logits and J (C x n); the leaf basis only when `basis`.
    pub fn from_jacobian_with(logits: Vec<f32>, jacobian: Vec<f32>, n: usize, basis: bool) -> LocalGeometry {
        let c = logits.len();
        let probs = softmax(&logits);
        // pbar = p^T J in f64.
        let mean = if jacobian.len() == c * n {
            mean_gradient(&jacobian, &probs, n)
        } else {
            vec![0.0f64; n]
        };
        LocalGeometry::build(logits, probs, (0..c).collect(), jacobian, mean, n, basis)
    }

    /// The top-k geometry from logits and the full J (C x n): B's rows of the K most probable classes,
    /// with J^T p over all classes. The same G_k as `with` computes from K + 1 reverse rows.
    pub fn top_k_from_jacobian(
        logits: Vec<f32>,
        jacobian: &[f32],
        n: usize,
        k: usize,
        basis: bool,
    ) -> LocalGeometry {
        let c = logits.len();
        if k >= c {
            return LocalGeometry::from_jacobian_with(logits, jacobian.to_vec(), n, basis);
        }
        let probs = softmax(&logits);
        let mean = mean_gradient(jacobian, &probs, n);
        let classes = top_classes(&probs, k);
        let rows = classes
            .iter()
            .flat_map(|&i| jacobian[i * n..(i + 1) * n].iter().copied())
            .collect();
        LocalGeometry::build(logits, probs, classes, rows, mean, n, basis)
    }

    /// G_R = sum_{i in classes} p_i g_i g_i^T = B^T B with g_i = J_i - J^T p and B's rows
    /// sqrt(p_i) g_i (R x n, never stored); its nonzero spectrum is that of the R x R gram B B^T.
    fn build(
        logits: Vec<f32>,
        probs: Vec<f64>,
        classes: Vec<usize>,
        jacobian: Vec<f32>,
        mean: Vec<f64>,
        n: usize,
        basis: bool,
    ) -> LocalGeometry {
        let r = classes.len();
        // The dropped terms' own sum, not 1 - kept: exact 0 when nothing is dropped.
        let dropped_mass = if r == probs.len() {
            0.0
        } else {
            let mut keep = vec![false; probs.len()];
            classes.iter().for_each(|&i| keep[i] = true);
            probs
                .iter()
                .zip(&keep)
                .filter(|(_, &k)| !k)
                .map(|(p, _)| p)
                .sum::<f64>()
        };
        let finite = probs.iter().all(|p| p.is_finite())
            && all_finite(&jacobian)
            && mean.iter().all(|v| v.is_finite());
        let mut geo = LocalGeometry {
            n,
            logits,
            probs,
            classes,
            dropped_mass,
            jacobian,
            mean_gradient: mean,
            eigenvalues: vec![0.0; r],
            rank: 0,
            trace: 0.0,
            gram_pinv: vec![0.0; r * r],
            leaf_basis: Vec::new(),
            has_basis: basis,
        };
        if !finite {
            return geo;
        }
        let scales: Vec<f64> = geo.classes.iter().map(|&i| geo.probs[i].sqrt()).collect();
        let rows = gram::BRows {
            jacobian: &geo.jacobian,
            scales: &scales,
            mean: &geo.mean_gradient,
            n,
        };
        // K = B B^T, R x R: the nonzero spectrum of G = B^T B.
        let mut gram = rows.gram();
        if rows.gram_in_f32() && r == geo.probs.len() {
            // B^T sqrt(p) = sum_i p_i (J_i - J^T p) = 0 exactly, but f32 blocks leave that null
            // direction at ~1e-7 lambda_1 rather than f64 round-off: project it out, K <- P K P with
            // P = I - u u^T, u = sqrt(p) / |sqrt(p)|.
            deflate(&mut gram, &scales);
        }
        let trace: f64 = (0..r).map(|i| gram[i * r + i]).sum();
        let (values, vectors) = eigen::symmetric_eigen(&gram, r);
        drop(gram);
        let eigenvalues: Vec<f64> = values.iter().map(|v| v.max(0.0)).collect();
        let top = eigenvalues.first().copied().unwrap_or(0.0);
        let rank = eigenvalues
            .iter()
            .filter(|&&v| top > 0.0 && v > RANK_RTOL * top)
            .count();
        // (B B^T)^+ = sum_{k < rank} v_k v_k^T / lambda_k = W^T W with W's rows v_k / sqrt(lambda_k).
        let mut scaled_v = vec![0.0f64; rank * r];
        for (k, (v, &lambda)) in vectors.iter().zip(&eigenvalues).take(rank).enumerate() {
            scaled_v[k * r..(k + 1) * r]
                .iter_mut()
                .zip(v)
                .for_each(|(s, x)| *s = x / lambda.sqrt());
        }
        let mut pinv = vec![0.0f64; r * r];
        matmul(
            &mut pinv,
            View::transposed(&scaled_v, rank, r),
            View::rows(&scaled_v, rank, r),
            false,
            Threads::All,
        );
        let mut leaf_basis: Vec<Vec<f64>> = Vec::new();
        let mut kept_rank = rank;
        if basis {
            // Eigenvectors of G: u_k = B^T v_k / sqrt(lambda_k), all at once as U^T = Lambda^-1/2 V^T B.
            let u = rows.left_product(&scaled_v, rank);
            leaf_basis.reserve(rank);
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
            kept_rank = leaf_basis.len();
        }
        geo.eigenvalues = eigenvalues;
        geo.rank = kept_rank;
        geo.trace = trace;
        geo.gram_pinv = pinv;
        geo.leaf_basis = leaf_basis;
        geo
    }

    /// B's rows as views of this geometry (row i = sqrt(p_{classes[i]}) (J_i - J^T p)).
    fn b_rows<'a>(&'a self, scales: &'a [f64]) -> gram::BRows<'a> {
        gram::BRows {
            jacobian: &self.jacobian,
            scales,
            mean: &self.mean_gradient,
            n: self.n,
        }
    }

    fn scales(&self) -> Vec<f64> {
        self.classes.iter().map(|&i| self.probs[i].sqrt()).collect()
    }

    /// Whether G keeps every class (no top-k truncation).
    pub fn is_exact(&self) -> bool {
        self.classes.len() == self.probs.len()
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

    /// P_leaf v: the part of v along the data leaf. U U^T v when the basis was computed, else
    /// B^T (B B^T)^+ B v with B formed on the fly from J and p (two O(R n) products).
    pub fn project_leaf<T: Copy + Into<f64> + Sync>(&self, v: &[T]) -> Vec<f64> {
        let mut out = vec![0.0f64; self.n];
        if self.has_basis {
            for u in &self.leaf_basis {
                let c: f64 = u.iter().zip(v).map(|(a, &b)| a * b.into()).sum();
                out.iter_mut().zip(u).for_each(|(o, a)| *o += c * a);
            }
            return out;
        }
        if self.rank == 0 {
            return out;
        }
        let r = self.classes.len();
        let scales = self.scales();
        let rows = self.b_rows(&scales);
        let bv = rows.apply(v);
        let c: Vec<f64> = (0..r)
            .map(|a| dot(&self.gram_pinv[a * r..(a + 1) * r], &bv))
            .collect();
        rows.apply_transposed(&c)
    }

    /// P_kernel v = v - P_leaf v: the part of v across leaves (in ker G).
    pub fn project_kernel<T: Copy + Into<f64> + Sync>(&self, v: &[T]) -> Vec<f64> {
        let leaf = self.project_leaf(v);
        v.iter().zip(&leaf).map(|(&a, b)| a.into() - b).collect()
    }

    /// v^T G v = sum_i p_i (grad log p_i . v)^2 = |B v|^2, without forming G.
    pub fn quadratic_form(&self, v: &[f64]) -> f64 {
        if !self.is_exact() {
            let scales = self.scales();
            return self.b_rows(&scales).apply(v).iter().map(|x| x * x).sum();
        }
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

/// J^T p = sum_k p_k J_k (n values, f64), each entry summed over k in order; column chunks on
/// every thread when J is large (C = 1000 at ImageNet size: 150M terms).
fn mean_gradient(jacobian: &[f32], probs: &[f64], n: usize) -> Vec<f64> {
    const CHUNK: usize = 4096;
    let mut mean = vec![0.0f64; n];
    let fill = |(t, chunk): (usize, &mut [f64])| {
        let start = t * CHUNK;
        for (k, &p) in probs.iter().enumerate() {
            let row = &jacobian[k * n + start..k * n + start + chunk.len()];
            chunk.iter_mut().zip(row).for_each(|(m, &j)| *m += p * j as f64);
        }
    };
    if jacobian.len() >= gram::PARALLEL_MIN {
        use rayon::prelude::*;
        mean.par_chunks_mut(CHUNK).enumerate().for_each(fill);
    } else {
        mean.chunks_mut(CHUNK).enumerate().for_each(fill);
    }
    mean
}

/// Whether every entry of J is finite (in parallel chunks when J is large).
fn all_finite(values: &[f32]) -> bool {
    let chunk_ok = |c: &[f32]| c.iter().fold(true, |ok, v| ok & v.is_finite());
    if values.len() >= gram::PARALLEL_MIN {
        use rayon::prelude::*;
        values.par_chunks(1 << 16).all(chunk_ok)
    } else {
        chunk_ok(values)
    }
}

/// K <- (I - u u^T) K (I - u u^T) for the unit vector u along `direction` (K symmetric, r x r):
/// K - u w^T - w u^T + (u^T w) u u^T with w = K u.
fn deflate(gram: &mut [f64], direction: &[f64]) {
    let r = direction.len();
    let length = norm(direction);
    if length == 0.0 {
        return;
    }
    let u: Vec<f64> = direction.iter().map(|x| x / length).collect();
    let w: Vec<f64> = (0..r).map(|i| dot(&gram[i * r..(i + 1) * r], &u)).collect();
    let alpha = dot(&u, &w);
    for i in 0..r {
        for j in 0..r {
            gram[i * r + j] += -u[i] * w[j] - w[i] * u[j] + alpha * u[i] * u[j];
        }
    }
}

pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}
