//! `dataleaf train`: SGD on an MNIST architecture with a progress bar and a checkpoint per epoch.

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};

use dataleaf::data::Dataset;
use dataleaf::model::{train, zoo};

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Architecture: medium-cnn (the papers'), lenet, or mlp.
    #[arg(long)]
    pub arch: String,
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Folder for the checkpoints.
    #[arg(long, default_value = "checkpoints")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, default_value_t = 0.01, allow_negative_numbers = true)]
    pub lr: f32,
    #[arg(long, default_value_t = 60)]
    pub batch: usize,
    /// Training images: an IDX folder or images file; the shipped MNIST train set by default.
    #[arg(long, default_value = "mnist-train")]
    pub train_data: String,
    /// Images the test accuracy of each checkpoint is measured on.
    #[arg(long, default_value = "mnist")]
    pub test_data: String,
}

pub fn run(args: TrainArgs) -> Result<()> {
    let arch = zoo::mnist_architecture(&args.arch).ok_or_else(|| {
        anyhow!(
            "unknown architecture {:?}; choose one of {}",
            args.arch,
            zoo::ARCHITECTURES.join(", ")
        )
    })?;
    if args.batch == 0 {
        return Err(anyhow!("--batch must be a positive number of images, got 0"));
    }
    if !(args.lr.is_finite() && args.lr > 0.0) {
        return Err(anyhow!("--lr must be a positive number, got {}", args.lr));
    }
    // Before the data is read and scored: a bad folder should not cost a pass over the test set.
    std::fs::create_dir_all(&args.out).with_context(|| {
        format!(
            "--out {}: cannot create the checkpoint folder",
            args.out.display()
        )
    })?;
    let train_set = Dataset::open(&args.train_data).context("training data")?;
    let test_set = Dataset::open(&args.test_data).context("test data")?;
    let epochs = args.epochs;
    let config = train::TrainConfig {
        arch: args.arch,
        epochs,
        learning_rate: args.lr,
        batch_size: args.batch,
        seed: args.seed,
        out_dir: args.out,
    };
    let bar = indicatif::ProgressBar::new(train_set.len().div_ceil(args.batch) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "epoch {prefix} [{bar:30}] {pos}/{len} batches  {msg}  ({elapsed}, eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    train::train(&config, arch, &train_set, &test_set, |event| match event {
        train::TrainEvent::Batch {
            epoch,
            batch,
            loss,
            running_accuracy,
            ..
        } => {
            if batch == 1 {
                bar.reset();
                bar.set_prefix(format!("{epoch}/{epochs}"));
            }
            bar.set_position(batch as u64);
            if batch % 10 == 0 {
                bar.set_message(format!("loss {loss:.4}  acc {:.2} %", 100.0 * running_accuracy));
            }
        }
        train::TrainEvent::Checkpoint { path, record } => bar.suspend(|| {
            println!(
                "epoch {:>2}: test accuracy {:.2} %, {:.1} s -> {}",
                record.epoch,
                100.0 * record.test_accuracy,
                record.epoch_seconds,
                path.display()
            )
        }),
    })?;
    bar.finish_and_clear();
    Ok(())
}
