//! Reverse-pass kernels that skip the zeros ReLU and max-pooling leave in a gradient.
//!
//! Behind a 2x2 max-pool only one position in four carries gradient, and behind a ReLU only the
//! active units do, so pulling the C rows of J back through a convolution or a linear layer with a
//! dense matrix product spends most of its multiplications on zeros. These kernels visit the
//! nonzero entries only: a convolution scatters W[co] (cin x k x k) once per nonzero output,
//! a linear layer adds the rows of W whose output carries gradient in any cotangent row.

use rayon::prelude::*;

use super::gather;

/// Below this fraction of nonzero entries the sparse kernels beat the dense products.
pub const MAX_DENSITY: f64 = 0.4;

/// Fraction of nonzero entries in a buffer.
pub fn density(values: &[f32]) -> f64 {
    let nonzero = values.iter().filter(|&&v| v != 0.0).count();
    nonzero as f64 / values.len().max(1) as f64
}

/// Geometry of a 2-D convolution, enough for its reverse pass.
#[derive(Debug, Clone, Copy)]
pub struct ConvShape {
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub hin: usize,
    pub win: usize,
    pub hout: usize,
    pub wout: usize,
}

impl ConvShape {
    /// The output index (row or column, of `outputs`) that kernel tap `t` meets from input index
    /// `i` along one axis, or None where it falls outside the output or between strides.
    #[inline(always)]
    pub fn tap_output(&self, i: usize, t: usize, outputs: usize) -> Option<usize> {
        let at = (i + self.pad).checked_sub(t)?;
        (at.is_multiple_of(self.stride) && at / self.stride < outputs).then_some(at / self.stride)
    }

    /// Where the k x k x cin input patch of output position o lies, as contiguous runs: for each
    /// kernel row inside the image, (start in a channels-last input, start in a (ki, kj, ci)
    /// patch, length), clipped to the columns inside the image.
    fn patch_runs(&self, o: usize) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        let (oh, ow) = (o / self.wout, o % self.wout);
        let x0 = (ow * self.stride) as isize - self.pad as isize;
        let kj0 = (-x0).max(0) as usize;
        let kj1 = (self.win as isize - x0).clamp(0, self.k as isize) as usize;
        let len = kj1.saturating_sub(kj0) * self.cin;
        (0..self.k).filter_map(move |ki| {
            let iy = (oh * self.stride + ki) as isize - self.pad as isize;
            if len == 0 || iy < 0 || iy >= self.hin as isize {
                return None;
            }
            let pixel = (iy * self.win as isize + x0) as usize + kj0;
            Some((pixel * self.cin, (ki * self.k + kj0) * self.cin, len))
        })
    }
}

/// dx_r = W^T g_r for a convolution, row by row in parallel, visiting only nonzero g. `weight` is
/// PyTorch's cout x cin x k x k. Returns rows x (cin hin win), channels first.
pub fn conv_input_grad(s: &ConvShape, weight: &[f32], g: &[f32], rows: usize) -> Vec<f32> {
    let in_len = s.cin * s.hin * s.win;
    let out_len = s.cout * s.hout * s.wout;
    // W with the input channel innermost, [co][ki][kj][ci], so one kernel row is one contiguous run.
    let mut wt = vec![0.0f32; weight.len()];
    for co in 0..s.cout {
        for ci in 0..s.cin {
            for kk in 0..s.k * s.k {
                wt[(co * s.k * s.k + kk) * s.cin + ci] = weight[(co * s.cin + ci) * s.k * s.k + kk];
            }
        }
    }
    let mut dx = vec![0.0f32; rows * in_len];
    dx.par_chunks_mut(in_len)
        .zip(g.par_chunks(out_len))
        .for_each_init(
            || vec![0.0f32; in_len],
            |hwc, (dx_row, g_row)| {
                hwc.fill(0.0);
                scatter_row(s, &wt, g_row, hwc);
                // Back to channels first.
                let plane = s.hin * s.win;
                for (p, pixel) in hwc.chunks(s.cin).enumerate() {
                    for (ci, &v) in pixel.iter().enumerate() {
                        dx_row[ci * plane + p] = v;
                    }
                }
            },
        );
    dx
}

/// One cotangent row into a channels-last buffer, with AVX2 where the CPU has it.
fn scatter_row(s: &ConvShape, wt: &[f32], g_row: &[f32], hwc: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { scatter_row_avx2(s, wt, g_row, hwc) };
    }
    scatter_row_body(s, wt, g_row, hwc)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn scatter_row_avx2(s: &ConvShape, wt: &[f32], g_row: &[f32], hwc: &mut [f32]) {
    scatter_row_body(s, wt, g_row, hwc)
}

