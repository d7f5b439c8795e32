//! The fast engine for graph models: the forward pass of one image recording what the reverse pass
//! needs, and the reverse pass of many cotangent rows at once (the C rows of J share the masks of x).
//!
//! Each operator has its forward, its reverse pass over `rows` cotangents, and its multiply-add count
//! side by side. Gradients are accumulated where a value fans out (a residual connection). BatchNorm
//! folds into the convolution before it when that convolution feeds nothing else; otherwise it is a
//! per-channel affine map.

use std::collections::HashMap;
use std::sync::Mutex;

use super::graph::{self, for_each_index, strides, Node, NodeOp, INPUT};
use super::graph_kernels::{self, ConvGeometry};
use super::matmul::{matmul, Threads, View};
use super::network::{Activation, Weights};

/// A convolution with everything its passes need, weights as [cout][cin/groups kh kw].
#[derive(Debug, Clone)]
struct Conv {
    weight: Vec<f32>,
    /// The weights packed for the reverse kernel (`graph_kernels::pack_taps`), once BatchNorm is folded.
    taps: Vec<f32>,
    bias: Vec<f32>,
    cin: usize,
    cout: usize,
    groups: usize,
    kh: usize,
    kw: usize,
    stride: [usize; 2],
    pads: [usize; 4],
    dilation: [usize; 2],
    hin: usize,
    win: usize,
    hout: usize,
    wout: usize,
}

/// A pooling window over [C, H, W].
#[derive(Debug, Clone, Copy)]
struct Window {
    c: usize,
    hin: usize,
    win: usize,
    hout: usize,
    wout: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    pads: [usize; 4],
    dilation: [usize; 2],
}

/// Elementwise operators: the sequential engine's activations, and those only graphs have.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Unary {
    /// Sigmoid, tanh, softplus, GELU, leaky ReLU: `network::Activation`'s value and derivative.
    Shared(Activation),
    Clip(f32, f32),
    Erf,
    HardSwish,
    HardSigmoid(f32, f32),
}

impl Unary {
    fn value(self, x: f64) -> f64 {
        match self {
            Unary::Shared(a) => a.value(x),
            Unary::Clip(lo, hi) => {
                if x.is_nan() {
                    x
                } else {
                    x.max(lo as f64).min(hi as f64)
                }
            }
            Unary::Erf => erf(x),
            Unary::HardSwish => x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
            Unary::HardSigmoid(a, b) => (a as f64 * x + b as f64).clamp(0.0, 1.0),
        }
    }

    /// The derivative, with PyTorch's choices at the kinks (the inactive side's slope).
    fn derivative(self, x: f64) -> f64 {
        match self {
            Unary::Shared(a) => a.derivative(x),
            Unary::Clip(lo, hi) => {
                if x > lo as f64 && x < hi as f64 {
                    1.0
                } else {
                    0.0
                }
            }
            Unary::Erf => 2.0 / std::f64::consts::PI.sqrt() * (-x * x).exp(),
            // d/dx x (x + 3) / 6 = (2x + 3) / 6 on (-3, 3); 1 above, 0 below (PyTorch's).
            Unary::HardSwish => {
                if x < -3.0 {
                    0.0
                } else if x > 3.0 {
                    1.0
                } else {
                    (2.0 * x + 3.0) / 6.0
                }
            }
            Unary::HardSigmoid(a, b) => {
                let y = a as f64 * x + b as f64;
                if y > 0.0 && y < 1.0 {
                    a as f64
                } else {
                    0.0
                }
            }
        }
    }
}

fn erf(x: f64) -> f64 {
    candle_core::cpu::erf::erf_f64(x)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Binary {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone)]
enum Kernel {
    Conv(Conv),
    /// y = W x + b, W [nout][nin].
    Linear {
        weight: Vec<f32>,
        bias: Vec<f32>,
        nin: usize,
        nout: usize,
    },
    /// y = scale[c] x + shift[c], c = (i / inner) % channels.
    Affine {
        scale: Vec<f32>,
        shift: Vec<f32>,
        inner: usize,
    },
    Relu,
    Unary(Unary),
    /// Elementwise with broadcasting: `maps[k]` sends each output index to operand k's index
    /// (None: the operand has the output's shape).
    Binary {
        op: Binary,
        maps: [Option<Vec<u32>>; 2],
    },
    Constant(Vec<f32>),
    /// Blocks of each input, `outer` times: input k contributes `blocks[k]` values per outer index.
    Concat {
        outer: usize,
        blocks: Vec<usize>,
    },
    MaxPool(Window),
    AvgPool {
        window: Window,
        count_include_pad: bool,
    },
    /// out[map[i]] += in[i] / count (global average pool, ReduceMean).
    Mean {
        map: Vec<u32>,
        count: usize,
    },
    /// The same values, another shape (Flatten, Reshape, Identity).
    Copy,
    /// out[i] = in[index[i]] (Transpose, Slice).
    Gather(Vec<u32>),
}

#[derive(Debug, Clone)]
struct Step {
    kernel: Kernel,
    inputs: Vec<usize>,
    output: usize,
    /// What to name in messages.
    label: String,
}

/// Gradient buffers kept across reverse passes. At ImageNet size each is tens of MB, which the
/// allocator hands back to the system on every drop and faults in again, zeroed, on the next pass.
#[derive(Debug, Default)]
struct Pool(Mutex<Vec<Vec<f32>>>);

/// Buffers below this many floats are left to the allocator; at most POOL_MAX floats are kept.
const POOL_MIN: usize = 1 << 18;
const POOL_MAX: usize = 1 << 26;

impl Clone for Pool {
    fn clone(&self) -> Pool {
        Pool::default()
    }
}

impl Pool {
    /// n zeros, in the smallest kept buffer that holds them.
    fn zeros(&self, n: usize) -> Vec<f32> {
        let mut v = self.take(n);
        v.resize(n, 0.0);
        v
    }

    /// A copy of `src`.
    fn copy(&self, src: &[f32]) -> Vec<f32> {
        let mut v = self.take(src.len());
        v.extend_from_slice(src);
        v
    }

    /// An empty buffer with room for n.
    fn take(&self, n: usize) -> Vec<f32> {
        if n >= POOL_MIN {
            let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
            let best = (0..kept.len())
                .filter(|&i| kept[i].capacity() >= n)
                .min_by_key(|&i| kept[i].capacity());
            if let Some(i) = best {
                let mut v = kept.swap_remove(i);
                v.clear();
                return v;
            }
        }
        Vec::with_capacity(n)
    }

    fn put(&self, v: Vec<f32>) {
        if v.capacity() < POOL_MIN {
            return;
        }
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let held: usize = kept.iter().map(Vec::capacity).sum();
        if held + v.capacity() <= POOL_MAX {
            kept.push(v);
        }
    }
}

