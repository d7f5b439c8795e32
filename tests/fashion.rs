//! The second domain (issue 13, item 4): the shipped Fashion-MNIST medium CNN, through the CLI as a
//! user runs it. Its JSON records the test accuracy `dataleaf evaluate` measures; its presets' walks
//! do what their captions say.

use std::process::Command;

fn dataleaf(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_dataleaf"))
        .args(args)
        .output()
        .expect("dataleaf runs");
    assert!(
        out.status.success(),
        "dataleaf {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

const MODEL: &str = "fashion-mnist-medium-cnn";

#[test]
fn evaluate_prints_the_accuracy_the_model_file_records() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/models/fashion-mnist-medium-cnn.json"
    ))
    .unwrap();
    let file: serde_json::Value = serde_json::from_str(&text).unwrap();
    let recorded = file["training"]["test_accuracy"].as_f64().unwrap();
    assert_eq!(file["classes"][0], "T-shirt/top");
    assert_eq!(file["classes"][9], "Ankle boot");
    assert!((0.85..=0.90).contains(&recorded), "recorded {recorded}");
    let out = dataleaf(&[
        "evaluate",
        "--model",
        MODEL,
        "--dataset",
        "fashion-mnist",
        "--json",
    ]);
    assert_eq!(out["count"], 10000);
    let measured = out["accuracy"].as_f64().unwrap();
    assert!(
        (measured - recorded).abs() < 1e-4,
        "evaluate says {measured}, the JSON records {recorded}"
    );
}

#[test]
fn a_500_step_kernel_walk_from_the_bag_keeps_its_class() {
    let out = dataleaf(&[
        "walk",
        "--model",
        MODEL,
        "--dataset",
        "fashion-mnist",
        "--mode",
        "kernel",
        "--start",
        "30",
        "--seed",
        "0",
        "--max-steps",
        "500",
        "--json",
    ]);
    let predictions = out["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 501);
    assert!(
        predictions.iter().all(|p| p == 8),
        "the bag (class 8) changed: {predictions:?}"
    );
    assert!(
        out["final_distance"].as_f64().unwrap() > 5.0,
        "heavy noise: {}",
        out["final_distance"]
    );
}

#[test]
fn the_shirt_becomes_a_sneaker_along_the_leaf() {
    let out = dataleaf(&[
        "walk",
        "--model",
        MODEL,
        "--dataset",
        "fashion-mnist",
        "--mode",
        "leaf",
        "--start",
        "26",
        "--target",
        "9",
        "--json",
    ]);
    assert_eq!(out["reached"], true);
    let p = out["predictions"].as_array().unwrap();
    assert_eq!(p[0], 6, "starts a shirt");
    assert_eq!(p[p.len() - 1], 7, "ends a sneaker");
}
