//! Models exported from PyTorch load and compute PyTorch's logits, in both implementations.
//!
//! The fixtures in tests/fixtures/torch/ are written by scripts/make_torch_fixtures.py (needs PyTorch,
//! run once, outputs committed) with the export recipe it prints: `save_file(net.state_dict())` plus the
//! architecture JSON. `NAME.expected.json` holds PyTorch's float64 reference on real images; its
//! Jacobian and eigenvalue fields are for the geometry tests, not checked here.

use std::path::{Path, PathBuf};

use dataleaf::data::Dataset;
use dataleaf::model::{Architecture, Model};
use serde_json::Value;

const MODELS: [&str; 2] = ["mnist-small", "cifar-small"];

/// Logits must agree within this, absolutely or relative to the largest |logit|.
const TOLERANCE: f64 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch")
}

struct Expected {
    inputs: Vec<Vec<f64>>,
    logits: Vec<Vec<f64>>,
    value: Value,
}

fn matrix(v: &Value, field: &str, name: &str) -> Vec<Vec<f64>> {
    v[field]
        .as_array()
        .unwrap_or_else(|| panic!("{name}.expected.json: no {field:?} array"))
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap_or_else(|| panic!("{name}.expected.json: {field:?} has a non-array row"))
                .iter()
                .map(|x| {
                    x.as_f64()
                        .unwrap_or_else(|| panic!("{name}.expected.json: {field:?} has a non-number"))
                })
                .collect()
        })
        .collect()
}

