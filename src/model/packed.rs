//! A linear layer's weights packed once for the reverse pass of J's rows.
//!
//! dx_r = g_r W (g: rows x nout, W: nout x nin) for a few rows that share one ReLU mask: only the
//! outputs with gradient in some row contribute. W is stored in column blocks of 32,
//! [block][output][32], so the live outputs of one block are read in address order (the hardware
//! prefetcher follows) while each row's 32 sums stay in registers.

use super::matmul::SharedColumns;

/// Columns per block: two AVX-512 vectors, four AVX2 vectors.
const BLOCK: usize = 32;

/// W (nout x nin) in column blocks: element (o, j) at `(j / 32 * nout + o) * 32 + j % 32`, the
/// last block padded with zeros.
#[derive(Debug, Clone, Default)]
pub struct PackedLinear {
    nout: usize,
    nin: usize,
    data: Vec<f32>,
}

impl PackedLinear {
    pub fn new(weight: &[f32], nout: usize, nin: usize) -> PackedLinear {
        assert_eq!(weight.len(), nout * nin);
        let blocks = nin.div_ceil(BLOCK);
        let mut data = vec![0.0f32; blocks * nout * BLOCK];
        for o in 0..nout {
            for (j, &w) in weight[o * nin..(o + 1) * nin].iter().enumerate() {
                data[((j / BLOCK) * nout + o) * BLOCK + j % BLOCK] = w;
            }
        }
        PackedLinear { nout, nin, data }
    }

