//! `off-leaf`: how the prediction survives a move of length t away from a test image (a) across
//! leaves, in ker G, (b) along the data leaf, on the top eigenvector of G with the sign that lowers
//! the true class, (c) along a fixed random direction. (a) and (b) re-project every step; (c) is a
//! straight line. The papers' claim: moving orthogonally to the data leaf adds noise but keeps the
//! accuracy high, while moving along it changes the class.

use std::ops::Range;

use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use super::plot::{self, Align, Axes, Canvas, PALETTE};
use super::shard::Sharded;
use super::{count, model_and_data, par_map, round, spread, Dropped, ExperimentError, Progress, Settings};
use crate::data::Dataset;
use crate::geometry::{norm, GeometryOptions, LocalGeometry};
use crate::model::{argmax, Model, Network};
use crate::walk::{l2, Mode, Walk, WalkConfig, DEFAULT_STEP};

/// Test images when `--samples` is not given.
pub const DEFAULT_SAMPLES: usize = 40;

#[derive(Debug, Clone)]
pub struct Config {
    pub model: String,
    pub dataset: String,
    /// Test images, evenly spread over the dataset.
    pub samples: Option<usize>,
    /// Path lengths t in pixel units (L2 over pixels in [0, 1]), ascending.
    pub distances: Vec<f32>,
    /// Step length of the re-projected walks.
    pub step: f32,
    pub seed: u64,
    /// G from the K most probable classes (`None`: exact).
    pub top_k: Option<usize>,
}

impl From<&Settings> for Config {
    fn from(s: &Settings) -> Config {
        Config {
            model: s.model.clone(),
            dataset: s.dataset.clone(),
            samples: s.samples,
            distances: vec![0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0],
            step: DEFAULT_STEP,
            seed: s.seed,
            top_k: s.top_k,
        }
    }
}

/// One number per distance for each direction.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct PerDirection {
    pub kernel: Vec<f64>,
    pub leaf: Vec<f64>,
    pub random: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model: String,
    pub dataset: String,
    pub samples: usize,
    pub step: f64,
    /// Path length t of each column (pixel units).
    pub distances: Vec<f32>,
    /// Fraction of the images still classified as their label after moving t.
    pub accuracy: PerDirection,
    /// Mean L2 distance (pixels) from the start actually reached (clamping to [0, 1] and the walks'
    /// curvature make it shorter than t).
    pub displacement: PerDirection,
    /// Mean probability of the true class.
    pub true_class_prob: PerDirection,
    /// The first sample at every distance, for the figure: kernel, leaf, random rows.
    #[serde(skip)]
    pub example: Vec<Vec<Vec<f32>>>,
    #[serde(skip)]
    pub example_labels: Vec<Vec<(usize, f64)>>,
    /// (channels, height, width) of the images.
    #[serde(skip)]
    pub shape: (usize, usize, usize),
}

/// The figure's example: the images and the (prediction, probability) at every distance, per
/// direction.
type Example = ([Vec<Vec<f32>>; 3], [Vec<(usize, f64)>; 3]);

/// What one image gives at every distance, per direction (kernel, leaf, random).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    /// 1 when still classified as the label, else 0.
    correct: [Vec<f64>; 3],
    displacement: [Vec<f64>; 3],
    true_prob: [Vec<f64>; 3],
    /// The images and (prediction, probability) at every distance, kept for the first sample only
    /// (the figure's example).
    example: Option<Example>,
    /// The mass top-k left out of G at every point of the kernel and leaf walks (absent when exact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dropped: Option<Dropped>,
}

/// Step counts at which each distance is reached.
fn checkpoints(config: &Config) -> Vec<usize> {
    config
        .distances
        .iter()
        .map(|t| (t / config.step).round() as usize)
        .collect()
}

fn probs_of(network: &Network, x: &[f32]) -> Vec<f64> {
    crate::geometry::softmax(&network.logits(x, 1))
}

