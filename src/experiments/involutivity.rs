//! `involutivity`: whether the distribution D_x = span{grad log p_i} is closed under Lie brackets.
//! Frobenius: D integrates to a foliation (data leaf, noise leaves) exactly when [X, Y] stays in D for
//! fields X, Y in D. For a ReLU network J is constant on each linear region, so the Hessian of log p_j
//! there is -G and [X_i, X_j] = G (X_j - X_i) lies in D: involutive almost everywhere. With a smooth
//! activation (sigmoid, tanh, GELU) J varies inside a region and the brackets leave D.
//!
//! At each point x, with X_i = grad log p_i (i = 1..C, spanning D_x):
//!   D_v X_j ~ (X_j(x + h v) - X_j(x - h v)) / 2h for v = X_i / |X_i|,
//!   [X_i, X_j] = |X_i| D_{v_i} X_j - |X_j| D_{v_j} X_i,
//! and we report each bracket's residual outside D_x relative to the size of its two terms,
//! |P_perp [X_i, X_j]| / (|DX_j X_i| + |DX_i X_j|) (a bracket whose terms nearly cancel would otherwise
//! turn round-off into a large relative residual), and rank [X; brackets] against rank X: the rank
//! of X with singular values above 1e-6 of the largest on unit rows, plus the number of directions
//! the scaled residuals add above 1e-6.
//!
//! Models: the shipped CNN (ReLU), evaluated by the fast f32 network with the differences taken in
//! f64; and one MLP architecture (784-256-128-10) with ReLU, sigmoid, tanh and GELU, each trained here
//! for one pass over the 60 000 MNIST training images (SGD, lr 0.1, batch 60, seed 42) and then
//! evaluated entirely in f64 by `Dense64`. A ReLU model's difference quotient is only meaningful when
//! x +- h v lie in one linear region: a direction whose Jacobians differ at the two ends has crossed a
//! region boundary (the measure-zero set where D is not defined), and its brackets are left out and
//! counted.

use std::ops::Range;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::plot::{self, median, Align, Axes, BoxStats, Canvas, PALETTE};
use super::shard::{finite, Sharded};
use super::{model_and_data, par_map, round, ExperimentError, Progress, Settings};
use crate::data::Dataset;
use crate::geometry::{eigen::symmetric_eigen, jacobian::logits_and_jacobian, softmax};
use crate::model::arch::{Architecture, Layer};
use crate::model::network::Activation;
use crate::model::train::cross_entropy;
use crate::model::{accuracy, zoo, Model, Network, Weights};

/// Finite-difference step along each unit direction, pixel units.
pub const H: f64 = 1e-5;
/// Singular values below this fraction of the largest (on unit rows) count as zero; brackets whose
/// relative residual outside D_x is below it count as inside D_x.
pub const TOL: f64 = 1e-6;
/// Half-width of the uniform noise added to each test image to make a generic point.
pub const JITTER: f64 = 0.01;
/// log10 shown for a residual of exactly zero.
const RESIDUAL_FLOOR: f64 = -17.0;

#[derive(Debug, Clone)]
pub struct Config {
    pub model: String,
    /// The images (plus a little noise) at which D is tested; the MLP comparison is trained on
    /// MNIST and runs only with MNIST-shaped data.
    pub dataset: String,
    /// Random images of the dataset at which D is tested.
    pub points: usize,
    /// MLP training: images of the MNIST training set, one pass.
    pub train_images: usize,
    pub activations: Vec<&'static str>,
    pub seed: u64,
}