/// Rows at or above this many values are split over threads in the elementwise reverse passes.
const PARALLEL_VALUES: usize = 1 << 18;

/// f(d_r, g_r) for each row r of d (rows of `dlen`) and g (rows of `glen`), over threads when big.
fn each_row(d: &mut [f32], dlen: usize, g: &[f32], glen: usize, f: impl Fn(&mut [f32], &[f32]) + Sync) {
    if dlen == 0 {
        return;
    }
    let rows = d.len() / dlen;
    let g_row = |r: usize| {
        if glen == 0 {
            &g[..0]
        } else {
            &g[r * glen..(r + 1) * glen]
        }
    };
    if d.len() >= PARALLEL_VALUES && rows > 1 {
        super::team::for_each_chunk_mut(d, dlen, |r, dr| f(dr, g_row(r)));
    } else {
        d.chunks_mut(dlen).enumerate().for_each(|(r, dr)| f(dr, g_row(r)));
    }
}

/// A graph model compiled for one image at a time.
#[derive(Debug, Clone)]
pub struct GraphNet {
    /// Values per value (0 is the normalised input).
    lens: Vec<usize>,
    steps: Vec<Step>,
    output: usize,
    /// Whether a value depends on the input (constants carry no gradient).
    varies: Vec<bool>,
    /// The smooth operators present, for the app's note.
    smooth: bool,
    pool: Pool,
}

/// What the forward pass of one image records.
#[derive(Debug, Clone)]
pub struct GraphTrace {
    values: Vec<Vec<f32>>,
    /// For each max-pool step (by step index), the input index of each output's maximum.
    argmax: HashMap<usize, Vec<u32>>,
}

impl GraphTrace {
    pub fn logits(&self, net: &GraphNet) -> &[f32] {
        &self.values[net.output]
    }
}

fn tensor<'w>(weights: &'w Weights, key: &str) -> Result<&'w [f32], String> {
    let t = weights
        .get(key)
        .ok_or_else(|| format!("weight tensor {key:?} is missing"))?;
    if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
        return Err(format!(
            "weight tensor {key:?} holds a non-finite value ({}) at flat index {i}",
            t.data[i]
        ));
    }
    Ok(&t.data)
}

/// For each index of `out` (row-major), the index of the broadcast operand of shape `shape`.
fn broadcast_map(shape: &[usize], out: &[usize]) -> Option<Vec<u32>> {
    if shape == out {
        return None;
    }
    let rank = out.len();
    let padded: Vec<usize> = std::iter::repeat_n(1, rank - shape.len())
        .chain(shape.iter().copied())
        .collect();
    // Strides of the operand, 0 along broadcast axes.
    let mut strides = vec![0usize; rank];
    let mut s = 1;
    for a in (0..rank).rev() {
        strides[a] = if padded[a] == 1 { 0 } else { s };
        s *= padded[a];
    }
    let mut map = Vec::with_capacity(out.iter().product());
    for_each_index(out, |idx| {
        map.push(idx.iter().zip(&strides).map(|(i, s)| i * s).sum::<usize>() as u32)
    });
    Some(map)
}

fn window(
    x: &[usize],
    out: &[usize],
    kernel: [usize; 2],
    stride: [usize; 2],
    pads: [usize; 4],
    dilation: [usize; 2],
) -> Window {
    Window {
        c: x[1],
        hin: x[2],
        win: x[3],
        hout: out[2],
        wout: out[3],
        kernel,
        stride,
        pads,
        dilation,
    }
}

