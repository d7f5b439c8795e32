//! The model as a candle-nn network: the reference implementation of the forward pass, and the
//! route to candle's autograd (used to check the hand-written reverse passes of `Network`).

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Linear};

use super::arch::{Architecture, Layer};
use super::graph::{self, NodeOp};
use super::network::Weights;

enum CandleLayer {
    Conv(Conv2d),
    Linear(Linear),
    Relu,
    MaxPool { kernel: usize, stride: usize },
    AvgPool { kernel: usize, stride: usize },
    Flatten,
    Sigmoid,
    Tanh,
    Softplus,
    Gelu,
    LeakyRelu(f64),
}

/// A sequential classifier on candle tensors; outputs logits.
pub struct Classifier {
    layers: Vec<CandleLayer>,
    /// A graph model's nodes (then `layers` is empty).
    graph: Option<CandleGraph>,
    mean: Tensor,
    std: Tensor,
    input_len: usize,
    channels: usize,
    height: usize,
    width: usize,
}

impl Classifier {
    /// Build from a validated architecture and weights whose names and shapes `Network::new` checked.
    pub fn new(arch: &Architecture, weights: &Weights) -> candle_core::Result<Classifier> {
        let dev = Device::Cpu;
        let tensor = |key: String| -> candle_core::Result<Tensor> {
            let t = weights
                .get(&key)
                .ok_or_else(|| candle_core::Error::Msg(format!("weight tensor {key:?} is missing")))?;
            Tensor::from_slice(&t.data, t.shape.as_slice(), &dev)
        };
        let mut layers = Vec::new();
        for layer in &arch.layers {
            layers.push(match layer {
                Layer::Conv2d {
                    name,
                    stride,
                    padding,
                    ..
                } => CandleLayer::Conv(Conv2d::new(
                    tensor(format!("{name}.weight"))?,
                    Some(tensor(format!("{name}.bias"))?),
                    Conv2dConfig {
                        padding: *padding,
                        stride: *stride,
                        ..Default::default()
                    },
                )),
                Layer::Linear { name, .. } => CandleLayer::Linear(Linear::new(
                    tensor(format!("{name}.weight"))?,
                    Some(tensor(format!("{name}.bias"))?),
                )),
                Layer::Relu => CandleLayer::Relu,
                Layer::Maxpool2d { kernel, stride } => CandleLayer::MaxPool {
                    kernel: *kernel,
                    stride: stride.unwrap_or(*kernel),
                },
                Layer::Avgpool2d { kernel, stride } => CandleLayer::AvgPool {
                    kernel: *kernel,
                    stride: stride.unwrap_or(*kernel),
                },
                Layer::Flatten => CandleLayer::Flatten,
                Layer::Sigmoid => CandleLayer::Sigmoid,
                Layer::Tanh => CandleLayer::Tanh,
                Layer::Softplus => CandleLayer::Softplus,
                Layer::Gelu => CandleLayer::Gelu,
                Layer::LeakyRelu { negative_slope } => CandleLayer::LeakyRelu(*negative_slope as f64),
            });
        }
        let input = arch.image_input().map_err(candle_core::Error::Msg)?;
        let c = input.channels;
        let (mean, std) = match &arch.normalize {
            Some(n) => (n.mean.clone(), n.std.clone()),
            None => (vec![0.0; c], vec![1.0; c]),
        };
        let graph = if arch.is_graph() {
            Some(CandleGraph::new(arch, weights)?)
        } else {
            None
        };
        Ok(Classifier {
            layers,
            graph,
            mean: Tensor::from_vec(mean, (1, c, 1, 1), &dev)?,
            std: Tensor::from_vec(std, (1, c, 1, 1), &dev)?,
            input_len: input.len(),
            channels: c,
            height: input.height,
            width: input.width,
        })
    }