impl From<&Settings> for Config {
    fn from(s: &Settings) -> Config {
        Config {
            model: s.model.clone(),
            dataset: s.dataset.clone(),
            points: s.samples.unwrap_or(20),
            train_images: 60_000,
            activations: vec!["relu", "sigmoid", "tanh", "gelu"],
            seed: s.seed,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PointResult {
    pub index: usize,
    pub rank_grad_p: usize,
    pub rank_with_brackets: usize,
    /// Largest and median residual of the brackets outside D_x, relative to the size of their terms.
    pub max_residual: f64,
    #[serde(with = "finite")]
    pub median_residual: f64,
    /// Directions v_i whose ends x +- h v_i lie in different linear regions (ReLU models only).
    pub crossed_directions: usize,
    /// Brackets measured (C (C-1) / 2 minus those of crossed directions).
    pub brackets: usize,
    /// Median relative change of the brackets between steps h and 2h (finite-difference accuracy).
    #[serde(with = "finite")]
    pub fd_change: f64,
    #[serde(skip)]
    pub residuals: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelResult {
    pub name: String,
    pub activation: String,
    pub piecewise_linear: bool,
    /// How the fields were evaluated.
    pub arithmetic: String,
    pub weights: String,
    pub test_accuracy: f64,
    /// Points where rank [grad log p; brackets] == rank grad log p.
    pub fraction_involutive: f64,
    pub mean_rank_grad_p: f64,
    pub mean_rank_with_brackets: f64,
    pub median_max_residual: f64,
    pub median_fd_change: f64,
    /// Fraction of directions that crossed a region boundary.
    pub crossed_fraction: f64,
    pub points: Vec<PointResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub h: f64,
    pub tolerance: f64,
    pub dataset: String,
    /// Why the MLP comparison did not run, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub models: Vec<ModelResult>,
}

/// A network of linear layers and activations evaluated in f64 (input normalisation included).
pub struct Dense64 {
    mean: Vec<f64>,
    std: Vec<f64>,
    plane: usize,
    layers: Vec<DenseLayer>,
}

enum DenseLayer {
    Linear {
        w: Vec<f64>,
        b: Vec<f64>,
        nin: usize,
        nout: usize,
    },
    Relu,
    Smooth(Activation),
}

impl Dense64 {
    /// None when the architecture has layers other than flatten, linear and activations.
    pub fn new(arch: &Architecture, weights: &Weights) -> Option<Dense64> {
        let mut layers = Vec::new();
        for layer in &arch.layers {
            layers.push(match layer {
                Layer::Flatten => continue,
                Layer::Linear {
                    name,
                    in_features,
                    out_features,
                } => {
                    let w = weights.get(&format!("{name}.weight"))?;
                    let b = weights.get(&format!("{name}.bias"))?;
                    DenseLayer::Linear {
                        w: w.data.iter().map(|&v| v as f64).collect(),
                        b: b.data.iter().map(|&v| v as f64).collect(),
                        nin: *in_features,
                        nout: *out_features,
                    }
                }
                Layer::Relu => DenseLayer::Relu,
                other => DenseLayer::Smooth(Activation::of(other)?),
            });
        }
        let input = arch.input.image()?;
        let c = input.channels;
        let (mean, std) = match &arch.normalize {
            Some(n) => (
                n.mean.iter().map(|&v| v as f64).collect(),
                n.std.iter().map(|&v| v as f64).collect(),
            ),
            None => (vec![0.0; c], vec![1.0; c]),
        };
        Some(Dense64 {
            mean,
            std,
            plane: input.height * input.width,
            layers,
        })
    }

    /// Logits and J (C x n, row-major), in f64.
    pub fn logits_and_jacobian(&self, x: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let mut a: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(i, &v)| (v - self.mean[i / self.plane]) / self.std[i / self.plane])
            .collect();
        let mut inputs = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let next = match layer {
                DenseLayer::Linear { w, b, nin, nout } => (0..*nout)
                    .map(|o| {
                        b[o] + w[o * nin..(o + 1) * nin]
                            .iter()
                            .zip(&a)
                            .map(|(p, q)| p * q)
                            .sum::<f64>()
                    })
                    .collect(),
                DenseLayer::Relu => a.iter().map(|&v| if v > 0.0 { v } else { 0.0 }).collect(),
                DenseLayer::Smooth(f) => a.iter().map(|&v| f.value(v)).collect(),
            };
            inputs.push(std::mem::replace(&mut a, next));
        }
        let c = a.len();
        // Reverse pass of the C rows of the identity.
        let mut g: Vec<Vec<f64>> = (0..c)
            .map(|r| (0..c).map(|k| f64::from(u8::from(r == k))).collect())
            .collect();
        for (layer, input) in self.layers.iter().zip(&inputs).rev() {
            for row in g.iter_mut() {
                match layer {
                    DenseLayer::Linear { w, nin, .. } => {
                        let mut dx = vec![0.0; *nin];
                        for (o, &go) in row.iter().enumerate() {
                            if go != 0.0 {
                                dx.iter_mut()
                                    .zip(&w[o * nin..(o + 1) * nin])
                                    .for_each(|(d, &wv)| *d += go * wv);
                            }
                        }
                        *row = dx;
                    }
                    DenseLayer::Relu => row.iter_mut().zip(input).for_each(|(d, &v)| {
                        if v <= 0.0 {
                            *d = 0.0
                        }
                    }),
                    DenseLayer::Smooth(f) => row
                        .iter_mut()
                        .zip(input)
                        .for_each(|(d, &v)| *d *= f.derivative(v)),
                }
            }
        }
        let n = x.len();
        let mut jac = Vec::with_capacity(c * n);
        for row in &g {
            jac.extend(row.iter().enumerate().map(|(i, &d)| d / self.std[i / self.plane]));
        }
        (a, jac)
    }
}

/// Where the fields come from: the fast f32 network, or an f64 dense evaluation.
pub enum Evaluator<'a> {
    F32(&'a Network),
    F64(Dense64),
}

impl Evaluator<'_> {
    /// X_i = grad log p_i = J_i - sum_k p_k J_k (C rows of n), and J itself.
    fn fields(&self, x: &[f64]) -> (Vec<Vec<f64>>, Vec<f64>) {
        let (probs, jac): (Vec<f64>, Vec<f64>) = match self {
            Evaluator::F32(net) => {
                let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
                let (logits, j) = logits_and_jacobian(net, &x32);
                (softmax(&logits), j.into_iter().map(|v| v as f64).collect())
            }
            Evaluator::F64(d) => {
                let (logits, j) = d.logits_and_jacobian(x);
                let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = logits.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                (e.iter().map(|v| v / sum).collect(), j)
            }
        };
        let c = probs.len();
        let n = x.len();
        let mut mean = vec![0.0; n];
        for (k, &p) in probs.iter().enumerate() {
            mean.iter_mut()
                .zip(&jac[k * n..(k + 1) * n])
                .for_each(|(m, &j)| *m += p * j);
        }
        let rows = (0..c)
            .map(|i| {
                jac[i * n..(i + 1) * n]
                    .iter()
                    .zip(&mean)
                    .map(|(j, m)| j - m)
                    .collect()
            })
            .collect();
        (rows, jac)
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// An orthonormal basis of the span of `rows`: directions whose singular value exceeds TOL times the
/// largest and also `floor` (an absolute floor, for rows that are residuals of unit vectors).
fn orthonormal_basis(rows: &[Vec<f64>], floor: f64) -> Vec<Vec<f64>> {
    let m = rows.len();
    if m == 0 {
        return Vec::new();
    }
    let mut gram = vec![0.0; m * m];
    for i in 0..m {
        for j in i..m {
            let v = dot(&rows[i], &rows[j]);
            gram[i * m + j] = v;
            gram[j * m + i] = v;
        }
    }
    let (values, vectors) = symmetric_eigen(&gram, m);
    let top = values.first().copied().unwrap_or(0.0).max(0.0);
    let n = rows[0].len();
    let mut basis: Vec<Vec<f64>> = Vec::new();
    for (v, &l) in vectors.iter().zip(&values) {
        if !(l > TOL * TOL * top && l > floor * floor) {
            break;
        }
        let mut u = vec![0.0; n];
        for (vi, r) in v.iter().zip(rows) {
            u.iter_mut().zip(r).for_each(|(a, b)| *a += vi * b);
        }
        // Re-orthogonalise against round-off, then normalise.
        for prev in &basis {
            let d = dot(&u, prev);
            u.iter_mut().zip(prev).for_each(|(a, b)| *a -= d * b);
        }
        let len = dot(&u, &u).sqrt();
        if len > 0.0 {
            u.iter_mut().for_each(|a| *a /= len);
            basis.push(u);
        }
    }
    basis
}

/// Number of singular values of the unit-normalised rows above TOL of the largest.
fn rank_of_unit_rows(rows: &[Vec<f64>]) -> usize {
    let unit: Vec<Vec<f64>> = rows
        .iter()
        .filter_map(|r| {
            let len = dot(r, r).sqrt();
            (len > 0.0).then(|| r.iter().map(|v| v / len).collect())
        })
        .collect();
    orthonormal_basis(&unit, 0.0).len()
}

/// Brackets [X_i, X_j] (i < j) with difference step `h`, each with the size of its two terms
/// |DX_j X_i| + |DX_i X_j|, and how many directions crossed a region boundary.
#[allow(clippy::type_complexity)]
fn brackets(
    eval: &Evaluator,
    x: &[f64],
    fields: &[Vec<f64>],
    h: f64,
    piecewise: bool,
) -> (Vec<Option<(Vec<f64>, f64)>>, usize) {
    let c = fields.len();
    let norms: Vec<f64> = fields.iter().map(|f| dot(f, f).sqrt()).collect();
    // derivs[i][j] = D_{v_i} X_j
    let mut derivs = Vec::with_capacity(c);
    let mut crossed = vec![false; c];
    for i in 0..c {
        if norms[i] == 0.0 {
            derivs.push(None);
            continue;
        }
        let shifted = |sign: f64| -> Vec<f64> {
            x.iter()
                .zip(&fields[i])
                .map(|(a, f)| a + sign * h * f / norms[i])
                .collect()
        };
        let (plus, jp) = eval.fields(&shifted(1.0));
        let (minus, jm) = eval.fields(&shifted(-1.0));
        if piecewise {
            let scale = jp.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let diff = jp.iter().zip(&jm).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
            crossed[i] = diff > 1e-6 * scale;
        }
        let d: Vec<Vec<f64>> = plus
            .iter()
            .zip(&minus)
            .map(|(p, m)| p.iter().zip(m).map(|(a, b)| (a - b) / (2.0 * h)).collect())
            .collect();
        derivs.push(Some(d));
    }
    let mut out = Vec::new();
    for i in 0..c {
        for j in i + 1..c {
            let b = match (&derivs[i], &derivs[j]) {
                (Some(di), Some(dj)) if !crossed[i] && !crossed[j] => {
                    let bracket: Vec<f64> = di[j]
                        .iter()
                        .zip(&dj[i])
                        .map(|(a, b)| norms[i] * a - norms[j] * b)
                        .collect();
                    let scale = norms[i] * dot(&di[j], &di[j]).sqrt() + norms[j] * dot(&dj[i], &dj[i]).sqrt();
                    Some((bracket, scale))
                }
                _ => None,
            };
            out.push(b);
        }
    }
    (out, crossed.iter().filter(|&&c| c).count())
}

fn test_point(eval: &Evaluator, x: &[f64], index: usize, piecewise: bool) -> PointResult {
    let (fields, _) = eval.fields(x);
    let basis = orthonormal_basis(&fields, 0.0);
    let (b1, crossed) = brackets(eval, x, &fields, H, piecewise);
    let (b2, _) = brackets(eval, x, &fields, 2.0 * H, piecewise);
    let mut residuals = Vec::new();
    let mut outside = Vec::new();
    let mut changes = Vec::new();
    for (b, b_wide) in b1.iter().zip(&b2) {
        let Some((b, scale)) = b else { continue };
        if *scale == 0.0 {
            continue;
        }
        let mut r = b.clone();
        for u in &basis {
            let d = dot(&r, u);
            r.iter_mut().zip(u).for_each(|(a, q)| *a -= d * q);
        }
        // Relative to the size of the bracket's two terms, so that a bracket whose terms nearly
        // cancel does not blow round-off up into a residual.
        r.iter_mut().for_each(|a| *a /= scale);
        residuals.push(dot(&r, &r).sqrt());
        outside.push(r);
        if let Some((w, _)) = b_wide {
            let diff: f64 = b
                .iter()
                .zip(w)
                .map(|(a, c)| (a - c) * (a - c))
                .sum::<f64>()
                .sqrt();
            changes.push(diff / scale);
        }
    }
    // rank [X; B] = rank X + rank of the brackets' parts outside span X (unit scale, tolerance TOL).
    let extra = orthonormal_basis(&outside, TOL).len();
    let rank = rank_of_unit_rows(&fields);
    PointResult {
        index,
        rank_grad_p: rank,
        rank_with_brackets: rank + extra,
        max_residual: residuals.iter().copied().fold(0.0, f64::max),
        median_residual: median(&residuals),
        crossed_directions: crossed,
        brackets: residuals.len(),
        fd_change: median(&changes),
        residuals,
    }
}

/// The zoo MLP with every ReLU replaced by `activation`.
pub fn mlp_with(activation: &str) -> Option<Architecture> {
    let mut arch = zoo::mnist_architecture("mlp")?;
    let layer = match activation {
        "relu" => Layer::Relu,
        "sigmoid" => Layer::Sigmoid,
        "tanh" => Layer::Tanh,
        "gelu" => Layer::Gelu,
        "leaky_relu" => Layer::LeakyRelu { negative_slope: 0.01 },
        _ => return None,
    };
    for l in arch.layers.iter_mut() {
        if *l == Layer::Relu {
            *l = layer.clone();
        }
    }
    arch.name = format!("mnist-mlp-{activation}");
    Some(arch)
}

/// One pass of SGD (lr 0.1, batch 60, seed 42) over the first `images` training images.
pub fn train_quickly(
    arch: &Architecture,
    train: &Dataset,
    images: usize,
    progress: &Progress,
) -> Result<Network, ExperimentError> {
    let weights = Network::initial_weights(arch, 42);
    let mut net = Network::new(arch, &weights).map_err(ExperimentError::Invalid)?;
    let n = train.image_len();
    let mut order: Vec<usize> = (0..images.min(train.len())).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(42));
    let mut batch = Vec::with_capacity(60 * n);
    for idx in order.chunks(60) {
        progress.check()?;
        batch.clear();
        for &i in idx {
            batch.extend_from_slice(train.image(i).expect("in range"));
        }
        let labels: Vec<usize> = idx.iter().map(|&i| train.labels[i]).collect();
        let trace = net.forward(&batch, idx.len());
        let (_, dlogits, _) = cross_entropy(trace.logits(), &labels, arch.num_classes());
        let mut grads = net.zero_gradients();
        net.backward(&trace, &dlogits, idx.len(), false, Some(&mut grads));
        net.sgd_step(&grads, 0.1);
        progress.advance(idx.len() as u64);
    }
    Ok(net)
}

#[allow(clippy::too_many_arguments)]
fn summarise(
    name: String,
    activation: &str,
    piecewise: bool,
    arithmetic: String,
    weights: String,
    test_accuracy: f64,
    classes: usize,
    points: Vec<PointResult>,
) -> ModelResult {
    let n = points.len().max(1) as f64;
    let directions: usize = points.iter().map(|p| p.crossed_directions).sum();
    ModelResult {
        name,
        activation: activation.into(),
        piecewise_linear: piecewise,
        arithmetic,
        weights,
        test_accuracy: round(test_accuracy, 4),
        fraction_involutive: round(
            points
                .iter()
                .filter(|p| p.rank_with_brackets == p.rank_grad_p)
                .count() as f64
                / n,
            4,
        ),
        mean_rank_grad_p: round(points.iter().map(|p| p.rank_grad_p as f64).sum::<f64>() / n, 3),
        mean_rank_with_brackets: round(
            points.iter().map(|p| p.rank_with_brackets as f64).sum::<f64>() / n,
            3,
        ),
        median_max_residual: median(&points.iter().map(|p| p.max_residual).collect::<Vec<_>>()),
        median_fd_change: median(&points.iter().map(|p| p.fd_change).collect::<Vec<_>>()),
        crossed_fraction: round(directions as f64 / (n * classes as f64), 4),
        points,
    }
}

/// The experiment opened: the model under study, the test images, the points, and the MLP
/// architectures to train (trained by a shard only when its samples need them). Samples are
/// (model, point) pairs, model by model, the model under study first.
pub struct Involutivity {
    config: Config,
    model: Model,
    test: Dataset,
    picks: Vec<usize>,
    /// The MLPs' architectures, with the MNIST training set; empty when the data are not MNIST-shaped.
    mlps: Vec<(&'static str, Architecture)>,
    train: Option<Dataset>,
    note: Option<String>,
}

/// A model as the report names it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub activation: String,
    pub piecewise_linear: bool,
    pub arithmetic: String,
    pub weights: String,
    pub classes: usize,
}

/// What the report needs besides the samples.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub dataset: String,
    pub note: Option<String>,
    pub points: usize,
    pub models: Vec<ModelInfo>,
}

/// One point of one model: its result and bracket residuals, and for the model's first point its
/// test accuracy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    pub point: PointResult,
    pub residuals: Vec<f64>,
    pub test_accuracy: Option<f64>,
}

