//! Shards: an experiment split into independent pieces that any scheduler (a Slurm array job,
//! Kubernetes Jobs, GNU parallel, a loop) runs, and an exact merge of the pieces.
//!
//! An experiment is a list of `sample_count()` samples (images, pairs, points, ...) that are computed
//! independently of each other, and a report made from all of them in order. Shard K of N computes
//! the contiguous block `Shard::range` of that list, which depends only on K, N and the list, never
//! on which shards ran first or where; it writes a `Part` holding every number the report and the
//! figure need from its samples, plus the run's identity (`RunId`: experiment, dataleaf version,
//! the model files' SHA-256, dataset, seed, requested samples, and for a top-k run K and C) and the
//! experiment's `header` (its
//! settings and whatever the report needs besides the samples). Merging checks that the parts are
//! one run, split one way, each shard once, and rebuilds the report from the samples in order. A
//! run without `--shard` is shard 1/1 passed through the same text and the same merge, so a merge
//! is exactly the single run, to the last bit.
//!
//! # Giving an experiment shards
//!
//! Implement [`Sharded`] for a type in the experiment's file (see `ood.rs` for a short one):
//!
//! ```ignore
//! impl Sharded for SameLeaf {
//!     const NAME: &'static str = "same-leaf";
//!     type Sample = PairResult;          // Serialize + Deserialize: what one sample gives
//!     type Header = Header;              // settings + names the report needs; same in every shard
//!     type Report = Report;
//!     fn open(s: &Settings) -> Result<Self, ExperimentError> { /* model, data, the sample list */ }
//!     fn header(&self) -> Header { .. }
//!     fn sample_count(&self) -> usize { self.pairs.len() }
//!     fn classes(&self) -> usize { self.model.num_classes() }
//!     fn dropped(s: &PairResult) -> Option<Dropped> { s.dropped } // top-k: the mass left out of G
//!     fn run(&self, range: Range<usize>, p: &Progress) -> Result<Vec<PairResult>, ExperimentError> {
//!         par_map(&self.pairs[range], p, |pair| self.one(pair))
//!     }
//!     fn report(h: Header, samples: Vec<PairResult>) -> Result<Report, ExperimentError> { .. }
//!     fn summary(r: &Report) -> String { r.summary() }
//!     fn figure(r: &Report) -> Canvas { r.plot() }
//! }
//! ```
//!
//! then list it in `experiments::entries()` (one line, `entry::<same_leaf::SameLeaf>()`) beside its
//! name in `NAMES`, `claim` and `default_samples`. `report` must not need the model: a merge runs
//! without it. A sample's floats pass through JSON text in the single run and in a merge alike,
//! so the two agree to the bit; a float that may be infinite or NaN takes
//! `#[serde(with = "finite")]` (JSON has no such numbers). The merge is exact when each sample is
//! computed the same way in every process (seeds by sample, no reductions whose order depends on
//! thread timing). An experiment not split yet can still be listed as one sample: `sample_count`
//! 1 and a `Sample` holding everything its report needs (then only `--shard 1/1` makes sense).

use std::fmt;
use std::ops::Range;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::plot::Canvas;
use super::{ExperimentError, Progress, Settings};

/// The version of the part format, checked by merge.
pub const PART_FORMAT: u32 = 1;

