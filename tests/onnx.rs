//! ONNX models as PyTorch exports them (tests/fixtures/onnx, made by scripts/make_onnx_fixtures.py):
//! seven torchvision architectures and per-operator graphs, each with PyTorch float64 logits and
//! spectra on real CIFAR-10 images. dataleaf must reproduce them through `dataleaf spectrum`, the
//! fast Jacobian must equal PyTorch's, candle autograd and central differences, and every bad file
//! must get exactly one `error:` line naming it.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use dataleaf::data::Dataset;
use dataleaf::geometry::jacobian::{jacobian_autograd, logits_and_jacobian};
use dataleaf::geometry::LocalGeometry;
use dataleaf::model::Model;

const BIN: &str = env!("CARGO_BIN_EXE_dataleaf");

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx")
}

fn cifar() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/data/cifar10-samples")
}

/// The fixtures that have a PyTorch reference beside them.
fn referenced() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures())
        .expect("fixtures folder")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".expected.json").map(str::to_string)
        })
        .collect();
    names.sort();
    names
}

fn expected(name: &str) -> Value {
    let text =
        std::fs::read_to_string(fixtures().join(format!("{name}.expected.json"))).expect("expected file");
    serde_json::from_str(&text).expect("expected JSON")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

const ARCHITECTURES: [&str; 7] = [
    "resnet18",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "densenet121",
    "efficientnet_b0",
    "regnet_x_400mf",
    "shufflenet_v2_x0_5",
];

#[test]
fn every_torchvision_architecture_has_a_fixture() {
    let names = referenced();
    for arch in ARCHITECTURES {
        assert!(
            names.iter().any(|n| n.starts_with(arch)),
            "no fixture for {arch} among {names:?}"
        );
    }
}

/// Eigenvalues within 1e-3 of lambda_1 and probabilities within 1e-5 of PyTorch float64, on every
/// fixture and every image it was made on; the first image through the command line.
#[test]
fn spectra_and_probabilities_equal_pytorch_float64() {
    let data = Dataset::open(cifar().to_str().expect("utf-8")).expect("CIFAR samples");
    for name in referenced() {
        let e = expected(&name);
        let path = fixtures().join(format!("{name}.onnx"));
        let model = Model::open(path.to_str().expect("utf-8")).unwrap_or_else(|err| panic!("{name}: {err}"));
        let indices: Vec<usize> = e["indices"]
            .as_array()
            .expect("indices")
            .iter()
            .map(|v| v.as_u64().expect("index") as usize)
            .collect();
        assert!(indices.len() >= 4, "{name}: several images");
        for (k, &index) in indices.iter().enumerate() {
            let geometry = LocalGeometry::at(&model.network, data.image(index).expect("image"));
            let want_p = floats(&e["probs"][k]);
            let want_l = floats(&e["eigenvalues"][k]);
            for (a, b) in geometry.probs.iter().zip(&want_p) {
                assert!(
                    (a - b).abs() <= 1e-5,
                    "{name} image {index}: p {a} vs PyTorch {b}"
                );
            }
            let top = want_l[0];
            for (a, b) in geometry.eigenvalues.iter().zip(&want_l) {
                assert!(
                    (a - b).abs() <= 1e-3 * top,
                    "{name} image {index}: lambda {a} vs PyTorch {b} (lambda_1 {top})"
                );
            }
        }
        // The same through the command the issue names.
        let out = Command::new(BIN)
            .args(["spectrum", "--model"])
            .arg(&path)
            .arg("--dataset")
            .arg(cifar())
            .args(["--index", &indices[0].to_string(), "--json"])
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("spectrum JSON");
        let got = floats(&v["eigenvalues"]);
        let want = floats(&e["eigenvalues"][0]);
        assert!(
            (got[0] - want[0]).abs() <= 1e-3 * want[0],
            "{name}: CLI lambda_1 {} vs {}",
            got[0],
            want[0]
        );
        let p = floats(&v["probs"]);
        let wp = floats(&e["probs"][0]);
        assert!(
            p.iter().zip(&wp).all(|(a, b)| (a - b).abs() <= 1e-5),
            "{name}: CLI probs"
        );
    }
}

/// On the per-operator graphs, J equals PyTorch float64's J, candle autograd over the same graph,
/// and central differences.
#[test]
fn jacobians_equal_pytorch_candle_and_central_differences() {
    let data = Dataset::open(cifar().to_str().expect("utf-8")).expect("CIFAR samples");
    let mut checked = 0;
    for name in referenced() {
        let e = expected(&name);
        let Some(want) = e.get("jacobian").map(floats) else {
            continue;
        };
        let path = fixtures().join(format!("{name}.onnx"));
        let model = Model::open(path.to_str().expect("utf-8")).expect("opens");
        let index = e["indices"][0].as_u64().expect("index") as usize;
        let x = data.image(index).expect("image");
        let (_, j) = logits_and_jacobian(&model.network, x);
        let jmax = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let err = j
            .iter()
            .zip(&want)
            .fold(0.0f64, |m, (a, b)| m.max((*a as f64 - b).abs()));
        assert!(err <= 1e-4 * jmax, "{name}: |J - J_torch| = {err} of {jmax}");

        let i = model.network.input_shape();
        let auto =
            jacobian_autograd(&model.classifier, x, (i.channels, i.height, i.width)).expect("autograd");
        let err = j
            .iter()
            .zip(&auto)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs() as f64));
        assert!(err <= 1e-4 * jmax, "{name}: |J - J_candle| = {err} of {jmax}");

        // Central differences on a sample of pixels (step 1e-3 in pixel units).
        let n = model.network.input_len();
        let c = model.num_classes();
        let eps = 1e-3f32;
        let mut errors = Vec::new();
        for pixel in (0..n).step_by(37) {
            let (mut up, mut down) = (x.to_vec(), x.to_vec());
            up[pixel] += eps;
            down[pixel] -= eps;
            let (lu, ld) = (model.network.logits(&up, 1), model.network.logits(&down, 1));
            for k in 0..c {
                let fd = ((lu[k] - ld[k]) / (2.0 * eps)) as f64;
                errors.push((fd - j[k * n + pixel] as f64).abs() / jmax);
            }
        }
        errors.sort_by(f64::total_cmp);
        let median = errors[errors.len() / 2];
        let p95 = errors[errors.len() * 95 / 100];
        // f32 differences at this step carry about 1e-3 of max |J| of rounding noise.
        assert!(
            median < 3e-3 && p95 < 2e-2,
            "{name}: central differences median {median}, p95 {p95}"
        );
        checked += 1;
    }
    assert!(checked >= 5, "per-operator fixtures with a Jacobian: {checked}");
}

