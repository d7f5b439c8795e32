//! ONNX in: an `.onnx` file (as `torch.onnx.export` writes it) lowered to the graph of
//! src/model/graph.rs, the one representation every model has.
//!
//! Lowering runs once at load, like tract's "declutter": values computed from constants alone
//! (Shape / Gather / Unsqueeze / Concat chains that build a Reshape's target, a Constant feeding a
//! Div) are evaluated here; Identity, Dropout and float Casts disappear; a trailing Softmax or
//! LogSoftmax is dropped (dataleaf differentiates the logits); Gemm and MatMul with a constant
//! matrix become linear layers. What remains are the operators the engine differentiates exactly.
//! Anything else is refused in one line naming the node and its operator.

use std::collections::HashMap;

use super::graph::{self, for_each_index, strides, Node, NodeOp, INPUT};
use super::network::{Tensor32, Weights};
use std::path::Path;

use super::protobuf::{decode_raw, dtype, Attribute, Dim, External, ModelProto, NodeProto, TensorProto};

/// A tensor known at load time, widened to f64 (exact for the int64 shape arithmetic).
#[derive(Debug, Clone, PartialEq)]
struct Const {
    shape: Vec<usize>,
    data: Vec<f64>,
}

impl Const {
    fn scalar_list(data: Vec<f64>) -> Const {
        Const {
            shape: vec![data.len()],
            data,
        }
    }
    fn ints(&self) -> Vec<i64> {
        self.data.iter().map(|&v| v as i64).collect()
    }
    fn f32(&self) -> Tensor32 {
        Tensor32 {
            shape: self.shape.clone(),
            data: self.data.iter().map(|&v| v as f32).collect(),
        }
    }
}

/// A value of the ONNX graph during lowering.
#[derive(Debug, Clone)]
enum Val {
    Const(Const),
    /// Computed from the image: the id of the graph node that produces it, and its shape.
    Act {
        id: String,
        shape: Vec<usize>,
    },
}

/// What the lowering produced: the graph's nodes and the tensors they name, the input shape
/// (C, H, W) and the number of outputs.
pub struct Lowered {
    pub input: [usize; 3],
    pub nodes: Vec<Node>,
    pub weights: Weights,
    pub outputs: usize,
    /// The ONNX graph's name, or the producer's.
    pub name: String,
}

/// The operators the lowering accepts, for the refusal message.
const SUPPORTED: &str = "Conv, BatchNormalization, Relu, Clip, LeakyRelu, HardSwish, HardSigmoid, Sigmoid, \
Tanh, Erf, Gelu, Softplus, Add, Sub, Mul, Div, Concat, MaxPool, AveragePool, GlobalAveragePool, \
GlobalMaxPool, ReduceMean, Flatten, Gemm, MatMul, Identity, Dropout, Constant, Reshape, Transpose, \
Slice, Split, Squeeze, Unsqueeze, Shape, Gather, Cast, ConstantOfShape, Range, and a final Softmax / LogSoftmax";

struct Lowering {
    values: HashMap<String, Val>,
    nodes: Vec<Node>,
    weights: Weights,
    /// Names already used by nodes or weights.
    taken: std::collections::HashSet<String>,
    /// The shape of each graph node's output by id.
    shapes: HashMap<String, Vec<usize>>,
}

/// Why a node could not be lowered; the caller adds the node's name and operator.
type NodeResult<T> = Result<T, String>;

fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a Attribute> {
    node.attribute(name)
}

fn attr_int(node: &NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).and_then(|a| a.i).unwrap_or(default)
}

fn attr_float(node: &NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).and_then(|a| a.f).unwrap_or(default)
}

fn attr_ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

fn pair(v: &[i64], what: &str) -> NodeResult<[usize; 2]> {
    match *v {
        [a, b] if a >= 0 && b >= 0 => Ok([a as usize, b as usize]),
        _ => Err(format!("{what} {v:?}: dataleaf takes 2-D windows (two values)")),
    }
}

fn tensor_to_const(t: &TensorProto) -> NodeResult<Const> {
    match t.data_type {
        dtype::FLOAT
        | dtype::DOUBLE
        | dtype::FLOAT16
        | dtype::BFLOAT16
        | dtype::INT64
        | dtype::INT32
        | dtype::BOOL
        | 2
        | 3 => Ok(Const {
            shape: t.shape(),
            data: t.data.clone(),
        }),
        other => Err(format!(
            "tensor {:?} has type {}, which dataleaf does not read",
            t.name,
            dtype::name(other)
        )),
    }
}

fn const_binary(op: &str, a: &Const, b: &Const) -> NodeResult<Const> {
    let shape = graph::broadcast(&a.shape, &b.shape)?;
    let pick = |c: &Const, idx: &[usize]| -> f64 {
        let off = idx.len() - c.shape.len();
        let st = strides(&c.shape);
        let at: usize = c
            .shape
            .iter()
            .enumerate()
            .map(|(k, &d)| if d == 1 { 0 } else { idx[off + k] * st[k] })
            .sum();
        c.data[at]
    };
    let mut data = Vec::with_capacity(shape.iter().product());
    for_each_index(&shape, |idx| {
        let (p, q) = (pick(a, idx), pick(b, idx));
        data.push(match op {
            "Add" => p + q,
            "Sub" => p - q,
            "Mul" => p * q,
            _ => p / q,
        });
    });
    Ok(Const { shape, data })
}

fn const_gather(data: &Const, indices: &Const, axis: usize) -> NodeResult<Const> {
    if axis >= data.shape.len() {
        return Err("gather axis outside the tensor".into());
    }
    let d = data.shape[axis] as i64;
    let idx: Vec<usize> = indices
        .ints()
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + d } else { i };
            if j < 0 || j >= d {
                Err(format!("gather index {i} outside a dimension of {d}"))
            } else {
                Ok(j as usize)
            }
        })
        .collect::<Result<_, _>>()?;
    let mut shape = data.shape[..axis].to_vec();
    shape.extend(&indices.shape);
    shape.extend(&data.shape[axis + 1..]);
    let outer: usize = data.shape[..axis].iter().product();
    let inner: usize = data.shape[axis + 1..].iter().product();
    let mut out = Vec::with_capacity(outer * idx.len() * inner);
    for o in 0..outer {
        for &i in &idx {
            let start = (o * data.shape[axis] + i) * inner;
            out.extend_from_slice(&data.data[start..start + inner]);
        }
    }
    Ok(Const { shape, data: out })
}

