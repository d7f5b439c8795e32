//! The network as plain f32 buffers with hand-written forward and reverse passes.
//!
//! A ReLU network is piecewise linear: at x, the Jacobian of the logits is the product of the
//! layers' linear maps with the activation and pooling masks of x, J = W_L M_L ... M_1 W_1 / std.
//! One forward pass that records those masks, then one reverse pass over many cotangents at once
//! (the C rows of the identity for J, or the loss gradients of a batch for training), gives exact
//! gradients with a handful of large matrix products. The same passes train the shipped models.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use std::sync::Arc;

use super::arch::{Architecture, InputShape, Layer, Shape};
use super::conv_forward::ConvForwardWeights;
use super::gather;
use super::graph_net::{GraphNet, GraphTrace};
use super::matmul::{matmul, SharedColumns, Threads, View};
use super::packed::PackedLinear;
use super::scratch;
use super::sparse;
use super::team;

/// A named weight tensor in PyTorch layout, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor32 {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// All weights of a model by their PyTorch names (`<layer>.weight`, `<layer>.bias`).
pub type Weights = BTreeMap<String, Tensor32>;

#[derive(Debug, Clone)]
struct Conv {
    name: String,
    weight: Vec<f32>, // cout x (cin k k)
    bias: Vec<f32>,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    hin: usize,
    win: usize,
    hout: usize,
    wout: usize,
    /// W rearranged for the shared-mask reverse pass, when the CPU has its kernels.
    gathered: Option<gather::GatherWeights>,
    /// W packed for the forward product at one image, when the CPU has its kernel.
    forward: Option<ConvForwardWeights>,
}

#[derive(Debug, Clone)]
struct Linear {
    name: String,
    weight: Vec<f32>, // nout x nin
    bias: Vec<f32>,
    nin: usize,
    nout: usize,
    /// W packed for the reverse pass of a few rows, when the CPU has the kernel and W is small
    /// enough to keep twice.
    packed: Option<PackedLinear>,
}

/// Linear layers up to this many weights keep a packed copy for the reverse pass (64 MB).
const PACK_MAX_WEIGHTS: usize = 1 << 24;

impl Linear {
    fn pack(&mut self) {
        self.packed = (PackedLinear::available() && self.weight.len() <= PACK_MAX_WEIGHTS)
            .then(|| PackedLinear::new(&self.weight, self.nout, self.nin));
    }
}

#[derive(Debug, Clone, Copy)]
struct Pool {
    c: usize,
    k: usize,
    stride: usize,
    hin: usize,
    win: usize,
    hout: usize,
    wout: usize,
}

#[derive(Debug, Clone)]
enum Op {
    Conv(Conv),
    Linear(Linear),
    Relu,
    MaxPool(Pool),
    AvgPool(Pool),
    Flatten,
    Activation(Activation),
}

/// An elementwise activation other than ReLU (whose path above stays as it is). The reverse pass
/// multiplies by the derivative at the op's stored input; the values are computed in f64.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    Sigmoid,
    Tanh,
    /// log(1 + e^x), linear above PyTorch's threshold 20.
    Softplus,
    /// Exact GELU, x Phi(x), with candle's erf so both implementations agree.
    Gelu,
    LeakyRelu(f64),
}

impl Activation {
    /// The activation a layer applies, for the layer types after ReLU.
    pub fn of(layer: &Layer) -> Option<Activation> {
        match layer {
            Layer::Sigmoid => Some(Activation::Sigmoid),
            Layer::Tanh => Some(Activation::Tanh),
            Layer::Softplus => Some(Activation::Softplus),
            Layer::Gelu => Some(Activation::Gelu),
            Layer::LeakyRelu { negative_slope } => Some(Activation::LeakyRelu(*negative_slope as f64)),
            _ => None,
        }
    }

    pub fn value(self, x: f64) -> f64 {
        match self {
            Activation::Sigmoid => sigmoid(x),
            Activation::Tanh => x.tanh(),
            Activation::Softplus if x > SOFTPLUS_THRESHOLD => x,
            Activation::Softplus => x.exp().ln_1p(),
            Activation::Gelu => x * normal_cdf(x),
            Activation::LeakyRelu(slope) => {
                if x > 0.0 || x.is_nan() {
                    x
                } else {
                    slope * x
                }
            }
        }
    }

    /// d value / dx; leaky ReLU takes the slope at 0, as PyTorch does.
    pub fn derivative(self, x: f64) -> f64 {
        match self {
            Activation::Sigmoid => {
                let s = sigmoid(x);
                s * (1.0 - s)
            }
            Activation::Tanh => 1.0 - x.tanh().powi(2),
            Activation::Softplus if x > SOFTPLUS_THRESHOLD => 1.0,
            Activation::Softplus => sigmoid(x),
            // Phi(x) + x phi(x)
            Activation::Gelu => {
                normal_cdf(x) + x * (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
            }
            Activation::LeakyRelu(slope) => {
                if x > 0.0 {
                    1.0
                } else {
                    slope
                }
            }
        }
    }
}

/// Above this softplus is x itself (PyTorch's `threshold=20`: log(1 + e^20) - 20 ~ 2e-9).
pub const SOFTPLUS_THRESHOLD: f64 = 20.0;

pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Phi(x) = (1 + erf(x / sqrt 2)) / 2.
fn normal_cdf(x: f64) -> f64 {
    0.5 * (1.0 + candle_core::cpu::erf::erf_f64(x * std::f64::consts::FRAC_1_SQRT_2))
}

/// The model as a sequence of ops on flat f32 buffers.
#[derive(Debug, Clone)]
pub struct Network {
    input: InputShape,
    mean: Vec<f32>,
    std: Vec<f32>,
    ops: Vec<Op>,
    lens: Vec<usize>, // activation length before each op, and after the last
    /// A graph model's engine (then `ops` is empty and `lens` is [input, outputs]).
    graph: Option<Arc<GraphNet>>,
}

/// What the forward pass of a batch records for the reverse pass.
pub struct Trace {
    pub batch: usize,
    /// acts[i] is the (normalised) input of op i for the whole batch; the last one holds the logits.
    acts: Vec<Vec<f32>>,
    /// For each max-pool op, the index in its input of the maximum behind each output.
    argmax: Vec<Vec<u32>>,
    /// A graph model's record of each image.
    graph: Vec<GraphTrace>,
}

impl Drop for Trace {
    /// The activations go back to the scratch pool for the next image's pass.
    fn drop(&mut self) {
        self.acts.drain(..).for_each(scratch::give);
    }
}

impl Trace {
    /// The logits, batch x classes, row-major.
    pub fn logits(&self) -> &[f32] {
        self.acts.last().expect("a trace has at least the input")
    }
}

/// Multiply-adds of one Jacobian: the forward pass, and each cotangent row's reverse pass.
#[derive(Debug, Clone, Copy)]
pub struct JacobianMacs {
    pub forward: f64,
    pub per_row: f64,
}

/// Gradients of the loss for every weight tensor, in `Network::weights` order.
pub type Gradients = Vec<Vec<f32>>;

fn pool_of(c: usize, h: usize, w: usize, kernel: usize, stride: Option<usize>) -> Pool {
    let stride = stride.unwrap_or(kernel);
    Pool {
        c,
        k: kernel,
        stride,
        hin: h,
        win: w,
        hout: (h - kernel) / stride + 1,
        wout: (w - kernel) / stride + 1,
    }
}

fn take_tensor(weights: &Weights, key: &str, shape: &[usize]) -> Result<Vec<f32>, String> {
    let t = weights
        .get(key)
        .ok_or_else(|| format!("weight tensor {key:?} is missing"))?;
    if t.shape != shape {
        return Err(format!(
            "weight tensor {key:?} has shape {:?}, the architecture needs {:?}",
            t.shape, shape
        ));
    }
    if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
        return Err(format!(
            "weight tensor {key:?} holds a non-finite value ({}) at flat index {i}",
            t.data[i]
        ));
    }
    Ok(t.data.clone())
}

