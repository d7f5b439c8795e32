//! The instruments end to end through the built binary: `dataleaf directions`, `dataleaf chart` and
//! `dataleaf walk --mode reach` on the shipped MNIST model (README, "Instruments").

use std::process::{Command, Output};

use dataleaf::data::Dataset;
use dataleaf::geometry::jacobian::jacobian_autograd;
use dataleaf::model::Model;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_dataleaf");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("the binary runs")
}

fn json(args: &[&str]) -> Value {
    let out = run(args);
    assert!(
        out.status.success(),
        "dataleaf {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// An orthonormal basis of span(vectors) by twice-repeated Gram-Schmidt, dropping vectors whose
/// residual is below `rtol` of the largest norm (the C gradients span at most C - 1 dimensions).
fn span_basis(vectors: &[Vec<f64>], rtol: f64) -> Vec<Vec<f64>> {
    let top = vectors.iter().map(|v| dot(v, v).sqrt()).fold(0.0, f64::max);
    let mut basis: Vec<Vec<f64>> = Vec::new();
    for v in vectors {
        let mut r = v.clone();
        for _ in 0..2 {
            for q in &basis {
                let c = dot(&r, q);
                r.iter_mut().zip(q).for_each(|(x, y)| *x -= c * y);
            }
        }
        let len = dot(&r, &r).sqrt();
        if len > rtol * top {
            r.iter_mut().for_each(|x| *x /= len);
            basis.push(r);
        }
    }
    basis
}

/// The directions printed by `dataleaf directions ARGS --json`: (eigenvalues, directions).
fn directions(args: &[&str]) -> (Vec<f64>, Vec<Vec<f64>>) {
    let out = json(args);
    let lambdas = floats(&out["eigenvalues"]);
    let dirs: Vec<Vec<f64>> = out["directions"].as_array().unwrap().iter().map(floats).collect();
    let rank = out["rank"].as_u64().unwrap() as usize;
    assert_eq!(dirs.len(), rank);
    assert_eq!(lambdas.len(), rank);
    assert!(
        lambdas.windows(2).all(|w| w[0] >= w[1]),
        "descending: {lambdas:?}"
    );
    (lambdas, dirs)
}

/// Largest |U U^T - I| entry.
fn orthonormality_error(dirs: &[Vec<f64>]) -> f64 {
    let mut worst = 0.0f64;
    for (i, a) in dirs.iter().enumerate() {
        for (j, b) in dirs.iter().enumerate() {
            let want = if i == j { 1.0 } else { 0.0 };
            worst = worst.max((dot(a, b) - want).abs());
        }
    }
    worst
}

/// The largest norm of the part of u_k outside span{grad log p_i} over the directions with
/// lambda_k >= 1e-4 lambda_1, the gradients made from J (C x n) and the logits: J_i - sum p_k J_k.
fn outside_span(lambdas: &[f64], dirs: &[Vec<f64>], jacobian: &[f64], logits: &[f64]) -> f64 {
    let c = logits.len();
    let n = jacobian.len() / c;
    let top = logits.iter().cloned().fold(f64::MIN, f64::max);
    let e: Vec<f64> = logits.iter().map(|l| (l - top).exp()).collect();
    let p: Vec<f64> = e.iter().map(|v| v / e.iter().sum::<f64>()).collect();
    let mean: Vec<f64> = (0..n)
        .map(|i| (0..c).map(|k| p[k] * jacobian[k * n + i]).sum())
        .collect();
    let grads: Vec<Vec<f64>> = (0..c)
        .map(|k| (0..n).map(|i| jacobian[k * n + i] - mean[i]).collect())
        .collect();
    let basis = span_basis(&grads, 1e-5);
    let mut worst = 0.0f64;
    for (u, &lambda) in dirs.iter().zip(lambdas) {
        if lambda < 1e-4 * lambdas[0] {
            continue;
        }
        let mut r = u.clone();
        for q in &basis {
            let c = dot(u, q);
            r.iter_mut().zip(q).for_each(|(x, y)| *x -= c * y);
        }
        worst = worst.max(dot(&r, &r).sqrt());
    }
    worst
}

#[test]
fn directions_lie_in_the_span_of_pytorch_float64_class_gradients() {
    // The fixture model's PyTorch float64 logits and Jacobians at MNIST test images 0..3.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch");
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("mnist-small.expected.json")).unwrap())
            .unwrap();
    let model = root.join("mnist-small.json");
    for i in 0..4 {
        assert_eq!(expected["sources"][i], format!("mnist t10k image {i}"));
        let index = i.to_string();
        let (lambdas, dirs) = directions(&[
            "directions",
            "--model",
            model.to_str().unwrap(),
            "--index",
            &index,
            "--json",
        ]);
        let jacobian = floats(&expected["jacobians"][i]);
        let logits = floats(&expected["logits"][i]);
        let ortho = orthonormality_error(&dirs);
        let outside = outside_span(&lambdas, &dirs, &jacobian, &logits);
        eprintln!(
            "mnist-small image {i}: rank {}, |UU^T - I| {ortho:.1e}, outside the PyTorch span {outside:.1e}",
            dirs.len()
        );
        assert!(ortho <= 1e-6, "image {i}: U U^T - I has an entry of {ortho:e}");
        assert!(
            outside <= 1e-3,
            "image {i}: a direction has {outside:e} outside the span"
        );
    }
}

