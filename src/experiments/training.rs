//! `training`: rank and trace of G on the first test images at every checkpoint of the shipped LeNet-5
//! training series (assets/models/lenet-series), beside each checkpoint's test accuracy. The papers'
//! point: G vanishes as the model becomes certain, |G| <= (1 - sum p_i^2) |J|^2 ("information is
//! lost at equilibrium").

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::plot::{self, median, Align, Axes, Canvas, PALETTE};
use super::shard::Sharded;
use super::{log10_floor, par_map, round, Dropped, ExperimentError, Progress, Settings};
use crate::data::Dataset;
use crate::geometry::{GeometryOptions, LocalGeometry};
use crate::model::{models_dir, Model, DEFAULT_MODEL};

#[derive(Debug, Clone)]
pub struct Config {
    /// The first `images` images of the dataset (MNIST test by default).
    pub images: usize,
    /// Checkpoints in training order.
    pub checkpoints: Vec<PathBuf>,
}

/// The shipped series, by epoch.
pub fn lenet_series() -> Vec<PathBuf> {
    let dir = models_dir().join("lenet-series");
    [0, 1, 2, 5, 10, 20, 30]
        .iter()
        .map(|e| dir.join(format!("mnist-lenet-e{e:02}.json")))
        .collect()
}

/// The checkpoints `--model` names: the shipped LeNet series for the default model, or every
/// `*.json` model in a folder, in file-name order. One model is no series: the line says so.
pub fn series(spec: &str) -> Result<Vec<PathBuf>, ExperimentError> {
    if spec == DEFAULT_MODEL {
        return Ok(lenet_series());
    }
    let dir = Path::new(spec);
    if !dir.is_dir() {
        return Err(ExperimentError::Invalid(format!(
            "training does not apply to {spec}: it needs a checkpoint series, a folder of models \
             (NAME.json + weights) in training order by file name, not one model"
        )));
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ExperimentError::Invalid(format!("{spec}: cannot read the folder: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")))
        .collect();
    files.sort();
    if files.len() < 2 {
        return Err(ExperimentError::Invalid(format!(
            "training does not apply to {spec}: a series needs at least two checkpoints (NAME.json), found {}",
            files.len()
        )));
    }
    Ok(files)
}

impl From<&Settings> for Config {
    fn from(s: &Settings) -> Config {
        Config {
            images: s.samples.unwrap_or(1000),
            checkpoints: series(&s.model).unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model: String,
    pub dataset: String,
    pub images: usize,
    pub epochs: Vec<usize>,
    /// From each checkpoint's training record (the full MNIST test set).
    pub test_accuracy: Vec<f64>,
    pub mean_trace: Vec<f64>,
    pub median_log10_trace: Vec<f64>,
    /// Rank of G with dataleaf's tolerance (eigenvalues above 1e-12 of the largest).
    pub mean_rank: Vec<f64>,
    /// Rank as `torch.linalg.matrix_rank` counts it on the n x n float32 G (tolerance
    /// n * eps_f32 * lambda_1), closer to what the papers plot.
    pub mean_rank_float32: Vec<f64>,
    /// Mean of the largest eigenvalue and of 1 - sum p_i^2 (the factor that bounds |G|).
    pub mean_lambda_1: Vec<f64>,
    pub mean_uncertainty: Vec<f64>,
}

/// The experiment opened: every checkpoint and the dataset; its samples are (checkpoint, image)
/// pairs, checkpoint by checkpoint.
pub struct Training {
    models: Vec<Model>,
    data: Dataset,
    images: usize,
    header: Header,
    /// G from the K most probable classes (`None`: exact).
    top_k: Option<usize>,
}

/// What the report needs besides the samples.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub model: String,
    pub dataset: String,
    pub images: usize,
    pub epochs: Vec<usize>,
    pub test_accuracy: Vec<f64>,
}

/// What one image gives at one checkpoint: trace, rank, rank at the float32 tolerance, lambda_1,
/// 1 - sum p_i^2 (over all classes), and the mass top-k left out of G (`None` when exact).
pub type Sample = (f64, f64, f64, f64, f64, Option<Dropped>);

impl Training {
    pub fn new(config: &Config, dataset: &str) -> Result<Training, ExperimentError> {
        if config.checkpoints.is_empty() {
            return Err(ExperimentError::Invalid(
                "training needs a checkpoint series".into(),
            ));
        }
        let data = Dataset::open(dataset)?;
        let images = config.images.clamp(1, data.len());
        let mut models = Vec::new();
        let (mut epochs, mut test_accuracy) = (Vec::new(), Vec::new());
        for (k, path) in config.checkpoints.iter().enumerate() {
            let model = Model::load(path)?;
            model.check_dataset(&data).map_err(ExperimentError::Invalid)?;
            let (record, accuracy) = match &model.arch.training {
                Some(t) => (t.epoch, t.test_accuracy as f64),
                None => (k, model.accuracy(&data)),
            };
            epochs.push(record);
            test_accuracy.push(round(accuracy, 4));
            models.push(model);
        }
        let header = Header {
            model: models[0].name().to_string(),
            dataset: data.name.clone(),
            images,
            epochs,
            test_accuracy,
        };
        Ok(Training {
            models,
            data,
            images,
            header,
            top_k: None,
        })
    }
}

impl Sharded for Training {
    const NAME: &'static str = "training";
    type Sample = Sample;
    type Header = Header;
    type Report = Report;

