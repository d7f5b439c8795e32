//! `denoise`: the talk's proposal to denoise by projecting onto the data leaf. A clean MNIST test image
//! x0 is made noisy (y), the MNIST training image nearest to y is found (c, a point on the data
//! leaf), and a strict leaf walk (transverse weight 0) goes from c toward y; the walk's point closest
//! to y is the projection z of y onto the data leaf near c. PSNR against x0 of y, of c and of z says
//! whether the projection removes noise, and whether it does better than the nearest clean image alone
//! and than a straight move from c toward y that ends as close to y as the projection did (so any gain
//! over it comes from the direction of the leaf, not from approaching y).
//! Two kinds of noise: Gaussian pixel noise, and kernel noise (kernel steps, the papers' noisy leaves).

use std::ops::Range;

use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::plot::{self, Align, Axes, Canvas, PALETTE};
use super::shard::{finite, Sharded};
use super::{
    count, model_and_data, noisy_counted, par_map, round, sets, spread, Dropped, ExperimentError, Progress,
    Settings,
};
use crate::data::Dataset;
use crate::model::{argmax, Model, Network};
use crate::walk::{l2, Mode, Walk, WalkConfig, DEFAULT_STEP};

pub const NOISES: [&str; 2] = ["gaussian", "kernel"];

/// Test images when `--samples` is not given.
pub const DEFAULT_SAMPLES: usize = 20;

#[derive(Debug, Clone)]
pub struct Config {
    pub model: String,
    /// The test images, evenly spread; the clean candidates are the MNIST training set for MNIST,
    /// else the dataset's other images.
    pub dataset: String,
    pub samples: Option<usize>,
    /// Standard deviation of the Gaussian pixel noise (then clamped to [0, 1]).
    pub sigma: f32,
    /// Kernel steps of the kernel noise.
    pub noise_steps: usize,
    pub step: f32,
    /// Steps of the strict leaf walk from the nearest clean image.
    pub max_steps: usize,
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
            sigma: 0.3,
            noise_steps: 250,
            step: DEFAULT_STEP,
            max_steps: 300,
            seed: s.seed,
            top_k: s.top_k,
        }
    }
}