/// Whether moving along `u` from `x` lowers log p_y to first order: u . grad log p_y > 0 means
/// moving by +u raises it. Exact G: from J. Top-k G keeps J's rows of its K classes only: from
/// grad log p_y = J_y - J^T p when y is one of them, else from a central difference of log p_y
/// along u (two forward passes; the sign is all that is used).
fn raises_label(network: &Network, geo: &LocalGeometry, x: &[f32], u: &[f64], y: usize) -> bool {
    if geo.is_exact() {
        return crate::geometry::dot(u, &grad_log_p(geo, y)) > 0.0;
    }
    if let Some(row) = geo.classes.iter().position(|&c| c == y) {
        let n = geo.n;
        let slope: f64 = geo.jacobian[row * n..(row + 1) * n]
            .iter()
            .zip(&geo.mean_gradient)
            .zip(u)
            .map(|((&j, m), ui)| (j as f64 - m) * ui)
            .sum();
        return slope > 0.0;
    }
    const H: f64 = 1e-3;
    let moved = |sign: f64| -> f64 {
        let z: Vec<f32> = x
            .iter()
            .zip(u)
            .map(|(&a, b)| (a as f64 + sign * H * b) as f32)
            .collect();
        probs_of(network, &z)[y].max(1e-300).ln()
    };
    moved(1.0) > moved(-1.0)
}

/// grad log p_y = J_y - sum_k p_k J_k at the geometry's point (exact G: every row of J).
fn grad_log_p(geo: &LocalGeometry, y: usize) -> Vec<f64> {
    let n = geo.n;
    let mut g: Vec<f64> = geo.jacobian[y * n..(y + 1) * n]
        .iter()
        .map(|&v| v as f64)
        .collect();
    for (k, &p) in geo.probs.iter().enumerate() {
        g.iter_mut()
            .zip(&geo.jacobian[k * n..(k + 1) * n])
            .for_each(|(a, &j)| *a -= p * j as f64);
    }
    g
}

fn run_one(
    network: &Network,
    x0: &[f32],
    label: usize,
    config: &Config,
    seed: u64,
    progress: &Progress,
) -> Sample {
    let marks = checkpoints(config);
    let steps = *marks.last().unwrap_or(&0);
    let mut out = Sample {
        correct: Default::default(),
        displacement: Default::default(),
        true_prob: Default::default(),
        example: Some(Default::default()),
        dropped: config.top_k.map(|_| Dropped::default()),
    };
    let mut dropped = Dropped::default();
    let mut record = |dir: usize, x: &[f32], probs: &[f64]| {
        let pred = argmax(&probs.iter().map(|&p| p as f32).collect::<Vec<_>>());
        out.correct[dir].push(f64::from(u8::from(pred == label)));
        out.displacement[dir].push(l2(x, x0) as f64);
        out.true_prob[dir].push(probs[label]);
        if let Some((images, predictions)) = out.example.as_mut() {
            images[dir].push(x.to_vec());
            predictions[dir].push((pred, probs[pred]));
        }
    };

    // (a) Kernel: the library's kernel walk (a fixed Gaussian direction projected onto ker G each step).
    let kernel = WalkConfig {
        step: config.step,
        max_steps: steps,
        seed,
        top_k: config.top_k,
        ..WalkConfig::defaults(Mode::Kernel)
    };
    let walk = Walk::new(network, kernel, x0.to_vec(), None).expect("valid kernel walk");
    for s in walk {
        if progress.is_cancelled() {
            return out;
        }
        dropped.add(s.dropped_mass);
        if marks.contains(&s.index) {
            for _ in marks.iter().filter(|&&m| m == s.index) {
                record(0, &s.x, &s.probs);
            }
        }
        progress.advance(1);
    }

    // (b) Leaf: the top eigenvector of G at the current point, signed to lower log p_label.
    let mut x = x0.to_vec();
    for k in 0..=steps {
        if progress.is_cancelled() {
            return out;
        }
        let geo = LocalGeometry::with(
            network,
            &x,
            GeometryOptions {
                top_k: config.top_k,
                basis: true,
            },
        );
        dropped.add(geo.dropped_mass);
        for _ in marks.iter().filter(|&&m| m == k) {
            record(1, &x, &geo.probs);
        }
        progress.advance(1);
        if k == steps {
            break;
        }
        let Some(u) = geo.leaf_basis.first() else { continue };
        let down = raises_label(network, &geo, &x, u, label);
        let sign = if down { -1.0 } else { 1.0 };
        for (xi, ui) in x.iter_mut().zip(u) {
            *xi = (*xi as f64 + sign * config.step as f64 * ui).clamp(0.0, 1.0) as f32;
        }
    }

    // (c) Random: the same Gaussian direction as the kernel walk, unprojected: x0 + t d / |d|.
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let d: Vec<f64> = (0..x0.len()).map(|_| StandardNormal.sample(&mut rng)).collect();
    let len = norm(&d);
    for &t in &config.distances {
        let x: Vec<f32> = x0
            .iter()
            .zip(&d)
            .map(|(&a, &b)| (a as f64 + t as f64 * b / len).clamp(0.0, 1.0) as f32)
            .collect();
        let probs = probs_of(network, &x);
        record(2, &x, &probs);
    }
    if out.dropped.is_some() {
        out.dropped = Some(dropped);
    }
    out
}