/// hwc[iy][ix][ci] += g[co][oh][ow] W[co][ci][ki][kj] over nonzero g, where (iy, ix) =
/// (oh, ow) stride + (ki, kj) - pad.
#[inline(always)]
fn scatter_row_body(s: &ConvShape, wt: &[f32], g_row: &[f32], hwc: &mut [f32]) {
    let patch = s.k * s.k * s.cin;
    let hw = s.hout * s.wout;
    // Position by position, so the k x k x cin patch being summed into stays in L1 while the
    // channels that carry gradient there add their kernels to it.
    for o in 0..hw {
        for co in 0..s.cout {
            let v = g_row[co * hw + o];
            if v == 0.0 {
                continue;
            }
            let w_co = &wt[co * patch..(co + 1) * patch];
            for (at, from, len) in s.patch_runs(o) {
                let dst = &mut hwc[at..at + len];
                dst.iter_mut()
                    .zip(&w_co[from..from + len])
                    .for_each(|(d, w)| *d += v * w);
            }
        }
    }
}

/// conv_input_grad for cotangent rows that share one sparsity pattern (the C rows of J at one
/// image: the masks are the image's). Per output position, the patch of input gradient that all
/// its live channels produce is summed in registers for a block of rows at once, then added into
/// the input: a small matrix product per position instead of one scatter per nonzero. Falls back
/// to `conv_input_grad` where AVX2 and FMA are missing.
/// `gathered`, W already rearranged for the kernels (made at load), saves doing it per pass.
pub fn conv_input_grad_shared(
    s: &ConvShape,
    weight: &[f32],
    gathered: Option<&gather::GatherWeights>,
    g: &[f32],
    rows: usize,
) -> Vec<f32> {
    if gather::available() {
        let live = gather::Live::of_dense(s, g, rows);
        return gather::conv_input_grad(
            s,
            gathered.map_or(gather::ConvWeights::Plain(weight), gather::ConvWeights::Gathered),
            &live,
            g,
            s.cout * s.hout * s.wout,
            rows,
            None,
        );
    }
    conv_input_grad(s, weight, g, rows)
}

/// The input gradient of conv -> ReLU -> max-pool from the pool's output gradient, for cotangent
/// rows that share the masks of one image: each pooled entry goes straight to the convolution
/// output position its window's maximum came from (when the ReLU there is active), so neither the
/// dense scatter nor the ReLU pass is materialised. `argmax` indexes the conv output (cout x
/// positions), `maxima` is the pool's output at the image (the ReLU's output at each argmax), `g`
/// is rows x pooled entries.
/// `input_relu`, the conv's input when a ReLU made it, folds that ReLU's reverse pass in too, and
/// the result is then left channels last (the convolution before reads it in place).
/// None where the CPU lacks the vector kernels (the caller then takes the unfused path).
pub fn conv_relu_pool_input_grad(
    s: &ConvShape,
    weight: gather::ConvWeights,
    argmax: &[u32],
    maxima: &[f32],
    g: &[f32],
    rows: usize,
    input_relu: Option<&[f32]>,
) -> Option<Layout> {
    if !gather::available() {
        return None;
    }
    let hw = s.hout * s.wout;
    let live = gather::Live::of_pool_maxima(hw, argmax, argmax.len() / s.cout.max(1), maxima);
    let hwc = gather::conv_input_grad_hwc(s, weight, &live, g, argmax.len(), rows, input_relu);
    Some(match input_relu {
        Some(_) => Layout::ChannelsLast(hwc),
        None => Layout::ChannelsFirst(hwc.to_channels_first()),
    })
}

/// Input gradients as a kernel left them.
pub enum Layout {
    /// rows x (cin h w).
    ChannelsFirst(Vec<f32>),
    ChannelsLast(gather::Hwc),
}

