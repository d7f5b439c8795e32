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

/// Weights of one channel chunk of the reverse kernel (floats): a quarter of a 1 MB L2.
const CHUNK_FLOATS: usize = 1 << 16;

impl ConvGeometry {
    /// A linear layer nin -> nout as a 1x1 convolution at one pixel (its [nout][nin] weights are
    /// already packed).
    pub fn pointwise(nin: usize, nout: usize) -> ConvGeometry {
        ConvGeometry {
            cin: nin,
            cout: nout,
            kh: 1,
            kw: 1,
            stride: [1, 1],
            pad: [0, 0],
            dilation: [1, 1],
            hin: 1,
            win: 1,
            hout: 1,
            wout: 1,
        }
    }

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

/// For each output position o, the output channels whose gradient is nonzero in some row, in
/// channel order: `chans[starts[o] + o..starts[o + 1] + o]` (one list for all positions, no
/// allocation each; each position's list is followed by one spare slot, see `of`).
struct Live {
    starts: Vec<u32>,
    chans: Vec<u32>,
}

impl Live {
    fn of(geo: &ConvGeometry, g: &[f32], rows: usize) -> Live {
        let hw = geo.hout * geo.wout;
        let out_len = geo.out_len();
        // Bit patterns without the sign OR-ed over the rows: nonzero exactly where some row's value
        // is (v != 0.0: -0.0 is zero, NaN is not); plain integer ORs, over threads when big.
        let mut any = vec![0u32; out_len];
        let fold = |k: usize, part: &mut [u32]| {
            for row in g.chunks(out_len).take(rows) {
                let row = &row[k * LIVE_PART..][..part.len()];
                part.iter_mut()
                    .zip(row)
                    .for_each(|(a, &v)| *a |= v.to_bits() << 1);
            }
        };
        if rows * out_len >= 1 << 18 {
            super::team::for_each_chunk_mut(&mut any, LIVE_PART, fold);
        } else {
            any.chunks_mut(LIVE_PART)
                .enumerate()
                .for_each(|(k, part)| fold(k, part));
        }
        // Counts per position, then their prefix sums, then the channels in order.
        let mut starts = vec![0u32; hw + 1];
        for plane in any.chunks(hw.max(1)) {
            for (n, &a) in starts[1..].iter_mut().zip(plane) {
                *n += (a != 0) as u32;
            }
        }
        for o in 0..hw {
            starts[o + 1] += starts[o];
        }
        // Without a branch per entry (the pattern behind a ReLU is random): every entry writes its
        // channel at its position's next slot and only a live one moves past it, so a dead entry
        // of a full list lands in that list's spare slot.
        let mut chans = vec![0u32; starts[hw] as usize + hw];
        let mut next: Vec<u32> = (0..hw).map(|o| starts[o] + o as u32).collect();
        for (co, plane) in any.chunks(hw.max(1)).enumerate() {
            for (slot, &a) in next.iter_mut().zip(plane) {
                chans[*slot as usize] = co as u32;
                *slot += (a != 0) as u32;
            }
        }
        Live { starts, chans }
    }