/// On the shipped model at 4185. A clean image has a constant background whose equal activations
/// tie inside max-pool windows, so the network has a kink at x itself: candle's autograd then routes
/// the gradient to every tied maximum and differs from the fast J (and from PyTorch, which picks one)
/// by 3 % there; 0.01 of noise removes the ties, and there both agree.
#[test]
fn directions_at_4185_are_orthonormal_and_in_the_span_of_the_class_gradients() {
    let (lambdas, dirs) = directions(&["directions", "--index", "4185", "--json"]);
    assert!(
        (1..=9).contains(&dirs.len()),
        "rank {} within the bound C - 1 = 9",
        dirs.len()
    );
    assert!(dirs.iter().all(|u| u.len() == 784));
    let ortho = orthonormality_error(&dirs);
    let model = Model::open(dataleaf::model::DEFAULT_MODEL).unwrap();
    let data = Dataset::open("mnist").unwrap();
    let x = data.image(4185).unwrap();
    let (logits, j) = dataleaf::geometry::jacobian::logits_and_jacobian(&model.network, x);
    let to64 = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<f64>>();
    let outside = outside_span(&lambdas, &dirs, &to64(&j), &to64(&logits));
    eprintln!("4185: |UU^T - I| {ortho:.1e}, outside the span of the class gradients {outside:.1e}");
    assert!(ortho <= 1e-6, "U U^T - I has an entry of {ortho:e}");
    assert!(outside <= 1e-3, "a direction has {outside:e} outside the span");

    // Against candle autograd where J is unique: 4185 plus a little noise.
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(3);
    let noisy: Vec<f32> = x
        .iter()
        .map(|&v| (v + 0.01 * rand::Rng::random_range(&mut rng, -1.0f32..1.0)).clamp(0.0, 1.0))
        .collect();
    let geo = dataleaf::geometry::LocalGeometry::at(&model.network, &noisy);
    let found = geo.leaf_directions();
    let lambdas: Vec<f64> = found.iter().map(|d| d.lambda).collect();
    let dirs: Vec<Vec<f64>> = found.into_iter().map(|d| d.u).collect();
    let slow = jacobian_autograd(&model.classifier, &noisy, (1, 28, 28)).unwrap();
    let logits: Vec<f64> = geo.logits.iter().map(|&l| l as f64).collect();
    let outside = outside_span(&lambdas, &dirs, &to64(&slow), &logits);
    let ortho = orthonormality_error(&dirs);
    eprintln!("4185 + noise: |UU^T - I| {ortho:.1e}, outside candle autograd's span {outside:.1e}");
    assert!(ortho <= 1e-6);
    assert!(
        outside <= 1e-3,
        "a direction has {outside:e} outside candle's span"
    );
}