impl Involutivity {
    pub fn new(config: &Config) -> Result<Involutivity, ExperimentError> {
        let settings = Settings {
            model: config.model.clone(),
            dataset: config.dataset.clone(),
            ..Settings::default()
        };
        let (model, test) = model_and_data(&settings)?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed);
        let mut all: Vec<usize> = (0..test.len()).collect();
        all.shuffle(&mut rng);
        let picks: Vec<usize> = all.into_iter().take(config.points.max(1)).collect();
        let mnist_shaped =
            (test.channels, test.height, test.width) == (1, 28, 28) && model.num_classes() == 10;
        let (mut mlps, mut note) = (Vec::new(), None);
        if !config.activations.is_empty() && !mnist_shaped {
            note = Some(format!(
                "the MLP comparison (ReLU against smooth activations) is trained on MNIST and needs 1x28x28 data with 10 classes; only {} is tested",
                model.name()
            ));
        } else {
            for &activation in &config.activations {
                let arch = mlp_with(activation)
                    .ok_or_else(|| ExperimentError::Invalid(format!("unknown activation {activation:?}")))?;
                mlps.push((activation, arch));
            }
        }
        let train = if mlps.is_empty() {
            None
        } else {
            Some(Dataset::open("mnist-train")?)
        };
        Ok(Involutivity {
            config: config.clone(),
            model,
            test,
            picks,
            mlps,
            train,
            note,
        })
    }

    fn train_images(&self) -> usize {
        self.config
            .train_images
            .min(self.train.as_ref().map_or(0, |t| t.len()))
    }

    /// Test images plus a little uniform noise (not clamped): an MNIST image's flat background
    /// makes exact ties in the CNN's max-pool windows, which puts the image itself on a region
    /// boundary.
    fn point_of(&self, i: usize) -> Vec<f64> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.config.seed ^ ((i as u64) << 24));
        self.test
            .image(i)
            .expect("in range")
            .iter()
            .map(|&v| v as f64 + rng.random_range(-JITTER..JITTER))
            .collect()
    }
}

