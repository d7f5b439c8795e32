//! The geometry of a dense features model at one point, and over a grid of the plane
//! (shared/REFERENCE.md sections 1 and 3): the pullback metric G = J^T M J with M = diag p - p p^T
//! for a softmax classifier and M = I for a regression, its eigen-decomposition (n is small: 2 in
//! the plane view), the leaf direction (largest eigenvalue, D_x) and the kernel direction
//! (smallest, ker G), and the singular points where G's rank drops.

use rayon::prelude::*;

use crate::model::mlp::{softmax, Mlp};
use crate::model::Task;

/// A rectangle of the plane: [min[0], max[0]] x [min[1], max[1]].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    pub min: [f64; 2],
    pub max: [f64; 2],
}

impl Bounds {
    pub fn square(half: f64) -> Bounds {
        Bounds {
            min: [-half, -half],
            max: [half, half],
        }
    }
    pub fn contains(&self, p: &[f64]) -> bool {
        p.len() >= 2
            && (self.min[0]..=self.max[0]).contains(&p[0])
            && (self.min[1]..=self.max[1]).contains(&p[1])
    }
    pub fn width(&self) -> f64 {
        self.max[0] - self.min[0]
    }
    pub fn height(&self) -> f64 {
        self.max[1] - self.min[1]
    }
    /// The centre of cell (i, j) of an nx x ny grid; j counts up from min[1].
    pub fn cell_centre(&self, i: usize, j: usize, nx: usize, ny: usize) -> [f64; 2] {
        [
            self.min[0] + (i as f64 + 0.5) * self.width() / nx as f64,
            self.min[1] + (j as f64 + 0.5) * self.height() / ny as f64,
        ]
    }
}

/// Eigenvalues (ascending) and unit eigenvectors of a symmetric n x n matrix (row-major), by the
/// image geometry's cyclic Jacobi rotations (for n = 2 one rotation, the closed form). Non-finite
/// input gives zero eigenvalues and the unit axes (a defined degenerate answer).
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    if a.len() != n * n || a.iter().any(|v| !v.is_finite()) {
        let axes = (0..n)
            .map(|i| (0..n).map(|j| f64::from(u8::from(i == j))).collect())
            .collect();
        return (vec![0.0; n], axes);
    }
    let (mut values, mut vectors) = super::eigen::jacobi_eigen(a, n);
    values.reverse();
    vectors.reverse();
    (values, vectors)
}

/// The output a plane view shows by default: the last class's probability, or the first output.
pub fn default_output(mlp: &Mlp) -> usize {
    match mlp.task {
        Task::Classification => mlp.outputs().saturating_sub(1),
        Task::Regression => 0,
    }
}

/// Everything about the model at one input x.
#[derive(Debug, Clone)]
pub struct PointGeometry {
    /// Probabilities (classification) or values (regression).
    pub outputs: Vec<f64>,
    /// G = J^T M J, n x n row-major.
    pub metric: Vec<f64>,
    /// Eigenvalues of G, ascending.
    pub eigenvalues: Vec<f64>,
    /// Unit eigenvectors, in the order of the eigenvalues.
    pub eigenvectors: Vec<Vec<f64>>,
    /// The gradient of output `output` (the one asked for) with respect to x.
    pub gradient: Vec<f64>,
}

impl PointGeometry {
    /// The geometry at x; `output` names the output whose gradient is kept.
    pub fn at(mlp: &Mlp, x: &[f64], output: usize) -> PointGeometry {
        let n = mlp.inputs();
        let e = mlp.evaluate(x);
        let c = e.raw.len();
        let row = |k: usize| &e.jacobian[k * n..(k + 1) * n];
        let (outputs, metric, gradient) = match mlp.task {
            Task::Classification => {
                let p = softmax(&e.raw);
                // pbar = p^T J; B_k = sqrt(p_k) (J_k - pbar) and G = B^T B = J^T (diag p - p p^T) J.
                let pbar: Vec<f64> = (0..n).map(|j| (0..c).map(|k| p[k] * row(k)[j]).sum()).collect();
                let mut g = vec![0.0; n * n];
                for (k, pk) in p.iter().enumerate() {
                    let d: Vec<f64> = (0..n).map(|j| row(k)[j] - pbar[j]).collect();
                    for i in 0..n {
                        for j in 0..n {
                            g[i * n + j] += pk * d[i] * d[j];
                        }
                    }
                }
                // grad p_k = p_k (J_k - pbar)
                let grad = match p.get(output) {
                    Some(&pk) => (0..n).map(|j| pk * (row(output)[j] - pbar[j])).collect(),
                    None => vec![0.0; n],
                };
                (p, g, grad)
            }
            Task::Regression => {
                // G = J^T J
                let mut g = vec![0.0; n * n];
                for k in 0..c {
                    for i in 0..n {
                        for j in 0..n {
                            g[i * n + j] += row(k)[i] * row(k)[j];
                        }
                    }
                }
                let grad = if output < c {
                    row(output).to_vec()
                } else {
                    vec![0.0; n]
                };
                (e.raw.clone(), g, grad)
            }
        };
        let (eigenvalues, eigenvectors) = symmetric_eigen(&metric, n);
        PointGeometry {
            outputs,
            metric,
            eigenvalues,
            eigenvectors,
            gradient,
        }
    }