/// The experiment opened: the model, the dataset and the images to move from.
pub struct OffLeaf {
    config: Config,
    model: Model,
    data: Dataset,
    indices: Vec<usize>,
}

/// What the report needs besides the samples.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub model: String,
    pub dataset: String,
    pub shape: (usize, usize, usize),
    pub step: f64,
    pub distances: Vec<f32>,
}

impl OffLeaf {
    pub fn new(config: &Config) -> Result<OffLeaf, ExperimentError> {
        if config.distances.is_empty() || config.distances.windows(2).any(|w| w[1] < w[0]) {
            return Err(ExperimentError::Invalid("distances must be ascending".into()));
        }
        let settings = Settings {
            model: config.model.clone(),
            dataset: config.dataset.clone(),
            ..Settings::default()
        };
        let (model, data) = model_and_data(&settings)?;
        let indices = spread(data.len(), count(config.samples, DEFAULT_SAMPLES, data.len()));
        let mut config = config.clone();
        config.top_k = config.top_k.filter(|&k| k < model.num_classes());
        Ok(OffLeaf {
            config,
            model,
            data,
            indices,
        })
    }
}

impl Sharded for OffLeaf {
    const NAME: &'static str = "off-leaf";
    type Sample = Sample;
    type Header = Header;
    type Report = Report;

    fn open(settings: &Settings) -> Result<Self, ExperimentError> {
        OffLeaf::new(&Config::from(settings))
    }

    fn header(&self) -> Header {
        Header {
            model: self.model.name().to_string(),
            dataset: self.data.name.clone(),
            shape: (self.data.channels, self.data.height, self.data.width),
            step: round(self.config.step as f64, 6),
            distances: self.config.distances.clone(),
        }
    }

    fn sample_count(&self) -> usize {
        self.indices.len()
    }

    fn classes(&self) -> usize {
        self.model.num_classes()
    }

    fn dropped(sample: &Sample) -> Option<Dropped> {
        sample.dropped
    }

    fn run(&self, range: Range<usize>, progress: &Progress) -> Result<Vec<Sample>, ExperimentError> {
        let config = &self.config;
        let steps = checkpoints(config).last().copied().unwrap_or(0) as u64;
        progress.begin(
            "off-leaf: kernel and leaf walks",
            range.len() as u64 * 2 * (steps + 1),
        );
        let jobs: Vec<usize> = range.collect();
        par_map(&jobs, progress, |&k| {
            let i = self.indices[k];
            let x0 = self.data.image(i).expect("index in range");
            let mut sample = run_one(
                &self.model.network,
                x0,
                self.data.labels[i],
                config,
                config.seed.wrapping_add(i as u64),
                progress,
            );
            if k > 0 {
                sample.example = None;
            }
            sample
        })
    }

