//! Small versions of the experiments (src/experiments), each asserting the direction of its claim,
//! plus the activation layers the involutivity experiment added to the model code.

use std::process::Command;

use dataleaf::experiments::{
    self, dataset_spectra, denoise, involutivity, leaves, off_leaf, ood, training, ExperimentError, Progress,
    Settings,
};
use dataleaf::geometry::jacobian::{jacobian_autograd, logits_and_jacobian};
use dataleaf::model::arch::{Architecture, Layer};
use dataleaf::model::{Model, Network};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_dataleaf");

fn small(samples: usize) -> Settings {
    Settings::with_samples(samples)
}

#[test]
fn off_leaf_kernel_keeps_the_prediction_and_the_leaf_changes_it() {
    let mut config = off_leaf::Config::from(&small(6));
    config.distances = vec![0.0, 1.0, 3.0];
    let r = off_leaf::run(&config, &Progress::new()).unwrap();
    let last = config.distances.len() - 1;
    assert_eq!(r.accuracy.kernel.len(), 3);
    assert_eq!(r.accuracy.kernel[0], r.accuracy.leaf[0], "same images at t = 0");
    assert!(
        r.accuracy.kernel[last] >= r.accuracy.leaf[last] + 0.5,
        "kernel {:?} vs leaf {:?}",
        r.accuracy.kernel,
        r.accuracy.leaf
    );
    assert!(r.accuracy.kernel[last] >= 0.8 * r.accuracy.kernel[0]);
    // Moving along the kernel really moves the image (noise), not just nothing.
    assert!(r.displacement.kernel[last] > 1.5, "{:?}", r.displacement.kernel);
    let json = serde_json::to_value(&r).unwrap();
    for key in ["kernel", "leaf", "random"] {
        assert_eq!(json["accuracy"][key].as_array().unwrap().len(), 3);
    }
    assert_eq!(json["distances"].as_array().unwrap().len(), 3);
}

#[test]
fn leaves_strict_walks_join_clean_pairs_better_than_noisy_ones() {
    let mut config = leaves::Config::from(&small(3));
    config.noise_steps = 120;
    config.max_steps = 60;
    let r = leaves::run(&config, &Progress::new()).unwrap();
    let strict = &r.summary["strict"];
    let clean = strict["clean-clean"].median_final_ratio;
    assert!(clean < 1.0, "the strict walk approaches a clean target");
    assert!(
        clean < strict["noisy-noisy"].median_final_ratio && clean < strict["clean-noisy"].median_final_ratio,
        "strict ratios {:?}",
        strict
            .iter()
            .map(|(k, s)| (k, s.median_final_ratio))
            .collect::<Vec<_>>()
    );
    // Strict walks stay on the leaf; default ones move across it too.
    assert!(strict["clean-clean"].mean_off_leaf < 1e-2);
    assert!(r.summary["default"]["clean-clean"].mean_off_leaf > strict["clean-clean"].mean_off_leaf);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["pairs"].as_array().unwrap().len(), 3);
    assert!(json["pairs"][0]["walks"]["strict"]["noisy-noisy"]["final_distance"].is_number());
}

#[test]
fn training_g_shrinks_as_the_model_becomes_certain() {
    let series = training::lenet_series();
    let config = training::Config {
        images: 60,
        checkpoints: vec![series[1].clone(), series[6].clone()],
    };
    let r = training::run(&config, &Progress::new()).unwrap();
    assert_eq!(r.epochs, vec![1, 30]);
    assert!(r.test_accuracy[1] > r.test_accuracy[0]);
    assert!(
        r.median_log10_trace[1] < r.median_log10_trace[0] - 1.0,
        "{:?}",
        r.median_log10_trace
    );
    assert!(
        r.mean_rank_float32[1] < r.mean_rank_float32[0],
        "{:?}",
        r.mean_rank_float32
    );
    assert!(r.mean_rank.iter().all(|&k| k <= 9.0));
    let json = serde_json::to_value(&r).unwrap();
    for key in ["epochs", "test_accuracy", "mean_trace", "mean_rank"] {
        assert_eq!(json[key].as_array().unwrap().len(), 2, "{key}");
    }
}