    pub fn largest(&self) -> f64 {
        self.eigenvalues.last().copied().unwrap_or(0.0).max(0.0)
    }

    /// The data-leaf direction: the eigenvector of the largest eigenvalue.
    pub fn leaf_direction(&self) -> &[f64] {
        self.eigenvectors.last().map_or(&[], Vec::as_slice)
    }

    /// The kernel direction: the eigenvector of the smallest eigenvalue.
    pub fn kernel_direction(&self) -> &[f64] {
        self.eigenvectors.first().map_or(&[], Vec::as_slice)
    }

    /// Whether the directions are defined: G is not zero and its largest eigenvalue stands clear of
    /// the smallest (when they are equal every direction is an eigenvector).
    pub fn directions_defined(&self) -> bool {
        let (lo, hi) = (self.eigenvalues.first().copied().unwrap_or(0.0), self.largest());
        hi.is_finite() && hi > 0.0 && hi - lo.max(0.0) > 1e-9 * hi
    }
}

/// Turn a unit vector to point the way `reference` does (flip when <reference, v> < 0): the
/// orientation continuity of SiMEC and of the leaf integrators.
pub fn orient(v: &[f64], reference: &[f64]) -> Vec<f64> {
    let dot: f64 = v.iter().zip(reference).map(|(a, b)| a * b).sum();
    if dot < 0.0 {
        v.iter().map(|a| -a).collect()
    } else {
        v.to_vec()
    }
}

/// The fixed initial orientation of an eigenvector: its largest component (the first on ties) positive.
pub fn canonical(v: &[f64]) -> Vec<f64> {
    let k = (0..v.len()).fold(0, |b, i| if v[i].abs() > v[b].abs() { i } else { b });
    if v.get(k).is_some_and(|&x| x < 0.0) {
        v.iter().map(|a| -a).collect()
    } else {
        v.to_vec()
    }
}

/// A kind of critical point of the shown output, where G's rank drops and leaves degenerate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Singular {
    /// A local extremum of the output (Poincare index +1 of its gradient): kernel leaves circle it.
    Extremum,
    /// A saddle (index -1): kernel leaves cross there.
    Saddle,
    /// G is exactly zero (a dead ReLU region, or a saturated output): no direction is a leaf.
    Flat,
}

/// One sampled cell: the output, the leaf and kernel directions, grad s, whether G = 0.
type Cell = (f64, [f64; 2], [f64; 2], [f64; 2], bool);

/// What a heat map shows: one output (a class probability or a regression value), or for a
/// classifier the most probable class at every point (all classes on one map).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeatOutput {
    Output(usize),
    Argmax,
}

/// The output over the plane on a grid of cell centres: only forward passes, no Jacobian, so a fine
/// grid stays cheap.
#[derive(Debug, Clone)]
pub struct HeatMap {
    pub bounds: Bounds,
    pub nx: usize,
    pub ny: usize,
    /// Row j (from the bottom) then column i: the output shown, or with `Argmax` the top probability.
    pub values: Vec<f64>,
    /// With `Argmax`, the most probable class per cell; empty otherwise.
    pub classes: Vec<usize>,
}

impl HeatMap {
    pub fn sample(mlp: &Mlp, bounds: Bounds, nx: usize, ny: usize, shown: HeatOutput) -> HeatMap {
        let cells: Vec<(f64, usize)> = (0..nx * ny)
            .into_par_iter()
            .map(|k| {
                let out = mlp.predict(&bounds.cell_centre(k % nx, k / nx, nx, ny));
                match shown {
                    HeatOutput::Output(o) => (out.get(o).copied().unwrap_or(f64::NAN), 0),
                    HeatOutput::Argmax => {
                        let (best, p) = out.iter().copied().enumerate().fold(
                            (0, f64::NEG_INFINITY),
                            |(bi, bp), (i, p)| {
                                if p > bp {
                                    (i, p)
                                } else {
                                    (bi, bp)
                                }
                            },
                        );
                        (p, best)
                    }
                }
            })
            .collect();
        HeatMap {
            bounds,
            nx,
            ny,
            values: cells.iter().map(|c| c.0).collect(),
            classes: match shown {
                HeatOutput::Argmax => cells.iter().map(|c| c.1).collect(),
                HeatOutput::Output(_) => Vec::new(),
            },
        }
    }
}