impl GraphNet {
    /// Compile a checked graph (`shapes` from `graph::shapes`) with its weights.
    pub fn new(nodes: &[Node], shapes: &[Vec<usize>], weights: &Weights) -> Result<GraphNet, String> {
        let ids = graph::resolve_ids(nodes);
        let mut index: HashMap<&str, usize> = HashMap::new();
        index.insert(INPUT, 0);
        for (k, (id, _)) in ids.iter().enumerate() {
            index.insert(id.as_str(), k + 1);
        }
        // How many nodes read each value, to fold BatchNorm only into a conv that feeds nothing else.
        let mut readers = vec![0usize; shapes.len()];
        for (_, inputs) in &ids {
            for i in inputs {
                readers[index[i.as_str()]] += 1;
            }
        }
        let mut steps: Vec<Step> = Vec::with_capacity(nodes.len());
        let mut varies = vec![false; shapes.len()];
        varies[0] = true;
        // Values that are another value under a new name (a BatchNorm folded into its conv).
        let mut alias: Vec<usize> = (0..shapes.len()).collect();
        let mut smooth = false;
        for (k, (node, (id, inputs))) in nodes.iter().zip(&ids).enumerate() {
            let out = k + 1;
            let label = graph::node_label(node, id);
            let ins: Vec<usize> = inputs.iter().map(|i| alias[index[i.as_str()]]).collect();
            let x = &shapes[ins.first().map_or(0, |&i| i)];
            let y = &shapes[out];
            let fail = |m: String| format!("{label}: {m}");
            smooth |= node.op.is_smooth();
            let kernel = match &node.op {
                NodeOp::Conv {
                    weight,
                    bias,
                    stride,
                    pads,
                    dilation,
                    groups,
                } => {
                    let ws = &weights[weight].shape;
                    let w = tensor(weights, weight).map_err(fail)?.to_vec();
                    let b = match bias {
                        Some(b) => tensor(weights, b).map_err(fail)?.to_vec(),
                        None => vec![0.0; ws[0]],
                    };
                    Kernel::Conv(prune_taps(Conv {
                        weight: w,
                        taps: Vec::new(),
                        bias: b,
                        cin: x[1],
                        cout: ws[0],
                        groups: *groups,
                        kh: ws[2],
                        kw: ws[3],
                        stride: *stride,
                        pads: *pads,
                        dilation: *dilation,
                        hin: x[2],
                        win: x[3],
                        hout: y[2],
                        wout: y[3],
                    }))
                }
                NodeOp::Linear { weight, bias } => {
                    let ws = &weights[weight].shape;
                    Kernel::Linear {
                        weight: tensor(weights, weight).map_err(fail)?.to_vec(),
                        bias: match bias {
                            Some(b) => tensor(weights, b).map_err(fail)?.to_vec(),
                            None => vec![0.0; ws[0]],
                        },
                        nin: ws[1],
                        nout: ws[0],
                    }
                }
                NodeOp::BatchNorm {
                    scale,
                    bias,
                    mean,
                    var,
                    epsilon,
                } => {
                    let (g, b, m, v) = (
                        tensor(weights, scale).map_err(fail)?,
                        tensor(weights, bias).map_err(fail)?,
                        tensor(weights, mean).map_err(fail)?,
                        tensor(weights, var).map_err(fail)?,
                    );
                    // y = s x + t with s = gamma / sqrt(var + eps), t = beta - s mean (in f64).
                    let s: Vec<f64> = g
                        .iter()
                        .zip(v)
                        .map(|(&g, &v)| g as f64 / (v as f64 + *epsilon as f64).sqrt())
                        .collect();
                    let t: Vec<f64> = b
                        .iter()
                        .zip(m)
                        .zip(&s)
                        .map(|((&b, &m), &s)| b as f64 - s * m as f64)
                        .collect();
                    let producer = ins[0];
                    let foldable = producer > 0
                        && readers[producer] == 1
                        && steps
                            .iter()
                            .rposition(|st| st.output == producer)
                            .is_some_and(|p| matches!(steps[p].kernel, Kernel::Conv(_)));
                    if foldable {
                        // W'[co] = s[co] W[co], b' = s b + t: the conv now computes the BatchNorm's output.
                        let p = steps.iter().rposition(|st| st.output == producer).expect("found");
                        if let Kernel::Conv(c) = &mut steps[p].kernel {
                            let per = c.weight.len() / c.cout;
                            for co in 0..c.cout {
                                c.weight[co * per..(co + 1) * per]
                                    .iter_mut()
                                    .for_each(|w| *w = (*w as f64 * s[co]) as f32);
                                c.bias[co] = (c.bias[co] as f64 * s[co] + t[co]) as f32;
                            }
                        }
                        alias[out] = producer;
                        varies[out] = varies[producer];
                        continue;
                    }
                    Kernel::Affine {
                        scale: s.iter().map(|&v| v as f32).collect(),
                        shift: t.iter().map(|&v| v as f32).collect(),
                        inner: x[2..].iter().product(),
                    }
                }
                NodeOp::Relu => Kernel::Relu,
                NodeOp::LeakyRelu { alpha } => {
                    Kernel::Unary(Unary::Shared(Activation::LeakyRelu(*alpha as f64)))
                }
                NodeOp::Clip { min, max } => Kernel::Unary(Unary::Clip(
                    min.unwrap_or(f32::NEG_INFINITY),
                    max.unwrap_or(f32::INFINITY),
                )),
                NodeOp::Sigmoid => Kernel::Unary(Unary::Shared(Activation::Sigmoid)),
                NodeOp::Tanh => Kernel::Unary(Unary::Shared(Activation::Tanh)),
                NodeOp::Gelu => Kernel::Unary(Unary::Shared(Activation::Gelu)),
                NodeOp::Softplus => Kernel::Unary(Unary::Shared(Activation::Softplus)),
                NodeOp::Erf => Kernel::Unary(Unary::Erf),
                NodeOp::HardSwish => Kernel::Unary(Unary::HardSwish),
                NodeOp::HardSigmoid { alpha, beta } => Kernel::Unary(Unary::HardSigmoid(*alpha, *beta)),
                NodeOp::Add | NodeOp::Sub | NodeOp::Mul | NodeOp::Div => {
                    let op = match node.op {
                        NodeOp::Add => Binary::Add,
                        NodeOp::Sub => Binary::Sub,
                        NodeOp::Mul => Binary::Mul,
                        _ => Binary::Div,
                    };
                    // A product of two varying values is smooth (squeeze-excitation, SiLU).
                    smooth |= op == Binary::Mul && varies[ins[0]] && varies[ins[1]];
                    if op == Binary::Div && varies[ins[1]] {
                        smooth = true;
                    }
                    Kernel::Binary {
                        op,
                        maps: [
                            broadcast_map(&shapes[ins[0]], y),
                            broadcast_map(&shapes[ins[1]], y),
                        ],
                    }
                }
                NodeOp::Constant { tensor: key } => {
                    Kernel::Constant(tensor(weights, key).map_err(fail)?.to_vec())
                }
                NodeOp::Concat { axis } => {
                    let ax = graph::axis(*axis, y.len()).map_err(fail)?;
                    Kernel::Concat {
                        outer: y[..ax].iter().product(),
                        blocks: ins.iter().map(|&i| shapes[i][ax..].iter().product()).collect(),
                    }
                }
                NodeOp::MaxPool {
                    kernel,
                    stride,
                    pads,
                    dilation,
                    ..
                } => Kernel::MaxPool(window(x, y, *kernel, *stride, *pads, *dilation)),
                NodeOp::AvgPool {
                    kernel,
                    stride,
                    pads,
                    count_include_pad,
                    ..
                } => Kernel::AvgPool {
                    window: window(x, y, *kernel, *stride, *pads, [1, 1]),
                    count_include_pad: *count_include_pad,
                },
                NodeOp::GlobalAvgPool => {
                    let plane = x[2] * x[3];
                    Kernel::Mean {
                        map: (0..x[1] * plane).map(|i| (i / plane) as u32).collect(),
                        count: plane,
                    }
                }
                NodeOp::ReduceMean { axes, .. } => {
                    let axes: Vec<usize> = axes
                        .iter()
                        .map(|&a| graph::axis(a, x.len()))
                        .collect::<Result<_, _>>()
                        .map_err(fail)?;
                    let kept: Vec<usize> = (0..x.len())
                        .map(|a| if axes.contains(&a) { 1 } else { x[a] })
                        .collect();
                    let kept_strides = strides(&kept);
                    let mut map = Vec::with_capacity(x.iter().product());
                    for_each_index(x, |idx| {
                        let at: usize = (0..x.len())
                            .filter(|a| !axes.contains(a))
                            .map(|a| idx[a] * kept_strides[a])
                            .sum();
                        map.push(at as u32);
                    });
                    Kernel::Mean {
                        map,
                        count: axes.iter().map(|&a| x[a]).product(),
                    }
                }
                NodeOp::Flatten { .. } | NodeOp::Reshape { .. } | NodeOp::Identity => Kernel::Copy,
                NodeOp::Transpose { perm } => Kernel::Gather(graph::transpose_map(x, perm)),
                NodeOp::Slice {
                    starts,
                    ends,
                    axes,
                    steps: st,
                } => Kernel::Gather(graph::slice_map(
                    x,
                    &graph::slice_ranges(x, starts, ends, axes, st).map_err(fail)?,
                )),
            };
            varies[out] = !matches!(kernel, Kernel::Constant(_)) && ins.iter().any(|&i| varies[i]);
            steps.push(Step {
                kernel,
                inputs: ins,
                output: out,
                label,
            });
        }
        // A convolution whose kernel covers its whole input once is a linear layer over it.
        for step in &mut steps {
            if let Kernel::Conv(c) = &mut step.kernel {
                if c.groups == 1 {
                    c.taps = graph_kernels::pack_taps(&geometry(c), &c.weight);
                }
                if is_whole_input(c) {
                    step.kernel = Kernel::Linear {
                        nin: c.weight.len() / c.cout,
                        nout: c.cout,
                        weight: std::mem::take(&mut c.weight),
                        bias: std::mem::take(&mut c.bias),
                    };
                }
            }
        }
        let output = alias[shapes.len() - 1];
        Ok(GraphNet {
            lens: shapes.iter().map(|s| s.iter().product()).collect(),
            steps,
            output,
            varies,
            smooth,
            pool: Pool::default(),
        })
    }