impl Sharded for Involutivity {
    const NAME: &'static str = "involutivity";
    type Sample = Sample;
    type Header = Header;
    type Report = Report;

    fn open(settings: &Settings) -> Result<Self, ExperimentError> {
        if let Some(k) = settings.top_k {
            return Err(ExperimentError::Invalid(format!(
                "--top-k {k} does not apply to involutivity: it builds no G; it differentiates every \
                 class gradient grad log p_i, because D_x is the span of all C of them"
            )));
        }
        Involutivity::new(&Config::from(settings))
    }

    fn header(&self) -> Header {
        let mut models = vec![ModelInfo {
            name: self.model.name().to_string(),
            activation: if self.model.arch.is_piecewise_linear() {
                "relu".into()
            } else {
                "smooth".into()
            },
            piecewise_linear: self.model.arch.is_piecewise_linear(),
            arithmetic: "f32 network, differences in f64".into(),
            weights: "shipped".into(),
            classes: self.model.num_classes(),
        }];
        for (activation, arch) in &self.mlps {
            models.push(ModelInfo {
                name: arch.name.clone(),
                activation: activation.to_string(),
                piecewise_linear: arch.is_piecewise_linear(),
                arithmetic: "f64".into(),
                weights: format!(
                    "trained here: one pass over {} MNIST training images, SGD lr 0.1, batch 60, seed 42",
                    self.train_images()
                ),
                classes: arch.num_classes(),
            });
        }
        Header {
            dataset: self.test.name.clone(),
            note: self.note.clone(),
            points: self.picks.len(),
            models,
        }
    }

