//! `denoise`: the talk's proposal to denoise by projecting onto the data leaf. A clean MNIST test image
//! x0 is made noisy (y), the MNIST training image nearest to y is found (c, a point on the data
//! leaf), and a strict leaf walk (transverse weight 0) goes from c toward y; the walk's point closest
//! to y is the projection z of y onto the data leaf near c. PSNR against x0 of y, of c and of z says
//! whether the projection removes noise, and whether it does better than the nearest clean image alone
//! and than a straight move from c toward y that ends as close to y as the projection did (so any gain
//! over it comes from the direction of the leaf, not from approaching y).
//! Two kinds of noise: Gaussian pixel noise, and kernel noise (kernel steps, the papers' noisy leaves).

use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;
use serde::Serialize;

use super::plot::{self, Align, Axes, Canvas, PALETTE};
use super::{mnist_model, par_map, round, spread, ExperimentError, Progress, Settings};
use crate::data::Dataset;
use crate::model::{argmax, Network};
use crate::walk::{l2, noisy, Mode, Walk, WalkConfig, DEFAULT_STEP};

pub const NOISES: [&str; 2] = ["gaussian", "kernel"];

#[derive(Debug, Clone)]
pub struct Config {
    pub model: String,
    /// MNIST test images, evenly spread.
    pub samples: usize,
    /// Standard deviation of the Gaussian pixel noise (then clamped to [0, 1]).
    pub sigma: f32,
    /// Kernel steps of the kernel noise.
    pub noise_steps: usize,
    pub step: f32,
    /// Steps of the strict leaf walk from the nearest clean image.
    pub max_steps: usize,
    pub seed: u64,
}

impl From<&Settings> for Config {
    fn from(s: &Settings) -> Config {
        Config {
            model: s.model.clone(),
            samples: s.samples.unwrap_or(20),
            sigma: 0.3,
            noise_steps: 250,
            step: DEFAULT_STEP,
            max_steps: 300,
            seed: s.seed,
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

#[derive(Debug, Clone, Serialize)]
pub struct Case {
    pub index: usize,
    pub noise: &'static str,
    /// The training image nearest to the noisy one.
    pub nearest: usize,
    pub psnr_noisy: f64,
    pub psnr_nearest: f64,
    pub psnr_projected: f64,
    /// Baseline: the straight line from the nearest clean image toward the noisy one, stopped as
    /// close to the noisy image as the projection got.
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
    pub samples: usize,
    pub sigma: f64,
    pub noise_steps: usize,
    pub max_steps: usize,
    pub cases: Vec<Case>,
    pub summary: std::collections::BTreeMap<&'static str, NoiseSummary>,
}

/// Index of the training image nearest to `y` (L2).
fn nearest(train: &Dataset, y: &[f32]) -> usize {
    let n = train.image_len();
    train
        .images
        .par_chunks(n)
        .enumerate()
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
    train: &Dataset,
    x0: &[f32],
    label: usize,
    index: usize,
    noise: &'static str,
    config: &Config,
    progress: &Progress,
) -> Case {
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
            let y = noisy(network, x0, config.noise_steps, config.step, seed).expect("valid kernel walk");
            progress.advance(config.noise_steps as u64);
            y
        }
    };
    let k = nearest(train, &y);
    let c = train.image(k).expect("in range").to_vec();
    let walk_config = WalkConfig {
        step: config.step,
        stop: 0.0,
        max_steps: config.max_steps,
        transverse: Some(0.0),
        ..WalkConfig::defaults(Mode::Leaf)
    };
    let walk = Walk::new(network, walk_config, c.clone(), Some(y.clone())).expect("valid leaf walk");
    let (mut best, mut best_d, mut best_step, mut steps) = (c.clone(), f32::INFINITY, 0, 0);
    for s in walk {
        progress.advance(1);
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
        noise,
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

pub fn run(config: &Config, progress: &Progress) -> Result<Report, ExperimentError> {
    let (model, test) = mnist_model(&config.model)?;
    let train = Dataset::open("mnist-train")?;
    let picks = spread(test.len(), config.samples.max(1));
    let jobs: Vec<(usize, &'static str)> = picks
        .iter()
        .flat_map(|&i| NOISES.iter().map(move |&n| (i, n)))
        .collect();
    progress.begin(
        "denoise: noise, nearest clean image, leaf walk",
        (picks.len() * (config.noise_steps + 2 * (config.max_steps + 1))) as u64,
    );
    let cases = par_map(&jobs, progress, |&(i, noise)| {
        let x0 = test.image(i).expect("in range");
        denoise_one(
            &model.network,
            &train,
            x0,
            test.labels[i],
            i,
            noise,
            config,
            progress,
        )
    })?;
    progress.check()?;
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
    Ok(Report {
        model: model.name().to_string(),
        samples: picks.len(),
        sigma: round(config.sigma as f64, 6),
        noise_steps: config.noise_steps,
        max_steps: config.max_steps,
        cases,
        summary,
    })
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
            "denoise: {} MNIST test images ({}); PSNR (dB) against the clean original, mean\n",
            self.samples, self.model
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

    pub fn plot(&self) -> image::RgbaImage {
        let mut c = Canvas::new(1180, 470);
        c.title(&format!(
            "Denoising by projection onto the data leaf ({} MNIST test images, {})",
            self.samples, self.model
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
        let tile = 28.0 * scale as f32;
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
                c.image(img, (1, 28, 28), x, y, scale);
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
        c.into_image()
    }
}
