//! `dataleaf directions`: the leaf directions u_1..u_r at one dataset image (what the model can see
//! there), as JSON, text, or a PNG of signed images.

use std::path::PathBuf;

use anyhow::{anyhow, Result};

use dataleaf::export::{instruments, ImageShape};
use dataleaf::geometry::LocalGeometry;

use super::{extend_json, image_at, open_pair, GeometryArgs};

#[derive(clap::Args)]
pub struct DirectionsArgs {
    #[command(flatten)]
    pub inputs: super::Inputs,
    #[arg(long)]
    pub index: usize,
    #[arg(long)]
    pub json: bool,
    /// Write the directions side by side as signed images (blue < 0 < red), lambda_k under each.
    #[arg(long)]
    pub png: Option<PathBuf>,
    #[command(flatten)]
    pub geometry: GeometryArgs,
}

pub fn run(args: DirectionsArgs) -> Result<()> {
    let (model, data) = open_pair(&args.inputs.model, &args.inputs.dataset)?;
    let x = image_at(&data, args.index, "--index")?;
    let geo = LocalGeometry::with(&model.network, x, args.geometry.options(true));
    let c = model.num_classes();
    let directions = geo.leaf_directions();
    if let Some(path) = &args.png {
        let shape = ImageShape {
            channels: data.channels,
            height: data.height,
            width: data.width,
        };
        // A top-k G says what it was made of under the directions, as the app's export does.
        let note = (!geo.is_exact()).then(|| instruments::top_k_note(geo.classes.len(), c, geo.dropped_mass));
        instruments::write_directions(path, &directions, shape, note.as_deref()).map_err(|m| anyhow!(m))?;
    }
    let mixing = geo.direction_mixing();
    if args.json {
        let mut out = serde_json::json!({
            "index": args.index,
            "rank": geo.rank,
            "eigenvalues": directions.iter().map(|d| d.lambda).collect::<Vec<_>>(),
            "directions": directions.iter().map(|d| &d.u).collect::<Vec<_>>(),
            "mixing": mixing.iter().map(|m| m.iter().take(3).map(|x| serde_json::json!({
                "class": x.class, "cosine": x.cosine})).collect::<Vec<_>>()).collect::<Vec<_>>(),
        });
        extend_json(&mut out, args.geometry.json(c, geo.dropped_mass));
        println!("{out}");
        return Ok(());
    }
    println!(
        "{} image {}: predicted {} (p = {:.4}); {} leaf directions (rank of G)",
        data.name,
        args.index,
        model.class_name(geo.argmax()),
        geo.max_prob(),
        geo.rank
    );
    if let Some(line) = args.geometry.line(c, geo.dropped_mass) {
        println!("{line}");
    }
    for (k, (d, mix)) in directions.iter().zip(&mixing).enumerate() {
        let classes: Vec<String> = mix
            .iter()
            .take(3)
            .map(|m| format!("{} {:+.2}", model.class_name(m.class), m.cosine))
            .collect();
        println!(
            "  u_{:<2} lambda {:>10.4e}  mostly grad log p of {}",
            k + 1,
            d.lambda,
            classes.join(", ")
        );
    }
    if let Some(path) = &args.png {
        println!("image: {}", path.display());
    }
    Ok(())
}
