//! The graph engine's convolution reverse kernel for cotangent rows that share one image's masks
//! (the C rows of J): weights packed once at load, only the live gradient entries and only the taps
//! that land inside the image visited.
//!
//! dx_r[ci][ih][iw] = sum over (co, oh, ow) live, (ki, kj) with ih = oh s + ki d - pad (inside) of
//! W[co][ci][ki][kj] g_r[co][oh][ow]. Per output position, each kernel row's taps that land inside
//! the image meet a run of input pixels (iw0.. in one image row); with the weights packed
//! [co][ki][kj][ci] and the input gradient kept channels last, both sides of that run are contiguous,
//! so the run is summed in registers for a block of rows over the position's live channels and
//! added once. Behind a ReLU about half the entries are live; at small spatial sizes most taps of a
//! padded 3x3 kernel meet padding: neither costs a multiply here.

use rayon::prelude::*;

/// A convolution's geometry (one group), enough for its reverse pass.
#[derive(Debug, Clone, Copy)]
pub struct ConvGeometry {
    pub cin: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    /// Top and left padding.
    pub pad: [usize; 2],
    pub dilation: [usize; 2],
    pub hin: usize,
    pub win: usize,
    pub hout: usize,
    pub wout: usize,
}

/// Rows of one register block (the kernels keep one accumulator per row).
const MAX_BLOCK: usize = 12;

impl ConvGeometry {
    fn in_len(&self) -> usize {
        self.cin * self.hin * self.win
    }

    fn out_len(&self) -> usize {
        self.cout * self.hout * self.wout
    }

    /// Taps along one axis that land inside the image from output index o: first..end.
    fn taps(o: usize, k: usize, s: usize, d: usize, pad: usize, len: usize) -> (usize, usize) {
        let at = |t: usize| (o * s + t * d) as isize - pad as isize;
        let first = (0..k).find(|&t| at(t) >= 0).unwrap_or(k);
        let end = (first..k).find(|&t| at(t) >= len as isize).unwrap_or(k);
        (first, end.max(first))
    }
}

/// PyTorch's [co][ci][ki][kj] weights as [co][ki][kj][ci] (done once, when the model is loaded).
pub fn pack_taps(geo: &ConvGeometry, weight: &[f32]) -> Vec<f32> {
    let kk = geo.kh * geo.kw;
    assert_eq!(weight.len(), geo.cout * geo.cin * kk, "weight size");
    let mut w = vec![0.0f32; weight.len()];
    for co in 0..geo.cout {
        for ci in 0..geo.cin {
            for t in 0..kk {
                w[(co * kk + t) * geo.cin + ci] = weight[(co * geo.cin + ci) * kk + t];
            }
        }
    }
    w
}

/// For each output position, the output channels whose gradient is nonzero in some row.
fn live_channels(geo: &ConvGeometry, g: &[f32], rows: usize) -> Vec<Vec<u32>> {
    let hw = geo.hout * geo.wout;
    let out_len = geo.out_len();
    let mut any = vec![false; out_len];
    for row in g.chunks(out_len).take(rows) {
        any.iter_mut().zip(row).for_each(|(a, &v)| *a |= v != 0.0);
    }
    let mut live = vec![Vec::new(); hw];
    for (j, _) in any.iter().enumerate().filter(|(_, &a)| a) {
        live[j % hw].push((j / hw) as u32);
    }
    live
}

/// Fraction of live entries, over the first row.
pub fn density(g: &[f32]) -> f64 {
    g.iter().filter(|&&v| v != 0.0).count() as f64 / g.len().max(1) as f64
}

/// dx_r = W^T g_r for `rows` cotangents sharing one sparsity pattern; `packed` from `pack_taps`.
/// Returns rows x (cin hin win), channels first.
pub fn conv_input_grad(geo: &ConvGeometry, packed: &[f32], g: &[f32], rows: usize) -> Vec<f32> {
    conv_input_grad_with(geo, packed, g, rows, Simd::detect())
}