/// Shard `index` of `count` (1-based, as `--shard 2/8` and Slurm's 1-based array ids write it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The whole run as one shard.
    pub const WHOLE: Shard = Shard { index: 1, count: 1 };

    /// Parse `K/N` with 1 <= K <= N.
    pub fn parse(text: &str) -> Result<Shard, String> {
        let bad = || format!("--shard {text:?}: write K/N with 1 <= K <= N, e.g. --shard 2/8");
        let (k, n) = text.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) = (
            k.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// This shard's samples among `total`: the contiguous block [(K-1) T / N, K T / N). Blocks
    /// keep a shard's samples together (one model, one set), and the split depends on K, N and T
    /// only.
    pub fn range(&self, total: usize) -> Range<usize> {
        (self.index - 1) * total / self.count..self.index * total / self.count
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// An experiment as independent samples and a report made from them (see the module comment).
pub trait Sharded: Sized + Sync {
    /// The command-line name.
    const NAME: &'static str;
    /// Everything one sample contributes to the report and the figure.
    type Sample: Serialize + DeserializeOwned + Send;
    /// The settings and names the report needs besides the samples; identical in every shard.
    type Header: Serialize + DeserializeOwned;
    type Report: Serialize;
    /// Open the model and data and fix the list of samples (cheap next to `run`; every shard does it).
    fn open(settings: &Settings) -> Result<Self, ExperimentError>;
    fn header(&self) -> Self::Header;
    /// How many samples the whole run has.
    fn sample_count(&self) -> usize;
    /// The class count C of the model G is computed for (`--top-k K` with K < C truncates G).
    fn classes(&self) -> usize;
    /// The dropped probability mass of the G's this sample computed; `None` when G was exact.
    fn dropped(sample: &Self::Sample) -> Option<super::Dropped>;
    /// Compute the samples in `range` (on all cores), in order, reporting progress.
    fn run(&self, range: Range<usize>, progress: &Progress) -> Result<Vec<Self::Sample>, ExperimentError>;
    /// The report from the header and every sample, in order (no model: merges run without one).
    fn report(header: Self::Header, samples: Vec<Self::Sample>) -> Result<Self::Report, ExperimentError>;
    fn summary(report: &Self::Report) -> String;
    fn figure(report: &Self::Report) -> Canvas;
}

/// What makes two parts pieces of the same run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunId {
    pub experiment: String,
    /// The dataleaf version that computed it.
    pub dataleaf: String,
    /// SHA-256 of each file of the model (a JSON model's architecture and its weights; an ONNX
    /// file; the embedded default is named instead, since it is part of the binary).
    pub model_sha256: Vec<String>,
    pub dataset: String,
    pub seed: u64,
    /// As requested: a count, "all", or "default".
    pub samples: String,
    /// G from the top K of C classes; absent when G is exact (so exact runs' parts read as before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<TopK>,
}

/// A top-k run: G from the `k` most probable of the model's `classes` classes (k < classes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopK {
    pub k: usize,
    pub classes: usize,
}

impl TopK {
    /// The top-k option of `settings` for a model of `classes` classes (`None` when exact).
    pub fn of(settings: &Settings, classes: usize) -> Option<TopK> {
        settings.top_k_for(classes).map(|k| TopK { k, classes })
    }

    /// "G from the top 3 of 10 classes", or "the exact G".
    pub fn describe(top_k: Option<TopK>) -> String {
        match top_k {
            Some(t) => format!("G from the top {} of {} classes", t.k, t.classes),
            None => "the exact G".into(),
        }
    }
}

/// One shard's output: the run it belongs to, where it sits, and its samples.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Part {
    /// The part format (`PART_FORMAT`).
    pub dataleaf_part: u32,
    pub run: RunId,
    /// The model as given on the command line (for a reader; paths differ between machines, so
    /// only the digests are compared).
    pub model: String,
    pub header: Value,
    /// "K/N".
    pub shard: String,
    /// Samples in the whole run, and this part's first.
    pub total: usize,
    pub first: usize,
    pub samples: Vec<Value>,
}

impl Part {
    pub fn shard(&self) -> Result<Shard, String> {
        Shard::parse(&self.shard)
    }
}

/// Run one shard of `E`.
pub fn run_part<E: Sharded>(
    settings: &Settings,
    shard: Shard,
    progress: &Progress,
) -> Result<Part, ExperimentError> {
    let mut run = RunId::of(E::NAME, settings)?;
    let experiment = E::open(settings)?;
    // K as it acts: K >= C is the exact G, the same run as no K at all.
    run.top_k = TopK::of(settings, experiment.classes());
    let total = experiment.sample_count();
    let range = shard.range(total);
    let samples = experiment.run(range.clone(), progress)?;
    progress.check()?;
    if samples.len() != range.len() {
        return Err(ExperimentError::Invalid(format!(
            "{}: shard {shard} computed {} samples, expected {}",
            E::NAME,
            samples.len(),
            range.len()
        )));
    }
    Ok(Part {
        dataleaf_part: PART_FORMAT,
        run,
        model: settings.model.clone(),
        header: to_value(&experiment.header()),
        shard: shard.to_string(),
        total,
        first: range.start,
        samples: samples.iter().map(to_value).collect(),
    })
}

