//! `leaves`: leaf walks between pairs of clean test images, between pairs of noisy images (noise made
//! by kernel steps, so each sits on another leaf), and from a clean image to a noisy one. If the clean
//! images share one leaf and each noisy image sits on its own, a walk along the leaves closes the
//! clean-to-clean gap and stalls on the others. Each pair is walked twice: with the default transverse
//! weight (README, "The leaf walk and its transverse weight") and strictly on the leaf (weight 0).

use std::collections::BTreeMap;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::plot::{self, median, Axes, Canvas, PALETTE};
use super::shard::Sharded;
use super::{
    model_and_data, noisy_counted, par_map, random_pairs, round, Dropped, ExperimentError, Progress, Settings,
};
use crate::data::Dataset;
use crate::model::{Model, Network};
use crate::walk::{Mode, Walk, WalkConfig, DEFAULT_STEP, DEFAULT_STOP};

/// The pair kinds, start -> target.
pub const KINDS: [&str; 3] = ["clean-clean", "noisy-noisy", "clean-noisy"];
/// The two leaf walks: default transverse weight, and strictly on the leaf.
pub const VARIANTS: [&str; 2] = ["default", "strict"];

#[derive(Debug, Clone)]
pub struct Config {
    pub model: String,
    pub dataset: String,
    /// Pairs of distinct images of the dataset, drawn with `seed` (at most as many as images).
    pub pairs: usize,
    /// Kernel steps that make an image noisy (the papers' noisy leaves use 250).
    pub noise_steps: usize,
    pub step: f32,
    pub stop: f32,
    /// Steps each leaf walk takes at most.
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
            pairs: s.samples.unwrap_or(10),
            noise_steps: 250,
            step: DEFAULT_STEP,
            stop: DEFAULT_STOP,
            max_steps: 250,
            seed: s.seed,
            top_k: s.top_k,
        }
    }
}

/// One leaf walk of one pair.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WalkRecord {
    pub start_distance: f64,
    pub final_distance: f64,
    /// The closest the walk came to its target.
    pub min_distance: f64,
    pub steps: usize,
    pub reached: bool,
    /// Mean fraction of each move that lay outside D_x.
    pub mean_off_leaf: f64,
    /// Distance to the target after every step, for the figure.
    #[serde(skip)]
    pub curve: Vec<f32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pair {
    pub start: usize,
    pub target: usize,
    /// variant -> kind -> walk.
    pub walks: BTreeMap<String, BTreeMap<String, WalkRecord>>,
}

/// One pair as a shard keeps it: the pair, and each walk's distance curve (variant-major, in
/// `VARIANTS` x `KINDS` order), which the report's JSON leaves out but the figure draws.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    pub pair: Pair,
    pub curves: Vec<Vec<f32>>,
    /// The mass top-k left out of G at every point of the pair's noise and leaf walks (absent when
    /// exact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<Dropped>,
}

/// Summary of one kind of pair under one walk.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Pairs where this kind closed a smaller fraction of its gap than clean-clean did (final /
    /// start distance above clean-clean's for the same two test images); 0 for clean-clean itself.
    pub behind_clean_clean: f64,
    pub mean_start_distance: f64,
    pub median_final_distance: f64,
    /// Median over pairs of final / start distance.
    pub median_final_ratio: f64,
    pub reached_fraction: f64,
    pub mean_steps: f64,
    pub mean_off_leaf: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model: String,
    pub dataset: String,
    pub pairs: Vec<Pair>,
    pub noise_steps: usize,
    pub step: f64,
    pub stop: f64,
    pub max_steps: usize,
    /// variant -> kind -> summary.
    pub summary: BTreeMap<&'static str, BTreeMap<&'static str, Summary>>,
}

