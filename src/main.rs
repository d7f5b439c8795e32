//! The command line: no subcommand opens the desktop app; subcommands do headless work.

mod commands;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Result};
use clap::{Parser, Subcommand};

use dataleaf::model::DEFAULT_MODEL;

#[derive(Parser)]
#[command(
    name = "dataleaf",
    version,
    about = "A classifier's view of its input space: the data leaf and the noise leaves"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    app: AppArgs,
}

/// Options of the desktop app (no subcommand).
#[derive(clap::Args)]
struct AppArgs {
    /// Model to open (default: the one used last, else the shipped mnist-medium-cnn).
    #[arg(long)]
    model: Option<String>,
    /// Dataset to open (default: the one used last, else the embedded MNIST test set).
    #[arg(long)]
    dataset: Option<String>,
    /// Play one of the papers' walks: its number (1-5) or a word of its title, e.g. 4185.
    #[arg(long)]
    preset: Option<String>,
    /// Start walking at once.
    #[arg(long)]
    play: bool,
    /// Save a PNG of the window once the walks have taken --screenshot-step steps, then quit.
    #[arg(long, value_name = "FILE")]
    screenshot: Option<PathBuf>,
    #[arg(long, default_value_t = 150)]
    screenshot_step: usize,
    /// Start from the defaults; this run neither reads nor changes the state remembered between runs.
    #[arg(long)]
    fresh: bool,
    /// Large type, for a lecture hall.
    #[arg(long)]
    lecture: bool,
}

/// Options every headless command takes.
#[derive(clap::Args)]
struct Inputs {
    /// Model: a .json architecture file (weights in the .safetensors beside it) or a shipped model's name.
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: String,
    /// Dataset: mnist, fashion-mnist, mnist-train, an IDX folder or an IDX images file.
    #[arg(long, default_value = "mnist")]
    dataset: String,
}