impl Network {
    /// Build from an architecture (already validated) and its weights.
    pub fn new(arch: &Architecture, weights: &Weights) -> Result<Network, String> {
        if arch.is_graph() {
            return Network::new_graph(arch, weights);
        }
        let shapes = arch.shapes()?;
        let mut ops = Vec::with_capacity(arch.layers.len());
        for (layer, &shape) in arch.layers.iter().zip(&shapes) {
            let params = |name: &str| -> Result<(Vec<f32>, Vec<f32>), String> {
                let (ws, bs) = layer.param_shapes().expect("layer with weights");
                Ok((
                    take_tensor(weights, &format!("{name}.weight"), &ws)?,
                    take_tensor(weights, &format!("{name}.bias"), &bs)?,
                ))
            };
            let op = match (layer, shape) {
                (
                    Layer::Conv2d {
                        name,
                        in_channels,
                        out_channels,
                        kernel,
                        stride,
                        padding,
                    },
                    Shape::Image(_, h, w),
                ) => {
                    let (weight, bias) = params(name)?;
                    let mut conv = Conv {
                        name: name.clone(),
                        weight,
                        bias,
                        cin: *in_channels,
                        cout: *out_channels,
                        k: *kernel,
                        stride: *stride,
                        pad: *padding,
                        hin: h,
                        win: w,
                        hout: (h + 2 * padding - kernel) / stride + 1,
                        wout: (w + 2 * padding - kernel) / stride + 1,
                        gathered: None,
                        forward: None,
                    };
                    conv.pack();
                    Op::Conv(conv)
                }
                (
                    Layer::Linear {
                        name,
                        in_features,
                        out_features,
                    },
                    _,
                ) => {
                    let (weight, bias) = params(name)?;
                    let mut linear = Linear {
                        name: name.clone(),
                        weight,
                        bias,
                        nin: *in_features,
                        nout: *out_features,
                        packed: None,
                    };
                    linear.pack();
                    Op::Linear(linear)
                }
                (Layer::Relu, _) => Op::Relu,
                (Layer::Maxpool2d { kernel, stride }, Shape::Image(c, h, w)) => {
                    Op::MaxPool(pool_of(c, h, w, *kernel, *stride))
                }
                (Layer::Avgpool2d { kernel, stride }, Shape::Image(c, h, w)) => {
                    Op::AvgPool(pool_of(c, h, w, *kernel, *stride))
                }
                (Layer::Flatten, _) => Op::Flatten,
                (
                    Layer::Sigmoid | Layer::Tanh | Layer::Softplus | Layer::Gelu | Layer::LeakyRelu { .. },
                    _,
                ) => Op::Activation(Activation::of(layer).expect("an activation layer")),
                (layer, shape) => return Err(format!("{} cannot take input {shape}", layer.kind())),
            };
            ops.push(op);
        }
        let input = arch.image_input()?;
        let c = input.channels;
        let (mean, std) = match &arch.normalize {
            Some(n) => (n.mean.clone(), n.std.clone()),
            None => (vec![0.0; c], vec![1.0; c]),
        };
        Ok(Network {
            input,
            mean,
            std,
            ops,
            lens: shapes.iter().map(Shape::len).collect(),
            graph: None,
        })
    }

    fn new_graph(arch: &Architecture, weights: &Weights) -> Result<Network, String> {
        let input = arch.image_input()?;
        let shapes = super::graph::shapes([input.channels, input.height, input.width], &arch.nodes, weights)?;
        let out = shapes.last().expect("a graph has nodes");
        let c = arch.num_classes();
        if !(out == &[1, c] || out == &[c]) {
            return Err(format!(
                "the graph outputs shape {out:?}, but there are {c} classes (needs [1, {c}])"
            ));
        }
        let engine = GraphNet::new(&arch.nodes, &shapes, weights)?;
        let (mean, std) = match &arch.normalize {
            Some(n) => (n.mean.clone(), n.std.clone()),
            None => (vec![0.0; input.channels], vec![1.0; input.channels]),
        };
        Ok(Network {
            input,
            mean,
            std,
            ops: Vec::new(),
            lens: vec![input.len(), c],
            graph: Some(Arc::new(engine)),
        })
    }

    /// Whether this is a graph model (one image at a time, no training).
    pub fn is_graph(&self) -> bool {
        self.graph.is_some()
    }

    /// Whether a graph model has smooth operators (or products of two varying values).
    pub fn graph_is_smooth(&self) -> bool {
        self.graph.as_ref().is_some_and(|g| g.is_smooth())
    }

    /// Fresh weights with PyTorch's default initialisation (uniform in +-1/sqrt(fan_in) for
    /// weights and biases), from a seed.
    pub fn initial_weights(arch: &Architecture, seed: u64) -> Weights {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut weights = Weights::new();
        for layer in &arch.layers {
            if let (Some(name), Some((ws, bs))) = (layer.param_name(), layer.param_shapes()) {
                let fan_in: usize = ws[1..].iter().product();
                let bound = 1.0 / (fan_in as f32).sqrt();
                let mut draw = |shape: Vec<usize>| {
                    let n = shape.iter().product();
                    let data = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
                    Tensor32 { shape, data }
                };
                weights.insert(format!("{name}.weight"), draw(ws));
                weights.insert(format!("{name}.bias"), draw(bs));
            }
        }
        weights
    }

