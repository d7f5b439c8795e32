//! `dataleaf experiment NAME`: one of the papers' experiments (src/experiments) with a progress bar,
//! its summary or JSON on stdout, and optionally its figure as a PNG.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Result};

use dataleaf::experiments::{self, Progress, Settings};

#[derive(clap::Args)]
pub struct ExperimentArgs {
    /// off-leaf, leaves, training, dataset-spectra, involutivity, denoise or ood.
    pub name: String,
    /// The experiment's main count (images, pairs or points); each has its own default.
    #[arg(long)]
    pub samples: Option<usize>,
    #[arg(long)]
    pub json: bool,
    /// Write the experiment's figure as a PNG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// The MNIST model under study (training always uses the shipped LeNet series).
    #[arg(long, default_value = dataleaf::model::DEFAULT_MODEL)]
    pub model: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(args: ExperimentArgs) -> Result<()> {
    // Arguments first, so their errors come before any work.
    if experiments::claim(&args.name).is_none() {
        return Err(anyhow!(
            "unknown experiment {:?}; choose one of {}",
            args.name,
            experiments::NAMES.join(", ")
        ));
    }
    if args.samples == Some(0) {
        return Err(anyhow!("--samples must be at least 1"));
    }
    if let Some(path) = &args.plot {
        if path.extension().is_none_or(|e| !e.eq_ignore_ascii_case("png")) {
            return Err(anyhow!(
                "--plot {}: the figure is a PNG; name a .png file",
                path.display()
            ));
        }
    }
    let settings = Settings {
        samples: args.samples,
        model: args.model,
        seed: args.seed,
    };
    let progress = Progress::new();
    let bar = indicatif::ProgressBar::new(1);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {percent:>3} %  ({elapsed}, eta {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let outcome = std::thread::scope(|s| {
        let worker = s.spawn(|| experiments::run(&args.name, &settings, &progress));
        while !worker.is_finished() {
            let (stage, done, total) = progress.snapshot();
            bar.set_length(total.max(1));
            bar.set_position(done.min(total));
            bar.set_message(stage);
            std::thread::sleep(Duration::from_millis(100));
        }
        worker
            .join()
            .map_err(|_| anyhow!("the experiment stopped unexpectedly"))
    })?;
    bar.finish_and_clear();
    let outcome = outcome?;
    if let Some(path) = &args.plot {
        outcome
            .plot
            .save(path)
            .map_err(|e| anyhow!("--plot {}: cannot write the figure: {e}", path.display()))?;
    }
    if args.json {
        println!("{}", outcome.json);
    } else {
        println!("{}", outcome.summary);
        if let Some(path) = &args.plot {
            println!("figure: {}", path.display());
        }
    }
    Ok(())
}
