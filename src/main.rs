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
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version print in full; a usage error is one line, as every other error.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let text = e.render().to_string();
            // clap's message is the first paragraph; the usage block after it is left out.
            let message: Vec<&str> = text.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
            let message = message.join(" ");
            eprintln!("error: {} (see `dataleaf --help`)", message.trim_start_matches("error: "));
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

fn run(cli: Cli) -> Result<()> {
    let Some(command) = cli.command else {
        return Err(anyhow!("the desktop app is not built yet; see `dataleaf --help` for the commands"));
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
    }
}
