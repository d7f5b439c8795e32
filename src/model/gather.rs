//! The input gradient of a convolution for cotangent rows that share one sparsity pattern (the C
//! rows of J at one image), computed input pixel by input pixel.
//!
//! dx[r][ci][p] = sum over taps (ki, kj) and live channels co at the output position o that tap
//! reaches from p of g[r][co][o] W[co][ci][ki][kj].
//!
//! Each input pixel's gradient, for a block of rows and a block of input channels, is summed in
//! registers over every live entry that reaches it and written once: no scatter into memory, no
//! zero-filled buffer, and the ReLU before the convolution folded into that one write. AVX-512
//! where the CPU has it, else AVX2 + FMA, else the caller's portable path.

use rayon::prelude::*;

use super::sparse::ConvShape;

/// The nonzero entries of a convolution's output gradient, grouped by output position:
/// entries `start[o]..start[o + 1]` are at position o, each with its channel and the index of its
/// value within a row of the source buffer. An entry listed twice adds up.
pub struct Live {
    start: Vec<u32>,
    channel: Vec<u32>,
    source: Vec<u32>,
}

impl Live {
    /// From (channel, position, source) triples in any order (a counting sort by position).
    pub fn from_entries(positions: usize, entries: impl Iterator<Item = (u32, u32, u32)> + Clone) -> Live {
        let mut start = vec![0u32; positions + 1];
        for (_, o, _) in entries.clone() {
            start[o as usize + 1] += 1;
        }
        for o in 0..positions {
            start[o + 1] += start[o];
        }
        let total = start[positions] as usize;
        let (mut channel, mut source) = (vec![0u32; total], vec![0u32; total]);
        let mut next = start.clone();
        for (co, o, src) in entries {
            let at = next[o as usize] as usize;
            next[o as usize] += 1;
            channel[at] = co;
            source[at] = src;
        }
        Live {
            start,
            channel,
            source,
        }
    }

    /// The entries of a dense gradient (rows x cout x positions) that are nonzero in any row.
    pub fn of_dense(s: &ConvShape, g: &[f32], rows: usize) -> Live {
        let hw = s.hout * s.wout;
        let out_len = s.cout * hw;
        let mut any = vec![false; out_len];
        for row in g.chunks(out_len).take(rows) {
            any.iter_mut().zip(row).for_each(|(a, &v)| *a |= v != 0.0);
        }
        let entries = any
            .iter()
            .enumerate()
            .filter(|(_, &a)| a)
            .map(|(j, _)| ((j / hw) as u32, (j % hw) as u32, j as u32));
        Live::from_entries(hw, entries)
    }

    /// The entries a max-pool after a ReLU passes gradient to: each window's maximum (`argmax`,
    /// channel-major, `pooled` windows a channel, indices into the cout x positions input) unless
    /// the maximum itself (`maxima`, the pool's output) is <= 0 (ReLU'(0) = 0; NaN passes). Entry
    /// (co, k) reads its value at co pooled + k. Branch-free: which windows are live is
    /// unpredictable.
    pub fn of_pool_maxima(positions: usize, argmax: &[u32], pooled: usize, maxima: &[f32]) -> Live {
        assert_eq!(argmax.len(), maxima.len(), "one maximum a window");
        let mut start = vec![0u32; positions + 1];
        let live = |k: usize| if maxima[k] <= 0.0 { 0 } else { 1u32 };
        // Each window lies in its channel's plane, so position = index - co positions.
        for (co, windows) in argmax.chunks(pooled.max(1)).enumerate() {
            let base = (co * positions) as u32;
            for (k, &j) in windows.iter().enumerate() {
                debug_assert!(
                    j >= base && j - base < positions as u32,
                    "a window outside its channel"
                );
                start[(j - base) as usize + 1] += live(co * pooled + k);
            }
        }
        for o in 0..positions {
            start[o + 1] += start[o];
        }
        let total = start[positions] as usize;
        // One spare slot at the end takes the dead windows' writes.
        let (mut channel, mut source) = (vec![0u32; total + 1], vec![0u32; total + 1]);
        let mut next = start.clone();
        for (co, windows) in argmax.chunks(pooled.max(1)).enumerate() {
            let base = (co * positions) as u32;
            for (k, &j) in windows.iter().enumerate() {
                let o = (j - base) as usize;
                let alive = live(co * pooled + k);
                // next[o] when live, else the spare slot, as a mask (a branch would mispredict).
                let keep = 0usize.wrapping_sub(alive as usize);
                let at = (next[o] as usize & keep) | (total & !keep);
                channel[at] = co as u32;
                source[at] = (co * pooled + k) as u32;
                next[o] += alive;
            }
        }
        channel.truncate(total);
        source.truncate(total);
        Live {
            start,
            channel,
            source,
        }
    }