    fn open(settings: &Settings) -> Result<Self, ExperimentError> {
        series(&settings.model)?;
        let mut training = Training::new(&Config::from(settings), &settings.dataset)?;
        training.top_k = settings.top_k_for(training.classes());
        Ok(training)
    }

    fn header(&self) -> Header {
        self.header.clone()
    }

    fn sample_count(&self) -> usize {
        self.models.len() * self.images
    }

    /// The series' first checkpoint's (checkpoints of one series share their classes).
    fn classes(&self) -> usize {
        self.models[0].num_classes()
    }

    fn dropped(sample: &Sample) -> Option<Dropped> {
        sample.5
    }

    fn run(&self, range: Range<usize>, progress: &Progress) -> Result<Vec<Sample>, ExperimentError> {
        progress.begin("training: G over the checkpoints", range.len() as u64);
        let n = self.data.image_len() as f64;
        let mut out = Vec::with_capacity(range.len());
        for (k, model) in self.models.iter().enumerate() {
            // This checkpoint's images that fall in the range.
            let lo = range.start.max(k * self.images);
            let hi = range.end.min((k + 1) * self.images);
            if lo >= hi {
                continue;
            }
            let indices: Vec<usize> = (lo - k * self.images..hi - k * self.images).collect();
            out.extend(par_map(&indices, progress, |&i| {
                let x = self.data.image(i).expect("in range");
                // The rank counts the leaf basis's directions, as it always has: keep the basis.
                let options = GeometryOptions {
                    top_k: self.top_k,
                    basis: true,
                };
                let geo = LocalGeometry::with(&model.network, x, options);
                progress.advance(1);
                let top = geo.eigenvalues[0];
                let rank32 = geo
                    .eigenvalues
                    .iter()
                    .filter(|&&l| top > 0.0 && l > n * f32::EPSILON as f64 * top)
                    .count();
                let uncertainty = 1.0 - geo.probs.iter().map(|p| p * p).sum::<f64>();
                let dropped = self.top_k.map(|_| Dropped::of(geo.dropped_mass));
                (
                    geo.trace,
                    geo.rank as f64,
                    rank32 as f64,
                    top,
                    uncertainty,
                    dropped,
                )
            })?);
        }
        Ok(out)
    }

    fn report(header: Header, samples: Vec<Sample>) -> Result<Report, ExperimentError> {
        let mut r = Report {
            model: header.model,
            dataset: header.dataset,
            images: header.images,
            epochs: header.epochs,
            test_accuracy: header.test_accuracy,
            mean_trace: Vec::new(),
            median_log10_trace: Vec::new(),
            mean_rank: Vec::new(),
            mean_rank_float32: Vec::new(),
            mean_lambda_1: Vec::new(),
            mean_uncertainty: Vec::new(),
        };
        for rows in samples.chunks(header.images.max(1)) {
            let mean = |f: fn(&Sample) -> f64| rows.iter().map(f).sum::<f64>() / rows.len() as f64;
            r.mean_trace.push(mean(|t| t.0));
            r.median_log10_trace.push(round(
                median(&rows.iter().map(|t| log10_floor(t.0)).collect::<Vec<_>>()),
                3,
            ));
            r.mean_rank.push(round(mean(|t| t.1), 3));
            r.mean_rank_float32.push(round(mean(|t| t.2), 3));
            r.mean_lambda_1.push(mean(|t| t.3));
            r.mean_uncertainty.push(mean(|t| t.4));
        }
        Ok(r)
    }

    fn summary(report: &Report) -> String {
        report.summary()
    }

