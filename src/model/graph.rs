//! A network as a graph of operators: the general form of a model file (shared/DESIGN.md, "Model
//! files"). A sequential `layers` list is the special case where each layer takes the one before;
//! `nodes` lists operators with their inputs by name, in topological order, as an ONNX export has
//! them. Shapes are ONNX's, batch first (always 1 here: one image at a time), and are resolved once
//! at load by [`infer_shape`].
//!
//! In JSON:
//!
//! ```json
//! "nodes": [
//!   { "id": "c1", "type": "conv", "weight": "conv1.weight", "bias": "conv1.bias", "pads": [1, 1, 1, 1] },
//!   { "id": "r1", "type": "relu" },
//!   { "id": "sum", "type": "add", "inputs": ["r1", "input"] },
//!   { "type": "global_avg_pool" }, { "type": "flatten" },
//!   { "type": "linear", "weight": "fc.weight", "bias": "fc.bias" } ]
//! ```
//!
//! `inputs` defaults to the node before (the first node takes `"input"`, the normalised image); `id`
//! defaults to `"n<position>"`. The last node's output is the logits. Weights are named tensors of
//! the safetensors file (or the ONNX initializers); `constant` nodes bring a tensor into the graph.

use serde::{Deserialize, Serialize};

use super::network::Weights;

/// The id of the graph's input value: the image after normalisation, shape [1, C, H, W].
pub const INPUT: &str = "input";

/// One operator and the values it takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<String>,
    /// Where it came from (the ONNX node name), for messages.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub origin: String,
    #[serde(flatten)]
    pub op: NodeOp,
}

fn ones2() -> [usize; 2] {
    [1, 1]
}
fn one() -> usize {
    1
}
fn one_i() -> i64 {
    1
}
fn bn_epsilon() -> f32 {
    1e-5
}
fn leaky_alpha() -> f32 {
    0.01
}
fn hard_sigmoid_alpha() -> f32 {
    0.2
}
fn half() -> f32 {
    0.5
}
fn yes() -> bool {
    true
}

/// The operators, each with ONNX's semantics and attribute names where ONNX has them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum NodeOp {
    /// 2-D convolution; `weight` is [cout, cin / groups, kh, kw]; pads are [top, left, bottom, right].
    Conv {
        weight: String,
        #[serde(default)]
        bias: Option<String>,
        #[serde(default = "ones2")]
        stride: [usize; 2],
        #[serde(default)]
        pads: [usize; 4],
        #[serde(default = "ones2")]
        dilation: [usize; 2],
        #[serde(default = "one")]
        groups: usize,
    },
    /// y = x W^T + b on [1, in]; `weight` is [out, in] (PyTorch's nn.Linear, ONNX Gemm transB = 1).
    Linear {
        weight: String,
        #[serde(default)]
        bias: Option<String>,
    },
    /// Inference BatchNorm over axis 1: y = scale (x - mean) / sqrt(var + epsilon) + bias.
    BatchNorm {
        scale: String,
        bias: String,
        mean: String,
        var: String,
        #[serde(default = "bn_epsilon")]
        epsilon: f32,
    },
    Relu,
    LeakyRelu {
        #[serde(default = "leaky_alpha")]
        alpha: f32,
    },
    /// min(max(x, min), max); ReLU6 is clip 0..6.
    Clip {
        #[serde(default)]
        min: Option<f32>,
        #[serde(default)]
        max: Option<f32>,
    },
    Sigmoid,
    Tanh,
    /// The exact GELU, x Phi(x).
    Gelu,
    Softplus,
    Erf,
    /// x relu6(x + 3) / 6.
    HardSwish,
    /// max(0, min(1, alpha x + beta)).
    HardSigmoid {
        #[serde(default = "hard_sigmoid_alpha")]
        alpha: f32,
        #[serde(default = "half")]
        beta: f32,
    },
    /// Elementwise with numpy broadcasting; either input may be a constant.
    Add,
    Sub,
    Mul,
    Div,
    /// A named tensor of the weights, as a value of the graph.
    Constant {
        tensor: String,
    },
    Concat {
        axis: i64,
    },
    MaxPool {
        kernel: [usize; 2],
        #[serde(default = "ones2")]
        stride: [usize; 2],
        #[serde(default)]
        pads: [usize; 4],
        #[serde(default = "ones2")]
        dilation: [usize; 2],
        #[serde(default)]
        ceil_mode: bool,
    },
    AvgPool {
        kernel: [usize; 2],
        #[serde(default = "ones2")]
        stride: [usize; 2],
        #[serde(default)]
        pads: [usize; 4],
        #[serde(default)]
        ceil_mode: bool,
        #[serde(default)]
        count_include_pad: bool,
    },
    GlobalAvgPool,
    /// Mean over `axes` (spatial means, as `x.mean([2, 3])` exports).
    ReduceMean {
        axes: Vec<i64>,
        #[serde(default = "yes")]
        keepdims: bool,
    },
    Flatten {
        #[serde(default = "one_i")]
        axis: i64,
    },
    /// ONNX Reshape: 0 copies a dimension, -1 is inferred.
    Reshape {
        shape: Vec<i64>,
    },
    Transpose {
        perm: Vec<usize>,
    },
    Slice {
        starts: Vec<i64>,
        ends: Vec<i64>,
        #[serde(default)]
        axes: Vec<i64>,
        #[serde(default)]
        steps: Vec<i64>,
    },
    Identity,
}