/// The report, summary and figure of `E` from a header and all samples in order (already checked
/// to be one complete run). A top-k run's report also says what G was made of: JSON `"top_k"` and
/// `"dropped_mass"` (mean and max over every G the run computed), a summary line and a caption
/// under the figure; an exact run's are exactly what they were before top-k existed.
pub fn finish<E: Sharded>(
    top_k: Option<TopK>,
    header: Value,
    samples: Vec<Value>,
) -> Result<super::Outcome, ExperimentError> {
    let bad = |what: &str, e: serde_json::Error| {
        ExperimentError::Invalid(format!(
            "{}: the parts' {what} do not read as this experiment's: {e}",
            E::NAME
        ))
    };
    let header: E::Header = serde_json::from_value(header).map_err(|e| bad("header", e))?;
    let samples = samples
        .into_iter()
        .map(serde_json::from_value)
        .collect::<Result<Vec<E::Sample>, _>>()
        .map_err(|e| bad("samples", e))?;
    let dropped = samples
        .iter()
        .filter_map(E::dropped)
        .fold(super::Dropped::default(), super::Dropped::join);
    let report = E::report(header, samples)?;
    let mut figure = E::figure(&report);
    let mut json = serde_json::to_value(&report).expect("reports serialise");
    let mut summary = E::summary(&report);
    if let Some(t) = top_k {
        if let Value::Object(map) = &mut json {
            map.insert("top_k".into(), t.k.into());
            map.insert(
                "dropped_mass".into(),
                serde_json::json!({"mean": dropped.mean(), "max": dropped.max, "points": dropped.points}),
            );
        }
        let line = format!(
            "{}: dropped probability mass over the {} points where G was computed: mean {:.3e}, max {:.3e}",
            TopK::describe(top_k),
            dropped.points,
            dropped.mean(),
            dropped.max
        );
        summary = format!("{summary}\n{line}");
        figure = figure.with_caption(&line);
    }
    Ok(super::Outcome {
        name: E::NAME,
        json,
        summary,
        svg: figure.to_svg(),
        plot: figure.into_image(),
    })
}

/// A sample or header as JSON (non-finite floats through `finite`).
fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("samples and headers serialise")
}

impl RunId {
    pub fn of(experiment: &str, settings: &Settings) -> Result<RunId, ExperimentError> {
        Ok(RunId {
            experiment: experiment.to_string(),
            dataleaf: env!("CARGO_PKG_VERSION").to_string(),
            model_sha256: model_digests(&settings.model)?,
            dataset: settings.dataset.clone(),
            seed: settings.seed,
            samples: match settings.samples {
                None => "default".into(),
                Some(super::ALL) => "all".into(),
                Some(n) => n.to_string(),
            },
            // Set by `run_part` once the model's class count is known.
            top_k: None,
        })
    }

    /// The first field in which two runs differ, for the merge's message.
    pub fn difference(&self, other: &RunId) -> Option<String> {
        if self.top_k != other.top_k {
            return Some(format!(
                "top_k: {} vs {}",
                TopK::describe(self.top_k),
                TopK::describe(other.top_k)
            ));
        }
        let a = serde_json::to_value(self).expect("serialises");
        let b = serde_json::to_value(other).expect("serialises");
        let (Value::Object(a), Value::Object(b)) = (a, b) else {
            return None;
        };
        a.iter()
            .find(|(k, v)| b.get(k.as_str()) != Some(v))
            .map(|(k, v)| format!("{k} {} vs {}", v, b.get(k.as_str()).unwrap_or(&Value::Null)))
    }
}

/// The SHA-256 of the files a model spec opens: the file itself, and for a JSON architecture the
/// weights beside it; a folder (a checkpoint series) gives every file in it, by name. The
/// embedded default is named by the binary's version (it is compiled in).
pub fn model_digests(spec: &str) -> Result<Vec<String>, ExperimentError> {
    use std::path::{Path, PathBuf};
    if spec == crate::model::DEFAULT_MODEL {
        return Ok(vec![format!(
            "embedded {spec} of dataleaf {}",
            env!("CARGO_PKG_VERSION")
        )]);
    }
    let path = Path::new(spec);
    let path: PathBuf = if !path.exists() && !spec.contains(['/', '\\']) {
        crate::model::models_dir().join(format!("{spec}.json"))
    } else {
        path.to_path_buf()
    };
    let read = |p: &Path| {
        std::fs::read(p)
            .map(|b| super::digest::sha256_hex(&b))
            .map_err(|e| ExperimentError::Invalid(format!("{}: cannot read the model: {e}", p.display())))
    };
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
            .map_err(|e| {
                ExperimentError::Invalid(format!("{}: cannot read the folder: {e}", path.display()))
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        return files.iter().map(|p| read(p)).collect();
    }
    let mut out = vec![read(&path)?];
    let weights = path.with_extension("safetensors");
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) && weights.is_file() {
        out.push(read(&weights)?);
    }
    Ok(out)
}