    fn sample_count(&self) -> usize {
        (1 + self.mlps.len()) * self.picks.len()
    }

    fn classes(&self) -> usize {
        self.model.num_classes()
    }

    /// Never truncated: `open` refuses `--top-k`.
    fn dropped(_: &Sample) -> Option<super::Dropped> {
        None
    }

    fn run(&self, range: Range<usize>, progress: &Progress) -> Result<Vec<Sample>, ExperimentError> {
        let p = self.picks.len();
        let per_point = 1 + 4 * self.model.num_classes() as u64;
        let needed: Vec<usize> = (0..=self.mlps.len())
            .filter(|m| range.start < (m + 1) * p && m * p < range.end)
            .collect();
        let training = needed.iter().filter(|&&m| m > 0).count() as u64 * self.train_images() as u64;
        progress.begin(
            "involutivity: training MLPs, then brackets",
            training + range.len() as u64 * per_point,
        );
        let mut out = Vec::with_capacity(range.len());
        for m in needed {
            let (eval, piecewise, accuracy_of) = if m == 0 {
                (
                    Evaluator::F32(&self.model.network),
                    self.model.arch.is_piecewise_linear(),
                    self.model.accuracy(&self.test),
                )
            } else {
                let arch = &self.mlps[m - 1].1;
                let net = train_quickly(
                    arch,
                    self.train.as_ref().expect("opened with the MLPs"),
                    self.train_images(),
                    progress,
                )?;
                let acc = accuracy(&net, &self.test);
                let dense = Dense64::new(arch, &net.weights()).expect("an MLP is dense");
                (Evaluator::F64(dense), arch.is_piecewise_linear(), acc)
            };
            let ks: Vec<usize> = (range.start.max(m * p)..range.end.min((m + 1) * p)).collect();
            out.extend(par_map(&ks, progress, |&k| {
                let i = self.picks[k - m * p];
                let mut point = test_point(&eval, &self.point_of(i), i, piecewise);
                progress.advance(per_point);
                Sample {
                    residuals: std::mem::take(&mut point.residuals),
                    point,
                    test_accuracy: (k == m * p).then_some(accuracy_of),
                }
            })?);
        }
        Ok(out)
    }