impl NodeOp {
    /// The operator's name in messages (the JSON `type`).
    pub fn kind(&self) -> &'static str {
        match self {
            NodeOp::Conv { .. } => "conv",
            NodeOp::Linear { .. } => "linear",
            NodeOp::BatchNorm { .. } => "batch_norm",
            NodeOp::Relu => "relu",
            NodeOp::LeakyRelu { .. } => "leaky_relu",
            NodeOp::Clip { .. } => "clip",
            NodeOp::Sigmoid => "sigmoid",
            NodeOp::Tanh => "tanh",
            NodeOp::Gelu => "gelu",
            NodeOp::Softplus => "softplus",
            NodeOp::Erf => "erf",
            NodeOp::HardSwish => "hard_swish",
            NodeOp::HardSigmoid { .. } => "hard_sigmoid",
            NodeOp::Add => "add",
            NodeOp::Sub => "sub",
            NodeOp::Mul => "mul",
            NodeOp::Div => "div",
            NodeOp::Constant { .. } => "constant",
            NodeOp::Concat { .. } => "concat",
            NodeOp::MaxPool { .. } => "max_pool",
            NodeOp::AvgPool { .. } => "avg_pool",
            NodeOp::GlobalAvgPool => "global_avg_pool",
            NodeOp::ReduceMean { .. } => "reduce_mean",
            NodeOp::Flatten { .. } => "flatten",
            NodeOp::Reshape { .. } => "reshape",
            NodeOp::Transpose { .. } => "transpose",
            NodeOp::Slice { .. } => "slice",
            NodeOp::Identity => "identity",
        }
    }

    /// How many inputs the operator takes.
    pub fn arity(&self) -> usize {
        match self {
            NodeOp::Constant { .. } => 0,
            NodeOp::Add | NodeOp::Sub | NodeOp::Mul | NodeOp::Div => 2,
            NodeOp::Concat { .. } => usize::MAX,
            _ => 1,
        }
    }

    /// Smooth operators: the network is then not piecewise linear (a product of two values counts,
    /// as in squeeze-excitation and SiLU, unless one side is a constant).
    pub fn is_smooth(&self) -> bool {
        matches!(
            self,
            NodeOp::Sigmoid
                | NodeOp::Tanh
                | NodeOp::Gelu
                | NodeOp::Softplus
                | NodeOp::Erf
                | NodeOp::HardSwish
        )
    }
}

