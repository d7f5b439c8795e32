//! `same-leaf`: do two images lie on one leaf? For pairs of test images (MNIST by default), clean-clean, clean-noisy
//! and noisy-noisy (noise = kernel steps, which move to another leaf), the gap a strict leaf search
//! leaves: the strict greedy walk (until it stalls, at most `greedy_steps`) and the reach search
//! (src/walk/reach.rs, a fixed number of geometry evaluations so the result does not depend on the
//! machine's speed). If the clean images shared one leaf and each noisy one sat on its own, the reach
//! search would close clean-clean gaps and leave the others open.

use std::collections::BTreeMap;
use std::time::Duration;

use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::plot::{self, median, Axes, BoxStats, Canvas, PALETTE};
use super::shard::Sharded;
use super::{
    model_and_data, noisy_counted, par_map, random_pairs, round, Dropped, ExperimentError, Progress, Settings,
};
use crate::data::Dataset;
use crate::model::{Model, Network};
use crate::walk::reach::{Reach, ReachConfig, Strategy, DEFAULT_STRATEGY};
use crate::walk::DEFAULT_STEP;

/// The pair kinds, start -> target.
pub const KINDS: [&str; 3] = ["clean-clean", "clean-noisy", "noisy-noisy"];
/// The two strict searches.
pub const SEARCHES: [&str; 2] = ["greedy", "reach"];

#[derive(Debug, Clone)]
pub struct Config {
    pub model: String,
    pub dataset: String,
    /// Pairs of distinct images of the dataset, drawn with `seed`.
    pub pairs: usize,
    /// Kernel steps that make an image noisy (the papers' noisy leaves use 250).
    pub noise_steps: usize,
    /// The greedy walk stops at its stall or after this many steps.
    pub greedy_steps: usize,
    /// Geometry evaluations of each reach search.
    pub reach_evaluations: usize,
    pub seed: u64,
    /// G from the K most probable classes (`None`: exact).
    pub top_k: Option<usize>,
}

impl From<&Settings> for Config {
    fn from(s: &Settings) -> Config {
        Config {
            model: s.model.clone(),
            dataset: s.dataset.clone(),
            pairs: s.samples.unwrap_or(8),
            noise_steps: 250,
            greedy_steps: 3000,
            reach_evaluations: 1200,
            seed: s.seed,
            top_k: s.top_k,
        }
    }
}

/// One search of one pair.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub start_distance: f64,
    pub final_distance: f64,
    pub final_ratio: f64,
    pub evaluations: usize,
    /// Largest fraction of a move outside D_x (before the pixel clamp): the strictness check.
    pub max_off_leaf: f64,
    /// Mean fraction of the moves as taken, after the clamp to [0, 1].
    pub mean_off_leaf_clamped: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pair {
    pub start: usize,
    pub target: usize,
    /// search -> kind -> record.
    pub searches: BTreeMap<String, BTreeMap<String, Record>>,
    /// The mass top-k left out of G at every point of the pair's noise walks and searches (absent
    /// when exact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<Dropped>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub median_start_distance: f64,
    pub median_final_distance: f64,
    pub median_final_ratio: f64,
    /// Pairs whose final distance is at most 1 pixel unit (about a tenth of a typical start distance).
    pub closed_fraction: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model: String,
    pub dataset: String,
    pub pairs: Vec<Pair>,
    pub noise_steps: usize,
    pub greedy_steps: usize,
    pub reach_evaluations: usize,
    pub reach_strategy: String,
    /// search -> kind -> summary.
    pub summary: BTreeMap<&'static str, BTreeMap<&'static str, Summary>>,
    /// Largest off-leaf fraction of any move (before the clamp), over all searches.
    pub max_off_leaf: f64,
}

#[allow(clippy::too_many_arguments)]
fn search(
    network: &Network,
    strategy: Strategy,
    evaluations: usize,
    stall_steps: usize,
    (start, target): (&[f32], &[f32]),
    top_k: Option<usize>,
    progress: &Progress,
    dropped: &mut Dropped,
) -> Record {
    let config = ReachConfig {
        strategy,
        max_evaluations: evaluations,
        stall_steps,
        top_k,
        // Bounded by evaluations, not time, so the experiment repeats exactly.
        budget: Duration::from_secs(24 * 3600),
        ..ReachConfig::default()
    };
    let mut reach =
        Reach::new(network, config, start.to_vec(), target.to_vec()).expect("valid images and config");
    let mut steps = 0u64;
    for s in reach.by_ref() {
        steps += 1;
        dropped.add(s.dropped_mass);
        if progress.is_cancelled() {
            break;
        }
    }
    // A greedy walk that stalls early hands its unused evaluations to the progress bar.
    progress.advance((evaluations as u64).max(steps));
    let s = reach.summary();
    Record {
        start_distance: round(s.start_distance as f64, 4),
        final_distance: round(s.final_distance as f64, 4),
        final_ratio: round(s.final_distance as f64 / s.start_distance as f64, 4),
        evaluations: s.evaluations,
        max_off_leaf: s.max_off_leaf,
        mean_off_leaf_clamped: round(s.mean_off_leaf_clamped, 4),
    }
}