fn conv_input_grad_with(geo: &ConvGeometry, packed: &[f32], g: &[f32], rows: usize, simd: Simd) -> Vec<f32> {
    assert_eq!(g.len(), rows * geo.out_len(), "gradient size");
    assert_eq!(
        packed.len(),
        geo.cout * geo.kh * geo.kw * geo.cin,
        "packed weight size"
    );
    let in_len = geo.in_len();
    let live = live_channels(geo, g, rows);
    let mut dx = vec![0.0f32; rows * in_len];
    if rows == 0 || in_len == 0 {
        return dx;
    }
    // Blocks of rows, at least one per thread when there is enough work to share.
    let work = rows * geo.out_len() * geo.cin * geo.kh * geo.kw;
    let threads = if work < 1 << 18 {
        1
    } else {
        rayon::current_num_threads()
    };
    let blocks = rows.div_ceil(MAX_BLOCK).max(threads.min(rows));
    let per = rows.div_ceil(blocks);
    let run = |(b, dxb): (usize, &mut [f32])| block(geo, packed, &live, g, b * per, dxb, simd);
    if blocks == 1 {
        run((0, &mut dx));
    } else {
        dx.par_chunks_mut(per * in_len).enumerate().for_each(run);
    }
    dx
}

/// The instruction set the run kernel uses, chosen at run time.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Simd {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Simd {
    /// This machine's instruction sets, widest first.
    #[cfg(test)]
    fn all() -> Vec<Simd> {
        let mut all = vec![Simd::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                all.push(Simd::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                all.push(Simd::Avx512);
            }
        }
        all
    }

    fn detect() -> Simd {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Simd::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                return Simd::Avx2;
            }
        }
        Simd::Scalar
    }
}

/// One run: `len` contiguous weights of each listed channel (from `w_off` within its row of
/// `stride`), weighted by that channel's value in each of the block's rows, added at `dst` of each
/// row of `acc` (rows `row_len` apart).
struct Run<'a> {
    list: &'a [u32],
    vals: &'a [f32],
    w: &'a [f32],
    stride: usize,
    w_off: usize,
    len: usize,
    dst: usize,
    row_len: usize,
}

/// The input gradients of rows r0.. (as many as `dxb` holds).
fn block(
    geo: &ConvGeometry,
    packed: &[f32],
    live: &[Vec<u32>],
    g: &[f32],
    r0: usize,
    dxb: &mut [f32],
    simd: Simd,
) {
    let in_len = geo.in_len();
    let out_len = geo.out_len();
    let hw = geo.hout * geo.wout;
    let nr = dxb.len() / in_len;
    let stride = geo.kh * geo.kw * geo.cin;
    let most = live.iter().map(Vec::len).max().unwrap_or(0);
    // Channels last: [r][ih][iw][ci].
    let mut hwc = vec![0.0f32; nr * in_len];
    for b0 in (0..nr).step_by(MAX_BLOCK) {
        let nb = MAX_BLOCK.min(nr - b0);
        let acc = &mut hwc[b0 * in_len..(b0 + nb) * in_len];
        let mut vals = vec![0.0f32; most * nb];
        for (o, list) in live.iter().enumerate() {
            if list.is_empty() {
                continue;
            }
            let (oh, ow) = (o / geo.wout, o % geo.wout);
            for (i, &co) in list.iter().enumerate() {
                for r in 0..nb {
                    vals[i * nb + r] = g[(r0 + b0 + r) * out_len + co as usize * hw + o];
                }
            }
            let (ki0, ki1) =
                ConvGeometry::taps(oh, geo.kh, geo.stride[0], geo.dilation[0], geo.pad[0], geo.hin);
            let (kj0, kj1) =
                ConvGeometry::taps(ow, geo.kw, geo.stride[1], geo.dilation[1], geo.pad[1], geo.win);
            if kj0 == kj1 {
                continue;
            }
            for ki in ki0..ki1 {
                let ih = oh * geo.stride[0] + ki * geo.dilation[0] - geo.pad[0];
                // With dilation 1 the row's taps meet adjacent pixels: one run; else one per tap.
                let runs = if geo.dilation[1] == 1 {
                    vec![(kj0, kj1 - kj0)]
                } else {
                    (kj0..kj1).map(|kj| (kj, 1)).collect()
                };
                for (kj, taps) in runs {
                    let iw = ow * geo.stride[1] + kj * geo.dilation[1] - geo.pad[1];
                    let run = Run {
                        list,
                        vals: &vals[..list.len() * nb],
                        w: packed,
                        stride,
                        w_off: (ki * geo.kw + kj) * geo.cin,
                        len: taps * geo.cin,
                        dst: (ih * geo.win + iw) * geo.cin,
                        row_len: in_len,
                    };
                    add_run(&run, nb, acc, simd);
                }
            }
        }
    }
    // Back to channels first.
    let plane = geo.hin * geo.win;
    for (dx_row, hwc_row) in dxb.chunks_mut(in_len).zip(hwc.chunks(in_len)) {
        for p in 0..plane {
            for ci in 0..geo.cin {
                dx_row[ci * plane + p] = hwc_row[p * geo.cin + ci];
            }
        }
    }
}