#[test]
fn dataset_spectra_mnist_has_the_smallest_top_eigenvalue() {
    let r = dataset_spectra::run(&dataset_spectra::Config::from(&small(30)), &Progress::new()).unwrap();
    let names: Vec<&str> = r.datasets.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "MNIST",
            "Fashion-MNIST",
            "CIFAR-10 grey",
            "uniform noise",
            "mirrored MNIST"
        ]
    );
    let mnist = r.datasets[0].median_log10_lambda[0];
    for d in &r.datasets[1..] {
        assert!(
            mnist < d.median_log10_lambda[0] - 0.5,
            "MNIST {mnist} vs {} {}",
            d.name,
            d.median_log10_lambda[0]
        );
        assert_eq!(d.median_log10_lambda.len(), 10);
        assert!(
            d.median_log10_lambda.windows(2).all(|w| w[0] >= w[1]),
            "descending"
        );
    }
    assert_eq!(r.datasets[2].count, 20, "all the shipped CIFAR-10 images");
    let n = r.distances.len();
    for i in 0..n {
        assert_eq!(r.distances[i][i], 0.0);
        for j in 0..n {
            assert!((r.distances[i][j] - r.distances[j][i]).abs() < 1e-9);
        }
    }
    // MNIST is further from every other set than Fashion-MNIST is from CIFAR-10 and noise.
    assert!(r.distances[0][1] > r.distances[1][2] && r.distances[0][1] > r.distances[1][3]);
    let json = serde_json::to_value(&r).unwrap();
    assert!(json["datasets"][0]["median_log10_trace"].is_number());
    assert!(json["datasets"][0]["name"].is_string());
}

#[test]
fn involutivity_holds_for_relu_and_fails_for_sigmoid() {
    let mut config = involutivity::Config::from(&small(2));
    config.activations = vec!["relu", "sigmoid"];
    config.train_images = 3000;
    let r = involutivity::run(&config, &Progress::new()).unwrap();
    assert_eq!(r.models.len(), 3);
    for m in &r.models {
        for p in &m.points {
            assert_eq!(p.rank_grad_p, 9, "{}: D_x has dimension C - 1", m.name);
            if m.piecewise_linear {
                assert_eq!(
                    p.rank_with_brackets, p.rank_grad_p,
                    "{}: brackets stay in D_x",
                    m.name
                );
                assert!(
                    p.max_residual < involutivity::TOL,
                    "{}: {}",
                    m.name,
                    p.max_residual
                );
                assert!(p.brackets > 0);
            } else {
                assert!(
                    p.rank_with_brackets > p.rank_grad_p,
                    "{}: brackets leave D_x",
                    m.name
                );
                assert!(p.max_residual > 1e-2, "{}: {}", m.name, p.max_residual);
                assert!(
                    p.fd_change < 1e-4,
                    "finite differences converged: {}",
                    p.fd_change
                );
            }
        }
    }
    assert!(r.models[0].piecewise_linear && !r.models[2].piecewise_linear);
}

#[test]
fn denoise_projection_onto_the_leaf_raises_psnr() {
    let mut config = denoise::Config::from(&small(2));
    // The papers' 250 kernel steps; with much less noise the noisy image itself stays closer to the
    // original than the nearest training image is.
    config.max_steps = 100;
    let r = denoise::run(&config, &Progress::new()).unwrap();
    for noise in denoise::NOISES {
        let s = &r.summary[noise];
        assert!(s.mean_psnr_projected > s.mean_psnr_noisy, "{noise}: {s:?}");
        assert!(s.mean_psnr_projected > s.mean_psnr_nearest, "{noise}: {s:?}");
    }
    assert_eq!(r.cases.len(), 4);
    assert!(denoise::psnr(&[0.5; 4], &[0.5; 4]).is_infinite());
    assert!((denoise::psnr(&[0.1; 4], &[0.0; 4]) - 20.0).abs() < 1e-4);
}

#[test]
fn ood_top_eigenvalue_separates_mnist_from_other_sets() {
    let r = ood::run(&ood::Config::from(&small(40)), &Progress::new()).unwrap();
    for (set, aucs) in &r.auc {
        assert!(aucs["log10_lambda_1"] > 0.6, "{set}: {aucs:?}");
        assert!(aucs.values().all(|a| (0.0..=1.0).contains(a)));
    }
    assert!(r.auc["uniform noise"]["log10_lambda_1"] > 0.8);
    let curve = ood::roc_curve(&[2.0, 3.0], &[1.0]);
    assert_eq!((curve[0], *curve.last().unwrap()), ((0.0, 0.0), (1.0, 1.0)));
}