/// The plane on a grid: the shown output, the unit leaf and kernel directions (zero where undefined)
/// at cell centres, and the singular points.
#[derive(Debug, Clone)]
pub struct Field {
    pub bounds: Bounds,
    pub nx: usize,
    pub ny: usize,
    /// Row j (from the bottom) then column i: values[j * nx + i].
    pub values: Vec<f64>,
    pub leaf: Vec<[f64; 2]>,
    pub kernel: Vec<[f64; 2]>,
    pub singular: Vec<([f64; 2], Singular)>,
}

impl Field {
    /// Sample a 2-feature model on an nx x ny grid of cell centres.
    pub fn sample(mlp: &Mlp, bounds: Bounds, nx: usize, ny: usize, output: usize) -> Field {
        let two = |v: &[f64]| {
            [
                v.first().copied().unwrap_or(0.0),
                v.get(1).copied().unwrap_or(0.0),
            ]
        };
        // Cells are independent: sample them on all cores, in row-major order.
        let cells: Vec<Cell> = (0..nx * ny)
            .into_par_iter()
            .map(|k| {
                let g = PointGeometry::at(mlp, &bounds.cell_centre(k % nx, k / nx, nx, ny), output);
                let (leaf, kernel) = if g.directions_defined() {
                    (two(g.leaf_direction()), two(g.kernel_direction()))
                } else {
                    ([0.0; 2], [0.0; 2])
                };
                let value = g.outputs.get(output).copied().unwrap_or(f64::NAN);
                (
                    value,
                    leaf,
                    kernel,
                    two(&g.gradient),
                    g.metric.iter().all(|&v| v == 0.0),
                )
            })
            .collect();
        let values = cells.iter().map(|c| c.0).collect();
        let leaf = cells.iter().map(|c| c.1).collect();
        let kernel = cells.iter().map(|c| c.2).collect();
        let grads: Vec<[f64; 2]> = cells.iter().map(|c| c.3).collect();
        let flat: Vec<bool> = cells.iter().map(|c| c.4).collect();
        let mut singular = Vec::new();
        // Critical points: the winding of grad s around the square of four neighbouring centres.
        for j in 0..ny.saturating_sub(1) {
            for i in 0..nx.saturating_sub(1) {
                let corners = [(i, j), (i + 1, j), (i + 1, j + 1), (i, j + 1)];
                let g: Vec<[f64; 2]> = corners.iter().map(|&(a, b)| grads[b * nx + a]).collect();
                if g.iter()
                    .any(|v| v[0] == 0.0 && v[1] == 0.0 || !v[0].is_finite() || !v[1].is_finite())
                {
                    continue;
                }
                let mut turn = 0.0;
                for k in 0..4 {
                    let (a, b) = (g[k], g[(k + 1) % 4]);
                    let mut d = b[1].atan2(b[0]) - a[1].atan2(a[0]);
                    while d > std::f64::consts::PI {
                        d -= 2.0 * std::f64::consts::PI;
                    }
                    while d < -std::f64::consts::PI {
                        d += 2.0 * std::f64::consts::PI;
                    }
                    turn += d;
                }
                let index = (turn / std::f64::consts::TAU).round() as i32;
                let c0 = bounds.cell_centre(i, j, nx, ny);
                let c1 = bounds.cell_centre(i + 1, j + 1, nx, ny);
                let centre = [(c0[0] + c1[0]) / 2.0, (c0[1] + c1[1]) / 2.0];
                match index {
                    1 => singular.push((centre, Singular::Extremum)),
                    -1 => singular.push((centre, Singular::Saddle)),
                    _ => {}
                }
            }
        }
        for (k, &f) in flat.iter().enumerate() {
            if f {
                singular.push((bounds.cell_centre(k % nx, k / nx, nx, ny), Singular::Flat));
            }
        }
        Field {
            bounds,
            nx,
            ny,
            values,
            leaf,
            kernel,
            singular,
        }
    }
}
