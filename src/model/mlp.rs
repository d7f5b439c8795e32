//! A small dense network on a features input, in f64: the model of the 2-D plane view and of
//! `dataleaf simec`. f64 so that SiMEC's O(delta) drift, not round-off, is what a test sees; tiny, so
//! the Jacobian comes by forward mode (n tangents through the layers) and training by a plain
//! reverse pass per sample, with Adam.

use std::path::Path;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::arch::{Architecture, Input, Layer, Normalize, Task};
use super::files::{read_architecture, read_weights, weights_path, write_model, ModelError};
use super::network::{Activation, Tensor32, Weights};

/// An activation of the plane models. ReLU is leaky ReLU with slope 0 in value and derivative
/// (derivative 0 at 0, as PyTorch and `Network` take it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Act {
    Relu,
    LeakyRelu(f64),
    Sigmoid,
    Tanh,
    Softplus,
    Gelu,
}

impl Act {
    /// The activations the plane view offers, with their names.
    pub const CHOICES: [(Act, &'static str); 5] = [
        (Act::Relu, "relu"),
        (Act::LeakyRelu(0.01), "leaky_relu"),
        (Act::Sigmoid, "sigmoid"),
        (Act::Tanh, "tanh"),
        (Act::Softplus, "softplus"),
    ];

    pub fn name(self) -> &'static str {
        match self {
            Act::Relu => "relu",
            Act::LeakyRelu(_) => "leaky_relu",
            Act::Sigmoid => "sigmoid",
            Act::Tanh => "tanh",
            Act::Softplus => "softplus",
            Act::Gelu => "gelu",
        }
    }

    pub fn parse(s: &str) -> Option<Act> {
        Act::CHOICES.iter().find(|(_, n)| *n == s).map(|(a, _)| *a)
    }

    fn of(layer: &Layer) -> Option<Act> {
        match layer {
            Layer::Relu => Some(Act::Relu),
            Layer::LeakyRelu { negative_slope } => Some(Act::LeakyRelu(*negative_slope as f64)),
            Layer::Sigmoid => Some(Act::Sigmoid),
            Layer::Tanh => Some(Act::Tanh),
            Layer::Softplus => Some(Act::Softplus),
            Layer::Gelu => Some(Act::Gelu),
            _ => None,
        }
    }

    fn layer(self) -> Layer {
        match self {
            Act::Relu => Layer::Relu,
            Act::LeakyRelu(s) => Layer::LeakyRelu {
                negative_slope: s as f32,
            },
            Act::Sigmoid => Layer::Sigmoid,
            Act::Tanh => Layer::Tanh,
            Act::Softplus => Layer::Softplus,
            Act::Gelu => Layer::Gelu,
        }
    }

    fn engine(self) -> Activation {
        match self {
            Act::Relu => Activation::LeakyRelu(0.0),
            Act::LeakyRelu(s) => Activation::LeakyRelu(s),
            Act::Sigmoid => Activation::Sigmoid,
            Act::Tanh => Activation::Tanh,
            Act::Softplus => Activation::Softplus,
            Act::Gelu => Activation::Gelu,
        }
    }

    pub fn value(self, x: f64) -> f64 {
        match self {
            // max(x, 0) without the -0.0 that 0 * x gives.
            Act::Relu => x.max(0.0),
            _ => self.engine().value(x),
        }
    }

    pub fn derivative(self, x: f64) -> f64 {
        self.engine().derivative(x)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Linear {
        name: String,
        /// nout x nin, row-major (PyTorch layout).
        w: Vec<f64>,
        b: Vec<f64>,
        nin: usize,
        nout: usize,
    },
    Act(Act),
}

/// The shape of a fresh plane model.
#[derive(Debug, Clone, PartialEq)]
pub struct MlpSpec {
    pub inputs: usize,
    /// Widths of the hidden layers.
    pub hidden: Vec<usize>,
    pub outputs: usize,
    pub act: Act,
    pub task: Task,
}

/// A dense network x -> outputs (logits for classification, raw values for regression).
#[derive(Debug, Clone, PartialEq)]
pub struct Mlp {
    pub name: String,
    pub task: Task,
    /// Output names (class names for classification).
    pub names: Vec<String>,
    inputs: usize,
    mean: Vec<f64>,
    std: Vec<f64>,
    ops: Vec<Op>,
}

/// Outputs and their Jacobian at one point.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The network's outputs: logits (classification) or values (regression).
    pub raw: Vec<f64>,
    /// d raw / dx, outputs x inputs, row-major.
    pub jacobian: Vec<f64>,
}

