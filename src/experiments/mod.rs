//! Batch studies of the papers' claims (shared/REFERENCE.md sections 1, 4, 5), built on geometry and
//! walk. Each experiment is a function from `Settings` to a report that serialises to the JSON the
//! command line prints and draws its own figure; `run` picks one by name. A shared `Progress` counts
//! work done (for a progress bar) and carries a cancel flag that every experiment checks between
//! units of work, so the command line and the app drive them the same way. Long runs spread their
//! samples over all cores with rayon, and split into shards for a cluster (`shard`): every
//! experiment implements `shard::Sharded`, and `run` is shard 1/1 merged.

pub mod dataset_spectra;
pub mod denoise;
pub mod digest;
pub mod involutivity;
pub mod leaves;
pub mod off_leaf;
pub mod ood;
pub mod plot;
pub mod same_leaf;
pub mod sets;
pub mod shard;
pub mod training;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use image::RgbaImage;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::{DataError, Dataset};
use crate::model::{Model, ModelError, DEFAULT_MODEL};
use shard::{Part, Shard, Sharded};

/// The experiments by their command-line names, in the order the README presents them.
pub const NAMES: [&str; 8] = [
    "off-leaf",
    "leaves",
    "training",
    "dataset-spectra",
    "involutivity",
    "denoise",
    "ood",
    "same-leaf",
];

/// The claim each experiment checks, in a line (for help texts and the app's tab).
pub fn claim(name: &str) -> Option<&'static str> {
    Some(match name {
        "off-leaf" => "moving across leaves (in ker G) adds noise but keeps the prediction; moving along the leaf changes it",
        "leaves" => "clean images lie on one leaf: leaf walks join clean pairs better than pairs involving noisy images",
        "training" => "G vanishes as the model becomes certain: information is lost at equilibrium",
        "dataset-spectra" => "in-distribution images have a far smaller top eigenvalue of G than any other dataset",
        "involutivity" => "for a ReLU network D_x is involutive almost everywhere; with sigmoid or GELU it is not",
        "denoise" => "projecting a noisy image onto the data leaf (a leaf walk from its nearest clean image) denoises it",
        "ood" => "the top eigenvalue of G scores out-of-distribution inputs",
        "same-leaf" => "the data lie on one leaf: a search strictly along the leaves joins clean pairs and not noisy ones",
        _ => return None,
    })
}

/// The sample count an experiment uses when `Settings::samples` is `None` (for the app's field).
pub fn default_samples(name: &str) -> Option<usize> {
    let s = &Settings::default();
    Some(match name {
        "off-leaf" => off_leaf::DEFAULT_SAMPLES,
        "leaves" => leaves::Config::from(s).pairs,
        "training" => training::Config::from(s).images,
        "dataset-spectra" => dataset_spectra::Config::from(s).samples,
        "involutivity" => involutivity::Config::from(s).points,
        "denoise" => denoise::DEFAULT_SAMPLES,
        "ood" => ood::Config::from(s).samples,
        "same-leaf" => same_leaf::Config::from(s).pairs,
        _ => return None,
    })
}

/// Whether the experiment studies `Settings::model` (`training` walks its own checkpoint series).
pub fn uses_model(name: &str) -> bool {
    name != "training"
}

#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    #[error("cancelled")]
    Cancelled,
    #[error("unknown experiment {0:?}; choose one of {names}", names = NAMES.join(", "))]
    Unknown(String),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{0}")]
    Invalid(String),
}

/// `Settings::samples` of `Some(ALL)`: every image of the dataset (`--samples all`).
pub const ALL: usize = usize::MAX;

/// What every experiment takes. `samples` is the experiment's main count (images, pairs or points;
/// each documents its own), `None` means its default and `Some(ALL)` the whole dataset.
#[derive(Debug, Clone)]
pub struct Settings {
    pub samples: Option<usize>,
    /// The model under study (a spec `Model::open` takes); for `training`, a folder of checkpoints.
    pub model: String,
    /// The dataset the model is studied on (a spec `Dataset::open` takes), in the model's shape.
    pub dataset: String,
    pub seed: u64,
    /// Build G from the K most probable classes only (`--top-k K`, shared/REFERENCE.md section 8);
    /// `None`, or K >= C, is the exact G. Part of a run's identity: shards of different K never merge.
    pub top_k: Option<usize>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            samples: None,
            model: DEFAULT_MODEL.into(),
            dataset: crate::data::DEFAULT_DATASET.into(),
            seed: 0,
            top_k: None,
        }
    }
}