#[test]
fn the_every_operator_fixture_uses_every_operator() {
    let text = std::fs::read_to_string(fixtures().join("MANIFEST.json")).expect("manifest");
    let manifest: Value = serde_json::from_str(&text).expect("manifest JSON");
    let mut seen = std::collections::BTreeSet::new();
    for m in manifest.as_array().expect("a list of models") {
        if let Some(ops) = m["ops"].as_object() {
            seen.extend(ops.keys().cloned());
        }
    }
    for op in [
        "Conv",
        "BatchNormalization",
        "Relu",
        "Clip",
        "LeakyRelu",
        "HardSwish",
        "HardSigmoid",
        "Sigmoid",
        "Tanh",
        "Mul",
        "Add",
        "Sub",
        "Div",
        "Concat",
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "Flatten",
        "Gemm",
        "MatMul",
        "Constant",
        "Reshape",
        "Transpose",
        "Slice",
        "Shape",
        "Gather",
        "Unsqueeze",
    ] {
        assert!(seen.contains(op), "no fixture uses {op}: {seen:?}");
    }
}

/// A fixture without a sidecar gets no normalisation and classes "0".."C-1"; with one, its names.
#[test]
fn sidecar_names_the_classes() {
    let with = Model::open(fixtures().join("resnet18-w16.onnx").to_str().expect("utf-8")).expect("opens");
    assert_eq!(with.class_name(3), "cat");
    assert_eq!(with.name(), "resnet18-w16");
    let without = Model::open(fixtures().join("every-op.onnx").to_str().expect("utf-8")).expect("opens");
    assert_eq!(without.class_name(3), "3");
    assert!(without.arch.normalize.is_none());
}

/// A temporary folder for one test.
struct Temp(PathBuf);

