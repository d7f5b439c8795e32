//! The shipped models: they load, and their recorded test accuracy is what they score on the shipped
//! MNIST test set; and a freshly trained checkpoint reads back with identical logits.

use std::path::{Path, PathBuf};

use dataleaf::data::Dataset;
use dataleaf::model::train::{train, TrainConfig};
use dataleaf::model::{models_dir, zoo, Model};

/// Accuracy agreement asked of a checkpoint's record (0.1 percentage points).
const ACCURACY_TOLERANCE: f64 = 0.001;

fn recorded_accuracy(model: &Model) -> f64 {
    model
        .arch
        .training
        .as_ref()
        .expect("shipped models record their training")
        .test_accuracy as f64
}

#[test]
fn shipped_medium_cnn_scores_its_recorded_accuracy() {
    let model = Model::open("mnist-medium-cnn").expect("shipped model loads");
    let data = Dataset::open("mnist").unwrap();
    model.check_dataset(&data).unwrap();
    let measured = model.accuracy(&data);
    let recorded = recorded_accuracy(&model);
    assert!(
        (measured - recorded).abs() <= ACCURACY_TOLERANCE,
        "measured {measured}, recorded {recorded}"
    );
    // Partially trained, as the papers' model: near 96.5 %, not converged.
    assert!((0.955..0.975).contains(&measured), "accuracy {measured}");
    // The candle implementation agrees with the fast one on the predictions of 500 images.
    let n = data.image_len();
    let count = 500;
    let candle = model.classifier.logits(&data.images[..count * n], count).unwrap();
    let fast = model.network.logits(&data.images[..count * n], count);
    let max_diff = candle
        .iter()
        .zip(&fast)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(max_diff < 1e-3, "candle and fast logits differ by {max_diff}");
}

#[test]
fn lenet_training_series_scores_its_recorded_accuracies() {
    let data = Dataset::open("mnist").unwrap();
    let dir = models_dir().join("lenet-series");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("the LeNet series ships in assets/models/lenet-series")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 5, "series has {} checkpoints", paths.len());
    let mut last_epoch = None;
    for path in &paths {
        let model = Model::load(path).unwrap();
        let record = model.arch.training.clone().unwrap();
        assert!(
            last_epoch < Some(record.epoch),
            "epochs increase along the series"
        );
        last_epoch = Some(record.epoch);
        let measured = model.accuracy(&data);
        assert!(
            (measured - record.test_accuracy as f64).abs() <= ACCURACY_TOLERANCE,
            "{}: measured {measured}, recorded {}",
            path.display(),
            record.test_accuracy
        );
    }
}

#[test]
fn a_trained_lenet_checkpoint_reads_back_with_identical_logits() {
    let train_set = Dataset::open("mnist-train").unwrap();
    let test_set = Dataset::open("mnist").unwrap();
    let out = std::env::temp_dir().join(format!("dataleaf-train-test-{}", std::process::id()));
    let config = TrainConfig {
        arch: "lenet".into(),
        epochs: 1,
        learning_rate: 0.01,
        batch_size: 60,
        seed: 7,
        out_dir: out.clone(),
    };
    let arch = zoo::mnist_architecture("lenet").unwrap();
    let (paths, trained) = train(&config, arch, &train_set, &test_set, |_| {}).unwrap();
    assert_eq!(paths.len(), 2, "epoch 0 and epoch 1 checkpoints");
    let reloaded = Model::load(Path::new(&paths[1])).unwrap();
    let n = test_set.image_len();
    let images = &test_set.images[..64 * n];
    assert_eq!(
        reloaded.network.logits(images, 64),
        trained.logits(images, 64),
        "bit-identical logits"
    );
    let candle = reloaded.classifier.logits(images, 64).unwrap();
    let fast = trained.logits(images, 64);
    assert!(candle.iter().zip(&fast).all(|(a, b)| (a - b).abs() < 1e-4));
    // One epoch of SGD learns: well above chance.
    let accuracy = reloaded.arch.training.as_ref().unwrap().test_accuracy;
    assert!(accuracy > 0.8, "accuracy after one epoch {accuracy}");
    std::fs::remove_dir_all(&out).ok();
}