/// Peak signal-to-noise ratio of `x` against `reference`, pixels in [0, 1]: 10 log10(1 / MSE).
pub fn psnr(x: &[f32], reference: &[f32]) -> f64 {
    let mse = x
        .iter()
        .zip(reference)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum::<f64>()
        / x.len().max(1) as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        -10.0 * mse.log10()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Case {
    pub index: usize,
    pub noise: String,
    /// The candidate (training) image nearest to the noisy one.
    pub nearest: usize,
    #[serde(with = "finite")]
    pub psnr_noisy: f64,
    #[serde(with = "finite")]
    pub psnr_nearest: f64,
    #[serde(with = "finite")]
    pub psnr_projected: f64,
    /// Baseline: the straight line from the nearest clean image toward the noisy one, stopped as
    /// close to the noisy image as the projection got.
    #[serde(with = "finite")]
    pub psnr_straight: f64,
    /// Whether the model classifies each as the original's label.
    pub correct_noisy: bool,
    pub correct_nearest: bool,
    pub correct_projected: bool,
    /// Distances to the noisy image: from the nearest clean image, and from the projection.
    pub nearest_to_noisy: f64,
    pub projected_to_noisy: f64,
    /// Steps of the leaf walk to its point closest to the noisy image.
    pub walk_steps: usize,
    /// original, noisy, nearest, projected
    #[serde(skip)]
    pub images: [Vec<f32>; 4],
}

#[derive(Debug, Clone, Serialize)]
pub struct NoiseSummary {
    pub mean_psnr_noisy: f64,
    pub mean_psnr_nearest: f64,
    pub mean_psnr_projected: f64,
    pub mean_psnr_straight: f64,
    pub mean_walk_steps: f64,
    /// Fraction of images where the projection beats the noisy image, and the nearest clean one.
    pub improved_over_noisy: f64,
    pub improved_over_nearest: f64,
    pub improved_over_straight: f64,
    pub accuracy_noisy: f64,
    pub accuracy_nearest: f64,
    pub accuracy_projected: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model: String,
    pub dataset: String,
    /// Where the nearest clean image is looked for.
    pub candidates: String,
    pub samples: usize,
    pub sigma: f64,
    pub noise_steps: usize,
    pub max_steps: usize,
    pub cases: Vec<Case>,
    pub summary: std::collections::BTreeMap<&'static str, NoiseSummary>,
    #[serde(skip)]
    pub shape: (usize, usize, usize),
}

/// Index of the candidate image nearest to `y` (L2), leaving out `exclude` (the original itself
/// when the candidates are the dataset under study).
fn nearest(train: &Dataset, y: &[f32], exclude: Option<usize>) -> usize {
    let n = train.image_len();
    train
        .images
        .par_chunks(n)
        .enumerate()
        .filter(|(i, _)| Some(*i) != exclude)
        .map(|(i, img)| (l2(img, y), i))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map_or(0, |(_, i)| i)
}

fn predict(network: &Network, x: &[f32]) -> usize {
    argmax(&network.logits(x, 1))
}

#[allow(clippy::too_many_arguments)]
fn denoise_one(
    network: &Network,
    train: (&Dataset, Option<usize>),
    x0: &[f32],
    label: usize,
    index: usize,
    noise: &'static str,
    config: &Config,
    progress: &Progress,
    dropped: &mut Dropped,
) -> Case {
    let (train, exclude) = train;
    let seed = config.seed ^ ((index as u64) << 16);
    let y = match noise {
        "gaussian" => {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let normal = Normal::new(0.0f32, config.sigma).expect("positive sigma");
            x0.iter()
                .map(|&v| (v + normal.sample(&mut rng)).clamp(0.0, 1.0))
                .collect()
        }
        _ => {
            let kernel = (config.noise_steps, config.step, seed);
            let y = noisy_counted(network, x0, kernel, config.top_k, dropped);
            progress.advance(config.noise_steps as u64);
            y
        }
    };
    let k = nearest(train, &y, exclude);
    let c = train.image(k).expect("in range").to_vec();
    let walk_config = WalkConfig {
        step: config.step,
        stop: 0.0,
        max_steps: config.max_steps,
        transverse: Some(0.0),
        top_k: config.top_k,
        ..WalkConfig::defaults(Mode::Leaf)
    };
    let walk = Walk::new(network, walk_config, c.clone(), Some(y.clone())).expect("valid leaf walk");
    let (mut best, mut best_d, mut best_step, mut steps) = (c.clone(), f32::INFINITY, 0, 0);
    for s in walk {
        progress.advance(1);
        dropped.add(s.dropped_mass);
        if s.distance < best_d {
            best_d = s.distance;
            best_step = s.index;
            best = s.x;
        }
        steps = s.index;
        if progress.is_cancelled() {
            break;
        }
    }
    progress.advance((config.max_steps - steps.min(config.max_steps)) as u64);
    let start_d = l2(&c, &y);
    let alpha = if start_d > 0.0 {
        1.0 - best_d / start_d
    } else {
        0.0
    };
    let straight: Vec<f32> = c.iter().zip(&y).map(|(a, b)| a + alpha * (b - a)).collect();
    Case {
        index,
        noise: noise.to_string(),
        nearest: k,
        psnr_noisy: round(psnr(&y, x0), 3),
        psnr_nearest: round(psnr(&c, x0), 3),
        psnr_projected: round(psnr(&best, x0), 3),
        psnr_straight: round(psnr(&straight, x0), 3),
        correct_noisy: predict(network, &y) == label,
        correct_nearest: predict(network, &c) == label,
        correct_projected: predict(network, &best) == label,
        nearest_to_noisy: round(l2(&c, &y) as f64, 4),
        projected_to_noisy: round(best_d as f64, 4),
        walk_steps: best_step,
        images: [x0.to_vec(), y, c, best],
    }
}

/// The experiment opened: the model, the test images and the clean candidates.
pub struct Denoise {
    config: Config,
    model: Model,
    test: Dataset,
    /// The MNIST training set, or None: the test set's other images.
    train: Option<Dataset>,
    jobs: Vec<(usize, &'static str)>,
}

/// What the report needs besides the samples.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub model: String,
    pub dataset: String,
    pub candidates: String,
    pub samples: usize,
    pub sigma: f64,
    pub noise_steps: usize,
    pub max_steps: usize,
    pub shape: (usize, usize, usize),
}

/// One (image, noise) case, with the four images for the figure's first case of each noise.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    pub case: Case,
    pub images: Option<[Vec<f32>; 4]>,
    /// The mass top-k left out of G at every point of the noise and leaf walks (absent when exact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<Dropped>,
}