#[test]
fn every_experiment_is_named_and_cancellable() {
    for name in experiments::NAMES {
        assert!(experiments::claim(name).is_some(), "{name}");
    }
    let progress = Progress::new();
    assert!(matches!(
        experiments::run("no-such", &Settings::default(), &progress),
        Err(ExperimentError::Unknown(_))
    ));
    progress.cancel();
    assert!(matches!(
        experiments::run("off-leaf", &small(4), &progress),
        Err(ExperimentError::Cancelled)
    ));
}

#[test]
fn cli_prints_json_and_writes_the_figure() {
    let dir = std::env::temp_dir().join(format!("dataleaf-exp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("training.png");
    let out = Command::new(BIN)
        .args(["experiment", "training", "--samples", "20", "--json", "--plot"])
        .arg(&png)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["epochs", "test_accuracy", "mean_trace", "mean_rank"] {
        assert_eq!(v[key].as_array().unwrap().len(), 7, "{key}");
    }
    let img = image::open(&png).unwrap();
    assert!(img.width() > 500 && img.height() > 300);
    std::fs::remove_dir_all(&dir).ok();

    let bad = Command::new(BIN)
        .args(["experiment", "nonsense"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("unknown experiment") && err.contains("off-leaf") && err.lines().count() == 1,
        "{err}"
    );
}

/// A small conv net with `act` after each hidden layer, random weights.
fn tiny_with(act: Layer) -> Model {
    let mut arch = Architecture::from_json(
        r#"{"name":"tiny","input":{"channels":1,"height":8,"width":8},
            "normalize":{"mean":[0.1],"std":[0.3]},"classes":["a","b","c","d"],
            "layers":[{"type":"conv2d","name":"0","in":1,"out":3,"kernel":3},{"type":"relu"},
                      {"type":"flatten"},{"type":"linear","name":"3","in":108,"out":12},{"type":"relu"},
                      {"type":"linear","name":"5","in":12,"out":4}]}"#,
    )
    .unwrap();
    for l in arch.layers.iter_mut() {
        if *l == Layer::Relu {
            *l = act.clone();
        }
    }
    let weights = Network::initial_weights(&arch, 7);
    Model::from_parts(arch, &weights, std::path::Path::new("tiny.json")).unwrap()
}

#[test]
fn activation_layers_match_candle_in_values_and_jacobians() {
    let x: Vec<f32> = (0..64).map(|i| ((i * 37) % 64) as f32 / 63.0).collect();
    for act in [
        Layer::Sigmoid,
        Layer::Tanh,
        Layer::Gelu,
        Layer::LeakyRelu { negative_slope: 0.1 },
    ] {
        let model = tiny_with(act.clone());
        assert_eq!(
            model.arch.is_piecewise_linear(),
            matches!(act, Layer::LeakyRelu { .. })
        );
        let fast = model.network.logits(&x, 1);
        let reference = model.classifier.logits(&x, 1).unwrap();
        for (a, b) in fast.iter().zip(&reference) {
            assert!((a - b).abs() < 1e-5, "{act:?}: logits {fast:?} vs {reference:?}");
        }
        let (_, j) = logits_and_jacobian(&model.network, &x);
        let j_ref = jacobian_autograd(&model.classifier, &x, (1, 8, 8)).unwrap();
        let scale = j_ref.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (a, b) in j.iter().zip(&j_ref) {
            assert!((a - b).abs() <= 1e-5 * scale.max(1.0), "{act:?}: J {a} vs {b}");
        }
    }
    // The JSON names, and leaky_relu's default slope (PyTorch's 0.01).
    let layers: Vec<Layer> =
        serde_json::from_str(r#"[{"type":"sigmoid"},{"type":"tanh"},{"type":"gelu"},{"type":"leaky_relu"}]"#)
            .unwrap();
    assert_eq!(layers[3], Layer::LeakyRelu { negative_slope: 0.01 });
    assert_eq!(
        layers.iter().map(Layer::kind).collect::<Vec<_>>(),
        ["sigmoid", "tanh", "gelu", "leaky_relu"]
    );
}