    /// The current weights by PyTorch name.
    pub fn weights(&self) -> Weights {
        let mut out = Weights::new();
        for op in &self.ops {
            let (name, w, wshape, b) = match op {
                Op::Conv(c) => (&c.name, &c.weight, vec![c.cout, c.cin, c.k, c.k], &c.bias),
                Op::Linear(l) => (&l.name, &l.weight, vec![l.nout, l.nin], &l.bias),
                _ => continue,
            };
            out.insert(
                format!("{name}.weight"),
                Tensor32 {
                    shape: wshape,
                    data: w.clone(),
                },
            );
            out.insert(
                format!("{name}.bias"),
                Tensor32 {
                    shape: vec![b.len()],
                    data: b.clone(),
                },
            );
        }
        out
    }

    pub fn input_shape(&self) -> InputShape {
        self.input
    }

    /// Values per input image.
    pub fn input_len(&self) -> usize {
        self.lens[0]
    }

    pub fn num_classes(&self) -> usize {
        *self.lens.last().expect("at least one length")
    }

    /// Forward pass of `batch` images in pixel space [0, 1] (batch x input_len, NCHW), recording
    /// what the reverse pass needs.
    pub fn forward(&self, images: &[f32], batch: usize) -> Trace {
        let n = self.input_len();
        assert_eq!(images.len(), batch * n, "images buffer does not match batch size");
        let plane = self.input.height * self.input.width;
        // (x - mean) / std per channel, as the model file says.
        let mut x: Vec<f32> = Vec::with_capacity(images.len());
        for image in images.chunks(n) {
            for (c, pixels) in image.chunks(plane).enumerate() {
                let (mean, std) = (self.mean[c], self.std[c]);
                x.extend(pixels.iter().map(|&v| (v - mean) / std));
            }
        }
        if let Some(g) = &self.graph {
            // One image on the calling thread (its kernels split over the team); more over rayon.
            let traces: Vec<GraphTrace> = if batch == 1 {
                vec![g.forward(&x)]
            } else {
                x.par_chunks(n).map(|xi| g.forward(xi)).collect()
            };
            let logits = traces.iter().flat_map(|t| t.logits(g).to_vec()).collect();
            return Trace {
                batch,
                acts: vec![logits],
                argmax: Vec::new(),
                graph: traces,
            };
        }
        let mut acts = Vec::with_capacity(self.ops.len() + 1);
        let mut argmax = Vec::new();
        for (i, op) in self.ops.iter().enumerate() {
            let out_len = self.lens[i + 1];
            // Every op below writes all of y.
            let mut y = scratch::take(batch * out_len);
            match op {
                Op::Conv(c) => conv_forward(c, &x, &mut y, batch),
                Op::Linear(l) => match (&l.packed, batch) {
                    // One image (a step of a walk): the packed copy, the one the reverse pass reads.
                    (Some(packed), 1) => packed.forward_one(&x, &l.bias, &mut y),
                    _ => {
                        matmul(
                            &mut y,
                            View::rows(&x, batch, l.nin),
                            View::transposed(&l.weight, l.nout, l.nin),
                            false,
                            Threads::All,
                        );
                        for row in y.chunks_mut(l.nout) {
                            row.iter_mut().zip(&l.bias).for_each(|(v, b)| *v += b);
                        }
                    }
                },
                // NaN propagates, as in PyTorch (f32::max would turn it into 0): NaN <= 0 is false.
                Op::Relu => {
                    let per = y
                        .len()
                        .div_ceil(if y.len() >= 1 << 14 { team::threads() } else { 1 });
                    team::for_each_chunk_mut(&mut y, per, |k, out| {
                        out.iter_mut()
                            .zip(&x[k * per..])
                            .for_each(|(o, &v)| *o = if v <= 0.0 { 0.0 } else { v })
                    });
                }
                Op::MaxPool(p) => argmax.push(maxpool_forward(p, &x, &mut y, batch)),
                Op::AvgPool(p) => avgpool_forward(p, &x, &mut y, batch),
                Op::Flatten => y.copy_from_slice(&x),
                Op::Activation(a) => y
                    .iter_mut()
                    .zip(&x)
                    .for_each(|(o, &v)| *o = a.value(v as f64) as f32),
            }
            acts.push(std::mem::replace(&mut x, y));
        }
        acts.push(x);
        Trace {
            batch,
            acts,
            argmax,
            graph: Vec::new(),
        }
    }

    /// Logits of a batch, batch x classes.
    pub fn logits(&self, images: &[f32], batch: usize) -> Vec<f32> {
        if self.graph.is_some() {
            // Image by image, so no more than one trace per thread is alive.
            let n = self.input_len();
            if batch == 1 {
                return self.forward(images, 1).acts.pop().expect("logits");
            }
            return images
                .par_chunks(n)
                .flat_map_iter(|xi| self.forward(xi, 1).acts.pop().expect("logits"))
                .collect();
        }
        let mut trace = self.forward(images, batch);
        trace.acts.pop().expect("logits")
    }

    /// Predicted class of each image in a flat buffer of whole images, in parallel chunks.
    pub fn predict(&self, images: &[f32]) -> Vec<usize> {
        let n = self.input_len();
        let c = self.num_classes();
        images
            .par_chunks(n * 250)
            .flat_map_iter(|chunk| {
                let logits = self.logits(chunk, chunk.len() / n);
                logits.chunks(c).map(super::argmax).collect::<Vec<_>>()
            })
            .collect()
    }