    /// Whether this CPU runs `input_grad`.
    pub fn available() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f")
                || (std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"))
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// y = W x + bias for one input, from the packed blocks: the forward pass of a step then reads
    /// only this copy of W, so one copy, not two, competes for the cache. Call only where
    /// `available()`.
    pub fn forward_one(&self, x: &[f32], bias: &[f32], y: &mut [f32]) {
        let (nout, nin) = (self.nout, self.nin);
        assert!(x.len() == nin && bias.len() == nout && y.len() == nout);
        let blocks = nin.div_ceil(BLOCK);
        let mut xp = vec![0.0f32; blocks * BLOCK];
        xp[..nin].copy_from_slice(x);
        #[cfg(target_arch = "x86_64")]
        {
            let avx512 = std::arch::is_x86_feature_detected!("avx512f");
            // Output ranges over threads when W is big enough to pay for the hand-off.
            let threads = if nout * nin >= 1 << 18 {
                super::team::threads().min(nout).max(1)
            } else {
                1
            };
            let per = nout.div_ceil(threads);
            super::team::for_each_chunk_mut(y, per, |k, out| {
                // SAFETY: the features were checked above; the kernels assert their bounds.
                unsafe {
                    if avx512 {
                        x86::forward_avx512(self, &xp, k * per, out);
                    } else {
                        x86::forward_avx2(self, &xp, k * per, out);
                    }
                }
            });
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = xp;
        y.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
    }

    /// dx = g W for `rows` cotangent rows (rows x nout), skipping outputs zero in every row.
    /// Call only where `available()`.
    pub fn input_grad(&self, g: &[f32], rows: usize) -> Vec<f32> {
        #[cfg(target_arch = "x86_64")]
        let avx512 = std::arch::is_x86_feature_detected!("avx512f");
        #[cfg(not(target_arch = "x86_64"))]
        let avx512 = false;
        self.input_grad_with(g, rows, avx512)
    }

    /// `input_grad` with the instruction set chosen (AVX-512, or AVX2 + FMA).
    fn input_grad_with(&self, g: &[f32], rows: usize, avx512: bool) -> Vec<f32> {
        let (nout, nin) = (self.nout, self.nin);
        assert_eq!(g.len(), rows * nout);
        let active: Vec<u32> = (0..nout)
            .filter(|&o| (0..rows).any(|r| g[r * nout + o] != 0.0))
            .map(|o| o as u32)
            .collect();
        let blocks = nin.div_ceil(BLOCK);
        // Every column block of every row is copied in below.
        let mut dx = super::scratch::take(rows * nin);
        #[cfg(target_arch = "x86_64")]
        {
            let max_rows = if avx512 { 12 } else { 3 };
            // Column ranges over threads, each writing its own part of every row; small products
            // (the last layer's) stay on the calling thread, where a hand-off costs more.
            let macs = rows * active.len() * nin;
            let threads = if macs < 1 << 17 {
                1
            } else {
                super::team::threads().min(blocks).max(1)
            };
            let per = blocks.div_ceil(threads);
            let dx_columns = SharedColumns::new(&mut dx, rows, nin);
            super::team::run(threads, &|t| {
                let (b0, b1) = (t * per, ((t + 1) * per).min(blocks));
                let width = (b1.saturating_sub(b0)) * BLOCK;
                // The kernels store every entry.
                let mut out = super::scratch::take(rows * width);
                for r0 in (0..rows).step_by(max_rows) {
                    let nr = max_rows.min(rows - r0);
                    let mut vals = vec![0.0f32; active.len() * nr];
                    for (i, &o) in active.iter().enumerate() {
                        for r in 0..nr {
                            vals[i * nr + r] = g[(r0 + r) * nout + o as usize];
                        }
                    }
                    let dst = &mut out[r0 * width..(r0 + nr) * width];
                    // SAFETY: the features were checked above; the kernels assert their bounds.
                    unsafe {
                        if avx512 {
                            x86::dispatch_avx512(nr, self, &active, &vals, b0..b1, dst);
                        } else {
                            x86::dispatch_avx2(nr, self, &active, &vals, b0..b1, dst);
                        }
                    }
                }
                let j0 = (b0 * BLOCK).min(nin);
                let width_here = width.min(nin - j0);
                // SAFETY: part t writes only the columns of its own blocks.
                unsafe { dx_columns.copy_in(j0, width_here, &out, width) };
                super::scratch::give(out);
            });
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (active, blocks, avx512);
        dx
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{PackedLinear, BLOCK};

    macro_rules! kernel {
        ($name:ident, $dispatch:ident, $feature:literal, $lanes:literal, [$($n:literal)*], $zero:ident,
         $load:ident, $bcast:ident, $fma:ident, $store:ident) => {
            /// out[r][(b - b0) 32 + l] = sum_i vals[i][r] W[active[i]][b 32 + l] for blocks b.
            #[target_feature(enable = $feature)]
            unsafe fn $name<const R: usize>(
                w: &PackedLinear,
                active: &[u32],
                vals: &[f32],
                blocks: std::ops::Range<usize>,
                out: &mut [f32],
            ) {
                const V: usize = BLOCK / $lanes;
                let width = blocks.len() * BLOCK;
                assert!(vals.len() >= active.len() * R && out.len() >= R * width);
                assert!(active.iter().all(|&o| (o as usize) < w.nout));
                assert!(blocks.end * w.nout * BLOCK <= w.data.len());
                let (wp, vp, op) = (w.data.as_ptr(), vals.as_ptr(), out.as_mut_ptr());
                for (k, b) in blocks.enumerate() {
                    let mut acc = [[$zero(); V]; R];
                    for (i, &o) in active.iter().enumerate() {
                        // SAFETY: (b nout + o) 32 + 32 <= data.len(), asserted above.
                        let base = unsafe { wp.add((b * w.nout + o as usize) * BLOCK) };
                        let mut wv = [$zero(); V];
                        for (v, x) in wv.iter_mut().enumerate() {
                            *x = unsafe { $load(base.add(v * $lanes)) };
                        }
                        for (r, a) in acc.iter_mut().enumerate() {
                            // SAFETY: i < active.len(), r < R.
                            let x = unsafe { $bcast(&*vp.add(i * R + r)) };
                            for v in 0..V {
                                a[v] = $fma(x, wv[v], a[v]);
                            }
                        }
                    }
                    for (r, a) in acc.iter().enumerate() {
                        for (v, x) in a.iter().enumerate() {
                            // SAFETY: r width + k 32 + 32 <= R width.
                            unsafe { $store(op.add(r * width + k * BLOCK + v * $lanes), *x) };
                        }
                    }
                }
            }

            #[target_feature(enable = $feature)]
            pub(super) unsafe fn $dispatch(
                nr: usize,
                w: &PackedLinear,
                active: &[u32],
                vals: &[f32],
                blocks: std::ops::Range<usize>,
                out: &mut [f32],
            ) {
                match nr {
                    $($n => unsafe { $name::<$n>(w, active, vals, blocks, out) },)*
                    _ => unreachable!("row blocks are bounded by the caller"),
                }
            }
        };
    }

    macro_rules! forward {
        ($name:ident, $feature:literal, $lanes:literal, $zero:ident, $load:ident, $fma:ident,
         $add:ident, $store:ident, $sum:ident) => {
            /// y[k] = W[o0 + k] . x for the outputs of one range. W streams in address order, block
            /// by block; each output's 32 partial sums live in `sums` (L1) between blocks.
            #[target_feature(enable = $feature)]
            pub(super) unsafe fn $name(w: &PackedLinear, xp: &[f32], o0: usize, y: &mut [f32]) {
                const V: usize = BLOCK / $lanes;
                let blocks = xp.len() / BLOCK;
                let count = y.len();
                assert!(o0 + count <= w.nout && blocks * w.nout * BLOCK <= w.data.len());
                let mut sums = vec![0.0f32; count * BLOCK];
                let (wp, xq, sp) = (w.data.as_ptr(), xp.as_ptr(), sums.as_mut_ptr());
                for b in 0..blocks {
                    let mut xv = [$zero(); V];
                    for (v, x) in xv.iter_mut().enumerate() {
                        // SAFETY: b 32 + 32 <= xp.len().
                        *x = unsafe { $load(xq.add(b * BLOCK + v * $lanes)) };
                    }
                    // SAFETY: (b nout + o0 + k) 32 + 32 <= data.len() for k < count (asserted).
                    let base = unsafe { wp.add((b * w.nout + o0) * BLOCK) };
                    for k in 0..count {
                        for v in 0..V {
                            // SAFETY: k 32 + v lanes + lanes <= count 32 = sums.len().
                            unsafe {
                                let at = k * BLOCK + v * $lanes;
                                let acc = $fma($load(base.add(at)), xv[v], $load(sp.add(at)));
                                $store(sp.add(at), acc);
                            }
                        }
                    }
                }
                for (k, out) in y.iter_mut().enumerate() {
                    let mut t = $zero();
                    for v in 0..V {
                        // SAFETY: as above.
                        t = $add(t, unsafe { $load(sp.add(k * BLOCK + v * $lanes)) });
                    }
                    *out = $sum(t);
                }
            }
        };
    }

    forward!(
        forward_avx512,
        "avx512f",
        16,
        _mm512_setzero_ps,
        _mm512_loadu_ps,
        _mm512_fmadd_ps,
        _mm512_add_ps,
        _mm512_storeu_ps,
        _mm512_reduce_add_ps
    );
    forward!(
        forward_avx2,
        "avx2,fma",
        8,
        _mm256_setzero_ps,
        _mm256_loadu_ps,
        _mm256_fmadd_ps,
        _mm256_add_ps,
        _mm256_storeu_ps,
        sum256
    );

    /// The sum of a vector's eight lanes.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn sum256(v: __m256) -> f32 {
        let pair = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let two = _mm_add_ps(pair, _mm_movehl_ps(pair, pair));
        _mm_cvtss_f32(_mm_add_ss(two, _mm_shuffle_ps(two, two, 1)))
    }

    kernel!(
        rows_avx512,
        dispatch_avx512,
        "avx512f",
        16,
        [1 2 3 4 5 6 7 8 9 10 11 12],
        _mm512_setzero_ps,
        _mm512_loadu_ps,
        set1_ref,
        _mm512_fmadd_ps,
        _mm512_storeu_ps
    );
    kernel!(
        rows_avx2,
        dispatch_avx2,
        "avx2,fma",
        8,
        [1 2 3],
        _mm256_setzero_ps,
        _mm256_loadu_ps,
        _mm256_broadcast_ss,
        _mm256_fmadd_ps,
        _mm256_storeu_ps
    );

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn set1_ref(x: &f32) -> __m512 {
        _mm512_set1_ps(*x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_matches_the_definition() {
        if !PackedLinear::available() {
            return;
        }
        for (nout, nin) in [(5, 1100), (128, 9216), (13, 70), (1, 32)] {
            let weight: Vec<f32> = (0..nout * nin)
                .map(|i| ((i * 7919) % 997) as f32 / 997.0 - 0.5)
                .collect();
            let x: Vec<f32> = (0..nin).map(|i| ((i * 31) % 17) as f32 / 17.0 - 0.4).collect();
            let bias: Vec<f32> = (0..nout).map(|o| o as f32 * 0.1).collect();
            let mut y = vec![0.0f32; nout];
            PackedLinear::new(&weight, nout, nin).forward_one(&x, &bias, &mut y);
            for o in 0..nout {
                let want: f64 = bias[o] as f64
                    + (0..nin)
                        .map(|j| weight[o * nin + j] as f64 * x[j] as f64)
                        .sum::<f64>();
                assert!(
                    (y[o] as f64 - want).abs() < 1e-3,
                    "nout {nout} nin {nin} output {o}: {} vs {want}",
                    y[o]
                );
            }
        }
    }

    #[test]
    fn matches_the_definition() {
        if !PackedLinear::available() {
            return;
        }
        for (rows, nout, nin) in [(3, 5, 1100), (1, 5, 32), (10, 7, 2056), (13, 9, 70)] {
            let weight: Vec<f32> = (0..nout * nin)
                .map(|i| ((i * 7919) % 997) as f32 / 997.0 - 0.5)
                .collect();
            let mut g: Vec<f32> = (0..rows * nout)
                .map(|i| ((i * 31) % 17) as f32 / 17.0 - 0.4)
                .collect();
            // Output 2 carries no gradient in any row, output 4 only in row 0.
            for r in 0..rows {
                g[r * nout + 2] = 0.0;
                if r != 0 {
                    g[r * nout + 4] = 0.0;
                }
            }
            let packed = PackedLinear::new(&weight, nout, nin);
            #[cfg(target_arch = "x86_64")]
            let sets = [
                std::arch::is_x86_feature_detected!("avx512f"),
                false, // AVX2 + FMA, which `available()` guarantees
            ];
            #[cfg(not(target_arch = "x86_64"))]
            let sets = [false];
            for avx512 in sets {
                let got = packed.input_grad_with(&g, rows, avx512);
                for r in 0..rows {
                    for j in 0..nin {
                        let want: f32 = (0..nout).map(|o| g[r * nout + o] * weight[o * nin + j]).sum();
                        let at = (got[r * nin + j] - want).abs();
                        assert!(at < 1e-5, "avx512 {avx512} rows {rows} nin {nin} at ({r}, {j})");
                    }
                }
            }
        }
    }
}