    pub fn num_outputs(&self) -> usize {
        self.lens[self.output]
    }

    pub fn input_len(&self) -> usize {
        self.lens[0]
    }

    /// Whether a smooth operator (or a product of two varying values) occurs.
    pub fn is_smooth(&self) -> bool {
        self.smooth
    }

    /// Forward pass of one normalised image.
    pub fn forward(&self, x: &[f32]) -> GraphTrace {
        assert_eq!(x.len(), self.lens[0], "input length");
        let mut values: Vec<Vec<f32>> = vec![Vec::new(); self.lens.len()];
        values[0] = x.to_vec();
        let mut argmax = HashMap::new();
        for (s, step) in self.steps.iter().enumerate() {
            let y = {
                let a = &values[step.inputs.first().copied().unwrap_or(0)];
                let mut y = vec![0.0f32; self.lens[step.output]];
                match &step.kernel {
                    Kernel::Conv(c) => conv_forward(c, a, &mut y),
                    Kernel::Linear {
                        weight,
                        bias,
                        nin,
                        nout,
                    } => {
                        if graph_kernels::has_direct_forward() {
                            // W [nout][nin] is a 1x1 convolution's packed weights at one pixel.
                            let geo = ConvGeometry::pointwise(*nin, *nout);
                            graph_kernels::conv_forward_direct(&geo, weight, bias, a, &mut y);
                        } else {
                            matmul(
                                &mut y,
                                View::rows(a, 1, *nin),
                                View::transposed(weight, *nout, *nin),
                                false,
                                Threads::All,
                            );
                            y.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
                        }
                    }
                    Kernel::Affine { scale, shift, inner } => {
                        let c = scale.len();
                        for (i, (o, &v)) in y.iter_mut().zip(a).enumerate() {
                            let ch = (i / inner) % c;
                            *o = scale[ch] * v + shift[ch];
                        }
                    }
                    Kernel::Relu => y
                        .iter_mut()
                        .zip(a)
                        .for_each(|(o, &v)| *o = if v > 0.0 || v.is_nan() { v } else { 0.0 }),
                    // ReLU6 and other clips in f32 directly (the same values as through f64).
                    Kernel::Unary(Unary::Clip(lo, hi)) => y
                        .iter_mut()
                        .zip(a)
                        .for_each(|(o, &v)| *o = if v.is_nan() { v } else { v.max(*lo).min(*hi) }),
                    Kernel::Unary(u) => y
                        .iter_mut()
                        .zip(a)
                        .for_each(|(o, &v)| *o = u.value(v as f64) as f32),
                    Kernel::Binary { op, maps } => {
                        let b = &values[step.inputs[1]];
                        let at = |v: &[f32], m: &Option<Vec<u32>>, i: usize| match m {
                            Some(m) => v[m[i] as usize],
                            None => v[i],
                        };
                        for (i, o) in y.iter_mut().enumerate() {
                            let (p, q) = (at(a, &maps[0], i), at(b, &maps[1], i));
                            *o = match op {
                                Binary::Add => p + q,
                                Binary::Sub => p - q,
                                Binary::Mul => p * q,
                                Binary::Div => p / q,
                            };
                        }
                    }
                    Kernel::Constant(v) => y.copy_from_slice(v),
                    Kernel::Concat { outer, blocks } => {
                        let total: usize = blocks.iter().sum();
                        let mut offset = 0;
                        for (&input, &block) in step.inputs.iter().zip(blocks) {
                            let v = &values[input];
                            for o in 0..*outer {
                                y[o * total + offset..o * total + offset + block]
                                    .copy_from_slice(&v[o * block..(o + 1) * block]);
                            }
                            offset += block;
                        }
                    }
                    Kernel::MaxPool(w) => {
                        argmax.insert(s, maxpool_forward(w, a, &mut y));
                    }
                    Kernel::AvgPool {
                        window,
                        count_include_pad,
                    } => avgpool(window, *count_include_pad, a, &mut y, false),
                    Kernel::Mean { map, count } => {
                        for (&m, &v) in map.iter().zip(a) {
                            y[m as usize] += v;
                        }
                        let inv = 1.0 / *count as f32;
                        y.iter_mut().for_each(|v| *v *= inv);
                    }
                    Kernel::Copy => y.copy_from_slice(a),
                    Kernel::Gather(index) => y.iter_mut().zip(index).for_each(|(o, &i)| *o = a[i as usize]),
                }
                y
            };
            values[step.output] = y;
        }
        GraphTrace { values, argmax }
    }