impl Temp {
    fn new(tag: &str) -> Temp {
        let dir = std::env::temp_dir().join(format!("dataleaf-onnx-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Temp(dir)
    }
    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).expect("write");
        p
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Exit non-zero with exactly one `error:` line that names the file and says `needle`.
fn refused(path: &Path, needle: &str) {
    let out = Command::new(BIN)
        .args(["spectrum", "--index", "0", "--model"])
        .arg(path)
        .arg("--dataset")
        .arg(cifar())
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{} was accepted", path.display());
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    let name = path.file_name().expect("name").to_string_lossy();
    assert!(lines[0].contains(name.as_ref()), "names the file: {stderr}");
    assert!(lines[0].contains(needle), "says {needle:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

// A minimal protobuf writer for hand-made bad models.
fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn field(n: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint(n << 3 | 2, &mut out);
    varint(payload.len() as u64, &mut out);
    out.extend_from_slice(payload);
    out
}

fn field_int(n: u64, v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    varint(n << 3, &mut out);
    varint(v, &mut out);
    out
}

/// ValueInfoProto of a float tensor with these dims (a negative one is the symbol "N").
fn value_info(name: &str, dims: &[i64]) -> Vec<u8> {
    let mut shape = Vec::new();
    for &d in dims {
        let dim = if d < 0 {
            field(2, b"N")
        } else {
            field_int(1, d as u64)
        };
        shape.extend(field(1, &dim));
    }
    let tensor_type = [field_int(1, 1), field(2, &shape)].concat();
    [field(1, name.as_bytes()), field(2, &field(1, &tensor_type))].concat()
}

fn model(nodes: &[Vec<u8>], initializers: &[Vec<u8>]) -> Vec<u8> {
    let mut graph = Vec::new();
    for n in nodes {
        graph.extend(field(1, n));
    }
    graph.extend(field(2, b"g"));
    for t in initializers {
        graph.extend(field(5, t));
    }
    graph.extend(field(11, &value_info("x", &[-1, 1, 4, 4])));
    graph.extend(field(12, &value_info("y", &[1, 2])));
    [field_int(1, 8), field(7, &graph), field(8, &field_int(2, 17))].concat()
}

fn node(op: &str, inputs: &[&str], outputs: &[&str], name: &str) -> Vec<u8> {
    let mut n = Vec::new();
    for i in inputs {
        n.extend(field(1, i.as_bytes()));
    }
    for o in outputs {
        n.extend(field(2, o.as_bytes()));
    }
    n.extend(field(3, name.as_bytes()));
    n.extend(field(4, op.as_bytes()));
    n
}

fn float_tensor(name: &str, dims: &[u64], values: &[f32]) -> Vec<u8> {
    let mut t = Vec::new();
    for &d in dims {
        t.extend(field_int(1, d));
    }
    t.extend(field_int(2, 1));
    t.extend(field(8, name.as_bytes()));
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    t.extend(field(9, &raw));
    t
}

/// x [N,1,4,4] -> Flatten -> Gemm(W [2,16]) -> y: a valid model, from which the bad ones are made.
fn good_model() -> Vec<u8> {
    let mut gemm = node("Gemm", &["f", "W"], &["y"], "fc");
    gemm.extend(field(
        5,
        &[field(1, b"transB"), field_int(3, 1), field_int(20, 2)].concat(),
    ));
    model(
        &[node("Flatten", &["x"], &["f"], "flat"), gemm],
        &[float_tensor("W", &[2, 16], &[0.5; 32])],
    )
}

#[test]
fn a_hand_made_model_opens() {
    let t = Temp::new("good");
    let path = t.file("good.onnx", &good_model());
    let m = Model::open(path.to_str().expect("utf-8")).expect("opens");
    assert_eq!(m.num_classes(), 2);
    assert_eq!(m.network.input_len(), 16);
}

#[test]
fn every_bad_model_gets_one_line() {
    let t = Temp::new("bad");
    refused(&t.file("empty.onnx", b""), "empty");
    let good = good_model();
    refused(&t.file("truncated.onnx", &good[..good.len() - 7]), "truncated");
    refused(
        &t.file(
            "garbage.onnx",
            b"\x08\x96\x01 this is no protobuf \xff\xff\xff\xff",
        ),
        "not a readable ONNX model",
    );
    // The Gemm's matrix is not an initializer.
    let mut gemm = node("Gemm", &["f", "W"], &["y"], "fc");
    gemm.extend(field(5, &[field(1, b"transB"), field_int(3, 1)].concat()));
    let missing = model(&[node("Flatten", &["x"], &["f"], "flat"), gemm], &[]);
    refused(&t.file("missing-initializer.onnx", &missing), "\"W\"");
    refused(&fixtures().join("unsupported-op.onnx"), "Resize");
    refused(&fixtures().join("two-inputs.onnx"), "2 inputs");
    refused(&fixtures().join("dynamic-dims.onnx"), "dynamic");
    // A sidecar that names the wrong number of classes.
    let dir = Temp::new("sidecar");
    let onnx = dir.file("m.onnx", &good);
    dir.file("m.json", br#"{"classes": ["a", "b", "c"]}"#);
    let out = Command::new(BIN)
        .args(["spectrum", "--index", "0", "--model"])
        .arg(&onnx)
        .arg("--dataset")
        .arg(cifar())
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("m.json") && stderr.contains("3 classes"),
        "{stderr}"
    );
}
