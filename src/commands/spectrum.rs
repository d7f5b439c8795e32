//! `dataleaf spectrum`: G's spectrum at one dataset image.

use anyhow::Result;

use dataleaf::geometry::LocalGeometry;

use super::{extend_json, image_at, open_pair, GeometryArgs};

pub fn run(model: &str, dataset: &str, index: usize, json: bool, geometry: GeometryArgs) -> Result<()> {
    let (model, data) = open_pair(model, dataset)?;
    let x = image_at(&data, index, "--index")?;
    let geo = LocalGeometry::with(&model.network, x, geometry.options(false));
    let c = model.num_classes();
    let label = data.labels[index];
    if json {
        let mut out = serde_json::json!({
            "index": index,
            "label": label,
            "prediction": geo.argmax(),
            "probs": geo.probs,
            "eigenvalues": geo.eigenvalues,
            "rank": geo.rank,
            "trace": geo.trace,
        });
        extend_json(&mut out, geometry.json(c, geo.dropped_mass));
        println!("{out}");
        return Ok(());
    }
    let name = |k: usize| model.class_name(k);
    println!(
        "{} image {index}: label {}, predicted {} (p = {:.4})",
        data.name,
        name(label),
        name(geo.argmax()),
        geo.max_prob()
    );
    // Exact G has rank at most C - 1 (B B^T's null direction sqrt p); top-k's at most K.
    let bound = if geo.is_exact() {
        format!("C - 1 = {}", c - 1)
    } else {
        format!("K = {}", geo.classes.len())
    };
    println!("rank {} (bound {bound}), trace {:.4e}", geo.rank, geo.trace);
    if let Some(line) = geometry.line(c, geo.dropped_mass) {
        println!("{line}");
    }
    for (k, l) in geo.eigenvalues.iter().enumerate() {
        println!("  lambda_{:<2} {:>12.4e}  log10 {:>7.2}", k + 1, l, l.log10());
    }
    Ok(())
}