/// Numerically stable softmax.
pub fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = logits.iter().map(|s| (s - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|v| v / sum).collect()
}

impl Mlp {
    /// Fresh weights, PyTorch's default initialisation (uniform in +-1/sqrt(fan_in)), from a seed.
    pub fn new(spec: &MlpSpec, seed: u64) -> Mlp {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut ops = Vec::new();
        let widths: Vec<usize> = std::iter::once(spec.inputs)
            .chain(spec.hidden.iter().copied())
            .chain(std::iter::once(spec.outputs))
            .collect();
        for (k, pair) in widths.windows(2).enumerate() {
            let (nin, nout) = (pair[0], pair[1]);
            let bound = 1.0 / (nin.max(1) as f64).sqrt();
            let mut draw =
                |n: usize| -> Vec<f64> { (0..n).map(|_| rng.random_range(-bound..=bound)).collect() };
            ops.push(Op::Linear {
                name: (2 * k).to_string(),
                w: draw(nin * nout),
                b: draw(nout),
                nin,
                nout,
            });
            if k + 2 < widths.len() {
                ops.push(Op::Act(spec.act));
            }
        }
        let names = match spec.task {
            Task::Classification => (0..spec.outputs).map(|k| k.to_string()).collect(),
            Task::Regression => Vec::new(),
        };
        Mlp {
            name: "plane-mlp".into(),
            task: spec.task,
            names,
            inputs: spec.inputs,
            mean: vec![0.0; spec.inputs],
            std: vec![1.0; spec.inputs],
            ops,
        }
    }

    /// Load `NAME.json` (a features model) and the `NAME.safetensors` beside it; every message
    /// names the file at fault.
    pub fn load(json: &Path) -> Result<Mlp, ModelError> {
        let arch = read_architecture(json)?;
        Mlp::check(&arch).map_err(|m| ModelError::new(json, m))?;
        let wpath = weights_path(json);
        if !wpath.exists() {
            return Err(ModelError::new(
                &wpath,
                format!("weights file not found (expected beside {})", json.display()),
            ));
        }
        let weights = read_weights(&wpath)?;
        Mlp::from_parts(&arch, &weights).map_err(|m| ModelError::new(&wpath, m))
    }

    /// Write `NAME.json` and `NAME.safetensors` (f32), which `load` and `dataleaf simec` read.
    pub fn save(&self, json: &Path) -> Result<(), ModelError> {
        let (arch, weights) = self.to_parts();
        write_model(json, &arch, &weights)
    }

    /// Whether an architecture is one this type runs: a features input, and only linear, flatten
    /// and activation layers.
    pub fn check(arch: &Architecture) -> Result<(), String> {
        arch.validate()?;
        if arch.input.image().is_some() {
            return Err(format!(
                "model {:?} takes images; the plane view and `dataleaf simec` need a features input \
                 ({{\"features\": N}})",
                arch.name
            ));
        }
        for (k, layer) in arch.layers.iter().enumerate() {
            if !matches!(layer, Layer::Flatten | Layer::Linear { .. }) && Act::of(layer).is_none() {
                return Err(format!(
                    "layer {k} ({}) is not a dense layer; a features model has linear layers and activations",
                    layer.kind()
                ));
            }
        }
        Ok(())
    }