fn leaf_walk(
    network: &Network,
    config: &Config,
    transverse: Option<f32>,
    (start, target): (&[f32], &[f32]),
    progress: &Progress,
    dropped: &mut Dropped,
) -> WalkRecord {
    let walk_config = WalkConfig {
        step: config.step,
        stop: config.stop,
        max_steps: config.max_steps,
        transverse,
        top_k: config.top_k,
        ..WalkConfig::defaults(Mode::Leaf)
    };
    let mut walk =
        Walk::new(network, walk_config, start.to_vec(), Some(target.to_vec())).expect("valid leaf walk");
    let mut curve = Vec::new();
    let mut off = 0.0f64;
    for s in walk.by_ref() {
        curve.push(s.distance);
        off += s.off_leaf as f64;
        dropped.add(s.dropped_mass);
        progress.advance(1);
        if progress.is_cancelled() {
            break;
        }
    }
    let steps = curve.len().saturating_sub(1);
    // Walks that arrive early hand their unused budget to the progress bar.
    progress.advance((config.max_steps - steps.min(config.max_steps)) as u64);
    WalkRecord {
        start_distance: round(curve[0] as f64, 4),
        final_distance: round(*curve.last().expect("a walk yields its start") as f64, 4),
        min_distance: round(curve.iter().copied().fold(f32::INFINITY, f32::min) as f64, 4),
        steps,
        reached: walk.reached,
        mean_off_leaf: round(off / steps.max(1) as f64, 4),
        curve,
    }
}

/// The experiment opened: the model, the dataset and the pairs drawn.
pub struct Leaves {
    config: Config,
    model: Model,
    data: Dataset,
    pairs: Vec<(usize, usize)>,
}

/// What the report needs besides the samples.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub model: String,
    pub dataset: String,
    pub noise_steps: usize,
    pub step: f64,
    pub stop: f64,
    pub max_steps: usize,
}

impl Leaves {
    pub fn new(config: &Config) -> Result<Leaves, ExperimentError> {
        let settings = Settings {
            model: config.model.clone(),
            dataset: config.dataset.clone(),
            ..Settings::default()
        };
        let (model, data) = model_and_data(&settings)?;
        let pairs = random_pairs("leaves", &data, config.pairs.clamp(1, data.len()), config.seed)?;
        let mut config = config.clone();
        config.top_k = config.top_k.filter(|&k| k < model.num_classes());
        Ok(Leaves {
            config,
            model,
            data,
            pairs,
        })
    }
}

impl Sharded for Leaves {
    const NAME: &'static str = "leaves";
    type Sample = Sample;
    type Header = Header;
    type Report = Report;

    fn open(settings: &Settings) -> Result<Self, ExperimentError> {
        Leaves::new(&Config::from(settings))
    }

    fn header(&self) -> Header {
        Header {
            model: self.model.name().to_string(),
            dataset: self.data.name.clone(),
            noise_steps: self.config.noise_steps,
            step: round(self.config.step as f64, 6),
            stop: round(self.config.stop as f64, 6),
            max_steps: self.config.max_steps,
        }
    }

    fn sample_count(&self) -> usize {
        self.pairs.len()
    }

    fn classes(&self) -> usize {
        self.model.num_classes()
    }

    fn dropped(sample: &Sample) -> Option<Dropped> {
        sample.dropped
    }

