//! `dataleaf walk --mode reach`: the strict reach search (src/walk/reach.rs) from a dataset image to
//! another, printed as the walk JSON plus the search's own figures.

use std::time::Duration;

use anyhow::{anyhow, Result};

use dataleaf::export::{self, ImageShape};
use dataleaf::walk::reach::{Reach, ReachConfig, Strategy, DEFAULT_STRATEGY};
use dataleaf::walk::{self, Step};

use super::walk::{max_dropped, WalkArgs};
use super::{extend_json, image_at, open_pair};

pub fn run(args: WalkArgs) -> Result<()> {
    let strategy = match &args.strategy {
        Some(s) => Strategy::parse(s).ok_or_else(|| {
            anyhow!(
                "unknown strategy {s:?}: choose {}",
                Strategy::ALL.map(|k| k.name()).join(", ")
            )
        })?,
        None => DEFAULT_STRATEGY,
    };
    let mut config = ReachConfig {
        strategy,
        seed: args.seed,
        top_k: args.geometry.top_k,
        ..ReachConfig::default()
    };
    if let Some(b) = args.budget {
        if !(b.is_finite() && b > 0.0 && b <= 3600.0) {
            return Err(anyhow!(
                "--budget must be a number of seconds in (0, 3600], got {b}"
            ));
        }
        config.budget = Duration::from_secs_f64(b);
    }
    if let Some(s) = args.step {
        if !(s.is_finite() && s > 0.0) {
            return Err(anyhow!(
                "--step must be a positive number of pixel units, got {s}"
            ));
        }
        config.step = s;
    }
    if let Some(m) = args.max_steps {
        config.max_evaluations = m.max(1);
    }
    let Some(target_index) = args.target else {
        return Err(anyhow!("--mode reach needs --target"));
    };
    if args.transverse.is_some() || args.stop.is_some() {
        return Err(anyhow!(
            "--mode reach moves only along leaves and searches for its whole budget: --transverse and --stop do not apply"
        ));
    }
    let (model, data) = open_pair(&args.inputs.model, &args.inputs.dataset)?;
    let mut start = image_at(&data, args.start, "--start")?.to_vec();
    let image = image_at(&data, target_index, "--target")?;
    let target = if args.flip_target {
        walk::mirror(image, data.width)
    } else {
        image.to_vec()
    };
    if args.noise_steps > 0 {
        start = walk::noisy_with(
            &model.network,
            &start,
            args.noise_steps,
            walk::DEFAULT_STEP,
            args.seed.wrapping_add(1),
            config.top_k,
        )
        .map_err(|m| anyhow!(m))?;
    }
    let mut search = Reach::new(&model.network, config, start, target).map_err(|m| anyhow!(m))?;
    let bar = (!args.json).then(|| {
        let bar = indicatif::ProgressBar::new(1000);
        bar.set_style(
            indicatif::ProgressStyle::with_template("reach [{bar:30}] {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar
    });
    let mut steps: Vec<Step> = Vec::new();
    while let Some(s) = search.next() {
        if let Some(bar) = &bar {
            if s.index % 20 == 0 {
                // Whichever bound comes first: the time budget or the evaluation cap.
                let done = search.summary().evaluations as f64 / config.max_evaluations as f64;
                let began = search.elapsed().as_secs_f64() / config.budget.as_secs_f64();
                bar.set_position((1000.0 * done.max(began).min(1.0)) as u64);
                bar.set_message(format!(
                    "{} evaluations, gap {:.3}",
                    search.summary().evaluations,
                    s.distance
                ));
            }
        }
        steps.push(s);
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let summary = search.summary().clone();
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
    let first = steps.first().expect("a search yields its start");
    let last = steps.last().expect("a search yields its start");
    let ratio = summary.final_distance as f64 / summary.start_distance.max(f32::MIN_POSITIVE) as f64;
    if args.json {
        let mut out = serde_json::json!({
            "mode": "reach",
            "strategy": strategy.name(),
            "start": args.start,
            "target": target_index,
            "flip_target": args.flip_target,
            "noise_steps": args.noise_steps,
            "step": config.step,
            "budget": config.budget.as_secs_f64(),
            "seconds": summary.seconds,
            "steps": steps.len() - 1,
            "evaluations": summary.evaluations,
            "reached": false,
            "start_distance": summary.start_distance,
            "final_distance": summary.final_distance,
            "final_ratio": ratio,
            "gap": if strategy == Strategy::Bidirectional || strategy == Strategy::BidirectionalHop {
                "between the start's and the target's leaf paths" } else { "to the target" },
            "mean_off_leaf": summary.mean_off_leaf,
            "max_off_leaf": summary.max_off_leaf,
            "mean_off_leaf_clamped": summary.mean_off_leaf_clamped,
            "max_off_leaf_clamped": summary.max_off_leaf_clamped,
            "mean_off_leaf_end": summary.mean_off_leaf_end,
            "max_off_leaf_end": summary.max_off_leaf_end,
            "hops": summary.hops,
            "accepted_hops": summary.accepted_hops,
            "path_moves": summary.path_moves,
            "stalls": summary.stalls.iter().map(|(t, g)| [*t, *g as f64]).collect::<Vec<_>>(),
            "predictions": steps.iter().map(|s| s.argmax).collect::<Vec<_>>(),
            "max_probs": steps.iter().map(|s| s.max_prob()).collect::<Vec<_>>(),
            "distances": steps.iter().map(|s| s.distance).collect::<Vec<_>>(),
            "dropped_masses": steps.iter().map(|s| s.dropped_mass).collect::<Vec<_>>(),
        });
        // "dropped_mass": the largest along the search's path.
        extend_json(
            &mut out,
            args.geometry.json(model.num_classes(), max_dropped(&steps)),
        );
        println!("{out}");
    } else {
        println!(
            "reach ({}): {} evaluations in {:.1} s, gap {:.3} -> {:.3} (ratio {:.3}), {} hops ({} kept)",
            strategy.name(),
            summary.evaluations,
            summary.seconds,
            summary.start_distance,
            summary.final_distance,
            ratio,
            summary.hops,
            summary.accepted_hops
        );
        println!(
            "prediction {} ({:.3}) -> {} ({:.3}); fraction of each move off the leaf: mean {:.2e}, max {:.2e} (after the pixel clamp: mean {:.3}, max {:.3})",
            model.class_name(first.argmax),
            first.max_prob(),
            model.class_name(last.argmax),
            last.max_prob(),
            summary.mean_off_leaf,
            summary.max_off_leaf,
            summary.mean_off_leaf_clamped,
            summary.max_off_leaf_clamped
        );
        if let Some(line) = args.geometry.line(model.num_classes(), max_dropped(&steps)) {
            println!("{line} (largest along the path)");
        }
    }
    Ok(())
}