impl Layout {
    pub fn channels_first(self) -> Vec<f32> {
        match self {
            Layout::ChannelsFirst(g) => g,
            Layout::ChannelsLast(hwc) => hwc.to_channels_first(),
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod shared {
    use std::arch::x86_64::*;

    use rayon::prelude::*;

    /// Rows summed together in registers: one accumulator per row, plus the weight vector.
    const MAX_BLOCK: usize = 12;

    /// out[r][0..padded] = sum_i vals[i][r] wt[list[i]] for the rows of a block.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn patch_block(
        nr: usize,
        list: &[u32],
        vals: &[f32],
        w: &[f32],
        stride: usize,
        cols: std::ops::Range<usize>,
        out: &mut [f32],
        out_stride: usize,
    ) {
        macro_rules! dispatch {
            ($($n:literal)*) => {
                match nr {
                    $($n => unsafe { patch_rows::<$n>(list, vals, w, stride, cols, out, out_stride) },)*
                    _ => unreachable!("blocks hold 1 to {MAX_BLOCK} rows"),
                }
            };
        }
        dispatch!(1 2 3 4 5 6 7 8 9 10 11 12);
    }

    /// out[r][j - cols.start] = sum_i vals[i][r] w[list[i]][j] for j in `cols` (whole 8-float
    /// vectors), where row k of w starts at k * stride and row r of out at r * out_stride.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn patch_rows<const R: usize>(
        list: &[u32],
        vals: &[f32],
        w: &[f32],
        stride: usize,
        cols: std::ops::Range<usize>,
        out: &mut [f32],
        out_stride: usize,
    ) {
        let width = cols.end - cols.start;
        assert!(width.is_multiple_of(8) && cols.end <= stride && width <= out_stride);
        assert!(vals.len() >= list.len() * R && out.len() >= (R - 1) * out_stride + width);
        assert!(list.iter().all(|&k| (k as usize + 1) * stride <= w.len()));
        for chunk in cols.clone().step_by(8) {
            let mut acc = [_mm256_setzero_ps(); R];
            for (i, &k) in list.iter().enumerate() {
                // SAFETY: k * stride + chunk + 8 <= w.len() (asserted above), vals index < len.
                let wv = unsafe { _mm256_loadu_ps(w.as_ptr().add(k as usize * stride + chunk)) };
                for (r, a) in acc.iter_mut().enumerate() {
                    let v = unsafe { _mm256_broadcast_ss(&*vals.as_ptr().add(i * R + r)) };
                    *a = _mm256_fmadd_ps(v, wv, *a);
                }
            }
            for (r, a) in acc.iter().enumerate() {
                // SAFETY: r * out_stride + (chunk - cols.start) + 8 <= out.len(), asserted above.
                let at = r * out_stride + chunk - cols.start;
                unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(at), *a) };
            }
        }
    }

    /// dx = g W for a linear layer, for up to MAX_BLOCK rows and nin a multiple of 8: the outputs
    /// with gradient in any row, summed in registers, column blocks over threads.
    pub fn linear_input_grad(weight: &[f32], nout: usize, nin: usize, g: &[f32], rows: usize) -> Vec<f32> {
        assert!((1..=MAX_BLOCK).contains(&rows) && nin.is_multiple_of(8));
        let active: Vec<u32> = (0..nout)
            .filter(|&o| (0..rows).any(|r| g[r * nout + o] != 0.0))
            .map(|o| o as u32)
            .collect();
        let mut vals = vec![0.0f32; active.len() * rows];
        for (i, &o) in active.iter().enumerate() {
            for r in 0..rows {
                vals[i * rows + r] = g[r * nout + o as usize];
            }
        }
        const BLOCK: usize = 1024;
        let parts: Vec<Vec<f32>> = (0..nin.div_ceil(BLOCK))
            .into_par_iter()
            .map(|b| {
                let cols = b * BLOCK..((b + 1) * BLOCK).min(nin);
                let width = cols.len();
                let mut out = vec![0.0f32; rows * width];
                // SAFETY: the caller checked AVX2 and FMA; patch_rows asserts its bounds.
                unsafe { patch_block(rows, &active, &vals, weight, nin, cols, &mut out, width) };
                out
            })
            .collect();
        let mut dx = vec![0.0f32; rows * nin];
        for (b, part) in parts.iter().enumerate() {
            let width = part.len() / rows;
            for r in 0..rows {
                dx[r * nin + b * BLOCK..][..width].copy_from_slice(&part[r * width..(r + 1) * width]);
            }
        }
        dx
    }
}

/// dx = g W for a linear layer (g: rows x nout, W: nout x nin), adding only the rows of W whose
/// output is nonzero in some cotangent row. Columns are split over threads.
pub fn linear_input_grad(weight: &[f32], nout: usize, nin: usize, g: &[f32], rows: usize) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if (1..=12).contains(&rows)
        && nin.is_multiple_of(8)
        && std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
    {
        return shared::linear_input_grad(weight, nout, nin, g, rows);
    }
    linear_input_grad_scalar(weight, nout, nin, g, rows)
}

/// `linear_input_grad` without AVX2: one axpy per live output and row.
fn linear_input_grad_scalar(weight: &[f32], nout: usize, nin: usize, g: &[f32], rows: usize) -> Vec<f32> {
    let active: Vec<usize> = (0..nout)
        .filter(|&o| (0..rows).any(|r| g[r * nout + o] != 0.0))
        .collect();
    // Column blocks small enough that `rows` of them stay in L1 while W streams past.
    const BLOCK: usize = 512;
    let blocks = nin.div_ceil(BLOCK);
    let mut out: Vec<Vec<f32>> = (0..blocks)
        .into_par_iter()
        .map(|b| {
            let (j0, j1) = (b * BLOCK, ((b + 1) * BLOCK).min(nin));
            let mut acc = vec![0.0f32; rows * (j1 - j0)];
            axpy_rows_body(&active, weight, nin, g, nout, rows, j0, j1, &mut acc);
            acc
        })
        .collect();
    let mut dx = vec![0.0f32; rows * nin];
    for (b, acc) in out.iter_mut().enumerate() {
        let (j0, width) = (b * BLOCK, acc.len() / rows.max(1));
        for r in 0..rows {
            dx[r * nin + j0..r * nin + j0 + width].copy_from_slice(&acc[r * width..(r + 1) * width]);
        }
    }
    dx
}