    fn at(&self, o: usize) -> &[u32] {
        &self.chans[self.starts[o] as usize + o..self.starts[o + 1] as usize + o]
    }
}

/// Entries per part of `Live::of`'s OR over the rows.
const LIVE_PART: usize = 1 << 14;

/// Fraction of live entries, over the first row.
pub fn density(g: &[f32]) -> f64 {
    g.iter().filter(|&&v| v != 0.0).count() as f64 / g.len().max(1) as f64
}

/// dx_r = W^T g_r for `rows` cotangents sharing one sparsity pattern; `packed` from `pack_taps`.
/// Writes rows x (cin hin win), channels first, into `dx`.
pub fn conv_input_grad(geo: &ConvGeometry, packed: &[f32], g: &[f32], rows: usize, dx: &mut [f32]) {
    conv_input_grad_with(geo, packed, g, rows, dx, Simd::detect())
}

fn conv_input_grad_with(
    geo: &ConvGeometry,
    packed: &[f32],
    g: &[f32],
    rows: usize,
    dx: &mut [f32],
    simd: Simd,
) {
    assert_eq!(g.len(), rows * geo.out_len(), "gradient size");
    assert_eq!(
        packed.len(),
        geo.cout * geo.kh * geo.kw * geo.cin,
        "packed weight size"
    );
    let in_len = geo.in_len();
    assert_eq!(dx.len(), rows * in_len, "input gradient size");
    let live = Live::of(geo, g, rows);
    if rows == 0 || in_len == 0 {
        return;
    }
    // Blocks of rows, at least one per thread when there is enough work to share.
    let work = rows * geo.out_len() * geo.cin * geo.kh * geo.kw;
    let threads = if work < 1 << 18 { 1 } else { super::team::threads() };
    let blocks = rows.div_ceil(MAX_BLOCK).max(threads.min(rows));
    let per = rows.div_ceil(blocks);
    let run = |(b, dxb): (usize, &mut [f32])| block(geo, packed, &live, g, b * per, dxb, simd);
    if blocks == 1 {
        run((0, dx));
    } else {
        super::team::for_each_chunk_mut(dx, per * in_len, |b, dxb| run((b, dxb)));
    }
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
/// `stride`), weighted by that channel's value in each of the block's rows (`vals`, [channel][row]),
/// added at `dst` of each row of `acc` (rows `row_len` apart).
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
fn block(geo: &ConvGeometry, packed: &[f32], live: &Live, g: &[f32], r0: usize, dxb: &mut [f32], simd: Simd) {
    let in_len = geo.in_len();
    let out_len = geo.out_len();
    let hw = geo.hout * geo.wout;
    let nr = dxb.len() / in_len;
    let stride = geo.kh * geo.kw * geo.cin;
    // Channels last, one register block of rows at a time, the rows inside each image row:
    // [ih][r][iw][ci], so the runs of one position for all rows lie within a few KB.
    let mut hwc = vec![0.0f32; MAX_BLOCK.min(nr) * in_len];
    // Channels in chunks whose weights stay in cache while every position uses them (at 2x2 each
    // of resnet18's layer3 weights would otherwise come from memory once per position).
    let chunk = (CHUNK_FLOATS / stride.max(1)).clamp(1, geo.cout.max(1));
    let chunks = geo.cout.div_ceil(chunk);
    // A position's values, [channel][row]: gathered once from the rows where they lie, read by
    // all of the position's runs (no transposed copy of the whole gradient).
    let mut vals = vec![0.0f32; geo.cout.min(chunk) * MAX_BLOCK.min(nr)];
    for b0 in (0..nr).step_by(MAX_BLOCK) {
        let nb = MAX_BLOCK.min(nr - b0);
        let acc = &mut hwc[..nb * in_len];
        acc.fill(0.0);
        let rows = &g[(r0 + b0) * out_len..(r0 + b0 + nb) * out_len];
        for c0 in (0..chunks).map(|k| (k * chunk) as u32) {
            let c1 = c0 + chunk as u32;
            for o in 0..hw {
                let all = live.at(o);
                // The lists are sorted by channel.
                let list = if chunks == 1 {
                    all
                } else {
                    let from = all.partition_point(|&c| c < c0);
                    &all[from..from + all[from..].partition_point(|&c| c < c1)]
                };
                if list.is_empty() {
                    continue;
                }
                let (oh, ow) = (o / geo.wout, o % geo.wout);
                let (ki0, ki1) =
                    ConvGeometry::taps(oh, geo.kh, geo.stride[0], geo.dilation[0], geo.pad[0], geo.hin);
                let (kj0, kj1) =
                    ConvGeometry::taps(ow, geo.kw, geo.stride[1], geo.dilation[1], geo.pad[1], geo.win);
                if kj0 == kj1 || ki0 == ki1 {
                    continue;
                }
                for (v, &c) in vals.chunks_exact_mut(nb).zip(list) {
                    let at = c as usize * hw + o;
                    for (r, v) in v.iter_mut().enumerate() {
                        *v = rows[r * out_len + at];
                    }
                }
                // With dilation 1 a kernel row's taps meet adjacent pixels: one run; else one per tap.
                let (runs, taps) = if geo.dilation[1] == 1 {
                    (1, kj1 - kj0)
                } else {
                    (kj1 - kj0, 1)
                };
                for ki in ki0..ki1 {
                    let ih = oh * geo.stride[0] + ki * geo.dilation[0] - geo.pad[0];
                    for kj in (kj0..).take(runs) {
                        let iw = ow * geo.stride[1] + kj * geo.dilation[1] - geo.pad[1];
                        let run = Run {
                            list,
                            vals: &vals[..list.len() * nb],
                            w: packed,
                            stride,
                            w_off: (ki * geo.kw + kj) * geo.cin,
                            len: taps * geo.cin,
                            dst: (ih * nb * geo.win + iw) * geo.cin,
                            row_len: geo.win * geo.cin,
                        };
                        add_run(&run, nb, acc, simd);
                    }
                }
            }
        }
        // Back to channels first.
        let line = geo.win * geo.cin;
        let plane = geo.hin * geo.win;
        for (r, dx_row) in dxb[b0 * in_len..(b0 + nb) * in_len]
            .chunks_mut(in_len)
            .enumerate()
        {
            for ih in 0..geo.hin {
                // One image row: read from cache, written as cin sequential runs.
                let src = &acc[(ih * nb + r) * line..][..line];
                to_channels_first(src, geo.cin, geo.win, dx_row, plane, ih * geo.win, simd);
            }
        }
    }
}

/// dst[ci plane + off + iw] = src[iw cin + ci]: one image row from channels last to channels first.
fn to_channels_first(
    src: &[f32],
    cin: usize,
    win: usize,
    dst: &mut [f32],
    plane: usize,
    off: usize,
    simd: Simd,
) {
    assert!(src.len() >= win * cin && (cin == 0 || (cin - 1) * plane + off + win <= dst.len()));
    #[cfg(target_arch = "x86_64")]
    if simd == Simd::Avx512 && win * cin < 1 << 30 {
        // SAFETY: AVX-512F was detected; the bounds were checked above.
        unsafe { x86::to_channels_first(src, cin, win, dst, plane, off) };
        return;
    }
    let _ = simd;
    for ci in 0..cin {
        let d = &mut dst[ci * plane + off..][..win];
        for (d, &v) in d.iter_mut().zip(src[ci..].iter().step_by(cin)) {
            *d = v;
        }
    }
}

fn add_run(run: &Run, nb: usize, acc: &mut [f32], simd: Simd) {
    // The lists are sorted (`Live::of` builds them in channel order), so the last channel bounds
    // them all: O(1) per run instead of a pass over the list.
    debug_assert!(run.list.windows(2).all(|p| p[0] < p[1]));
    assert!(run.w_off + run.len <= run.stride);
    assert!(run
        .list
        .last()
        .is_none_or(|&c| (c as usize + 1) * run.stride <= run.w.len()));
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
        // Lanes past the run's end are masked: neither read nor written.
        let mask = |n: usize| -> __mmask16 {
            if n >= 16 {
                0xffff
            } else {
                (1u16 << n) - 1
            }
        };
        let mut j = 0;
        while j < run.len {
            let left = run.len - j;
            // Two vectors per weight row when there are, so each broadcast feeds two products.
            if left > 16 {
                // SAFETY: as avx512's, for lanes j..j + 32 masked to the run.
                unsafe { avx512_cols::<R, 2>(run, acc, j, mask(left - 16)) };
                j += 32;
            } else {
                // SAFETY: as above, lanes j..j + 16.
                unsafe { avx512_cols::<R, 1>(run, acc, j, mask(left)) };
                j += 16;
            }
        }
        run.len
    }

    /// V vectors of the run from lane j for R rows, the last vector masked by `last`.
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512_cols<const R: usize, const V: usize>(
        run: &Run,
        acc: &mut [f32],
        j: usize,
        last: __mmask16,
    ) {
        let w = run.w.as_ptr();
        let out = acc.as_mut_ptr();
        let mut masks = [0xffff as __mmask16; V];
        masks[V - 1] = last;
        let mut sum = [[_mm512_setzero_ps(); V]; R];
        for (i, &c) in run.list.iter().enumerate() {
            // SAFETY: the unmasked lanes lie below c stride + w_off + len <= w.len(), and
            // i R + r < vals.len() (checked by add_run).
            let base = unsafe { w.add(c as usize * run.stride + run.w_off + j) };
            let mut wv = [_mm512_setzero_ps(); V];
            for v in 0..V {
                wv[v] = unsafe { _mm512_maskz_loadu_ps(masks[v], base.add(16 * v)) };
            }
            for (r, s) in sum.iter_mut().enumerate() {
                let b = _mm512_set1_ps(unsafe { *run.vals.get_unchecked(i * R + r) });
                for v in 0..V {
                    s[v] = _mm512_fmadd_ps(b, wv[v], s[v]);
                }
            }
        }
        for (r, s) in sum.iter().enumerate() {
            for v in 0..V {
                // SAFETY: the unmasked lanes lie below r row_len + dst + len <= acc.len().
                unsafe {
                    let p = out.add(r * run.row_len + run.dst + j + 16 * v);
                    _mm512_mask_storeu_ps(
                        p,
                        masks[v],
                        _mm512_add_ps(_mm512_maskz_loadu_ps(masks[v], p), s[v]),
                    );
                }
            }
        }
    }

    /// `super::to_channels_first` by gathers: 16 pixels of one channel per instruction.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn to_channels_first(
        src: &[f32],
        cin: usize,
        win: usize,
        dst: &mut [f32],
        plane: usize,
        off: usize,
    ) {
        // Bounds checked by the caller: src holds win cin values, dst (cin - 1) plane + off + win.
        let index = _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            _mm512_set1_epi32(cin as i32),
        );
        for ci in 0..cin {
            let mut iw = 0;
            while iw < win {
                let left = win - iw;
                let mask: __mmask16 = if left >= 16 { 0xffff } else { (1u16 << left) - 1 };
                // SAFETY: the unmasked lanes read src[(iw + l) cin + ci] with iw + l < win and write
                // dst[ci plane + off + iw + l], inside the bounds above.
                unsafe {
                    let v = _mm512_mask_i32gather_ps::<4>(
                        _mm512_setzero_ps(),
                        mask,
                        index,
                        src.as_ptr().add(iw * cin + ci),
                    );
                    _mm512_mask_storeu_ps(dst.as_mut_ptr().add(ci * plane + off + iw), mask, v);
                }
                iw += 16;
            }
        }
    }

    /// sums[j] = sum over runs of W[row0 + j stride + w_off..][..len] . x[x_off..][..len], j < k.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dot_rows(
        w: &[f32],
        row0: usize,
        stride: usize,
        k: usize,
        x: &[f32],
        runs: &[(usize, usize, usize)],
        sums: &mut [f32; 4],
    ) {
        assert!((1..=4).contains(&k) && row0 + k * stride <= w.len());
        assert!(runs
            .iter()
            .all(|&(wo, xo, n)| wo + n <= stride && xo + n <= x.len()));
        let mut acc = [_mm512_setzero_ps(); 4];
        for &(w_off, x_off, len) in runs {
            for j in (0..len).step_by(16) {
                let mask: __mmask16 = if len - j >= 16 {
                    0xffff
                } else {
                    (1u16 << (len - j)) - 1
                };
                // SAFETY: unmasked lanes lie inside the run, asserted above.
                let xv = unsafe { _mm512_maskz_loadu_ps(mask, x.as_ptr().add(x_off + j)) };
                for (r, a) in acc.iter_mut().enumerate().take(k) {
                    let p = row0 + r * stride + w_off + j;
                    let wv = unsafe { _mm512_maskz_loadu_ps(mask, w.as_ptr().add(p)) };
                    *a = _mm512_fmadd_ps(wv, xv, *a);
                }
            }
        }
        for (s, a) in sums.iter_mut().zip(&acc) {
            *s = _mm512_reduce_add_ps(*a);
        }
    }

    /// `depthwise_channel` compiled for AVX-512 (each 16-row update one vector operation).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn depthwise_channel(geo: &super::ConvGeometry, w: &[f32], g: &[f32], d: &mut [f32]) {
        super::depthwise_channel(geo, w, g, d)
    }
}