    pub fn len(&self) -> usize {
        self.channel.len()
    }

    pub fn is_empty(&self) -> bool {
        self.channel.is_empty()
    }
}

/// Whether this CPU runs the kernels here.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            || (std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// rows x (cin hin win) input gradients, channels first, from the live entries of `src` (row r's
/// values at `src[r * src_len + source]`). Where `relu_out` (the conv's input, the output of a
/// ReLU) is <= 0 the gradient is 0: the ReLU's reverse pass folded in. `weight` is PyTorch's
/// cout x cin x k x k. Call only where `available()`.
pub fn conv_input_grad(
    s: &ConvShape,
    weight: ConvWeights,
    live: &Live,
    src: &[f32],
    src_len: usize,
    rows: usize,
    relu_out: Option<&[f32]>,
) -> Vec<f32> {
    conv_input_grad_hwc(s, weight, live, src, src_len, rows, relu_out).to_channels_first()
}

/// As `conv_input_grad`, left channels last for a consumer that reads it in place (the
/// convolution before, whose reverse pass is a product that takes any strides).
pub fn conv_input_grad_hwc(
    s: &ConvShape,
    weight: ConvWeights,
    live: &Live,
    src: &[f32],
    src_len: usize,
    rows: usize,
    relu_out: Option<&[f32]>,
) -> Hwc {
    #[cfg(target_arch = "x86_64")]
    {
        let kernel = Kernel::detect();
        x86::conv_input_grad_hwc(kernel, s, weight, live, src, src_len, rows, relu_out)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (s, weight, live, src, src_len, rows, relu_out);
        unreachable!("gather::available() is false off x86_64")
    }
}

