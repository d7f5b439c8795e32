//! The command line, end to end through the built binary (shared/DESIGN.md, "Command line" and
//! "Errors"): every bad input exits non-zero with exactly one `error: ` line on stderr naming the file
//! or argument and the problem, never a panic or a backtrace; and the headless subcommands print the
//! JSON they promise.
//!
//! Models that must work are the committed PyTorch fixture `tests/fixtures/torch/mnist-small.json`
//! (untrained, so its accuracy is near chance) rather than the shipped default, which may not exist
//! yet. Bad files are generated at test time in a temporary folder per test.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_dataleaf");

/// An index whose product with 784 (one MNIST image) wraps to 0 in 64-bit arithmetic.
const WRAPPING_INDEX: &str = "1152921504606846976"; // 2^60

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn torch_fixture(file: &str) -> PathBuf {
    root().join("tests/fixtures/torch").join(file)
}

/// The committed PyTorch-exported MNIST model, as a command-line argument.
fn mnist_small() -> String {
    path_arg(&torch_fixture("mnist-small.json"))
}

fn path_arg(p: &Path) -> String {
    p.to_str().expect("temp paths are UTF-8").to_string()
}

/// A folder of its own for one test, removed afterwards.
struct Temp(PathBuf);

impl Temp {
    fn new(test: &str) -> Temp {
        let dir = std::env::temp_dir().join(format!("dataleaf-cli-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        Temp(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        p
    }

    /// Copy a committed fixture file into the folder under a new name.
    fn copy(&self, fixture: &str, name: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::copy(torch_fixture(fixture), &p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        p
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(BIN)
        .args(args)
        .current_dir(root())
        // A backtrace, if anything printed one, would then show in stderr and fail the checks.
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("the dataleaf binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Run a command that must fail cleanly: non-zero exit, nothing on stdout, and exactly one stderr
/// line starting with `error: ` that contains every one of `needles`. Returns that line.
fn fails<S: AsRef<OsStr>>(args: &[S], needles: &[&str]) -> String {
    let shown: Vec<String> = args
        .iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    let out = run(args);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    let context = format!("dataleaf {}\nstdout: {stdout}\nstderr: {stderr}", shown.join(" "));
    assert!(!out.status.success(), "should fail: {context}");
    assert!(
        out.status.code().is_some_and(|c| c != 0),
        "should exit with a non-zero code, not a signal: {context}"
    );
    for bad in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
        assert!(!stderr.contains(bad), "stderr mentions {bad:?}: {context}");
    }
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "stderr should be exactly one line: {context}");
    let line = lines[0];
    assert!(
        line.starts_with("error: "),
        "stderr should start with \"error: \": {context}"
    );
    for needle in needles {
        assert!(
            line.contains(needle),
            "stderr should mention {needle:?}: {context}"
        );
    }
    assert!(
        stdout.is_empty(),
        "a failing command should print nothing on stdout: {context}"
    );
    line.to_string()
}

/// Run a command that must succeed and print one JSON value on stdout.
fn json_of<S: AsRef<OsStr>>(args: &[S]) -> Value {
    let shown: Vec<String> = args
        .iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    let out = run(args);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    let context = format!("dataleaf {}\nstdout: {stdout}\nstderr: {stderr}", shown.join(" "));
    assert!(out.status.success(), "should succeed: {context}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {context}"))
}

fn numbers(v: &Value, key: &str) -> Vec<f64> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key:?} is not an array in {v}"))
        .iter()
        .map(|x| {
            x.as_f64()
                .unwrap_or_else(|| panic!("{key:?} holds a non-number in {v}"))
        })
        .collect()
}

fn has_keys(v: &Value, keys: &[&str]) {
    for k in keys {
        assert!(v.get(k).is_some(), "no {k:?} in {v}");
    }
}

// --- Small files written by hand -----------------------------------------------------------------

/// An IDX images file (raw; the loader detects gzip by content, not by name).
fn idx_images(count: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for word in [0x0803u32, count, rows, cols] {
        v.extend_from_slice(&word.to_be_bytes());
    }
    v.extend_from_slice(pixels);
    v
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for word in [0x0801u32, labels.len() as u32] {
        v.extend_from_slice(&word.to_be_bytes());
    }
    v.extend_from_slice(labels);
    v
}

/// `count` 28x28 images with a little ink in each.
fn mnist_like_pixels(count: usize) -> Vec<u8> {
    (0..count * 784).map(|i| ((i * 37) % 256) as u8).collect()
}

const IMAGES: &str = "t10k-images-idx3-ubyte";
const LABELS: &str = "t10k-labels-idx1-ubyte";

/// A safetensors file of F32 tensors, written by hand: an 8-byte little-endian header length, the
/// JSON header, then the raw little-endian data in header order.
fn safetensors(tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape, values) in tensors {
        let begin = data.len();
        for v in values {
            data.extend_from_slice(&v.to_le_bytes());
        }
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [begin, data.len()]}),
        );
    }
    let header = Value::Object(header).to_string();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&data);
    out
}

/// The smallest MNIST model: flatten, then one linear layer named "0".
const LINEAR_ARCH: &str = r#"{
  "name": "tiny-linear",
  "input": { "channels": 1, "height": 28, "width": 28 },
  "classes": ["0","1","2","3","4","5","6","7","8","9"],
  "layers": [ { "type": "flatten" }, { "type": "linear", "name": "0", "in": 784, "out": 10 } ]
}"#;

fn linear_weight() -> Vec<f32> {
    (0..7840).map(|i| ((i % 13) as f32 - 6.0) * 1e-3).collect()
}