/// Whether `conv_forward_direct` has its fast path on this machine (else im2col and a product).
pub fn has_direct_forward() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        Simd::detect() == Simd::Avx512
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The forward pass of one image with the packed weights, visiting only taps inside the image:
/// y[co][o] = bias[co] + sum over o's runs of W[co][run] . x_hwc[run]. For small images, where
/// im2col's product has too few columns to use a matrix kernel well; each weight row is read
/// from memory once and reused from cache across positions. Needs `has_direct_forward`.
pub fn conv_forward_direct(geo: &ConvGeometry, packed: &[f32], bias: &[f32], x: &[f32], y: &mut [f32]) {
    let hw = geo.hout * geo.wout;
    let plane = geo.hin * geo.win;
    assert_eq!(x.len(), geo.in_len(), "input size");
    assert_eq!(y.len(), geo.out_len(), "output size");
    assert_eq!(bias.len(), geo.cout, "bias size");
    let stride = geo.kh * geo.kw * geo.cin;
    assert_eq!(packed.len(), geo.cout * stride, "packed weight size");
    // Channels last, so a kernel row's taps meet one contiguous run of the input.
    let mut hwc = vec![0.0f32; x.len()];
    for ci in 0..geo.cin {
        for p in 0..plane {
            hwc[p * geo.cin + ci] = x[ci * plane + p];
        }
    }
    // Each position's runs: (weight offset, input offset, length).
    let mut runs: Vec<Vec<(usize, usize, usize)>> = vec![Vec::new(); hw];
    for (o, list) in runs.iter_mut().enumerate() {
        let (oh, ow) = (o / geo.wout, o % geo.wout);
        let (ki0, ki1) = ConvGeometry::taps(oh, geo.kh, geo.stride[0], geo.dilation[0], geo.pad[0], geo.hin);
        let (kj0, kj1) = ConvGeometry::taps(ow, geo.kw, geo.stride[1], geo.dilation[1], geo.pad[1], geo.win);
        for ki in ki0..ki1 {
            let ih = oh * geo.stride[0] + ki * geo.dilation[0] - geo.pad[0];
            let taps: Vec<(usize, usize)> = if geo.dilation[1] == 1 {
                vec![(kj0, kj1 - kj0)]
            } else {
                (kj0..kj1).map(|kj| (kj, 1)).collect()
            };
            for (kj, n) in taps.into_iter().filter(|&(_, n)| n > 0) {
                let iw = ow * geo.stride[1] + kj * geo.dilation[1] - geo.pad[1];
                list.push((
                    (ki * geo.kw + kj) * geo.cin,
                    (ih * geo.win + iw) * geo.cin,
                    n * geo.cin,
                ));
            }
        }
    }
    // Four output channels at a time share each input load; channel blocks over threads.
    let per_task = if geo.out_len() * stride < 1 << 18 {
        geo.cout
    } else {
        (geo.cout.div_ceil(super::team::threads() * 4) * 4).max(4)
    };
    let task = |(t, yt): (usize, &mut [f32])| {
        let co0 = t * per_task;
        let n = yt.len() / hw;
        for c in (0..n).step_by(4) {
            let k = 4.min(n - c);
            for (o, list) in runs.iter().enumerate() {
                let mut sums = [0.0f32; 4];
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX-512F is required of the caller (has_direct_forward); runs lie inside
                // each weight row (w_off + len <= stride) and inside hwc (x_off + len <= in_len).
                unsafe {
                    x86::dot_rows(packed, (co0 + c) * stride, stride, k, &hwc, list, &mut sums)
                };
                for (j, s) in sums[..k].iter().enumerate() {
                    yt[(c + j) * hw + o] = s + bias[co0 + c + j];
                }
            }
        }
    };
    if per_task >= geo.cout {
        task((0, y));
    } else {
        super::team::for_each_chunk_mut(y, per_task * hw, |t, yt| task((t, yt)));
    }
}

