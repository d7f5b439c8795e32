//! The rows of B = diag(sqrt p)(J - 1 m^T) (m = J^T p) without ever storing B in f64: at C = 1000,
//! n = 150528 an f64 copy of B is 1.2 GB. B is formed one column block at a time from J (f32),
//! the row scales sqrt(p_i) and m (f64); every product with B reads those blocks or streams J.

use rayon::prelude::*;

use crate::model::matmul::{matmul, Scalar, Threads, View};

/// A column block of B holds about this many bytes (f64); small problems fit in one block, so
/// their gram is the single product B B^T it always was.
pub const BLOCK_BYTES: usize = 32 << 20;

/// Above this many rows the f64 gram is accumulated tile by tile over its lower triangle only
/// (B_I B_J^T for J <= I), halving its C^2 n multiply-adds.
pub const TILE: usize = 128;

/// From this many rows (C = 1000 at ImageNet size) the gram's products run in f32 blocks.
pub const F32_GRAM_MIN_ROWS: usize = 512;

/// Columns per panel of the f32 gram: gemm's AVX-512 f32 kernel covers 64 of them at once, and
/// a product with many rows and few columns runs at its full rate (~95 GFLOP/s a thread here; a
/// 128-row tile against 128 columns ran at half that).
pub const PANEL_COLUMNS: usize = 64;

/// Columns per f32 block: each block's product sums this many terms in f32 before the f64 sum.
pub const F32_BLOCK_COLUMNS: usize = 1024;

/// Below this many entries of J (R x n) the products run on the calling thread: rayon's
/// hand-offs cost more than they save on an MNIST step.
pub const PARALLEL_MIN: usize = 1 << 17;

/// Up to this many rows (and B small enough for one thread) the gram is taken as dot products.
const SMALL_GRAM_MAX_ROWS: usize = 32;