    fn figure(report: &Report) -> Canvas {
        report.plot()
    }
}

/// Run every sample here (on the MNIST test set) and make the report.
pub fn run(config: &Config, progress: &Progress) -> Result<Report, ExperimentError> {
    super::whole(&Training::new(config, crate::data::DEFAULT_DATASET)?, progress)
}

impl Report {
    pub fn summary(&self) -> String {
        let mut out = format!(
            "training: G on the first {} images of {} at each checkpoint of {}\n  epoch  test acc  mean trace  median log10 trace  mean rank  rank (float32 tol)  mean 1-sum p^2\n",
            self.images, self.dataset, self.model
        );
        for k in 0..self.epochs.len() {
            out += &format!(
                "  {:>5}  {:>7.2} %  {:>10.4}  {:>18.2}  {:>9.2}  {:>18.2}  {:>14.4}\n",
                self.epochs[k],
                100.0 * self.test_accuracy[k],
                self.mean_trace[k],
                self.median_log10_trace[k],
                self.mean_rank[k],
                self.mean_rank_float32[k],
                self.mean_uncertainty[k]
            );
        }
        out.trim_end().to_string()
    }

    pub fn plot(&self) -> Canvas {
        let mut c = Canvas::new(1200, 430);
        c.title(&format!(
            "G during training: {} checkpoints, first {} images of {}",
            self.model, self.images, self.dataset
        ));
        // Checkpoints are evenly spaced on the x axis, labelled by epoch.
        let n = self.epochs.len();
        let xt: plot::Ticks = self
            .epochs
            .iter()
            .enumerate()
            .map(|(k, e)| (k as f64, e.to_string()))
            .collect();
        let xr = (-0.4, n as f64 - 0.6);
        let xs =
            |v: &[f64]| -> Vec<(f64, f64)> { v.iter().enumerate().map(|(k, &y)| (k as f64, y)).collect() };
        let w = 300.0;
        // Accuracy.
        let acc: Vec<f64> = self.test_accuracy.iter().map(|a| 100.0 * a).collect();
        let lo = (acc.iter().copied().fold(100.0, f64::min) / 10.0).floor() * 10.0;
        let ax = Axes::new(75.0, 70.0, w, 280.0, xr, (lo, 100.0));
        ax.frame(
            &mut c,
            "test accuracy (%)",
            "epoch",
            "%",
            &xt,
            &plot::nice_ticks(lo, 100.0, 5),
        );
        ax.series(&mut c, &xs(&acc), 2.5, PALETTE[2], true);
        // Trace, log scale.
        let lt: Vec<f64> = self.mean_trace.iter().map(|&t| log10_floor(t)).collect();
        let mt = &self.median_log10_trace;
        let (ylo, yhi) = lt
            .iter()
            .chain(mt)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        let (ylo, yhi) = ((ylo - 0.3).floor(), (yhi + 0.3).ceil());
        let ax = Axes::new(75.0 + w + 95.0, 70.0, w, 280.0, xr, (ylo, yhi));
        ax.frame(
            &mut c,
            "trace of G",
            "epoch",
            "log10 trace G",
            &xt,
            &plot::nice_ticks(ylo, yhi, 6),
        );
        ax.series(&mut c, &xs(&lt), 2.5, PALETTE[0], true);
        ax.series(&mut c, &xs(mt), 2.5, PALETTE[1], true);
        c.legend(
            ax.left + 120.0,
            ax.top + 20.0,
            &[("mean".into(), PALETTE[0]), ("median".into(), PALETTE[1])],
            13.0,
        );
        // Rank.
        let ax = Axes::new(75.0 + 2.0 * (w + 95.0), 70.0, w, 280.0, xr, (0.0, 10.0));
        ax.frame(
            &mut c,
            "mean rank of G",
            "epoch",
            "rank",
            &xt,
            &plot::nice_ticks(0.0, 10.0, 5),
        );
        ax.reference(&mut c, 9.0, "C - 1", plot::GREY);
        ax.series(&mut c, &xs(&self.mean_rank), 2.5, PALETTE[4], true);
        ax.series(&mut c, &xs(&self.mean_rank_float32), 2.5, PALETTE[3], true);
        c.legend(
            ax.left + 12.0,
            ax.top + 215.0,
            &[
                ("tolerance 1e-12 lambda_1".into(), PALETTE[4]),
                ("float32 tolerance (torch)".into(), PALETTE[3]),
            ],
            13.0,
        );
        let epochs: Vec<String> = self.epochs.iter().map(|e| e.to_string()).collect();
        c.text(
            &format!(
                "x axis: the checkpoints (epochs {}), evenly spaced",
                epochs.join(", ")
            ),
            600.0,
            415.0,
            12.0,
            plot::GREY,
            Align::Centre,
        );
        c
    }
}