impl Settings {
    pub fn with_samples(samples: usize) -> Settings {
        Settings {
            samples: Some(samples),
            ..Settings::default()
        }
    }

    /// The K G is built from for a model of `classes` classes: `None` when exact (no K, or K >= C).
    pub fn top_k_for(&self, classes: usize) -> Option<usize> {
        self.top_k.filter(|&k| k < classes)
    }
}

/// The probability mass top-k leaves out of G (sum of p_i over the classes not kept), over the G's
/// that one sample (or a whole run) computed: their sum, count and largest. Experiments over many
/// images report its mean and max beside the result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Dropped {
    /// NaN (probabilities of non-finite logits) passes through parts as "nan".
    #[serde(with = "shard::finite")]
    pub sum: f64,
    pub points: u64,
    #[serde(with = "shard::finite")]
    pub max: f64,
}

impl Dropped {
    /// One G's dropped mass.
    pub fn of(mass: f64) -> Dropped {
        Dropped {
            sum: mass,
            points: 1,
            max: mass,
        }
    }

    pub fn add(&mut self, mass: f64) {
        *self = self.join(Dropped::of(mass));
    }

    /// Both together (sums in the order given, so merged shards add up as the single run does).
    pub fn join(self, other: Dropped) -> Dropped {
        Dropped {
            sum: self.sum + other.sum,
            points: self.points + other.points,
            max: self.max.max(other.max),
        }
    }

    /// The mean over the G's counted (0 when none were).
    pub fn mean(&self) -> f64 {
        if self.points == 0 {
            0.0
        } else {
            self.sum / self.points as f64
        }
    }
}

/// `walk::noisy` (a kernel walk of `steps` steps from `start`) with G from the `top_k` most
/// probable classes; each step's dropped mass is added to `dropped`. Exact (`None`) is `noisy`.
pub fn noisy_counted(
    network: &crate::model::Network,
    start: &[f32],
    (steps, step, seed): (usize, f32, u64),
    top_k: Option<usize>,
    dropped: &mut Dropped,
) -> Vec<f32> {
    if top_k.is_none() {
        return crate::walk::noisy(network, start, steps, step, seed).expect("valid kernel walk");
    }
    let config = crate::walk::WalkConfig {
        max_steps: steps,
        step,
        seed,
        top_k,
        ..crate::walk::WalkConfig::defaults(crate::walk::Mode::Kernel)
    };
    let walk = crate::walk::Walk::new(network, config, start.to_vec(), None).expect("valid kernel walk");
    let mut last = start.to_vec();
    for s in walk {
        dropped.add(s.dropped_mass);
        last = s.x;
    }
    last
}

/// Work done so far, for a progress bar, and a cancel flag. Shared by reference (or in an `Arc`)
/// between the thread running an experiment and the one showing it.
#[derive(Debug, Default)]
pub struct Progress {
    done: AtomicU64,
    total: AtomicU64,
    cancelled: AtomicBool,
    stage: Mutex<String>,
}

impl Progress {
    pub fn new() -> Progress {
        Progress::default()
    }