    fn run(&self, range: Range<usize>, progress: &Progress) -> Result<Vec<Sample>, ExperimentError> {
        let config = &self.config;
        let (net, data) = (&self.model.network, &self.data);
        let per_pair = 2 * config.noise_steps + VARIANTS.len() * KINDS.len() * (config.max_steps + 1);
        progress.begin(
            "leaves: noisy images and leaf walks",
            (range.len() * per_pair) as u64,
        );
        par_map(&self.pairs[range], progress, |&(a, b)| {
            let clean_a = data.image(a).expect("in range").to_vec();
            let clean_b = data.image(b).expect("in range").to_vec();
            let mut dropped = Dropped::default();
            let mut noise = |x: &[f32], seed: u64| {
                let kernel = (config.noise_steps, config.step, seed);
                let y = noisy_counted(net, x, kernel, config.top_k, &mut dropped);
                progress.advance(config.noise_steps as u64);
                y
            };
            let noisy_a = noise(&clean_a, config.seed ^ ((a as u64) << 20));
            let noisy_b = noise(&clean_b, config.seed ^ ((b as u64) << 20));
            let ends = [(&clean_a, &clean_b), (&noisy_a, &noisy_b), (&clean_a, &noisy_b)];
            let mut walks = BTreeMap::new();
            let mut curves = Vec::new();
            for (variant, transverse) in VARIANTS.iter().zip([None, Some(0.0)]) {
                let mut by_kind = BTreeMap::new();
                for (kind, (s, t)) in KINDS.iter().zip(ends) {
                    let record = leaf_walk(net, config, transverse, (s, t), progress, &mut dropped);
                    curves.push(record.curve.clone());
                    by_kind.insert(kind.to_string(), record);
                }
                walks.insert(variant.to_string(), by_kind);
            }
            Sample {
                pair: Pair {
                    start: a,
                    target: b,
                    walks,
                },
                curves,
                dropped: config.top_k.map(|_| dropped),
            }
        })
    }

    fn report(header: Header, samples: Vec<Sample>) -> Result<Report, ExperimentError> {
        let mut results = Vec::with_capacity(samples.len());
        for Sample { mut pair, curves, .. } in samples {
            let mut curves = curves.into_iter();
            for variant in VARIANTS {
                for kind in KINDS {
                    let record = pair
                        .walks
                        .get_mut(variant)
                        .and_then(|k| k.get_mut(kind))
                        .ok_or_else(|| {
                            ExperimentError::Invalid(format!(
                                "leaves: a pair lacks its {variant} {kind} walk"
                            ))
                        })?;
                    record.curve = curves.next().unwrap_or_default();
                }
            }
            results.push(pair);
        }
        Ok(report(header, results))
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
    super::whole(&Leaves::new(config)?, progress)
}

fn report(header: Header, results: Vec<Pair>) -> Report {
    let mut summary = BTreeMap::new();
    for variant in VARIANTS {
        let mut by_kind = BTreeMap::new();
        for kind in KINDS {
            let records: Vec<&WalkRecord> = results.iter().map(|p| &p.walks[variant][kind]).collect();
            let n = records.len() as f64;
            let mean =
                |f: &dyn Fn(&WalkRecord) -> f64| round(records.iter().map(|r| f(r)).sum::<f64>() / n, 4);
            let med = |f: &dyn Fn(&WalkRecord) -> f64| {
                round(median(&records.iter().map(|r| f(r)).collect::<Vec<_>>()), 4)
            };
            let behind = results
                .iter()
                .filter(|p| {
                    let ratio =
                        |k: &str| p.walks[variant][k].final_distance / p.walks[variant][k].start_distance;
                    kind != "clean-clean" && ratio(kind) > ratio("clean-clean")
                })
                .count();
            by_kind.insert(
                kind,
                Summary {
                    behind_clean_clean: round(behind as f64 / n, 4),
                    mean_start_distance: mean(&|r| r.start_distance),
                    median_final_distance: med(&|r| r.final_distance),
                    median_final_ratio: med(&|r| r.final_distance / r.start_distance),
                    reached_fraction: mean(&|r| f64::from(u8::from(r.reached))),
                    mean_steps: mean(&|r| r.steps as f64),
                    mean_off_leaf: mean(&|r| r.mean_off_leaf),
                },
            );
        }
        summary.insert(variant, by_kind);
    }
    Report {
        model: header.model,
        dataset: header.dataset,
        pairs: results,
        noise_steps: header.noise_steps,
        step: header.step,
        stop: header.stop,
        max_steps: header.max_steps,
        summary,
    }
}

impl Report {
    pub fn summary(&self) -> String {
        let mut out = format!(
            "leaves: {} pairs of images of {} ({}), noise = {} kernel steps, leaf walks of at most {} steps\n",
            self.pairs.len(),
            self.dataset,
            self.model,
            self.noise_steps,
            self.max_steps
        );
        for variant in VARIANTS {
            out += &format!("  {variant} walk:\n");
            for kind in KINDS {
                let s = &self.summary[variant][kind];
                out += &format!(
                    "    {kind:<12} start {:>5.2} -> median final {:>5.2} (ratio {:.2}), reached {:>3.0} %, mean steps {:>5.1}, off-leaf {:.2}, behind clean-clean in {:.0} % of pairs\n",
                    s.mean_start_distance,
                    s.median_final_distance,
                    s.median_final_ratio,
                    100.0 * s.reached_fraction,
                    s.mean_steps,
                    s.mean_off_leaf,
                    100.0 * s.behind_clean_clean
                );
            }
        }
        out.trim_end().to_string()
    }

