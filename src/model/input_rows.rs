//! A linear layer's W^T, row j holding input j's weights, for one image whose input is mostly
//! zero: the output of a ReLU, through max-pooling and flattening (half of the medium CNN's 9216
//! pooled features are 0).
//!
//! Forward: y = b + sum over the nonzero x_j of x_j W^T[j], reading only those rows of W.
//! Reverse: dx_r[j] = sum_o g_r[o] W[o][j] only where x_j != 0. Where x_j = 0 the ReLU behind it
//! had output 0, and its reverse pass (ReLU'(0) = 0, a select, not a product) discards dx_r[j]
//! whatever it is, so those columns are written as 0 without the products. The rows read are the
//! ones the forward pass has just read, so they come from cache.

use super::matmul::SharedColumns;
use super::{scratch, team};

/// Inputs per part of a pass: the parts are fixed, so sums come out the same on any number of
/// threads; a part reads about a quarter of a megabyte of W^T for the medium CNN.
const CHUNK: usize = 1024;

/// Outputs summed at once in the forward pass: eight AVX-512 (sixteen AVX2) vectors of
/// accumulators, W^T's rows padded to a multiple of this.
const PANEL: usize = 128;

/// Rows summed at once in the reverse pass: two accumulator vectors per row, plus two weight
/// vectors and a broadcast, within 32 (AVX-512) or 16 (AVX2) vector registers.
const MAX_ROWS_512: usize = 12;
const MAX_ROWS_256: usize = 6;

/// W^T with rows padded to whole panels; only built where every weight is finite (0 * inf would
/// be NaN, which skipping a zero input cannot reproduce).
#[derive(Debug, Clone)]
pub struct InputRows {
    nout: usize,
    nin: usize,
    stride: usize,
    data: Vec<f32>,
}

impl InputRows {
    /// None where the CPU lacks the kernels, or a weight is not finite.
    pub fn new(weight: &[f32], nout: usize, nin: usize) -> Option<InputRows> {
        assert_eq!(weight.len(), nout * nin);
        if !super::packed::PackedLinear::available() || !weight.iter().all(|w| w.is_finite()) {
            return None;
        }
        let stride = nout.div_ceil(PANEL) * PANEL;
        // The gather kernel's offsets are 32-bit.
        if nin * stride >= i32::MAX as usize {
            return None;
        }
        let mut data = vec![0.0f32; nin * stride];
        for o in 0..nout {
            for (j, &w) in weight[o * nin..(o + 1) * nin].iter().enumerate() {
                data[j * stride + o] = w;
            }
        }
        Some(InputRows {
            nout,
            nin,
            stride,
            data,
        })
    }

    /// y = W x + b for one input, over the inputs that are not 0 (NaN included).
    pub fn forward(&self, x: &[f32], bias: &[f32], y: &mut [f32]) {
        self.forward_with(x, bias, y, avx512())
    }

    /// `forward` with the instruction set chosen (AVX-512, or AVX2 + FMA).
    fn forward_with(&self, x: &[f32], bias: &[f32], y: &mut [f32], avx512: bool) {
        let (nout, nin, stride) = (self.nout, self.nin, self.stride);
        assert!(x.len() == nin && bias.len() == nout && y.len() == nout);
        let chunks = nin.div_ceil(CHUNK);
        // Every part writes its whole partial sum.
        let mut partial = scratch::take(chunks * stride);
        team::for_each_chunk_mut(&mut partial, stride, |c, out| {
            let inputs = c * CHUNK..((c + 1) * CHUNK).min(nin);
            // SAFETY: `new` checked the features; the kernels assert their bounds.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                if avx512 {
                    x86::forward_avx512(self, x, inputs, out)
                } else {
                    x86::forward_avx2(self, x, inputs, out)
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (avx512, inputs, out);
        });
        for (o, v) in y.iter_mut().enumerate() {
            // The parts in order, then the bias.
            *v = (0..chunks).map(|c| partial[c * stride + o]).sum::<f32>() + bias[o];
        }
        scratch::give(partial);
    }

    /// dx = g W for `rows` cotangent rows (rows x nout) at the columns where `x` (this layer's
    /// input) is not 0, and 0 elsewhere: only for an input that is a ReLU's output, whose reverse
    /// pass discards those columns (see the module's note). Outputs 0 in every row are skipped.
    pub fn input_grad_live(&self, x: &[f32], g: &[f32], rows: usize) -> Vec<f32> {
        self.input_grad_live_with(x, g, rows, avx512())
    }