    /// Build from a model file's parts (see `check`). The message says what does not fit.
    pub fn from_parts(arch: &Architecture, weights: &Weights) -> Result<Mlp, String> {
        Mlp::check(arch)?;
        let features = arch.input.len();
        let mut ops = Vec::new();
        for layer in &arch.layers {
            match layer {
                Layer::Flatten => {}
                Layer::Linear {
                    name,
                    in_features,
                    out_features,
                } => {
                    let take = |key: String, shape: Vec<usize>| -> Result<Vec<f64>, String> {
                        let t = weights
                            .get(&key)
                            .ok_or_else(|| format!("weight tensor {key:?} is missing"))?;
                        if t.shape != shape {
                            return Err(format!(
                                "weight tensor {key:?} has shape {:?}, the architecture needs {shape:?}",
                                t.shape
                            ));
                        }
                        if t.data.iter().any(|v| !v.is_finite()) {
                            return Err(format!("weight tensor {key:?} holds a non-finite value"));
                        }
                        Ok(t.data.iter().map(|&v| v as f64).collect())
                    };
                    ops.push(Op::Linear {
                        name: name.clone(),
                        w: take(format!("{name}.weight"), vec![*out_features, *in_features])?,
                        b: take(format!("{name}.bias"), vec![*out_features])?,
                        nin: *in_features,
                        nout: *out_features,
                    });
                }
                other => ops.extend(Act::of(other).map(Op::Act)),
            }
        }
        let (mean, std) = match &arch.normalize {
            Some(n) => (
                n.mean.iter().map(|&v| v as f64).collect(),
                n.std.iter().map(|&v| v as f64).collect(),
            ),
            None => (vec![0.0; features], vec![1.0; features]),
        };
        Ok(Mlp {
            name: arch.name.clone(),
            task: arch.task,
            names: match arch.task {
                Task::Classification => arch.classes.clone(),
                Task::Regression => (0..arch.num_outputs()).map(|k| arch.output_name(k)).collect(),
            },
            inputs: features,
            mean,
            std,
            ops,
        })
    }

    /// The architecture and weights (f32, PyTorch names) to write as a model file.
    pub fn to_parts(&self) -> (Architecture, Weights) {
        let mut layers = Vec::new();
        let mut weights = Weights::new();
        for op in &self.ops {
            match op {
                Op::Linear {
                    name,
                    w,
                    b,
                    nin,
                    nout,
                } => {
                    layers.push(Layer::Linear {
                        name: name.clone(),
                        in_features: *nin,
                        out_features: *nout,
                    });
                    let tensor = |shape: Vec<usize>, v: &[f64]| Tensor32 {
                        shape,
                        data: v.iter().map(|&x| x as f32).collect(),
                    };
                    weights.insert(format!("{name}.weight"), tensor(vec![*nout, *nin], w));
                    weights.insert(format!("{name}.bias"), tensor(vec![*nout], b));
                }
                Op::Act(a) => layers.push(a.layer()),
            }
        }
        let identity = self.mean.iter().all(|&m| m == 0.0) && self.std.iter().all(|&s| s == 1.0);
        let arch = Architecture {
            name: self.name.clone(),
            input: Input::Features {
                features: self.inputs,
            },
            task: self.task,
            normalize: (!identity).then(|| Normalize {
                mean: self.mean.iter().map(|&v| v as f32).collect(),
                std: self.std.iter().map(|&v| v as f32).collect(),
            }),
            classes: self.names.clone(),
            layers,
            nodes: Vec::new(),
            training: None,
        };
        (arch, weights)
    }

    /// The same network with its weights rounded to f32, as a saved file holds them.
    pub fn rounded_to_f32(&self) -> Mlp {
        let round = |v: &[f64]| v.iter().map(|&x| x as f32 as f64).collect();
        let mut m = self.clone();
        for op in &mut m.ops {
            if let Op::Linear { w, b, .. } = op {
                *w = round(w);
                *b = round(b);
            }
        }
        m
    }

    pub fn inputs(&self) -> usize {
        self.inputs
    }

    pub fn outputs(&self) -> usize {
        self.ops
            .iter()
            .rev()
            .find_map(|op| match op {
                Op::Linear { nout, .. } => Some(*nout),
                Op::Act(_) => None,
            })
            .unwrap_or(self.inputs)
    }

    /// Whether every activation is piecewise linear (the foliation theory's assumption).
    pub fn is_piecewise_linear(&self) -> bool {
        self.ops
            .iter()
            .all(|op| matches!(op, Op::Linear { .. } | Op::Act(Act::Relu | Act::LeakyRelu(_))))
    }

    fn normalized(&self, x: &[f64]) -> Vec<f64> {
        x.iter()
            .zip(self.mean.iter().zip(&self.std))
            .map(|(v, (m, s))| (v - m) / s)
            .collect()
    }

    /// Raw outputs (logits or values) at x.
    pub fn raw(&self, x: &[f64]) -> Vec<f64> {
        let mut a = self.normalized(x);
        for op in &self.ops {
            a = match op {
                Op::Linear { w, b, nin, .. } => b
                    .iter()
                    .zip(w.chunks(*nin))
                    .map(|(bo, row)| bo + row.iter().zip(&a).map(|(p, q)| p * q).sum::<f64>())
                    .collect(),
                Op::Act(f) => a.iter().map(|&v| f.value(v)).collect(),
            };
        }
        a
    }