fn const_concat(parts: &[&Const], axis: usize) -> NodeResult<Const> {
    let first = parts[0];
    let mut shape = first.shape.clone();
    if axis >= shape.len() {
        return Err("concat axis outside the tensor".into());
    }
    shape[axis] = parts
        .iter()
        .map(|p| p.shape.get(axis).copied().unwrap_or(0))
        .sum();
    let outer: usize = first.shape[..axis].iter().product();
    let mut data = Vec::new();
    for o in 0..outer {
        for p in parts {
            let block: usize = p.shape[axis..].iter().product();
            data.extend_from_slice(&p.data[o * block..(o + 1) * block]);
        }
    }
    Ok(Const { shape, data })
}

fn const_slice(c: &Const, ranges: &[(i64, i64, usize)]) -> Const {
    Const {
        shape: ranges.iter().map(|r| r.2).collect(),
        data: graph::slice_map(&c.shape, ranges)
            .iter()
            .map(|&i| c.data[i as usize])
            .collect(),
    }
}

fn const_transpose(c: &Const, perm: &[usize]) -> Const {
    Const {
        shape: perm.iter().map(|&p| c.shape[p]).collect(),
        data: graph::transpose_map(&c.shape, perm)
            .iter()
            .map(|&i| c.data[i as usize])
            .collect(),
    }
}

/// Unsqueeze's output shape: 1s inserted at `axes` (of the output rank).
fn unsqueezed(shape: &[usize], axes: &[i64]) -> NodeResult<Vec<usize>> {
    let rank = shape.len() + axes.len();
    let mut axes: Vec<usize> = axes
        .iter()
        .map(|&a| graph::axis(a, rank))
        .collect::<Result<_, _>>()?;
    axes.sort_unstable();
    let mut out = Vec::with_capacity(rank);
    let mut rest = shape.iter();
    for i in 0..rank {
        if axes.contains(&i) {
            out.push(1);
        } else {
            out.push(*rest.next().ok_or("unsqueeze axes repeat")?);
        }
    }
    Ok(out)
}

fn squeezed(shape: &[usize], axes: Option<&[i64]>) -> NodeResult<Vec<usize>> {
    match axes {
        None => Ok(shape.iter().copied().filter(|&d| d != 1).collect()),
        Some(axes) => {
            let axes: Vec<usize> = axes
                .iter()
                .map(|&a| graph::axis(a, shape.len()))
                .collect::<Result<_, _>>()?;
            if axes.iter().any(|&a| shape[a] != 1) {
                return Err(format!("squeeze of axes {axes:?} of shape {shape:?}: not 1"));
            }
            Ok(shape
                .iter()
                .enumerate()
                .filter(|(i, _)| !axes.contains(i))
                .map(|(_, &d)| d)
                .collect())
        }
    }
}

impl Lowering {
    fn value(&self, name: &str) -> NodeResult<&Val> {
        self.values.get(name).ok_or_else(|| {
            format!("input {name:?} is neither an initializer, a Constant, the graph input nor an earlier node's output")
        })
    }

    /// An optional input: None when absent or named "".
    fn optional(&self, node: &NodeProto, k: usize) -> NodeResult<Option<&Val>> {
        match node.inputs.get(k) {
            None => Ok(None),
            Some(n) if n.is_empty() => Ok(None),
            Some(n) => self.value(n).map(Some),
        }
    }

    fn constant(&self, node: &NodeProto, k: usize, what: &str) -> NodeResult<Const> {
        match self.optional(node, k)? {
            Some(Val::Const(c)) => Ok(c.clone()),
            Some(Val::Act { .. }) => Err(format!(
                "its {what} (input {k}) is computed from the image; dataleaf needs it constant"
            )),
            None => Err(format!("its {what} (input {k}) is missing")),
        }
    }

    fn unique(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 1;
        while self.taken.contains(&name) || name == INPUT {
            name = format!("{base}#{k}");
            k += 1;
        }
        self.taken.insert(name.clone());
        name
    }

    /// A constant as a weight tensor (re-using an initializer's own name when it has one).
    fn weight(&mut self, wanted: &str, c: &Const) -> String {
        if let Some(t) = self.weights.get(wanted) {
            if t.shape == c.shape && t.data.iter().zip(&c.data).all(|(a, &b)| *a == b as f32) {
                return wanted.to_string();
            }
        }
        let key = self.unique(wanted);
        self.weights.insert(key.clone(), c.f32());
        key
    }

    /// Emit a graph node taking activations `inputs`, producing ONNX value `output`.
    fn emit(&mut self, node: &NodeProto, output: &str, inputs: Vec<String>, op: NodeOp) -> NodeResult<()> {
        let shapes: Vec<Vec<usize>> = inputs
            .iter()
            .map(|i| self.act_shape(i))
            .collect::<NodeResult<_>>()?;
        let refs: Vec<&[usize]> = shapes.iter().map(Vec::as_slice).collect();
        let shape = graph::infer_shape(&op, &refs, &self.weights)?;
        let id = self.unique(output);
        self.nodes.push(Node {
            id: id.clone(),
            inputs,
            origin: if node.name.is_empty() {
                format!("{} -> {output}", node.op_type)
            } else {
                node.name.clone()
            },
            op,
        });
        self.shapes.insert(id.clone(), shape.clone());
        self.values.insert(output.to_string(), Val::Act { id, shape });
        Ok(())
    }

    /// The shape of the activation a graph id names.
    fn act_shape(&self, id: &str) -> NodeResult<Vec<usize>> {
        self.shapes
            .get(id)
            .cloned()
            .ok_or_else(|| format!("internal: no shape for {id:?}"))
    }