impl Denoise {
    pub fn new(config: &Config) -> Result<Denoise, ExperimentError> {
        let settings = Settings {
            model: config.model.clone(),
            dataset: config.dataset.clone(),
            ..Settings::default()
        };
        let (model, test) = model_and_data(&settings)?;
        // MNIST's own training set when the test set is MNIST's; otherwise the other images of the
        // dataset itself are the clean candidates.
        let train = if sets::family(&test.name) == Some("MNIST") && test.name.ends_with("test") {
            Some(Dataset::open("mnist-train")?)
        } else {
            if test.len() < 2 {
                return Err(ExperimentError::Invalid(format!(
                    "denoise needs clean images to start from; dataset {} has only one",
                    test.name
                )));
            }
            None
        };
        let picks = spread(test.len(), count(config.samples, DEFAULT_SAMPLES, test.len()));
        let jobs = picks
            .iter()
            .flat_map(|&i| NOISES.iter().map(move |&n| (i, n)))
            .collect();
        let mut config = config.clone();
        config.top_k = config.top_k.filter(|&k| k < model.num_classes());
        Ok(Denoise {
            config,
            model,
            test,
            train,
            jobs,
        })
    }
}

impl Sharded for Denoise {
    const NAME: &'static str = "denoise";
    type Sample = Sample;
    type Header = Header;
    type Report = Report;

    fn open(settings: &Settings) -> Result<Self, ExperimentError> {
        Denoise::new(&Config::from(settings))
    }

    fn header(&self) -> Header {
        Header {
            model: self.model.name().to_string(),
            dataset: self.test.name.clone(),
            candidates: match &self.train {
                Some(t) => t.name.clone(),
                None => format!("the other images of {}", self.test.name),
            },
            samples: self.jobs.len() / NOISES.len(),
            sigma: round(self.config.sigma as f64, 6),
            noise_steps: self.config.noise_steps,
            max_steps: self.config.max_steps,
            shape: (self.test.channels, self.test.height, self.test.width),
        }
    }

    fn sample_count(&self) -> usize {
        self.jobs.len()
    }

    fn classes(&self) -> usize {
        self.model.num_classes()
    }

    fn dropped(sample: &Sample) -> Option<Dropped> {
        sample.dropped
    }

    fn run(&self, range: Range<usize>, progress: &Progress) -> Result<Vec<Sample>, ExperimentError> {
        let config = &self.config;
        progress.begin(
            "denoise: noise, nearest clean image, leaf walk",
            (range.len() * (config.noise_steps + 2 * (config.max_steps + 1)) / NOISES.len()) as u64,
        );
        let ks: Vec<usize> = range.collect();
        par_map(&ks, progress, |&k| {
            let (i, noise) = self.jobs[k];
            let train = match &self.train {
                Some(t) => (t, None),
                None => (&self.test, Some(i)),
            };
            let mut dropped = Dropped::default();
            let mut case = denoise_one(
                &self.model.network,
                train,
                self.test.image(i).expect("in range"),
                self.test.labels[i],
                i,
                noise,
                config,
                progress,
                &mut dropped,
            );
            let images = std::mem::take(&mut case.images);
            Sample {
                case,
                images: (k < NOISES.len()).then_some(images),
                dropped: config.top_k.map(|_| dropped),
            }
        })
    }

