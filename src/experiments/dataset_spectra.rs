//! `dataset-spectra`: the spectrum of G (the DIM of Tron & Fioresi) of the MNIST model on samples of
//! MNIST, Fashion-MNIST, CIFAR-10 in grey at 28 x 28, uniform noise and mirrored MNIST digits. The
//! published shape (shared/REFERENCE.md section 5): the in-distribution set has a far smaller top
//! eigenvalue than any other, and the spread of log eigenvalues orders the sets by closeness to MNIST.
//!
//! Distance between two sets: for each eigenvalue index k = 1..C-1, the Wasserstein-1 distance
//! between the two empirical distributions of log10 lambda_k, averaged over k (in decades). lambda_C
//! is left out: sqrt(p) is an exact null vector of B B^T, so lambda_C is zero up to round-off.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::plot::{self, median, Align, Axes, BoxStats, Canvas, PALETTE};
use super::shard::Sharded;
use super::{model_and_data, par_map, round, sets, spread, Dropped, ExperimentError, Progress, Settings};
use crate::data::Dataset;
use crate::geometry::{GeometryOptions, LocalGeometry};
use crate::model::Model;

/// log10 of eigenvalues below 1e-20 (lambda_C, at round-off) is reported as -20.
pub const LOG10_FLOOR: f64 = -20.0;

#[derive(Debug, Clone)]
pub struct Config {
    pub model: String,
    /// The in-distribution dataset (the model's shape; the other sets are brought to it).
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
            samples: s.samples.unwrap_or(250),
            seed: s.seed,
            top_k: s.top_k,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SetSpectrum {
    pub name: String,
    pub count: usize,
    /// Median over the set's images of log10 lambda_k, k = 1..C (descending; the last is at the floor).
    pub median_log10_lambda: Vec<f64>,
    pub median_log10_trace: f64,
    /// Every image's log10 lambda_k (rows: images), for the box plots.
    #[serde(skip)]
    pub log10_lambda: Vec<Vec<f64>>,
    #[serde(skip)]
    pub log10_trace: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model: String,
    pub datasets: Vec<SetSpectrum>,
    /// Mean over k = 1..C-1 of W1(log10 lambda_k of set i, of set j), decades.
    pub distances: Vec<Vec<f64>>,
    pub distance: &'static str,
}

/// The sets the spectra are compared over, the dataset under study first, then the other
/// reference sets (MNIST, Fashion-MNIST, the 20 CIFAR-10 images), uniform noise and mirrored images
/// of the dataset, all in the dataset's shape: for an MNIST-shaped model MNIST, Fashion-MNIST,
/// CIFAR-10 grey, uniform noise, mirrored MNIST; for a colour model colour sets.
pub fn comparison_sets(data: &Dataset, samples: usize, seed: u64) -> Result<Vec<Dataset>, ExperimentError> {
    let count = samples.clamp(1, data.len());
    let shape = (data.channels, data.height, data.width);
    let picks = spread(data.len(), count);
    // Mirror other images than the sample: the same spread, shifted by half a gap.
    let half = (data.len() / count / 2).max(1);
    let mirror_picks: Vec<usize> = picks.iter().map(|i| (i + half) % data.len()).collect();
    let own = sets::family(&data.name);
    let mut out = vec![sets::subset(data, &picks, sets::short_name(&data.name))];
    for reference in ["MNIST", "Fashion-MNIST", "CIFAR-10"] {
        if own == Some(reference) {
            continue;
        }
        out.push(match reference {
            "CIFAR-10" if shape == (1, 28, 28) => sets::cifar10_grey(),
            "CIFAR-10" => {
                let c = sets::cifar10_rgb();
                sets::fitted(&c, &(0..c.len()).collect::<Vec<_>>(), shape)
            }
            name => {
                let d = Dataset::open(&name.to_ascii_lowercase())?;
                sets::fitted(&d, &spread(d.len(), count), shape)
            }
        });
    }
    out.push(sets::uniform_noise_shaped(count, seed, shape));
    out.push(sets::mirrored(data, &mirror_picks));
    Ok(out)
}

/// The experiment opened: the model and every set; its samples are the sets' images, set by set.
pub struct DatasetSpectra {
    model: Model,
    sets: Vec<Dataset>,
    top_k: Option<usize>,
}

/// What the report needs besides the samples.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub model: String,
    /// Each set's name and image count, in sample order.
    pub sets: Vec<(String, usize)>,
}

/// One image's spectrum.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    /// log10 lambda_k, k = 1..C; with top-k, k = 1..K+1 (G_K has rank <= K: lambda_{K+1} = 0 plays
    /// the part of the exact G's null lambda_C, so "every eigenvalue but the last" reads the same).
    pub log10_lambda: Vec<f64>,
    pub log10_trace: f64,
    /// The mass top-k left out of this image's G (absent when exact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<Dropped>,
}