    /// What the model reports: probabilities (softmax of the logits) or the raw values.
    pub fn predict(&self, x: &[f64]) -> Vec<f64> {
        let raw = self.raw(x);
        match self.task {
            Task::Classification => softmax(&raw),
            Task::Regression => raw,
        }
    }

    /// Raw outputs and their Jacobian, by forward mode: the n tangent columns ride along.
    pub fn evaluate(&self, x: &[f64]) -> Evaluation {
        let n = self.inputs;
        let mut a = self.normalized(x);
        // t[i * n + j] = d a_i / d x_j; the input's is diag(1 / std).
        let mut t = vec![0.0; n * n];
        for j in 0..n {
            t[j * n + j] = 1.0 / self.std[j];
        }
        for op in &self.ops {
            match op {
                Op::Linear { w, b, nin, nout, .. } => {
                    let mut next = b.clone();
                    let mut tn = vec![0.0; nout * n];
                    for o in 0..*nout {
                        let row = &w[o * nin..(o + 1) * nin];
                        next[o] += row.iter().zip(&a).map(|(p, q)| p * q).sum::<f64>();
                        for (i, &wi) in row.iter().enumerate() {
                            for j in 0..n {
                                tn[o * n + j] += wi * t[i * n + j];
                            }
                        }
                    }
                    a = next;
                    t = tn;
                }
                Op::Act(f) => {
                    for (i, v) in a.iter_mut().enumerate() {
                        let d = f.derivative(*v);
                        t[i * n..(i + 1) * n].iter_mut().for_each(|x| *x *= d);
                        *v = f.value(*v);
                    }
                }
            }
        }
        Evaluation { raw: a, jacobian: t }
    }

    /// The loss of a batch and, added into `grads` (one vector per linear layer: weights then bias),
    /// its gradient. Classification: mean cross-entropy, labels are class indices. Regression: mean
    /// of 1/2 |f(x) - y|^2.
    fn loss_and_gradient(&self, xs: &[Vec<f64>], ys: &[Vec<f64>], grads: &mut [Vec<f64>]) -> f64 {
        let batch = xs.len().max(1) as f64;
        let mut loss = 0.0;
        for (x, y) in xs.iter().zip(ys) {
            // Forward, keeping each op's input.
            let mut inputs = Vec::with_capacity(self.ops.len());
            let mut a = self.normalized(x);
            for op in &self.ops {
                let next = match op {
                    Op::Linear { w, b, nin, .. } => b
                        .iter()
                        .zip(w.chunks(*nin))
                        .map(|(bo, row)| bo + row.iter().zip(&a).map(|(p, q)| p * q).sum::<f64>())
                        .collect(),
                    Op::Act(f) => a.iter().map(|&v| f.value(v)).collect(),
                };
                inputs.push(std::mem::replace(&mut a, next));
            }
            // d loss / d outputs.
            let mut g: Vec<f64> = match self.task {
                Task::Classification => {
                    let p = softmax(&a);
                    let label = y.first().map_or(0, |&l| l as usize).min(p.len() - 1);
                    loss -= p[label].max(1e-300).ln();
                    // d/ds_k of -log p_y = p_k - [k = y]
                    p.iter()
                        .enumerate()
                        .map(|(k, pk)| (pk - f64::from(u8::from(k == label))) / batch)
                        .collect()
                }
                Task::Regression => {
                    let d: Vec<f64> = a.iter().zip(y).map(|(f, t)| f - t).collect();
                    loss += 0.5 * d.iter().map(|v| v * v).sum::<f64>();
                    d.iter().map(|v| v / batch).collect()
                }
            };
            let mut layer = grads.len();
            for (op, input) in self.ops.iter().zip(&inputs).rev() {
                match op {
                    Op::Linear { w, nin, .. } => {
                        layer -= 1;
                        let (gw, gb) = grads[layer].split_at_mut(w.len());
                        let mut dx = vec![0.0; *nin];
                        for (o, &go) in g.iter().enumerate() {
                            gb[o] += go;
                            for i in 0..*nin {
                                gw[o * nin + i] += go * input[i];
                                dx[i] += go * w[o * nin + i];
                            }
                        }
                        g = dx;
                    }
                    Op::Act(f) => g.iter_mut().zip(input).for_each(|(d, &v)| *d *= f.derivative(v)),
                }
            }
        }
        loss / batch
    }