    pub fn plot(&self) -> Canvas {
        let mut c = Canvas::new(1160, 470);
        c.title(&format!(
            "Leaf walks between clean and noisy images: distance to the target ({} pairs, {})",
            self.pairs.len(),
            self.model
        ));
        // Distances relative to each walk's start, so pairs at different distances compare.
        let relative =
            |r: &WalkRecord| -> Vec<f64> { r.curve.iter().map(|&d| d as f64 / r.start_distance).collect() };
        let lowest = self
            .pairs
            .iter()
            .flat_map(|p| {
                p.walks
                    .values()
                    .flat_map(|k| k.values().map(|r| r.min_distance / r.start_distance))
            })
            .fold(1.0, f64::min);
        let ylo = ((lowest - 0.05) * 10.0).floor() / 10.0;
        let xmax = self.max_steps as f64;
        for (v, variant) in VARIANTS.iter().enumerate() {
            let ax = Axes::new(
                80.0 + v as f32 * 560.0,
                70.0,
                470.0,
                320.0,
                (0.0, xmax),
                (ylo.max(0.0), 1.02),
            );
            let title = match *variant {
                "default" => "default leaf walk (small transverse weight)".to_string(),
                _ => "strict leaf walk (transverse weight 0)".to_string(),
            };
            ax.frame(
                &mut c,
                &title,
                "step",
                "distance to target / distance at start",
                &plot::nice_ticks(0.0, xmax, 6),
                &plot::nice_ticks(ylo.max(0.0), 1.0, 6),
            );
            for (k, kind) in KINDS.iter().enumerate() {
                let colour = PALETTE[k];
                let pale = [
                    ((colour[0] as u16 + 3 * 255) / 4) as u8,
                    ((colour[1] as u16 + 3 * 255) / 4) as u8,
                    ((colour[2] as u16 + 3 * 255) / 4) as u8,
                ];
                let curves: Vec<Vec<f64>> = self
                    .pairs
                    .iter()
                    .map(|p| relative(&p.walks[*variant][*kind]))
                    .collect();
                for curve in &curves {
                    let pts: Vec<(f64, f64)> =
                        curve.iter().enumerate().map(|(i, &d)| (i as f64, d)).collect();
                    ax.series(&mut c, &pts, 1.0, pale, false);
                }
                // Median over pairs; a walk that has arrived keeps its last distance.
                let med: Vec<(f64, f64)> = (0..=self.max_steps)
                    .map(|i| {
                        let at: Vec<f64> = curves.iter().map(|cv| cv[i.min(cv.len() - 1)]).collect();
                        (i as f64, median(&at))
                    })
                    .collect();
                ax.series(&mut c, &med, 3.0, colour, false);
            }
            if v == 0 {
                let entries: Vec<(String, plot::Colour)> = KINDS
                    .iter()
                    .enumerate()
                    .map(|(k, kind)| (format!("{kind} (bold: median)"), PALETTE[k]))
                    .collect();
                c.legend(ax.left + 15.0, ax.top + 250.0, &entries, 13.0);
            }
        }
        c
    }
}