    /// The graph id of an input that must be an activation, bringing a constant in as a Constant
    /// node when needed.
    fn act_or_const(&mut self, node: &NodeProto, k: usize) -> NodeResult<String> {
        let name = node.inputs.get(k).cloned().unwrap_or_default();
        match self.value(&name)?.clone() {
            Val::Act { id, .. } => Ok(id),
            Val::Const(c) => {
                let key = self.weight(&name, &c);
                let id = self.unique(&format!("{name}:const"));
                self.nodes.push(Node {
                    id: id.clone(),
                    inputs: Vec::new(),
                    origin: format!("constant {name}"),
                    op: NodeOp::Constant { tensor: key },
                });
                self.shapes.insert(id.clone(), c.shape.clone());
                Ok(id)
            }
        }
    }

    fn act(&self, node: &NodeProto, k: usize) -> NodeResult<(String, Vec<usize>)> {
        let name = node.inputs.get(k).map(String::as_str).unwrap_or("");
        match self.value(name)? {
            Val::Act { id, shape } => Ok((id.clone(), shape.clone())),
            Val::Const(_) => Err(format!(
                "input {k} is a constant where dataleaf expects the image's value"
            )),
        }
    }

    fn alias(&mut self, node: &NodeProto, k: usize) -> NodeResult<()> {
        let v = self
            .value(node.inputs.get(k).map(String::as_str).unwrap_or(""))?
            .clone();
        if let Some(out) = node.outputs.first() {
            self.values.insert(out.clone(), v);
        }
        Ok(())
    }

    /// Evaluate a node whose inputs are all constants; None when its operator has no constant form.
    fn fold(&self, node: &NodeProto) -> NodeResult<Option<Vec<Const>>> {
        let ins: Vec<Option<&Const>> = node
            .inputs
            .iter()
            .map(|n| match n.as_str() {
                "" => None,
                n => match self.values.get(n) {
                    Some(Val::Const(c)) => Some(c),
                    _ => None,
                },
            })
            .collect();
        let present = node.inputs.iter().filter(|n| !n.is_empty()).count();
        if ins.iter().flatten().count() != present {
            return Ok(None);
        }
        let get = |k: usize| -> NodeResult<&Const> {
            ins.get(k)
                .copied()
                .flatten()
                .ok_or_else(|| format!("input {k} is missing"))
        };
        let one = |c: Const| Ok(Some(vec![c]));
        match node.op_type.as_str() {
            "Add" | "Sub" | "Mul" | "Div" => one(const_binary(&node.op_type, get(0)?, get(1)?)?),
            "Identity" | "Cast" | "Dropout" => {
                let c = get(0)?.clone();
                let to = attr_int(node, "to", dtype::FLOAT);
                let int_like = [dtype::INT64, dtype::INT32, 2, 3, 4, 5, 12, 13];
                let data = if node.op_type == "Cast" && int_like.contains(&to) {
                    c.data.iter().map(|v| v.trunc()).collect()
                } else {
                    c.data
                };
                one(Const { shape: c.shape, data })
            }
            "Gather" => {
                let data = get(0)?;
                let ax = graph::axis(attr_int(node, "axis", 0), data.shape.len())?;
                one(const_gather(data, get(1)?, ax)?)
            }
            "Unsqueeze" => {
                let c = get(0)?;
                let axes = match attr_ints(node, "axes") {
                    Some(a) => a,
                    None => get(1)?.ints(),
                };
                one(Const {
                    shape: unsqueezed(&c.shape, &axes)?,
                    data: c.data.clone(),
                })
            }
            "Squeeze" => {
                let c = get(0)?;
                let axes = attr_ints(node, "axes").or(ins.get(1).copied().flatten().map(Const::ints));
                one(Const {
                    shape: squeezed(&c.shape, axes.as_deref())?,
                    data: c.data.clone(),
                })
            }
            "Concat" => {
                let parts: Vec<&Const> = ins.iter().flatten().copied().collect();
                let rank = parts.first().map_or(0, |p| p.shape.len());
                one(const_concat(
                    &parts,
                    graph::axis(attr_int(node, "axis", 0), rank)?,
                )?)
            }
            "Reshape" => {
                let c = get(0)?;
                let shape = graph::infer_shape(
                    &NodeOp::Reshape {
                        shape: get(1)?.ints(),
                    },
                    &[&c.shape],
                    &Weights::new(),
                )?;
                one(Const {
                    shape,
                    data: c.data.clone(),
                })
            }
            "Slice" => {
                let c = get(0)?;
                let (starts, ends) = (get(1)?.ints(), get(2)?.ints());
                let axes = ins.get(3).copied().flatten().map(Const::ints).unwrap_or_default();
                let steps = ins.get(4).copied().flatten().map(Const::ints).unwrap_or_default();
                one(const_slice(
                    c,
                    &graph::slice_ranges(&c.shape, &starts, &ends, &axes, &steps)?,
                ))
            }
            "Transpose" => {
                let c = get(0)?;
                let perm = attr_ints(node, "perm")
                    .map(|p| p.iter().map(|&v| v as usize).collect())
                    .unwrap_or_else(|| (0..c.shape.len()).rev().collect::<Vec<_>>());
                one(const_transpose(c, &perm))
            }
            "ConstantOfShape" => {
                let shape: Vec<usize> = get(0)?.ints().iter().map(|&d| d.max(0) as usize).collect();
                let value = attr(node, "value")
                    .and_then(|a| a.t.as_ref())
                    .and_then(|t| t.data.first().copied());
                let n: usize = shape.iter().product();
                one(Const {
                    shape,
                    data: vec![value.unwrap_or(0.0); n],
                })
            }
            "Range" => {
                let (start, limit, delta) = (get(0)?.data[0], get(1)?.data[0], get(2)?.data[0]);
                if delta == 0.0 {
                    return Err("range with delta 0".into());
                }
                let n = ((limit - start) / delta).ceil().max(0.0) as usize;
                one(Const::scalar_list(
                    (0..n).map(|i| start + i as f64 * delta).collect(),
                ))
            }
            "Neg" => {
                let c = get(0)?;
                one(Const {
                    shape: c.shape.clone(),
                    data: c.data.iter().map(|v| -v).collect(),
                })
            }
            "Sqrt" => {
                let c = get(0)?;
                one(Const {
                    shape: c.shape.clone(),
                    data: c.data.iter().map(|v| v.sqrt()).collect(),
                })
            }
            _ => Ok(None),
        }
    }