    fn report(header: Header, samples: Vec<Sample>) -> Result<Report, ExperimentError> {
        let cases = samples
            .into_iter()
            .map(|s| Case {
                images: s.images.unwrap_or_default(),
                ..s.case
            })
            .collect();
        Ok(report(header, cases))
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
    super::whole(&Denoise::new(config)?, progress)
}

fn report(header: Header, cases: Vec<Case>) -> Report {
    let mut summary = std::collections::BTreeMap::new();
    for noise in NOISES {
        let cs: Vec<&Case> = cases.iter().filter(|c| c.noise == noise).collect();
        let n = cs.len() as f64;
        let mean = |f: &dyn Fn(&Case) -> f64| round(cs.iter().map(|c| f(c)).sum::<f64>() / n, 3);
        let frac = |f: &dyn Fn(&Case) -> bool| round(cs.iter().filter(|c| f(c)).count() as f64 / n, 3);
        summary.insert(
            noise,
            NoiseSummary {
                mean_psnr_noisy: mean(&|c| c.psnr_noisy),
                mean_psnr_nearest: mean(&|c| c.psnr_nearest),
                mean_psnr_projected: mean(&|c| c.psnr_projected),
                mean_psnr_straight: mean(&|c| c.psnr_straight),
                mean_walk_steps: mean(&|c| c.walk_steps as f64),
                improved_over_noisy: frac(&|c| c.psnr_projected > c.psnr_noisy),
                improved_over_nearest: frac(&|c| c.psnr_projected > c.psnr_nearest),
                improved_over_straight: frac(&|c| c.psnr_projected > c.psnr_straight),
                accuracy_noisy: frac(&|c| c.correct_noisy),
                accuracy_nearest: frac(&|c| c.correct_nearest),
                accuracy_projected: frac(&|c| c.correct_projected),
            },
        );
    }
    Report {
        model: header.model,
        dataset: header.dataset,
        candidates: header.candidates,
        samples: header.samples,
        sigma: header.sigma,
        noise_steps: header.noise_steps,
        max_steps: header.max_steps,
        cases,
        summary,
        shape: header.shape,
    }
}

impl Report {
    fn noise_name(&self, noise: &str) -> String {
        match noise {
            "gaussian" => format!("Gaussian pixel noise (sigma {})", self.sigma),
            _ => format!("kernel noise ({} kernel steps)", self.noise_steps),
        }
    }

    pub fn summary(&self) -> String {
        let mut out = format!(
            "denoise: {} images of {} ({}), nearest clean image among {}; PSNR (dB) against the clean original, mean\n",
            self.samples, self.dataset, self.model, self.candidates
        );
        for noise in NOISES {
            let s = &self.summary[noise];
            out += &format!(
                "  {:<36} noisy {:>5.2}  nearest clean {:>5.2}  leaf projection {:>5.2}  straight-line baseline {:>5.2}\n    (projection better than noisy {:.0} %, than nearest {:.0} %, than straight {:.0} %; accuracy noisy / nearest / projection {:.0} / {:.0} / {:.0} %; {:.0} leaf steps)\n",
                self.noise_name(noise),
                s.mean_psnr_noisy,
                s.mean_psnr_nearest,
                s.mean_psnr_projected,
                s.mean_psnr_straight,
                100.0 * s.improved_over_noisy,
                100.0 * s.improved_over_nearest,
                100.0 * s.improved_over_straight,
                100.0 * s.accuracy_noisy,
                100.0 * s.accuracy_nearest,
                100.0 * s.accuracy_projected,
                s.mean_walk_steps
            );
        }
        out.trim_end().to_string()
    }

