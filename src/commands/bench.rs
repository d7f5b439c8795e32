//! `dataleaf bench`: medians of the per-step costs on a model (by default the medium CNN at MNIST
//! test image 4185, the start of the papers' first leaf walk), the arithmetic floor of a step, and
//! optionally the whole 4185 -> 5874 walk and a table of how a step grows with n and C.
//! Benchmarks, not tests: figures depend on the machine.

use std::time::Instant;

use anyhow::{anyhow, Result};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use dataleaf::geometry::{gram, jacobian, softmax, top_classes, LocalGeometry};
use dataleaf::model::matmul::{matmul, Scalar, Threads, View};
use dataleaf::model::{zoo, Architecture, Model, Network};
use dataleaf::walk::{Mode, Walk, WalkConfig};

use super::memory::peak_bytes_of;
use super::{image_at, open_pair, GeometryArgs, Inputs};

#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub inputs: Inputs,
    /// Timed repetitions of each measurement (medians are reported).
    #[arg(long, default_value_t = 50)]
    pub runs: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also run the whole 4185 -> 5874 leaf walk: wall time, steps, drift off the leaf.
    #[arg(long)]
    pub walk: bool,
    /// Also time random-weight VGG-style models from 3x32x32 (C = 10, 100) to 3x224x224 (C = 1000):
    /// time and peak memory per step (the README's scaling table).
    #[arg(long)]
    pub sizes: bool,
    /// With --sizes, only the rows whose model name contains this (e.g. "resnet", "imagenet").
    #[arg(long, value_name = "TEXT")]
    pub only: Option<String>,
    /// With --sizes, the K of the top-k rows beside each exact row of a model with more classes.
    #[arg(long, default_value_t = 10, value_name = "K", value_parser = clap::value_parser!(u64).range(1..))]
    pub sizes_top_k: u64,
    #[command(flatten)]
    pub geometry: GeometryArgs,
}

/// Median wall time of `f` in milliseconds over `runs` calls, after `warmup` untimed calls.
fn median_ms(runs: usize, warmup: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        f();
    }
    let times: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    median(times)
}