    fn lower(&mut self, node: &NodeProto, is_output: bool) -> NodeResult<()> {
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(format!("operator domain {:?} is not ONNX's own", node.domain));
        }
        let op = node.op_type.as_str();
        if op == "Constant" {
            let c = constant_node_value(node)?;
            if let Some(out) = node.outputs.first() {
                self.values.insert(out.clone(), Val::Const(c));
            }
            return Ok(());
        }
        if op == "Shape" {
            // The shape of any value is known at load (the input's shape is fixed).
            let shape = match self.value(node.inputs.first().map(String::as_str).unwrap_or(""))? {
                Val::Act { shape, .. } => shape.clone(),
                Val::Const(c) => c.shape.clone(),
            };
            let rank = shape.len() as i64;
            let clampi = |v: i64| if v < 0 { (v + rank).max(0) } else { v.min(rank) } as usize;
            let start = clampi(attr_int(node, "start", 0));
            let end = clampi(attr_int(node, "end", rank));
            let dims = shape[start..end.max(start)].iter().map(|&d| d as f64).collect();
            self.values
                .insert(node.outputs[0].clone(), Val::Const(Const::scalar_list(dims)));
            return Ok(());
        }
        if let Some(outs) = self.fold(node)? {
            for (name, c) in node.outputs.iter().zip(outs) {
                self.values.insert(name.clone(), Val::Const(c));
            }
            return Ok(());
        }
        let out = node.outputs.first().cloned().ok_or("the node has no output")?;
        let simple = |op: NodeOp| Some(op);
        let unary = match op {
            "Relu" => simple(NodeOp::Relu),
            "Sigmoid" => simple(NodeOp::Sigmoid),
            "Tanh" => simple(NodeOp::Tanh),
            "Erf" => simple(NodeOp::Erf),
            "Softplus" => simple(NodeOp::Softplus),
            "HardSwish" => simple(NodeOp::HardSwish),
            "LeakyRelu" => simple(NodeOp::LeakyRelu {
                alpha: attr_float(node, "alpha", 0.01),
            }),
            "HardSigmoid" => simple(NodeOp::HardSigmoid {
                alpha: attr_float(node, "alpha", 0.2),
                beta: attr_float(node, "beta", 0.5),
            }),
            "Gelu" => {
                let approx = attr(node, "approximate")
                    .and_then(|a| a.s.clone())
                    .unwrap_or_default();
                if !(approx.is_empty() || approx == "none") {
                    return Err(format!(
                        "approximate = {approx:?}: dataleaf takes the exact GELU only"
                    ));
                }
                simple(NodeOp::Gelu)
            }
            "Clip" => {
                let bound = |k: usize, name: &str| -> NodeResult<Option<f32>> {
                    match self.optional(node, k)? {
                        Some(Val::Const(c)) => Ok(c.data.first().map(|&v| v as f32)),
                        Some(Val::Act { .. }) => Err(format!(
                            "its {name} bound is computed; dataleaf needs it constant"
                        )),
                        None => Ok(attr(node, name).and_then(|a| a.f)),
                    }
                };
                simple(NodeOp::Clip {
                    min: bound(1, "min")?,
                    max: bound(2, "max")?,
                })
            }
            _ => None,
        };
        if let Some(op) = unary {
            let (x, _) = self.act(node, 0)?;
            return self.emit(node, &out, vec![x], op);
        }
        match op {
            "Identity" | "Dropout" => self.alias(node, 0),
            "Cast" => {
                let to = attr_int(node, "to", dtype::FLOAT);
                if ![dtype::FLOAT, dtype::DOUBLE, dtype::FLOAT16].contains(&to) {
                    return Err(format!("a cast of the image's values to {}", dtype::name(to)));
                }
                self.alias(node, 0)
            }
            "Softmax" | "LogSoftmax" if is_output => {
                // dataleaf differentiates the logits: the output is the softmax's input.
                self.alias(node, 0)
            }
            "Softmax" | "LogSoftmax" => Err(format!(
                "{op} inside the network (dataleaf drops only a final softmax and needs the logits)"
            )),
            "Add" | "Sub" | "Mul" | "Div" => {
                let a = self.act_or_const(node, 0)?;
                let b = self.act_or_const(node, 1)?;
                let op = match op {
                    "Add" => NodeOp::Add,
                    "Sub" => NodeOp::Sub,
                    "Mul" => NodeOp::Mul,
                    _ => NodeOp::Div,
                };
                self.emit(node, &out, vec![a, b], op)
            }
            "Conv" => self.conv(node, &out),
            "BatchNormalization" => {
                if attr_int(node, "training_mode", 0) != 0 {
                    return Err("training_mode = 1; export the model in eval mode (net.eval())".into());
                }
                let (x, _) = self.act(node, 0)?;
                let mut keys = Vec::new();
                for (k, what) in [(1, "scale"), (2, "bias"), (3, "mean"), (4, "var")] {
                    let c = self.constant(node, k, what)?;
                    keys.push(self.weight(&node.inputs[k], &c));
                }
                let [scale, bias, mean, var]: [String; 4] = keys.try_into().expect("four");
                self.emit(
                    node,
                    &out,
                    vec![x],
                    NodeOp::BatchNorm {
                        scale,
                        bias,
                        mean,
                        var,
                        epsilon: attr_float(node, "epsilon", 1e-5),
                    },
                )
            }
            "Gemm" => {
                let (x, _) = self.act(node, 0)?;
                if attr_int(node, "transA", 0) != 0 {
                    return Err("transA = 1 is not supported".into());
                }
                let b = self.constant(node, 1, "matrix B")?;
                let [k, n] = b.shape[..] else {
                    return Err(format!("matrix B has shape {:?}, needs 2 dimensions", b.shape));
                };
                let alpha = attr_float(node, "alpha", 1.0) as f64;
                let beta = attr_float(node, "beta", 1.0) as f64;
                // Linear's weight is [out, in]: B itself when transB = 1, else its transpose.
                let mut w = if attr_int(node, "transB", 0) != 0 {
                    b.clone()
                } else {
                    const_transpose(&b, &[1, 0])
                };
                let nout = if attr_int(node, "transB", 0) != 0 { k } else { n };
                let weight = if alpha == 1.0 {
                    self.weight(&node.inputs[1], &w)
                } else {
                    w.data.iter_mut().for_each(|v| *v *= alpha);
                    self.weight(&format!("{}.weight", node.name), &w)
                };
                let bias = match self.optional(node, 2)? {
                    None => None,
                    Some(Val::Act { .. }) => {
                        return Err("its bias C is computed; dataleaf needs it constant".into())
                    }
                    Some(Val::Const(c)) => {
                        let full = const_binary("Mul", c, &Const::scalar_list(vec![beta]))?;
                        let full = const_binary("Add", &full, &Const::scalar_list(vec![0.0; nout]))?;
                        if full.data.len() != nout {
                            return Err(format!(
                                "bias C of shape {:?} does not fit {nout} outputs",
                                c.shape
                            ));
                        }
                        let c = Const::scalar_list(full.data);
                        Some(self.weight(&node.inputs[2], &c))
                    }
                };
                self.emit(node, &out, vec![x], NodeOp::Linear { weight, bias })
            }
            "MatMul" => {
                let (x, _) = self.act(node, 0)?;
                let b = match self.optional(node, 1)? {
                    Some(Val::Const(c)) => c.clone(),
                    _ => {
                        return Err(
                            "a product of two computed values (dataleaf needs the matrix B constant)".into(),
                        )
                    }
                };
                if b.shape.len() != 2 {
                    return Err(format!("matrix B has shape {:?}, needs 2 dimensions", b.shape));
                }
                let w = const_transpose(&b, &[1, 0]);
                let weight = self.weight(&format!("{}.weight", node.inputs[1]), &w);
                self.emit(node, &out, vec![x], NodeOp::Linear { weight, bias: None })
            }
            "Concat" => {
                let mut ins = Vec::new();
                for k in 0..node.inputs.len() {
                    ins.push(self.act_or_const(node, k)?);
                }
                self.emit(
                    node,
                    &out,
                    ins,
                    NodeOp::Concat {
                        axis: attr_int(node, "axis", 1),
                    },
                )
            }
            "MaxPool" | "AveragePool" => self.pool(node, &out),
            "GlobalAveragePool" => {
                let (x, _) = self.act(node, 0)?;
                self.emit(node, &out, vec![x], NodeOp::GlobalAvgPool)
            }
            "GlobalMaxPool" => {
                let (x, shape) = self.act(node, 0)?;
                let [_, _, h, w] = shape[..] else {
                    return Err(format!("needs [1, C, H, W], gets {shape:?}"));
                };
                self.emit(
                    node,
                    &out,
                    vec![x],
                    NodeOp::MaxPool {
                        kernel: [h, w],
                        stride: [1, 1],
                        pads: [0; 4],
                        dilation: [1, 1],
                        ceil_mode: false,
                    },
                )
            }
            "ReduceMean" => {
                let (x, shape) = self.act(node, 0)?;
                let axes = match attr_ints(node, "axes") {
                    Some(a) => a,
                    None => match self.optional(node, 1)? {
                        Some(Val::Const(c)) => c.ints(),
                        Some(_) => return Err("its axes are computed".into()),
                        None => (0..shape.len() as i64).collect(),
                    },
                };
                self.emit(
                    node,
                    &out,
                    vec![x],
                    NodeOp::ReduceMean {
                        axes,
                        keepdims: attr_int(node, "keepdims", 1) != 0,
                    },
                )
            }
            "Flatten" => {
                let (x, _) = self.act(node, 0)?;
                self.emit(
                    node,
                    &out,
                    vec![x],
                    NodeOp::Flatten {
                        axis: attr_int(node, "axis", 1),
                    },
                )
            }
            "Reshape" => {
                let (x, _) = self.act(node, 0)?;
                let shape = self.constant(node, 1, "target shape")?.ints();
                if attr_int(node, "allowzero", 0) != 0 && shape.contains(&0) {
                    return Err("allowzero = 1 with a 0 in the shape".into());
                }
                self.emit(node, &out, vec![x], NodeOp::Reshape { shape })
            }
            "Squeeze" | "Unsqueeze" => {
                let (x, shape) = self.act(node, 0)?;
                let axes = match attr_ints(node, "axes") {
                    Some(a) => Some(a),
                    None => match self.optional(node, 1)? {
                        Some(Val::Const(c)) => Some(c.ints()),
                        Some(_) => return Err("its axes are computed".into()),
                        None => None,
                    },
                };
                let target = if op == "Squeeze" {
                    squeezed(&shape, axes.as_deref())?
                } else {
                    unsqueezed(&shape, &axes.ok_or("unsqueeze needs axes")?)?
                };
                let shape = target.iter().map(|&d| d as i64).collect();
                self.emit(node, &out, vec![x], NodeOp::Reshape { shape })
            }
            "Transpose" => {
                let (x, shape) = self.act(node, 0)?;
                let perm = attr_ints(node, "perm")
                    .map(|p| p.iter().map(|&v| v.max(0) as usize).collect())
                    .unwrap_or_else(|| (0..shape.len()).rev().collect());
                self.emit(node, &out, vec![x], NodeOp::Transpose { perm })
            }
            "Slice" => {
                let (x, _) = self.act(node, 0)?;
                let starts = self.constant(node, 1, "starts")?.ints();
                let ends = self.constant(node, 2, "ends")?.ints();
                let list = |k: usize| -> NodeResult<Vec<i64>> {
                    match self.optional(node, k)? {
                        Some(Val::Const(c)) => Ok(c.ints()),
                        Some(_) => Err("its axes or steps are computed".into()),
                        None => Ok(Vec::new()),
                    }
                };
                let (axes, steps) = (list(3)?, list(4)?);
                self.emit(
                    node,
                    &out,
                    vec![x],
                    NodeOp::Slice {
                        starts,
                        ends,
                        axes,
                        steps,
                    },
                )
            }
            "Split" => {
                let (x, shape) = self.act(node, 0)?;
                let ax = graph::axis(attr_int(node, "axis", 0), shape.len())?;
                let parts = node.outputs.len();
                let sizes: Vec<i64> = match (attr_ints(node, "split"), self.optional(node, 1)?) {
                    (Some(s), _) => s,
                    (None, Some(Val::Const(c))) => c.ints(),
                    (None, Some(_)) => return Err("its split sizes are computed".into()),
                    (None, None) => {
                        let d = shape[ax];
                        let each = d.div_ceil(parts.max(1));
                        (0..parts)
                            .map(|k| each.min(d.saturating_sub(k * each)) as i64)
                            .collect()
                    }
                };
                if sizes.len() != parts || sizes.iter().sum::<i64>() != shape[ax] as i64 {
                    return Err(format!(
                        "split sizes {sizes:?} do not fit dimension {} into {parts} parts",
                        shape[ax]
                    ));
                }
                let mut start = 0;
                for (name, &size) in node.outputs.iter().zip(&sizes) {
                    self.emit(
                        node,
                        name,
                        vec![x.clone()],
                        NodeOp::Slice {
                            starts: vec![start],
                            ends: vec![start + size],
                            axes: vec![ax as i64],
                            steps: vec![1],
                        },
                    )?;
                    start += size;
                }
                Ok(())
            }
            "Gather" => {
                // Gather of the image's values with constant indices: a slice per index.
                let (x, shape) = self.act(node, 0)?;
                let indices = self.constant(node, 1, "indices")?;
                let ax = graph::axis(attr_int(node, "axis", 0), shape.len())?;
                if !indices.shape.is_empty() {
                    return Err("a gather of several indices from the image's values".into());
                }
                let i = indices.ints()[0];
                let i = if i < 0 { i + shape[ax] as i64 } else { i };
                let sliced = format!("{out}\u{0}slice");
                self.emit(
                    node,
                    &sliced,
                    vec![x],
                    NodeOp::Slice {
                        starts: vec![i],
                        ends: vec![i + 1],
                        axes: vec![ax as i64],
                        steps: vec![1],
                    },
                )?;
                let (id, s) = match &self.values[&sliced] {
                    Val::Act { id, shape } => (id.clone(), shape.clone()),
                    Val::Const(_) => unreachable!("a slice of an activation"),
                };
                let mut target: Vec<i64> = s.iter().map(|&d| d as i64).collect();
                target.remove(ax);
                self.emit(node, &out, vec![id], NodeOp::Reshape { shape: target })
            }
            _ => Err(format!(
                "operator {op} is not supported: dataleaf needs every operator differentiated exactly \
                 (it reads {SUPPORTED})"
            )),
        }
    }

    fn conv(&mut self, node: &NodeProto, out: &str) -> NodeResult<()> {
        let (x, shape) = self.act(node, 0)?;
        let w = self.constant(node, 1, "weight")?;
        if w.shape.len() != 4 {
            return Err(format!(
                "weight of shape {:?}: dataleaf takes 2-D convolutions",
                w.shape
            ));
        }
        let weight = self.weight(&node.inputs[1], &w);
        let bias = match self.optional(node, 2)? {
            None => None,
            Some(Val::Const(c)) => {
                let c = c.clone();
                Some(self.weight(&node.inputs[2], &c))
            }
            Some(_) => return Err("its bias is computed; dataleaf needs it constant".into()),
        };
        let kernel = [w.shape[2], w.shape[3]];
        let stride = pair(&attr_ints(node, "strides").unwrap_or(vec![1, 1]), "strides")?;
        let dilation = pair(&attr_ints(node, "dilations").unwrap_or(vec![1, 1]), "dilations")?;
        let pads = self.pads(node, &shape, kernel, stride, dilation)?;
        self.emit(
            node,
            out,
            vec![x],
            NodeOp::Conv {
                weight,
                bias,
                stride,
                pads,
                dilation,
                groups: attr_int(node, "group", 1).max(1) as usize,
            },
        )
    }

    /// Explicit pads [top, left, bottom, right] from `pads` or `auto_pad`.
    fn pads(
        &self,
        node: &NodeProto,
        shape: &[usize],
        kernel: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
    ) -> NodeResult<[usize; 4]> {
        let auto = attr(node, "auto_pad")
            .and_then(|a| a.s.clone())
            .unwrap_or_default();
        match auto.as_str() {
            "" | "NOTSET" => {
                let p = attr_ints(node, "pads").unwrap_or(vec![0; 4]);
                match p[..] {
                    [a, b, c, d] if p.iter().all(|&v| v >= 0) => {
                        Ok([a as usize, b as usize, c as usize, d as usize])
                    }
                    _ => Err(format!("pads {p:?}: dataleaf takes four non-negative pads")),
                }
            }
            "VALID" => Ok([0; 4]),
            "SAME_UPPER" | "SAME_LOWER" => {
                let mut pads = [0usize; 4];
                for a in 0..2 {
                    let size = *shape.get(2 + a).ok_or("needs [1, C, H, W]")?;
                    let out = size.div_ceil(stride[a]);
                    let span = dilation[a] * (kernel[a] - 1) + 1;
                    let total = ((out - 1) * stride[a] + span).saturating_sub(size);
                    let (small, big) = (total / 2, total - total / 2);
                    let (begin, end) = if auto == "SAME_UPPER" {
                        (small, big)
                    } else {
                        (big, small)
                    };
                    pads[a] = begin;
                    pads[a + 2] = end;
                }
                Ok(pads)
            }
            other => Err(format!("auto_pad = {other:?}")),
        }
    }

    fn pool(&mut self, node: &NodeProto, out: &str) -> NodeResult<()> {
        let (x, shape) = self.act(node, 0)?;
        let kernel = pair(
            &attr_ints(node, "kernel_shape").ok_or("kernel_shape is missing")?,
            "kernel_shape",
        )?;
        let stride = pair(&attr_ints(node, "strides").unwrap_or(vec![1, 1]), "strides")?;
        let dilation = pair(&attr_ints(node, "dilations").unwrap_or(vec![1, 1]), "dilations")?;
        let pads = self.pads(node, &shape, kernel, stride, dilation)?;
        let ceil_mode = attr_int(node, "ceil_mode", 0) != 0;
        let op = if node.op_type == "MaxPool" {
            if node.outputs.iter().skip(1).any(|o| !o.is_empty()) {
                return Err("its Indices output is used".into());
            }
            NodeOp::MaxPool {
                kernel,
                stride,
                pads,
                dilation,
                ceil_mode,
            }
        } else {
            if dilation != [1, 1] {
                return Err("dilated average pooling".into());
            }
            NodeOp::AvgPool {
                kernel,
                stride,
                pads,
                ceil_mode,
                count_include_pad: attr_int(node, "count_include_pad", 0) != 0,
            }
        };
        self.emit(node, out, vec![x], op)
    }
}