    /// Logits for a batch of pixel-space images, shape (batch, channels, height, width).
    pub fn forward(&self, images: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = images.broadcast_sub(&self.mean)?.broadcast_div(&self.std)?;
        if let Some(g) = &self.graph {
            return g.forward(&x);
        }
        for layer in &self.layers {
            x = match layer {
                CandleLayer::Conv(c) => c.forward(&x)?,
                CandleLayer::Linear(l) => l.forward(&x)?,
                CandleLayer::Relu => x.relu()?,
                CandleLayer::MaxPool { kernel, stride } => max_pool(&x, *kernel, *stride)?,
                CandleLayer::AvgPool { kernel, stride } => x.avg_pool2d_with_stride(*kernel, *stride)?,
                CandleLayer::Flatten => x.flatten_from(1)?,
                CandleLayer::Sigmoid => candle_nn::ops::sigmoid(&x)?,
                CandleLayer::Tanh => x.tanh()?,
                CandleLayer::Softplus => softplus(&x)?,
                CandleLayer::Gelu => x.gelu_erf()?,
                CandleLayer::LeakyRelu(slope) => candle_nn::ops::leaky_relu(&x, *slope)?,
            };
        }
        Ok(x)
    }

    /// Logits for `batch` flat images (batch x input_len), row-major batch x classes.
    pub fn logits(&self, images: &[f32], batch: usize) -> candle_core::Result<Vec<f32>> {
        if images.len() != batch * self.input_len {
            candle_core::bail!(
                "{} values do not make {batch} images of {}",
                images.len(),
                self.input_len
            );
        }
        let x = Tensor::from_slice(
            images,
            (batch, self.channels, self.height, self.width),
            &Device::Cpu,
        )?;
        self.forward(&x)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1()
    }
}

/// PyTorch's softplus: log(1 + e^x), and x where x > 20 (where the exp would lose it anyway).
fn softplus(x: &Tensor) -> candle_core::Result<Tensor> {
    let threshold = crate::model::network::SOFTPLUS_THRESHOLD;
    // exp of the clamped input, so the unused branch never overflows to inf (its gradient would be NaN).
    let smooth = (x.minimum(threshold)?.exp()? + 1.0)?.log()?;
    x.gt(threshold)?.where_cond(x, &smooth)
}

/// Max-pooling whose gradient is right: candle 0.11's max_pool2d backward scales each window's
/// gradient by (number of maxima) / k^2 instead of passing it to the maximum. When windows tile the
/// input, pool as two reductions over reshaped axes instead, whose backward is exact (without ties).
fn max_pool(x: &Tensor, kernel: usize, stride: usize) -> candle_core::Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    if kernel == stride && h % kernel == 0 && w % kernel == 0 {
        x.reshape((b, c, h / kernel, kernel, w / kernel, kernel))?
            .max(5)?
            .max(3)
    } else {
        x.max_pool2d_with_stride(kernel, stride)
    }
}

/// A graph model on candle tensors, node by node (the reference for the graph engine's reverse
/// pass, through candle's autograd). Shapes are the graph's with the batch in front.
pub struct CandleGraph {
    nodes: Vec<(NodeOp, Vec<usize>)>,
    /// Each node's output shape at batch 1.
    shapes: Vec<Vec<usize>>,
    weights: std::collections::HashMap<String, Tensor>,
}

impl CandleGraph {
    fn new(arch: &Architecture, weights: &Weights) -> candle_core::Result<CandleGraph> {
        let input = arch.image_input().map_err(candle_core::Error::Msg)?;
        let shapes = graph::shapes([input.channels, input.height, input.width], &arch.nodes, weights)
            .map_err(candle_core::Error::Msg)?;
        let ids = graph::resolve_ids(&arch.nodes);
        let mut index = std::collections::HashMap::new();
        index.insert(graph::INPUT.to_string(), 0usize);
        for (k, (id, _)) in ids.iter().enumerate() {
            index.insert(id.clone(), k + 1);
        }
        let nodes = arch
            .nodes
            .iter()
            .zip(&ids)
            .map(|(n, (_, inputs))| (n.op.clone(), inputs.iter().map(|i| index[i]).collect()))
            .collect();
        let mut tensors = std::collections::HashMap::new();
        for (k, t) in weights {
            tensors.insert(
                k.clone(),
                Tensor::from_slice(&t.data, t.shape.as_slice(), &Device::Cpu)?,
            );
        }
        Ok(CandleGraph {
            nodes,
            shapes,
            weights: tensors,
        })
    }