/// A convolution's W for the kernels: PyTorch's cout x cin x k x k, or already rearranged.
#[derive(Clone, Copy)]
pub enum ConvWeights<'a> {
    Plain(&'a [f32]),
    Gathered(&'a GatherWeights),
}

/// A convolution's W rearranged for the kernels, [ki][kj][co][ci] with ci padded to whole blocks
/// of two vectors: made once per weight tensor (at load, and after each training step).
#[derive(Debug, Clone)]
pub struct GatherWeights {
    cinp: usize,
    data: Vec<f32>,
}

impl GatherWeights {
    /// None where the CPU lacks the kernels.
    pub fn new(s: &ConvShape, weight: &[f32]) -> Option<GatherWeights> {
        #[cfg(target_arch = "x86_64")]
        if available() {
            return Some(GatherWeights::for_kernel(s, weight, Kernel::detect()));
        }
        let _ = (s, weight);
        None
    }

    fn for_kernel(s: &ConvShape, weight: &[f32], kernel: Kernel) -> GatherWeights {
        let block = 2 * kernel.lanes();
        let cinp = s.cin.div_ceil(block) * block;
        let taps = s.k * s.k;
        let mut data = vec![0.0f32; taps * s.cout * cinp];
        for co in 0..s.cout {
            for ci in 0..s.cin {
                for t in 0..taps {
                    data[(t * s.cout + co) * cinp + ci] = weight[(co * s.cin + ci) * taps + t];
                }
            }
        }
        GatherWeights { cinp, data }
    }
}

/// Input gradients channels last: blocks of `per_block` rows (the last may hold fewer), each
/// block laid out [pixel][row in block][channel], channels padded to `cinp`.
pub struct Hwc {
    pub data: Vec<f32>,
    pub rows: usize,
    pub per_block: usize,
    pub cin: usize,
    pub cinp: usize,
    pub plane: usize,
}

impl Hwc {
    /// Where row r's channel 0 of pixel 0 is, and the distance between consecutive pixels.
    pub fn row(&self, r: usize) -> (usize, usize) {
        let (b, within) = (r / self.per_block, r % self.per_block);
        let in_block = self.per_block.min(self.rows - b * self.per_block);
        let offset = b * self.per_block * self.plane * self.cinp + within * self.cinp;
        (offset, in_block * self.cinp)
    }

    /// rows x (cin plane), channels first.
    pub fn to_channels_first(&self) -> Vec<f32> {
        let (plane, cin) = (self.plane, self.cin);
        let mut dx = vec![0.0f32; self.rows * cin * plane];
        dx.par_chunks_mut(cin * plane).enumerate().for_each(|(r, dst)| {
            let (offset, step) = self.row(r);
            // Sequential reads, writes into cin lines that stay in L1, 64 pixels at a time.
            for p0 in (0..plane).step_by(64) {
                for p in p0..(p0 + 64).min(plane) {
                    let from = &self.data[offset + p * step..][..cin];
                    for (ci, &v) in from.iter().enumerate() {
                        dst[ci * plane + p] = v;
                    }
                }
            }
        });
        dx
    }
}

/// The input gradient of a convolution (shape `s`, PyTorch's `weight`) from its output gradient
/// channels last, `g` as the kernels above leave it: rows x (cin hin win), channels first. Each
/// input pixel's value is summed in registers over its taps, the output channels a vector at a
/// time (they are contiguous in `g`), then reduced once: no unfolded columns and no scatter-add
/// back onto the pixels. Rows over the team. None where the CPU lacks AVX-512 or `g`'s channels
/// are not `s`'s outputs.
pub fn input_grad_of_hwc(s: &ConvShape, weight: &[f32], g: &Hwc) -> Option<Vec<f32>> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f")
        && g.cin == s.cout
        && g.plane == s.hout * s.wout
        && g.cinp == 32
        && weight.len() == s.cout * s.cin * s.k * s.k
    {
        return Some(x86::input_grad_of_hwc(s, weight, g));
    }
    let _ = (s, weight, g);
    None
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kernel {
    Avx512,
    Avx2,
}

impl Kernel {
    /// AVX-512 where the CPU has it, else AVX2 + FMA (callers check `available()`).
    #[cfg(target_arch = "x86_64")]
    fn detect() -> Kernel {
        if std::arch::is_x86_feature_detected!("avx512f") {
            Kernel::Avx512
        } else {
            Kernel::Avx2
        }
    }

    /// f32 lanes of a vector.
    fn lanes(self) -> usize {
        match self {
            Kernel::Avx512 => 16,
            Kernel::Avx2 => 8,
        }
    }
    /// Rows summed at once: two vectors of accumulators per row, plus two weight vectors and a
    /// broadcast, within the 32 (AVX-512) or 16 (AVX2) vector registers.
    fn max_rows(self) -> usize {
        match self {
            Kernel::Avx512 => 12,
            Kernel::Avx2 => 6,
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::*;

    /// What every block of rows shares.
    struct Job<'a> {
        s: &'a ConvShape,
        /// W as [ki][kj][co][ci], ci padded to `cinp` (whole blocks of two vectors).
        wg: &'a [f32],
        cinp: usize,
        live: &'a Live,
        src: &'a [f32],
        src_len: usize,
        /// The input ReLU's output (cin x plane, channels first), or None: where it is <= 0 the
        /// gradient is 0 (ReLU'(0) = 0 as in PyTorch; NaN passes, as the unfused pass lets it).
        relu: Option<&'a [f32]>,
        /// With stride 1, each entry's place in `wg` less its kernel row's and pixel's part:
        /// co cinp - ox cout cinp (ox its output column), so that the taps of one kernel row,
        /// which meet consecutive output positions, run as one loop over their entries.
        row_taps: Option<Vec<isize>>,
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn conv_input_grad_hwc(
        kernel: Kernel,
        s: &ConvShape,
        weight: ConvWeights,
        live: &Live,
        src: &[f32],
        src_len: usize,
        rows: usize,
        relu_out: Option<&[f32]>,
    ) -> Hwc {
        let plane = s.hin * s.win;
        let made;
        let weights = match weight {
            ConvWeights::Gathered(w) => w,
            ConvWeights::Plain(w) => {
                made = GatherWeights::for_kernel(s, w, kernel);
                &made
            }
        };
        let cinp = weights.cinp;
        assert_eq!(
            cinp % (2 * kernel.lanes()),
            0,
            "weights gathered for another kernel"
        );
        if let Some(x) = relu_out {
            assert!(
                x.len() >= s.cin * plane,
                "the ReLU's output is smaller than the input"
            );
        }
        let row_taps = (s.stride == 1).then(|| {
            let mut offsets = vec![0isize; live.len()];
            for o in 0..s.hout * s.wout {
                let ox = (o % s.wout) as isize;
                let entries = live.start[o] as usize..live.start[o + 1] as usize;
                for (at, &co) in offsets[entries.clone()].iter_mut().zip(&live.channel[entries]) {
                    *at = (co as usize * cinp) as isize - ox * (s.cout * cinp) as isize;
                }
            }
            offsets
        });
        let job = Job {
            s,
            wg: &weights.data,
            cinp,
            live,
            src,
            src_len,
            relu: relu_out,
            row_taps,
        };
        // Blocks of as many rows as the registers hold. Where that leaves fewer blocks than
        // threads, each block's pixels go to the threads in bands of whole input rows of equal
        // work, rather than each thread taking a share of the rows: every weight vector loaded
        // then serves all the block's rows (J's 10 rows: 20 multiply-adds a load, not 10).
        let threads = super::super::team::threads();
        let blocks = rows.div_ceil(kernel.max_rows()).max(1);
        let per_block = rows.div_ceil(blocks).max(1);
        let bands = if blocks >= threads {
            1
        } else {
            threads.div_ceil(blocks).min(s.hin).max(1)
        };
        let cuts = job.bands(bands);
        // The kernel writes every element (each pixel, row and channel block of every part).
        let mut data = crate::model::scratch::take(rows * plane * cinp);
        let mut parts = Vec::with_capacity(blocks * bands);
        for (b, block) in data.chunks_mut(per_block * plane * cinp).enumerate() {
            let nr = block.len() / (plane * cinp);
            let mut rest = block;
            for band in cuts.windows(2) {
                let pixels = band[0] * s.win..band[1] * s.win;
                let (part, tail) = rest.split_at_mut(pixels.len() * nr * cinp);
                rest = tail;
                parts.push(std::sync::Mutex::new((b * per_block, pixels, part)));
            }
        }
        super::super::team::run(parts.len(), &|k| {
            // Each part is taken by exactly one thread: the lock is never contended.
            let mut part = parts[k].lock().unwrap_or_else(|e| e.into_inner());
            let (r0, ref pixels, ref mut out) = *part;
            job.block(kernel, r0, pixels.clone(), out)
        });
        drop(parts);
        Hwc {
            data,
            rows,
            per_block,
            cin: s.cin,
            cinp,
            plane,
        }
    }

    impl Job<'_> {
        /// Cuts of the input rows into `n` bands of about equal work: a row's work is the live
        /// entries its taps reach, plus one for the row itself.
        fn bands(&self, n: usize) -> Vec<usize> {
            let s = self.s;
            let entries_in =
                |oy: usize| (self.live.start[(oy + 1) * s.wout] - self.live.start[oy * s.wout]) as usize;
            let work: Vec<usize> = (0..s.hin)
                .map(|iy| {
                    let reached: usize = (0..s.k)
                        .filter_map(|ki| s.tap_output(iy, ki, s.hout).map(entries_in))
                        .sum();
                    reached + 1
                })
                .collect();
            let total: usize = work.iter().sum();
            let mut cuts = vec![0];
            let mut done = 0;
            for (iy, w) in work.iter().enumerate() {
                done += w;
                if cuts.len() < n && done * n >= total * cuts.len() && iy + 1 < s.hin {
                    cuts.push(iy + 1);
                }
            }
            cuts.push(s.hin);
            cuts
        }

        /// The live entries input pixels `pixels` (whole input rows) can reach: those of the
        /// output rows their taps meet.
        fn entries_reaching(&self, pixels: &std::ops::Range<usize>) -> std::ops::Range<usize> {
            let s = self.s;
            if pixels.is_empty() {
                return 0..0;
            }
            let (y0, y1) = (pixels.start / s.win, (pixels.end - 1) / s.win + 1);
            let lo = ((y0 + s.pad).saturating_sub(s.k - 1) / s.stride).min(s.hout);
            let hi = ((y1 - 1 + s.pad) / s.stride + 1).clamp(lo, s.hout);
            self.live.start[lo * s.wout] as usize..self.live.start[hi * s.wout] as usize
        }

        /// The input gradients of rows r0.. at input pixels `pixels` (whole input rows), as many
        /// rows as `out` holds, [pixel][row][ci].
        fn block(&self, kernel: Kernel, r0: usize, pixels: std::ops::Range<usize>, out: &mut [f32]) {
            let nr = out.len() / (pixels.len() * self.cinp).max(1);
            if nr == 0 {
                return;
            }
            let entries = self.entries_reaching(&pixels);
            // vals[e - first][r]: the entries' values, row-minor, so one entry's rows are adjacent.
            let mut vals = crate::model::scratch::take(entries.len() * nr);
            for (e, &at) in self.live.source[entries.clone()].iter().enumerate() {
                for r in 0..nr {
                    vals[e * nr + r] = self.src[(r0 + r) * self.src_len + at as usize];
                }
            }
            macro_rules! dispatch {
                ($f:ident, $($n:literal)*) => {
                    match nr {
                        // SAFETY: the features were detected by the caller (`Kernel` choice).
                        $($n => unsafe { $f::<$n>(self, &vals, entries.clone(), pixels.clone(), out) },)*
                        _ => unreachable!("blocks hold 1 to 12 rows"),
                    }
                };
            }
            match kernel {
                Kernel::Avx512 => dispatch!(pixels_avx512, 1 2 3 4 5 6 7 8 9 10 11 12),
                Kernel::Avx2 => dispatch!(pixels_avx2, 1 2 3 4 5 6),
            }
            crate::model::scratch::give(vals);
        }
    }

    /// The per-pixel kernel, one copy per instruction set.
    macro_rules! pixels {
        ($name:ident, $feature:literal, $lanes:literal, $zero:ident, $load:ident, $bcast:ident,
         $fma:ident, $and:ident, $store:ident, $relu:ident) => {
            /// hwc[p - p0][r][ci] = sum over (tap, o) reaching p and live co at o of
            /// vals[e - first][r] W[co][ci][tap], for the input pixels p in `pixels` (p0 the
            /// first) and blocks of two vectors of ci; `entries` holds every entry they reach.
            #[target_feature(enable = $feature)]
            unsafe fn $name<const R: usize>(
                job: &Job,
                vals: &[f32],
                entries: std::ops::Range<usize>,
                pixels: std::ops::Range<usize>,
                hwc: &mut [f32],
            ) {
                let s = job.s;
                let cinp = job.cinp;
                let live = job.live;
                let first = entries.start;
                assert!(vals.len() >= entries.len() * R && hwc.len() >= pixels.len() * R * cinp);
                assert!(pixels.end <= s.hin * s.win && entries.end <= live.len());
                assert!(live.channel.iter().all(|&co| (co as usize) < s.cout));
                assert!(job.wg.len() >= s.k * s.k * s.cout * cinp && live.start.len() == s.hout * s.wout + 1);
                assert!(job.relu.is_none_or(|x| x.len() >= s.cin * s.hin * s.win));
                // The gathers' offsets, ci plane for the channels ci of each block (i32: checked).
                assert!(s.cin * s.hin * s.win <= i32::MAX as usize);
                let (w, v, out) = (job.wg.as_ptr(), vals.as_ptr(), hwc.as_mut_ptr());
                for cb in (0..cinp).step_by(2 * $lanes) {
                    for p in pixels.clone() {
                        let (iy, ix) = (p / s.win, p % s.win);
                        {
                            let mut acc = [[$zero(); 2]; R];
                            if let Some(row_taps) = job.row_taps.as_deref() {
                                // Stride 1: kernel row ki meets output row iy + pad - ki at the
                                // consecutive columns ix + pad - kj, whose entries are adjacent.
                                for ki in 0..s.k {
                                    let Some(oy) = s.tap_output(iy, ki, s.hout) else {
                                        continue;
                                    };
                                    let right = ix + s.pad;
                                    let (ox0, ox1) = (right.saturating_sub(s.k - 1), right.min(s.wout - 1));
                                    if ox0 > ox1 {
                                        continue;
                                    }
                                    let row = oy * s.wout;
                                    let (e0, e1) = (
                                        live.start[row + ox0] as usize,
                                        live.start[row + ox1 + 1] as usize,
                                    );
                                    assert!(e0 >= first && e1 <= entries.end && row_taps.len() >= e1);
                                    let base = ((ki * s.k + right) * s.cout * cinp + cb) as isize;
                                    for e in e0..e1 {
                                        // SAFETY: entry e at column ox, channel co: kj = right - ox
                                        // lies in 0..k (the range above), so the place
                                        // ((ki k + kj) cout + co) cinp + cb is inside wg (asserted).
                                        let wp = unsafe { w.offset(base + *row_taps.get_unchecked(e)) };
                                        let (w0, w1) = unsafe { ($load(wp), $load(wp.add($lanes))) };
                                        for (r, a) in acc.iter_mut().enumerate() {
                                            // SAFETY: first <= e < entries.end, r < R.
                                            let x = unsafe { $bcast(&*v.add((e - first) * R + r)) };
                                            a[0] = $fma(x, w0, a[0]);
                                            a[1] = $fma(x, w1, a[1]);
                                        }
                                    }
                                }
                            } else {
                                // Every (tap, output position) that reaches input pixel (iy, ix).
                                for ki in 0..s.k {
                                    let Some(oy) = s.tap_output(iy, ki, s.hout) else {
                                        continue;
                                    };
                                    for kj in 0..s.k {
                                        let Some(ox) = s.tap_output(ix, kj, s.wout) else {
                                            continue;
                                        };
                                        let tap = ki * s.k + kj;
                                        let o = oy * s.wout + ox;
                                        let (e0, e1) = (live.start[o] as usize, live.start[o + 1] as usize);
                                        // `entries` covers the output rows the pixels' taps meet.
                                        assert!(e0 >= first && e1 <= entries.end);
                                        for e in e0..e1 {
                                            let co = live.channel[e] as usize;
                                            // SAFETY: tap < k^2, co < cout, cb + 2 lanes <= cinp (asserted above).
                                            let wp = unsafe { w.add((tap * s.cout + co) * cinp + cb) };
                                            let (w0, w1) = unsafe { ($load(wp), $load(wp.add($lanes))) };
                                            for (r, a) in acc.iter_mut().enumerate() {
                                                // SAFETY: first <= e < entries.end, r < R.
                                                let x = unsafe { $bcast(&*v.add((e - first) * R + r)) };
                                                a[0] = $fma(x, w0, a[0]);
                                                a[1] = $fma(x, w1, a[1]);
                                            }
                                        }
                                    }
                                }
                            }
                            if let Some(x) = job.relu {
                                // SAFETY: the lanes read are channels ci < cin of pixel p, inside x
                                // (asserted above).
                                let (m0, m1) = unsafe { $relu(x.as_ptr().add(p), s.hin * s.win, cb, s.cin) };
                                for a in acc.iter_mut() {
                                    a[0] = $and(a[0], m0);
                                    a[1] = $and(a[1], m1);
                                }
                            }
                            for (r, a) in acc.iter().enumerate() {
                                // SAFETY: ((p - p0) R + r) cinp + cb + 2 lanes <= pixels R cinp.
                                let at = unsafe { out.add(((p - pixels.start) * R + r) * cinp + cb) };
                                unsafe {
                                    $store(at, a[0]);
                                    $store(at.add($lanes), a[1]);
                                }
                            }
                        }
                    }
                }
            }
        };
    }

    pixels!(
        pixels_avx512,
        "avx512f",
        16,
        _mm512_setzero_ps,
        _mm512_loadu_ps,
        _mm512_set1_ps_ref,
        _mm512_fmadd_ps,
        and512,
        _mm512_storeu_ps,
        relu_pass_avx512
    );
    pixels!(
        pixels_avx2,
        "avx2,fma",
        8,
        _mm256_setzero_ps,
        _mm256_loadu_ps,
        _mm256_broadcast_ss,
        _mm256_fmadd_ps,
        _mm256_and_ps,
        _mm256_storeu_ps,
        relu_pass_avx2
    );

    /// All-ones lanes where the ReLU passes gradient at channels cb .. cb + 32 of the pixel whose
    /// channel 0 value `x` points at (values `plane` apart), zero lanes elsewhere and past `cin`.
    ///
    /// # Safety
    /// x + ci plane is readable for every ci < cin.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn relu_pass_avx512(x: *const f32, plane: usize, cb: usize, cin: usize) -> (__m512, __m512) {
        let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let ones = _mm512_castsi512_ps(_mm512_set1_epi32(-1));
        let pass = |c0: usize| {
            let valid = ((1u32 << cin.saturating_sub(c0).min(16)) - 1) as __mmask16;
            let at = _mm512_mullo_epi32(
                _mm512_add_epi32(lanes, _mm512_set1_epi32(c0 as i32)),
                _mm512_set1_epi32(plane as i32),
            );
            // SAFETY: only the valid lanes (ci < cin) are read.
            let v = unsafe { _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), valid, at, x) };
            // Not <= 0: true for positives and NaN.
            let live = _mm512_mask_cmp_ps_mask::<_CMP_NLE_UQ>(valid, v, _mm512_setzero_ps());
            _mm512_maskz_mov_ps(live, ones)
        };
        (pass(cb), pass(cb + 16))
    }

    /// As `relu_pass_avx512`, 16 channels in two AVX2 vectors.
    ///
    /// # Safety
    /// x + ci plane is readable for every ci < cin.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn relu_pass_avx2(x: *const f32, plane: usize, cb: usize, cin: usize) -> (__m256, __m256) {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let pass = |c0: usize| {
            let valid = _mm256_cmpgt_epi32(_mm256_set1_epi32(cin as i32 - c0 as i32), lanes);
            let at = _mm256_mullo_epi32(
                _mm256_add_epi32(lanes, _mm256_set1_epi32(c0 as i32)),
                _mm256_set1_epi32(plane as i32),
            );
            // SAFETY: only the valid lanes (ci < cin) are read.
            let v = unsafe {
                _mm256_mask_i32gather_ps::<4>(_mm256_setzero_ps(), x, at, _mm256_castsi256_ps(valid))
            };
            // Not <= 0: true for positives and NaN.
            _mm256_and_ps(
                _mm256_cmp_ps::<_CMP_NLE_UQ>(v, _mm256_setzero_ps()),
                _mm256_castsi256_ps(valid),
            )
        };
        (pass(cb), pass(cb + 8))
    }

    pub(super) fn input_grad_of_hwc(s: &ConvShape, weight: &[f32], g: &Hwc) -> Vec<f32> {
        let taps = s.k * s.k;
        // W as [ci][tap][co], co padded with zeros to g's 32 channels.
        let mut wt = vec![0.0f32; s.cin * taps * 32];
        for co in 0..s.cout {
            for ci in 0..s.cin {
                for t in 0..taps {
                    wt[(ci * taps + t) * 32 + co] = weight[(co * s.cin + ci) * taps + t];
                }
            }
        }
        let in_len = s.cin * s.hin * s.win;
        // Every entry is written below.
        let mut dx = crate::model::scratch::take(g.rows * in_len);
        let shared = crate::model::matmul::SharedColumns::new(&mut dx, g.rows, in_len);
        // Bands of input rows, a few a thread so that a late helper leaves less to the caller.
        let bands = (2 * super::super::team::threads()).min(s.hin).max(1);
        let per = s.hin.div_ceil(bands);
        super::super::team::run(bands, &|b| {
            let ys = (b * per).min(s.hin)..((b + 1) * per).min(s.hin);
            for r0 in (0..g.rows).step_by(g.per_block) {
                let (offset, step) = g.row(r0);
                let nr = step / g.cinp;
                let dst: [*mut f32; 12] = std::array::from_fn(|r| shared.at((r0 + r).min(g.rows - 1), 0));
                macro_rules! dispatch {
                    ($($n:literal)*) => {
                        match nr {
                            // SAFETY: the caller checked for AVX-512F; band b writes only its own
                            // input rows of each row of dx, inside dx (in_len a row).
                            $($n => unsafe { hwc_pixels::<$n>(s, &wt, &g.data, offset, ys.clone(), &dst) },)*
                            _ => unreachable!("blocks hold 1 to 12 rows"),
                        }
                    };
                }
                dispatch!(1 2 3 4 5 6 7 8 9 10 11 12);
            }
        });
        dx
    }

    /// dst[r][(ci hin + iy) win + ix] for input rows iy in `ys`: the sum over taps reaching output
    /// o and the 32 channels co of data[offset + (o R + r) 32 + co] wt[ci][tap][co], all R rows of
    /// a block per weight load.
    #[target_feature(enable = "avx512f")]
    unsafe fn hwc_pixels<const R: usize>(
        s: &ConvShape,
        wt: &[f32],
        data: &[f32],
        offset: usize,
        ys: std::ops::Range<usize>,
        dst: &[*mut f32; 12],
    ) {
        let taps = s.k * s.k;
        let plane_out = s.hout * s.wout;
        assert!(wt.len() >= s.cin * taps * 32 && ys.end <= s.hin);
        assert!(plane_out == 0 || offset + plane_out * R * 32 <= data.len());
        let (wp, dp) = (wt.as_ptr(), data.as_ptr());
        for ci in 0..s.cin {
            for iy in ys.clone() {
                for ix in 0..s.win {
                    let mut acc = [[_mm512_setzero_ps(); 2]; R];
                    for ki in 0..s.k {
                        let Some(oy) = s.tap_output(iy, ki, s.hout) else {
                            continue;
                        };
                        for kj in 0..s.k {
                            let Some(ox) = s.tap_output(ix, kj, s.wout) else {
                                continue;
                            };
                            let o = oy * s.wout + ox;
                            // SAFETY: o < plane_out, so the block's R rows of 32 channels at o lie
                            // in data (asserted); (ci taps + tap) 32 + 32 <= wt.len().
                            let (gv, wv) = unsafe {
                                (
                                    dp.add(offset + o * R * 32),
                                    wp.add((ci * taps + ki * s.k + kj) * 32),
                                )
                            };
                            let (w0, w1) = unsafe { (_mm512_loadu_ps(wv), _mm512_loadu_ps(wv.add(16))) };
                            for (r, a) in acc.iter_mut().enumerate() {
                                unsafe {
                                    a[0] = _mm512_fmadd_ps(_mm512_loadu_ps(gv.add(r * 32)), w0, a[0]);
                                    a[1] = _mm512_fmadd_ps(_mm512_loadu_ps(gv.add(r * 32 + 16)), w1, a[1]);
                                }
                            }
                        }
                    }
                    for (r, a) in acc.iter().enumerate() {
                        // SAFETY: dst[r] is row r0 + r of dx (in_len floats); this pixel's index is
                        // below in_len, and only this band writes it.
                        unsafe {
                            *dst[r].add((ci * s.hin + iy) * s.win + ix) =
                                _mm512_reduce_add_ps(_mm512_add_ps(a[0], a[1]))
                        };
                    }
                }
            }
        }
    }

    /// Bitwise and of two float vectors (AVX-512F has it only for integers).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn and512(a: __m512, b: __m512) -> __m512 {
        _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(a), _mm512_castps_si512(b)))
    }

    /// `_mm512_set1_ps` from a reference, the shape `_mm256_broadcast_ss` has.
    #[inline]
    #[target_feature(enable = "avx512f")]
    #[allow(non_snake_case)]
    unsafe fn _mm512_set1_ps_ref(x: &f32) -> __m512 {
        _mm512_set1_ps(*x)
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
    fn definition(
        s: &ConvShape,
        weight: &[f32],
        g: &[f32],
        rows: usize,
        relu_out: Option<&[f32]>,
    ) -> Vec<f32> {
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
        if let Some(x) = relu_out {
            let in_len = s.cin * s.hin * s.win;
            for (i, d) in want.iter_mut().enumerate() {
                if x[i % in_len] <= 0.0 {
                    *d = 0.0;
                }
            }
        }
        want
    }

    /// Both instruction sets (where this CPU has them) against the definition: strides, pads,
    /// clipped kernels, channel counts that do and don't fill a vector block, 1 to 13 rows
    /// (several row blocks), with and without the folded ReLU, channels first and last.
    #[test]
    fn kernels_match_the_definition() {
        let mut kernels = Vec::new();
        if std::arch::is_x86_feature_detected!("avx512f") {
            kernels.push(Kernel::Avx512);
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            kernels.push(Kernel::Avx2);
        }
        for (cin, stride, pad, k, rows) in [
            (32, 1, 0, 3, 10),
            (5, 1, 1, 3, 1),
            (40, 2, 1, 3, 13),
            (16, 2, 0, 2, 7),
            (20, 1, 2, 5, 3),
        ] {
            let (hin, win, cout) = (9, 8, 6);
            let hout = (hin + 2 * pad - k) / stride + 1;
            let wout = (win + 2 * pad - k) / stride + 1;
            let s = ConvShape {
                cin,
                cout,
                k,
                stride,
                pad,
                hin,
                win,
                hout,
                wout,
            };
            let weight = values(cout * cin * k * k, 1);
            // Two thirds of g zero, the same pattern in every row (as J's rows share masks).
            let out_len = cout * hout * wout;
            let g: Vec<f32> = values(rows * out_len, 2)
                .iter()
                .enumerate()
                .map(|(i, &v)| if (i % out_len) % 3 == 0 { v } else { 0.0 })
                .collect();
            let relu: Vec<f32> = values(cin * hin * win, 3);
            let live = Live::of_dense(&s, &g, rows);
            for relu_out in [None, Some(relu.as_slice())] {
                let want = definition(&s, &weight, &g, rows, relu_out);
                for &kernel in &kernels {
                    let hwc = x86::conv_input_grad_hwc(
                        kernel,
                        &s,
                        ConvWeights::Plain(&weight),
                        &live,
                        &g,
                        out_len,
                        rows,
                        relu_out,
                    );
                    let got = hwc.to_channels_first();
                    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (a - b).abs() < 1e-5,
                            "cin {cin} stride {stride} pad {pad} k {k} rows {rows} at {i}: {a} vs {b}"
                        );
                    }
                    // The convolution before, read from these channels-last gradients in place:
                    // 2 input channels, 3 x 3, pad 1 (its output is this one's input).
                    if hwc.cinp == 32 {
                        let s1 = ConvShape {
                            cin: 2,
                            cout: cin,
                            k: 3,
                            stride: 1,
                            pad: 1,
                            hin,
                            win,
                            hout: hin,
                            wout: win,
                        };
                        let w1 = values(cin * 2 * 9, 4);
                        if let Some(dx) = input_grad_of_hwc(&s1, &w1, &hwc) {
                            let want1 = definition(&s1, &w1, &got, rows, None);
                            for (i, (a, b)) in dx.iter().zip(&want1).enumerate() {
                                assert!(
                                    (a - b).abs() < 1e-4,
                                    "conv before, cin {cin} rows {rows} at {i}: {a} vs {b}"
                                );
                            }
                        }
                    }
                    // Channels last, read through `Hwc::row`.
                    let plane = hin * win;
                    for r in 0..rows {
                        let (offset, step) = hwc.row(r);
                        for p in (0..plane).step_by(5) {
                            for ci in 0..cin {
                                let a = hwc.data[offset + p * step + ci];
                                let b = want[(r * cin + ci) * plane + p];
                                assert!(
                                    (a - b).abs() < 1e-5,
                                    "channels last, row {r} pixel {p} channel {ci}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
