//! `dataleaf train`: SGD on an MNIST architecture with a progress bar and a checkpoint per epoch.

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};

use dataleaf::data::{Dataset, FASHION_MNIST_CLASSES};
use dataleaf::model::arch::Normalize;
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
    /// The domain: mnist (digits) or fashion-mnist (Zalando's clothes). It sets the model's name,
    /// class names and input normalisation, and the default training and test data.
    #[arg(long, default_value = "mnist")]
    pub dataset: String,
    /// Training images: an IDX folder or images file. Default: the shipped MNIST train set, or for
    /// fashion-mnist the training set of the Debian package dataset-fashion-mnist.
    #[arg(long)]
    pub train_data: Option<String>,
    /// Images the test accuracy of each checkpoint is measured on (default: the domain's test set).
    #[arg(long)]
    pub test_data: Option<String>,
}

/// Where `apt-get install dataset-fashion-mnist` puts the Fashion-MNIST training images.
const FASHION_TRAIN: &str = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz";

/// Fashion-MNIST's training-set pixel mean and standard deviation (the usual torchvision figures).
const FASHION_NORMALIZE: (f32, f32) = (0.2860, 0.3530);

pub fn run(args: TrainArgs) -> Result<()> {
    let mut arch = zoo::mnist_architecture(&args.arch).ok_or_else(|| {
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
    let domain = args.dataset.to_ascii_lowercase();
    let default_train = match domain.as_str() {
        "mnist" => "mnist-train",
        "fashion-mnist" => {
            // The same architecture on clothes: its own name, class names and normalisation.
            arch.name = format!("fashion-mnist-{}", args.arch);
            arch.classes = FASHION_MNIST_CLASSES.iter().map(|c| c.to_string()).collect();
            arch.normalize = Some(Normalize {
                mean: vec![FASHION_NORMALIZE.0],
                std: vec![FASHION_NORMALIZE.1],
            });
            FASHION_TRAIN
        }
        other => {
            return Err(anyhow!(
                "--dataset {other:?}: train knows mnist and fashion-mnist (give --train-data for others)"
            ))
        }
    };
    let train_spec = args.train_data.as_deref().unwrap_or(default_train);
    if args.train_data.is_none() && domain == "fashion-mnist" && !std::path::Path::new(FASHION_TRAIN).exists()
    {
        return Err(anyhow!(
            "{FASHION_TRAIN}: not found; install the Debian package dataset-fashion-mnist, or give \
             --train-data PATH (scripts/train-fashion.sh does both)"
        ));
    }
    let train_set = Dataset::open(train_spec).context("training data")?;
    let test_set = Dataset::open(args.test_data.as_deref().unwrap_or(&domain)).context("test data")?;
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