    fn weight(&self, key: &str) -> candle_core::Result<&Tensor> {
        self.weights
            .get(key)
            .ok_or_else(|| candle_core::Error::Msg(format!("weight tensor {key:?} is missing")))
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let batch = x.dim(0)?;
        let mut values: Vec<Tensor> = vec![x.clone()];
        for (k, (op, inputs)) in self.nodes.iter().enumerate() {
            let a = inputs.first().map(|&i| values[i].clone());
            let a = || {
                a.clone()
                    .ok_or_else(|| candle_core::Error::Msg("missing input".into()))
            };
            let b = || values[inputs[1]].clone();
            // The node's output shape with this batch in front.
            let shape_now = || {
                let mut s = self.shapes[k + 1].clone();
                if let Some(first) = s.first_mut() {
                    *first = batch;
                }
                s
            };
            let y = match op {
                NodeOp::Conv {
                    weight,
                    bias,
                    stride,
                    pads,
                    dilation,
                    groups,
                } => {
                    let mut x = a()?;
                    let symmetric = pads[0] == pads[2] && pads[1] == pads[3] && pads[0] == pads[1];
                    if !symmetric {
                        x = x
                            .pad_with_zeros(2, pads[0], pads[2])?
                            .pad_with_zeros(3, pads[1], pads[3])?;
                    }
                    // Unequal dilations: the kernel itself spread out with zeros, then dilation 1.
                    let (w, d) = if dilation[0] == dilation[1] {
                        (self.weight(weight)?.clone(), dilation[0])
                    } else {
                        (dilate_kernel(self.weight(weight)?, *dilation)?, 1)
                    };
                    let pad = if symmetric { pads[0] } else { 0 };
                    let s = if stride[0] == stride[1] { stride[0] } else { 1 };
                    let mut y = x.conv2d(&w, pad, s, d, *groups)?;
                    if stride[0] != stride[1] {
                        y = subsample(&y, 2, stride[0])?;
                        y = subsample(&y, 3, stride[1])?;
                    }
                    match bias {
                        Some(bk) => {
                            let b = self.weight(bk)?;
                            y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?)?
                        }
                        None => y,
                    }
                }
                NodeOp::Linear { weight, bias } => {
                    let w = self.weight(weight)?;
                    let y = a()?.matmul(&w.t()?)?;
                    match bias {
                        Some(bk) => y.broadcast_add(&self.weight(bk)?.flatten_all()?)?,
                        None => y,
                    }
                }
                NodeOp::BatchNorm {
                    scale,
                    bias,
                    mean,
                    var,
                    epsilon,
                } => {
                    let x = a()?;
                    let mut bshape = vec![1usize; x.rank()];
                    bshape[1] = x.dim(1)?;
                    let r = |t: &Tensor| t.reshape(bshape.as_slice());
                    let s = (r(self.weight(scale)?)? / (r(self.weight(var)?)? + *epsilon as f64)?.sqrt()?)?;
                    x.broadcast_sub(&r(self.weight(mean)?)?)?
                        .broadcast_mul(&s)?
                        .broadcast_add(&r(self.weight(bias)?)?)?
                }
                NodeOp::Relu => a()?.relu()?,
                NodeOp::LeakyRelu { alpha } => candle_nn::ops::leaky_relu(&a()?, *alpha as f64)?,
                NodeOp::Clip { min, max } => {
                    let mut x = a()?;
                    if let Some(lo) = min {
                        x = x.maximum(*lo as f64)?;
                    }
                    if let Some(hi) = max {
                        x = x.minimum(*hi as f64)?;
                    }
                    x
                }
                NodeOp::Sigmoid => candle_nn::ops::sigmoid(&a()?)?,
                NodeOp::Tanh => a()?.tanh()?,
                NodeOp::Gelu => a()?.gelu_erf()?,
                NodeOp::Softplus => softplus(&a()?)?,
                NodeOp::Erf => a()?.erf()?,
                NodeOp::HardSwish => {
                    let x = a()?;
                    (&x * ((&x + 3.0)?.maximum(0.0)?.minimum(6.0)? / 6.0)?)?
                }
                NodeOp::HardSigmoid { alpha, beta } => a()?
                    .affine(*alpha as f64, *beta as f64)?
                    .maximum(0.0)?
                    .minimum(1.0)?,
                NodeOp::Add => a()?.broadcast_add(&b())?,
                NodeOp::Sub => a()?.broadcast_sub(&b())?,
                NodeOp::Mul => a()?.broadcast_mul(&b())?,
                NodeOp::Div => a()?.broadcast_div(&b())?,
                NodeOp::Constant { tensor } => self.weight(tensor)?.clone(),
                NodeOp::Concat { axis } => {
                    let parts: Vec<Tensor> = inputs.iter().map(|&i| values[i].clone()).collect();
                    let ax = graph::axis(*axis, parts[0].rank()).map_err(candle_core::Error::Msg)?;
                    Tensor::cat(&parts, ax)?
                }
                NodeOp::MaxPool {
                    kernel,
                    stride,
                    pads,
                    dilation,
                    ..
                } => {
                    let x = a()?;
                    let (b_, c, h, w) = x.dims4()?;
                    let out = &self.shapes[k + 1];
                    let (hp, wp) = (h + pads[0] + pads[2], w + pads[1] + pads[3]);
                    // -inf padding never wins a window.
                    let mut xp = Tensor::full(f32::NEG_INFINITY, (b_, c, hp, wp), &Device::Cpu)?;
                    xp = xp.slice_assign(&[0..b_, 0..c, pads[0]..pads[0] + h, pads[1]..pads[1] + w], &x)?;
                    let views = window_views(&xp, *kernel, *stride, *dilation, out[2], out[3])?;
                    Tensor::stack(&views, 0)?.max(0)?
                }
                NodeOp::AvgPool {
                    kernel,
                    stride,
                    pads,
                    count_include_pad,
                    ..
                } => {
                    let x = a()?;
                    let (_, _, h, w) = x.dims4()?;
                    let out = &self.shapes[k + 1];
                    let xp = x
                        .pad_with_zeros(2, pads[0], pads[2])?
                        .pad_with_zeros(3, pads[1], pads[3])?;
                    let views = window_views(&xp, *kernel, *stride, [1, 1], out[2], out[3])?;
                    let sum = Tensor::stack(&views, 0)?.sum(0)?;
                    // PyTorch's divisor per output position.
                    let mut div = Vec::with_capacity(out[2] * out[3]);
                    for oh in 0..out[2] {
                        for ow in 0..out[3] {
                            let h0 = (oh * stride[0]) as isize - pads[0] as isize;
                            let w0 = (ow * stride[1]) as isize - pads[1] as isize;
                            let h1 = (h0 + kernel[0] as isize).min((h + pads[2]) as isize);
                            let w1 = (w0 + kernel[1] as isize).min((w + pads[3]) as isize);
                            let d = if *count_include_pad {
                                (h1 - h0) * (w1 - w0)
                            } else {
                                (h1.min(h as isize) - h0.max(0)) * (w1.min(w as isize) - w0.max(0))
                            };
                            div.push(d.max(1) as f32);
                        }
                    }
                    let div = Tensor::from_vec(div, (1, 1, out[2], out[3]), &Device::Cpu)?;
                    sum.broadcast_div(&div)?
                }
                NodeOp::GlobalAvgPool => a()?.mean_keepdim((2, 3))?,
                NodeOp::ReduceMean { axes, keepdims } => {
                    let x = a()?;
                    let mut axes: Vec<usize> = axes
                        .iter()
                        .map(|&v| graph::axis(v, x.rank()))
                        .collect::<Result<_, _>>()
                        .map_err(candle_core::Error::Msg)?;
                    axes.sort_unstable();
                    let mut y = x;
                    for &ax in axes.iter().rev() {
                        y = if *keepdims {
                            y.mean_keepdim(ax)?
                        } else {
                            y.mean(ax)?
                        };
                    }
                    y
                }
                NodeOp::Flatten { .. } | NodeOp::Reshape { .. } => a()?.reshape(shape_now())?,
                NodeOp::Identity => a()?,
                NodeOp::Transpose { perm } => a()?.permute(perm.clone())?.contiguous()?,
                NodeOp::Slice {
                    starts,
                    ends,
                    axes,
                    steps,
                } => {
                    let x = a()?;
                    let ranges = graph::slice_ranges(&self.shapes[inputs[0]], starts, ends, axes, steps)
                        .map_err(candle_core::Error::Msg)?;
                    let mut y = x;
                    for (ax, &(start, step, count)) in ranges.iter().enumerate() {
                        if ax == 0 || (start == 0 && step == 1 && count == y.dim(ax)?) {
                            continue;
                        }
                        let idx: Vec<u32> = (0..count).map(|i| (start + i as i64 * step) as u32).collect();
                        let idx = Tensor::from_vec(idx, count, &Device::Cpu)?;
                        y = y.index_select(&idx, ax)?;
                    }
                    y
                }
            };
            values.push(y);
        }
        let out = values.pop().expect("a graph has nodes");
        out.reshape((batch, ()))
    }
}