/// Check that `parts` (each with the file it came from) are one complete run, each shard once, and
/// return them in shard order. Every refusal is one line naming the files.
pub fn check(parts: Vec<(String, Part)>) -> Result<Vec<(String, Part)>, String> {
    let Some((first_file, first)) = parts.first() else {
        return Err("merge: name the part files to merge".into());
    };
    let first_shard = first.shard().map_err(|e| format!("{first_file}: {e}"))?;
    let count = first_shard.count;
    let mut slots: Vec<Option<(String, Part)>> = (0..count).map(|_| None).collect();
    for (file, part) in parts.iter() {
        if part.dataleaf_part != PART_FORMAT {
            return Err(format!(
                "{file}: part format {} (this dataleaf reads {PART_FORMAT})",
                part.dataleaf_part
            ));
        }
        if let Some(diff) = part.run.difference(&first.run) {
            return Err(format!(
                "{file} is a part of another run than {first_file} ({diff})"
            ));
        }
        if part.header != first.header || part.total != first.total {
            return Err(format!(
                "{file} is a part of another run than {first_file} (the experiment's settings differ)"
            ));
        }
        let shard = part.shard().map_err(|e| format!("{file}: {e}"))?;
        if shard.count != count {
            return Err(format!(
                "{file} is shard {shard} but {first_file} is {first_shard}: parts of different splits"
            ));
        }
        let range = shard.range(part.total);
        if part.first != range.start || part.samples.len() != range.len() {
            return Err(format!(
                "{file}: shard {shard} of {} samples should hold samples {}..{}, it holds {} from {} (truncated or edited)",
                part.total,
                range.start,
                range.end,
                part.samples.len(),
                part.first
            ));
        }
        let slot = &mut slots[shard.index - 1];
        if let Some((earlier, _)) = slot {
            return Err(format!("shard {shard} given twice: {earlier} and {file}"));
        }
        *slot = Some((file.clone(), part.clone()));
    }
    let missing: Vec<String> = slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.is_none())
        .map(|(k, _)| (k + 1).to_string())
        .collect();
    if !missing.is_empty() {
        let again: Vec<String> = missing.iter().map(|k| format!("--shard {k}/{count}")).collect();
        return Err(format!(
            "missing {} of {count} shards: {} (finished: {}); run {} and merge again",
            missing.len(),
            missing.join(", "),
            count - missing.len(),
            again.join(", ")
        ));
    }
    Ok(slots.into_iter().map(|s| s.expect("every slot filled")).collect())
}

/// Serde for an f64 that may be infinite or NaN (JSON has no such numbers): finite values as
/// numbers, the others as the strings "inf", "-inf", "nan".
pub mod finite {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("nan")
        } else if *v > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Num {
            N(f64),
            S(String),
        }
        match Num::deserialize(d)? {
            Num::N(v) => Ok(v),
            Num::S(s) => match s.as_str() {
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                "nan" => Ok(f64::NAN),
                _ => Err(serde::de::Error::custom(format!("not a number: {s:?}"))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Shard;

    #[test]
    fn shards_cover_every_sample_once() {
        for total in [0, 1, 7, 40, 250] {
            for count in 1..=9 {
                let mut next = 0;
                for index in 1..=count {
                    let r = Shard { index, count }.range(total);
                    assert_eq!(r.start, next);
                    next = r.end;
                }
                assert_eq!(next, total);
            }
        }
        assert_eq!(Shard::parse("2/8"), Ok(Shard { index: 2, count: 8 }));
        assert!(Shard::parse("0/3").is_err() && Shard::parse("4/3").is_err() && Shard::parse("3").is_err());
    }
}
