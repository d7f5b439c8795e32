//! Mutation fuzzing of the parsers that read user files: IDX (raw and gzip), CIFAR-10 batches,
//! the architecture JSON, safetensors weights and ONNX models. Each parser must return Ok or a clear error,
//! never panic, on any input. cargo-fuzz needs a nightly toolchain, which this project's machines
//! do not have, so this is a seeded in-process fuzzer: valid seeds, random mutations (bit flips,
//! byte overwrites, truncations, insertions, header-field edits), a fixed number of executions per
//! run (`DATALEAF_FUZZ_ITERS` raises it for a longer campaign). Inputs that once broke a parser
//! stay below as regression tests.

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use dataleaf::data::{idx_images_from_bytes, idx_labels_from_bytes, parse_cifar_batch};
use dataleaf::model::files::parse_weights;
use dataleaf::model::{Architecture, Model, Network};

fn iterations() -> usize {
    std::env::var("DATALEAF_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
}

fn mutate(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..rng.random_range(1..6) {
        match rng.random_range(0..6) {
            0 if !v.is_empty() => {
                let i = rng.random_range(0..v.len());
                v[i] ^= 1 << rng.random_range(0..8);
            }
            1 if !v.is_empty() => {
                let i = rng.random_range(0..v.len());
                v[i] = rng.random();
            }
            2 => {
                let n = rng.random_range(0..=v.len());
                v.truncate(n);
            }
            3 => {
                let i = rng.random_range(0..=v.len());
                let extra: Vec<u8> = (0..rng.random_range(1..64)).map(|_| rng.random()).collect();
                v.splice(i..i, extra);
            }
            // Header fields: overwrite one of the first 16 bytes with an extreme value.
            4 if v.len() >= 16 => {
                let i = rng.random_range(0..16);
                v[i] = [0x00, 0xff, 0x7f, 0x80][rng.random_range(0..4)];
            }
            _ => {
                if !v.is_empty() {
                    let i = rng.random_range(0..v.len());
                    v.remove(i);
                }
            }
        }
    }
    v
}

/// Run `parse` on mutations of each seed; a panic fails the test with the input that caused it.
fn fuzz(name: &str, seeds: &[Vec<u8>], parse: impl Fn(&[u8])) {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let iters = iterations();
    for k in 0..iters {
        let input = mutate(&mut rng, &seeds[k % seeds.len()]);
        if catch_unwind(AssertUnwindSafe(|| parse(&input))).is_err() {
            panic!(
                "{name}: a parser panicked on input {:?}",
                &input[..input.len().min(64)]
            );
        }
    }
    println!("{name}: {iters} executions, no panic");
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn idx_images(count: u32, rows: u32, cols: u32) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 3];
    for d in [count, rows, cols] {
        v.extend(d.to_be_bytes());
    }
    v.extend((0..count * rows * cols).map(|i| (i * 37) as u8));
    v
}

fn idx_labels(count: u32) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 1];
    v.extend(count.to_be_bytes());
    v.extend((0..count).map(|i| (i % 10) as u8));
    v
}

#[test]
fn idx_parsers_never_panic() {
    let seeds = vec![
        idx_images(3, 4, 5),
        idx_labels(7),
        gzip(&idx_images(2, 3, 3)),
        gzip(&idx_labels(5)),
    ];
    fuzz("idx", &seeds, |b| {
        let _ = idx_images_from_bytes(b, "fuzz");
        let _ = idx_labels_from_bytes(b, "fuzz");
    });
}

#[test]
fn cifar_parser_never_panics() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/data/cifar10-samples/test_batch.bin");
    let real = std::fs::read(path).unwrap();
    let seeds = vec![real[..3073].to_vec(), real[..2 * 3073].to_vec()];
    fuzz("cifar", &seeds, |b| {
        let _ = parse_cifar_batch(b, 10, Path::new("fuzz.bin"));
    });
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/torch")
            .join(name),
    )
    .unwrap()
}

#[test]
fn architecture_json_never_panics() {
    let seeds = vec![fixture("mnist-small.json"), fixture("cifar-small.json")];
    fuzz("architecture", &seeds, |b| {
        if let Ok(text) = std::str::from_utf8(b) {
            if let Ok(arch) = Architecture::from_json(text) {
                // A valid architecture also builds a network from fresh weights.
                let _ = Network::new(&arch, &Network::initial_weights(&arch, 0));
            }
        }
    });
}

#[test]
fn weights_parser_never_panics() {
    let arch = Architecture::from_json(std::str::from_utf8(&fixture("cifar-small.json")).unwrap()).unwrap();
    let seeds = vec![fixture("cifar-small.safetensors")];
    fuzz("safetensors", &seeds, |b| {
        if let Ok(weights) = parse_weights(b, Path::new("fuzz.safetensors")) {
            let _ = Network::new(&arch, &weights);
        }
    });
}

/// The ONNX reader and its lowering, from three real exports: a residual network, the per-operator
/// graph and the shuffle/split graph (its constant shape chains). A model that lowers also builds.
#[test]
fn onnx_reader_never_panics() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx");
    let seeds: Vec<Vec<u8>> = ["pools.onnx", "every-op.onnx", "shuffle-split.onnx"]
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();
    fuzz("onnx", &seeds, |b| {
        let _ = Model::from_onnx_bytes(b, Path::new("/nonexistent/fuzz.onnx"));
    });
}

/// Regression seeds: inputs that are easy to get wrong, each with the error it must give.
#[test]
fn regression_inputs_give_errors_not_panics() {
    // An IDX header declaring 2^32 - 1 images of 2^32 - 1 x 2^32 - 1: refused before allocating.
    let mut huge = vec![0, 0, 8, 3];
    huge.extend([0xff; 12]);
    let e = idx_images_from_bytes(&huge, "huge").unwrap_err().to_string();
    assert!(e.contains("huge"), "{e}");
    // A gzip stream that stops in the middle.
    let gz = gzip(&idx_images(10, 28, 28));
    assert!(idx_images_from_bytes(&gz[..gz.len() / 2], "half.gz").is_err());
    // Architecture sizes that overflow usize.
    let text = r#"{"name":"x","input":{"channels":4294967296,"height":4294967296,"width":4294967296},
        "classes":["a","b"],"layers":[{"type":"flatten"},{"type":"linear","name":"0","in":1,"out":2}]}"#;
    assert!(Architecture::from_json(text).is_err());
    // Safetensors with a header length beyond the file.
    let mut st = 1_000_000u64.to_le_bytes().to_vec();
    st.extend(b"{}");
    assert!(parse_weights(&st, Path::new("short.safetensors")).is_err());
}