/// a . b in eight independent partial sums (vector lanes), added pairwise at the end: with AVX2
/// and FMA where the CPU has them (the crate's baseline, SSE2, runs it at a quarter of the rate).
fn dot(a: &[f64], b: &[f64]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the features were detected.
        return unsafe { dot_fma(a, b) };
    }
    dot_lanes(a, b, |x, y, acc| acc + x * y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn dot_fma(a: &[f64], b: &[f64]) -> f64 {
    dot_lanes(a, b, f64::mul_add)
}

#[inline(always)]
fn dot_lanes(a: &[f64], b: &[f64], madd: impl Fn(f64, f64, f64) -> f64) -> f64 {
    let mut lanes = [0.0f64; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .fold(0.0, |t, (&x, &y)| madd(x, y, t));
    for (x, y) in ac.zip(bc) {
        for k in 0..8 {
            lanes[k] = madd(x[k], y[k], lanes[k]);
        }
    }
    let quads = [
        lanes[0] + lanes[4],
        lanes[1] + lanes[5],
        lanes[2] + lanes[6],
        lanes[3] + lanes[7],
    ];
    (quads[0] + quads[2]) + (quads[1] + quads[3]) + tail
}

/// Rows of B d summed side by side.
const ROW_GROUP: usize = 8;

/// B's rows, row i = scales[i] (J_i - mean), as the views it is built from.
#[derive(Clone, Copy)]
pub struct BRows<'a> {
    /// R x n row-major (f32): the rows J_i of the kept classes.
    pub jacobian: &'a [f32],
    /// sqrt(p_i) for each of the R rows.
    pub scales: &'a [f64],
    /// m = J^T p over all C classes (n).
    pub mean: &'a [f64],
    pub n: usize,
}

impl BRows<'_> {
    pub fn len(&self) -> usize {
        self.scales.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scales.is_empty()
    }

    fn parallel(&self) -> bool {
        self.len() * self.n >= PARALLEL_MIN
    }

    /// Columns per block.
    fn block_width(&self) -> usize {
        (BLOCK_BYTES / (8 * self.len().max(1))).clamp(1, self.n.max(1))
    }

    /// Columns [start, start + width) of B, R x width row-major, into `out` (f64, or rounded to f32
    /// after the centring in f64).
    fn block<T: Copy + Send>(&self, start: usize, width: usize, out: &mut [T], to: impl Fn(f64) -> T + Sync) {
        let n = self.n;
        let mean = &self.mean[start..start + width];
        let fill = |(i, row): (usize, &mut [T])| {
            let s = self.scales[i];
            let j = &self.jacobian[i * n + start..i * n + start + width];
            row.iter_mut()
                .zip(j)
                .zip(mean)
                .for_each(|((b, &j), m)| *b = to(s * (j as f64 - m)));
        };
        let out = &mut out[..self.len() * width];
        if self.parallel() {
            out.par_chunks_mut(width).enumerate().for_each(fill);
        } else {
            out.chunks_mut(width).enumerate().for_each(fill);
        }
    }

    /// Whether the gram is taken in f32 blocks (see `gram`).
    pub fn gram_in_f32(&self) -> bool {
        self.len() >= F32_GRAM_MIN_ROWS
    }

    /// K = B B^T (R x R, symmetric), accumulated in f64 over column blocks of B. Up to
    /// F32_GRAM_MIN_ROWS rows each block is f64 (one block, today's single product, for ordinary
    /// classifiers); from there each block's product runs in f32 (centred in f64 first, so B's
    /// entries carry f32 round-off only, the size of J's own) at twice the f64 rate.
    pub fn gram(&self) -> Vec<f64> {
        if self.gram_in_f32() {
            self.gram_f32()
        } else if self.len() <= SMALL_GRAM_MAX_ROWS && !self.parallel() {
            self.gram_small()
        } else {
            self.gram_f64()
        }
    }

    /// The f64 gram of a few short rows (an ordinary classifier's, 10 x 784) as plain dot products
    /// of B's rows over the lower triangle: a general product's set-up and packing cost more than
    /// its 43 k multiply-adds.
    fn gram_small(&self) -> Vec<f64> {
        let (r, n) = (self.len(), self.n);
        let mut block = vec![0.0f64; r * n];
        self.block(0, n, &mut block, |v| v);
        let mut gram = vec![0.0f64; r * r];
        for i in 0..r {
            for j in 0..=i {
                let v = dot(&block[i * n..(i + 1) * n], &block[j * n..(j + 1) * n]);
                gram[i * r + j] = v;
                gram[j * r + i] = v;
            }
        }
        gram
    }

    /// The f32 gram: per column block of B (F32_BLOCK_COLUMNS wide), one product per column panel
    /// P of the lower triangle, B_{>=P} B_P^T (rows from P's first down, P's columns): the
    /// triangle plus the diagonal squares, (1 + 1 / panels) / 2 of the full product, in tall
    /// products that run near gemm's rate; each block's f32 result is added into f64.
    fn gram_f32(&self) -> Vec<f64> {
        let (r, n) = (self.len(), self.n);
        let mut gram = vec![0.0f64; r * r];
        if r == 0 || n == 0 {
            return gram;
        }
        let width = F32_BLOCK_COLUMNS.min(n);
        let panel = PANEL_COLUMNS;
        // Panel [p0, p1): rows [p0, r) x columns [p0, p1), its f64 sum and one block's f32 product.
        let mut panels: Vec<(usize, usize, Vec<f64>, Vec<f32>)> = (0..r)
            .step_by(panel)
            .map(|p0| {
                let p1 = (p0 + panel).min(r);
                let size = (r - p0) * (p1 - p0);
                (p0, p1, vec![0.0f64; size], vec![0.0f32; size])
            })
            .collect();
        let mut block = vec![0.0f32; r * width];
        for start in (0..n).step_by(width) {
            let w = width.min(n - start);
            self.block(start, w, &mut block, |v| v as f32);
            let block = &block[..r * w];
            let product = |(p0, p1, sum, part): &mut (usize, usize, Vec<f64>, Vec<f32>)| {
                let (p0, p1) = (*p0, *p1);
                matmul(
                    part,
                    View::rows(&block[p0 * w..], r - p0, w),
                    View::transposed(&block[p0 * w..p1 * w], p1 - p0, w),
                    false,
                    Threads::One,
                );
                sum.iter_mut().zip(part.iter()).for_each(|(s, &p)| *s += p as f64);
            };
            // The panels share the block; one thread each (rayon balances the tall and short ones).
            panels.par_iter_mut().for_each(product);
        }
        for (p0, p1, sum, _) in &panels {
            let cols = p1 - p0;
            for (a, row) in sum.chunks(cols).enumerate() {
                gram[(p0 + a) * r + p0..(p0 + a) * r + p1].copy_from_slice(row);
            }
        }
        // Mirror the lower triangle; within a panel's diagonal square average the two halves.
        for i in 0..r {
            for j in 0..i {
                let v = if i / panel == j / panel {
                    0.5 * (gram[i * r + j] + gram[j * r + i])
                } else {
                    gram[i * r + j]
                };
                gram[i * r + j] = v;
                gram[j * r + i] = v;
            }
        }
        gram
    }

    /// K = B B^T with every block in f64, whatever the size: the reference the f32 blocks are
    /// checked against.
    pub fn gram_f64(&self) -> Vec<f64> {
        self.gram_with::<f64>(|v| v, |v| v, usize::MAX)
    }

    fn gram_with<T: Scalar + Send + Sync>(
        &self,
        to: impl Fn(f64) -> T + Sync + Copy,
        back: impl Fn(T) -> f64 + Sync + Copy,
        max_width: usize,
    ) -> Vec<f64> {
        let r = self.len();
        let mut gram = vec![0.0f64; r * r];
        if r == 0 || self.n == 0 {
            return gram;
        }
        let width = self.block_width().min(max_width);
        let mut block = vec![T::default(); r * width];
        // Lower-triangle tiles (first row, first column, f64 sum, one block's product).
        let starts: Vec<usize> = (0..r).step_by(TILE).collect();
        let mut tiles: Vec<(usize, usize, Vec<f64>, Vec<T>)> = Vec::new();
        for (a, &i0) in starts.iter().enumerate() {
            for &j0 in &starts[..=a] {
                let size = TILE.min(r - i0) * TILE.min(r - j0);
                tiles.push((i0, j0, vec![0.0f64; size], vec![T::default(); size]));
            }
        }
        let single = tiles.len() == 1;
        for start in (0..self.n).step_by(width) {
            let w = width.min(self.n - start);
            self.block(start, w, &mut block, to);
            let block = &block[..r * w];
            let product = |(i0, j0, sum, part): &mut (usize, usize, Vec<f64>, Vec<T>), threads| {
                let (ti, tj) = (TILE.min(r - *i0), TILE.min(r - *j0));
                matmul(
                    part,
                    View::rows(&block[*i0 * w..(*i0 + ti) * w], ti, w),
                    View::transposed(&block[*j0 * w..(*j0 + tj) * w], tj, w),
                    false,
                    threads,
                );
                sum.iter_mut().zip(part.iter()).for_each(|(s, &p)| *s += back(p));
            };
            if single {
                product(&mut tiles[0], Threads::All);
            } else {
                tiles.par_iter_mut().for_each(|t| product(t, Threads::One));
            }
        }
        for (i0, j0, tile, _) in &tiles {
            let tj = TILE.min(r - j0);
            for (a, row) in tile.chunks(tj).enumerate() {
                gram[(i0 + a) * r + j0..(i0 + a) * r + j0 + tj].copy_from_slice(row);
            }
        }
        // Mirror the lower triangle; within diagonal tiles average the two halves (round-off).
        for i in 0..r {
            for j in 0..i {
                let v = if i / TILE == j / TILE {
                    0.5 * (gram[i * r + j] + gram[j * r + i])
                } else {
                    gram[i * r + j]
                };
                gram[i * r + j] = v;
                gram[j * r + i] = v;
            }
        }
        gram
    }

    /// B d (R values): (B d)_i = s_i (J_i . d - m . d). Each J_i . d is summed in column order
    /// (as `Iterator::sum`); ROW_GROUP rows run side by side, their sums independent chains.
    pub fn apply<T: Copy + Into<f64> + Sync>(&self, d: &[T]) -> Vec<f64> {
        let n = self.n;
        let d = &d[..n];
        let md: f64 = self.mean.iter().zip(d).map(|(m, &x)| m * x.into()).sum();
        let group = |(g, out): (usize, &mut [f64])| {
            let r0 = g * ROW_GROUP;
            let mut sums = [-0.0f64; ROW_GROUP];
            if out.len() == ROW_GROUP {
                let rows: [&[f32]; ROW_GROUP] =
                    std::array::from_fn(|a| &self.jacobian[(r0 + a) * n..(r0 + a + 1) * n]);
                for (k, &x) in d.iter().enumerate() {
                    let x: f64 = x.into();
                    for a in 0..ROW_GROUP {
                        sums[a] += rows[a][k] as f64 * x;
                    }
                }
            } else {
                for (a, sum) in sums.iter_mut().enumerate().take(out.len()) {
                    let row = &self.jacobian[(r0 + a) * n..(r0 + a + 1) * n];
                    *sum = row.iter().zip(d).map(|(&j, &x)| j as f64 * x.into()).sum();
                }
            }
            for (a, o) in out.iter_mut().enumerate() {
                *o = self.scales[r0 + a] * (sums[a] - md);
            }
        };
        let mut out = vec![0.0f64; self.len()];
        if self.parallel() {
            out.par_chunks_mut(ROW_GROUP).enumerate().for_each(group);
        } else {
            out.chunks_mut(ROW_GROUP).enumerate().for_each(group);
        }
        out
    }

    /// B^T c (n values) = sum_i c_i s_i J_i - (sum_i c_i s_i) m.
    pub fn apply_transposed(&self, c: &[f64]) -> Vec<f64> {
        let n = self.n;
        let weights: Vec<f64> = c.iter().zip(self.scales).map(|(c, s)| c * s).collect();
        let total: f64 = weights.iter().sum();
        // Column chunks keep each thread's slice of `out` in cache while it streams J's rows.
        const CHUNK: usize = 4096;
        let mut out = vec![0.0f64; n];
        let fill = |(k, chunk): (usize, &mut [f64])| {
            let start = k * CHUNK;
            chunk
                .iter_mut()
                .zip(&self.mean[start..])
                .for_each(|(o, m)| *o = -total * m);
            for (i, &w) in weights.iter().enumerate() {
                if w == 0.0 {
                    continue;
                }
                let row = &self.jacobian[i * n + start..i * n + start + chunk.len()];
                chunk.iter_mut().zip(row).for_each(|(o, &j)| *o += w * j as f64);
            }
        };
        if self.parallel() {
            out.par_chunks_mut(CHUNK).enumerate().for_each(fill);
        } else {
            out.chunks_mut(CHUNK).enumerate().for_each(fill);
        }
        out
    }

    /// A B for a k x R row-major matrix A: k x n row-major, column block by column block.
    pub fn left_product(&self, a: &[f64], k: usize) -> Vec<f64> {
        let (r, n) = (self.len(), self.n);
        let mut out = vec![0.0f64; k * n];
        if k == 0 || r == 0 || n == 0 {
            return out;
        }
        let width = self.block_width();
        let mut block = vec![0.0f64; r * width];
        let mut part = vec![0.0f64; k * width];
        for start in (0..n).step_by(width) {
            let w = width.min(n - start);
            self.block(start, w, &mut block, |v| v);
            matmul(
                &mut part,
                View::rows(a, k, r),
                View::rows(&block[..r * w], r, w),
                false,
                Threads::All,
            );
            for row in 0..k {
                out[row * n + start..row * n + start + w].copy_from_slice(&part[row * w..(row + 1) * w]);
            }
        }
        out
    }
}