    /// Reverse pass: `cotangents` are `rows` vectors over the logits (rows x classes). When the trace
    /// holds one image, every row is pulled back through that image's masks (rows = C gives J);
    /// otherwise row r belongs to image r. Returns the gradients with respect to the pixel input
    /// (rows x input_len) when `want_input` is set, and accumulates weight gradients into `grads`.
    pub fn backward(
        &self,
        trace: &Trace,
        cotangents: &[f32],
        rows: usize,
        want_input: bool,
        mut grads: Option<&mut Gradients>,
    ) -> Option<Vec<f32>> {
        assert_eq!(cotangents.len(), rows * self.num_classes());
        assert!(
            trace.batch == 1 || trace.batch == rows,
            "one cotangent row per image"
        );
        assert!(
            grads.is_none() || trace.batch == rows,
            "weight gradients need one image per row"
        );
        if let Some(net) = &self.graph {
            assert!(grads.is_none(), "graph models are not trained here");
            if !want_input {
                return None;
            }
            let c = self.num_classes();
            let mut g = if trace.batch == 1 {
                net.backward(&trace.graph[0], cotangents, rows)
            } else {
                (0..rows)
                    .into_par_iter()
                    .flat_map_iter(|r| net.backward(&trace.graph[r], &cotangents[r * c..(r + 1) * c], 1))
                    .collect()
            };
            self.unnormalise_gradient(&mut g);
            return Some(g);
        }
        let mut g = cotangents.to_vec();
        let mut pool_index = trace.argmax.len();
        let mut grad_index = grads.as_ref().map_or(0, |g| g.len());
        // Ops a max-pool's reverse pass has already done: the ReLU before it, and the convolution
        // before that when the three go back fused.
        let mut fused = 0;
        for (i, op) in self.ops.iter().enumerate().rev() {
            if fused > 0 {
                fused -= 1;
                continue;
            }
            let x = &trace.acts[i];
            let in_len = self.lens[i];
            let need_dx = i > 0 || want_input;
            match op {
                Op::Conv(c) => {
                    if let Some(grads) = grads.as_deref_mut() {
                        grad_index -= 2;
                        let (gw, rest) = grads[grad_index..].split_at_mut(1);
                        conv_weight_grad(c, x, &g, rows, &mut gw[0], &mut rest[0]);
                    }
                    if need_dx {
                        // Behind a max-pool most of g is zero; channels-last scattering then wins
                        // once there are enough input channels to fill a vector.
                        let first_row = &g[..c.cout * c.hout * c.wout];
                        g = if c.cin >= 8 && sparse::density(first_row) < sparse::MAX_DENSITY {
                            if trace.batch == 1 {
                                sparse::conv_input_grad_shared(
                                    &c.shape(),
                                    &c.weight,
                                    c.gathered.as_ref(),
                                    &g,
                                    rows,
                                )
                            } else {
                                sparse::conv_input_grad(&c.shape(), &c.weight, &g, rows)
                            }
                        } else {
                            conv_input_grad(c, &g, rows)
                        };
                    }
                }
                Op::Linear(l) => {
                    if let Some(grads) = grads.as_deref_mut() {
                        grad_index -= 2;
                        // dW += g^T X, db += column sums of g
                        matmul(
                            &mut grads[grad_index],
                            View::transposed(&g, rows, l.nout),
                            View::rows(x, rows, l.nin),
                            true,
                            Threads::All,
                        );
                        for row in g.chunks(l.nout) {
                            grads[grad_index + 1]
                                .iter_mut()
                                .zip(row)
                                .for_each(|(d, v)| *d += v);
                        }
                    }
                    if let (true, Some(packed)) = (need_dx && rows <= SPARSE_LINEAR_ROWS, &l.packed) {
                        let dx = packed.input_grad(&g, rows);
                        scratch::give(std::mem::replace(&mut g, dx));
                    } else if need_dx && rows <= SPARSE_LINEAR_ROWS {
                        g = sparse::linear_input_grad(&l.weight, l.nout, l.nin, &g, rows);
                    } else if need_dx {
                        let mut dx = vec![0.0; rows * l.nin];
                        matmul(
                            &mut dx,
                            View::rows(&g, rows, l.nout),
                            View::rows(&l.weight, l.nout, l.nin),
                            false,
                            Threads::All,
                        );
                        g = dx;
                    }
                }
                Op::Relu => {
                    // PyTorch's convention: the derivative of ReLU at 0 is 0.
                    for (r, row) in g.chunks_mut(in_len).enumerate() {
                        let xs = sample(x, trace.batch, r, in_len);
                        row.iter_mut()
                            .zip(xs)
                            .for_each(|(d, &v)| *d = if v <= 0.0 { 0.0 } else { *d });
                    }
                }
                Op::MaxPool(_) => {
                    pool_index -= 1;
                    let idx = &trace.argmax[pool_index];
                    let out_len = self.lens[i + 1];
                    // J's rows share one image's masks: conv -> ReLU -> pool goes back in one pass
                    // from the pooled gradient, without the dense scatter in between.
                    if let (true, Some(Op::Conv(c)), Some(Op::Relu)) = (
                        trace.batch == 1 && grads.is_none() && i >= 2 && (i > 2 || want_input),
                        i.checked_sub(2).map(|k| &self.ops[k]),
                        i.checked_sub(1).map(|k| &self.ops[k]),
                    ) {
                        if c.cin >= 8 {
                            // A ReLU before the convolution too: its mask goes into the same pass.
                            let input_relu =
                                (i >= 3 && matches!(self.ops[i - 3], Op::Relu) && (i > 3 || want_input))
                                    .then(|| trace.acts[i - 2].as_slice());
                            // And the convolution before that ReLU reads the result channels last.
                            let before = match (input_relu, i.checked_sub(4).map(|k| &self.ops[k])) {
                                (Some(_), Some(Op::Conv(c1))) if i > 4 || want_input => Some(c1),
                                _ => None,
                            };
                            let weight = c.gathered.as_ref().map_or(
                                gather::ConvWeights::Plain(&c.weight),
                                gather::ConvWeights::Gathered,
                            );
                            if let Some(out) = sparse::conv_relu_pool_input_grad(
                                &c.shape(),
                                weight,
                                idx,
                                &trace.acts[i + 1],
                                &g,
                                rows,
                                input_relu,
                            ) {
                                match (before, out) {
                                    (Some(c1), sparse::Layout::ChannelsLast(hwc)) => {
                                        scratch::give(std::mem::replace(
                                            &mut g,
                                            gather::input_grad_of_hwc(&c1.shape(), &c1.weight, &hwc)
                                                .unwrap_or_else(|| conv_input_grad_hwc(c1, &hwc)),
                                        ));
                                        scratch::give(hwc.data);
                                        fused = 4;
                                    }
                                    (_, out) => {
                                        g = out.channels_first();
                                        fused = 2 + usize::from(input_relu.is_some());
                                    }
                                }
                                continue;
                            }
                        }
                    }
                    // A ReLU just before the pool: its output x is 0 exactly where its derivative
                    // is, so masking at the maxima here replaces a pass over the whole input.
                    let fold_relu = i > 0 && matches!(self.ops[i - 1], Op::Relu);
                    fused = usize::from(fold_relu);
                    let mut dx = vec![0.0; rows * in_len];
                    for r in 0..rows {
                        let s = if trace.batch == 1 { 0 } else { r };
                        let src = &g[r * out_len..(r + 1) * out_len];
                        let dst = &mut dx[r * in_len..(r + 1) * in_len];
                        let xs = &x[s * in_len..(s + 1) * in_len];
                        for (o, &j) in idx[s * out_len..(s + 1) * out_len].iter().enumerate() {
                            if !(fold_relu && xs[j as usize] <= 0.0) {
                                dst[j as usize] += src[o];
                            }
                        }
                    }
                    g = dx;
                }
                Op::AvgPool(p) => g = avgpool_backward(p, &g, rows),
                Op::Flatten => {}
                Op::Activation(a) => {
                    for (r, row) in g.chunks_mut(in_len).enumerate() {
                        let xs = sample(x, trace.batch, r, in_len);
                        row.iter_mut()
                            .zip(xs)
                            .for_each(|(d, &v)| *d = (*d as f64 * a.derivative(v as f64)) as f32);
                    }
                }
            }
        }
        if !want_input {
            return None;
        }
        self.unnormalise_gradient(&mut g);
        Some(g)
    }

