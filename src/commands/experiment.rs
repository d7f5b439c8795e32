//! `dataleaf experiment NAME`: one of the papers' experiments (src/experiments) with a progress bar,
//! its summary or JSON on stdout, and optionally its figure as a PNG or an SVG; `--shard K/N` runs
//! one shard and writes its part; `dataleaf experiment merge PART...` merges the parts into exactly
//! what the single run prints.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use dataleaf::experiments::shard::{Part, Shard};
use dataleaf::experiments::{self, Outcome, Progress, Settings, ALL};

#[derive(clap::Args)]
pub struct ExperimentArgs {
    /// off-leaf, leaves, training, dataset-spectra, involutivity, denoise or ood; or `merge`
    /// followed by the part files of a sharded run.
    pub name: String,
    /// With `merge`: the part files (written by `--shard K/N`) to merge, in any order.
    pub parts: Vec<PathBuf>,
    /// The experiment's main count (images, pairs or points), or `all` for the whole dataset; each
    /// experiment has its own default.
    #[arg(long)]
    pub samples: Option<String>,
    #[arg(long)]
    pub json: bool,
    /// Write the experiment's figure: a .png, or a .svg (vector, for papers).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// The model under study (a shipped name, a .json or another model file); for `training`, a
    /// folder of checkpoints (the default is the shipped LeNet series).
    #[arg(long, default_value = dataleaf::model::DEFAULT_MODEL)]
    pub model: String,
    /// The dataset the model is studied on (mnist, fashion-mnist, an IDX folder, CIFAR-10 batches,
    /// an image folder), in the model's input shape.
    #[arg(long, default_value = dataleaf::data::DEFAULT_DATASET)]
    pub dataset: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Run only shard K of N (1 <= K <= N, e.g. a Slurm array's task id) and write its part JSON,
    /// to merge with the others.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<String>,
    /// Write the part to this file instead of stdout (written whole or not at all: an interrupted
    /// shard leaves no part behind).
    #[arg(long)]
    pub out: Option<PathBuf>,
    // `--top-k K`: every experiment that builds G builds it from the K most probable classes; the
    // report adds "top_k" and the dropped mass's mean and max. Part of a shard's identity.
    #[command(flatten)]
    pub geometry: super::GeometryArgs,
}

pub fn run(args: ExperimentArgs) -> Result<()> {
    if args.name == "merge" {
        return merge(&args);
    }
    // Arguments first, so their errors come before any work.
    if experiments::claim(&args.name).is_none() {
        return Err(anyhow!(
            "unknown experiment {:?}; choose one of {} (or merge)",
            args.name,
            experiments::NAMES.join(", ")
        ));
    }
    if let Some(extra) = args.parts.first() {
        return Err(anyhow!(
            "unexpected argument {}: only `dataleaf experiment merge` takes files",
            extra.display()
        ));
    }
    let samples = match args.samples.as_deref() {
        None => None,
        Some("all") => Some(ALL),
        Some(text) => match text.parse::<usize>() {
            Ok(0) | Err(_) => return Err(anyhow!("--samples {text:?}: give a count of at least 1, or all")),
            Ok(n) => Some(n),
        },
    };
    let shard = args
        .shard
        .as_deref()
        .map(Shard::parse)
        .transpose()
        .map_err(|e| anyhow!(e))?;
    if let Some(path) = &args.plot {
        if shard.is_some() {
            return Err(anyhow!(
                "--plot {}: a shard draws no figure; merge the parts with --plot",
                path.display()
            ));
        }
        figure_kind(path)?;
    }
    if args.out.is_some() && shard.is_none() {
        return Err(anyhow!("--out writes a shard's part; give --shard K/N too"));
    }
    let settings = Settings {
        samples,
        model: args.model.clone(),
        dataset: args.dataset.clone(),
        seed: args.seed,
        top_k: args.geometry.top_k,
    };
    if let Some(shard) = shard {
        let label = format!("[shard {shard}] ");
        let part = with_progress(&label, |p| {
            experiments::run_shard(&args.name, &settings, shard, p)
        })?;
        let text = serde_json::to_string(&part).expect("parts serialise");
        return match &args.out {
            Some(path) => write_whole(path, text.as_bytes()),
            None => {
                println!("{text}");
                Ok(())
            }
        };
    }
    let outcome = with_progress("", |p| experiments::run(&args.name, &settings, p))?;
    print(&outcome, &args)
}

/// `dataleaf experiment merge PART...`.
fn merge(args: &ExperimentArgs) -> Result<()> {
    if args.shard.is_some() || args.out.is_some() {
        return Err(anyhow!("merge takes part files, --json and --plot only"));
    }
    if let Some(k) = args.geometry.top_k {
        return Err(anyhow!(
            "merge: --top-k {k} is a setting of the run; each part records the K it was computed with"
        ));
    }
    if args.parts.is_empty() {
        return Err(anyhow!(
            "merge: name the part files to merge (dataleaf experiment merge part-*.json)"
        ));
    }
    if let Some(path) = &args.plot {
        figure_kind(path)?;
    }
    let mut parts = Vec::new();
    for path in &args.parts {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| anyhow!("{name}: cannot read the part: {e}"))?;
        if text.trim().is_empty() {
            return Err(anyhow!("{name}: empty (its shard did not finish: run it again)"));
        }
        let part: Part = serde_json::from_str(&text)
            .map_err(|e| anyhow!("{name}: not a dataleaf experiment part ({e})"))?;
        parts.push((name, part));
    }
    let outcome = experiments::merge(parts)?;
    print(&outcome, args)
}