#[test]
fn directions_png_and_errors() {
    let dir = std::env::temp_dir().join(format!("dataleaf-directions-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("u.png");
    let out = run(&["directions", "--index", "4185", "--png", png.to_str().unwrap()]);
    assert!(out.status.success());
    let image = image::open(&png).unwrap().to_rgb8();
    // Nine 112-pixel tiles with 4-pixel gaps; the map is diverging, so both red and blue appear.
    assert_eq!(image.width(), 9 * 112 + 8 * 4);
    let reds = image.pixels().filter(|p| p[0] > 150 && p[2] < 90).count();
    let blues = image.pixels().filter(|p| p[2] > 150 && p[0] < 90).count();
    assert!(reds > 100 && blues > 100, "reds {reds}, blues {blues}");
    let out = run(&["directions", "--index", "10000"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: --index 10000 is out of range"), "{err}");
    assert_eq!(err.lines().count(), 1);
}

fn kept(chart: &Value) -> f64 {
    let centre = chart["centre_prediction"].as_u64().unwrap();
    let cells = chart["cells"].as_array().unwrap();
    cells
        .iter()
        .filter(|c| c["prediction"].as_u64() == Some(centre))
        .count() as f64
        / cells.len() as f64
}

#[test]
fn kernel_charts_keep_the_class_and_leaf_charts_change_it() {
    let args = |plane| {
        [
            "chart", "--index", "2024", "--plane", plane, "--size", "5", "--radius", "4", "--json",
        ]
    };
    let kernel = json(&args("kernel"));
    let leaf = json(&args("leaf"));
    for chart in [&kernel, &leaf] {
        let cells = chart["cells"].as_array().unwrap();
        assert_eq!(cells.len(), 25);
        let a: Vec<f64> = cells.iter().map(|c| c["a"].as_f64().unwrap()).collect();
        assert_eq!(a.iter().cloned().fold(f64::MIN, f64::max), 4.0);
        assert_eq!(a.iter().cloned().fold(f64::MAX, f64::min), -4.0);
        assert!((kept(chart) - chart["kept_fraction"].as_f64().unwrap()).abs() < 1e-12);
    }
    eprintln!("kept: kernel {}, leaf {}", kept(&kernel), kept(&leaf));
    assert!(
        kept(&kernel) >= 0.9,
        "kernel chart keeps the class in {}",
        kept(&kernel)
    );
    assert!(kept(&leaf) < 1.0, "leaf chart changes the class somewhere");
    // Off the centre, kernel cells moved across leaves and leaf cells along them.
    let off = |chart: &Value| -> Vec<f64> {
        chart["cells"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["a"] != 0.0 || c["b"] != 0.0)
            .map(|c| c["off_leaf"].as_f64().unwrap())
            .collect()
    };
    assert!(off(&kernel).iter().all(|&o| o > 0.99), "{:?}", off(&kernel));
    assert!(off(&leaf).iter().all(|&o| o < 1e-6), "{:?}", off(&leaf));
    let out = run(&["chart", "--index", "1", "--plane", "sideways"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown plane \"sideways\""));
    let out = run(&["chart", "--index", "1", "--plane", "leaf", "--radius", "-1"]);
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: --radius must be a positive"));
}

#[test]
fn reach_stays_on_the_leaf_and_gets_closer_than_the_strict_greedy_walk() {
    let greedy = json(&[
        "walk",
        "--mode",
        "leaf",
        "--transverse",
        "0",
        "--max-steps",
        "3000",
        "--start",
        "4185",
        "--target",
        "5874",
        "--json",
    ]);
    // Bounded by evaluations (not by the clock) so the test means the same on a busy machine.
    let reach = json(&[
        "walk",
        "--mode",
        "reach",
        "--start",
        "4185",
        "--target",
        "5874",
        "--max-steps",
        "1000",
        "--budget",
        "600",
        "--json",
    ]);
    let ratio = |v: &Value| v["final_distance"].as_f64().unwrap() / v["start_distance"].as_f64().unwrap();
    eprintln!("greedy {:.3}, reach {:.3}", ratio(&greedy), ratio(&reach));
    assert_eq!(reach["mode"], "reach");
    assert_eq!(reach["evaluations"], 1000);
    assert!(reach["mean_off_leaf"].as_f64().unwrap() <= 0.01);
    assert!(reach["max_off_leaf"].as_f64().unwrap() <= 0.01);
    assert!(
        ratio(&reach) < ratio(&greedy),
        "reach {} vs greedy {}",
        ratio(&reach),
        ratio(&greedy)
    );
    let distances = floats(&reach["distances"]);
    assert_eq!(distances.len(), reach["steps"].as_u64().unwrap() as usize + 1);
    assert_eq!(
        *distances.last().unwrap(),
        reach["final_distance"].as_f64().unwrap()
    );
    let out = run(&["walk", "--mode", "reach", "--start", "1"]);
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: --mode reach needs --target"));
    let out = run(&[
        "walk",
        "--mode",
        "reach",
        "--start",
        "1",
        "--target",
        "2",
        "--strategy",
        "magic",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown strategy \"magic\""));
    let out = run(&[
        "walk", "--mode", "leaf", "--start", "1", "--target", "2", "--budget", "3",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("belong to --mode reach"));
}