    /// d/dpixel = d/dnormalised / std, for rows of input gradients.
    fn unnormalise_gradient(&self, g: &mut [f32]) {
        let plane = self.input.height * self.input.width;
        let n = self.input_len();
        // Plane by plane: one divisor a run, no index arithmetic per element (J at ImageNet size
        // has 150 M of them).
        for row in g.chunks_mut(n.max(1)) {
            for (channel, &std) in row.chunks_mut(plane.max(1)).zip(&self.std) {
                channel.iter_mut().for_each(|v| *v /= std);
            }
        }
    }

    /// Multiply-adds of the Jacobian at the image a single-image `trace` records, counting in the
    /// reverse pass only the entries that carry gradient there (behind a max-pool one position per
    /// window, behind a ReLU the active units): `dataleaf bench` divides it by the machine's gemm
    /// rate for the arithmetic floor of a step.
    pub fn jacobian_macs(&self, trace: &Trace) -> JacobianMacs {
        assert_eq!(trace.batch, 1, "one image");
        if let Some(g) = &self.graph {
            let (forward, per_row) = g.macs(&trace.graph[0]);
            return JacobianMacs { forward, per_row };
        }
        let mut forward = 0.0;
        for op in &self.ops {
            forward += match op {
                Op::Conv(c) => (c.cout * c.hout * c.wout * c.cin * c.k * c.k) as f64,
                Op::Linear(l) => (l.nin * l.nout) as f64,
                _ => 0.0,
            };
        }
        // Which entries of each activation carry gradient back from the logits.
        let mut live = vec![true; self.num_classes()];
        let mut per_row = 0.0;
        let mut pool_index = trace.argmax.len();
        for (i, op) in self.ops.iter().enumerate().rev() {
            let in_len = self.lens[i];
            let count = live.iter().filter(|&&l| l).count();
            live = match op {
                Op::Conv(c) => {
                    per_row += (count * c.cin * c.k * c.k) as f64;
                    vec![count > 0; in_len]
                }
                Op::Linear(l) => {
                    per_row += (count * l.nin) as f64;
                    vec![count > 0; in_len]
                }
                Op::Relu => live
                    .iter()
                    .zip(&trace.acts[i])
                    .map(|(&l, &v)| l && v > 0.0)
                    .collect(),
                Op::MaxPool(_) => {
                    pool_index -= 1;
                    let mut into = vec![false; in_len];
                    for (o, &j) in trace.argmax[pool_index].iter().enumerate() {
                        into[j as usize] |= live[o];
                    }
                    into
                }
                Op::AvgPool(p) => {
                    let mut into = vec![false; in_len];
                    for c in 0..p.c {
                        for oh in 0..p.hout {
                            for ow in 0..p.wout {
                                if live[(c * p.hout + oh) * p.wout + ow] {
                                    for ki in 0..p.k {
                                        for kj in 0..p.k {
                                            let y = oh * p.stride + ki;
                                            into[(c * p.hin + y) * p.win + ow * p.stride + kj] = true;
                                        }
                                    }
                                }
                            }
                        }
                    }
                    into
                }
                Op::Flatten | Op::Activation(_) => live,
            };
        }
        JacobianMacs { forward, per_row }
    }

    /// Zeroed gradient buffers, one per weight tensor, in op order (weight then bias).
    pub fn zero_gradients(&self) -> Gradients {
        let mut out = Vec::new();
        for op in &self.ops {
            match op {
                Op::Conv(Conv { weight, bias, .. }) | Op::Linear(Linear { weight, bias, .. }) => {
                    out.push(vec![0.0; weight.len()]);
                    out.push(vec![0.0; bias.len()]);
                }
                _ => {}
            }
        }
        out
    }

    /// Plain SGD: w <- w - lr * dw.
    pub fn sgd_step(&mut self, grads: &Gradients, lr: f32) {
        let mut k = 0;
        for op in &mut self.ops {
            if let Op::Conv(Conv { weight, bias, .. }) | Op::Linear(Linear { weight, bias, .. }) = op {
                for (p, g) in [(weight, &grads[k]), (bias, &grads[k + 1])] {
                    p.iter_mut().zip(g).for_each(|(w, d)| *w -= lr * d);
                }
                k += 2;
            }
            match op {
                Op::Linear(linear) => linear.pack(),
                Op::Conv(conv) => conv.pack(),
                _ => {}
            }
        }
    }
}

/// The slice of image r's activation, or the single image's when the batch holds one.
fn sample(x: &[f32], batch: usize, r: usize, len: usize) -> &[f32] {
    let s = if batch == 1 { 0 } else { r };
    &x[s * len..(s + 1) * len]
}

/// Up to this many cotangent rows (J has C), a linear layer's reverse pass streams W once,
/// skipping the outputs that carry no gradient, instead of a matrix product.
const SPARSE_LINEAR_ROWS: usize = 32;

impl Conv {
    fn pack(&mut self) {
        self.gathered = gather::GatherWeights::new(&self.shape(), &self.weight);
        self.forward = ConvForwardWeights::new(&self.weight, self.cout, self.cin * self.k * self.k);
    }

    fn shape(&self) -> sparse::ConvShape {
        sparse::ConvShape {
            cin: self.cin,
            cout: self.cout,
            k: self.k,
            stride: self.stride,
            pad: self.pad,
            hin: self.hin,
            win: self.win,
            hout: self.hout,
            wout: self.wout,
        }
    }
}

/// Output columns ow whose input column ow * stride + kj - pad lies inside the image.
fn valid_columns(c: &Conv, kj: usize) -> std::ops::Range<usize> {
    let first = c.pad.saturating_sub(kj).div_ceil(c.stride);
    let last = (c.win + c.pad).saturating_sub(kj).div_ceil(c.stride).min(c.wout);
    first.min(last)..last
}