    fn report(header: Header, samples: Vec<Sample>) -> Result<Report, ExperimentError> {
        let accuracy = mean_curves(&samples, |s| &s.correct);
        let displacement = mean_curves(&samples, |s| &s.displacement);
        let true_class_prob = mean_curves(&samples, |s| &s.true_prob);
        let (example, example_labels) = samples[0].example.clone().unwrap_or_default();
        Ok(Report {
            model: header.model,
            dataset: header.dataset,
            samples: samples.len(),
            step: header.step,
            distances: header.distances,
            accuracy,
            displacement,
            true_class_prob,
            example: example.to_vec(),
            example_labels: example_labels.to_vec(),
            shape: header.shape,
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
    super::whole(&OffLeaf::new(config)?, progress)
}

/// Means over the samples, per direction and distance.
fn mean_curves(samples: &[Sample], pick: impl Fn(&Sample) -> &[Vec<f64>; 3]) -> PerDirection {
    let n = samples.len() as f64;
    let len = pick(&samples[0])[0].len();
    let curve = |dir: usize| -> Vec<f64> {
        (0..len)
            .map(|k| round(samples.iter().map(|s| pick(s)[dir][k]).sum::<f64>() / n, 4))
            .collect()
    };
    PerDirection {
        kernel: curve(0),
        leaf: curve(1),
        random: curve(2),
    }
}

impl Report {
    pub fn summary(&self) -> String {
        let last = self.distances.len() - 1;
        let pct = |v: &[f64]| format!("{:.1} %", 100.0 * v[last]);
        format!(
            "off-leaf on {} images of {} ({}), moving t = {} pixel units:\n  \
             accuracy along the kernel {}, along the leaf {}, along a random direction {}\n  \
             (mean distance actually moved: kernel {:.2}, leaf {:.2}, random {:.2})",
            self.samples,
            self.dataset,
            self.model,
            self.distances[last],
            pct(&self.accuracy.kernel),
            pct(&self.accuracy.leaf),
            pct(&self.accuracy.random),
            self.displacement.kernel[last],
            self.displacement.leaf[last],
            self.displacement.random[last],
        )
    }

    pub fn plot(&self) -> Canvas {
        let cols = self.distances.len();
        let scale = 2u32;
        let tile = self.shape.1.max(self.shape.2) as f32 * scale as f32;
        let grid_left = 560.0;
        let grid_w = cols as f32 * (tile + 8.0);
        let mut c = Canvas::new((grid_left + 110.0 + grid_w) as u32, 470);
        c.title(&format!(
            "Off the data leaf: accuracy after moving t ({} images of {}, {})",
            self.samples, self.dataset, self.model
        ));
        let tmax = *self.distances.last().unwrap_or(&1.0) as f64;
        let ax = Axes::new(75.0, 60.0, 440.0, 330.0, (0.0, tmax), (0.0, 1.0));
        let xt = plot::nice_ticks(0.0, tmax, 6);
        let yt = plot::nice_ticks(0.0, 1.0, 5);
        ax.frame(
            &mut c,
            "",
            "distance moved t (pixel units, L2)",
            "accuracy",
            &xt,
            &yt,
        );
        let series = [
            ("kernel (across leaves)", &self.accuracy.kernel, PALETTE[0]),
            ("leaf (top eigenvector of G)", &self.accuracy.leaf, PALETTE[3]),
            ("random direction", &self.accuracy.random, PALETTE[2]),
        ];
        // Random last and dashed: it runs on top of the kernel curve when they agree.
        for (k, (_, values, colour)) in series.iter().enumerate() {
            let pts: Vec<(f64, f64)> = self
                .distances
                .iter()
                .map(|&t| t as f64)
                .zip(values.iter().copied())
                .collect();
            if k == 2 {
                ax.dashed_series(&mut c, &pts, 2.5, *colour);
            } else {
                ax.series(&mut c, &pts, 3.0, *colour, true);
            }
        }
        let entries: Vec<(String, plot::Colour)> =
            series.iter().map(|(l, _, c)| (l.to_string(), *c)).collect();
        c.legend(ax.left + 225.0, ax.top + 150.0, &entries, 13.0);
        // The first sample at every distance, one row per direction.
        let names = ["kernel", "leaf", "random"];
        let top = 70.0;
        c.text(
            "first test image at each t (prediction, probability)",
            grid_left + 110.0 + grid_w / 2.0,
            top - 12.0,
            13.0,
            plot::BLACK,
            Align::Centre,
        );
        for (row, images) in self.example.iter().enumerate() {
            let y = top + row as f32 * (tile + 44.0) + 10.0;
            c.text(
                names[row],
                grid_left + 100.0,
                y + tile / 2.0,
                14.0,
                series[row].2,
                Align::Right,
            );
            for (k, img) in images.iter().enumerate() {
                let x = grid_left + 110.0 + k as f32 * (tile + 8.0);
                c.image(img, self.shape, x, y, scale);
                let (pred, p) = self.example_labels[row][k];
                c.text(
                    &format!("{pred} ({p:.2})"),
                    x + tile / 2.0,
                    y + tile + 10.0,
                    11.0,
                    plot::BLACK,
                    Align::Centre,
                );
                if row == 0 {
                    c.text(
                        &format!("t={}", self.distances[k]),
                        x + tile / 2.0,
                        y - 8.0,
                        11.0,
                        plot::GREY,
                        Align::Centre,
                    );
                }
            }
        }
        c
    }
}