    /// Reverse pass of `rows` cotangents over the logits (rows x outputs) through one image's
    /// trace: rows x input_len gradients with respect to the normalised input.
    pub fn backward(&self, trace: &GraphTrace, cotangents: &[f32], rows: usize) -> Vec<f32> {
        assert_eq!(cotangents.len(), rows * self.num_outputs());
        let mut grads: Vec<Option<Vec<f32>>> = vec![None; self.lens.len()];
        grads[self.output] = Some(self.pool.copy(cotangents));
        let pool = &self.pool;
        for (s, step) in self.steps.iter().enumerate().rev() {
            let Some(mut g) = grads[step.output].take() else {
                continue;
            };
            let x = &trace.values[step.inputs.first().copied().unwrap_or(0)];
            let in_len = step.inputs.first().map_or(0, |&i| self.lens[i]);
            let out_len = self.lens[step.output];
            let give = |grads: &mut Vec<Option<Vec<f32>>>, value: usize, d: Vec<f32>| {
                if !self.varies[value] {
                    return;
                }
                match &mut grads[value] {
                    Some(acc) => {
                        // Where a value fans out (a residual connection) its gradients add up.
                        if acc.len() >= PARALLEL_VALUES {
                            super::team::for_each_chunk_mut(acc, 1 << 14, |k, a| {
                                a.iter_mut().zip(&d[k << 14..]).for_each(|(a, v)| *a += v)
                            });
                        } else {
                            acc.iter_mut().zip(&d).for_each(|(a, v)| *a += v);
                        }
                        pool.put(d);
                    }
                    slot @ None => *slot = Some(d),
                }
            };
            match &step.kernel {
                Kernel::Conv(c) => {
                    let d = conv_backward(c, &g, rows, pool);
                    give(&mut grads, step.inputs[0], d);
                }
                Kernel::Linear {
                    weight, nin, nout, ..
                } => {
                    let d = if rows <= 32 || graph_kernels::has_direct_forward() {
                        // W [nout][nin] is a 1x1 convolution's packed weights at one pixel.
                        let mut d = pool.zeros(rows * nin);
                        let geo = ConvGeometry::pointwise(*nin, *nout);
                        graph_kernels::conv_input_grad(&geo, weight, &g, rows, &mut d);
                        d
                    } else {
                        let mut d = pool.zeros(rows * nin);
                        matmul(
                            &mut d,
                            View::rows(&g, rows, *nout),
                            View::rows(weight, *nout, *nin),
                            false,
                            Threads::All,
                        );
                        d
                    };
                    give(&mut grads, step.inputs[0], d);
                }
                Kernel::Affine { scale, inner, .. } => {
                    let c = scale.len();
                    let mut d = std::mem::take(&mut g);
                    each_row(&mut d, in_len, &[], 0, |row, _| {
                        row.iter_mut()
                            .enumerate()
                            .for_each(|(i, v)| *v *= scale[(i / inner) % c])
                    });
                    give(&mut grads, step.inputs[0], d);
                }
                Kernel::Relu => {
                    let mut d = std::mem::take(&mut g);
                    each_row(&mut d, in_len, &[], 0, |row, _| {
                        // PyTorch's convention: the derivative of ReLU at 0 is 0. A select rather
                        // than a conditional store, so it compiles to vector blends.
                        row.iter_mut()
                            .zip(x)
                            .for_each(|(v, &a)| *v = if a <= 0.0 { 0.0 } else { *v })
                    });
                    give(&mut grads, step.inputs[0], d);
                }
                Kernel::Unary(u) => {
                    let slope: Vec<f32> = match u {
                        Unary::Clip(lo, hi) => x
                            .iter()
                            .map(|&a| if a > *lo && a < *hi { 1.0 } else { 0.0 })
                            .collect(),
                        _ => x.iter().map(|&a| u.derivative(a as f64) as f32).collect(),
                    };
                    let mut d = std::mem::take(&mut g);
                    each_row(&mut d, in_len, &[], 0, |row, _| {
                        row.iter_mut().zip(&slope).for_each(|(v, s)| *v *= s)
                    });
                    give(&mut grads, step.inputs[0], d);
                }
                Kernel::Binary { op, maps } => {
                    let (a, b) = (&trace.values[step.inputs[0]], &trace.values[step.inputs[1]]);
                    let at = |v: &[f32], m: &Option<Vec<u32>>, i: usize| match m {
                        Some(m) => v[m[i] as usize],
                        None => v[i],
                    };
                    for k in 0..2 {
                        let value = step.inputs[k];
                        if !self.varies[value] {
                            continue;
                        }
                        let len = self.lens[value];
                        // A residual addition: the gradient passes as it is.
                        if maps[k].is_none() && matches!((op, k), (Binary::Add, _) | (Binary::Sub, 0)) {
                            give(&mut grads, value, pool.copy(&g));
                            continue;
                        }
                        // d out / d operand k at each output index.
                        let local: Option<Vec<f32>> = match (op, k) {
                            (Binary::Add, _) | (Binary::Sub, 0) => None,
                            (Binary::Sub, _) => Some(vec![-1.0; out_len]),
                            (Binary::Mul, 0) => Some((0..out_len).map(|i| at(b, &maps[1], i)).collect()),
                            (Binary::Mul, _) => Some((0..out_len).map(|i| at(a, &maps[0], i)).collect()),
                            (Binary::Div, 0) => {
                                Some((0..out_len).map(|i| 1.0 / at(b, &maps[1], i)).collect())
                            }
                            (Binary::Div, _) => Some(
                                (0..out_len)
                                    .map(|i| {
                                        let q = at(b, &maps[1], i);
                                        -at(a, &maps[0], i) / (q * q)
                                    })
                                    .collect(),
                            ),
                        };
                        let mut d = pool.zeros(rows * len);
                        for (dr, gr) in d.chunks_mut(len).zip(g.chunks(out_len)) {
                            for i in 0..out_len {
                                let v = match &local {
                                    Some(l) => gr[i] * l[i],
                                    None => gr[i],
                                };
                                match &maps[k] {
                                    Some(m) => dr[m[i] as usize] += v,
                                    None => dr[i] += v,
                                }
                            }
                        }
                        give(&mut grads, value, d);
                    }
                }
                Kernel::Constant(_) => {}
                Kernel::Concat { outer, blocks } => {
                    let total: usize = blocks.iter().sum();
                    let mut offset = 0;
                    for (&input, &block) in step.inputs.iter().zip(blocks) {
                        let len = self.lens[input];
                        let mut d = pool.zeros(rows * len);
                        for (dr, gr) in d.chunks_mut(len).zip(g.chunks(out_len)) {
                            for o in 0..*outer {
                                dr[o * block..(o + 1) * block]
                                    .copy_from_slice(&gr[o * total + offset..o * total + offset + block]);
                            }
                        }
                        offset += block;
                        give(&mut grads, input, d);
                    }
                }
                Kernel::MaxPool(_) => {
                    let idx = &trace.argmax[&s];
                    let mut d = pool.zeros(rows * in_len);
                    each_row(&mut d, in_len, &g, out_len, |dr, gr| {
                        for (o, &j) in idx.iter().enumerate() {
                            if j != u32::MAX {
                                dr[j as usize] += gr[o];
                            }
                        }
                    });
                    give(&mut grads, step.inputs[0], d);
                }
                Kernel::AvgPool {
                    window,
                    count_include_pad,
                } => {
                    let mut d = pool.zeros(rows * in_len);
                    each_row(&mut d, in_len, &g, out_len, |dr, gr| {
                        avgpool(window, *count_include_pad, gr, dr, true)
                    });
                    give(&mut grads, step.inputs[0], d);
                }
                Kernel::Mean { map, count } => {
                    let inv = 1.0 / *count as f32;
                    let mut d = pool.zeros(rows * in_len);
                    each_row(&mut d, in_len, &g, out_len, |dr, gr| {
                        dr.iter_mut()
                            .zip(map)
                            .for_each(|(v, &m)| *v = gr[m as usize] * inv)
                    });
                    give(&mut grads, step.inputs[0], d);
                }
                Kernel::Copy => give(&mut grads, step.inputs[0], std::mem::take(&mut g)),
                Kernel::Gather(index) => {
                    let mut d = pool.zeros(rows * in_len);
                    each_row(&mut d, in_len, &g, out_len, |dr, gr| {
                        for (&i, &v) in index.iter().zip(gr) {
                            dr[i as usize] += v;
                        }
                    });
                    give(&mut grads, step.inputs[0], d);
                }
            }
            pool.put(g);
        }
        grads[0].take().unwrap_or_else(|| vec![0.0; rows * self.lens[0]])
    }