    fn report(header: Header, samples: Vec<Sample>) -> Result<Report, ExperimentError> {
        let mut samples = samples.into_iter();
        let mut models = Vec::new();
        for info in header.models {
            let rows: Vec<Sample> = samples.by_ref().take(header.points).collect();
            let accuracy = rows.first().and_then(|r| r.test_accuracy).unwrap_or(f64::NAN);
            let points = rows
                .into_iter()
                .map(|r| PointResult {
                    residuals: r.residuals,
                    ..r.point
                })
                .collect();
            models.push(summarise(
                info.name,
                &info.activation,
                info.piecewise_linear,
                info.arithmetic,
                info.weights,
                accuracy,
                info.classes,
                points,
            ));
        }
        Ok(Report {
            h: H,
            tolerance: TOL,
            dataset: header.dataset,
            note: header.note,
            models,
        })
    }

    fn summary(report: &Report) -> String {
        report.summary()
    }

    fn figure(report: &Report) -> Canvas {
        report.plot()
    }
}

/// Run every sample here and make the report.
pub fn run(config: &Config, progress: &Progress) -> Result<Report, ExperimentError> {
    super::whole(&Involutivity::new(config)?, progress)
}

impl Report {
    pub fn summary(&self) -> String {
        let mut out = format!(
            "involutivity: Lie brackets of grad log p_i at {} images of {} (h = {:e}, tolerance {:e})\n  {:<22} {:>8} {:>10} {:>14} {:>16} {:>12} {:>9}\n",
            self.models.first().map_or(0, |m| m.points.len()),
            self.dataset,
            self.h,
            self.tolerance,
            "model",
            "test acc",
            "rank grad",
            "rank +brackets",
            "median max resid",
            "involutive",
            "crossed"
        );
        for m in &self.models {
            out += &format!(
                "  {:<22} {:>6.1} % {:>10.2} {:>14.2} {:>16.1e} {:>10.0} % {:>7.1} %\n",
                m.name,
                100.0 * m.test_accuracy,
                m.mean_rank_grad_p,
                m.mean_rank_with_brackets,
                m.median_max_residual,
                100.0 * m.fraction_involutive,
                100.0 * m.crossed_fraction
            );
        }
        if let Some(note) = &self.note {
            out += &format!("  ({note})\n");
        }
        out.trim_end().to_string()
    }