/// Median wall time (ms) of `run(prepare())` over `runs` calls after `warmup` untimed ones,
/// timing `run` only (its result is dropped after the clock stops).
fn median_ms_of<X, Y>(
    runs: usize,
    warmup: usize,
    mut prepare: impl FnMut() -> X,
    mut run: impl FnMut(X) -> Y,
) -> f64 {
    let times: Vec<f64> = (0..runs.max(1) + warmup)
        .map(|_| {
            let input = prepare();
            let t = Instant::now();
            let out = run(input);
            let ms = t.elapsed().as_secs_f64() * 1e3;
            drop(std::hint::black_box(out));
            ms
        })
        .collect();
    median(times[warmup..].to_vec())
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// The side of the square products that measure the machine's rates.
const RATE_SIZE: usize = 512;

/// The machine's matrix-product rate in GFLOP/s: a 512^3 product on all threads.
fn gemm_gflops<T: Scalar + From<f32>>() -> f64 {
    let mut probe = RateProbe::<T>::new();
    let ms = median_ms(15, 3, || probe.product());
    RateProbe::<T>::gflops(ms)
}

/// A 512^3 product's buffers, kept to measure the rate again and again.
struct RateProbe<T> {
    a: Vec<T>,
    c: Vec<T>,
}

impl<T: Scalar + From<f32>> RateProbe<T> {
    fn new() -> Self {
        let n = RATE_SIZE * RATE_SIZE;
        RateProbe {
            a: (0..n).map(|i| T::from((i % 17) as f32 * 0.1)).collect(),
            c: vec![T::default(); n],
        }
    }
    fn product(&mut self) {
        let v = View::rows(&self.a, RATE_SIZE, RATE_SIZE);
        matmul(&mut self.c, v, v, false, Threads::All);
    }
    /// The rate of one product that took `ms`.
    fn gflops(ms: f64) -> f64 {
        2.0 * (RATE_SIZE as f64).powi(3) / (ms * 1e6)
    }
    /// The rate now: the fastest of three products (the first may find its buffers cold and the
    /// pool's threads asleep).
    fn sample(&mut self) -> f64 {
        let ms = (0..3)
            .map(|_| {
                let t = Instant::now();
                self.product();
                t.elapsed().as_secs_f64() * 1e3
            })
            .fold(f64::INFINITY, f64::min);
        Self::gflops(ms)
    }
}

/// The machine's f32 and f64 product rates sampled between the timed steps: on a machine whose
/// speed drifts (a shared VM: 2x within a minute), the floor then divides by the rates of the
/// same minutes the steps ran in, not of a moment before or after them.
struct RateSamples {
    every: usize,
    f32_probe: RateProbe<f32>,
    f64_probe: RateProbe<f64>,
    f32_gflops: Vec<f64>,
    f64_gflops: Vec<f64>,
}

impl RateSamples {
    /// A sample after every `every` timed pairs of steps.
    fn new(every: usize) -> Self {
        RateSamples {
            every: every.max(1),
            f32_probe: RateProbe::new(),
            f64_probe: RateProbe::new(),
            f32_gflops: Vec::new(),
            f64_gflops: Vec::new(),
        }
    }
    fn sample(&mut self) {
        // After a step the team's helpers spin for a while (model::team): a product run then would
        // share its cores with them and measure half the machine.
        std::thread::sleep(dataleaf::model::team::SPIN * 2);
        self.f32_gflops.push(self.f32_probe.sample());
        self.f64_gflops.push(self.f64_probe.sample());
    }
    /// The median rates (f32, f64).
    fn rates(&self) -> (f64, f64) {
        (median(self.f32_gflops.clone()), median(self.f64_gflops.clone()))
    }
}

/// What one step's arithmetic costs and how fast this machine can do it.
struct Floor {
    /// Forward and reverse passes for J (or its top-k rows), counting only entries that carry
    /// gradient (f32).
    jacobian_flops: f64,
    /// B, the symmetric gram B B^T and one projection without the basis (f64).
    spectrum_flops: f64,
    /// The part of `spectrum_flops` that runs in f32: the gram from F32_GRAM_MIN_ROWS rows.
    gram_f32_flops: f64,
    gemm_f32_gflops: f64,
    gemm_f64_gflops: f64,
}

impl Floor {
    /// The floor of a step of `net` at `x`, given the machine's rates (`gemm_gflops`).
    fn of(net: &Network, x: &[f32], rates: (f64, f64), top_k: Option<usize>) -> Floor {
        let trace = net.forward(x, 1);
        let macs = net.jacobian_macs(&trace);
        let classes = net.num_classes();
        let (c, n) = (classes as f64, net.input_len() as f64);
        // Top-k pulls back K + 1 rows (the kept classes and p) and has a K x K gram.
        let (rows, c) = match top_k.filter(|&k| k < classes) {
            Some(k) => ((k + 1) as f64, k as f64),
            None => (c, c),
        };
        let gram_flops = 2.0 * 0.5 * c * (c + 1.0) * n;
        Floor {
            jacobian_flops: 2.0 * (macs.forward + rows * macs.per_row),
            // What a walk step does (no basis): B from J, the symmetric gram B B^T (one triangle),
            // and the projection B^T (B B^T)^+ B d (two products with B).
            spectrum_flops: 2.0 * (c * n + 2.0 * c * n) + gram_flops,
            gram_f32_flops: if c as usize >= gram::F32_GRAM_MIN_ROWS {
                gram_flops
            } else {
                0.0
            },
            gemm_f32_gflops: rates.0,
            gemm_f64_gflops: rates.1,
        }
    }
    fn ms(&self) -> f64 {
        (self.jacobian_flops + self.gram_f32_flops) / (self.gemm_f32_gflops * 1e6)
            + (self.spectrum_flops - self.gram_f32_flops) / (self.gemm_f64_gflops * 1e6)
    }
    fn to_json(&self) -> Value {
        json!({
            "jacobian_mflop": self.jacobian_flops / 1e6,
            "spectrum_mflop": self.spectrum_flops / 1e6,
            "gram_f32_mflop": self.gram_f32_flops / 1e6,
            "gemm_f32_gflops": self.gemm_f32_gflops,
            "gemm_f64_gflops": self.gemm_f64_gflops,
        })
    }
}

/// Per-step timings of one model at one image.
struct StepTimes {
    /// K when G was built from the top K classes (K < C), else None.
    top_k: Option<usize>,
    /// The probability mass top-k left out at the start image.
    dropped_mass: f64,
    forward_ms: f64,
    jacobian_ms: f64,
    spectrum_ms: f64,
    leaf_step_ms: f64,
    kernel_step_ms: f64,
    /// Heap a leaf step needs at its peak beyond what was live before it, bytes.
    step_peak_bytes: usize,
}

impl StepTimes {
    /// The per-step fields every report shares, added to a JSON object.
    fn add_to(&self, out: &mut Value, floor: &Floor) {
        let fields = json!({
            "top_k": self.top_k,
            "dropped_mass": self.dropped_mass,
            "forward_ms": self.forward_ms,
            "jacobian_ms": self.jacobian_ms,
            "spectrum_ms": self.spectrum_ms,
            "leaf_step_ms": self.leaf_step_ms,
            "kernel_step_ms": self.kernel_step_ms,
            "floor_ms": floor.ms(),
            "step_peak_mb": self.step_peak_bytes as f64 / 1e6,
        });
        if let (Some(out), Value::Object(fields)) = (out.as_object_mut(), fields) {
            out.extend(fields);
        }
    }
}

fn time_steps(
    net: &Network,
    start: &[f32],
    target: &[f32],
    runs: usize,
    top_k: Option<usize>,
    mut rates: Option<&mut RateSamples>,
) -> Result<StepTimes> {
    let warmup = if runs > 5 { 3 } else { 0 };
    let classes = net.num_classes();
    let top_k = top_k.filter(|&k| k < classes);
    let forward_ms = median_ms(runs, warmup, || {
        std::hint::black_box(net.logits(start, 1));
    });
    let jacobian_ms = median_ms(runs, warmup, || match top_k {
        Some(k) => {
            std::hint::black_box(jacobian::logits_and_top_rows(net, start, k));
        }
        None => {
            std::hint::black_box(jacobian::logits_and_jacobian(net, start));
        }
    });
    // The spectrum as a walk computes it: gram, eigen, (B B^T)^+, no basis. A step moves its J
    // in, so the copy each run needs is made (and the result dropped) outside the timing: at
    // C = 1000 copying J's 600 MB would add a few hundred ms that no step spends.
    let spectrum_ms = match top_k {
        Some(k) => {
            let rows = jacobian::logits_and_top_rows(net, start, k);
            median_ms_of(
                runs,
                warmup,
                || rows.clone(),
                |rows| LocalGeometry::from_top_rows(rows, start.len(), false),
            )
        }
        None => {
            let (logits, jac) = jacobian::logits_and_jacobian(net, start);
            median_ms_of(
                runs,
                warmup,
                || (logits.clone(), jac.clone()),
                |(logits, jac)| LocalGeometry::from_jacobian_with(logits, jac, start.len(), false),
            )
        }
    };
    // The mass top-k leaves out at the start: the probabilities outside the K largest.
    let dropped_mass = top_k.map_or(0.0, |k| {
        let p = softmax(&net.logits(start, 1));
        let kept = top_classes(&p, k);
        (0..p.len()).filter(|i| !kept.contains(i)).map(|i| p[i]).sum()
    });
    let walk = |mode: Mode, target: Option<Vec<f32>>| {
        let config = WalkConfig {
            max_steps: usize::MAX,
            top_k,
            ..WalkConfig::defaults(mode)
        };
        Walk::new(net, config, start.to_vec(), target).map_err(|m| anyhow!(m))
    };
    let mut leaf = walk(Mode::Leaf, Some(target.to_vec()))?;
    let mut kernel = walk(Mode::Kernel, None)?;
    // The first item is the start itself.
    leaf.next();
    kernel.next();
    let (mut leaf_times, mut kernel_times) = (Vec::new(), Vec::new());
    let mut step_peak_bytes = 0;
    // Leaf and kernel steps alternate in one loop, so load from elsewhere on the machine hits both
    // alike, and which goes first alternates too (a drift in the machine's speed within a pair
    // would otherwise always land on the second); the leaf walk reaches its target after about
    // 500 steps, so measure well before.
    for k in 0..runs.min(400) + warmup {
        let mut leaf_step = || {
            let t = Instant::now();
            let (_, peak) = peak_bytes_of(|| std::hint::black_box(leaf.next()));
            (t.elapsed().as_secs_f64() * 1e3, peak)
        };
        let mut kernel_step = || {
            let t = Instant::now();
            std::hint::black_box(kernel.next());
            t.elapsed().as_secs_f64() * 1e3
        };
        let ((leaf_ms, peak), kernel_ms) = if k % 2 == 0 {
            let leaf = leaf_step();
            (leaf, kernel_step())
        } else {
            let kernel = kernel_step();
            (leaf_step(), kernel)
        };
        if k >= warmup {
            leaf_times.push(leaf_ms);
            kernel_times.push(kernel_ms);
            step_peak_bytes = step_peak_bytes.max(peak);
            if let Some(rates) = rates.as_deref_mut() {
                if leaf_times.len() % rates.every == 0 {
                    rates.sample();
                }
            }
        }
    }
    if let Some(rates) = rates {
        if rates.f32_gflops.is_empty() {
            rates.sample();
        }
    }
    Ok(StepTimes {
        top_k,
        dropped_mass,
        forward_ms,
        jacobian_ms,
        spectrum_ms,
        leaf_step_ms: median(leaf_times),
        kernel_step_ms: median(kernel_times),
        step_peak_bytes,
    })
}

/// The whole leaf walk 4185 -> 5874 with the default configuration, as the app plays it.
fn whole_walk(net: &Network, start: &[f32], target: &[f32]) -> Result<Value> {
    let config = WalkConfig::defaults(Mode::Leaf);
    let t = Instant::now();
    let walk = Walk::new(net, config, start.to_vec(), Some(target.to_vec())).map_err(|m| anyhow!(m))?;
    let steps: Vec<_> = walk.collect();
    let seconds = t.elapsed().as_secs_f64();
    let last = steps.last().ok_or_else(|| anyhow!("the walk produced no step"))?;
    let moves = &steps[1..];
    let off_leaf = moves.iter().map(|s| s.off_leaf as f64).sum::<f64>() / moves.len().max(1) as f64;
    Ok(json!({
        "steps": moves.len(),
        "reached": last.distance <= config.stop,
        "final_distance": last.distance,
        "seconds": seconds,
        "mean_off_leaf_fraction": off_leaf,
        "max_off_leaf_fraction": moves.iter().map(|s| s.off_leaf).fold(0.0f32, f32::max),
    }))
}

/// One row of the scaling table: a random-weight model of the given shape.
fn scaling_row(
    arch: &Architecture,
    weights: &dataleaf::model::Weights,
    runs: usize,
    rates: (f64, f64),
    top_k: Option<usize>,
) -> Result<Value> {
    let net = Network::new(arch, weights).map_err(|m| anyhow!(m))?;
    let n = net.input_len();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let start: Vec<f32> = (0..n).map(|_| rng.random::<f32>()).collect();
    let target: Vec<f32> = (0..n).map(|_| rng.random::<f32>()).collect();
    // A few runs of the big ones (each step there takes seconds): three, so that the medians
    // hold on a machine whose speed drifts, and leaf and kernel steps take turns going first.
    let work = n * net.num_classes();
    let runs = if work > 10_000_000 {
        runs.min(3)
    } else {
        runs.min(20)
    };
    let times = time_steps(&net, &start, &target, runs, top_k, None)?;
    let floor = Floor::of(&net, &start, rates, top_k);
    let i = net.input_shape();
    let mut row = json!({
        "model": arch.name,
        "input": format!("{}x{}x{}", i.channels, i.height, i.width),
        "n": n,
        "classes": net.num_classes(),
        "runs": runs,
        "jacobian_mb": (n * net.num_classes() * 4) as f64 / 1e6,
        "n_by_n_mb": (n as f64).powi(2) * 8.0 / 1e6,
    });
    times.add_to(&mut row, &floor);
    Ok(row)
}

pub fn run(args: BenchArgs) -> Result<()> {
    let (model, data) = open_pair(&args.inputs.model, &args.inputs.dataset)?;
    let runs = args.runs.max(1);
    // The papers' 4185 -> 5874 on MNIST-sized sets, else the first two images.
    let (s, t) = if data.len() > 5874 {
        (4185, 5874)
    } else {
        (0, 1.min(data.len() - 1))
    };
    let start = image_at(&data, s, "start")?.to_vec();
    let target = image_at(&data, t, "target")?.to_vec();
    let net = &model.network;
    let shape = (data.channels, data.height, data.width);

    let top_k = args.geometry.top_k;
    // The rates for this model's floor are sampled between its timed steps, every 8 pairs.
    let mut samples = RateSamples::new(8);
    let times = time_steps(net, &start, &target, runs, top_k, Some(&mut samples))?;
    let floor = Floor::of(net, &start, samples.rates(), top_k);
    let autograd_ms = median_ms(runs.min(10), 1, || {
        std::hint::black_box(jacobian::jacobian_autograd(&model.classifier, &start, shape).ok());
    });
    let walk = if args.walk {
        Some(whole_walk(net, &start, &target)?)
    } else {
        None
    };
    if !args.json {
        print_text(&model, runs, &times, autograd_ms, &floor, walk.as_ref());
        if let Some(line) = args.geometry.line(model.num_classes(), times.dropped_mass) {
            println!("  {line}");
        }
    }
    let mut sizes = Vec::new();
    if args.sizes {
        if !args.json {
            println!("\nScaling (random weights; medians; step peak = heap one leaf step adds, counted by the allocator):\n");
            println!("| model | input | n | C | G from | dropped mass | forward ms | J ms | spectrum ms | leaf step ms | kernel step ms | floor ms | step peak MB | n x n would be |");
            println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        }
        let vggs = zoo::SCALING.iter().map(|&(name, input, classes)| {
            let arch = zoo::scaling_architecture(name, input, classes);
            let weights = Network::initial_weights(&arch, 0);
            (arch, weights)
        });
        let resnets = zoo::SCALING_RESNETS
            .iter()
            .map(|&(name, input, classes)| zoo::scaling_resnet(name, input, classes, 0));
        let wanted = |arch: &Architecture| args.only.as_ref().is_none_or(|t| arch.name.contains(t.as_str()));
        let k = args.sizes_top_k as usize;
        // Steps of seconds leave no room between them: the rates are measured once, here.
        let rates = (gemm_gflops::<f32>(), gemm_gflops::<f64>());
        for (arch, weights) in vggs.chain(resnets).filter(|(a, _)| wanted(a)) {
            // The exact row, then a top-k row where K < C.
            let classes = arch.classes.len();
            let variants = std::iter::once(None).chain((k < classes).then_some(Some(k)));
            for top_k in variants {
                let row = scaling_row(&arch, &weights, runs, rates, top_k)?;
                if !args.json {
                    print_row(&row);
                }
                sizes.push(row);
            }
        }
        if !args.json {
            println!(
                "\nprocess peak RSS {:.0} MB (the largest row's step plus the bench's own buffers)",
                super::memory::peak_rss_mb()
            );
        }
    }
    if args.json {
        let mut out = json!({
            "model": model.name(),
            "threads": rayon::current_num_threads(),
            "runs": runs,
            "floor": floor.to_json(),
            // The f32 rates sampled between the timed steps (the floor divides by their median).
            "gemm_f32_gflops_samples": samples.f32_gflops,
            "autograd_jacobian_ms": autograd_ms,
            "walk_4185_5874": walk,
            "sizes": sizes,
            "peak_rss_mb": super::memory::peak_rss_mb(),
        });
        times.add_to(&mut out, &floor);
        println!("{out}");
    }
    Ok(())
}

fn print_text(
    model: &Model,
    runs: usize,
    t: &StepTimes,
    autograd_ms: f64,
    floor: &Floor,
    walk: Option<&Value>,
) {
    let threads = rayon::current_num_threads();
    println!("{} on {threads} thread(s), medians of {runs} runs:", model.name());
    println!("  forward          {:8.3} ms", t.forward_ms);
    println!(
        "  jacobian         {:8.3} ms   (candle autograd: {autograd_ms:.3} ms)",
        t.jacobian_ms
    );
    println!(
        "  spectrum         {:8.3} ms   (B B^T from blocks of B, eigen, (B B^T)^+; no basis)",
        t.spectrum_ms
    );
    println!("  leaf step        {:8.3} ms", t.leaf_step_ms);
    println!("  kernel step      {:8.3} ms", t.kernel_step_ms);
    println!(
        "  floor            {:8.3} ms   ({:.1} MFLOP f32 for J{} at {:.0} GFLOP/s, {:.1} MFLOP f64 at {:.0} GFLOP/s)",
        floor.ms(),
        (floor.jacobian_flops + floor.gram_f32_flops) / 1e6,
        if floor.gram_f32_flops > 0.0 { " and the gram" } else { "" },
        floor.gemm_f32_gflops,
        (floor.spectrum_flops - floor.gram_f32_flops) / 1e6,
        floor.gemm_f64_gflops
    );
    println!(
        "                              (the rates: medians of 512^3 products run between the timed steps)"
    );
    println!(
        "  leaf / floor     {:8.2}x,  kernel / floor {:.2}x",
        t.leaf_step_ms / floor.ms(),
        t.kernel_step_ms / floor.ms()
    );
    println!("  step peak heap   {:8.3} MB", t.step_peak_bytes as f64 / 1e6);
    if let Some(w) = walk {
        println!(
            "  walk 4185->5874  {:8.3} s    ({} steps, reached: {}, mean off-leaf fraction {:.4})",
            w["seconds"].as_f64().unwrap_or(f64::NAN),
            w["steps"],
            w["reached"],
            w["mean_off_leaf_fraction"].as_f64().unwrap_or(f64::NAN)
        );
    }
}

fn print_row(row: &Value) {
    let f = |k: &str| row[k].as_f64().unwrap_or(f64::NAN);
    let from = match row["top_k"].as_u64() {
        Some(k) => format!("top {k}"),
        None => "all".into(),
    };
    println!(
        "| {} | {} | {} | {} | {from} | {:.3} | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} MB |",
        row["model"].as_str().unwrap_or("?"),
        row["input"].as_str().unwrap_or("?"),
        row["n"],
        row["classes"],
        f("dropped_mass"),
        f("forward_ms"),
        f("jacobian_ms"),
        f("spectrum_ms"),
        f("leaf_step_ms"),
        f("kernel_step_ms"),
        f("floor_ms"),
        f("step_peak_mb"),
        f("n_by_n_mb"),
    );
}
