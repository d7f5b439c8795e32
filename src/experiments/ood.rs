//! `ood`: G's spectrum as an out-of-distribution score. In-distribution: the dataset under study
//! (MNIST test images by default); out: the other sets of `dataset_spectra::comparison_sets`
//! (Fashion-MNIST, uniform noise, the 20 CIFAR-10 images in grey, mirrored MNIST digits; colour
//! sets for a colour model). Scores
//! (higher = more out of distribution): log10 lambda_1 (the top eigenvalue of G), log10 trace G,
//! and the usual baseline 1 - max_i p_i. The figure of merit is the ROC AUC of each score, MNIST
//! against each other set: the probability that an outside image scores above an MNIST one.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::plot::{self, Axes, Canvas, PALETTE};
use super::shard::Sharded;
use super::{
    dataset_spectra, model_and_data, par_map, roc_auc, round, Dropped, ExperimentError, Progress, Settings,
};
use crate::data::Dataset;
use crate::geometry::{GeometryOptions, LocalGeometry};
use crate::model::Model;

pub const SCORES: [&str; 3] = ["log10_lambda_1", "log10_trace", "one_minus_max_prob"];

#[derive(Debug, Clone)]
pub struct Config {
    pub model: String,
    pub dataset: String,
    /// Images per set (CIFAR-10 has only its 20).
    pub samples: usize,
    pub seed: u64,
    /// G from the K most probable classes (`None`: exact).
    pub top_k: Option<usize>,
}

impl From<&Settings> for Config {
    fn from(s: &Settings) -> Config {
        Config {
            model: s.model.clone(),
            dataset: s.dataset.clone(),
            samples: s.samples.unwrap_or(500),
            seed: s.seed,
            top_k: s.top_k,
        }
    }
}

/// The experiment opened: the model and every set; its samples are the sets' images, set by set.
pub struct Ood {
    model: Model,
    sets: Vec<Dataset>,
    top_k: Option<usize>,
}

/// What the report needs besides the samples.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub model: String,
    /// Each set's name and image count, in sample order; the first is in-distribution.
    pub sets: Vec<(String, usize)>,
}

impl Ood {
    pub fn new(config: &Config) -> Result<Ood, ExperimentError> {
        let settings = Settings {
            model: config.model.clone(),
            dataset: config.dataset.clone(),
            ..Settings::default()
        };
        let (model, data) = model_and_data(&settings)?;
        // A different uniform-noise seed from dataset-spectra's, so the two experiments are independent.
        let sets = dataset_spectra::comparison_sets(&data, config.samples, config.seed.wrapping_add(1))?;
        let top_k = config.top_k.filter(|&k| k < model.num_classes());
        Ok(Ood { model, sets, top_k })
    }
}

impl Sharded for Ood {
    const NAME: &'static str = "ood";
    /// The three scores of one image, and the mass top-k left out of its G.
    type Sample = ([f64; 3], Option<Dropped>);
    type Header = Header;
    type Report = Report;

    fn open(settings: &Settings) -> Result<Self, ExperimentError> {
        Ood::new(&Config::from(settings))
    }

    fn header(&self) -> Header {
        Header {
            model: self.model.name().to_string(),
            sets: self.sets.iter().map(|s| (s.name.clone(), s.len())).collect(),
        }
    }

    fn sample_count(&self) -> usize {
        self.sets.iter().map(Dataset::len).sum()
    }

    fn classes(&self) -> usize {
        self.model.num_classes()
    }

    fn dropped(sample: &Self::Sample) -> Option<Dropped> {
        sample.1
    }

    fn run(&self, range: Range<usize>, progress: &Progress) -> Result<Vec<Self::Sample>, ExperimentError> {
        progress.begin("ood: G on every set", range.len() as u64);
        let mut picks = Vec::with_capacity(range.len());
        let mut start = 0;
        for (s, set) in self.sets.iter().enumerate() {
            for i in 0..set.len() {
                if range.contains(&(start + i)) {
                    picks.push((s, i));
                }
            }
            start += set.len();
        }
        par_map(&picks, progress, |&(s, i)| {
            let x = self.sets[s].image(i).expect("in range");
            // The spectrum only: the leaf basis is not needed for lambda_1 and the trace.
            let geo = LocalGeometry::with(&self.model.network, x, GeometryOptions::walk(self.top_k));
            progress.advance(1);
            (
                [
                    geo.eigenvalues[0].max(1e-300).log10(),
                    geo.trace.max(1e-300).log10(),
                    1.0 - geo.max_prob(),
                ],
                self.top_k.map(|_| Dropped::of(geo.dropped_mass)),
            )
        })
    }