#[derive(Subcommand)]
enum Command {
    /// G's spectrum, probabilities, rank and trace at one image.
    Spectrum {
        #[command(flatten)]
        inputs: Inputs,
        #[arg(long)]
        index: usize,
        #[arg(long)]
        json: bool,
    },
    /// Walk from an image along the data leaf (leaf), across leaves (kernel), or straight (free).
    Walk {
        #[command(flatten)]
        inputs: Inputs,
        /// leaf, kernel or free.
        #[arg(long)]
        mode: String,
        #[arg(long)]
        start: usize,
        #[arg(long)]
        target: Option<usize>,
        /// Walk toward the horizontal mirror of the target (a symbol not in the dataset).
        #[arg(long)]
        flip_target: bool,
        /// Kernel steps from the start before the walk: a noisy start on another leaf.
        #[arg(long, default_value_t = 0)]
        noise_steps: usize,
        /// Step length in pixel units (default 0.0308, the papers' 0.1 in normalised units).
        #[arg(long, allow_negative_numbers = true)]
        step: Option<f32>,
        /// Stop distance to the target in pixel units (default 0.3081).
        #[arg(long, allow_negative_numbers = true)]
        stop: Option<f32>,
        /// Steps at most (default 10000 for leaf and free, 1000 for kernel).
        #[arg(long)]
        max_steps: Option<usize>,
        /// Seed of the kernel walk's random direction.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Leaf walk: weight of the transverse part of each step, 0 to 1 (0 = strictly on the leaf;
        /// default 1/sqrt(n - rank), the papers' effective walk).
        #[arg(long, allow_negative_numbers = true)]
        transverse: Option<f32>,
        #[arg(long)]
        json: bool,
        /// Write 9 evenly spaced frames, labelled, side by side as a PNG.
        #[arg(long)]
        strip: Option<PathBuf>,
        /// Write the walk as an animated GIF.
        #[arg(long)]
        gif: Option<PathBuf>,
    },
    /// Train an MNIST model with plain SGD, writing a checkpoint (JSON + safetensors) every epoch.
    Train {
        /// Architecture: medium-cnn (the papers'), lenet, or mlp.
        #[arg(long)]
        arch: String,
        #[arg(long, default_value_t = 10)]
        epochs: usize,
        /// Folder for the checkpoints.
        #[arg(long, default_value = "checkpoints")]
        out: PathBuf,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value_t = 0.01, allow_negative_numbers = true)]
        lr: f32,
        #[arg(long, default_value_t = 60)]
        batch: usize,
        /// Training images: an IDX folder or images file; the shipped MNIST train set by default.
        #[arg(long, default_value = "mnist-train")]
        train_data: String,
        /// Images the test accuracy of each checkpoint is measured on.
        #[arg(long, default_value = "mnist")]
        test_data: String,
    },
    /// Accuracy of a model on a dataset.
    Evaluate {
        #[command(flatten)]
        inputs: Inputs,
        #[arg(long)]
        json: bool,
    },
    /// Per-step timings on the default walk (medians): forward, Jacobian, spectrum, leaf and kernel steps.
    Bench {
        #[command(flatten)]
        inputs: Inputs,
        #[arg(long, default_value_t = 50)]
        runs: usize,
        #[arg(long)]
        json: bool,
    },
    /// Run one of the papers' experiments: off-leaf, leaves, training, dataset-spectra, involutivity,
    /// denoise or ood (README, "Experiments").
    Experiment {
        /// off-leaf, leaves, training, dataset-spectra, involutivity, denoise or ood.
        name: String,
        /// The experiment's main count (images, pairs or points); each has its own default.
        #[arg(long)]
        samples: Option<usize>,
        #[arg(long)]
        json: bool,
        /// Write the experiment's figure as a PNG.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// The MNIST model under study (training always uses the shipped LeNet series).
        #[arg(long, default_value = DEFAULT_MODEL)]
        model: String,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version print in full; a usage error is one line, as every other error.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let text = e.render().to_string();
            // clap's message is the first paragraph; the usage block after it is left out.
            let message: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let message = message.join(" ");
            eprintln!(
                "error: {} (see `dataleaf --help`)",
                message.trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the context chain and the cause, never a backtrace.
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

fn run_app(args: AppArgs) -> Result<()> {
    let preset = match &args.preset {
        Some(spec) => Some(
            dataleaf::app::find_preset(spec)
                .ok_or_else(|| anyhow!("no preset {spec:?}: give 1 to {}", dataleaf::app::PRESETS.len()))?,
        ),
        None => None,
    };
    dataleaf::app::run(dataleaf::app::AppOptions {
        model: args.model,
        dataset: args.dataset,
        preset,
        play: args.play,
        screenshot: args.screenshot,
        screenshot_step: args.screenshot_step,
        fresh: args.fresh,
        lecture: args.lecture,
    })
    .map_err(|m| anyhow!(m))
}

fn run(cli: Cli) -> Result<()> {
    let Some(command) = cli.command else {
        return run_app(cli.app);
    };
    match command {
        Command::Spectrum { inputs, index, json } => {
            commands::spectrum::run(&inputs.model, &inputs.dataset, index, json)
        }
        Command::Walk {
            inputs,
            mode,
            start,
            target,
            flip_target,
            noise_steps,
            step,
            stop,
            max_steps,
            seed,
            transverse,
            json,
            strip,
            gif,
        } => commands::walk::run(commands::walk::WalkArgs {
            model: inputs.model,
            dataset: inputs.dataset,
            mode,
            start,
            target,
            flip_target,
            noise_steps,
            step,
            stop,
            max_steps,
            seed,
            transverse,
            json,
            strip,
            gif,
        }),
        Command::Train {
            arch,
            epochs,
            out,
            seed,
            lr,
            batch,
            train_data,
            test_data,
        } => commands::train::run(commands::train::TrainArgs {
            arch,
            epochs,
            out,
            seed,
            lr,
            batch,
            train_data,
            test_data,
        }),
        Command::Evaluate { inputs, json } => commands::evaluate(&inputs.model, &inputs.dataset, json),
        Command::Bench { inputs, runs, json } => {
            commands::bench::run(&inputs.model, &inputs.dataset, runs, json)
        }
        Command::Experiment {
            name,
            samples,
            json,
            plot,
            model,
            seed,
        } => commands::experiment::run(commands::experiment::ExperimentArgs {
            name,
            samples,
            json,
            plot,
            model,
            seed,
        }),
    }
}