/// Rows of one depthwise block: one 16-float vector per (channel, pixel).
const DEPTH_ROWS: usize = 16;

/// Output indices o in 0..out along one axis whose input o s + t d - pad lies in 0..len.
fn valid_outputs(out: usize, t: usize, s: usize, d: usize, pad: usize, len: usize) -> std::ops::Range<usize> {
    let off = t * d;
    let first = pad.saturating_sub(off).div_ceil(s);
    let end = (len + pad).saturating_sub(off).div_ceil(s).min(out);
    first.min(end)..end
}

/// dx_r = W^T g_r for a depthwise convolution (cin = cout = groups, weight [ch][kh][kw]) over
/// `rows` cotangents, written into dx (rows x ch hin win). The rows of a block sit side by side in
/// one vector per (channel, pixel), so each (tap, position) is one vector multiply-add for 16 rows
/// rather than 16 scalar ones behind a loop each (mobilenet's depthwise layers at 2x2 have runs of
/// one or two pixels).
pub fn depthwise_input_grad(geo: &ConvGeometry, weight: &[f32], g: &[f32], rows: usize, dx: &mut [f32]) {
    let ch = geo.cout;
    assert_eq!(geo.cin, ch, "depthwise: one input channel per output channel");
    let kk = geo.kh * geo.kw;
    let (hw, plane) = (geo.hout * geo.wout, geo.hin * geo.win);
    assert_eq!(weight.len(), ch * kk, "weight size");
    assert_eq!(g.len(), rows * ch * hw, "gradient size");
    assert_eq!(dx.len(), rows * ch * plane, "input gradient size");
    let (in_len, out_len) = (ch * plane, ch * hw);
    #[cfg(target_arch = "x86_64")]
    let wide = Simd::detect() == Simd::Avx512;
    let mut gt = vec![0.0f32; out_len * DEPTH_ROWS];
    let mut dt = vec![0.0f32; in_len * DEPTH_ROWS];
    for r0 in (0..rows).step_by(DEPTH_ROWS) {
        let nb = DEPTH_ROWS.min(rows - r0);
        gt.fill(0.0);
        for r in 0..nb {
            for (j, &v) in g[(r0 + r) * out_len..][..out_len].iter().enumerate() {
                gt[j * DEPTH_ROWS + r] = v;
            }
        }
        let work = |(c, d): (usize, &mut [f32])| {
            d.fill(0.0);
            let w = &weight[c * kk..(c + 1) * kk];
            let gc = &gt[c * hw * DEPTH_ROWS..(c + 1) * hw * DEPTH_ROWS];
            #[cfg(target_arch = "x86_64")]
            if wide {
                // SAFETY: AVX-512F was detected.
                unsafe { x86::depthwise_channel(geo, w, gc, d) };
                return;
            }
            depthwise_channel(geo, w, gc, d);
        };
        if rows * (in_len + out_len) * kk >= 1 << 18 {
            super::team::for_each_chunk_mut(&mut dt, plane * DEPTH_ROWS, |k, d| work((k, d)));
        } else {
            dt.chunks_mut(plane * DEPTH_ROWS).enumerate().for_each(work);
        }
        for r in 0..nb {
            for (j, v) in dx[(r0 + r) * in_len..][..in_len].iter_mut().enumerate() {
                *v = dt[j * DEPTH_ROWS + r];
            }
        }
    }
}