    /// Start a stage of `total` units (the count restarts at 0).
    pub fn begin(&self, stage: impl Into<String>, total: u64) {
        *self.stage.lock().unwrap_or_else(|e| e.into_inner()) = stage.into();
        self.done.store(0, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
    }

    pub fn advance(&self, units: u64) {
        self.done.fetch_add(units, Ordering::Relaxed);
    }

    /// (stage, done, total).
    pub fn snapshot(&self) -> (String, u64, u64) {
        (
            self.stage.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        )
    }

    /// Fraction of the current stage done, in [0, 1].
    pub fn fraction(&self) -> f32 {
        let (_, done, total) = self.snapshot();
        if total == 0 {
            0.0
        } else {
            (done as f32 / total as f32).min(1.0)
        }
    }

    /// Ask the running experiment to stop; it returns `ExperimentError::Cancelled` soon after.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// `Err(Cancelled)` once cancelled, for `?` between units of work.
    pub fn check(&self) -> Result<(), ExperimentError> {
        if self.is_cancelled() {
            Err(ExperimentError::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// A finished experiment: its JSON, a few lines for a person, and its figure (raster and SVG).
pub struct Outcome {
    pub name: &'static str,
    pub json: serde_json::Value,
    pub summary: String,
    pub plot: RgbaImage,
    pub svg: String,
}

/// One experiment's shard and merge functions, from its `Sharded` implementation.
struct Entry {
    name: &'static str,
    part: fn(&Settings, Shard, &Progress) -> Result<Part, ExperimentError>,
    finish: fn(
        Option<shard::TopK>,
        serde_json::Value,
        Vec<serde_json::Value>,
    ) -> Result<Outcome, ExperimentError>,
}

fn entry<E: Sharded>() -> Entry {
    Entry {
        name: E::NAME,
        part: shard::run_part::<E>,
        finish: shard::finish::<E>,
    }
}

/// Every experiment, in `NAMES` order. A new one adds a line here (see `shard`).
fn entries() -> Vec<Entry> {
    vec![
        entry::<off_leaf::OffLeaf>(),
        entry::<leaves::Leaves>(),
        entry::<training::Training>(),
        entry::<dataset_spectra::DatasetSpectra>(),
        entry::<involutivity::Involutivity>(),
        entry::<denoise::Denoise>(),
        entry::<ood::Ood>(),
        entry::<same_leaf::SameLeaf>(),
    ]
}

fn find(name: &str) -> Result<Entry, ExperimentError> {
    entries()
        .into_iter()
        .find(|e| e.name == name)
        .ok_or_else(|| ExperimentError::Unknown(name.into()))
}

/// Run shard `shard` of the experiment called `name`: its part, to merge with the others.
pub fn run_shard(
    name: &str,
    settings: &Settings,
    shard: Shard,
    progress: &Progress,
) -> Result<Part, ExperimentError> {
    (find(name)?.part)(settings, shard, progress)
}

/// Merge the parts of one run (each with the file it came from, for messages) into the outcome
/// the single run gives. Refuses, in one line, parts of different runs, a shard given twice and
/// missing shards (naming them).
pub fn merge(parts: Vec<(String, Part)>) -> Result<Outcome, ExperimentError> {
    let parts = shard::check(parts).map_err(ExperimentError::Invalid)?;
    let name = parts[0].1.run.experiment.clone();
    let entry = find(&name)?;
    let header = parts[0].1.header.clone();
    let top_k = parts[0].1.run.top_k;
    let samples = parts.into_iter().flat_map(|(_, p)| p.samples).collect();
    (entry.finish)(top_k, header, samples)
}

/// Run the experiment called `name`: shard 1/1, through the same JSON text and merge as a sharded
/// run, so that merged shards give exactly this.
pub fn run(name: &str, settings: &Settings, progress: &Progress) -> Result<Outcome, ExperimentError> {
    let part = run_shard(name, settings, Shard::WHOLE, progress)?;
    let text = serde_json::to_string(&part).expect("parts serialise");
    let part: Part = serde_json::from_str(&text).expect("a part reads back");
    merge(vec![(format!("{name} (whole run)"), part)])
}

/// Every sample of an opened experiment computed in this process, and its report (the tests'
/// entry: `run` without the JSON round trip).
pub fn whole<E: Sharded>(experiment: &E, progress: &Progress) -> Result<E::Report, ExperimentError> {
    let samples = experiment.run(0..experiment.sample_count(), progress)?;
    progress.check()?;
    E::report(experiment.header(), samples)
}

/// The model and dataset of `settings`, checked to fit each other (one line says how they differ).
pub fn model_and_data(settings: &Settings) -> Result<(Model, Dataset), ExperimentError> {
    let model = Model::open(&settings.model)?;
    let data = Dataset::open(&settings.dataset)?;
    model.check_dataset(&data).map_err(ExperimentError::Invalid)?;
    if data.is_empty() {
        return Err(ExperimentError::Invalid(format!(
            "dataset {} has no images",
            data.name
        )));
    }
    Ok((model, data))
}

/// `count` pairs of distinct images of `data`, drawn with `seed` (`experiment` names the refusal
/// when there is only one image).
pub fn random_pairs(
    experiment: &str,
    data: &Dataset,
    count: usize,
    seed: u64,
) -> Result<Vec<(usize, usize)>, ExperimentError> {
    use rand::{Rng, SeedableRng};
    if data.len() < 2 {
        return Err(ExperimentError::Invalid(format!(
            "{experiment} walks between pairs of images; dataset {} has only one",
            data.name
        )));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    Ok((0..count)
        .map(|_| {
            let a = rng.random_range(0..data.len());
            let mut b = rng.random_range(0..data.len());
            while b == a {
                b = rng.random_range(0..data.len());
            }
            (a, b)
        })
        .collect())
}

/// The count of samples to use: the request (`ALL` = every one of `available`), else `default`,
/// never more than `available` and at least 1.
pub fn count(requested: Option<usize>, default: usize, available: usize) -> usize {
    requested.unwrap_or(default).min(available).max(1)
}

/// Open the MNIST model an experiment studies and the MNIST test set, checking they fit.
pub fn mnist_model(spec: &str) -> Result<(Model, Dataset), ExperimentError> {
    let model = Model::open(spec)?;
    let data = Dataset::open("mnist")?;
    model.check_dataset(&data).map_err(ExperimentError::Invalid)?;
    Ok((model, data))
}

/// `count` indices spread evenly over `0..len` (the first `len` when count >= len).
pub fn spread(len: usize, count: usize) -> Vec<usize> {
    if count >= len {
        return (0..len).collect();
    }
    (0..count).map(|k| k * len / count).collect()
}

/// Map `f` over `items` on all cores; `f` reports its own progress. Stops early when cancelled.
pub fn par_map<T: Sync, R: Send>(
    items: &[T],
    progress: &Progress,
    f: impl Fn(&T) -> R + Sync + Send,
) -> Result<Vec<R>, ExperimentError> {
    let out: Vec<Option<R>> = items
        .par_iter()
        .map(|item| (!progress.is_cancelled()).then(|| f(item)))
        .collect();
    progress.check()?;
    Ok(out.into_iter().map(|r| r.expect("not cancelled")).collect())
}

/// log10, with zero (and anything below 1e-300) sent to -300 so JSON stays finite.
pub fn log10_floor(v: f64) -> f64 {
    v.max(1e-300).log10()
}

/// Round to `digits` significant decimals for compact JSON and summaries.
pub fn round(v: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (v * f).round() / f
}

/// Area under the ROC curve: the probability that a random positive scores above a random negative
/// (ties count one half), by the Mann-Whitney rank sum.
pub fn roc_auc(positives: &[f64], negatives: &[f64]) -> f64 {
    let mut all: Vec<(f64, bool)> = positives
        .iter()
        .map(|&s| (s, true))
        .chain(negatives.iter().map(|&s| (s, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Average ranks over ties.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += avg * all[i..=j].iter().filter(|(_, p)| *p).count() as f64;
        i = j + 1;
    }
    let (np, nn) = (positives.len() as f64, negatives.len() as f64);
    (rank_sum - np * (np + 1.0) / 2.0) / (np * nn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_separated_and_equal_scores() {
        assert_eq!(roc_auc(&[3.0, 4.0], &[1.0, 2.0]), 1.0);
        assert_eq!(roc_auc(&[1.0, 2.0], &[3.0, 4.0]), 0.0);
        assert_eq!(roc_auc(&[1.0, 1.0], &[1.0, 1.0]), 0.5);
    }

    #[test]
    fn spread_is_even() {
        assert_eq!(spread(10, 5), vec![0, 2, 4, 6, 8]);
        assert_eq!(spread(3, 5), vec![0, 1, 2]);
    }
}