/// Values in a shape, or None past `MAX_ACTIVATION`.
pub fn checked_len(shape: &[usize]) -> Option<usize> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= super::arch::MAX_ACTIVATION)
}

/// Spatial output size of a window op (ONNX's and PyTorch's formula, floor or ceil).
pub fn window_out(
    size: usize,
    kernel: usize,
    stride: usize,
    pads: (usize, usize),
    dilation: usize,
    ceil: bool,
) -> Result<usize, String> {
    if kernel == 0 || stride == 0 || dilation == 0 {
        return Err("kernel, stride and dilation must be positive".into());
    }
    let span = dilation
        .checked_mul(kernel - 1)
        .and_then(|s| s.checked_add(1))
        .ok_or("kernel too large")?;
    let padded = size
        .checked_add(pads.0)
        .and_then(|s| s.checked_add(pads.1))
        .ok_or("padding too large")?;
    if padded < span {
        return Err(format!(
            "its window ({span}) is larger than its padded input ({padded})"
        ));
    }
    let rounding = if ceil { stride - 1 } else { 0 };
    let mut out = (padded - span + rounding) / stride + 1;
    // With ceil_mode the last window must start inside the input or its left padding.
    if ceil && (out - 1) * stride >= size + pads.0 {
        out -= 1;
    }
    Ok(out)
}

/// Row-major strides.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for a in (0..shape.len().saturating_sub(1)).rev() {
        s[a] = s[a + 1] * shape[a + 1];
    }
    s
}

/// Visit every multi-index of a shape in row-major order.
pub fn for_each_index(shape: &[usize], mut f: impl FnMut(&[usize])) {
    let total: usize = shape.iter().product();
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..total {
        f(&idx);
        for a in (0..shape.len()).rev() {
            idx[a] += 1;
            if idx[a] < shape[a] {
                break;
            }
            idx[a] = 0;
        }
    }
}

/// out[i] = in[map[i]] for a permutation of axes.
pub fn transpose_map(shape: &[usize], perm: &[usize]) -> Vec<u32> {
    let st = strides(shape);
    let out: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let mut map = Vec::with_capacity(out.iter().product());
    for_each_index(&out, |idx| {
        map.push(idx.iter().zip(perm).map(|(i, &p)| i * st[p]).sum::<usize>() as u32)
    });
    map
}

/// out[i] = in[map[i]] for a Slice with the ranges of `slice_ranges`.
pub fn slice_map(shape: &[usize], ranges: &[(i64, i64, usize)]) -> Vec<u32> {
    let st = strides(shape);
    let out: Vec<usize> = ranges.iter().map(|r| r.2).collect();
    let mut map = Vec::with_capacity(out.iter().product());
    for_each_index(&out, |idx| {
        let at: i64 = idx
            .iter()
            .zip(ranges)
            .zip(&st)
            .map(|((&i, &(start, step, _)), &s)| (start + i as i64 * step) * s as i64)
            .sum();
        map.push(at as u32);
    });
    map
}

/// Numpy broadcasting of two shapes.
pub fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let n = a.len().max(b.len());
    let at = |s: &[usize], i: usize| {
        if i + s.len() >= n {
            s[i + s.len() - n]
        } else {
            1
        }
    };
    (0..n)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            (x, y) => Err(format!("shapes {a:?} and {b:?} do not broadcast ({x} vs {y})")),
        })
        .collect()
}

/// An axis in [-rank, rank) as an index.
pub fn axis(a: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    if a < -r || a >= r {
        return Err(format!("axis {a} is outside a rank-{rank} tensor"));
    }
    Ok(if a < 0 { (a + r) as usize } else { a as usize })
}

fn tensor_shape<'w>(weights: &'w Weights, key: &str) -> Result<&'w [usize], String> {
    weights
        .get(key)
        .map(|t| t.shape.as_slice())
        .ok_or_else(|| format!("weight tensor {key:?} is missing"))
}

