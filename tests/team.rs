//! One image's passes split over the team (src/model/team.rs) give the same numbers as on one
//! thread: each product's parts split outputs, columns or row blocks, never a sum, so J and the
//! logits are equal bit for bit. Checked on the shipped medium CNN (every kernel the split touches:
//! the convolutions' bands, the max-pool's channels, the linear layers' ranges, the shared-mask
//! reverse kernel's row blocks) and on the Fashion-MNIST one, at several test images and along a walk;
//! and the graph engine's kernels on ONNX fixtures (residuals, BatchNorm, depthwise convolutions).

use dataleaf::data::Dataset;
use dataleaf::geometry::jacobian::logits_and_jacobian;
use dataleaf::model::{team, Model};
use dataleaf::walk::{Mode, Walk, WalkConfig};

/// The tests here take turns: the team serves one caller at a time (others run alone), and each
/// test wants it.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// An ONNX fixture's path.
fn onnx(name: &str) -> String {
    format!("{}/tests/fixtures/onnx/{name}.onnx", env!("CARGO_MANIFEST_DIR"))
}

/// J and logits on the calling thread (the team when the machine has 2+ cores) and inside a
/// one-thread rayon pool (the team off).
fn both_ways(model: &str, dataset: &str, images: &[usize]) {
    let m = Model::open(model).unwrap();
    let data = Dataset::open(dataset).unwrap();
    let serial = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    for &i in images {
        let x = data.image(i).unwrap().to_vec();
        let (logits, j) = logits_and_jacobian(&m.network, &x);
        let (logits1, j1) = serial.install(|| {
            assert_eq!(team::threads(), 1, "a rayon worker runs its passes alone");
            logits_and_jacobian(&m.network, &x)
        });
        assert_eq!(logits, logits1, "{model} image {i}: logits differ");
        assert!(j.iter().any(|&v| v != 0.0), "{model} image {i}: J is zero");
        let same = j.iter().zip(&j1).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(
            same,
            "{model} image {i}: J on the team differs from J on one thread"
        );
    }
}

#[test]
fn the_team_splits_without_changing_a_bit() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    if std::thread::available_parallelism().map_or(1, |n| n.get()) > 1 && rayon::current_num_threads() > 1 {
        assert!(team::threads() > 1, "the test thread has the team");
    }
    both_ways("mnist-medium-cnn", "mnist", &[4185, 5874, 0, 1, 2]);
    both_ways("fashion-mnist-medium-cnn", "fashion-mnist", &[0, 17]);
    for graph in ["resnet18-w16", "mobilenet_v2-w25"] {
        both_ways(&onnx(graph), "cifar10-samples", &[0, 1]);
    }
}

#[test]
fn a_walk_on_the_team_is_the_walk_on_one_thread() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let m = Model::open("mnist-medium-cnn").unwrap();
    let data = Dataset::open("mnist").unwrap();
    let (start, target) = (
        data.image(4185).unwrap().to_vec(),
        data.image(5874).unwrap().to_vec(),
    );
    let config = WalkConfig {
        max_steps: 40,
        ..WalkConfig::defaults(Mode::Leaf)
    };
    let walk = || {
        Walk::new(&m.network, config, start.clone(), Some(target.clone()))
            .unwrap()
            .map(|s| s.x)
            .collect::<Vec<_>>()
    };
    let here = walk();
    let alone = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(walk);
    assert_eq!(here.len(), 41);
    assert_eq!(
        here, alone,
        "the walk's images differ between the team and one thread"
    );
}