/// The experiment opened: its model, the dataset and the pairs (drawn with the seed).
pub struct SameLeaf {
    config: Config,
    model: Model,
    data: Dataset,
    pairs: Vec<(usize, usize)>,
}

/// What the report needs besides the pairs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub model: String,
    pub dataset: String,
    pub noise_steps: usize,
    pub greedy_steps: usize,
    pub reach_evaluations: usize,
    pub reach_strategy: String,
}

impl SameLeaf {
    fn new(config: Config) -> Result<SameLeaf, ExperimentError> {
        let (model, data) = model_and_data(&Settings {
            samples: None,
            model: config.model.clone(),
            dataset: config.dataset.clone(),
            seed: config.seed,
            top_k: None,
        })?;
        let pairs = random_pairs("same-leaf", &data, config.pairs.max(1), config.seed)?;
        let mut config = config;
        config.top_k = config.top_k.filter(|&k| k < model.num_classes());
        Ok(SameLeaf {
            config,
            model,
            data,
            pairs,
        })
    }

    /// Both searches of every kind for one pair.
    fn pair(&self, (a, b): (usize, usize), progress: &Progress) -> Pair {
        let (config, net, data) = (&self.config, &self.model.network, &self.data);
        let clean_a = data.image(a).expect("in range").to_vec();
        let clean_b = data.image(b).expect("in range").to_vec();
        let mut dropped = Dropped::default();
        let mut noise = |x: &[f32], seed: u64| {
            let kernel = (config.noise_steps, DEFAULT_STEP, seed);
            let y = noisy_counted(net, x, kernel, config.top_k, &mut dropped);
            progress.advance(config.noise_steps as u64);
            y
        };
        let noisy_a = noise(&clean_a, config.seed ^ ((a as u64) << 20));
        let noisy_b = noise(&clean_b, config.seed ^ ((b as u64) << 20));
        let ends = [(&clean_a, &clean_b), (&clean_a, &noisy_b), (&noisy_a, &noisy_b)];
        let mut searches = BTreeMap::new();
        for name in SEARCHES {
            let mut by_kind = BTreeMap::new();
            for (kind, (s, t)) in KINDS.iter().zip(ends) {
                let (strategy, evaluations, stall) = match name {
                    // The strict greedy walk until it stalls (no progress of a tenth of a step in 200).
                    "greedy" => (Strategy::Greedy, config.greedy_steps, 200),
                    _ => (DEFAULT_STRATEGY, config.reach_evaluations, 40),
                };
                let (s, t) = (s.as_slice(), t.as_slice());
                let record = search(
                    net,
                    strategy,
                    evaluations,
                    stall,
                    (s, t),
                    config.top_k,
                    progress,
                    &mut dropped,
                );
                by_kind.insert(kind.to_string(), record);
            }
            searches.insert(name.to_string(), by_kind);
        }
        Pair {
            start: a,
            target: b,
            searches,
            dropped: config.top_k.map(|_| dropped),
        }
    }
}

impl Sharded for SameLeaf {
    const NAME: &'static str = "same-leaf";
    type Sample = Pair;
    type Header = Header;
    type Report = Report;

    fn open(settings: &Settings) -> Result<Self, ExperimentError> {
        SameLeaf::new(Config::from(settings))
    }

    fn header(&self) -> Header {
        Header {
            model: self.model.name().to_string(),
            dataset: self.data.name.clone(),
            noise_steps: self.config.noise_steps,
            greedy_steps: self.config.greedy_steps,
            reach_evaluations: self.config.reach_evaluations,
            reach_strategy: DEFAULT_STRATEGY.name().to_string(),
        }
    }

    fn sample_count(&self) -> usize {
        self.pairs.len()
    }

    fn classes(&self) -> usize {
        self.model.num_classes()
    }

    fn dropped(pair: &Pair) -> Option<Dropped> {
        pair.dropped
    }

    fn run(&self, range: Range<usize>, progress: &Progress) -> Result<Vec<Pair>, ExperimentError> {
        let c = &self.config;
        let per_pair = 2 * c.noise_steps + KINDS.len() * (c.greedy_steps + c.reach_evaluations);
        progress.begin(
            "same-leaf: noisy images, greedy walks and reach searches",
            (range.len() * per_pair) as u64,
        );
        par_map(&self.pairs[range], progress, |&pair| self.pair(pair, progress))
    }