fn add_run(run: &Run, nb: usize, acc: &mut [f32], simd: Simd) {
    assert!(run
        .list
        .iter()
        .all(|&c| (c as usize) * run.stride + run.w_off + run.len <= run.w.len()));
    assert!(run.vals.len() >= run.list.len() * nb);
    assert!(nb >= 1 && (nb - 1) * run.row_len + run.dst + run.len <= acc.len());
    let done = match simd {
        Simd::Scalar => 0,
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 and FMA were detected; every index was bounds-checked above.
        Simd::Avx2 => unsafe { x86::avx2(run, nb, acc) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512F was detected; every index was bounds-checked above.
        Simd::Avx512 => unsafe { x86::avx512(run, nb, acc) },
    };
    // The rest (or all, without SIMD): one sum per row and weight.
    for j in done..run.len {
        for r in 0..nb {
            let mut s = 0.0f32;
            for (i, &c) in run.list.iter().enumerate() {
                s += run.vals[i * nb + r] * run.w[c as usize * run.stride + run.w_off + j];
            }
            acc[r * run.row_len + run.dst + j] += s;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Run, MAX_BLOCK};
    use std::arch::x86_64::*;

    macro_rules! dispatch {
        ($f:ident, $run:expr, $nb:expr, $acc:expr; $($n:literal)*) => {
            match $nb {
                $($n => unsafe { $f::<$n>($run, $acc) },)*
                _ => unreachable!("blocks hold 1 to {MAX_BLOCK} rows"),
            }
        };
    }

    macro_rules! kernel {
        ($name:ident, $rows:ident, $feature:literal, $width:literal, $reg:ty, $zero:ident, $load:ident,
         $store:ident, $set1:ident, $fma:ident, $add:ident) => {
            /// Whole vectors of the run; returns how many weights it covered.
            #[target_feature(enable = $feature)]
            pub unsafe fn $name(run: &Run, nb: usize, acc: &mut [f32]) -> usize {
                dispatch!($rows, run, nb, acc; 1 2 3 4 5 6 7 8 9 10 11 12)
            }

            #[target_feature(enable = $feature)]
            unsafe fn $rows<const R: usize>(run: &Run, acc: &mut [f32]) -> usize {
                let whole = run.len / $width * $width;
                let w = run.w.as_ptr();
                let out = acc.as_mut_ptr();
                for j in (0..whole).step_by($width) {
                    let mut sum: [$reg; R] = [$zero(); R];
                    for (i, &c) in run.list.iter().enumerate() {
                        // SAFETY: c stride + w_off + len <= w.len() and i R + r < vals.len()
                        // (checked by add_run).
                        let wv = unsafe { $load(w.add(c as usize * run.stride + run.w_off + j)) };
                        for (r, s) in sum.iter_mut().enumerate() {
                            let v = $set1(unsafe { *run.vals.get_unchecked(i * R + r) });
                            *s = $fma(v, wv, *s);
                        }
                    }
                    for (r, s) in sum.iter().enumerate() {
                        // SAFETY: r row_len + dst + len <= acc.len() (checked by add_run).
                        unsafe {
                            let p = out.add(r * run.row_len + run.dst + j);
                            $store(p, $add($load(p), *s));
                        }
                    }
                }
                whole
            }
        };
    }

    kernel!(
        avx2,
        avx2_rows,
        "avx2,fma",
        8,
        __m256,
        _mm256_setzero_ps,
        _mm256_loadu_ps,
        _mm256_storeu_ps,
        _mm256_set1_ps,
        _mm256_fmadd_ps,
        _mm256_add_ps
    );

    /// The run in 16-float vectors, the last one masked: returns the whole length.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn avx512(run: &Run, nb: usize, acc: &mut [f32]) -> usize {
        dispatch!(avx512_rows, run, nb, acc; 1 2 3 4 5 6 7 8 9 10 11 12)
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn avx512_rows<const R: usize>(run: &Run, acc: &mut [f32]) -> usize {
        let w = run.w.as_ptr();
        let out = acc.as_mut_ptr();
        for j in (0..run.len).step_by(16) {
            // Lanes j..min(j + 16, len): the masked lanes are neither read nor written.
            let mask: __mmask16 = if run.len - j >= 16 {
                0xffff
            } else {
                (1u16 << (run.len - j)) - 1
            };
            let mut sum = [_mm512_setzero_ps(); R];
            for (i, &c) in run.list.iter().enumerate() {
                // SAFETY: the unmasked lanes lie below c stride + w_off + len <= w.len(), and
                // i R + r < vals.len() (checked by add_run).
                let wv =
                    unsafe { _mm512_maskz_loadu_ps(mask, w.add(c as usize * run.stride + run.w_off + j)) };
                for (r, s) in sum.iter_mut().enumerate() {
                    let v = _mm512_set1_ps(unsafe { *run.vals.get_unchecked(i * R + r) });
                    *s = _mm512_fmadd_ps(v, wv, *s);
                }
            }
            for (r, s) in sum.iter().enumerate() {
                // SAFETY: the unmasked lanes lie below r row_len + dst + len <= acc.len().
                unsafe {
                    let p = out.add(r * run.row_len + run.dst + j);
                    _mm512_mask_storeu_ps(p, mask, _mm512_add_ps(_mm512_maskz_loadu_ps(mask, p), *s));
                }
            }
        }
        run.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, entry by entry.
    fn naive(geo: &ConvGeometry, weight: &[f32], g: &[f32], rows: usize) -> Vec<f32> {
        let mut dx = vec![0.0f32; rows * geo.in_len()];
        for r in 0..rows {
            for co in 0..geo.cout {
                for oh in 0..geo.hout {
                    for ow in 0..geo.wout {
                        let gv = g[r * geo.out_len() + (co * geo.hout + oh) * geo.wout + ow];
                        for ci in 0..geo.cin {
                            for ki in 0..geo.kh {
                                for kj in 0..geo.kw {
                                    let ih = (oh * geo.stride[0] + ki * geo.dilation[0]) as isize
                                        - geo.pad[0] as isize;
                                    let iw = (ow * geo.stride[1] + kj * geo.dilation[1]) as isize
                                        - geo.pad[1] as isize;
                                    if ih < 0 || iw < 0 || ih >= geo.hin as isize || iw >= geo.win as isize {
                                        continue;
                                    }
                                    let w = weight[((co * geo.cin + ci) * geo.kh + ki) * geo.kw + kj];
                                    dx[r * geo.in_len()
                                        + (ci * geo.hin + ih as usize) * geo.win
                                        + iw as usize] += w * gv;
                                }
                            }
                        }
                    }
                }
            }
        }
        dx
    }

    #[test]
    fn matches_the_definition_on_strided_dilated_padded_sparse_convolutions() {
        let shapes = [
            // cin, cout, kh, kw, stride, pad, dilation, hin, win
            (3, 5, 7, 7, [2, 2], [3, 3], [1, 1], 11, 9),
            (16, 8, 3, 3, [1, 1], [1, 1], [1, 1], 2, 2),
            (9, 4, 3, 2, [2, 1], [1, 0], [2, 3], 8, 10),
            (20, 13, 1, 1, [2, 2], [0, 0], [1, 1], 5, 5),
            (32, 17, 3, 3, [1, 1], [1, 1], [1, 1], 1, 1),
        ];
        for (cin, cout, kh, kw, stride, pad, dilation, hin, win) in shapes {
            let hout = (hin + 2 * pad[0] - dilation[0] * (kh - 1) - 1) / stride[0] + 1;
            let wout = (win + 2 * pad[1] - dilation[1] * (kw - 1) - 1) / stride[1] + 1;
            let geo = ConvGeometry {
                cin,
                cout,
                kh,
                kw,
                stride,
                pad,
                dilation,
                hin,
                win,
                hout,
                wout,
            };
            let weight: Vec<f32> = (0..cout * cin * kh * kw)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
                .collect();
            let packed = pack_taps(&geo, &weight);
            for rows in [1, 5, 13, 30] {
                // A shared mask (every third entry dead), values differing per row.
                let g: Vec<f32> = (0..rows * geo.out_len())
                    .map(|i| {
                        let j = i % geo.out_len();
                        if j % 3 == 1 {
                            0.0
                        } else {
                            ((i * 53 % 97) as f32 - 48.0) / 48.0
                        }
                    })
                    .collect();
                let want = naive(&geo, &weight, &g, rows);
                for simd in Simd::all() {
                    let got = conv_input_grad_with(&geo, &packed, &g, rows, simd);
                    let err = want
                        .iter()
                        .zip(&got)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0, f32::max);
                    assert!(err < 1e-4, "{geo:?} rows {rows} {simd:?}: max error {err}");
                }
            }
        }
    }
}