/// The value of a Constant node (any of its attribute forms).
fn constant_node_value(node: &NodeProto) -> NodeResult<Const> {
    for a in &node.attributes {
        match a.name.as_str() {
            "value" => return tensor_to_const(a.t.as_ref().ok_or("value is not a tensor")?),
            "value_float" => {
                return Ok(Const {
                    shape: vec![],
                    data: vec![a.f.unwrap_or(0.0) as f64],
                })
            }
            "value_int" => {
                return Ok(Const {
                    shape: vec![],
                    data: vec![a.i.unwrap_or(0) as f64],
                })
            }
            "value_floats" => return Ok(Const::scalar_list(a.floats.iter().map(|&v| v as f64).collect())),
            "value_ints" => return Ok(Const::scalar_list(a.ints.iter().map(|&v| v as f64).collect())),
            _ => {}
        }
    }
    Err("a Constant without a value dataleaf reads".into())
}

/// Lower ONNX bytes to a graph. The message of an error names the node and operator at fault;
/// the caller adds the file.
pub fn lower(bytes: &[u8], folder: Option<&Path>) -> Result<Lowered, String> {
    let model = ModelProto::parse(bytes).map_err(|e| format!("not a readable ONNX model: {}", e.0))?;
    let mut graph = model.graph.expect("parse checks the graph");
    for t in &mut graph.initializers {
        if let Some(ext) = t.external.take() {
            t.data = external_values(t, &ext, folder)?;
        }
    }
    let mut lowering = Lowering {
        values: HashMap::new(),
        nodes: Vec::new(),
        weights: Weights::new(),
        taken: Default::default(),
        shapes: HashMap::new(),
    };
    for t in &graph.initializers {
        let c = tensor_to_const(t)?;
        if matches!(
            t.data_type,
            dtype::FLOAT | dtype::DOUBLE | dtype::FLOAT16 | dtype::BFLOAT16
        ) {
            lowering.weights.insert(t.name.clone(), c.f32());
            lowering.taken.insert(t.name.clone());
        }
        lowering.values.insert(t.name.clone(), Val::Const(c));
    }
    // Older exports list the initializers among the inputs too.
    let inputs: Vec<_> = graph
        .inputs
        .iter()
        .filter(|i| !lowering.values.contains_key(&i.name))
        .collect();
    let input = match inputs[..] {
        [one] => one,
        [] => return Err("the graph has no input".into()),
        _ => {
            let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
            return Err(format!(
                "the graph has {} inputs ({}); dataleaf takes models with one image input",
                inputs.len(),
                names.join(", ")
            ));
        }
    };
    if input.elem_type != dtype::FLOAT && input.elem_type != 0 {
        return Err(format!(
            "input {:?} is {}; dataleaf feeds float32 images",
            input.name,
            dtype::name(input.elem_type)
        ));
    }
    let dims = input
        .dims
        .as_ref()
        .ok_or_else(|| format!("input {:?} has no declared shape", input.name))?;
    if dims.len() != 4 {
        return Err(format!(
            "input {:?} has {} dimensions; dataleaf takes images as [N, C, H, W]",
            input.name,
            dims.len()
        ));
    }
    let mut chw = [0usize; 3];
    for (k, d) in dims.iter().enumerate() {
        let axis_name = ["batch", "channels", "height", "width"][k];
        match (k, d) {
            (0, Dim::Value(1) | Dim::Param(_) | Dim::Unknown) => {}
            (0, Dim::Value(n)) => {
                return Err(format!(
                    "input {:?} has a fixed batch of {n}; export with a batch of 1",
                    input.name
                ))
            }
            (_, Dim::Value(n)) if *n > 0 => chw[k - 1] = *n as usize,
            (_, Dim::Param(p)) => {
                return Err(format!(
                    "input {:?} has a dynamic {axis_name} ({p:?}); dataleaf needs a fixed image size \
                     (export without dynamic_axes on that dimension)",
                    input.name
                ))
            }
            _ => return Err(format!("input {:?} has no fixed {axis_name}", input.name)),
        }
    }
    if graph::checked_len(&chw).is_none() {
        return Err(format!("input {:?} of shape {chw:?} is too large", input.name));
    }
    lowering.values.insert(
        input.name.clone(),
        Val::Act {
            id: INPUT.to_string(),
            shape: vec![1, chw[0], chw[1], chw[2]],
        },
    );
    lowering.taken.insert(INPUT.to_string());
    lowering
        .shapes
        .insert(INPUT.to_string(), vec![1, chw[0], chw[1], chw[2]]);
    let output = match &graph.outputs[..] {
        [one] => one.name.clone(),
        [] => return Err("the graph has no output".into()),
        more => {
            return Err(format!(
                "the graph has {} outputs; dataleaf takes a classifier with one (the logits)",
                more.len()
            ))
        }
    };
    for node in &graph.nodes {
        let is_output = node.outputs.first() == Some(&output);
        lowering.lower(node, is_output).map_err(|m| {
            let name = if node.name.is_empty() {
                format!(
                    "producing {:?}",
                    node.outputs.first().cloned().unwrap_or_default()
                )
            } else {
                format!("{:?}", node.name)
            };
            format!("node {name} ({}): {m}", node.op_type)
        })?;
    }
    let (out_id, out_shape) = match lowering.values.get(&output) {
        Some(Val::Act { id, shape }) => (id.clone(), shape.clone()),
        Some(Val::Const(_)) => return Err("the output does not depend on the input".into()),
        None => return Err(format!("no node produces the output {output:?}")),
    };
    let outputs = match out_shape[..] {
        [1, c] | [c] => c,
        _ => {
            return Err(format!(
                "the output has shape {out_shape:?}; dataleaf takes a classifier's logits, [1, C]"
            ))
        }
    };
    // The engine's output is its last node.
    if lowering.nodes.last().map(|n| n.id.as_str()) != Some(out_id.as_str()) {
        let id = lowering.unique("output");
        lowering.nodes.push(Node {
            id,
            inputs: vec![out_id],
            origin: String::new(),
            op: NodeOp::Identity,
        });
    }
    let name = if graph.name.is_empty() || graph.name == "main_graph" || graph.name == "torch_jit" {
        String::new()
    } else {
        graph.name.clone()
    };
    Ok(Lowered {
        input: chw,
        nodes: prune(lowering.nodes),
        weights: lowering.weights,
        outputs,
        name,
    })
}