    pub fn plot(&self) -> Canvas {
        let mut c = Canvas::new(1100, 520);
        c.title("Is D_x = span{grad log p_i} closed under Lie brackets?");
        let m = self.models.len();
        let logs: Vec<Vec<f64>> = self
            .models
            .iter()
            .map(|model| {
                model
                    .points
                    .iter()
                    .flat_map(|p| {
                        p.residuals
                            .iter()
                            .map(|&r| if r > 0.0 { r.log10() } else { RESIDUAL_FLOOR })
                    })
                    .collect()
            })
            .collect();
        let lowest = logs.iter().flatten().copied().fold(0.0, f64::min);
        let lo = (lowest - 1.0).floor().max(RESIDUAL_FLOOR);
        let ax = Axes::new(90.0, 60.0, 960.0, 330.0, (-0.5, m as f64 - 0.5), (lo, 1.0));
        let xt: plot::Ticks = self
            .models
            .iter()
            .enumerate()
            .map(|(k, model)| {
                let short = model.name.trim_start_matches("mnist-");
                let label = if k == 0 {
                    format!("{short} (shipped)")
                } else {
                    short.to_string()
                };
                (k as f64, label)
            })
            .collect();
        ax.frame(
            &mut c,
            "relative residual of each bracket outside D_x (log10; every bracket at every point)",
            "",
            "log10 |P_perp [Xi, Xj]| / (|DXj Xi| + |DXi Xj|)",
            &xt,
            &plot::nice_ticks(lo, 1.0, 9),
        );
        ax.reference(&mut c, TOL.log10(), "tolerance", plot::GREY);
        for (k, (model, values)) in self.models.iter().zip(&logs).enumerate() {
            let colour = if model.piecewise_linear {
                PALETTE[0]
            } else {
                PALETTE[3]
            };
            // Jittered dots under the box.
            let pts: Vec<(f64, f64)> = values
                .iter()
                .enumerate()
                .map(|(i, &v)| (k as f64 + ((i * 7919) % 97) as f64 / 97.0 * 0.5 - 0.25, v))
                .collect();
            let pale = [
                ((colour[0] as u16 + 2 * 255) / 3) as u8,
                ((colour[1] as u16 + 2 * 255) / 3) as u8,
                ((colour[2] as u16 + 2 * 255) / 3) as u8,
            ];
            ax.scatter(&mut c, &pts, 1.5, pale);
            ax.boxplot(&mut c, k as f64, 0.2, &BoxStats::of(values), colour);
            let (x, _) = ax.px(k as f64, 0.0);
            let y = ax.top + ax.height + 40.0;
            c.text(
                &format!(
                    "rank {:.1} -> {:.1}",
                    model.mean_rank_grad_p, model.mean_rank_with_brackets
                ),
                x,
                y,
                12.0,
                plot::BLACK,
                Align::Centre,
            );
            c.text(
                &format!("involutive at {:.0} %", 100.0 * model.fraction_involutive),
                x,
                y + 16.0,
                12.0,
                colour,
                Align::Centre,
            );
            c.text(
                &format!(
                    "{} · acc {:.1} %",
                    model.arithmetic.split(',').next().unwrap_or(""),
                    100.0 * model.test_accuracy
                ),
                x,
                y + 32.0,
                11.0,
                plot::GREY,
                Align::Centre,
            );
        }
        c.text(
            "rank: of [grad log p] -> of [grad log p; brackets], mean over points. Blue: piecewise linear (ReLU); red: smooth activation.",
            550.0,
            505.0,
            12.0,
            plot::GREY,
            Align::Centre,
        );
        c
    }
}