/// A [cout, cin, kh, kw] kernel with dilation written out: zeros between its taps.
fn dilate_kernel(w: &Tensor, dilation: [usize; 2]) -> candle_core::Result<Tensor> {
    let (co, ci, kh, kw) = w.dims4()?;
    let (dh, dw) = ((kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1);
    let src: Vec<f32> = w.flatten_all()?.to_vec1()?;
    let mut out = vec![0.0f32; co * ci * dh * dw];
    for p in 0..co * ci {
        for i in 0..kh {
            for j in 0..kw {
                out[(p * dh + i * dilation[0]) * dw + j * dilation[1]] = src[(p * kh + i) * kw + j];
            }
        }
    }
    Tensor::from_vec(out, (co, ci, dh, dw), &Device::Cpu)
}

/// Every `step`-th entry of axis `dim`.
fn subsample(x: &Tensor, dim: usize, step: usize) -> candle_core::Result<Tensor> {
    if step == 1 {
        return Ok(x.clone());
    }
    let n = x.dim(dim)?.div_ceil(step);
    let idx: Vec<u32> = (0..n).map(|i| (i * step) as u32).collect();
    x.index_select(&Tensor::from_vec(idx, n, &Device::Cpu)?, dim)
}

/// The kh x kw shifted, strided views of a padded input whose elementwise max (or sum) is a pool.
fn window_views(
    xp: &Tensor,
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    hout: usize,
    wout: usize,
) -> candle_core::Result<Vec<Tensor>> {
    let mut views = Vec::with_capacity(kernel[0] * kernel[1]);
    for ki in 0..kernel[0] {
        let rows: Vec<u32> = (0..hout)
            .map(|o| (o * stride[0] + ki * dilation[0]) as u32)
            .collect();
        let r = xp.index_select(&Tensor::from_vec(rows, hout, &Device::Cpu)?, 2)?;
        for kj in 0..kernel[1] {
            let cols: Vec<u32> = (0..wout)
                .map(|o| (o * stride[1] + kj * dilation[1]) as u32)
                .collect();
            views.push(r.index_select(&Tensor::from_vec(cols, wout, &Device::Cpu)?, 3)?);
        }
    }
    Ok(views)
}