/// Largest external data file read (the ONNX limit of a model's protobuf is 2 GB; its data may be more).
const MAX_EXTERNAL_BYTES: u64 = 8 << 30;

/// The values of a tensor stored in a file beside the model (the exporter's `X.onnx.data`).
fn external_values(t: &TensorProto, ext: &External, folder: Option<&Path>) -> Result<Vec<f64>, String> {
    let name = &t.name;
    let location = Path::new(&ext.location);
    // Only a file beside the model (or below it): never an absolute path or a way out of its folder.
    if location.is_absolute()
        || location
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!(
            "tensor {name:?} names external data {:?} outside the model's folder",
            ext.location
        ));
    }
    let Some(folder) = folder else {
        return Err(format!(
            "tensor {name:?} is stored in an external file {:?}",
            ext.location
        ));
    };
    let path = folder.join(location);
    let len = std::fs::metadata(&path)
        .map_err(|e| {
            format!(
                "tensor {name:?}: its external data file {} cannot be read: {e}",
                path.display()
            )
        })?
        .len();
    if len > MAX_EXTERNAL_BYTES {
        return Err(format!(
            "external data file {} is larger than dataleaf reads",
            path.display()
        ));
    }
    let count: usize = t.dims.iter().map(|&d| d as usize).product();
    let width = match t.data_type {
        dtype::FLOAT | dtype::INT32 => 4,
        dtype::INT64 | dtype::DOUBLE => 8,
        dtype::FLOAT16 | dtype::BFLOAT16 => 2,
        _ => 1,
    };
    let length = ext.length.unwrap_or(count * width);
    let end = ext
        .offset
        .checked_add(length)
        .filter(|&e| e as u64 <= len)
        .ok_or_else(|| {
            format!(
                "tensor {name:?} wants bytes {}..{} of {}, which has {len}",
                ext.offset,
                ext.offset.saturating_add(length),
                path.display()
            )
        })?;
    use std::io::{Read, Seek};
    let mut file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    file.seek(std::io::SeekFrom::Start(ext.offset as u64))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut raw = vec![0u8; end - ext.offset];
    file.read_exact(&mut raw)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    decode_raw(&raw, t.data_type, count).map_err(|m| format!("tensor {name:?} in {}: {m}", path.display()))
}