    /// Multiply-adds of a forward pass, and of one cotangent row's reverse pass counting only the
    /// entries that carry gradient at this image (behind a ReLU the active units, behind a
    /// max-pool one position per window).
    pub fn macs(&self, trace: &GraphTrace) -> (f64, f64) {
        let mut forward = 0.0;
        for step in &self.steps {
            if let Kernel::Conv(c) = &step.kernel {
                forward += (c.cout * c.hout * c.wout * (c.cin / c.groups) * c.kh * c.kw) as f64;
            } else if let Kernel::Linear { nin, nout, .. } = &step.kernel {
                forward += (nin * nout) as f64;
            }
        }
        // Live entries per value, pulled back from the logits.
        let mut live: Vec<Option<Vec<bool>>> = vec![None; self.lens.len()];
        live[self.output] = Some(vec![true; self.num_outputs()]);
        let mut per_row = 0.0;
        for (s, step) in self.steps.iter().enumerate().rev() {
            let Some(l) = live[step.output].take() else {
                continue;
            };
            let count = l.iter().filter(|&&v| v).count();
            let x = &trace.values[step.inputs.first().copied().unwrap_or(0)];
            let mark = |live: &mut Vec<Option<Vec<bool>>>, value: usize, m: Vec<bool>| {
                if !self.varies[value] {
                    return;
                }
                match &mut live[value] {
                    Some(acc) => acc.iter_mut().zip(&m).for_each(|(a, b)| *a |= b),
                    slot @ None => *slot = Some(m),
                }
            };
            let first = step.inputs.first().copied().unwrap_or(0);
            let in_len = self.lens[first];
            match &step.kernel {
                Kernel::Conv(c) => {
                    per_row += (count * (c.cin / c.groups) * c.kh * c.kw) as f64;
                    mark(&mut live, first, vec![count > 0; in_len]);
                }
                Kernel::Linear { nin, .. } => {
                    per_row += (count * nin) as f64;
                    mark(&mut live, first, vec![count > 0; in_len]);
                }
                Kernel::Relu => mark(
                    &mut live,
                    first,
                    l.iter().zip(x).map(|(&l, &v)| l && v > 0.0).collect(),
                ),
                Kernel::MaxPool(_) => {
                    let mut into = vec![false; in_len];
                    for (o, &j) in trace.argmax[&s].iter().enumerate() {
                        if j != u32::MAX {
                            into[j as usize] |= l[o];
                        }
                    }
                    mark(&mut live, first, into);
                }
                Kernel::Constant(_) => {}
                _ => {
                    for &i in &step.inputs {
                        mark(&mut live, i, vec![count > 0; self.lens[i]]);
                    }
                }
            }
        }
        (forward, per_row)
    }

    /// The labels of the steps, in order (for tests and messages).
    pub fn step_labels(&self) -> Vec<&str> {
        self.steps.iter().map(|s| s.label.as_str()).collect()
    }
}

/// The taps `first..end` of one kernel axis that reach inside the image for some output position
/// (input index o s + t d - pad in 0..len), or None when every tap does or none does.
fn used_taps(k: usize, d: usize, s: usize, pad: usize, len: usize, out: usize) -> Option<(usize, usize)> {
    let used = |t: usize| {
        (0..out).any(|o| {
            let i = (o * s + t * d) as isize - pad as isize;
            i >= 0 && i < len as isize
        })
    };
    let first = (0..k).find(|&t| used(t))?;
    let last = (0..k).rev().find(|&t| used(t))?;
    // Cropping the leading taps moves the padding; a crop past the padding would need a negative one.
    (first * d <= pad && (first > 0 || last + 1 < k)).then_some((first, last + 1))
}

/// Drops the kernel rows and columns that only ever meet padding (shapes are static): a 3x3 pad-1
/// convolution at 1x1 spatial uses only its centre tap, so it becomes a 1x1 one with 9x fewer
/// weights to stream and multiply. The output is unchanged: the dropped taps multiply zeros.
fn prune_taps(mut c: Conv) -> Conv {
    let rows = used_taps(c.kh, c.dilation[0], c.stride[0], c.pads[0], c.hin, c.hout);
    let cols = used_taps(c.kw, c.dilation[1], c.stride[1], c.pads[1], c.win, c.wout);
    if rows.is_none() && cols.is_none() {
        return c;
    }
    let (r0, r1) = rows.unwrap_or((0, c.kh));
    let (c0, c1) = cols.unwrap_or((0, c.kw));
    let (kh, kw) = (r1 - r0, c1 - c0);
    let planes = c.weight.len() / (c.kh * c.kw);
    let mut w = Vec::with_capacity(planes * kh * kw);
    for p in 0..planes {
        for ki in r0..r1 {
            w.extend_from_slice(&c.weight[(p * c.kh + ki) * c.kw + c0..(p * c.kh + ki) * c.kw + c1]);
        }
    }
    let [d0, d1] = c.dilation;
    c.pads = [
        c.pads[0] - r0 * d0,
        c.pads[1] - c0 * d1,
        c.pads[2].saturating_sub((c.kh - r1) * d0),
        c.pads[3].saturating_sub((c.kw - c1) * d1),
    ];
    c.weight = w;
    c.kh = kh;
    c.kw = kw;
    c
}

/// Output columns ow whose input column ow s + kj d - pad lies inside the image.
fn valid_columns(c: &Conv, kj: usize) -> std::ops::Range<usize> {
    let offset = kj * c.dilation[1];
    let first = c.pads[1].saturating_sub(offset).div_ceil(c.stride[1]);
    let last = (c.win + c.pads[1])
        .saturating_sub(offset)
        .div_ceil(c.stride[1])
        .min(c.wout);
    first.min(last)..last
}