/// The figure, then the JSON or the summary, as the single run prints them.
fn print(outcome: &Outcome, args: &ExperimentArgs) -> Result<()> {
    if let Some(path) = &args.plot {
        let written = if figure_kind(path)? == "svg" {
            std::fs::write(path, &outcome.svg).map_err(|e| e.to_string())
        } else {
            outcome.plot.save(path).map_err(|e| e.to_string())
        };
        written.map_err(|e| anyhow!("--plot {}: cannot write the figure: {e}", path.display()))?;
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

/// "png" or "svg", from the file name.
fn figure_kind(path: &Path) -> Result<&'static str> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
    {
        Some(e) if e == "png" => Ok("png"),
        Some(e) if e == "svg" => Ok("svg"),
        _ => Err(anyhow!(
            "--plot {}: the figure is a PNG or an SVG; name a .png or .svg file",
            path.display()
        )),
    }
}

/// Write `bytes` to `path` through a temporary file beside it, so the file is whole or absent.
fn write_whole(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("part-in-progress");
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            anyhow!("--out {}: cannot write the part: {e}", path.display())
        })
}

/// Run `work` on its own thread with progress on stderr: a bar on a terminal, else (a batch job's
/// log) a line every 10 % or 30 s. `label` names the shard.
fn with_progress<T: Send>(
    label: &str,
    work: impl FnOnce(&Progress) -> Result<T, experiments::ExperimentError> + Send,
) -> Result<T> {
    let progress = Progress::new();
    let terminal = std::io::stderr().is_terminal();
    let bar = indicatif::ProgressBar::new(1);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {percent:>3} %  ({elapsed}, eta {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let started = Instant::now();
    let outcome = std::thread::scope(|s| {
        let worker = s.spawn(|| work(&progress));
        let (mut last_line, mut last_tenth) = (Instant::now(), None);
        while !worker.is_finished() {
            let (stage, done, total) = progress.snapshot();
            if terminal {
                bar.set_length(total.max(1));
                bar.set_position(done.min(total));
                bar.set_message(format!("{label}{stage}"));
            } else if let Some(percent) = (100 * done.min(total)).checked_div(total) {
                let tenth = (percent / 10, stage.clone());
                if last_tenth.as_ref() != Some(&tenth) || last_line.elapsed() > Duration::from_secs(30) {
                    eprintln!(
                        "{label}{stage}: {done} / {total} ({percent} %, {:.0} s)",
                        started.elapsed().as_secs_f64()
                    );
                    last_line = Instant::now();
                    last_tenth = Some(tenth);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let outcome = worker
            .join()
            .map_err(|_| anyhow!("the experiment stopped unexpectedly"));
        // A run faster than the first poll still says once what it did (logs name the shard);
        // a failed one says only its error.
        if !terminal && last_tenth.is_none() && matches!(outcome, Ok(Ok(_))) {
            let (stage, done, total) = progress.snapshot();
            eprintln!(
                "{label}{stage}: {done} / {total} ({:.1} s)",
                started.elapsed().as_secs_f64()
            );
        }
        outcome
    })?;
    bar.finish_and_clear();
    Ok(outcome?)
}
