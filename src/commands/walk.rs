//! `dataleaf walk`: a walk from a dataset image, as JSON, a strip of frames, or a GIF.

use std::path::PathBuf;

use anyhow::{anyhow, Result};

use dataleaf::export::{self, ImageShape};
use dataleaf::walk::{self, Mode, Step, Walk, WalkConfig};

use super::{extend_json, image_at, open_pair, GeometryArgs};

#[derive(clap::Args)]
pub struct WalkArgs {
    #[command(flatten)]
    pub inputs: super::Inputs,
    /// leaf, kernel, free, or reach (a search that moves only along leaves; README, "Instruments").
    #[arg(long)]
    pub mode: String,
    /// Reach: seconds the search may take (default 3).
    #[arg(long, allow_negative_numbers = true)]
    pub budget: Option<f64>,
    /// Reach: greedy, hop, bidirectional or bidirectional-hop (the default).
    #[arg(long)]
    pub strategy: Option<String>,
    #[arg(long)]
    pub start: usize,
    #[arg(long)]
    pub target: Option<usize>,
    /// Walk toward the horizontal mirror of the target (a symbol not in the dataset).
    #[arg(long)]
    pub flip_target: bool,
    /// Kernel steps from the start before the walk: a noisy start on another leaf.
    #[arg(long, default_value_t = 0)]
    pub noise_steps: usize,
    /// Step length in pixel units (default 0.0308, the papers' 0.1 in normalised units).
    #[arg(long, allow_negative_numbers = true)]
    pub step: Option<f32>,
    /// Stop distance to the target in pixel units (default 0.3081).
    #[arg(long, allow_negative_numbers = true)]
    pub stop: Option<f32>,
    /// Steps at most (default 10000 for leaf and free, 1000 for kernel).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Seed of the kernel walk's random direction.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Leaf walk: weight of the transverse part of each step, 0 to 1 (0 = strictly on the leaf;
    /// default 1/sqrt(n - rank), the papers' effective walk).
    #[arg(long, allow_negative_numbers = true)]
    pub transverse: Option<f32>,
    #[arg(long)]
    pub json: bool,
    /// Write 9 evenly spaced frames, labelled, side by side as a PNG.
    #[arg(long)]
    pub strip: Option<PathBuf>,
    /// Write the walk as an animated GIF.
    #[arg(long)]
    pub gif: Option<PathBuf>,
    #[command(flatten)]
    pub geometry: GeometryArgs,
}

/// The largest probability mass top-k left out along a walk's steps.
pub fn max_dropped(steps: &[Step]) -> f64 {
    steps.iter().map(|s| s.dropped_mass).fold(0.0, f64::max)
}

