//! The headless subcommands. Each opens what it needs, checks it, and prints text or JSON.

pub mod bench;
pub mod chart;
pub mod directions;
pub mod experiment;
pub mod memory;
pub mod reach;
pub mod simec;
pub mod spectrum;
pub mod train;
pub mod walk;

use anyhow::{anyhow, Result};

use dataleaf::data::Dataset;
use dataleaf::model::Model;

/// Options every headless command takes.
#[derive(clap::Args)]
pub struct Inputs {
    /// Model: a .json architecture file (weights in the .safetensors beside it) or a shipped model's name.
    #[arg(long, default_value = dataleaf::model::DEFAULT_MODEL)]
    pub model: String,
    /// Dataset: mnist, fashion-mnist, mnist-train, an IDX folder or an IDX images file.
    #[arg(long, default_value = "mnist")]
    pub dataset: String,
}

/// The geometry option every command that computes G takes (shared/REFERENCE.md section 8).
#[derive(clap::Args, Clone, Copy, Debug, Default)]
pub struct GeometryArgs {
    /// Build G from the K most probable classes only (K + 1 reverse rows instead of C); the
    /// probability mass left out is reported beside the result. K >= C is exact (the default).
    #[arg(long = "top-k", value_name = "K", value_parser = parse_top_k)]
    pub top_k: Option<usize>,
}

impl GeometryArgs {
    /// The options for a model of `classes` classes: `None` when K >= C (exact).
    pub fn options(&self, basis: bool) -> dataleaf::geometry::GeometryOptions {
        dataleaf::geometry::GeometryOptions {
            top_k: self.top_k,
            basis,
        }
    }

    /// The JSON fields that say what G was made of: "top_k" (null when exact) and "dropped_mass".
    pub fn json(&self, classes: usize, dropped_mass: f64) -> serde_json::Value {
        serde_json::json!({
            "top_k": self.top_k.filter(|&k| k < classes),
            "dropped_mass": dropped_mass,
        })
    }

    /// The text line that says the same, or None when G is exact.
    pub fn line(&self, classes: usize, dropped_mass: f64) -> Option<String> {
        self.top_k.filter(|&k| k < classes).map(|k| {
            format!("G from the top {k} of {classes} classes: dropped probability mass {dropped_mass:.3e}")
        })
    }
}

/// `--top-k K`: a count of at least 1.
fn parse_top_k(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("K must be at least 1 (the number of most probable classes kept in G)".into()),
        Ok(k) => Ok(k),
        Err(_) => Err(format!("{text:?} is not a class count")),
    }
}

/// Add `fields` (a JSON object) to the object `out`.
pub fn extend_json(out: &mut serde_json::Value, fields: serde_json::Value) {
    if let (Some(out), serde_json::Value::Object(fields)) = (out.as_object_mut(), fields) {
        out.extend(fields);
    }
}

/// Open a model and a dataset and check they fit each other.
pub fn open_pair(model: &str, dataset: &str) -> Result<(Model, Dataset)> {
    let model = Model::open(model)?;
    let data = Dataset::open(dataset)?;
    model.check_dataset(&data).map_err(|m| anyhow!(m))?;
    Ok((model, data))
}

/// Image `index` of the dataset, or a message saying the valid range.
pub fn image_at<'a>(data: &'a Dataset, index: usize, what: &str) -> Result<&'a [f32]> {
    // Check the index itself first: `Dataset::image` multiplies it by the image size, which wraps
    // for huge indices (2^60 * 784 == 0 mod 2^64) and would hand back image 0.
    (index < data.len())
        .then(|| data.image(index))
        .flatten()
        .ok_or_else(|| {
            anyhow!(
                "{what} {index} is out of range: {} has {} images (0..={})",
                data.name,
                data.len(),
                data.len().saturating_sub(1)
            )
        })
}

pub fn evaluate(model: &str, dataset: &str, json: bool) -> Result<()> {
    let (model, data) = open_pair(model, dataset)?;
    let acc = model.accuracy(&data);
    if json {
        let out = serde_json::json!({"model": model.name(), "dataset": data.name, "count": data.len(), "accuracy": acc});
        println!("{out}");
    } else {
        println!(
            "{} on {} ({} images): {:.2} %",
            model.name(),
            data.name,
            data.len(),
            100.0 * acc
        );
    }
    Ok(())
}