/// Drop nodes the output does not depend on (a Dropout's mask, a Shape's operand chain).
fn prune(nodes: Vec<Node>) -> Vec<Node> {
    let ids = graph::resolve_ids(&nodes);
    let mut needed = vec![false; nodes.len()];
    let mut wanted: std::collections::HashSet<&str> = std::collections::HashSet::new();
    if let Some((last, _)) = ids.last() {
        wanted.insert(last);
    }
    for k in (0..nodes.len()).rev() {
        if wanted.contains(ids[k].0.as_str()) {
            needed[k] = true;
            for i in &ids[k].1 {
                wanted.insert(i);
            }
        }
    }
    nodes
        .into_iter()
        .zip(needed)
        .filter(|(_, keep)| *keep)
        .map(|(mut n, _)| {
            // Inputs explicit, so dropping a node never rewires its successor.
            n.inputs = ids
                .iter()
                .find(|(id, _)| *id == n.id)
                .map(|(_, i)| i.clone())
                .unwrap_or(n.inputs);
            n
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_shape_arithmetic_folds() {
        let shape = Const::scalar_list(vec![1.0, 64.0, 4.0, 4.0]);
        let g = const_gather(
            &shape,
            &Const {
                shape: vec![],
                data: vec![0.0],
            },
            0,
        )
        .unwrap();
        assert_eq!(g.shape, Vec::<usize>::new());
        let u = unsqueezed(&g.shape, &[0]).unwrap();
        assert_eq!(u, vec![1]);
        let cat = const_concat(
            &[&Const::scalar_list(vec![1.0]), &Const::scalar_list(vec![-1.0])],
            0,
        )
        .unwrap();
        assert_eq!(cat.ints(), vec![1, -1]);
        let t = const_transpose(
            &Const {
                shape: vec![2, 3],
                data: (0..6).map(f64::from).collect(),
            },
            &[1, 0],
        );
        assert_eq!(t.data, vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    }
}
