//! The papers' reproducible walks on the shipped model (shared/REFERENCE.md section 3).

use dataleaf::data::Dataset;
use dataleaf::model::Model;
use dataleaf::walk::{l2, mirror, noisy, Mode, Step, Walk, WalkConfig, DEFAULT_STEP, DEFAULT_STOP};

fn setup() -> (Model, Dataset) {
    (
        Model::open("mnist-medium-cnn").unwrap(),
        Dataset::open("mnist").unwrap(),
    )
}

fn run(model: &Model, config: WalkConfig, start: Vec<f32>, target: Option<Vec<f32>>) -> (Vec<Step>, bool) {
    let mut walk = Walk::new(&model.network, config, start, target).unwrap();
    let steps: Vec<Step> = walk.by_ref().collect();
    (steps, walk.reached)
}

#[test]
fn leaf_walk_4185_to_5874_reaches_its_target_and_becomes_a_five() {
    let (model, data) = setup();
    let (start, target) = (data.image(4185).unwrap(), data.image(5874).unwrap());
    let (steps, reached) = run(
        &model,
        WalkConfig::defaults(Mode::Leaf),
        start.to_vec(),
        Some(target.to_vec()),
    );
    assert!(reached, "final distance {}", steps.last().unwrap().distance);
    let last = steps.last().unwrap();
    assert!(last.distance <= DEFAULT_STOP);
    assert_eq!(steps[0].argmax, 1, "starts as a 1");
    assert_eq!(last.argmax, data.labels[5874], "ends as the target's class");
    // Each step moves one step length at most (clamping can only shorten it).
    for pair in steps.windows(2) {
        assert!(l2(&pair[0].x, &pair[1].x) <= DEFAULT_STEP * 1.0001);
    }
    // Far from a stall the step lies almost entirely on the leaf.
    assert!(
        steps[1].off_leaf < 0.2,
        "first step off-leaf fraction {}",
        steps[1].off_leaf
    );
}

#[test]
fn strict_leaf_walk_stays_on_the_leaf() {
    let (model, data) = setup();
    let config = WalkConfig {
        transverse: Some(0.0),
        max_steps: 100,
        ..WalkConfig::defaults(Mode::Leaf)
    };
    let target = data.image(5874).unwrap().to_vec();
    let (steps, _) = run(&model, config, data.image(4185).unwrap().to_vec(), Some(target));
    assert_eq!(steps.len(), 101);
    // Clamping at the pixel box is the only thing that takes a strict step off the leaf.
    let mean: f32 = steps[1..].iter().map(|s| s.off_leaf).sum::<f32>() / 100.0;
    assert!(mean < 1e-3, "mean off-leaf fraction {mean}");
    assert!(steps.last().unwrap().distance < steps[0].distance);
}

#[test]
fn kernel_walk_6311_fills_with_noise_and_keeps_its_prediction() {
    let (model, data) = setup();
    let start = data.image(6311).unwrap().to_vec();
    let (steps, _) = run(&model, WalkConfig::defaults(Mode::Kernel), start.clone(), None);
    assert_eq!(steps.len(), 1001, "1000 steps after the start");
    let kept = steps.iter().filter(|s| s.argmax == steps[0].argmax).count();
    assert!(
        kept as f64 >= 0.95 * steps.len() as f64,
        "kept on {kept} of {} steps",
        steps.len()
    );
    // The image moves far (noise), each move across the leaves.
    assert!(steps.last().unwrap().distance > 5.0);
    let mean_off: f32 = steps[1..].iter().map(|s| s.off_leaf).sum::<f32>() / 1000.0;
    assert!(mean_off > 0.99, "kernel steps lie in ker G: {mean_off}");
}

#[test]
fn noisy_and_flipped_walks_run() {
    let (model, data) = setup();
    let noisy_start = noisy(&model.network, data.image(2386).unwrap(), 250, DEFAULT_STEP, 1).unwrap();
    // 250 kernel steps of 0.0308 move the image well away from the clean one.
    assert!(l2(&noisy_start, data.image(2386).unwrap()) > 2.0);
    let config = WalkConfig {
        max_steps: 300,
        ..WalkConfig::defaults(Mode::Leaf)
    };
    let target = data.image(7528).unwrap().to_vec();
    let (steps, _) = run(&model, config, noisy_start, Some(target));
    assert!(steps.last().unwrap().distance < steps[0].distance);

    let flipped = mirror(data.image(6349).unwrap(), data.width);
    assert_ne!(flipped, data.image(6349).unwrap());
    assert_eq!(mirror(&flipped, data.width), data.image(6349).unwrap());
    let (steps, _) = run(&model, config, data.image(125).unwrap().to_vec(), Some(flipped));
    assert!(steps.last().unwrap().distance < steps[0].distance);
}