    fn report(header: Header, pairs: Vec<Pair>) -> Result<Report, ExperimentError> {
        let mut summary = BTreeMap::new();
        for name in SEARCHES {
            let mut by_kind = BTreeMap::new();
            for kind in KINDS {
                let records: Vec<&Record> = pairs.iter().map(|p| &p.searches[name][kind]).collect();
                let med = |f: &dyn Fn(&Record) -> f64| {
                    round(median(&records.iter().map(|r| f(r)).collect::<Vec<_>>()), 4)
                };
                let closed = records.iter().filter(|r| r.final_distance <= 1.0).count();
                by_kind.insert(
                    kind,
                    Summary {
                        median_start_distance: med(&|r| r.start_distance),
                        median_final_distance: med(&|r| r.final_distance),
                        median_final_ratio: med(&|r| r.final_ratio),
                        closed_fraction: round(closed as f64 / records.len().max(1) as f64, 4),
                    },
                );
            }
            summary.insert(name, by_kind);
        }
        let max_off_leaf = pairs
            .iter()
            .flat_map(|p| {
                p.searches
                    .values()
                    .flat_map(|k| k.values().map(|r| r.max_off_leaf))
            })
            .fold(0.0, f64::max);
        Ok(Report {
            model: header.model,
            dataset: header.dataset,
            pairs,
            noise_steps: header.noise_steps,
            greedy_steps: header.greedy_steps,
            reach_evaluations: header.reach_evaluations,
            reach_strategy: header.reach_strategy,
            summary,
            max_off_leaf,
        })
    }

    fn summary(report: &Report) -> String {
        report.summary()
    }

    fn figure(report: &Report) -> Canvas {
        report.plot()
    }
}

impl Report {
    pub fn summary(&self) -> String {
        let mut out = format!(
            "same-leaf: {} pairs of {} images ({}), noise = {} kernel steps; strict greedy walk (<= {} steps) and reach search ({}, {} evaluations); largest off-leaf share of a move {:.1e}\n",
            self.pairs.len(),
            self.dataset,
            self.model,
            self.noise_steps,
            self.greedy_steps,
            self.reach_strategy,
            self.reach_evaluations,
            self.max_off_leaf
        );
        for name in SEARCHES {
            out += &format!("  {name}:\n");
            for kind in KINDS {
                let s = &self.summary[name][kind];
                out += &format!(
                    "    {kind:<12} start {:>5.2} -> median gap {:>5.2} (final/start {:.2}), closed to <= 1 px in {:>3.0} % of pairs\n",
                    s.median_start_distance,
                    s.median_final_distance,
                    s.median_final_ratio,
                    100.0 * s.closed_fraction
                );
            }
        }
        out.trim_end().to_string()
    }

    pub fn plot(&self) -> Canvas {
        let mut c = Canvas::new(1100, 470);
        c.title(&format!(
            "Same leaf? The gap a strict leaf search leaves ({} pairs, {})",
            self.pairs.len(),
            self.model
        ));
        let ax = Axes::new(90.0, 70.0, 560.0, 320.0, (0.0, 3.0), (0.0, 1.0));
        let xticks: plot::Ticks = KINDS
            .iter()
            .enumerate()
            .map(|(k, kind)| (k as f64 + 0.5, kind.to_string()))
            .collect();
        ax.frame(
            &mut c,
            "",
            "pair kind (start -> target)",
            "gap left / distance at start",
            &xticks,
            &plot::nice_ticks(0.0, 1.0, 6),
        );
        for (s, name) in SEARCHES.iter().enumerate() {
            let colour = PALETTE[s];
            for (k, kind) in KINDS.iter().enumerate() {
                let x = k as f64 + 0.3 + 0.4 * s as f64;
                let ratios: Vec<f64> = self
                    .pairs
                    .iter()
                    .map(|p| p.searches[*name][*kind].final_ratio)
                    .collect();
                ax.boxplot(&mut c, x, 0.12, &BoxStats::of(&ratios), colour);
                let dots: Vec<(f64, f64)> = ratios.iter().map(|&r| (x, r)).collect();
                ax.scatter(&mut c, &dots, 2.5, colour);
            }
        }
        let entries: Vec<(String, plot::Colour)> = vec![
            (
                format!("strict greedy walk (<= {} steps)", self.greedy_steps),
                PALETTE[0],
            ),
            (
                format!(
                    "reach search ({}, {} evaluations)",
                    self.reach_strategy, self.reach_evaluations
                ),
                PALETTE[1],
            ),
        ];
        c.legend(670.0, 90.0, &entries, 13.0);
        c
    }
}