/// acc[r][j - j0] += g[r][o] W[o][j] for active o, j in j0..j1.
#[allow(clippy::too_many_arguments)]
fn axpy_rows_body(
    active: &[usize],
    weight: &[f32],
    nin: usize,
    g: &[f32],
    nout: usize,
    rows: usize,
    j0: usize,
    j1: usize,
    acc: &mut [f32],
) {
    let width = j1 - j0;
    for &o in active {
        let w = &weight[o * nin + j0..o * nin + j1];
        for r in 0..rows {
            let v = g[r * nout + o];
            if v != 0.0 {
                let dst = &mut acc[r * width..(r + 1) * width];
                dst.iter_mut().zip(w).for_each(|(d, x)| *d += v * x);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i + seed) * 7919) % 997) as f32 / 997.0 - 0.5)
            .collect()
    }

    /// Sparse kernels against the definition, with padding, stride and edges that clip the kernel.
    #[test]
    fn conv_matches_the_definition() {
        for (stride, pad) in [(1, 0), (1, 1), (2, 1), (2, 0)] {
            let (hin, win, k) = (7, 6, 3);
            let hout = (hin + 2 * pad - k) / stride + 1;
            let wout = (win + 2 * pad - k) / stride + 1;
            let s = ConvShape {
                cin: 5,
                cout: 4,
                k,
                stride,
                pad,
                hin,
                win,
                hout,
                wout,
            };
            let rows = 3;
            let weight = values(s.cout * s.cin * k * k, 1);
            // Two thirds of g zero.
            let g: Vec<f32> = values(rows * s.cout * hout * wout, 2)
                .iter()
                .enumerate()
                .map(|(i, &v)| if i % 3 == 0 { v } else { 0.0 })
                .collect();
            let got = conv_input_grad(&s, &weight, &g, rows);
            let shared = conv_input_grad_shared(&s, &weight, None, &g, rows);
            for (a, b) in got.iter().zip(&shared) {
                assert!(
                    (a - b).abs() < 1e-5,
                    "shared: stride {stride} pad {pad}: {a} vs {b}"
                );
            }
            // W rearranged once at load gives the same sums.
            let gathered = gather::GatherWeights::new(&s, &weight);
            let again = conv_input_grad_shared(&s, &weight, gathered.as_ref(), &g, rows);
            assert_eq!(
                shared, again,
                "shared with gathered weights: stride {stride} pad {pad}"
            );
            let mut want = vec![0.0f32; rows * s.cin * hin * win];
            for r in 0..rows {
                for co in 0..s.cout {
                    for oh in 0..hout {
                        for ow in 0..wout {
                            let v = g[((r * s.cout + co) * hout + oh) * wout + ow];
                            for ci in 0..s.cin {
                                for ki in 0..k {
                                    for kj in 0..k {
                                        let iy = (oh * stride + ki) as isize - pad as isize;
                                        let ix = (ow * stride + kj) as isize - pad as isize;
                                        if iy < 0 || ix < 0 || iy >= hin as isize || ix >= win as isize {
                                            continue;
                                        }
                                        let w = weight[((co * s.cin + ci) * k + ki) * k + kj];
                                        want[((r * s.cin + ci) * hin + iy as usize) * win + ix as usize] +=
                                            v * w;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-5, "stride {stride} pad {pad}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn linear_matches_the_definition() {
        for (rows, nout, nin) in [(3, 5, 1100), (3, 5, 1104), (10, 7, 2056)] {
            let weight = values(nout * nin, 3);
            let mut g = values(rows * nout, 4);
            // Output 2 carries no gradient in any row, output 4 only in row 1.
            for r in 0..rows {
                g[r * nout + 2] = 0.0;
                if r != 1 {
                    g[r * nout + 4] = 0.0;
                }
            }
            let got = linear_input_grad(&weight, nout, nin, &g, rows);
            for r in 0..rows {
                for j in 0..nin {
                    let want: f32 = (0..nout).map(|o| g[r * nout + o] * weight[o * nin + j]).sum();
                    assert!((got[r * nin + j] - want).abs() < 1e-5);
                }
            }
        }
    }
}
