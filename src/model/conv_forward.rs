//! A convolution's forward product at one image, y = W cols + b (W: cout x ckk, cols: ckk x width
//! from im2col), with W packed once for this kernel.
//!
//! An AVX-512 tile of 8 output channels x 48 positions sums in 24 registers over ckk, reading cols
//! in place: the gemm crate packs both operands on every call, which at a small CNN's sizes (64 x
//! 288 x 288 a band) costs about as much as the multiply-adds. Each output's sum runs over k in
//! order whatever the split of positions, so a band on the team and the whole image on one thread
//! give the same bits.

/// Output channels a tile: one broadcast each per k.
const TILE: usize = 8;
/// Positions a tile: three vectors.
const WIDTH: usize = 48;

/// W as [channel tile][k][channel in tile], channels padded with zeros to whole tiles.
#[derive(Debug, Clone)]
pub struct ConvForwardWeights {
    cout: usize,
    ckk: usize,
    data: Vec<f32>,
}

impl ConvForwardWeights {
    /// From PyTorch's cout x (cin k k); None where the CPU lacks AVX-512.
    pub fn new(weight: &[f32], cout: usize, ckk: usize) -> Option<ConvForwardWeights> {
        assert_eq!(weight.len(), cout * ckk);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            let mut data = vec![0.0f32; cout.div_ceil(TILE) * ckk * TILE];
            for co in 0..cout {
                for k in 0..ckk {
                    data[((co / TILE) * ckk + k) * TILE + co % TILE] = weight[co * ckk + k];
                }
            }
            return Some(ConvForwardWeights { cout, ckk, data });
        }
        None
    }

    /// y[co][p] = bias[co] + sum_k W[co][k] cols[k][p] for p < width, row co of y at y + co
    /// y_stride.
    ///
    /// # Safety
    /// `y` is valid for writes of cout rows of `width` floats at row stride `y_stride`, and no one
    /// else touches them meanwhile.
    pub unsafe fn product(&self, cols: &[f32], width: usize, bias: &[f32], y: *mut f32, y_stride: usize) {
        assert!(cols.len() >= self.ckk * width && bias.len() >= self.cout && y_stride >= width);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `new` made this only where the CPU has AVX-512F; the caller vouches for y.
        unsafe {
            x86::product(self, cols, width, bias, y, y_stride)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (cols, width, bias, y, y_stride);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{ConvForwardWeights, TILE, WIDTH};

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn product(
        w: &ConvForwardWeights,
        cols: &[f32],
        width: usize,
        bias: &[f32],
        y: *mut f32,
        y_stride: usize,
    ) {
        let (ckk, cout) = (w.ckk, w.cout);
        let tiles = cout.div_ceil(TILE);
        assert!(w.data.len() >= tiles * ckk * TILE && cols.len() >= ckk * width);
        let (cp, wp) = (cols.as_ptr(), w.data.as_ptr());
        for p0 in (0..width).step_by(WIDTH) {
            let n = (width - p0).min(WIDTH);
            // Lanes past the row's end are masked off: not read, not written.
            let masks: [__mmask16; 3] = std::array::from_fn(|v| {
                let lanes = n.saturating_sub(16 * v).min(16);
                ((1u32 << lanes) - 1) as __mmask16
            });
            for t in 0..tiles {
                let mut acc = [[_mm512_setzero_ps(); 3]; TILE];
                for k in 0..ckk {
                    // SAFETY: k width + p0 + lanes within the masks <= ckk width <= cols.len();
                    // (t ckk + k) TILE + TILE <= data.len() (asserted above).
                    let (row, wk) = unsafe { (cp.add(k * width + p0), wp.add((t * ckk + k) * TILE)) };
                    let c: [__m512; 3] =
                        std::array::from_fn(|v| unsafe { _mm512_maskz_loadu_ps(masks[v], row.add(16 * v)) });
                    for (i, a) in acc.iter_mut().enumerate() {
                        let b = _mm512_set1_ps(unsafe { *wk.add(i) });
                        for v in 0..3 {
                            a[v] = _mm512_fmadd_ps(b, c[v], a[v]);
                        }
                    }
                }
                for (i, a) in acc.iter().enumerate() {
                    let co = t * TILE + i;
                    if co >= cout {
                        break;
                    }
                    let b = _mm512_set1_ps(bias[co]);
                    for v in 0..3 {
                        // SAFETY: row co < cout, columns p0 + 16 v + masked lanes < width: the
                        // caller's rows.
                        unsafe {
                            _mm512_mask_storeu_ps(
                                y.add(co * y_stride + p0 + 16 * v),
                                masks[v],
                                _mm512_add_ps(a[v], b),
                            )
                        };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_definition_at_ragged_sizes() {
        for (cout, ckk, width) in [(64, 288, 288), (32, 9, 676), (5, 7, 3), (13, 20, 97), (8, 1, 48)] {
            let weight: Vec<f32> = (0..cout * ckk)
                .map(|i| ((i * 7919) % 997) as f32 / 997.0 - 0.5)
                .collect();
            let cols: Vec<f32> = (0..ckk * width)
                .map(|i| ((i * 31) % 17) as f32 / 17.0 - 0.4)
                .collect();
            let bias: Vec<f32> = (0..cout).map(|o| o as f32 * 0.1).collect();
            let Some(w) = ConvForwardWeights::new(&weight, cout, ckk) else {
                return;
            };
            // One spare column a row: it must stay untouched.
            let stride = width + 1;
            let mut y = vec![7.0f32; cout * stride];
            // SAFETY: y holds cout rows of stride floats.
            unsafe { w.product(&cols, width, &bias, y.as_mut_ptr(), stride) };
            for co in 0..cout {
                for p in 0..width {
                    let want: f64 = bias[co] as f64
                        + (0..ckk)
                            .map(|k| weight[co * ckk + k] as f64 * cols[k * width + p] as f64)
                            .sum::<f64>();
                    let got = y[co * stride + p] as f64;
                    assert!(
                        (got - want).abs() < 1e-3,
                        "cout {cout} ckk {ckk} width {width} at ({co}, {p})"
                    );
                }
                assert_eq!(y[co * stride + width], 7.0, "the spare column was written");
            }
        }
    }
}