/// One channel of `depthwise_input_grad`: d[i][..] += w[t] g[o][..] over taps and positions.
#[inline(always)]
fn depthwise_channel(geo: &ConvGeometry, w: &[f32], g: &[f32], d: &mut [f32]) {
    const L: usize = DEPTH_ROWS;
    for ki in 0..geo.kh {
        let ohs = valid_outputs(geo.hout, ki, geo.stride[0], geo.dilation[0], geo.pad[0], geo.hin);
        for kj in 0..geo.kw {
            let ows = valid_outputs(geo.wout, kj, geo.stride[1], geo.dilation[1], geo.pad[1], geo.win);
            let wv = w[ki * geo.kw + kj];
            for oh in ohs.clone() {
                let ih = oh * geo.stride[0] + ki * geo.dilation[0] - geo.pad[0];
                for ow in ows.clone() {
                    let iw = ow * geo.stride[1] + kj * geo.dilation[1] - geo.pad[1];
                    let src = &g[(oh * geo.wout + ow) * L..][..L];
                    let dst = &mut d[(ih * geo.win + iw) * L..][..L];
                    for l in 0..L {
                        dst[l] += wv * src[l];
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A convolution's geometry with its output size worked out (PyTorch's formula).
    fn geometry(
        cin: usize,
        cout: usize,
        [kh, kw]: [usize; 2],
        stride: [usize; 2],
        pad: [usize; 2],
        dilation: [usize; 2],
        [hin, win]: [usize; 2],
    ) -> ConvGeometry {
        ConvGeometry {
            cin,
            cout,
            kh,
            kw,
            stride,
            pad,
            dilation,
            hin,
            win,
            hout: (hin + 2 * pad[0] - dilation[0] * (kh - 1) - 1) / stride[0] + 1,
            wout: (win + 2 * pad[1] - dilation[1] * (kw - 1) - 1) / stride[1] + 1,
        }
    }

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
            let geo = geometry(cin, cout, [kh, kw], stride, pad, dilation, [hin, win]);
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
                    let mut got = vec![f32::NAN; rows * geo.in_len()];
                    conv_input_grad_with(&geo, &packed, &g, rows, &mut got, simd);
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

    #[test]
    fn direct_forward_matches_the_definition() {
        if !has_direct_forward() {
            return;
        }
        for (cin, cout, kh, kw, stride, pad, dilation, hin, win) in [
            (3, 9, 7, 7, [2, 2], [3, 3], [1, 1], 11, 9),
            (16, 8, 3, 3, [1, 1], [1, 1], [1, 1], 2, 2),
            (9, 6, 3, 2, [2, 1], [1, 0], [2, 3], 8, 10),
            (40, 7, 1, 1, [1, 1], [0, 0], [1, 1], 3, 3),
        ] {
            let geo = geometry(cin, cout, [kh, kw], stride, pad, dilation, [hin, win]);
            let weight: Vec<f32> = (0..cout * cin * kh * kw)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
                .collect();
            let bias: Vec<f32> = (0..cout).map(|i| i as f32 * 0.1 - 0.3).collect();
            let x: Vec<f32> = (0..geo.in_len())
                .map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0)
                .collect();
            let mut y = vec![0.0f32; geo.out_len()];
            conv_forward_direct(&geo, &pack_taps(&geo, &weight), &bias, &x, &mut y);
            // y = bias + W x: the reverse pass of one-hot cotangents read back.
            let hw = geo.hout * geo.wout;
            for co in 0..cout {
                for o in 0..hw {
                    let mut g = vec![0.0f32; geo.out_len()];
                    g[co * hw + o] = 1.0;
                    let row = naive(&geo, &weight, &g, 1);
                    let want = bias[co] + row.iter().zip(&x).map(|(a, b)| a * b).sum::<f32>();
                    assert!((y[co * hw + o] - want).abs() < 1e-4, "{geo:?} ({co}, {o})");
                }
            }
        }
    }

    #[test]
    fn depthwise_reverse_matches_the_definition() {
        for (c, k, stride, pad, dilation, hin, win) in [
            (5, 3, [1, 1], [1, 1], [1, 1], 2, 2),
            (3, 3, [2, 2], [1, 1], [1, 1], 9, 8),
            (4, 5, [1, 2], [2, 0], [2, 1], 7, 11),
        ] {
            let geo = geometry(c, c, [k, k], stride, pad, dilation, [hin, win]);
            let (hout, wout) = (geo.hout, geo.wout);
            let weight: Vec<f32> = (0..c * k * k)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
                .collect();
            for rows in [1, 10, 17] {
                let g: Vec<f32> = (0..rows * c * geo.hout * geo.wout)
                    .map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0)
                    .collect();
                let mut got = vec![f32::NAN; rows * c * hin * win];
                depthwise_input_grad(&geo, &weight, &g, rows, &mut got);
                // The definition: channel by channel, a one-channel convolution.
                for ch in 0..c {
                    let one = ConvGeometry {
                        cin: 1,
                        cout: 1,
                        ..geo
                    };
                    let gc: Vec<f32> = (0..rows)
                        .flat_map(|r| g[(r * c + ch) * hout * wout..][..hout * wout].to_vec())
                        .collect();
                    let want = naive(&one, &weight[ch * k * k..(ch + 1) * k * k], &gc, rows);
                    for r in 0..rows {
                        for i in 0..hin * win {
                            let (a, b) = (want[r * hin * win + i], got[(r * c + ch) * hin * win + i]);
                            assert!((a - b).abs() < 1e-5, "{geo:?} rows {rows}: {a} vs {b}");
                        }
                    }
                }
            }
        }
    }
}