    fn report(header: Header, samples: Vec<Self::Sample>) -> Result<Report, ExperimentError> {
        let mut samples = samples.into_iter().map(|s| s.0);
        let values: Vec<(String, Vec<[f64; 3]>)> = header
            .sets
            .into_iter()
            .map(|(name, count)| (name, samples.by_ref().take(count).collect()))
            .collect();
        Ok(report(header.model, values))
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
    super::whole(&Ood::new(config)?, progress)
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model: String,
    pub in_distribution: String,
    /// Images per set.
    pub counts: BTreeMap<String, usize>,
    pub scores: Vec<&'static str>,
    /// out-of-distribution set -> score -> ROC AUC.
    pub auc: BTreeMap<String, BTreeMap<&'static str, f64>>,
    /// set name -> score name -> every image's score (for the ROC curves).
    #[serde(skip)]
    pub values: Vec<(String, Vec<[f64; 3]>)>,
}

/// ROC curve points (false positive rate, true positive rate), outside = positive.
pub fn roc_curve(positives: &[f64], negatives: &[f64]) -> Vec<(f64, f64)> {
    let mut all: Vec<(f64, bool)> = positives
        .iter()
        .map(|&s| (s, true))
        .chain(negatives.iter().map(|&s| (s, false)))
        .collect();
    all.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (np, nn) = (positives.len().max(1) as f64, negatives.len().max(1) as f64);
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut out = vec![(0.0, 0.0)];
    let mut i = 0;
    while i < all.len() {
        // Ties move together.
        let mut j = i;
        while j < all.len() && all[j].0 == all[i].0 {
            if all[j].1 {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            j += 1;
        }
        out.push((fp / nn, tp / np));
        i = j;
    }
    out
}

fn report(model: String, values: Vec<(String, Vec<[f64; 3]>)>) -> Report {
    let inside = &values[0];
    let mut auc = BTreeMap::new();
    for (name, rows) in &values[1..] {
        let mut per = BTreeMap::new();
        for (s, score) in SCORES.iter().enumerate() {
            let pos: Vec<f64> = rows.iter().map(|r| r[s]).collect();
            let neg: Vec<f64> = inside.1.iter().map(|r| r[s]).collect();
            per.insert(*score, round(roc_auc(&pos, &neg), 4));
        }
        auc.insert(name.clone(), per);
    }
    Report {
        model,
        in_distribution: inside.0.clone(),
        counts: values.iter().map(|(n, r)| (n.clone(), r.len())).collect(),
        scores: SCORES.to_vec(),
        auc,
        values,
    }
}

impl Report {
    pub fn summary(&self) -> String {
        let mut out = format!(
            "ood ({}): ROC AUC of each score, {} ({} images) against each set\n  {:<16} {:>6} {:>15} {:>12} {:>19}\n",
            self.model,
            self.in_distribution,
            self.counts.get(&self.in_distribution).copied().unwrap_or(0),
            "set",
            "count",
            "log10 lambda_1",
            "log10 trace",
            "1 - max p (baseline)"
        );
        for (name, _) in &self.values[1..] {
            let a = &self.auc[name];
            out += &format!(
                "  {:<16} {:>6} {:>15.3} {:>12.3} {:>19.3}\n",
                name, self.counts[name], a["log10_lambda_1"], a["log10_trace"], a["one_minus_max_prob"]
            );
        }
        out.trim_end().to_string()
    }

    pub fn plot(&self) -> Canvas {
        let mut c = Canvas::new(1260, 445);
        c.title(&format!(
            "Out-of-distribution detection with G ({}): ROC, {} = negative, other sets = positive",
            self.model, self.in_distribution
        ));
        let titles = [
            "score: log10 λ1 (top eigenvalue of G)",
            "score: log10 trace G",
            "baseline: 1 − max p",
        ];
        let ticks = plot::nice_ticks(0.0, 1.0, 5);
        let flagged = format!("false positive rate ({} flagged)", self.in_distribution);
        for (s, score) in SCORES.iter().enumerate() {
            let ax = Axes::new(
                80.0 + s as f32 * 410.0,
                60.0,
                320.0,
                320.0,
                (0.0, 1.0),
                (0.0, 1.0),
            );
            ax.frame(&mut c, titles[s], &flagged, "true positive rate", &ticks, &ticks);
            let (a, b) = (ax.px(0.0, 0.0), ax.px(1.0, 1.0));
            c.dashed_line(a, b, 1.0, 5.0, plot::GREY);
            let neg: Vec<f64> = self.values[0].1.iter().map(|r| r[s]).collect();
            let mut entries = Vec::new();
            for (k, (name, rows)) in self.values[1..].iter().enumerate() {
                let pos: Vec<f64> = rows.iter().map(|r| r[s]).collect();
                let colour = PALETTE[k + 1];
                ax.series(&mut c, &roc_curve(&pos, &neg), 2.0, colour, false);
                entries.push((format!("{name}: AUC {:.3}", self.auc[name][score]), colour));
            }
            c.legend(ax.left + 95.0, ax.top + 235.0, &entries, 12.0);
        }
        c
    }
}
