//! `dataleaf bench`: medians of the per-step costs on the default model (4185 -> 5874, the papers'
//! first leaf walk). Benchmarks, not tests: figures depend on the machine.

use std::time::Instant;

use anyhow::{anyhow, Result};

use dataleaf::geometry::{jacobian, LocalGeometry};
use dataleaf::walk::{Mode, Walk, WalkConfig};

use super::{image_at, open_pair};

/// Median wall time of `f` in milliseconds over `runs` calls, after a few warm-up calls.
fn median_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    median(times)
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

pub fn run(model: &str, dataset: &str, runs: usize, json: bool) -> Result<()> {
    let (model, data) = open_pair(model, dataset)?;
    let runs = runs.max(1);
    let start = image_at(&data, 4185.min(data.len() - 1), "start")?.to_vec();
    let target = image_at(&data, 5874.min(data.len() - 1), "target")?.to_vec();
    let net = &model.network;
    let shape = (data.channels, data.height, data.width);

    let forward_ms = median_ms(runs, || {
        std::hint::black_box(net.logits(&start, 1));
    });
    let jacobian_ms = median_ms(runs, || {
        std::hint::black_box(jacobian::logits_and_jacobian(net, &start));
    });
    let (logits, jac) = jacobian::logits_and_jacobian(net, &start);
    let spectrum_ms = median_ms(runs, || {
        std::hint::black_box(LocalGeometry::from_jacobian(
            logits.clone(),
            jac.clone(),
            start.len(),
        ));
    });
    let autograd_ms = median_ms(runs.min(10), || {
        std::hint::black_box(jacobian::jacobian_autograd(&model.classifier, &start, shape).ok());
    });
    // Leaf and kernel steps alternate in one loop, so load from elsewhere on the machine hits both alike.
    let walk = |mode: Mode, target: Option<Vec<f32>>| {
        let config = WalkConfig {
            max_steps: usize::MAX,
            ..WalkConfig::defaults(mode)
        };
        Walk::new(net, config, start.clone(), target).map_err(|m| anyhow!(m))
    };
    let mut leaf = walk(Mode::Leaf, Some(target.clone()))?;
    let mut kernel = walk(Mode::Kernel, None)?;
    let (mut leaf_times, mut kernel_times) = (Vec::new(), Vec::new());
    // The leaf walk reaches its target after about 500 steps; measure well before.
    for k in 0..runs.min(400) + 3 {
        for (w, times) in [(&mut leaf, &mut leaf_times), (&mut kernel, &mut kernel_times)] {
            let t = Instant::now();
            std::hint::black_box(w.next());
            if k >= 3 {
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    let leaf_step_ms = median(leaf_times);
    let kernel_step_ms = median(kernel_times);
    let threads = rayon::current_num_threads();
    if json {
        let out = serde_json::json!({
            "model": model.name(),
            "threads": threads,
            "runs": runs,
            "forward_ms": forward_ms,
            "jacobian_ms": jacobian_ms,
            "spectrum_ms": spectrum_ms,
            "leaf_step_ms": leaf_step_ms,
            "kernel_step_ms": kernel_step_ms,
            "autograd_jacobian_ms": autograd_ms,
        });
        println!("{out}");
    } else {
        println!("{} on {threads} thread(s), medians of {runs} runs:", model.name());
        println!("  forward          {forward_ms:8.3} ms");
        println!("  jacobian         {jacobian_ms:8.3} ms   (candle autograd: {autograd_ms:.3} ms)");
        println!("  spectrum         {spectrum_ms:8.3} ms   (B, B B^T, Jacobi, leaf basis)");
        println!("  leaf step        {leaf_step_ms:8.3} ms");
        println!("  kernel step      {kernel_step_ms:8.3} ms");
    }
    Ok(())
}
