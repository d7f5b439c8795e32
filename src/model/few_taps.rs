//! The reverse pass of a first convolution with few taps per output channel (cin k k <= 16:
//! one-channel images and 3 x 3 kernels, the medium CNN's 1 -> 32), where a product with 9 rows
//! and col2im cost more than the multiply-adds: computed directly, one vector of 16 taps per
//! position and row. AVX-512 only; elsewhere the caller keeps its product path. (A direct forward
//! pass of the same shape, eight channels at a time, measured no faster than im2col + gemm.)

use super::gather::Hwc;
use super::sparse::ConvShape;
use super::{scratch, team};

/// The input gradient (rows x cin hin win, channels first) of a convolution with at most 16 taps
/// per output channel (cin k k: a first layer on one-channel images), from its output gradient
/// channels last: at each output position, the taps' sums over the channels nonzero there in some
/// row, one vector of 16 taps per row, added into the input pixels they reach. None where the CPU
/// lacks AVX-512 or the convolution has more taps (the caller's product path then runs).
pub fn input_grad(s: &ConvShape, weight: &[f32], g: &Hwc) -> Option<Vec<f32>> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") && s.cin * s.k * s.k <= 16 {
        return Some(x86::input_grad(s, weight, g));
    }
    let _ = (s, weight, g);
    None
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::*;

    pub(super) fn input_grad(s: &ConvShape, weight: &[f32], g: &Hwc) -> Vec<f32> {
        let taps = s.cin * s.k * s.k;
        assert!(taps <= 16 && weight.len() == s.cout * taps && g.cin == s.cout);
        assert!(g.plane == s.hout * s.wout && g.cinp >= s.cout);
        // W's taps of each output channel, padded to one vector.
        let mut wt = vec![0.0f32; s.cout * 16];
        for co in 0..s.cout {
            wt[co * 16..co * 16 + taps].copy_from_slice(&weight[co * taps..(co + 1) * taps]);
        }
        let in_len = s.cin * s.hin * s.win;
        // Taps add into dx, so it starts at 0.
        let mut dx = scratch::zeroed(g.rows * in_len);
        let per_block = g.per_block.max(1);
        team::for_each_chunk_mut(&mut dx, per_block * in_len, |b, out| {
            let nr = out.len() / in_len;
            macro_rules! dispatch {
                ($($n:literal)*) => {
                    match nr {
                        // SAFETY: AVX-512F was detected by the caller.
                        $($n => unsafe { input_grad_block::<$n>(s, &wt, g, b * per_block, out) },)*
                        _ => unreachable!("blocks hold 1 to 12 rows"),
                    }
                };
            }
            dispatch!(1 2 3 4 5 6 7 8 9 10 11 12);
        });
        dx
    }

    /// Rows r0.. r0 + R (one block of `g`) of `few_taps_input_grad` into `out` (R x in_len).
    #[target_feature(enable = "avx512f")]
    unsafe fn input_grad_block<const R: usize>(
        s: &ConvShape,
        wt: &[f32],
        g: &Hwc,
        r0: usize,
        out: &mut [f32],
    ) {
        let in_len = s.cin * s.hin * s.win;
        let (offset, step) = g.row(r0);
        assert!(out.len() >= R * in_len && wt.len() >= s.cout * 16);
        assert!(step >= R * g.cinp && offset + (g.plane - 1) * step + R * g.cinp <= g.data.len());
        let (gp, wp) = (g.data.as_ptr(), wt.as_ptr());
        let mut sums = [0.0f32; 32];
        // Stride 1 without padding: every tap lands inside the image.
        let inside = s.stride == 1 && s.pad == 0 && s.hin >= s.hout + s.k - 1 && s.win >= s.wout + s.k - 1;
        let row_mask: u16 = (1u16 << s.k) - 1;
        for oy in 0..s.hout {
            for ox in 0..s.wout {
                let p = oy * s.wout + ox;
                // SAFETY: pixel p's rows lie inside data (asserted above); row r at r cinp.
                let at = unsafe { gp.add(offset + p * step) };
                // The channels nonzero in some row (ReLU'd gradients share the mask).
                let mut live = 0u64;
                for r in 0..R {
                    for c0 in (0..s.cout).step_by(16) {
                        let n = (s.cout - c0).min(16);
                        let m = if n == 16 { u16::MAX } else { (1u16 << n) - 1 };
                        let v = unsafe { _mm512_maskz_loadu_ps(m, at.add(r * g.cinp + c0)) };
                        let nz = _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(v, _mm512_setzero_ps());
                        live |= (nz as u64) << c0;
                    }
                }
                if live == 0 {
                    continue;
                }
                let mut acc = [_mm512_setzero_ps(); R];
                while live != 0 {
                    let co = live.trailing_zeros() as usize;
                    live &= live - 1;
                    // SAFETY: co < cout: wt row co and channel co of every row exist.
                    let w = unsafe { _mm512_loadu_ps(wp.add(co * 16)) };
                    for (r, a) in acc.iter_mut().enumerate() {
                        let v = unsafe { _mm512_set1_ps(*at.add(r * g.cinp + co)) };
                        *a = _mm512_fmadd_ps(v, w, *a);
                    }
                }
                for (r, a) in acc.iter().enumerate() {
                    // SAFETY: the first 16 of 32 floats.
                    unsafe { _mm512_storeu_ps(sums.as_mut_ptr(), *a) };
                    let dst = &mut out[r * in_len..(r + 1) * in_len];
                    if inside {
                        // Each kernel row's k taps added at once: sums[t0..t0 + k] into the k
                        // input pixels (oy + ki, ox..ox + k) of channel ci.
                        for ci in 0..s.cin {
                            for ki in 0..s.k {
                                let t0 = (ci * s.k + ki) * s.k;
                                let at = (ci * s.hin + oy + ki) * s.win + ox;
                                assert!(at + s.k <= dst.len());
                                // SAFETY: t0 + 16 <= 32; k pixels from `at` inside dst (asserted).
                                unsafe {
                                    let v = _mm512_loadu_ps(sums.as_ptr().add(t0));
                                    let d = dst.as_mut_ptr().add(at);
                                    let sum = _mm512_add_ps(_mm512_maskz_loadu_ps(row_mask, d), v);
                                    _mm512_mask_storeu_ps(d, row_mask, sum);
                                }
                            }
                        }
                        continue;
                    }
                    let mut t = 0;
                    for ci in 0..s.cin {
                        for ki in 0..s.k {
                            let iy = (oy * s.stride + ki) as isize - s.pad as isize;
                            for kj in 0..s.k {
                                let ix = (ox * s.stride + kj) as isize - s.pad as isize;
                                if iy >= 0 && ix >= 0 && (iy as usize) < s.hin && (ix as usize) < s.win {
                                    dst[(ci * s.hin + iy as usize) * s.win + ix as usize] += sums[t];
                                }
                                t += 1;
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i + seed) * 7919) % 997) as f32 / 997.0 - 0.5)
            .collect()
    }

    /// dx[r][ci][iy][ix] by the definition, from a dense g (rows x cout x positions).
    fn definition(s: &ConvShape, weight: &[f32], g: &[f32], rows: usize) -> Vec<f32> {
        let k = s.k;
        let mut want = vec![0.0f32; rows * s.cin * s.hin * s.win];
        for r in 0..rows {
            for co in 0..s.cout {
                for oh in 0..s.hout {
                    for ow in 0..s.wout {
                        let v = g[((r * s.cout + co) * s.hout + oh) * s.wout + ow];
                        for ci in 0..s.cin {
                            for ki in 0..k {
                                for kj in 0..k {
                                    let iy = (oh * s.stride + ki) as isize - s.pad as isize;
                                    let ix = (ow * s.stride + kj) as isize - s.pad as isize;
                                    if iy < 0 || ix < 0 || iy >= s.hin as isize || ix >= s.win as isize {
                                        continue;
                                    }
                                    let w = weight[((co * s.cin + ci) * k + ki) * k + kj];
                                    want[((r * s.cin + ci) * s.hin + iy as usize) * s.win + ix as usize] +=
                                        v * w;
                                }
                            }
                        }
                    }
                }
            }
        }
        want
    }

    #[test]
    fn input_grad_matches_the_definition() {
        // A first layer on 28 x 28 images (the medium CNN's), and one with padding and stride 2.
        for (s, rows, per_block) in [
            (
                ConvShape {
                    cin: 1,
                    cout: 32,
                    k: 3,
                    stride: 1,
                    pad: 0,
                    hin: 28,
                    win: 28,
                    hout: 26,
                    wout: 26,
                },
                10,
                5,
            ),
            (
                ConvShape {
                    cin: 1,
                    cout: 20,
                    k: 3,
                    stride: 2,
                    pad: 1,
                    hin: 9,
                    win: 9,
                    hout: 5,
                    wout: 5,
                },
                3,
                2,
            ),
        ] {
            let plane = s.hout * s.wout;
            let cinp = s.cout.div_ceil(32) * 32;
            let weight = values(s.cout * s.k * s.k, 3);
            // Channels last in blocks, two thirds zero in every row (as after a ReLU).
            let dense = values(rows * s.cout * plane, 11);
            let zero = |co: usize, p: usize| !(co * 7 + p * 3).is_multiple_of(3);
            let mut data = vec![0.0f32; rows * plane * cinp];
            for r in 0..rows {
                let (b, within) = (r / per_block, r % per_block);
                let nr = per_block.min(rows - b * per_block);
                for co in 0..s.cout {
                    for p in 0..plane {
                        if !zero(co, p) {
                            data[b * per_block * plane * cinp + (p * nr + within) * cinp + co] =
                                dense[(r * s.cout + co) * plane + p];
                        }
                    }
                }
            }
            let hwc = Hwc {
                data,
                rows,
                per_block,
                cin: s.cout,
                cinp,
                plane,
            };
            let Some(got) = input_grad(&s, &weight, &hwc) else {
                return;
            };
            let want = definition(&s, &weight, &hwc.to_channels_first(), rows);
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!((a - b).abs() < 1e-5, "stride {} at {i}: {a} vs {b}", s.stride);
            }
        }
    }
}