/// The ranges a Slice keeps on each axis: (start, step, count) per axis of `shape`.
pub fn slice_ranges(
    shape: &[usize],
    starts: &[i64],
    ends: &[i64],
    axes: &[i64],
    steps: &[i64],
) -> Result<Vec<(i64, i64, usize)>, String> {
    let mut out: Vec<(i64, i64, usize)> = shape.iter().map(|&d| (0, 1, d)).collect();
    if starts.len() != ends.len() {
        return Err("slice needs as many starts as ends".into());
    }
    for k in 0..starts.len() {
        let ax = match axes.get(k) {
            Some(&a) => axis(a, shape.len())?,
            None if axes.is_empty() => k,
            None => return Err("slice needs one axis per start".into()),
        };
        if ax >= shape.len() {
            return Err(format!(
                "slice axis {ax} is outside a rank-{} tensor",
                shape.len()
            ));
        }
        let step = steps.get(k).copied().unwrap_or(1);
        if step == 0 {
            return Err("slice step 0".into());
        }
        let d = shape[ax] as i64;
        let clampi = |v: i64, lo: i64, hi: i64| v.max(lo).min(hi);
        let norm = |v: i64| if v < 0 { v + d } else { v };
        let (start, end) = if step > 0 {
            (clampi(norm(starts[k]), 0, d), clampi(norm(ends[k]), 0, d))
        } else {
            (
                clampi(norm(starts[k]), -1, d - 1),
                clampi(norm(ends[k]), -1, d - 1),
            )
        };
        let count = if step > 0 {
            ((end - start).max(0) + step - 1) / step
        } else {
            ((start - end).max(0) + (-step) - 1) / (-step)
        };
        out[ax] = (start, step, count as usize);
    }
    Ok(out)
}

