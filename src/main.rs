//! The command line: no subcommand opens the desktop app; subcommands do headless work.

mod commands;

/// Counts heap bytes so `dataleaf bench` can report the memory a step needs.
#[global_allocator]
static ALLOCATOR: commands::memory::Counting = commands::memory::Counting;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Result};
use clap::{Parser, Subcommand};

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
    /// Play a preset walk: its number (1-8) or a word of its title, e.g. 4185 or sneaker.
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
    /// Open the 2-D plane view: a two-feature classifier trained live, with its leaves, kernel
    /// leaves, SiMEC and SiMExp.
    #[arg(long)]
    plane: bool,
    /// Plane view: train this many Adam steps at once, then pause (a --screenshot waits for them).
    #[arg(long, default_value_t = 0)]
    plane_train_steps: usize,
    /// Plane view: draw the curves through this point, e.g. --plane-click=0.2,0.3.
    #[arg(long, value_name = "X,Y", allow_hyphen_values = true)]
    plane_click: Option<String>,
    /// Plane view: open this features model (2 inputs) instead of training one.
    #[arg(long, value_name = "FILE")]
    plane_model: Option<String>,
    /// Plane view: fill the preimage of the interval [A, B] of outputs, e.g. --plane-interval 0.3,0.7.
    #[arg(long, value_name = "A,B", allow_hyphen_values = true)]
    plane_interval: Option<String>,
    /// Open the instruments window: leaf directions and a chart of the current point.
    #[arg(long)]
    instruments: bool,
    /// Steps per second per lane (1-120), or "max" for as fast as the worker can (the speed slider).
    #[arg(long, value_name = "N|max")]
    speed: Option<String>,
    // `--top-k K`: "Classes in G" for this run, the walk settings' "top K" (walks, instruments,
    // experiments window).
    #[command(flatten)]
    geometry: commands::GeometryArgs,
}

/// "X,Y" as two finite numbers, or a message naming the option.
fn two_numbers(option: &str, text: &str) -> Result<[f64; 2]> {
    let v: Vec<f64> = text
        .split(',')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| anyhow!("{option}: {text:?} is not two numbers separated by a comma"))?;
    match v[..] {
        [x, y] if x.is_finite() && y.is_finite() => Ok([x, y]),
        _ => Err(anyhow!(
            "{option}: {text:?} is not two finite numbers separated by a comma"
        )),
    }
}

#[derive(Subcommand)]
enum Command {
    /// G's spectrum, probabilities, rank and trace at one image.
    Spectrum {
        #[command(flatten)]
        inputs: commands::Inputs,
        #[arg(long)]
        index: usize,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        geometry: commands::GeometryArgs,
    },
    /// Walk from an image along the data leaf (leaf), across leaves (kernel), or straight (free).
    Walk(commands::walk::WalkArgs),
    /// Train an MNIST model with plain SGD, writing a checkpoint (JSON + safetensors) every epoch.
    Train(commands::train::TrainArgs),
    /// Accuracy of a model on a dataset.
    Evaluate {
        #[command(flatten)]
        inputs: commands::Inputs,
        #[arg(long)]
        json: bool,
    },
    /// Per-step timings (medians): forward, Jacobian, spectrum, leaf and kernel steps, the arithmetic
    /// floor; --walk adds the whole 4185 -> 5874 walk, --sizes the scaling table up to ImageNet size.
    Bench(commands::bench::BenchArgs),
    /// Run one of the papers' experiments: off-leaf, leaves, training, dataset-spectra, involutivity,
    /// denoise or ood (README, "Experiments").
    Experiment(commands::experiment::ExperimentArgs),
    /// The leaf directions at an image: the orthonormal eigenvectors of G (what the model can see).
    Directions(commands::directions::DirectionsArgs),
    /// A K x K chart of the images reached from an image along the leaf or across leaves (kernel).
    Chart(commands::chart::ChartArgs),
    /// SiMEC: walk the equivalence class (level set) through a point of a features model, printing
    /// the points and outputs (README, "The plane view").
    Simec(commands::simec::SimecArgs),
}

/// glibc returns freed blocks over 128 KB to the kernel, so every step's megabyte-sized buffers
/// came back as fresh pages and paid a page fault per 4 KB; keep blocks up to 32 MB (the most
/// glibc allows) in the heap instead.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // SAFETY: mallopt only sets allocator tuning parameters; called before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

fn main() -> ExitCode {
    let launched = std::time::Instant::now();
    keep_freed_memory();
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
    match run(cli, launched) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the context chain and the cause, never a backtrace.
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

fn run_app(args: AppArgs, launched: std::time::Instant) -> Result<()> {
    let preset = match &args.preset {
        Some(spec) => Some(
            dataleaf::app::find_preset(spec)
                .ok_or_else(|| anyhow!("no preset {spec:?}: give 1 to {}", dataleaf::app::PRESETS.len()))?,
        ),
        None => None,
    };
    let plane_click = args
        .plane_click
        .as_deref()
        .map(|t| two_numbers("--plane-click", t))
        .transpose()?;
    let plane_interval = args
        .plane_interval
        .as_deref()
        .map(|t| two_numbers("--plane-interval", t).map(|[a, b]| (a, b)))
        .transpose()?;
    if let Some(m) = &args.plane_model {
        // Refuse a bad file here, in one line, rather than in the window.
        let mlp = dataleaf::model::mlp::Mlp::load(std::path::Path::new(m))?;
        if mlp.inputs() != 2 {
            return Err(anyhow!(
                "{m}: model {} takes {} features; the plane view shows models of 2",
                mlp.name,
                mlp.inputs()
            ));
        }
    }
    let speed = match args.speed.as_deref() {
        None => None,
        Some(t) if t.eq_ignore_ascii_case("max") => Some(None),
        Some(t) => match t.trim().parse::<f32>() {
            Ok(v) if (1.0..=120.0).contains(&v) => Some(Some(v)),
            _ => {
                return Err(anyhow!(
                    "--speed: {t:?} is not a number of steps per second from 1 to 120, or max"
                ))
            }
        },
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
        plane: args.plane,
        plane_train_steps: args.plane_train_steps,
        plane_click,
        plane_model: args.plane_model,
        plane_interval,
        instruments: args.instruments,
        speed,
        top_k: args.geometry.top_k,
        launched: Some(launched),
    })
    .map_err(|m| anyhow!(m))
}

fn run(cli: Cli, launched: std::time::Instant) -> Result<()> {
    let Some(command) = cli.command else {
        return run_app(cli.app, launched);
    };
    match command {
        Command::Spectrum {
            inputs,
            index,
            json,
            geometry,
        } => commands::spectrum::run(&inputs.model, &inputs.dataset, index, json, geometry),
        Command::Walk(args) => commands::walk::run(args),
        Command::Train(args) => commands::train::run(args),
        Command::Evaluate { inputs, json } => commands::evaluate(&inputs.model, &inputs.dataset, json),
        Command::Bench(args) => commands::bench::run(args),
        Command::Experiment(args) => commands::experiment::run(args),
        Command::Simec(args) => commands::simec::run(args),
        Command::Directions(args) => commands::directions::run(args),
        Command::Chart(args) => commands::chart::run(args),
    }
}