fn expected(name: &str) -> Expected {
    let path = fixtures().join(format!("{name}.expected.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Expected {
        inputs: matrix(&value, "inputs", name),
        logits: matrix(&value, "logits", name),
        value,
    }
}

fn load(name: &str) -> Model {
    let path = fixtures().join(format!("{name}.json"));
    Model::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn flat_f32(inputs: &[Vec<f64>]) -> Vec<f32> {
    inputs.iter().flatten().map(|&x| x as f32).collect()
}

/// Largest |got - want| over the batch, after checking it is within tolerance.
fn check_logits(what: &str, got: &[f32], want: &[Vec<f64>]) -> f64 {
    let classes = want[0].len();
    assert_eq!(got.len(), want.len() * classes, "{what}: wrong number of logits");
    let scale = want.iter().flatten().fold(0.0f64, |m, x| m.max(x.abs()));
    let tol = TOLERANCE * scale.max(1.0);
    let mut worst = 0.0f64;
    for (i, row) in want.iter().enumerate() {
        for (k, &w) in row.iter().enumerate() {
            let g = got[i * classes + k] as f64;
            assert!(g.is_finite(), "{what}: image {i} class {k}: logit {g}");
            let err = (g - w).abs();
            assert!(
                err <= tol,
                "{what}: image {i} class {k}: {g} vs PyTorch {w} (error {err:.3e} > {tol:.1e})"
            );
            worst = worst.max(err);
        }
    }
    worst
}

fn argmax(row: &[f64]) -> usize {
    (0..row.len()).fold(0, |b, k| if row[k] > row[b] { k } else { b })
}

#[test]
fn fast_network_matches_pytorch_logits() {
    for name in MODELS {
        let model = load(name);
        let exp = expected(name);
        let batch = exp.inputs.len();
        assert_eq!(exp.inputs[0].len(), model.arch.input.len(), "{name}: input size");
        let got = model.network.logits(&flat_f32(&exp.inputs), batch);
        let worst = check_logits(&format!("{name} (network)"), &got, &exp.logits);
        eprintln!("{name}: network max |logit error| {worst:.3e}");
        // One image at a time gives the same as the batch.
        for (i, x) in exp.inputs.iter().enumerate() {
            let one = model.network.logits(&flat_f32(std::slice::from_ref(x)), 1);
            check_logits(
                &format!("{name} (network, image {i} alone)"),
                &one,
                &exp.logits[i..i + 1],
            );
        }
    }
}

#[test]
fn candle_classifier_matches_pytorch_logits() {
    for name in MODELS {
        let model = load(name);
        let exp = expected(name);
        let batch = exp.inputs.len();
        let got = model
            .classifier
            .logits(&flat_f32(&exp.inputs), batch)
            .unwrap_or_else(|e| panic!("{name}: candle: {e}"));
        let worst = check_logits(&format!("{name} (candle)"), &got, &exp.logits);
        eprintln!("{name}: candle max |logit error| {worst:.3e}");
    }
}

#[test]
fn fixtures_are_nontrivial() {
    // Guards against a regenerated fixture that tests nothing: logits spread over a few units, the
    // inputs are distinct real images, and the geometry fields the other tests read are present.
    for name in MODELS {
        let model = load(name);
        let exp = expected(name);
        let c = model.num_classes();
        let n = model.arch.input.len();
        assert!(exp.inputs.len() >= 2, "{name}: needs several inputs");
        assert!(exp
            .inputs
            .iter()
            .all(|x| x.len() == n && x.iter().all(|p| (0.0..=1.0).contains(p))));
        assert_ne!(exp.inputs[0], exp.inputs[1], "{name}: inputs repeat");
        for row in &exp.logits {
            assert_eq!(row.len(), c);
            let (lo, hi) = row
                .iter()
                .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
            assert!(hi - lo > 1.0, "{name}: logits {row:?} hardly differ");
        }
        let eig = matrix(&exp.value, "eigenvalues", name);
        assert_eq!(eig.len(), exp.inputs.len(), "{name}: one spectrum per input");
        assert!(eig
            .iter()
            .all(|e| e.len() == c && e.windows(2).all(|w| w[0] >= w[1])));
        let jac = matrix(&exp.value, "jacobians", name);
        let count = exp.value["jacobian_count"].as_u64().expect("jacobian_count") as usize;
        assert!(count >= 1 && jac.len() == count && count <= exp.inputs.len());
        assert!(
            jac.iter().all(|j| j.len() == c * n),
            "{name}: Jacobians are C x n"
        );
    }
}

#[test]
fn mnist_fixture_inputs_are_the_first_test_images() {
    let exp = expected("mnist-small");
    let data = Dataset::open("mnist").expect("MNIST test set");
    for (i, x) in exp.inputs.iter().enumerate() {
        let img = data.image(i).expect("image");
        assert_eq!(
            flat_f32(std::slice::from_ref(x)),
            img,
            "image {i} differs from the MNIST test set"
        );
    }
}

#[test]
fn cifar_fixture_inputs_are_the_shipped_pngs() {
    let exp = expected("cifar-small");
    let sources = exp.value["sources"].as_array().expect("sources");
    assert_eq!(sources.len(), exp.inputs.len());
    for (x, src) in exp.inputs.iter().zip(sources) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(src.as_str().expect("source path"));
        let rgb = image::open(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .to_rgb8();
        let (w, h) = rgb.dimensions();
        let mut chw = vec![0f32; 3 * (w * h) as usize];
        for (px, py, p) in rgb.enumerate_pixels() {
            for c in 0..3 {
                chw[c * (w * h) as usize + (py * w + px) as usize] = p[c] as f32 / 255.0;
            }
        }
        assert_eq!(flat_f32(std::slice::from_ref(x)), chw, "{}", path.display());
    }
}

#[test]
fn predictions_agree_between_engines_and_pytorch() {
    for name in MODELS {
        let model = load(name);
        let exp = expected(name);
        let batch = exp.inputs.len();
        let c = model.num_classes();
        let fast = model.network.logits(&flat_f32(&exp.inputs), batch);
        for (i, row) in exp.logits.iter().enumerate() {
            let f: Vec<f64> = fast[i * c..(i + 1) * c].iter().map(|&x| x as f64).collect();
            assert_eq!(argmax(&f), argmax(row), "{name}: image {i}");
        }
    }
}

#[test]
fn exported_architecture_round_trips() {
    for name in MODELS {
        let path = fixtures().join(format!("{name}.json"));
        let text = std::fs::read_to_string(&path).unwrap();
        let arch = Architecture::from_json(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let again =
            Architecture::from_json(&arch.to_json()).unwrap_or_else(|e| panic!("{name}: re-read: {e}"));
        assert_eq!(arch, again, "{name}");
        // What the exporter wrote is what the loader sees.
        let model = load(name);
        assert_eq!(model.arch, arch, "{name}");
        assert_eq!(model.name(), name);
        assert!(
            arch.normalize.is_some(),
            "{name}: the fixture exercises normalisation"
        );
    }
}