    /// `input_grad_live` with the instruction set chosen.
    fn input_grad_live_with(&self, x: &[f32], g: &[f32], rows: usize, avx512: bool) -> Vec<f32> {
        let (nout, nin) = (self.nout, self.nin);
        assert!(x.len() == nin && g.len() == rows * nout);
        let active: Vec<u32> = (0..nout)
            .filter(|&o| (0..rows).any(|r| g[r * nout + o] != 0.0))
            .map(|o| o as u32)
            .collect();
        let max_rows = if avx512 { MAX_ROWS_512 } else { MAX_ROWS_256 };
        // vals[block][a][r]: the active outputs' values, row-minor within each block of rows.
        let blocks: Vec<(usize, usize, Vec<f32>)> = (0..rows)
            .step_by(max_rows)
            .map(|r0| {
                let nr = max_rows.min(rows - r0);
                let mut vals = vec![0.0f32; active.len() * nr];
                for (a, &o) in active.iter().enumerate() {
                    for r in 0..nr {
                        vals[a * nr + r] = g[(r0 + r) * nout + o as usize];
                    }
                }
                (r0, nr, vals)
            })
            .collect();
        // Every column of every row is written below (0 or a sum).
        let mut dx = scratch::take(rows * nin);
        let columns = SharedColumns::new(&mut dx, rows, nin);
        team::run(nin.div_ceil(CHUNK), &|c| {
            let inputs = c * CHUNK..((c + 1) * CHUNK).min(nin);
            let live: Vec<u32> = inputs
                .clone()
                .filter(|&j| x[j] != 0.0)
                .map(|j| j as u32)
                .collect();
            for (r0, nr, vals) in &blocks {
                let out: Vec<*mut f32> = (*r0..r0 + nr)
                    .map(|r| {
                        // SAFETY: part c alone writes the columns of its inputs.
                        let row = unsafe { columns.row_mut(r, inputs.start, inputs.len()) };
                        row.fill(0.0);
                        row.as_mut_ptr()
                    })
                    .collect();
                // SAFETY: as above; `new` checked the features; the kernels assert their bounds.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    if avx512 {
                        x86::reverse_avx512(self, &live, &active, vals, inputs.start, &out)
                    } else {
                        x86::reverse_avx2(self, &live, &active, vals, inputs.start, &out)
                    }
                }
            }
        });
        dx
    }
}

fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{InputRows, PANEL};

    macro_rules! kernels {
        ($forward:ident, $reverse:ident, $rows:ident, $feature:literal, $lanes:literal,
         [$($n:literal)*], $vec:ty, $zero:ident, $load:ident, $set1:ident, $fma:ident,
         $store:ident, $transpose:ident) => {
            /// out[o] = sum over j in `inputs` with x_j != 0 of x_j W^T[j][o], for every o < stride.
            #[target_feature(enable = $feature)]
            pub(super) unsafe fn $forward(
                w: &InputRows,
                x: &[f32],
                inputs: std::ops::Range<usize>,
                out: &mut [f32],
            ) {
                const V: usize = PANEL / $lanes;
                let stride = w.stride;
                assert!(inputs.end <= x.len() && inputs.end * stride <= w.data.len());
                assert!(out.len() == stride && stride % PANEL == 0);
                let wp = w.data.as_ptr();
                for p in (0..stride).step_by(PANEL) {
                    let mut acc = [$zero(); V];
                    for j in inputs.clone() {
                        let v = x[j];
                        if v == 0.0 {
                            continue;
                        }
                        let xb = $set1(v);
                        // SAFETY: j stride + p + PANEL <= data.len() (asserted above).
                        let row = unsafe { wp.add(j * stride + p) };
                        for (k, a) in acc.iter_mut().enumerate() {
                            *a = $fma(xb, unsafe { $load(row.add(k * $lanes)) }, *a);
                        }
                    }
                    for (k, a) in acc.iter().enumerate() {
                        // SAFETY: p + PANEL <= stride = out.len().
                        unsafe { $store(out.as_mut_ptr().add(p + k * $lanes), *a) };
                    }
                }
            }

            /// dx's rows (`out[r]` points at row r's column `j0`) at the inputs `live`: sum over a of
            /// vals[a][r] W^T[j][active[a]]. 2 L inputs at a time: their rows of W^T, transposed in
            /// registers into a tile [o][2 L] (L1), then two vectors of sums per row, each summed
            /// over the active outputs in order.
            #[target_feature(enable = $feature)]
            unsafe fn $rows<const R: usize>(
                w: &InputRows,
                live: &[u32],
                active: &[u32],
                vals: &[f32],
                j0: usize,
                out: &[*mut f32],
            ) {
                const L: usize = $lanes;
                let stride = w.stride;
                assert!(vals.len() >= active.len() * R && out.len() >= R);
                assert!(active.iter().all(|&o| (o as usize) < w.nout));
                assert!(live.iter().all(|&j| (j as usize) < w.nin && j as usize >= j0));
                assert!(w.data.len() >= w.nin * stride);
                // The chunks of L outputs that hold an active one: only those are transposed.
                let mut chunks: Vec<usize> = active.iter().map(|&o| o as usize / L).collect();
                chunks.dedup();
                let mut tile = vec![0.0f32; stride * 2 * L];
                let (wp, vp, tp) = (w.data.as_ptr(), vals.as_ptr(), tile.as_mut_ptr());
                let mut sums = [0.0f32; 2 * L];
                for group in live.chunks(2 * L) {
                    // A short group repeats its first input; those lanes are not stored.
                    let mut rows = [wp; 2 * L];
                    for (k, row) in rows.iter_mut().enumerate() {
                        let j = group.get(k).unwrap_or(&group[0]);
                        // SAFETY: j < nin, so row j lies inside data (asserted).
                        *row = unsafe { wp.add(*j as usize * stride) };
                    }
                    for &c in &chunks {
                        for half in 0..2 {
                            let mut block = [$zero(); L];
                            for (b, row) in block.iter_mut().zip(&rows[half * L..]) {
                                // SAFETY: c L + L <= stride.
                                *b = unsafe { $load(row.add(c * L)) };
                            }
                            for (i, col) in $transpose(&block).iter().enumerate() {
                                // SAFETY: ((c L + i) 2 + half) L + L <= stride 2 L = tile.len().
                                unsafe { $store(tp.add(((c * L + i) * 2 + half) * L), *col) };
                            }
                        }
                    }
                    let mut acc = [[$zero(); 2]; R];
                    for (a, &o) in active.iter().enumerate() {
                        // SAFETY: o 2 L + 2 L <= tile.len(); a < active.len(), r < R.
                        let t = unsafe { tp.add(o as usize * 2 * L) };
                        let (w0, w1): ($vec, $vec) = unsafe { ($load(t), $load(t.add(L))) };
                        for (r, s) in acc.iter_mut().enumerate() {
                            let v = unsafe { $set1(*vp.add(a * R + r)) };
                            s[0] = $fma(v, w0, s[0]);
                            s[1] = $fma(v, w1, s[1]);
                        }
                    }
                    for (r, s) in acc.iter().enumerate() {
                        unsafe {
                            $store(sums.as_mut_ptr(), s[0]);
                            $store(sums.as_mut_ptr().add(L), s[1]);
                        }
                        for (k, &j) in group.iter().enumerate() {
                            // SAFETY: j - j0 is inside the caller's columns of row r.
                            unsafe { *out[r].add(j as usize - j0) = sums[k] };
                        }
                    }
                }
            }

            #[target_feature(enable = $feature)]
            pub(super) unsafe fn $reverse(
                w: &InputRows,
                live: &[u32],
                active: &[u32],
                vals: &[f32],
                j0: usize,
                out: &[*mut f32],
            ) {
                if live.is_empty() {
                    return;
                }
                match out.len() {
                    $($n => unsafe { $rows::<$n>(w, live, active, vals, j0, out) },)*
                    _ => unreachable!("row blocks are bounded by the caller"),
                }
            }
        };
    }

    kernels!(
        forward_avx512,
        reverse_avx512,
        rows_avx512,
        "avx512f",
        16,
        [1 2 3 4 5 6 7 8 9 10 11 12],
        __m512,
        _mm512_setzero_ps,
        _mm512_loadu_ps,
        _mm512_set1_ps,
        _mm512_fmadd_ps,
        _mm512_storeu_ps,
        transpose16
    );
    kernels!(
        forward_avx2,
        reverse_avx2,
        rows_avx2,
        "avx2,fma",
        8,
        [1 2 3 4 5 6],
        __m256,
        _mm256_setzero_ps,
        _mm256_loadu_ps,
        _mm256_set1_ps,
        _mm256_fmadd_ps,
        _mm256_storeu_ps,
        transpose8
    );

    /// The 16 x 16 transpose: column e of the rows r[0..16] as one vector (unpack pairs of rows,
    /// then pairs of pairs, then 128-bit lanes twice).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn transpose16(r: &[__m512; 16]) -> [__m512; 16] {
        let pd = _mm512_castps_pd;
        let ps = _mm512_castpd_ps;
        let mut t = [_mm512_setzero_ps(); 16];
        for p in 0..8 {
            t[2 * p] = _mm512_unpacklo_ps(r[2 * p], r[2 * p + 1]);
            t[2 * p + 1] = _mm512_unpackhi_ps(r[2 * p], r[2 * p + 1]);
        }
        // u[4 g + m], 128-bit lane l: rows 4g..4g + 4 at element 4 l + m.
        let mut u = [_mm512_setzero_ps(); 16];
        for g in 0..4 {
            let (a, b, c, d) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
            u[4 * g] = ps(_mm512_unpacklo_pd(pd(a), pd(c)));
            u[4 * g + 1] = ps(_mm512_unpackhi_pd(pd(a), pd(c)));
            u[4 * g + 2] = ps(_mm512_unpacklo_pd(pd(b), pd(d)));
            u[4 * g + 3] = ps(_mm512_unpackhi_pd(pd(b), pd(d)));
        }
        // v[m] and v[4 + m]: rows 0..8 at elements m, 8 + m (0x88) and 4 + m, 12 + m (0xdd);
        // v[8 + m] and v[12 + m] the same for rows 8..16.
        let mut v = [_mm512_setzero_ps(); 16];
        for h in 0..2 {
            for m in 0..4 {
                let (a, b) = (u[8 * h + m], u[8 * h + 4 + m]);
                v[8 * h + m] = _mm512_shuffle_f32x4::<0x88>(a, b);
                v[8 * h + 4 + m] = _mm512_shuffle_f32x4::<0xdd>(a, b);
            }
        }
        let mut out = [_mm512_setzero_ps(); 16];
        for m in 0..4 {
            out[m] = _mm512_shuffle_f32x4::<0x88>(v[m], v[8 + m]);
            out[8 + m] = _mm512_shuffle_f32x4::<0xdd>(v[m], v[8 + m]);
            out[4 + m] = _mm512_shuffle_f32x4::<0x88>(v[4 + m], v[12 + m]);
            out[12 + m] = _mm512_shuffle_f32x4::<0xdd>(v[4 + m], v[12 + m]);
        }
        out
    }

    /// The 8 x 8 transpose (AVX2).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn transpose8(r: &[__m256; 8]) -> [__m256; 8] {
        let mut t = [_mm256_setzero_ps(); 8];
        for p in 0..4 {
            t[2 * p] = _mm256_unpacklo_ps(r[2 * p], r[2 * p + 1]);
            t[2 * p + 1] = _mm256_unpackhi_ps(r[2 * p], r[2 * p + 1]);
        }
        // u[4 g + m], 128-bit lane l: rows 4g..4g + 4 at element 4 l + m.
        let mut u = [_mm256_setzero_ps(); 8];
        for g in 0..2 {
            let (a, b, c, d) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
            u[4 * g] = _mm256_shuffle_ps::<0x44>(a, c);
            u[4 * g + 1] = _mm256_shuffle_ps::<0xee>(a, c);
            u[4 * g + 2] = _mm256_shuffle_ps::<0x44>(b, d);
            u[4 * g + 3] = _mm256_shuffle_ps::<0xee>(b, d);
        }
        let mut out = [_mm256_setzero_ps(); 8];
        for m in 0..4 {
            out[m] = _mm256_permute2f128_ps::<0x20>(u[m], u[4 + m]);
            out[4 + m] = _mm256_permute2f128_ps::<0x31>(u[m], u[4 + m]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AVX-512 where the CPU has it, and AVX2 + FMA (which `new` guarantees).
    fn sets() -> Vec<bool> {
        if avx512() {
            vec![true, false]
        } else {
            vec![false]
        }
    }

    fn weight(nout: usize, nin: usize) -> Vec<f32> {
        (0..nout * nin)
            .map(|i| ((i * 7919) % 997) as f32 / 997.0 - 0.5)
            .collect()
    }

    /// An input like a pooled ReLU output: about half zeros, in runs and scattered.
    fn relu_like(nin: usize) -> Vec<f32> {
        (0..nin)
            .map(|j| {
                if (j * 13) % 7 < 3 || (j / 40) % 5 == 0 {
                    0.0
                } else {
                    ((j * 31) % 17) as f32 / 17.0
                }
            })
            .collect()
    }

    #[test]
    fn forward_matches_the_definition() {
        for (nout, nin) in [(128, 9216), (5, 1100), (130, 70), (1, 2049)] {
            let w = weight(nout, nin);
            let Some(rows) = InputRows::new(&w, nout, nin) else {
                return;
            };
            let x = relu_like(nin);
            let bias: Vec<f32> = (0..nout).map(|o| o as f32 * 0.1).collect();
            for set in sets() {
                let mut y = vec![0.0f32; nout];
                rows.forward_with(&x, &bias, &mut y, set);
                for o in 0..nout {
                    let want: f64 =
                        bias[o] as f64 + (0..nin).map(|j| w[o * nin + j] as f64 * x[j] as f64).sum::<f64>();
                    assert!(
                        (y[o] as f64 - want).abs() < 1e-3,
                        "{nout} x {nin}, output {o}: {} vs {want}",
                        y[o]
                    );
                }
            }
        }
    }

    #[test]
    fn a_nan_input_reaches_every_output() {
        let (nout, nin) = (20, 300);
        let Some(rows) = InputRows::new(&weight(nout, nin), nout, nin) else {
            return;
        };
        let mut x = relu_like(nin);
        x[17] = f32::NAN;
        let mut y = vec![0.0f32; nout];
        rows.forward(&x, &vec![0.0; nout], &mut y);
        assert!(y.iter().all(|v| v.is_nan()));
    }

    #[test]
    fn reverse_matches_the_definition_at_live_inputs_and_is_zero_elsewhere() {
        for (rows, nout, nin) in [
            (10, 128, 9216),
            (3, 5, 1100),
            (13, 9, 70),
            (25, 130, 2100),
            (1, 7, 16),
        ] {
            let w = weight(nout, nin);
            let Some(packed) = InputRows::new(&w, nout, nin) else {
                return;
            };
            let x = relu_like(nin);
            let mut g: Vec<f32> = (0..rows * nout)
                .map(|i| ((i * 31) % 17) as f32 / 17.0 - 0.4)
                .collect();
            // Output 2 carries no gradient in any row, output 4 only in row 0.
            for r in 0..rows {
                g[r * nout + 2] = 0.0;
                if r != 0 {
                    g[r * nout + 4.min(nout - 1)] = 0.0;
                }
            }
            for set in sets() {
                let got = packed.input_grad_live_with(&x, &g, rows, set);
                for r in 0..rows {
                    for j in 0..nin {
                        let want: f32 = if x[j] == 0.0 {
                            0.0
                        } else {
                            (0..nout).map(|o| g[r * nout + o] * w[o * nin + j]).sum()
                        };
                        let err = (got[r * nin + j] - want).abs();
                        assert!(
                            err < 1e-5,
                            "rows {rows} {nout} x {nin} at ({r}, {j}): {} vs {want}",
                            got[r * nin + j]
                        );
                    }
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_register_transposes_transpose() {
        use std::arch::x86_64::*;
        if std::arch::is_x86_feature_detected!("avx512f") {
            let m: Vec<f32> = (0..256).map(|i| i as f32).collect();
            // SAFETY: AVX-512F detected above; 16 rows of 16 floats.
            let cols = unsafe {
                let rows: [__m512; 16] = std::array::from_fn(|k| _mm512_loadu_ps(m.as_ptr().add(16 * k)));
                x86::transpose16(&rows)
            };
            for (e, c) in cols.iter().enumerate() {
                let mut got = [0.0f32; 16];
                unsafe { _mm512_storeu_ps(got.as_mut_ptr(), *c) };
                assert_eq!(got.to_vec(), (0..16).map(|k| m[16 * k + e]).collect::<Vec<_>>());
            }
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            let m: Vec<f32> = (0..64).map(|i| i as f32).collect();
            // SAFETY: AVX2 detected above; 8 rows of 8 floats.
            let cols = unsafe {
                let rows: [__m256; 8] = std::array::from_fn(|k| _mm256_loadu_ps(m.as_ptr().add(8 * k)));
                x86::transpose8(&rows)
            };
            for (e, c) in cols.iter().enumerate() {
                let mut got = [0.0f32; 8];
                unsafe { _mm256_storeu_ps(got.as_mut_ptr(), *c) };
                assert_eq!(got.to_vec(), (0..8).map(|k| m[8 * k + e]).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn weights_that_are_not_finite_keep_the_dense_path() {
        let mut w = weight(4, 40);
        w[7] = f32::INFINITY;
        assert!(InputRows::new(&w, 4, 40).is_none());
    }
}
