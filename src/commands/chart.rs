//! `dataleaf chart`: a K x K grid of the images reached from a dataset image by walks along the leaf
//! (or across leaves, in ker G), each with its prediction, as JSON, text, or a PNG.

use std::path::PathBuf;

use anyhow::{anyhow, Result};

use dataleaf::export::{instruments, ImageShape};
use dataleaf::geometry::LocalGeometry;
use dataleaf::walk::chart::{self, ChartConfig, Plane};

use super::{extend_json, image_at, open_pair, GeometryArgs};

#[derive(clap::Args)]
pub struct ChartArgs {
    #[command(flatten)]
    pub inputs: super::Inputs,
    #[arg(long)]
    pub index: usize,
    /// leaf (the top two leaf directions) or kernel (two seeded random directions in ker G).
    #[arg(long)]
    pub plane: String,
    /// Cells per side.
    #[arg(long, default_value_t = 5)]
    pub size: usize,
    /// Half-width of the chart in pixel units (L2 over pixels in [0, 1]).
    #[arg(long, default_value_t = 4.0, allow_negative_numbers = true)]
    pub radius: f32,
    /// Seed of the kernel plane's directions.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub json: bool,
    /// Write the grid of images as a PNG (cells whose class differs from the centre's framed red).
    #[arg(long)]
    pub png: Option<PathBuf>,
    #[command(flatten)]
    pub geometry: GeometryArgs,
}

pub fn run(args: ChartArgs) -> Result<()> {
    let plane = Plane::parse(&args.plane)
        .ok_or_else(|| anyhow!("unknown plane {:?}: choose leaf or kernel", args.plane))?;
    if !(2..=15).contains(&args.size) {
        return Err(anyhow!("--size must be between 2 and 15, got {}", args.size));
    }
    if !(args.radius.is_finite() && args.radius > 0.0) {
        return Err(anyhow!(
            "--radius must be a positive number of pixel units, got {}",
            args.radius
        ));
    }
    let (model, data) = open_pair(&args.inputs.model, &args.inputs.dataset)?;
    let x = image_at(&data, args.index, "--index")?;
    let config = ChartConfig {
        seed: args.seed,
        top_k: args.geometry.top_k,
        ..ChartConfig::for_radius(plane, args.size, args.radius)
    };
    let cells = chart::chart(&model.network, x, &config, &|| false)
        .map_err(|m| anyhow!(m))?
        .expect("never cancelled");
    let here = LocalGeometry::with(&model.network, x, args.geometry.options(false));
    let centre = here.argmax();
    let c = model.num_classes();
    let kept = cells.iter().filter(|c| c.prediction == centre).count();
    if let Some(path) = &args.png {
        let shape = ImageShape {
            channels: data.channels,
            height: data.height,
            width: data.width,
        };
        // A top-k chart says so under the grid, with the mass dropped at its centre.
        let note = (!here.is_exact()).then(|| {
            format!(
                "{} at the centre",
                instruments::top_k_note(here.classes.len(), c, here.dropped_mass)
            )
        });
        instruments::write_chart(
            path,
            &cells,
            args.size,
            centre,
            shape,
            &model.arch.classes,
            note.as_deref(),
        )
        .map_err(|m| anyhow!(m))?;
    }
    if args.json {
        let mut out = serde_json::json!({
            "index": args.index,
            "plane": plane.name(),
            "size": args.size,
            "radius": args.radius,
            "seed": args.seed,
            "step": config.step,
            "centre_prediction": centre,
            "kept_fraction": kept as f64 / cells.len() as f64,
            "cells": cells.iter().map(|c| serde_json::json!({
                "a": c.a, "b": c.b, "prediction": c.prediction,
                "max_prob": c.max_prob, "off_leaf": c.off_leaf})).collect::<Vec<_>>(),
        });
        // "dropped_mass": at the chart's centre.
        extend_json(&mut out, args.geometry.json(c, here.dropped_mass));
        println!("{out}");
        return Ok(());
    }
    println!(
        "{} chart of {} image {} (predicted {}), {}x{} cells in [-{r}, {r}]^2: the class is kept in {kept} of {}",
        plane.name(),
        data.name,
        args.index,
        model.class_name(centre),
        args.size,
        args.size,
        cells.len(),
        r = args.radius
    );
    if let Some(line) = args.geometry.line(c, here.dropped_mass) {
        println!("{line} (at the centre)");
    }
    for row in cells.chunks(args.size) {
        let line: Vec<String> = row
            .iter()
            .map(|c| format!("{} {:.2}", model.class_name(c.prediction), c.max_prob))
            .collect();
        println!("  {}", line.join("  "));
    }
    if let Some(path) = &args.png {
        println!("image: {}", path.display());
    }
    Ok(())
}