/// Unfold the group `grp` of one image: cols[(ci kh + ki) kw + kj][oh wout + ow] = x[ci][ih][iw] with
/// ih = oh s + ki d - pad (0 outside the image).
fn im2col(c: &Conv, x: &[f32], grp: usize, cols: &mut [f32]) {
    let cin_g = c.cin / c.groups;
    let hw = c.hout * c.wout;
    for ci in 0..cin_g {
        let plane = &x[(grp * cin_g + ci) * c.hin * c.win..][..c.hin * c.win];
        for ki in 0..c.kh {
            for kj in 0..c.kw {
                let row = &mut cols[((ci * c.kh + ki) * c.kw + kj) * hw..][..hw];
                let valid = valid_columns(c, kj);
                for oh in 0..c.hout {
                    let ih = (oh * c.stride[0] + ki * c.dilation[0]) as isize - c.pads[0] as isize;
                    let out = &mut row[oh * c.wout..(oh + 1) * c.wout];
                    if ih < 0 || ih >= c.hin as isize || valid.is_empty() {
                        out.fill(0.0);
                        continue;
                    }
                    let src = &plane[ih as usize * c.win..][..c.win];
                    out[..valid.start].fill(0.0);
                    out[valid.end..].fill(0.0);
                    let iw0 = valid.start * c.stride[1] + kj * c.dilation[1] - c.pads[1];
                    if c.stride[1] == 1 {
                        out[valid.clone()].copy_from_slice(&src[iw0..iw0 + valid.len()]);
                    } else {
                        for (k, o) in out[valid.clone()].iter_mut().enumerate() {
                            *o = src[iw0 + k * c.stride[1]];
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of im2col for one image, reading columns `col0..col0 + hw` of a matrix with `ld`
/// columns.
fn col2im(c: &Conv, cols: &[f32], ld: usize, col0: usize, grp: usize, dx: &mut [f32]) {
    let cin_g = c.cin / c.groups;
    for ci in 0..cin_g {
        let plane = &mut dx[(grp * cin_g + ci) * c.hin * c.win..][..c.hin * c.win];
        for ki in 0..c.kh {
            for kj in 0..c.kw {
                let row = &cols[((ci * c.kh + ki) * c.kw + kj) * ld + col0..];
                let valid = valid_columns(c, kj);
                if valid.is_empty() {
                    continue;
                }
                let iw0 = valid.start * c.stride[1] + kj * c.dilation[1] - c.pads[1];
                for oh in 0..c.hout {
                    let ih = (oh * c.stride[0] + ki * c.dilation[0]) as isize - c.pads[0] as isize;
                    if ih < 0 || ih >= c.hin as isize {
                        continue;
                    }
                    let dst = &mut plane[ih as usize * c.win..][..c.win];
                    let src = &row[oh * c.wout + valid.start..oh * c.wout + valid.end];
                    if c.stride[1] == 1 {
                        dst[iw0..iw0 + src.len()]
                            .iter_mut()
                            .zip(src)
                            .for_each(|(d, v)| *d += v);
                    } else {
                        for (k, v) in src.iter().enumerate() {
                            dst[iw0 + k * c.stride[1]] += v;
                        }
                    }
                }
            }
        }
    }
}

/// One output position whose window is the whole unpadded input: out[co] = W[co] . x.
fn is_whole_input(c: &Conv) -> bool {
    c.groups == 1 && (c.hout, c.wout) == (1, 1) && (c.kh, c.kw) == (c.hin, c.win) && c.pads[..2] == [0, 0]
}

/// 1x1, stride 1, no padding: input and output positions coincide.
fn is_pointwise(c: &Conv) -> bool {
    c.kh == 1 && c.kw == 1 && c.stride == [1, 1] && c.pads == [0; 4]
}

fn is_depthwise(c: &Conv) -> bool {
    c.groups == c.cin && c.groups == c.cout
}

/// Output positions up to which a convolution's forward pass is direct (`graph_kernels`).
const DIRECT_MAX_POSITIONS: usize = 64;

fn conv_forward(c: &Conv, x: &[f32], y: &mut [f32]) {
    let hw = c.hout * c.wout;
    if is_depthwise(c) {
        let s = c.stride[1];
        for ch in 0..c.cout {
            let w = &c.weight[ch * c.kh * c.kw..(ch + 1) * c.kh * c.kw];
            let plane = &x[ch * c.hin * c.win..][..c.hin * c.win];
            let out = &mut y[ch * hw..(ch + 1) * hw];
            depthwise_runs(c, w, |i, o, n, wv| {
                if s == 1 {
                    out[o..o + n]
                        .iter_mut()
                        .zip(&plane[i..i + n])
                        .for_each(|(v, p)| *v += wv * p);
                } else {
                    for k in 0..n {
                        out[o + k] += wv * plane[i + k * s];
                    }
                }
            });
            out.iter_mut().for_each(|v| *v += c.bias[ch]);
        }
        return;
    }
    if c.groups == 1 && hw <= DIRECT_MAX_POSITIONS && graph_kernels::has_direct_forward() {
        graph_kernels::conv_forward_direct(&geometry(c), &c.taps, &c.bias, x, y);
        return;
    }
    let cin_g = c.cin / c.groups;
    let cout_g = c.cout / c.groups;
    let ckk = cin_g * c.kh * c.kw;
    if is_pointwise(c) {
        // A 1x1 convolution is a matrix product with the image as it is.
        for grp in 0..c.groups {
            matmul(
                &mut y[grp * cout_g * hw..(grp + 1) * cout_g * hw],
                View::rows(
                    &c.weight[grp * cout_g * ckk..(grp + 1) * cout_g * ckk],
                    cout_g,
                    ckk,
                ),
                View::rows(&x[grp * cin_g * hw..(grp + 1) * cin_g * hw], cin_g, hw),
                false,
                Threads::All,
            );
        }
        for (row, b) in y.chunks_mut(hw).zip(&c.bias) {
            row.iter_mut().for_each(|v| *v += b);
        }
        return;
    }
    let mut cols = vec![0.0f32; ckk * hw];
    for grp in 0..c.groups {
        im2col(c, x, grp, &mut cols);
        matmul(
            &mut y[grp * cout_g * hw..(grp + 1) * cout_g * hw],
            View::rows(
                &c.weight[grp * cout_g * ckk..(grp + 1) * cout_g * ckk],
                cout_g,
                ckk,
            ),
            View::rows(&cols, ckk, hw),
            false,
            if c.groups == 1 { Threads::All } else { Threads::One },
        );
    }
    for (row, b) in y.chunks_mut(hw).zip(&c.bias) {
        row.iter_mut().for_each(|v| *v += b);
    }
}

/// Visits a one-channel convolution by runs: (input index i, output index o, length n, weight)
/// meaning outputs o..o + n meet inputs i, i + s, .. (s the column stride), all inside the image.
fn depthwise_runs(c: &Conv, w: &[f32], mut f: impl FnMut(usize, usize, usize, f32)) {
    for ki in 0..c.kh {
        for kj in 0..c.kw {
            let wv = w[ki * c.kw + kj];
            let valid = valid_columns(c, kj);
            if valid.is_empty() {
                continue;
            }
            let iw0 = valid.start * c.stride[1] + kj * c.dilation[1] - c.pads[1];
            for oh in 0..c.hout {
                let ih = (oh * c.stride[0] + ki * c.dilation[0]) as isize - c.pads[0] as isize;
                if ih < 0 || ih >= c.hin as isize {
                    continue;
                }
                f(
                    ih as usize * c.win + iw0,
                    oh * c.wout + valid.start,
                    valid.len(),
                    wv,
                );
            }
        }
    }
}

/// Above this fraction of live entries a pointwise convolution's reverse pass is one dense product.
const POINTWISE_DENSE: f64 = 0.5;

fn geometry(c: &Conv) -> ConvGeometry {
    ConvGeometry {
        cin: c.cin,
        cout: c.cout,
        kh: c.kh,
        kw: c.kw,
        stride: c.stride,
        pad: [c.pads[0], c.pads[1]],
        dilation: c.dilation,
        hin: c.hin,
        win: c.win,
        hout: c.hout,
        wout: c.wout,
    }
}

/// Largest column buffer of a batched convolution reverse pass (f32 values).
const MAX_COLUMNS: usize = 1 << 24;

/// dx_r = W^T g_r for `rows` cotangents: all rows of one group in one product (W streams once).
fn conv_backward(c: &Conv, g: &[f32], rows: usize, pool: &Pool) -> Vec<f32> {
    let hw = c.hout * c.wout;
    let in_len = c.cin * c.hin * c.win;
    let out_len = c.cout * hw;
    let mut dx = pool.zeros(rows * in_len);
    if is_depthwise(c) {
        graph_kernels::depthwise_input_grad(&geometry(c), &c.weight, g, rows, &mut dx);
        return dx;
    }
    // The rows share the image's masks: visit only live entries and taps inside the image. A dense
    // pointwise gradient (no ReLU behind it) is one plain product instead.
    if c.groups == 1 && !(is_pointwise(c) && graph_kernels::density(&g[..out_len]) > POINTWISE_DENSE) {
        graph_kernels::conv_input_grad(&geometry(c), &c.taps, g, rows, &mut dx);
        return dx;
    }
    let cin_g = c.cin / c.groups;
    let cout_g = c.cout / c.groups;
    let ckk = cin_g * c.kh * c.kw;
    let chunk = (MAX_COLUMNS / (ckk * hw).max(1)).clamp(1, rows);
    for first in (0..rows).step_by(chunk) {
        let n = chunk.min(rows - first);
        let ld = n * hw;
        for grp in 0..c.groups {
            // G [cout_g][n hw]: the rows side by side, so one product serves them all.
            let mut gm = vec![0.0f32; cout_g * ld];
            for r in 0..n {
                let gr = &g[(first + r) * out_len..(first + r + 1) * out_len];
                for co in 0..cout_g {
                    gm[co * ld + r * hw..co * ld + (r + 1) * hw]
                        .copy_from_slice(&gr[(grp * cout_g + co) * hw..(grp * cout_g + co + 1) * hw]);
                }
            }
            let mut dcols = vec![0.0f32; ckk * ld];
            matmul(
                &mut dcols,
                View::transposed(
                    &c.weight[grp * cout_g * ckk..(grp + 1) * cout_g * ckk],
                    cout_g,
                    ckk,
                ),
                View::rows(&gm, cout_g, ld),
                false,
                Threads::All,
            );
            if is_pointwise(c) {
                // dcols is already dx of this group, rows side by side.
                for r in 0..n {
                    let dr = &mut dx[(first + r) * in_len..(first + r + 1) * in_len];
                    for ci in 0..cin_g {
                        dr[(grp * cin_g + ci) * hw..(grp * cin_g + ci + 1) * hw]
                            .copy_from_slice(&dcols[ci * ld + r * hw..ci * ld + (r + 1) * hw]);
                    }
                }
                continue;
            }
            super::team::for_each_chunk_mut(
                &mut dx[first * in_len..(first + n) * in_len],
                in_len,
                |r, dr| col2im(c, &dcols, ld, r * hw, grp, dr),
            );
        }
    }
    dx
}

/// Each output's window: the input positions it covers (inside the image).
fn window_positions(w: &Window, oh: usize, ow: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
    let h0 = (oh * w.stride[0]) as isize - w.pads[0] as isize;
    let w0 = (ow * w.stride[1]) as isize - w.pads[1] as isize;
    (0..w.kernel[0]).flat_map(move |ki| {
        let ih = h0 + (ki * w.dilation[0]) as isize;
        (0..w.kernel[1]).filter_map(move |kj| {
            let iw = w0 + (kj * w.dilation[1]) as isize;
            (ih >= 0 && ih < w.hin as isize && iw >= 0 && iw < w.win as isize)
                .then_some((ih as usize, iw as usize))
        })
    })
}

fn maxpool_forward(w: &Window, x: &[f32], y: &mut [f32]) -> Vec<u32> {
    let mut idx = vec![u32::MAX; y.len()];
    for c in 0..w.c {
        for oh in 0..w.hout {
            for ow in 0..w.wout {
                let o = (c * w.hout + oh) * w.wout + ow;
                // The first maximum wins and NaN propagates, as in PyTorch.
                let mut best = f32::NEG_INFINITY;
                let mut at = u32::MAX;
                for (ih, iw) in window_positions(w, oh, ow) {
                    let i = (c * w.hin + ih) * w.win + iw;
                    let v = x[i];
                    if at == u32::MAX || v > best || (v.is_nan() && !best.is_nan()) {
                        best = v;
                        at = i as u32;
                    }
                }
                y[o] = best;
                idx[o] = at;
            }
        }
    }
    idx
}

/// Average pooling forward (x -> y), or its adjoint (g -> dx, adding) when `adjoint`. The divisor
/// is PyTorch's: the window clipped to the padded input, or to the image without count_include_pad.
fn avgpool(w: &Window, count_include_pad: bool, src: &[f32], dst: &mut [f32], adjoint: bool) {
    for c in 0..w.c {
        for oh in 0..w.hout {
            for ow in 0..w.wout {
                let o = (c * w.hout + oh) * w.wout + ow;
                let h0 = (oh * w.stride[0]) as isize - w.pads[0] as isize;
                let w0 = (ow * w.stride[1]) as isize - w.pads[1] as isize;
                let h1 = (h0 + w.kernel[0] as isize).min((w.hin + w.pads[2]) as isize);
                let w1 = (w0 + w.kernel[1] as isize).min((w.win + w.pads[3]) as isize);
                let padded = ((h1 - h0) * (w1 - w0)) as f32;
                let inside = window_positions(w, oh, ow).count() as f32;
                let scale = 1.0
                    / if count_include_pad {
                        padded
                    } else {
                        inside.max(1.0)
                    };
                let mut sum = 0.0;
                for (ih, iw) in window_positions(w, oh, ow) {
                    let i = (c * w.hin + ih) * w.win + iw;
                    if adjoint {
                        dst[i] += src[o] * scale;
                    } else {
                        sum += src[i];
                    }
                }
                if !adjoint {
                    dst[o] = sum * scale;
                }
            }
        }
    }
}