    fn parameters_mut(&mut self) -> impl Iterator<Item = (&mut Vec<f64>, &mut Vec<f64>)> {
        self.ops.iter_mut().filter_map(|op| match op {
            Op::Linear { w, b, .. } => Some((w, b)),
            Op::Act(_) => None,
        })
    }
}

/// Adam (Kingma & Ba) over minibatches of a fixed training set.
#[derive(Debug, Clone)]
pub struct Trainer {
    pub mlp: Mlp,
    xs: Vec<Vec<f64>>,
    /// Class index (as f64) for classification, target values for regression.
    ys: Vec<Vec<f64>>,
    m: Vec<Vec<f64>>,
    v: Vec<Vec<f64>>,
    t: i32,
    order: Vec<usize>,
    cursor: usize,
    rng: rand::rngs::StdRng,
    /// Optimiser steps taken.
    pub steps: usize,
}

impl Trainer {
    pub fn new(mlp: Mlp, xs: Vec<Vec<f64>>, ys: Vec<Vec<f64>>, seed: u64) -> Trainer {
        let sizes: Vec<usize> = mlp
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::Linear { w, b, .. } => Some(w.len() + b.len()),
                Op::Act(_) => None,
            })
            .collect();
        let zeros: Vec<Vec<f64>> = sizes.iter().map(|&n| vec![0.0; n]).collect();
        Trainer {
            mlp,
            order: (0..xs.len()).collect(),
            xs,
            ys,
            m: zeros.clone(),
            v: zeros,
            t: 0,
            cursor: usize::MAX,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            steps: 0,
        }
    }

    /// One Adam step on the next minibatch (the whole set when `batch` is 0 or larger); the loss.
    pub fn step(&mut self, batch: usize, lr: f64) -> f64 {
        let n = self.xs.len();
        if n == 0 {
            return 0.0;
        }
        let batch = if batch == 0 { n } else { batch.min(n) };
        if self.cursor.saturating_add(batch) > n {
            self.order.shuffle(&mut self.rng);
            self.cursor = 0;
        }
        let idx = &self.order[self.cursor..self.cursor + batch];
        self.cursor += batch;
        let xs: Vec<Vec<f64>> = idx.iter().map(|&i| self.xs[i].clone()).collect();
        let ys: Vec<Vec<f64>> = idx.iter().map(|&i| self.ys[i].clone()).collect();
        let mut grads: Vec<Vec<f64>> = self.m.iter().map(|m| vec![0.0; m.len()]).collect();
        let loss = self.mlp.loss_and_gradient(&xs, &ys, &mut grads);
        if !loss.is_finite() {
            // A diverged step changes nothing; the caller sees the loss and can lower the rate.
            return loss;
        }
        self.t += 1;
        let (b1, b2, eps) = (0.9, 0.999, 1e-8);
        let (c1, c2) = (1.0 - f64::powi(b1, self.t), 1.0 - f64::powi(b2, self.t));
        for (k, (w, b)) in self.mlp.parameters_mut().enumerate() {
            for (i, p) in w.iter_mut().chain(b.iter_mut()).enumerate() {
                let g = grads[k][i];
                let (m, v) = (&mut self.m[k][i], &mut self.v[k][i]);
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                *p -= lr * (*m / c1) / ((*v / c2).sqrt() + eps);
            }
        }
        self.steps += 1;
        loss
    }

    /// Mean loss over the whole training set.
    pub fn loss(&self) -> f64 {
        let mut scratch: Vec<Vec<f64>> = self.m.iter().map(|m| vec![0.0; m.len()]).collect();
        self.mlp.loss_and_gradient(&self.xs, &self.ys, &mut scratch)
    }

    /// Fraction of the training set classified as its label (classification), else 0.
    pub fn accuracy(&self) -> f64 {
        if self.mlp.task != Task::Classification || self.xs.is_empty() {
            return 0.0;
        }
        let hits = self
            .xs
            .iter()
            .zip(&self.ys)
            .filter(|(x, y)| {
                let raw = self.mlp.raw(x);
                let best = (0..raw.len()).fold(0, |b, k| if raw[k] > raw[b] { k } else { b });
                best as f64 == y[0]
            })
            .count();
        hits as f64 / self.xs.len() as f64
    }
}