/// Write tiny-linear's architecture and the given tensors as `<dir>/tiny.{json,safetensors}`.
fn tiny_model(t: &Temp, tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> PathBuf {
    t.write("tiny.safetensors", safetensors(tensors));
    t.write("tiny.json", LINEAR_ARCH)
}

// --- Model files -----------------------------------------------------------------------------------

#[test]
fn hand_written_model_loads() {
    // The control for the bad-model cases below: the same files, intact, work.
    let t = Temp::new("hand-written-model");
    let json = tiny_model(
        &t,
        &[
            ("0.weight", vec![10, 784], linear_weight()),
            ("0.bias", vec![10], vec![0.0; 10]),
        ],
    );
    let v = json_of(&["evaluate", "--model", &path_arg(&json), "--json"]);
    assert_eq!(v["model"], "tiny-linear");
    assert_eq!(v["count"], 10000);
}

#[test]
fn missing_model_file() {
    let t = Temp::new("missing-model");
    let json = path_arg(&t.path("nowhere.json"));
    fails(
        &["spectrum", "--model", &json, "--index", "0"],
        &[&json, "no such file"],
    );
}

#[test]
fn model_path_is_a_folder() {
    let t = Temp::new("model-folder");
    let dir = path_arg(&t.0);
    fails(&["evaluate", "--model", &dir], &[&dir, "folder"]);
}

#[test]
fn missing_weights_file() {
    let t = Temp::new("missing-weights");
    let json = t.copy("mnist-small.json", "lonely.json");
    let weights = path_arg(&t.path("lonely.safetensors"));
    fails(
        &["evaluate", "--model", &path_arg(&json)],
        &[&weights, "weights file not found"],
    );
}

#[test]
fn architecture_that_is_not_json() {
    let t = Temp::new("not-json");
    t.copy("mnist-small.safetensors", "broken.safetensors");
    let json = path_arg(&t.write("broken.json", "this is { not JSON"));
    fails(
        &["evaluate", "--model", &json],
        &[&json, "not a valid model architecture"],
    );
    // Nor is an empty file, nor one that is not text.
    t.write("broken.json", "");
    fails(&["evaluate", "--model", &json], &[&json]);
    t.write("broken.json", [0xff, 0xfe, 0x00, 0x7b]);
    fails(&["evaluate", "--model", &json], &[&json]);
}

#[test]
fn unknown_layer_type() {
    let t = Temp::new("unknown-layer");
    t.copy("mnist-small.safetensors", "odd.safetensors");
    let arch = std::fs::read_to_string(torch_fixture("mnist-small.json")).unwrap();
    let edited = arch.replacen(r#""type": "relu""#, r#""type": "swish""#, 1);
    assert_ne!(arch, edited, "the fixture has a relu layer to replace");
    let json = path_arg(&t.write("odd.json", edited));
    fails(&["evaluate", "--model", &json], &[&json, "swish"]);
}

#[test]
fn weight_tensor_missing() {
    let t = Temp::new("missing-tensor");
    // Written by hand, without the bias.
    let json = tiny_model(&t, &[("0.weight", vec![10, 784], linear_weight())]);
    let weights = path_arg(&t.path("tiny.safetensors"));
    fails(
        &["evaluate", "--model", &path_arg(&json)],
        &[&weights, "\"0.bias\"", "missing"],
    );
    // The PyTorch fixture with a layer renamed so its weights are not in the file.
    t.copy("mnist-small.safetensors", "renamed.safetensors");
    let arch = std::fs::read_to_string(torch_fixture("mnist-small.json")).unwrap();
    let edited = arch.replacen(r#""name": "8""#, r#""name": "9""#, 1);
    assert_ne!(arch, edited);
    let json = path_arg(&t.write("renamed.json", edited));
    fails(
        &["evaluate", "--model", &json],
        &["renamed.safetensors", "\"9.weight\"", "missing"],
    );
}

#[test]
fn weight_tensor_with_the_wrong_shape() {
    let t = Temp::new("misshaped-tensor");
    // Transposed: [784, 10] where PyTorch's Linear stores [out, in] = [10, 784].
    let json = tiny_model(
        &t,
        &[
            ("0.weight", vec![784, 10], linear_weight()),
            ("0.bias", vec![10], vec![0.0; 10]),
        ],
    );
    fails(
        &["evaluate", "--model", &path_arg(&json)],
        &["tiny.safetensors", "\"0.weight\"", "[784, 10]", "[10, 784]"],
    );
    // The fixture's first convolution declared 5x5 (padded 2, so every later shape still chains)
    // while its weights are 3x3.
    t.copy("mnist-small.safetensors", "wide.safetensors");
    let arch = std::fs::read_to_string(torch_fixture("mnist-small.json")).unwrap();
    let edited = arch.replacen(
        "\"kernel\": 3,\n   \"stride\": 2,\n   \"padding\": 1",
        "\"kernel\": 5,\n   \"stride\": 2,\n   \"padding\": 2",
        1,
    );
    assert_ne!(
        arch, edited,
        "the fixture's first conv is 3x3, stride 2, padding 1"
    );
    let json = path_arg(&t.write("wide.json", edited));
    fails(
        &["evaluate", "--model", &json],
        &["wide.safetensors", "\"0.weight\"", "[8, 1, 3, 3]", "[8, 1, 5, 5]"],
    );
}

#[test]
fn weights_that_are_not_safetensors() {
    let t = Temp::new("bad-safetensors");
    t.copy("mnist-small.json", "junk.json");
    let weights = path_arg(&t.write("junk.safetensors", b"PK\x03\x04 not a safetensors file"));
    fails(
        &["evaluate", "--model", &path_arg(&t.path("junk.json"))],
        &[&weights, "not a valid safetensors file"],
    );
    // A header that promises more data than the file holds.
    let mut bytes = safetensors(&[("0.weight", vec![10, 784], linear_weight())]);
    bytes.truncate(bytes.len() - 100);
    t.write("tiny.json", LINEAR_ARCH);
    let weights = path_arg(&t.write("tiny.safetensors", bytes));
    fails(
        &["evaluate", "--model", &path_arg(&t.path("tiny.json"))],
        &[&weights, "not a valid safetensors file"],
    );
}

#[test]
fn nan_weights() {
    let t = Temp::new("nan-weights");
    let mut weight = linear_weight();
    weight[5] = f32::NAN;
    let json = tiny_model(
        &t,
        &[
            ("0.weight", vec![10, 784], weight),
            ("0.bias", vec![10], vec![0.0; 10]),
        ],
    );
    fails(
        &["spectrum", "--model", &path_arg(&json), "--index", "0"],
        &["tiny.safetensors", "\"0.weight\"", "non-finite", "NaN"],
    );
    let json = tiny_model(
        &t,
        &[
            ("0.weight", vec![10, 784], linear_weight()),
            (
                "0.bias",
                vec![10],
                vec![0.0, f32::INFINITY, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            ),
        ],
    );
    fails(
        &["evaluate", "--model", &path_arg(&json)],
        &["tiny.safetensors", "\"0.bias\"", "non-finite"],
    );
}

#[test]
fn architecture_with_overflowing_sizes() {
    // Shape arithmetic on absurd sizes must be refused, not wrapped into a misleading shape.
    let t = Temp::new("overflow-arch");
    t.copy("mnist-small.safetensors", "huge.safetensors");
    let arch = std::fs::read_to_string(torch_fixture("mnist-small.json")).unwrap();
    let json = path_arg(&t.path("huge.json"));
    let huge_padding = arch.replacen("\"padding\": 1", "\"padding\": 18446744073709551615", 1);
    t.write("huge.json", huge_padding);
    fails(
        &["evaluate", "--model", &json],
        &[&json, "padding 18446744073709551615 is too large"],
    );
    let huge_input = arch
        .replacen("\"height\": 28", "\"height\": 9223372036854775808", 1)
        .replacen("\"width\": 28", "\"width\": 4611686018427387904", 1);
    t.write("huge.json", huge_input);
    fails(&["evaluate", "--model", &json], &[&json, "too large"]);
}

#[test]
fn model_input_differs_from_the_dataset() {
    let cifar = path_arg(&torch_fixture("cifar-small.json"));
    fails(
        &[
            "spectrum",
            "--model",
            &cifar,
            "--dataset",
            "mnist",
            "--index",
            "0",
        ],
        &["cifar-small", "3x32x32", "1x28x28"],
    );
    fails(
        &["walk", "--model", &cifar, "--mode", "kernel", "--start", "0"],
        &["cifar-small", "3x32x32", "1x28x28"],
    );
}

// --- Dataset files ---------------------------------------------------------------------------------

#[test]
fn hand_written_dataset_loads() {
    // The control for the bad-dataset cases below.
    let t = Temp::new("hand-written-data");
    t.write(IMAGES, idx_images(3, 28, 28, &mnist_like_pixels(3)));
    t.write(LABELS, idx_labels(&[0, 1, 2]));
    for spec in [path_arg(&t.0), path_arg(&t.path(IMAGES))] {
        let v = json_of(&[
            "evaluate",
            "--model",
            &mnist_small(),
            "--dataset",
            &spec,
            "--json",
        ]);
        assert_eq!(v["count"], 3, "{spec}");
    }
    let v = json_of(&[
        "spectrum",
        "--model",
        &mnist_small(),
        "--dataset",
        &path_arg(&t.0),
        "--index",
        "2",
        "--json",
    ]);
    assert_eq!(v["label"], 2);
}

#[test]
fn missing_dataset_file() {
    let t = Temp::new("missing-data");
    let images = path_arg(&t.path("t10k-images-idx3-ubyte.gz"));
    fails(
        &["evaluate", "--model", &mnist_small(), "--dataset", &images],
        &[&images, "no such file"],
    );
    // The images are there, their labels are not.
    t.write(IMAGES, idx_images(3, 28, 28, &mnist_like_pixels(3)));
    fails(
        &[
            "evaluate",
            "--model",
            &mnist_small(),
            "--dataset",
            &path_arg(&t.0),
        ],
        &["t10k-labels-idx1-ubyte", "labels file not found"],
    );
    // A folder with no dataset in it.
    let empty = Temp::new("missing-data-empty");
    fails(
        &[
            "evaluate",
            "--model",
            &mnist_small(),
            "--dataset",
            &path_arg(&empty.0),
        ],
        &[&path_arg(&empty.0), "no IDX dataset"],
    );
}

#[test]
fn dataset_that_is_not_gzip() {
    let t = Temp::new("not-gzip");
    let images = path_arg(&t.write(
        "t10k-images-idx3-ubyte.gz",
        b"<html><body>404 Not Found</body></html>",
    ));
    t.write("t10k-labels-idx1-ubyte.gz", idx_labels(&[0, 1, 2]));
    fails(
        &["evaluate", "--model", &mnist_small(), "--dataset", &images],
        &[
            &images,
            "not an IDX image file",
            "neither a gzip nor a raw IDX file",
        ],
    );
    // Gzip's magic bytes, then garbage.
    let mut bytes = vec![0x1f, 0x8b];
    bytes.extend_from_slice(&[0xff; 40]);
    t.write("t10k-images-idx3-ubyte.gz", bytes);
    fails(
        &[
            "evaluate",
            "--model",
            &mnist_small(),
            "--dataset",
            &path_arg(&t.0),
        ],
        &[&images, "gzip"],
    );
}

#[test]
fn wrong_idx_magic() {
    let t = Temp::new("wrong-magic");
    // A labels file where the images should be.
    let images = path_arg(&t.write(IMAGES, idx_labels(&[0, 1, 2])));
    t.write(LABELS, idx_labels(&[0, 1, 2]));
    fails(
        &["evaluate", "--model", &mnist_small(), "--dataset", &images],
        &[&images, "not an IDX image file", "0x00000801"],
    );
    // And an images file where the labels should be.
    t.write(IMAGES, idx_images(3, 28, 28, &mnist_like_pixels(3)));
    let labels = path_arg(&t.write(LABELS, idx_images(3, 28, 28, &mnist_like_pixels(3))));
    fails(
        &["evaluate", "--model", &mnist_small(), "--dataset", &images],
        &[&labels, "not an IDX label file", "0x00000803"],
    );
}

#[test]
fn truncated_idx() {
    let t = Temp::new("truncated");
    // Ten images declared, five present.
    let images = path_arg(&t.write(IMAGES, idx_images(10, 28, 28, &mnist_like_pixels(5))));
    t.write(LABELS, idx_labels(&[0; 10]));
    fails(
        &["evaluate", "--model", &mnist_small(), "--dataset", &images],
        &[&images, "truncated", "10 images of 28x28"],
    );
    // A header cut short.
    t.write(IMAGES, &idx_images(10, 28, 28, &[])[..10]);
    fails(
        &["evaluate", "--model", &mnist_small(), "--dataset", &images],
        &[&images, "truncated header"],
    );
}

#[test]
fn label_out_of_range() {
    let t = Temp::new("label-range");
    t.write(IMAGES, idx_images(3, 28, 28, &mnist_like_pixels(3)));
    let labels = path_arg(&t.write(LABELS, idx_labels(&[0, 1, 2])));
    // Two class names beside the files: label 2 names no class.
    t.write("classes.txt", "zero\none\n");
    fails(
        &[
            "evaluate",
            "--model",
            &mnist_small(),
            "--dataset",
            &path_arg(&t.0),
        ],
        &[&labels, "label 2 at index 2 is out of range for 2 classes"],
    );
}

#[test]
fn dataset_with_more_classes_than_the_model() {
    let t = Temp::new("more-classes");
    t.write(IMAGES, idx_images(3, 28, 28, &mnist_like_pixels(3)));
    t.write(LABELS, idx_labels(&[0, 1, 11]));
    fails(
        &[
            "evaluate",
            "--model",
            &mnist_small(),
            "--dataset",
            &path_arg(&t.0),
        ],
        &["12 classes", "mnist-small", "10"],
    );
}

#[test]
fn images_and_labels_count_mismatch() {
    let t = Temp::new("count-mismatch");
    t.write(IMAGES, idx_images(3, 28, 28, &mnist_like_pixels(3)));
    let labels = path_arg(&t.write(LABELS, idx_labels(&[0, 1])));
    fails(
        &[
            "evaluate",
            "--model",
            &mnist_small(),
            "--dataset",
            &path_arg(&t.0),
        ],
        &[&labels, "counts differ", "3 images", "2 labels"],
    );
}

#[test]
fn dataset_images_of_another_size() {
    let t = Temp::new("small-images");
    t.write(IMAGES, idx_images(2, 8, 8, &[100; 128]));
    t.write(LABELS, idx_labels(&[0, 1]));
    fails(
        &[
            "evaluate",
            "--model",
            &mnist_small(),
            "--dataset",
            &path_arg(&t.0),
        ],
        &["mnist-small", "1x28x28", "1x8x8"],
    );
}

#[test]
fn dataset_spec_that_is_not_a_dataset() {
    let t = Temp::new("not-a-dataset");
    let file = path_arg(&t.write("notes.txt", "hello"));
    fails(
        &["evaluate", "--model", &mnist_small(), "--dataset", &file],
        &[&file, "not a dataset"],
    );
}

// --- Arguments ---------------------------------------------------------------------------------------

#[test]
fn spectrum_index_out_of_range() {
    fails(
        &["spectrum", "--model", &mnist_small(), "--index", "10000"],
        &["--index 10000", "out of range", "10000 images"],
    );
    // So large that index * 784 wraps around to image 0 in 64-bit arithmetic.
    fails(
        &["spectrum", "--model", &mnist_small(), "--index", WRAPPING_INDEX],
        &["--index", WRAPPING_INDEX, "out of range"],
    );
}

#[test]
fn walk_start_or_target_out_of_range() {
    fails(
        &[
            "walk",
            "--model",
            &mnist_small(),
            "--mode",
            "kernel",
            "--start",
            "10000",
        ],
        &["--start 10000", "out of range"],
    );
    fails(
        &[
            "walk",
            "--model",
            &mnist_small(),
            "--mode",
            "kernel",
            "--start",
            WRAPPING_INDEX,
        ],
        &["--start", WRAPPING_INDEX, "out of range"],
    );
    fails(
        &[
            "walk",
            "--model",
            &mnist_small(),
            "--mode",
            "leaf",
            "--start",
            "0",
            "--target",
            WRAPPING_INDEX,
        ],
        &["--target", WRAPPING_INDEX, "out of range"],
    );
}

#[test]
fn walk_unknown_mode() {
    fails(
        &[
            "walk",
            "--model",
            &mnist_small(),
            "--mode",
            "sideways",
            "--start",
            "0",
        ],
        &["sideways", "leaf, kernel or free"],
    );
}

#[test]
fn walk_step_must_be_positive() {
    for step in ["0", "-1", "nan", "inf"] {
        fails(
            &[
                "walk",
                "--model",
                &mnist_small(),
                "--mode",
                "kernel",
                "--start",
                "0",
                "--step",
                step,
            ],
            &["--step", "positive"],
        );
    }
    fails(
        &[
            "walk",
            "--model",
            &mnist_small(),
            "--mode",
            "leaf",
            "--start",
            "0",
            "--target",
            "1",
            "--stop",
            "-1",
        ],
        &["--stop", "non-negative"],
    );
}

#[test]
fn walk_argument_errors_come_before_files_are_read() {
    // The model does not exist, but the arguments are wrong first.
    let t = Temp::new("args-first");
    let model = path_arg(&t.path("absent.json"));
    fails(
        &[
            "walk", "--model", &model, "--mode", "kernel", "--start", "0", "--step", "0",
        ],
        &["--step"],
    );
    fails(
        &["walk", "--model", &model, "--mode", "free", "--start", "0"],
        &["--target"],
    );
}

#[test]
fn walk_leaf_needs_a_target() {
    fails(
        &[
            "walk",
            "--model",
            &mnist_small(),
            "--mode",
            "leaf",
            "--start",
            "0",
        ],
        &["--mode leaf needs --target"],
    );
    fails(
        &[
            "walk",
            "--model",
            &mnist_small(),
            "--mode",
            "free",
            "--start",
            "0",
        ],
        &["--mode free needs --target"],
    );
}

#[test]
fn walk_flip_target_needs_a_target() {
    fails(
        &[
            "walk",
            "--model",
            &mnist_small(),
            "--mode",
            "kernel",
            "--start",
            "0",
            "--flip-target",
        ],
        &["--flip-target needs --target"],
    );
}

#[test]
fn walk_strip_into_a_missing_folder() {
    let t = Temp::new("strip-missing-folder");
    let strip = path_arg(&t.path("no/such/folder/strip.png"));
    fails(
        &[
            "walk",
            "--model",
            &mnist_small(),
            "--mode",
            "kernel",
            "--start",
            "0",
            "--max-steps",
            "2",
            "--strip",
            &strip,
        ],
        &[&strip],
    );
    let gif = path_arg(&t.path("no/such/folder/walk.gif"));
    fails(
        &[
            "walk",
            "--model",
            &mnist_small(),
            "--mode",
            "kernel",
            "--start",
            "0",
            "--max-steps",
            "2",
            "--gif",
            &gif,
        ],
        &[&gif],
    );
}

#[test]
fn train_unknown_architecture() {
    fails(
        &["train", "--arch", "resnet", "--epochs", "0"],
        &["resnet", "medium-cnn", "lenet", "mlp"],
    );
}

#[test]
fn train_bad_numbers_and_out_folder() {
    fails(
        &["train", "--arch", "mlp", "--epochs", "0", "--batch", "0"],
        &["--batch", "positive", "got 0"],
    );
    fails(
        &["train", "--arch", "mlp", "--epochs", "0", "--lr=-0.5"],
        &["--lr", "positive", "got -0.5"],
    );
    fails(
        &["train", "--arch", "mlp", "--epochs", "0", "--lr", "nan"],
        &["--lr", "positive"],
    );
    // --out names a file, not a folder: said before any data is read.
    let t = Temp::new("train-out-file");
    let file = path_arg(&t.write("taken", "a file"));
    fails(
        &["train", "--arch", "mlp", "--epochs", "0", "--out", &file],
        &["--out", &file, "cannot create the checkpoint folder"],
    );
    fails(
        &[
            "train",
            "--arch",
            "mlp",
            "--epochs",
            "0",
            "--train-data",
            &path_arg(&t.path("nowhere")),
        ],
        &["training data", "nowhere", "no such file"],
    );
}

#[test]
fn clap_usage_errors_do_not_panic() {
    // clap's own messages (a usage block follows the first line) exit with 2; they are not the
    // one-line errors of the commands, but they must not panic either.
    for args in [
        vec!["spectrum", "--index", "abc"],
        vec!["spectrum", "--index", "-1"],
        vec!["spectrum"],
        vec!["walk", "--mode", "leaf"],
        vec!["frobnicate"],
    ] {
        let out = run(&args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        for bad in ["panicked", "stack backtrace"] {
            assert!(!stderr.contains(bad), "{args:?}: {stderr}");
        }
    }
}

// --- What works --------------------------------------------------------------------------------------

#[test]
fn spectrum_json() {
    let v = json_of(&["spectrum", "--model", &mnist_small(), "--index", "0", "--json"]);
    has_keys(&v, &["index", "label", "probs", "eigenvalues", "rank", "trace"]);
    assert_eq!(v["index"], 0);
    assert_eq!(v["label"], 7, "MNIST test image 0 is a 7");
    let probs = numbers(&v, "probs");
    assert_eq!(probs.len(), 10);
    assert!(probs.iter().all(|p| (0.0..=1.0).contains(p)), "{probs:?}");
    let total: f64 = probs.iter().sum();
    assert!((total - 1.0).abs() < 1e-9, "probabilities sum to {total}");
    let eig = numbers(&v, "eigenvalues");
    assert_eq!(eig.len(), 10);
    assert!(eig.windows(2).all(|w| w[0] >= w[1]), "not descending: {eig:?}");
    let rank = v["rank"].as_u64().expect("rank is an integer");
    assert!((1..=9).contains(&rank), "rank {rank} should be within 1..=C-1");
    let trace = v["trace"].as_f64().expect("trace is a number");
    let sum: f64 = eig.iter().sum();
    assert!(
        trace > 0.0 && (trace - sum).abs() <= 1e-6 * trace,
        "trace {trace}, eigenvalues sum to {sum}"
    );
}

#[test]
fn walk_kernel_json_strip_and_gif() {
    let t = Temp::new("walk-kernel");
    let strip = t.path("strip.png");
    let gif = t.path("walk.gif");
    let v = json_of(&[
        "walk",
        "--model",
        &mnist_small(),
        "--mode",
        "kernel",
        "--start",
        "0",
        "--max-steps",
        "20",
        "--json",
        "--strip",
        &path_arg(&strip),
        "--gif",
        &path_arg(&gif),
    ]);
    has_keys(
        &v,
        &[
            "mode",
            "steps",
            "reached",
            "start_distance",
            "final_distance",
            "predictions",
            "max_probs",
            "distances",
        ],
    );
    assert_eq!(v["mode"], "kernel");
    assert_eq!(v["steps"], 20);
    assert_eq!(
        v["reached"], false,
        "a kernel walk without a target reaches nothing"
    );
    let distances = numbers(&v, "distances");
    let max_probs = numbers(&v, "max_probs");
    let predictions = numbers(&v, "predictions");
    for (name, list) in [
        ("distances", &distances),
        ("max_probs", &max_probs),
        ("predictions", &predictions),
    ] {
        assert_eq!(list.len(), 21, "{name}: steps + 1 entries");
    }
    assert_eq!(v["start_distance"].as_f64(), Some(distances[0]));
    assert_eq!(v["final_distance"].as_f64(), Some(distances[20]));
    assert_eq!(
        distances[0], 0.0,
        "distance is to the start when there is no target"
    );
    assert!(distances[20] > 0.0, "the walk moved");
    assert!(max_probs.iter().all(|p| *p > 0.0 && *p <= 1.0), "{max_probs:?}");
    // Kernel steps keep the prediction.
    assert!(
        predictions.iter().all(|p| *p == predictions[0]),
        "{predictions:?}"
    );

    let png = std::fs::read(&strip).expect("the strip was written");
    assert!(png.len() > 24, "PNG too short");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&png[12..16], b"IHDR");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert!(
        width >= 9 * 28 && height >= 28,
        "a strip of 9 frames, got {width}x{height}"
    );
    assert!(width > height, "frames side by side, got {width}x{height}");

    let gif = std::fs::read(&gif).expect("the GIF was written");
    assert!(gif.starts_with(b"GIF89a"), "GIF signature");
}

#[test]
fn walk_free_reaches_its_target() {
    let v = json_of(&[
        "walk",
        "--model",
        &mnist_small(),
        "--mode",
        "free",
        "--start",
        "0",
        "--target",
        "1",
        "--json",
    ]);
    assert_eq!(v["mode"], "free");
    assert_eq!(v["reached"], true);
    let distances = numbers(&v, "distances");
    let steps = v["steps"].as_u64().expect("steps is an integer") as usize;
    assert!(steps > 0);
    assert_eq!(distances.len(), steps + 1);
    assert_eq!(numbers(&v, "predictions").len(), steps + 1);
    assert_eq!(numbers(&v, "max_probs").len(), steps + 1);
    assert!(
        distances.windows(2).all(|w| w[1] < w[0]),
        "a straight walk gets closer at every step"
    );
    let stop = 0.3081;
    let last = v["final_distance"].as_f64().unwrap();
    assert!(last <= stop + 1e-6, "ended at {last}, stop distance {stop}");
    assert!(
        distances[steps - 1] > stop,
        "did not stop at the first step within reach"
    );
    assert!(v["start_distance"].as_f64().unwrap() > last);
}

#[test]
fn walk_text_output() {
    let out = run([
        "walk",
        "--model",
        &mnist_small(),
        "--mode",
        "leaf",
        "--start",
        "0",
        "--target",
        "1",
        "--flip-target",
        "--max-steps",
        "5",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("leaf walk: 5 steps"), "{stdout}");
}

#[test]
fn evaluate_json() {
    let v = json_of(&["evaluate", "--model", &mnist_small(), "--json"]);
    assert_eq!(v["model"], "mnist-small");
    assert_eq!(v["count"], 10000);
    let acc = v["accuracy"].as_f64().expect("accuracy is a number");
    assert!((0.0..=1.0).contains(&acc), "accuracy {acc}");
}

#[test]
fn train_epoch_zero_checkpoint_evaluates() {
    let t = Temp::new("train-e00");
    let out = run([
        "train",
        "--arch",
        "lenet",
        "--epochs",
        "0",
        "--out",
        &path_arg(&t.0),
    ]);
    assert!(
        out.status.success(),
        "train failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let json = t.path("mnist-lenet-e00.json");
    assert!(json.is_file(), "no {}", json.display());
    assert!(t.path("mnist-lenet-e00.safetensors").is_file());
    let arch: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(arch["name"], "mnist-lenet");
    assert_eq!(arch["training"]["epoch"], 0);
    assert_eq!(arch["training"]["arch"], "lenet");
    let recorded = arch["training"]["test_accuracy"].as_f64().unwrap();

    let v = json_of(&["evaluate", "--model", &path_arg(&json), "--json"]);
    let acc = v["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc), "accuracy {acc}");
    assert!(
        (acc - recorded).abs() < 1e-4,
        "evaluate says {acc}, the checkpoint recorded {recorded}"
    );
    // The weights file names the model too.
    let v = json_of(&[
        "spectrum",
        "--model",
        &path_arg(&t.path("mnist-lenet-e00.safetensors")),
        "--index",
        "3",
        "--json",
    ]);
    assert_eq!(numbers(&v, "eigenvalues").len(), 10);
}

// --- Features models and `dataleaf simec` ------------------------------------------------------------

/// f(x, y) = softplus(2x) + softplus(-2x) + softplus(2y) + softplus(-2y): a smooth bowl whose level
/// sets are closed curves round the origin.
const SOFT_BOWL: &str = r#"{
  "name": "soft-bowl",
  "input": { "features": 2 },
  "task": "regression",
  "layers": [ { "type": "linear", "name": "0", "in": 2, "out": 4 }, { "type": "softplus" },
              { "type": "linear", "name": "2", "in": 4, "out": 1 } ]
}"#;

fn soft_bowl(t: &Temp) -> String {
    t.write(
        "bowl.safetensors",
        safetensors(&[
            (
                "0.weight",
                vec![4, 2],
                vec![2.0, 0.0, -2.0, 0.0, 0.0, 2.0, 0.0, -2.0],
            ),
            ("0.bias", vec![4], vec![0.0; 4]),
            ("2.weight", vec![1, 4], vec![1.0; 4]),
            ("2.bias", vec![1], vec![0.0]),
        ]),
    );
    path_arg(&t.write("bowl.json", SOFT_BOWL))
}

fn softplus(x: f64) -> f64 {
    x.exp().ln_1p()
}

fn points_of(v: &Value) -> Vec<Vec<f64>> {
    v["points"]
        .as_array()
        .unwrap_or_else(|| panic!("no points array in {v}"))
        .iter()
        .map(|p| {
            p.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

#[test]
fn simec_prints_one_point_and_one_output_per_step() {
    let t = Temp::new("simec-json");
    let model = soft_bowl(&t);
    let v = json_of(&[
        "simec",
        "--model",
        &model,
        "--start",
        "0.25,0.25",
        "--delta",
        "0.001",
        "--steps",
        "300",
        "--json",
    ]);
    let points = points_of(&v);
    let outputs = numbers(&v, "outputs");
    assert_eq!(points.len(), 300);
    assert_eq!(outputs.len(), 300);
    assert!(points.iter().all(|p| p.len() == 2));
    // Each step moves delta; the output is the model's at that point and stays near f(x0).
    let f = |p: &[f64]| {
        softplus(2.0 * p[0]) + softplus(-2.0 * p[0]) + softplus(2.0 * p[1]) + softplus(-2.0 * p[1])
    };
    let f0 = f(&[0.25, 0.25]);
    let first = (points[0][0] - 0.25).hypot(points[0][1] - 0.25);
    assert!((first - 0.001).abs() < 1e-12, "first step {first}");
    for (p, o) in points.iter().zip(&outputs) {
        assert!((f(p) - o).abs() < 1e-6, "output {o} is not f({p:?}) = {}", f(p));
        // Euler's drift is O(delta) per loop (the radius grows by pi delta a turn, f by ~ 2e-3 here).
        assert!((o - f0).abs() < 1e-3, "output {o} drifted from {f0}");
    }
}

#[test]
fn simec_reverse_starts_the_other_way() {
    let t = Temp::new("simec-reverse");
    let model = soft_bowl(&t);
    let args = |reverse: bool| {
        let mut a = vec![
            "simec",
            "--model",
            &model,
            "--start=-0.3,0.1",
            "--delta",
            "0.001",
            "--steps",
            "5",
            "--json",
        ];
        if reverse {
            a.push("--reverse");
        }
        points_of(&json_of(&a))
    };
    let (forward, backward) = (args(false), args(true));
    // The first steps are opposite: x1 - x0 = -(x1' - x0).
    for (k, x0) in [-0.3, 0.1].into_iter().enumerate() {
        let (d_fwd, d_back) = (forward[0][k] - x0, backward[0][k] - x0);
        assert!(
            (d_fwd + d_back).abs() < 1e-12,
            "steps {d_fwd} and {d_back} (component {k})"
        );
    }
    assert!(forward[0] != backward[0]);
    // Further on, both keep going their own way round (orientation continuity).
    assert!(forward[4] != backward[4]);
}

#[test]
fn simec_on_a_classifier_prints_probabilities() {
    let t = Temp::new("simec-classifier");
    t.write(
        "c.safetensors",
        safetensors(&[
            ("0.weight", vec![2, 2], vec![1.0, 2.0, -1.0, 0.5]),
            ("0.bias", vec![2], vec![0.1, 0.0]),
        ]),
    );
    let json = t.write(
        "c.json",
        r#"{"name": "lin2", "input": {"features": 2}, "classes": ["a", "b"],
            "layers": [{"type": "linear", "name": "0", "in": 2, "out": 2}]}"#,
    );
    let v = json_of(&[
        "simec",
        "--model",
        &path_arg(&json),
        "--start",
        "0.2,-0.1",
        "--steps",
        "20",
        "--json",
    ]);
    let outputs = v["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 20);
    let p0 = outputs[0].as_array().unwrap();
    assert_eq!(p0.len(), 2);
    let sum: f64 = p0.iter().map(|x| x.as_f64().unwrap()).sum();
    assert!((sum - 1.0).abs() < 1e-12);
    // A linear classifier's level sets are straight lines: p stays put to round-off.
    for o in outputs {
        assert!((o[0].as_f64().unwrap() - p0[0].as_f64().unwrap()).abs() < 1e-12);
    }
    // Without --json, a readable summary.
    let out = run([
        "simec",
        "--model",
        &path_arg(&json),
        "--start",
        "0.2,-0.1",
        "--steps",
        "20",
    ]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("largest change of any output"));
}

#[test]
fn simec_rejects_bad_arguments_in_one_line() {
    let t = Temp::new("simec-bad");
    let model = soft_bowl(&t);
    let base = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["simec", "--model", &model]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    fails(&base(&["--start", "0.1,0.2", "--steps", "0"]), &["--steps"]);
    fails(&base(&["--start", "0.1,0.2", "--delta", "0"]), &["--delta"]);
    fails(&base(&["--start", "0.1,0.2", "--delta", "-1"]), &["--delta"]);
    fails(&base(&["--start", "0.1,0.2", "--delta", "NaN"]), &["--delta"]);
    fails(&base(&["--start", "0.1,zebra"]), &["--start", "zebra"]);
    fails(
        &base(&["--start", "0.1,0.2,0.3"]),
        &["--start", "3 numbers", "2 features"],
    );
    fails(&base(&["--start", "inf,0"]), &["--start", "finite"]);
    let missing = path_arg(&t.path("nowhere.json"));
    fails(&["simec", "--model", &missing, "--start", "0,0"], &[&missing]);
    // An image model is not a features model.
    let image = mnist_small();
    fails(
        &["simec", "--model", &image, "--start", "0,0"],
        &[&image, "takes images", "features"],
    );
    // A features model in an image command points to the plane view.
    fails(
        &["spectrum", "--model", &model, "--index", "0"],
        &["bowl.json", "2 input features", "plane view"],
    );
    // Missing weights name the weights file.
    std::fs::remove_file(t.path("bowl.safetensors")).unwrap();
    fails(&base(&["--start", "0,0"]), &["bowl.safetensors", "not found"]);
}

#[test]
fn features_architectures_with_errors_are_named() {
    let t = Temp::new("features-arch");
    let cases = [
        (
            r#"{"name": "z", "input": {"features": 0}, "task": "regression", "layers": []}"#,
            "0 features",
        ),
        (
            r#"{"name": "z", "input": {"features": 2}, "task": "regression",
                "layers": [{"type": "linear", "name": "0", "in": 2, "out": 0}]}"#,
            "at least 1 output",
        ),
        (
            r#"{"name": "z", "input": {"features": 2}, "classes": ["only"],
                "layers": [{"type": "linear", "name": "0", "in": 2, "out": 1}]}"#,
            "at least 2 classes",
        ),
        (
            r#"{"name": "z", "input": {"features": 2, "channels": 1}, "task": "regression", "layers": []}"#,
            "input must be either",
        ),
        (
            r#"{"name": "z", "input": {"features": 2}, "task": "ranking", "layers": []}"#,
            "ranking",
        ),
        (
            r#"{"name": "z", "input": {"features": 2}, "task": "regression", "classes": ["a", "b"],
                "layers": [{"type": "linear", "name": "0", "in": 2, "out": 1}]}"#,
            "2 output names",
        ),
        (
            r#"{"name": "z", "input": {"features": 3}, "task": "regression",
                "layers": [{"type": "linear", "name": "0", "in": 2, "out": 1}]}"#,
            "expects 2 inputs, gets 3",
        ),
    ];
    for (k, (json, needle)) in cases.iter().enumerate() {
        let path = path_arg(&t.write(&format!("m{k}.json"), json));
        fails(&["simec", "--model", &path, "--start", "0,0"], &[&path, needle]);
    }
}

/// `dataleaf bench --json` keeps its contract: the per-step fields, the floor's count of the
/// work, and the 4185 -> 5874 walk reaching its target with its drift reported.
#[test]
fn bench_json_reports_the_step_costs_their_floor_and_the_whole_walk() {
    let out = json_of(&["bench", "--runs", "1", "--walk", "--json"]);
    for key in [
        "forward_ms",
        "jacobian_ms",
        "spectrum_ms",
        "leaf_step_ms",
        "kernel_step_ms",
        "floor_ms",
    ] {
        let v = out[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing: {out}"));
        assert!(v > 0.0 && v.is_finite(), "{key} = {v}");
    }
    // The floor counts the multiply-adds a step cannot avoid: at least J's forward pass (12 M), and
    // far fewer than dense reverse passes would take (10 x 120 M).
    let flops = out["floor"]["jacobian_mflop"].as_f64().unwrap();
    assert!(flops > 2.0 * 12.0 && flops < 2.0 * 1200.0, "{}", out["floor"]);
    // The rates it divides by were sampled between the timed steps (at least once), and the floor
    // used their median.
    let mut samples: Vec<f64> = out["gemm_f32_gflops_samples"]
        .as_array()
        .unwrap_or_else(|| panic!("no rate samples: {out}"))
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(
        !samples.is_empty() && samples.iter().all(|&g| g > 0.0 && g.is_finite()),
        "{samples:?}"
    );
    samples.sort_by(f64::total_cmp);
    assert_eq!(
        out["floor"]["gemm_f32_gflops"].as_f64().unwrap(),
        samples[samples.len() / 2],
        "{}",
        out["floor"]
    );
    let walk = &out["walk_4185_5874"];
    assert_eq!(walk["reached"], true, "{walk}");
    let steps = walk["steps"].as_u64().unwrap();
    assert!((450..650).contains(&steps), "{walk}");
    let drift = walk["mean_off_leaf_fraction"].as_f64().unwrap();
    assert!(drift > 0.0 && drift < 0.5, "{walk}");
    assert_eq!(out["sizes"], serde_json::json!([]));
}