impl DatasetSpectra {
    pub fn new(config: &Config) -> Result<DatasetSpectra, ExperimentError> {
        let settings = Settings {
            model: config.model.clone(),
            dataset: config.dataset.clone(),
            ..Settings::default()
        };
        let (model, data) = model_and_data(&settings)?;
        let sets = comparison_sets(&data, config.samples, config.seed)?;
        let top_k = config.top_k.filter(|&k| k < model.num_classes());
        Ok(DatasetSpectra { model, sets, top_k })
    }

    /// (set, image) of sample `k`.
    fn locate(&self, mut k: usize) -> (usize, usize) {
        for (s, set) in self.sets.iter().enumerate() {
            if k < set.len() {
                return (s, k);
            }
            k -= set.len();
        }
        unreachable!("sample index in range")
    }
}

impl Sharded for DatasetSpectra {
    const NAME: &'static str = "dataset-spectra";
    type Sample = Sample;
    type Header = Header;
    type Report = Report;

    fn open(settings: &Settings) -> Result<Self, ExperimentError> {
        DatasetSpectra::new(&Config::from(settings))
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

    fn dropped(sample: &Sample) -> Option<Dropped> {
        sample.dropped
    }

    fn run(&self, range: Range<usize>, progress: &Progress) -> Result<Vec<Sample>, ExperimentError> {
        progress.begin("dataset-spectra: G on every set", range.len() as u64);
        let picks: Vec<(usize, usize)> = range.map(|k| self.locate(k)).collect();
        par_map(&picks, progress, |&(s, i)| {
            let x = self.sets[s].image(i).expect("in range");
            // The spectrum only: no leaf basis.
            let geo = LocalGeometry::with(&self.model.network, x, GeometryOptions::walk(self.top_k));
            progress.advance(1);
            let mut log10_lambda: Vec<f64> = geo
                .eigenvalues
                .iter()
                .map(|&l| l.max(0.0).log10().max(LOG10_FLOOR))
                .collect();
            if self.top_k.is_some() {
                log10_lambda.push(LOG10_FLOOR);
            }
            Sample {
                log10_lambda,
                log10_trace: geo.trace.max(0.0).log10().max(LOG10_FLOOR),
                dropped: self.top_k.map(|_| Dropped::of(geo.dropped_mass)),
            }
        })
    }

    fn report(header: Header, samples: Vec<Sample>) -> Result<Report, ExperimentError> {
        Ok(report(header, samples))
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
    super::whole(&DatasetSpectra::new(config)?, progress)
}

/// W1 distance between two empirical distributions on the line: the integral over q of the gap
/// between their quantile functions.
pub fn wasserstein1(a: &[f64], b: &[f64]) -> f64 {
    let mut a: Vec<f64> = a.iter().copied().filter(|v| v.is_finite()).collect();
    let mut b: Vec<f64> = b.iter().copied().filter(|v| v.is_finite()).collect();
    if a.is_empty() || b.is_empty() {
        return f64::NAN;
    }
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (na, nb) = (a.len(), b.len());
    // Walk the merged breakpoints k / na and l / nb of the two step quantile functions.
    let (mut i, mut j, mut q, mut total) = (0, 0, 0.0, 0.0);
    while i < na && j < nb {
        let next_a = (i + 1) as f64 / na as f64;
        let next_b = (j + 1) as f64 / nb as f64;
        let next = next_a.min(next_b);
        total += (next - q) * (a[i] - b[j]).abs();
        q = next;
        if next_a <= next {
            i += 1;
        }
        if next_b <= next {
            j += 1;
        }
    }
    total
}

fn report(header: Header, samples: Vec<Sample>) -> Report {
    let mut samples = samples.into_iter();
    let mut datasets = Vec::new();
    for (name, count) in header.sets {
        let rows: Vec<Sample> = samples.by_ref().take(count).collect();
        let c = rows.first().map_or(0, |r| r.log10_lambda.len());
        let median_log10_lambda = (0..c)
            .map(|k| {
                round(
                    median(&rows.iter().map(|r| r.log10_lambda[k]).collect::<Vec<_>>()),
                    3,
                )
            })
            .collect();
        let log10_trace: Vec<f64> = rows.iter().map(|r| r.log10_trace).collect();
        datasets.push(SetSpectrum {
            name,
            count,
            median_log10_lambda,
            median_log10_trace: round(median(&log10_trace), 3),
            log10_lambda: rows.into_iter().map(|r| r.log10_lambda).collect(),
            log10_trace,
        });
    }
    let c = datasets[0].median_log10_lambda.len();
    let column = |s: &SetSpectrum, k: usize| -> Vec<f64> { s.log10_lambda.iter().map(|r| r[k]).collect() };
    let distances = datasets
        .iter()
        .map(|a| {
            datasets
                .iter()
                .map(|b| {
                    let sum: f64 = (0..c - 1)
                        .map(|k| wasserstein1(&column(a, k), &column(b, k)))
                        .sum();
                    round(sum / (c - 1) as f64, 3)
                })
                .collect()
        })
        .collect();
    Report {
        model: header.model,
        datasets,
        distances,
        distance: "mean over k = 1..C-1 of the Wasserstein-1 distance between the sets' distributions of log10 lambda_k (decades)",
    }
}

impl Report {
    pub fn summary(&self) -> String {
        let c = self.datasets[0].median_log10_lambda.len();
        let mut out = format!(
            "dataset-spectra ({}): median log10 of G's eigenvalues\n  {:<16} {:>5} {:>9} {:>9} {:>12}\n",
            self.model,
            "dataset",
            "count",
            "lambda_1",
            format!("lambda_{}", c - 1),
            "trace"
        );
        for s in &self.datasets {
            out += &format!(
                "  {:<16} {:>5} {:>9.2} {:>9.2} {:>12.2}\n",
                s.name,
                s.count,
                s.median_log10_lambda[0],
                s.median_log10_lambda[c - 2],
                s.median_log10_trace
            );
        }
        out += "  distances (mean W1 of log10 lambda_k, k < C, decades):\n";
        for (s, row) in self.datasets.iter().zip(&self.distances) {
            let cells: Vec<String> = row.iter().map(|d| format!("{d:>6.2}")).collect();
            out += &format!("  {:<16} {}\n", s.name, cells.join(" "));
        }
        out.trim_end().to_string()
    }

    pub fn plot(&self) -> Canvas {
        let mut c = Canvas::new(1500, 560);
        c.title(&format!(
            "Spectrum of G ({}) on {} and on other image sets",
            self.model, self.datasets[0].name
        ));
        let classes = self.datasets[0].median_log10_lambda.len();
        // Box plots: one group per eigenvalue index k = 1..C-1, then the trace; one box per set.
        let groups = classes; // C - 1 eigenvalues + the trace
        let all = self
            .datasets
            .iter()
            .flat_map(|s| {
                s.log10_lambda
                    .iter()
                    .flat_map(|r| r[..classes - 1].iter().copied())
                    .chain(s.log10_trace.iter().copied())
            })
            .filter(|v| *v > LOG10_FLOOR);
        let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
        let (lo, hi) = ((lo - 0.5).floor(), (hi + 0.5).ceil());
        let ax = Axes::new(80.0, 60.0, 880.0, 400.0, (-0.5, groups as f64 - 0.5), (lo, hi));
        let mut xt: plot::Ticks = (0..classes - 1)
            .map(|k| (k as f64, format!("λ{}", k + 1)))
            .collect();
        xt.push(((classes - 1) as f64, "trace".into()));
        ax.frame(
            &mut c,
            "log10 of each eigenvalue of G, per set (box: quartiles; whiskers: 1.5 IQR)",
            "",
            "log10",
            &xt,
            &plot::nice_ticks(lo, hi, 8),
        );
        let sets = self.datasets.len() as f64;
        let width = 0.8 / sets;
        for (s, set) in self.datasets.iter().enumerate() {
            let colour = PALETTE[s];
            for g in 0..groups {
                let values: Vec<f64> = if g + 1 < classes {
                    set.log10_lambda.iter().map(|r| r[g]).collect()
                } else {
                    set.log10_trace.clone()
                };
                let x = g as f64 - 0.4 + width * (s as f64 + 0.5);
                ax.boxplot(&mut c, x, width * 0.4, &BoxStats::of(&values), colour);
            }
        }
        let entries: Vec<(String, plot::Colour)> = self
            .datasets
            .iter()
            .enumerate()
            .map(|(s, d)| (format!("{} ({})", d.name, d.count), PALETTE[s]))
            .collect();
        c.legend(ax.left + ax.width - 215.0, ax.top + 290.0, &entries, 13.0);
        c.text(
            "eigenvalue index k (descending)",
            ax.left + ax.width / 2.0,
            ax.top + ax.height + 38.0,
            14.0,
            plot::BLACK,
            Align::Centre,
        );
        // Heat map of the distances.
        let labels: Vec<String> = self.datasets.iter().map(|d| d.name.clone()).collect();
        plot::heatmap(
            &mut c,
            1120.0,
            60.0,
            340.0,
            &self.distances,
            &labels,
            "distance (mean W1 of log10 λk, decades)",
        );
        c
    }
}

#[cfg(test)]
mod tests {
    use super::wasserstein1;

    #[test]
    fn w1_of_shifts_and_unequal_sizes() {
        assert!((wasserstein1(&[0.0, 1.0], &[2.0, 3.0]) - 2.0).abs() < 1e-12);
        assert!((wasserstein1(&[0.0], &[1.0, 1.0, 1.0]) - 1.0).abs() < 1e-12);
        // Uniform on {0, 1} against the point 0.5: half the mass moves 0.5.
        assert!((wasserstein1(&[0.0, 1.0], &[0.5]) - 0.5).abs() < 1e-12);
    }
}
