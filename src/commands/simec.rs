//! `dataleaf simec`: the equivalence class through a point of a features model (SiMEC,
//! shared/REFERENCE.md section 3), as JSON or a table.

use std::path::Path;

use anyhow::{anyhow, bail, Result};

use dataleaf::model::mlp::Mlp;
use dataleaf::model::Task;
use dataleaf::walk::simec::simec;

/// More steps than this is a typing slip, not a walk: every step is kept for the JSON (about 150 MB
/// at this cap) and a million take a few seconds.
const MAX_STEPS: usize = 1_000_000;

#[derive(clap::Args)]
pub struct SimecArgs {
    /// A features model: a .json architecture with `"input": {"features": N}`, weights beside it.
    #[arg(long)]
    pub model: String,
    /// The start point: N comma-separated numbers, e.g. 0.25,0.25 (or --start=-0.5,0.1).
    #[arg(long, allow_hyphen_values = true)]
    pub start: String,
    /// Step length delta in the model's input units.
    #[arg(long, default_value_t = 1e-3, allow_negative_numbers = true)]
    pub delta: f64,
    #[arg(long, default_value_t = 1000)]
    pub steps: usize,
    /// Flip the initial orientation (which is: the direction's largest component positive).
    #[arg(long)]
    pub reverse: bool,
    /// Print {"points": [[x, y], ...], "outputs": [...]}, one entry per step after the start.
    #[arg(long)]
    pub json: bool,
}

/// Parse "0.25,0.25" into numbers, naming the bad one.
fn parse_point(text: &str) -> Result<Vec<f64>> {
    text.split(',')
        .map(|part| {
            let v: f64 = part
                .trim()
                .parse()
                .map_err(|_| anyhow!("--start: {:?} is not a number (give e.g. 0.25,0.25)", part.trim()))?;
            if !v.is_finite() {
                bail!("--start: {v} is not a finite number");
            }
            Ok(v)
        })
        .collect()
}

pub fn run(args: SimecArgs) -> Result<()> {
    if !(args.delta.is_finite() && args.delta > 0.0) {
        bail!("--delta must be a positive finite number, got {}", args.delta);
    }
    if args.steps == 0 || args.steps > MAX_STEPS {
        bail!("--steps must be between 1 and {MAX_STEPS}, got {}", args.steps);
    }
    let start = parse_point(&args.start)?;
    let path = Path::new(&args.model);
    if path.is_dir() {
        bail!("{}: is a folder; name the model's .json file", path.display());
    }
    let mlp = Mlp::load(path)?;
    if start.len() != mlp.inputs() {
        bail!(
            "--start has {} numbers but model {} takes {} features",
            start.len(),
            mlp.name,
            mlp.inputs()
        );
    }
    let steps = simec(&mlp, &start, args.delta, args.steps, args.reverse);
    if let Some(k) = steps
        .iter()
        .position(|s| s.outputs.iter().chain(&s.point).any(|v| !v.is_finite()))
    {
        bail!(
            "{}: the walk reached a non-finite value at step {}",
            path.display(),
            k + 1
        );
    }
    // A single regression output is a number per step; otherwise the output vector.
    let scalar = mlp.task == Task::Regression && mlp.outputs() == 1;
    let f0 = mlp.predict(&start);
    if args.json {
        let outputs: Vec<serde_json::Value> = steps
            .iter()
            .map(|s| {
                if scalar {
                    serde_json::json!(s.outputs[0])
                } else {
                    serde_json::json!(s.outputs)
                }
            })
            .collect();
        let points: Vec<&Vec<f64>> = steps.iter().map(|s| &s.point).collect();
        println!("{}", serde_json::json!({"points": points, "outputs": outputs}));
        return Ok(());
    }
    let drift = steps
        .iter()
        .flat_map(|s| s.outputs.iter().zip(&f0).map(|(a, b)| (a - b).abs()))
        .fold(0.0, f64::max);
    let what = match mlp.task {
        Task::Classification => "probabilities",
        Task::Regression => "outputs",
    };
    println!(
        "SiMEC on {} from {:?}, delta {}, {} steps{}",
        mlp.name,
        start,
        args.delta,
        args.steps,
        if args.reverse { ", reversed" } else { "" }
    );
    println!("{what} at the start: {}", fmt(&f0));
    println!("largest change of any output along the walk: {drift:.3e}");
    println!("{:>10}  {:<32}  {what}", "step", "point");
    let shown = 10.min(steps.len());
    for k in 0..shown {
        // Ten rows evenly spaced over the walk, the last step included.
        let i = (k + 1) * steps.len() / shown - 1;
        println!(
            "{:>10}  {:<32}  {}",
            i + 1,
            fmt(&steps[i].point),
            fmt(&steps[i].outputs)
        );
    }
    Ok(())
}

fn fmt(values: &[f64]) -> String {
    let parts: Vec<String> = values.iter().map(|v| format!("{v:.6}")).collect();
    format!("[{}]", parts.join(", "))
}