/// The output shape of a node from its inputs' shapes, or why it cannot take them.
pub fn infer_shape(op: &NodeOp, inputs: &[&[usize]], weights: &Weights) -> Result<Vec<usize>, String> {
    let x = inputs.first().copied().unwrap_or(&[]);
    let image = |what: &str| -> Result<(usize, usize, usize), String> {
        match *x {
            [1, c, h, w] => Ok((c, h, w)),
            _ => Err(format!("{what} needs an input of shape [1, C, H, W], gets {x:?}")),
        }
    };
    let shape = match op {
        NodeOp::Conv {
            weight,
            bias,
            stride,
            pads,
            dilation,
            groups,
        } => {
            let (c, h, w) = image("conv")?;
            let ws = tensor_shape(weights, weight)?;
            let [cout, cin_g, kh, kw] = *ws else {
                return Err(format!(
                    "conv weight {weight:?} has shape {ws:?}, needs 4 dimensions"
                ));
            };
            if *groups == 0 || c % groups != 0 || cout % groups != 0 || cin_g * groups != c {
                return Err(format!(
                    "conv weight {weight:?} {ws:?} with {groups} groups does not fit {c} input channels"
                ));
            }
            if let Some(b) = bias {
                let bs = tensor_shape(weights, b)?;
                if bs != [cout] {
                    return Err(format!("conv bias {b:?} has shape {bs:?}, needs [{cout}]"));
                }
            }
            let oh = window_out(h, kh, stride[0], (pads[0], pads[2]), dilation[0], false)?;
            let ow = window_out(w, kw, stride[1], (pads[1], pads[3]), dilation[1], false)?;
            vec![1, cout, oh, ow]
        }
        NodeOp::Linear { weight, bias } => {
            let ws = tensor_shape(weights, weight)?;
            let [nout, nin] = *ws else {
                return Err(format!(
                    "linear weight {weight:?} has shape {ws:?}, needs 2 dimensions"
                ));
            };
            if x != [1, nin] {
                return Err(format!(
                    "linear weight {weight:?} {ws:?} needs input [1, {nin}], gets {x:?}"
                ));
            }
            if let Some(b) = bias {
                let bs = tensor_shape(weights, b)?;
                if bs != [nout] && bs != [1, nout] {
                    return Err(format!("linear bias {b:?} has shape {bs:?}, needs [{nout}]"));
                }
            }
            vec![1, nout]
        }
        NodeOp::BatchNorm {
            scale,
            bias,
            mean,
            var,
            ..
        } => {
            let c = *x.get(1).ok_or("batch_norm needs at least 2 dimensions")?;
            for key in [scale, bias, mean, var] {
                let s = tensor_shape(weights, key)?;
                if s != [c] {
                    return Err(format!("batch_norm tensor {key:?} has shape {s:?}, needs [{c}]"));
                }
            }
            x.to_vec()
        }
        NodeOp::Relu
        | NodeOp::LeakyRelu { .. }
        | NodeOp::Clip { .. }
        | NodeOp::Sigmoid
        | NodeOp::Tanh
        | NodeOp::Gelu
        | NodeOp::Softplus
        | NodeOp::Erf
        | NodeOp::HardSwish
        | NodeOp::HardSigmoid { .. }
        | NodeOp::Identity => x.to_vec(),
        NodeOp::Add | NodeOp::Sub | NodeOp::Mul | NodeOp::Div => {
            let [a, b] = inputs else {
                return Err(format!("{} takes 2 inputs, has {}", op.kind(), inputs.len()));
            };
            broadcast(a, b)?
        }
        NodeOp::Constant { tensor } => tensor_shape(weights, tensor)?.to_vec(),
        NodeOp::Concat { axis: a } => {
            let first = *inputs.first().ok_or("concat needs at least one input")?;
            let ax = axis(*a, first.len())?;
            let mut out = first.to_vec();
            for s in &inputs[1..] {
                if s.len() != first.len()
                    || s.iter()
                        .zip(first)
                        .enumerate()
                        .any(|(i, (p, q))| i != ax && p != q)
                {
                    return Err(format!("concat on axis {ax} of shapes {first:?} and {s:?}"));
                }
                out[ax] += s[ax];
            }
            out
        }
        NodeOp::MaxPool {
            kernel,
            stride,
            pads,
            dilation,
            ceil_mode,
        } => {
            let (c, h, w) = image("max_pool")?;
            vec![
                1,
                c,
                window_out(
                    h,
                    kernel[0],
                    stride[0],
                    (pads[0], pads[2]),
                    dilation[0],
                    *ceil_mode,
                )?,
                window_out(
                    w,
                    kernel[1],
                    stride[1],
                    (pads[1], pads[3]),
                    dilation[1],
                    *ceil_mode,
                )?,
            ]
        }
        NodeOp::AvgPool {
            kernel,
            stride,
            pads,
            ceil_mode,
            ..
        } => {
            let (c, h, w) = image("avg_pool")?;
            vec![
                1,
                c,
                window_out(h, kernel[0], stride[0], (pads[0], pads[2]), 1, *ceil_mode)?,
                window_out(w, kernel[1], stride[1], (pads[1], pads[3]), 1, *ceil_mode)?,
            ]
        }
        NodeOp::GlobalAvgPool => {
            let (c, _, _) = image("global_avg_pool")?;
            vec![1, c, 1, 1]
        }
        NodeOp::ReduceMean { axes, keepdims } => {
            let axes: Vec<usize> = axes.iter().map(|&a| axis(a, x.len())).collect::<Result<_, _>>()?;
            let mut out = Vec::new();
            for (i, &d) in x.iter().enumerate() {
                if !axes.contains(&i) {
                    out.push(d);
                } else if *keepdims {
                    out.push(1);
                }
            }
            out
        }
        NodeOp::Flatten { axis: a } => {
            let ax = if *a == x.len() as i64 {
                x.len()
            } else {
                axis(*a, x.len())?
            };
            vec![x[..ax].iter().product(), x[ax..].iter().product()]
        }
        NodeOp::Reshape { shape } => {
            let total: usize = x.iter().product();
            let mut out = Vec::with_capacity(shape.len());
            let mut infer = None;
            for (i, &d) in shape.iter().enumerate() {
                match d {
                    0 => out.push(*x.get(i).ok_or("reshape copies a dimension the input lacks")?),
                    -1 if infer.is_none() => {
                        infer = Some(i);
                        out.push(1);
                    }
                    d if d > 0 => out.push(d as usize),
                    d => return Err(format!("reshape to {shape:?}: dimension {d}")),
                }
            }
            let known: usize = out.iter().product();
            if let Some(i) = infer {
                if known == 0 || !total.is_multiple_of(known) {
                    return Err(format!("cannot reshape {x:?} to {shape:?}"));
                }
                out[i] = total / known;
            }
            if out.iter().product::<usize>() != total {
                return Err(format!("cannot reshape {x:?} ({total} values) to {shape:?}"));
            }
            out
        }
        NodeOp::Transpose { perm } => {
            let mut sorted = perm.clone();
            sorted.sort_unstable();
            if sorted != (0..x.len()).collect::<Vec<_>>() {
                return Err(format!(
                    "transpose perm {perm:?} does not fit a rank-{} tensor",
                    x.len()
                ));
            }
            perm.iter().map(|&p| x[p]).collect()
        }
        NodeOp::Slice {
            starts,
            ends,
            axes,
            steps,
        } => slice_ranges(x, starts, ends, axes, steps)?
            .iter()
            .map(|r| r.2)
            .collect(),
    };
    if checked_len(&shape).is_none() {
        return Err(format!("output {shape:?} is too large"));
    }
    Ok(shape)
}