pub fn run(args: WalkArgs) -> Result<()> {
    if args.mode == "reach" {
        return super::reach::run(args);
    }
    if args.budget.is_some() || args.strategy.is_some() {
        return Err(anyhow!("--budget and --strategy belong to --mode reach"));
    }
    let mode = Mode::parse(&args.mode).ok_or_else(|| {
        anyhow!(
            "unknown mode {:?}: choose leaf, kernel or free (or reach, the strict search)",
            args.mode
        )
    })?;
    let mut config = WalkConfig::defaults(mode);
    config.seed = args.seed;
    config.transverse = args.transverse;
    config.top_k = args.geometry.top_k;
    if let Some(s) = args.step {
        config.step = s;
    }
    if let Some(s) = args.stop {
        config.stop = s;
    }
    if let Some(m) = args.max_steps {
        config.max_steps = m;
    }
    if !(config.step.is_finite() && config.step > 0.0) {
        return Err(anyhow!(
            "--step must be a positive number of pixel units, got {}",
            config.step
        ));
    }
    if !(config.stop.is_finite() && config.stop >= 0.0) {
        return Err(anyhow!(
            "--stop must be a non-negative number of pixel units, got {}",
            config.stop
        ));
    }
    if mode != Mode::Kernel && args.target.is_none() {
        return Err(anyhow!("--mode {} needs --target", mode.name()));
    }
    if args.flip_target && args.target.is_none() {
        return Err(anyhow!("--flip-target needs --target"));
    }
    // The arguments are checked before any file is read, so their errors come first.
    let (model, data) = open_pair(&args.inputs.model, &args.inputs.dataset)?;
    let mut start = image_at(&data, args.start, "--start")?.to_vec();
    let target = match args.target {
        Some(t) => {
            let image = image_at(&data, t, "--target")?;
            Some(if args.flip_target {
                walk::mirror(image, data.width)
            } else {
                image.to_vec()
            })
        }
        None => None,
    };
    if args.noise_steps > 0 {
        // The papers' noisy leaves: kernel steps from the start before the walk proper.
        start = walk::noisy_with(
            &model.network,
            &start,
            args.noise_steps,
            config.step,
            args.seed.wrapping_add(1),
            config.top_k,
        )
        .map_err(|m| anyhow!(m))?;
    }
    let mut walk = Walk::new(&model.network, config, start, target).map_err(|m| anyhow!(m))?;
    let steps: Vec<Step> = walk.by_ref().collect();
    let reached = walk.reached;
    let first = steps.first().expect("a walk yields its start");
    let last = steps.last().expect("a walk yields its start");
    let class = |k: usize| model.class_name(k);
    let shape = ImageShape {
        channels: data.channels,
        height: data.height,
        width: data.width,
    };
    if let Some(path) = &args.strip {
        let frames = export::walk_frames(&steps, 9, &model.arch.classes);
        export::write_strip(path, &frames, shape, 4).map_err(|m| anyhow!(m))?;
    }
    if let Some(path) = &args.gif {
        let frames = export::walk_frames(&steps, 80, &model.arch.classes);
        export::write_gif(path, &frames, shape, 4, 80).map_err(|m| anyhow!(m))?;
    }
    let mean_off_leaf = if steps.len() > 1 {
        steps[1..].iter().map(|s| s.off_leaf as f64).sum::<f64>() / (steps.len() - 1) as f64
    } else {
        0.0
    };
    if args.json {
        let mut out = serde_json::json!({
            "mode": mode.name(),
            "start": args.start,
            "target": args.target,
            "flip_target": args.flip_target,
            "noise_steps": args.noise_steps,
            "step": config.step,
            "transverse": config.transverse,
            "steps": steps.len() - 1,
            "reached": reached,
            "start_distance": first.distance,
            "final_distance": last.distance,
            "mean_off_leaf": mean_off_leaf,
            "predictions": steps.iter().map(|s| s.argmax).collect::<Vec<_>>(),
            "max_probs": steps.iter().map(|s| s.max_prob()).collect::<Vec<_>>(),
            "distances": steps.iter().map(|s| s.distance).collect::<Vec<_>>(),
            "dropped_masses": steps.iter().map(|s| s.dropped_mass).collect::<Vec<_>>(),
        });
        // "dropped_mass": the largest along the walk.
        extend_json(
            &mut out,
            args.geometry.json(model.num_classes(), max_dropped(&steps)),
        );
        println!("{out}");
    } else {
        let to = if args.target.is_some() { "target" } else { "start" };
        println!(
            "{} walk: {} steps, distance to {to} {:.3} -> {:.3}{}",
            mode.name(),
            steps.len() - 1,
            first.distance,
            last.distance,
            if reached { " (reached)" } else { "" }
        );
        println!(
            "prediction {} ({:.3}) -> {} ({:.3}); mean fraction of each move off the leaf {:.3}",
            class(first.argmax),
            first.max_prob(),
            class(last.argmax),
            last.max_prob(),
            mean_off_leaf
        );
        if let Some(line) = args.geometry.line(model.num_classes(), max_dropped(&steps)) {
            println!("{line} (largest along the walk)");
        }
    }
    Ok(())
}