    pub fn plot(&self) -> Canvas {
        let mut c = Canvas::new(1180, 470);
        c.title(&format!(
            "Denoising by projection onto the data leaf ({} images of {}, {})",
            self.samples, self.dataset, self.model
        ));
        let hi = self
            .summary
            .values()
            .flat_map(|s| {
                [
                    s.mean_psnr_noisy,
                    s.mean_psnr_nearest,
                    s.mean_psnr_projected,
                    s.mean_psnr_straight,
                ]
            })
            .fold(0.0, f64::max);
        // Head room above the bars for the legend.
        let hi = (hi / 5.0).ceil() * 5.0 + 10.0;
        let ax = Axes::new(80.0, 70.0, 440.0, 310.0, (-0.5, 1.6), (0.0, hi));
        let xt: plot::Ticks = NOISES
            .iter()
            .enumerate()
            .map(|(k, n)| {
                (
                    k as f64,
                    if *n == "gaussian" {
                        format!("Gaussian σ={}", self.sigma)
                    } else {
                        format!("kernel, {} steps", self.noise_steps)
                    },
                )
            })
            .collect();
        ax.frame(
            &mut c,
            "mean PSNR against the clean original",
            "noise",
            "PSNR (dB)",
            &xt,
            &plot::nice_ticks(0.0, hi, 6),
        );
        let bars = [
            "noisy",
            "nearest clean",
            "leaf projection",
            "straight line (baseline)",
        ];
        for (k, noise) in NOISES.iter().enumerate() {
            let s = &self.summary[noise];
            let values = [
                s.mean_psnr_noisy,
                s.mean_psnr_nearest,
                s.mean_psnr_projected,
                s.mean_psnr_straight,
            ];
            for (b, v) in values.iter().enumerate() {
                let x = k as f64 - 0.3 + 0.2 * b as f64;
                let (x0, y0) = ax.px(x - 0.08, *v);
                let (x1, y1) = ax.px(x + 0.08, 0.0);
                c.fill_rect(x0, y0, x1, y1, PALETTE[b]);
                c.text(
                    &format!("{v:.1}"),
                    (x0 + x1) / 2.0,
                    y0 - 9.0,
                    12.0,
                    plot::BLACK,
                    Align::Centre,
                );
            }
        }
        let entries: Vec<(String, plot::Colour)> = bars
            .iter()
            .enumerate()
            .map(|(b, l)| (l.to_string(), PALETTE[b]))
            .collect();
        c.legend(ax.left + 12.0, ax.top + 18.0, &entries, 13.0);
        // Examples: the first image with each noise.
        let heads = ["original", "noisy", "nearest clean", "projection"];
        let scale = 3u32;
        let tile = self.shape.1.max(self.shape.2) as f32 * scale as f32;
        let left = 600.0;
        for (row, noise) in NOISES.iter().enumerate() {
            let Some(case) = self.cases.iter().find(|c| c.noise == *noise) else {
                continue;
            };
            let y = 95.0 + row as f32 * (tile + 75.0);
            c.text(
                &self.noise_name(noise),
                left + 2.0 * (tile + 30.0),
                y - 22.0,
                13.0,
                plot::BLACK,
                Align::Centre,
            );
            let psnrs = [f64::NAN, case.psnr_noisy, case.psnr_nearest, case.psnr_projected];
            for (k, img) in case.images.iter().enumerate() {
                let x = left + k as f32 * (tile + 30.0);
                c.image(img, self.shape, x, y, scale);
                let caption = if k == 0 {
                    heads[0].to_string()
                } else {
                    format!("{} {:.1} dB", heads[k], psnrs[k])
                };
                c.text(
                    &caption,
                    x + tile / 2.0,
                    y + tile + 12.0,
                    12.0,
                    plot::BLACK,
                    Align::Centre,
                );
            }
        }
        c
    }
}