/// The graph's nodes with ids and inputs resolved: the id of each node and of each of its inputs.
pub fn resolve_ids(nodes: &[Node]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::with_capacity(nodes.len());
    for (i, node) in nodes.iter().enumerate() {
        let id = if node.id.is_empty() {
            format!("n{i}")
        } else {
            node.id.clone()
        };
        let inputs = if node.inputs.is_empty() && node.op.arity() > 0 {
            vec![out.last().map_or(INPUT.to_string(), |p| p.0.clone())]
        } else {
            node.inputs.clone()
        };
        out.push((id, inputs));
    }
    out
}

/// Check a graph and return every value's shape (input first, then each node's output).
pub fn shapes(input: [usize; 3], nodes: &[Node], weights: &Weights) -> Result<Vec<Vec<usize>>, String> {
    use std::collections::HashMap;
    if nodes.is_empty() {
        return Err("the graph has no nodes".into());
    }
    let ids = resolve_ids(nodes);
    let mut known: HashMap<&str, usize> = HashMap::new();
    let mut shapes = vec![vec![1, input[0], input[1], input[2]]];
    known.insert(INPUT, 0);
    for (k, (node, (id, inputs))) in nodes.iter().zip(&ids).enumerate() {
        let name = node_label(node, id);
        let arity = node.op.arity();
        if (arity != usize::MAX && inputs.len() != arity) || (arity == usize::MAX && inputs.is_empty()) {
            return Err(format!(
                "{name}: {} takes {} inputs, has {}",
                node.op.kind(),
                arity,
                inputs.len()
            ));
        }
        let mut ins = Vec::with_capacity(inputs.len());
        for i in inputs {
            let Some(&v) = known.get(i.as_str()) else {
                return Err(format!(
                    "{name}: input {i:?} is not the graph input nor an earlier node"
                ));
            };
            ins.push(shapes[v].as_slice());
        }
        let s = infer_shape(&node.op, &ins, weights).map_err(|e| format!("{name}: {e}"))?;
        if known.insert(id.as_str(), k + 1).is_some() || id == INPUT {
            return Err(format!("{name}: two values are both named {id:?}"));
        }
        shapes.push(s);
    }
    Ok(shapes)
}

/// "node ID (ORIGIN, TYPE)" for messages.
pub fn node_label(node: &Node, id: &str) -> String {
    if node.origin.is_empty() {
        format!("node {id:?} ({})", node.op.kind())
    } else {
        format!("node {:?} ({})", node.origin, node.op.kind())
    }
}