/// Unfold one image into columns: cols[(ci k + ki) k + kj][oh wout + ow] = x[ci][oh s + ki - pad][ow s + kj - pad].
fn im2col(c: &Conv, x: &[f32], cols: &mut [f32]) {
    im2col_rows(c, x, cols, 0..c.hout)
}

/// im2col of the output rows `rows` only: cols[(ci k + ki) k + kj][(oh - rows.start) wout + ow].
fn im2col_rows(c: &Conv, x: &[f32], cols: &mut [f32], rows: std::ops::Range<usize>) {
    let hw = rows.len() * c.wout;
    for ci in 0..c.cin {
        for ki in 0..c.k {
            for kj in 0..c.k {
                let row = &mut cols[((ci * c.k + ki) * c.k + kj) * hw..][..hw];
                let valid = valid_columns(c, kj);
                for (band_row, oh) in rows.clone().enumerate() {
                    let ih = (oh * c.stride + ki) as isize - c.pad as isize;
                    let out = &mut row[band_row * c.wout..(band_row + 1) * c.wout];
                    if ih < 0 || ih >= c.hin as isize {
                        out.fill(0.0);
                        continue;
                    }
                    let src = &x[(ci * c.hin + ih as usize) * c.win..][..c.win];
                    out[..valid.start].fill(0.0);
                    out[valid.end..].fill(0.0);
                    let iw0 = valid.start * c.stride + kj - c.pad;
                    if c.stride == 1 {
                        out[valid.clone()].copy_from_slice(&src[iw0..iw0 + valid.len()]);
                    } else {
                        for (o, ow) in out[valid.clone()].iter_mut().zip(0..) {
                            *o = src[iw0 + ow * c.stride];
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of im2col: add each column entry back onto the input pixel it came from.
fn col2im(c: &Conv, cols: &[f32], dx: &mut [f32]) {
    let hw = c.hout * c.wout;
    for ci in 0..c.cin {
        for ki in 0..c.k {
            for kj in 0..c.k {
                let row = &cols[((ci * c.k + ki) * c.k + kj) * hw..][..hw];
                let valid = valid_columns(c, kj);
                if valid.is_empty() {
                    continue;
                }
                let iw0 = valid.start * c.stride + kj - c.pad;
                for oh in 0..c.hout {
                    let ih = (oh * c.stride + ki) as isize - c.pad as isize;
                    if ih < 0 || ih >= c.hin as isize {
                        continue;
                    }
                    let dst = &mut dx[(ci * c.hin + ih as usize) * c.win..][..c.win];
                    let src = &row[oh * c.wout + valid.start..oh * c.wout + valid.end];
                    if c.stride == 1 {
                        dst[iw0..iw0 + src.len()]
                            .iter_mut()
                            .zip(src)
                            .for_each(|(d, v)| *d += v);
                    } else {
                        for (ow, v) in src.iter().enumerate() {
                            dst[iw0 + ow * c.stride] += v;
                        }
                    }
                }
            }
        }
    }
}

/// How to split per-image work: across images when there are enough, else inside each product.
fn split(rows: usize) -> Threads {
    if rows >= 2 * rayon::current_num_threads() {
        Threads::One
    } else {
        Threads::All
    }
}

fn conv_forward(c: &Conv, x: &[f32], y: &mut [f32], batch: usize) {
    let (in_len, hw) = (c.cin * c.hin * c.win, c.hout * c.wout);
    let ckk = c.cin * c.k * c.k;
    let threads = split(batch);
    if batch == 1 && threads == Threads::All && c.cout * hw * ckk >= team::MIN_MACS && team::threads() > 1 {
        // One image on the team: bands of output rows, each unfolded and multiplied by its part,
        // so no part packs the columns of another.
        let parts = team::threads().min(c.hout);
        let band = c.hout.div_ceil(parts);
        let out = SharedColumns::new(y, c.cout, hw);
        team::run(parts, &|k| {
            let rows = k * band..((k + 1) * band).min(c.hout);
            let width = rows.len() * c.wout;
            let mut cols = scratch::take(ckk * width);
            im2col_rows(c, x, &mut cols, rows.clone());
            // SAFETY: part k writes only the positions of its own band of output rows.
            unsafe {
                match &c.forward {
                    Some(w) => w.product(&cols, width, &c.bias, out.at(0, rows.start * c.wout), hw),
                    None => out.product(
                        rows.start * c.wout,
                        View::rows(&c.weight, c.cout, ckk),
                        View::rows(&cols, ckk, width),
                        |co| c.bias[co],
                    ),
                }
            };
            scratch::give(cols);
        });
        return;
    }
    let one = |(xb, yb): (&[f32], &mut [f32])| {
        // im2col writes every column entry.
        let mut cols = scratch::take(ckk * hw);
        im2col(c, xb, &mut cols);
        // y = W cols + b; the packed kernel where the CPU has it, on one image at a time as the
        // team's bands above, so that a batch's outputs are the single image's to the bit.
        if let Some(w) = &c.forward {
            // SAFETY: yb holds cout rows of hw floats, and only this call writes it.
            unsafe { w.product(&cols, hw, &c.bias, yb.as_mut_ptr(), hw) };
        } else {
            matmul(
                yb,
                View::rows(&c.weight, c.cout, ckk),
                View::rows(&cols, ckk, hw),
                false,
                threads,
            );
            for (row, b) in yb.chunks_mut(hw).zip(&c.bias) {
                row.iter_mut().for_each(|v| *v += b);
            }
        }
        scratch::give(cols);
    };
    let pairs = x.chunks(in_len).zip(y.chunks_mut(c.cout * hw));
    if threads == Threads::One {
        pairs.par_bridge().for_each(one);
    } else {
        pairs.for_each(one);
    }
}

/// dx_r = col2im(W^T g_r) for each cotangent row.
fn conv_input_grad(c: &Conv, g: &[f32], rows: usize) -> Vec<f32> {
    let (in_len, hw) = (c.cin * c.hin * c.win, c.hout * c.wout);
    let ckk = c.cin * c.k * c.k;
    let mut dx = vec![0.0; rows * in_len];
    let threads = if rows >= 2 { Threads::One } else { Threads::All };
    let one = |(gr, dxr): (&[f32], &mut [f32])| {
        let mut dcols = vec![0.0; ckk * hw];
        matmul(
            &mut dcols,
            View::transposed(&c.weight, c.cout, ckk),
            View::rows(gr, c.cout, hw),
            false,
            threads,
        );
        col2im(c, &dcols, dxr);
    };
    let pairs = g.chunks(c.cout * hw).zip(dx.chunks_mut(in_len));
    if threads == Threads::One {
        pairs.par_bridge().for_each(one);
    } else {
        pairs.for_each(one);
    }
    dx
}

/// conv_input_grad from output gradients laid out channels last (`gather::Hwc`), read in place.
fn conv_input_grad_hwc(c: &Conv, g: &gather::Hwc) -> Vec<f32> {
    let (in_len, hw) = (c.cin * c.hin * c.win, c.hout * c.wout);
    assert!(
        g.plane == hw && g.cin == c.cout,
        "gradient shape differs from the convolution's output"
    );
    let ckk = c.cin * c.k * c.k;
    let mut dx = scratch::zeroed(g.rows * in_len);
    team::for_each_chunk_mut(&mut dx, in_len, |r, dxr| {
        let (offset, step) = g.row(r);
        // G_r[co][p] = data[offset + p step + co]
        let view = View {
            data: &g.data[offset..],
            rows: c.cout,
            cols: hw,
            rs: 1,
            cs: step,
        };
        // The product writes every entry.
        let mut dcols = scratch::take(ckk * hw);
        matmul(
            &mut dcols,
            View::transposed(&c.weight, c.cout, ckk),
            view,
            false,
            Threads::One,
        );
        col2im(c, &dcols, dxr);
        scratch::give(dcols);
    });
    dx
}

/// dW += sum_r g_r cols_r^T, db += sum_r sum over positions of g_r.
fn conv_weight_grad(c: &Conv, x: &[f32], g: &[f32], rows: usize, dw: &mut [f32], db: &mut [f32]) {
    let (in_len, hw) = (c.cin * c.hin * c.win, c.hout * c.wout);
    let ckk = c.cin * c.k * c.k;
    let (w, b) = (0..rows)
        .into_par_iter()
        .fold(
            || {
                (
                    vec![0.0f32; c.cout * ckk],
                    vec![0.0f32; c.cout],
                    vec![0.0f32; ckk * hw],
                )
            },
            |(mut w, mut b, mut cols), r| {
                im2col(c, &x[r * in_len..(r + 1) * in_len], &mut cols);
                let gr = &g[r * c.cout * hw..(r + 1) * c.cout * hw];
                matmul(
                    &mut w,
                    View::rows(gr, c.cout, hw),
                    View::transposed(&cols, ckk, hw),
                    true,
                    Threads::One,
                );
                for (bo, row) in b.iter_mut().zip(gr.chunks(hw)) {
                    *bo += row.iter().sum::<f32>();
                }
                (w, b, cols)
            },
        )
        .map(|(w, b, _)| (w, b))
        .reduce(
            || (vec![0.0; c.cout * ckk], vec![0.0; c.cout]),
            |(mut w1, mut b1), (w2, b2)| {
                w1.iter_mut().zip(&w2).for_each(|(a, b)| *a += b);
                b1.iter_mut().zip(&b2).for_each(|(a, b)| *a += b);
                (w1, b1)
            },
        );
    dw.iter_mut().zip(&w).for_each(|(a, b)| *a += b);
    db.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
}

fn maxpool_forward(p: &Pool, x: &[f32], y: &mut [f32], batch: usize) -> Vec<u32> {
    let (in_len, out_len) = (p.c * p.hin * p.win, p.c * p.hout * p.wout);
    let mut idx = vec![0u32; batch * out_len];
    // The common 2 x 2 window, stride 2, as straight-line selects over two input rows; channel
    // ranges of one image over the team.
    if p.k == 2 && p.stride == 2 && p.win >= 2 * p.wout && p.hin >= 2 * p.hout {
        let plane = p.hout * p.wout;
        let per = p.c.div_ceil(if batch == 1 && out_len >= 1 << 12 {
            team::threads()
        } else {
            1
        });
        for b in 0..batch {
            let xb = &x[b * in_len..(b + 1) * in_len];
            let (yb, ib) = (
                &mut y[b * out_len..(b + 1) * out_len],
                &mut idx[b * out_len..(b + 1) * out_len],
            );
            team::for_each_chunk_pair_mut(yb, per * plane, ib, per * plane, |k, yk, ik| {
                maxpool2_channels(p, xb, k * per, yk, ik)
            });
        }
        return idx;
    }
    for b in 0..batch {
        let xb = &x[b * in_len..(b + 1) * in_len];
        for c in 0..p.c {
            for oh in 0..p.hout {
                for ow in 0..p.wout {
                    // The first maximum in the window wins and NaN propagates, as in PyTorch.
                    let first = (c * p.hin + oh * p.stride) * p.win + ow * p.stride;
                    let (mut best, mut at) = (xb[first], first);
                    for ki in 0..p.k {
                        let row = first + ki * p.win;
                        for (j, &v) in xb[row..row + p.k].iter().enumerate() {
                            // Selects rather than branches: which element wins is unpredictable.
                            let better = v > best || (v.is_nan() && !best.is_nan());
                            best = if better { v } else { best };
                            at = if better { row + j } else { at };
                        }
                    }
                    let o = b * out_len + (c * p.hout + oh) * p.wout + ow;
                    y[o] = best;
                    idx[o] = at as u32;
                }
            }
        }
    }
    idx
}

/// The 2 x 2, stride 2 max-pool of channels `c0 ..` (as many as `y` holds) of one image.
fn maxpool2_channels(p: &Pool, xb: &[f32], c0: usize, y: &mut [f32], idx: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F; the kernel asserts its bounds.
        unsafe { pool_x86::maxpool2_channels(p, xb, c0, y, idx) };
        return;
    }
    maxpool2_channels_scalar(p, xb, c0, y, idx)
}

/// `maxpool2_channels` one window at a time.
fn maxpool2_channels_scalar(p: &Pool, xb: &[f32], c0: usize, y: &mut [f32], idx: &mut [u32]) {
    let better = |v: f32, best: f32| v > best || (v.is_nan() && !best.is_nan());
    let plane = p.hout * p.wout;
    for (k, (yc, ic)) in y.chunks_mut(plane).zip(idx.chunks_mut(plane)).enumerate() {
        let c = c0 + k;
        for oh in 0..p.hout {
            let top = (c * p.hin + 2 * oh) * p.win;
            let (r0, r1) = (&xb[top..top + p.win], &xb[top + p.win..top + 2 * p.win]);
            let (ys, is) = (
                &mut yc[oh * p.wout..(oh + 1) * p.wout],
                &mut ic[oh * p.wout..(oh + 1) * p.wout],
            );
            for (ow, (yo, io)) in ys.iter_mut().zip(is.iter_mut()).enumerate() {
                let j = 2 * ow;
                let (mut best, mut at) = (r0[j], top + j);
                for (v, a) in [
                    (r0[j + 1], top + j + 1),
                    (r1[j], top + p.win + j),
                    (r1[j + 1], top + p.win + j + 1),
                ] {
                    let take = better(v, best);
                    best = if take { v } else { best };
                    at = if take { a } else { at };
                }
                *yo = best;
                *io = at as u32;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod pool_x86 {
    use std::arch::x86_64::*;

    use super::Pool;

    /// `maxpool2_channels` 16 windows at a time: the four candidates of each window as the even
    /// and odd lanes of two rows, chosen by compare masks in the scalar path's order (the first
    /// maximum wins; NaN beats a number and propagates), so the results are the same.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn maxpool2_channels(p: &Pool, xb: &[f32], c0: usize, y: &mut [f32], idx: &mut [u32]) {
        let plane = p.hout * p.wout;
        let channels = y.len() / plane.max(1);
        assert!(idx.len() == y.len() && y.len() == channels * plane);
        assert!((c0 + channels) * p.hin * p.win <= xb.len() && 2 * p.wout <= p.win && 2 * p.hout <= p.hin);
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
        let lane2 = _mm512_slli_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            1,
        );
        let xp = xb.as_ptr();
        for k in 0..channels {
            let c = c0 + k;
            for oh in 0..p.hout {
                let top = (c * p.hin + 2 * oh) * p.win;
                for ow0 in (0..p.wout).step_by(16) {
                    let n = (p.wout - ow0).min(16);
                    let m = ((1u32 << n) - 1) as __mmask16;
                    // 2n inputs of each row: the first 16 and the rest.
                    let (m_lo, m_hi) = (
                        ((1u32 << (2 * n).min(16)) - 1) as __mmask16,
                        ((1u32 << (2 * n).saturating_sub(16)) - 1) as __mmask16,
                    );
                    let row = |at: usize| {
                        // SAFETY: at + 2n <= the channel's rows (2 wout <= win), inside xb.
                        let (lo, hi) = unsafe {
                            (
                                _mm512_maskz_loadu_ps(m_lo, xp.add(at)),
                                _mm512_maskz_loadu_ps(m_hi, xp.add(at + 16)),
                            )
                        };
                        (
                            _mm512_permutex2var_ps(lo, even, hi),
                            _mm512_permutex2var_ps(lo, odd, hi),
                        )
                    };
                    let first = top + 2 * ow0;
                    let (a, b) = row(first);
                    let (c_, d) = row(first + p.win);
                    let base = _mm512_add_epi32(_mm512_set1_epi32(first as i32), lane2);
                    let (mut best, mut at) = (a, base);
                    for (v, off) in [(b, 1), (c_, p.win as i32), (d, p.win as i32 + 1)] {
                        let greater = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, best);
                        let nan_over_number = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v)
                            & !_mm512_cmp_ps_mask::<_CMP_UNORD_Q>(best, best);
                        let take = greater | nan_over_number;
                        best = _mm512_mask_blend_ps(take, best, v);
                        at =
                            _mm512_mask_blend_epi32(take, at, _mm512_add_epi32(base, _mm512_set1_epi32(off)));
                    }
                    let o = k * plane + oh * p.wout + ow0;
                    // SAFETY: o + n <= y.len() = idx.len(); lanes past n are masked off.
                    unsafe {
                        _mm512_mask_storeu_ps(y.as_mut_ptr().add(o), m, best);
                        _mm512_mask_storeu_epi32(idx.as_mut_ptr().add(o) as *mut i32, m, at);
                    }
                }
            }
        }
    }
}

fn avgpool_forward(p: &Pool, x: &[f32], y: &mut [f32], batch: usize) {
    let (in_len, out_len) = (p.c * p.hin * p.win, p.c * p.hout * p.wout);
    let scale = 1.0 / (p.k * p.k) as f32;
    for b in 0..batch {
        for c in 0..p.c {
            for oh in 0..p.hout {
                for ow in 0..p.wout {
                    let mut s = 0.0;
                    for ki in 0..p.k {
                        for kj in 0..p.k {
                            s +=
                                x[b * in_len + (c * p.hin + oh * p.stride + ki) * p.win + ow * p.stride + kj];
                        }
                    }
                    y[b * out_len + (c * p.hout + oh) * p.wout + ow] = s * scale;
                }
            }
        }
    }
}

fn avgpool_backward(p: &Pool, g: &[f32], rows: usize) -> Vec<f32> {
    let (in_len, out_len) = (p.c * p.hin * p.win, p.c * p.hout * p.wout);
    let scale = 1.0 / (p.k * p.k) as f32;
    let mut dx = vec![0.0; rows * in_len];
    for r in 0..rows {
        for c in 0..p.c {
            for oh in 0..p.hout {
                for ow in 0..p.wout {
                    let d = g[r * out_len + (c * p.hout + oh) * p.wout + ow] * scale;
                    for ki in 0..p.k {
                        for kj in 0..p.k {
                            dx[r * in_len + (c * p.hin + oh * p.stride + ki) * p.win + ow * p.stride + kj] +=
                                d;
                        }
                    }
                }
            }
        }
    }
    dx
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// The vector max-pool picks the scalar path's windows and values: ties (the first wins),
    /// NaN (beats numbers, the first NaN wins), odd widths and heights, rows of more than 16
    /// windows.
    #[test]
    fn the_vector_max_pool_is_the_scalar_one() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        for (c, h, w) in [(3, 24, 24), (2, 7, 9), (1, 4, 70), (5, 2, 2)] {
            let p = pool_of(c, h, w, 2, None);
            let x: Vec<f32> = (0..c * h * w)
                .map(|i| match i % 23 {
                    0 | 7 => f32::NAN,
                    k if k % 5 == 0 => 0.5,
                    k => ((k * 7919) % 31) as f32 / 31.0 - 0.3,
                })
                .collect();
            let out = c * p.hout * p.wout;
            let (mut y, mut idx) = (vec![0.0f32; out], vec![0u32; out]);
            let (mut ys, mut is) = (vec![0.0f32; out], vec![0u32; out]);
            // SAFETY: AVX-512F is present (checked above).
            unsafe { pool_x86::maxpool2_channels(&p, &x, 0, &mut y, &mut idx) };
            maxpool2_channels_scalar(&p, &x, 0, &mut ys, &mut is);
            assert_eq!(idx, is, "{c} x {h} x {w}: argmax");
            assert!(
                y.iter().zip(&ys).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{c} x {h} x {w}: values"
            );
            assert!(ys.iter().any(|v| v.is_nan()), "the test has NaN windows");
        }
    }
}
