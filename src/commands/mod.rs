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
