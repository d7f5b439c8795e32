//! The app's instruments, headless through egui_kittest: the leaf directions follow the walk, the
//! chart is computed on a worker and switches plane, and the reach toggle puts the strict search in
//! the leaf lane (README, "Instruments").

use std::time::{Duration, Instant};

use dataleaf::app::{AppOptions, DataleafApp, Lane, PRESETS};
use dataleaf::walk::chart::Plane;
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;

/// Generous: the machine may be busy compiling; nothing here needs more than a few seconds alone.
const TIMEOUT: Duration = Duration::from_secs(240);

fn app(instruments: bool) -> Harness<'static, DataleafApp> {
    let mut harness = Harness::builder()
        .with_size([1600.0, 1000.0])
        .with_theme(egui::Theme::Light)
        .build_eframe(|cc| {
            DataleafApp::new(
                cc,
                AppOptions {
                    fresh: true,
                    instruments,
                    ..AppOptions::default()
                },
            )
        });
    wait(&mut harness, "the model and the dataset", |app| {
        app.model().is_some() && app.dataset().is_some()
    });
    harness
}

fn wait(harness: &mut Harness<'static, DataleafApp>, what: &str, done: impl Fn(&DataleafApp) -> bool) {
    let began = Instant::now();
    loop {
        harness.step();
        if done(harness.state()) {
            return;
        }
        assert!(
            began.elapsed() < TIMEOUT,
            "timed out waiting for {what}; errors: {:?}, instruments: {:?}",
            harness.state().errors(),
            harness.state().instruments().error()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn directions_follow_the_walk_and_the_chart_switches_plane() {
    let mut h = app(true);
    // The first preset (4185 -> 5874) by its key: it plays at once.
    h.key_press(egui::Key::Num1);
    h.run_steps(2);
    assert!(h.state().is_playing(), "the preset plays");
    wait(&mut h, "the directions of both lanes", |app| {
        Lane::BOTH
            .iter()
            .all(|&l| app.instruments().directions_of(l).is_some())
    });
    let (first, lambdas) = h.state().instruments().directions_of(Lane::Leaf).unwrap();
    assert_eq!(lambdas.len(), 9, "rank 9 on the MNIST model");
    assert!(lambdas.windows(2).all(|w| w[0] >= w[1]));
    assert!(
        h.query_all_by_label_contains("λ1 ").count() >= 2,
        "λ_1 under each lane's first direction"
    );
    // Live: as the walk moves on, the directions shown are those of a later step.
    wait(&mut h, "the directions of a later step", |app| {
        app.instruments()
            .directions_of(Lane::Leaf)
            .is_some_and(|(i, _)| i > first)
    });
    // The chart follows the walk (opened from the command line), first along the leaf.
    wait(&mut h, "a leaf chart", |app| {
        app.instruments()
            .chart_of()
            .is_some_and(|(plane, _, cells, _)| plane == Plane::Leaf && cells == 25)
    });
    let (_, radius, _, _) = h.state().instruments().chart_of().unwrap();
    assert_eq!(radius, 4.0);
    h.get_by_label("across leaves (ker G)").click();
    h.run_steps(2);
    assert_eq!(h.state().instruments().chart_plane, Plane::Kernel);
    wait(&mut h, "a kernel chart", |app| {
        app.instruments()
            .chart_of()
            .is_some_and(|(plane, _, cells, _)| plane == Plane::Kernel && cells == 25)
    });
    assert!(h.state().instruments().error().is_none());
}

#[test]
fn the_reach_toggle_runs_the_strict_search_in_the_leaf_lane() {
    let mut h = app(false);
    // The speed controls sit behind the settings toggle (W) when the window is short of room.
    if h.query_by_label("as fast as possible").is_none() {
        h.key_press(egui::Key::W);
        h.run_steps(2);
    }
    h.get_by_label("as fast as possible").click();
    h.run_steps(2);
    h.get_by_label(PRESETS[0].title).click();
    h.run_steps(2);
    // A preset whose model or data are still loading is applied when they arrive, and it resets the
    // walk's parameters (the reach toggle with them): wait until its walk starts.
    wait(&mut h, "the preset's walk", |app| app.is_playing());
    // Through accessibility, not the pointer: the lines above the toggle change from frame to frame
    // (a pointer click at last frame's place missed it now and then).
    h.get_by_label("strict reach search").click_accesskit();
    // Under load the frame that handles the click may come a few steps later; and a preset applied
    // late (its model still loading) resets the walk's parameters, the toggle with them: then,
    // seconds after a click that did not hold, click again.
    let began = Instant::now();
    let mut clicked = Instant::now();
    while !h.state().settings().params.reach {
        assert!(
            began.elapsed() < TIMEOUT,
            "timed out waiting for the reach toggle to be on"
        );
        if clicked.elapsed() > Duration::from_secs(3) {
            h.get_by_label("strict reach search").click_accesskit();
            clicked = Instant::now();
        }
        h.step();
        std::thread::sleep(Duration::from_millis(5));
    }
    // Reset restarts the walks with the new setting.
    h.key_press(egui::Key::R);
    h.run_steps(2);
    if !h.state().is_playing() {
        h.key_press(egui::Key::Space);
        h.run_steps(2);
    }
    wait(&mut h, "200 steps of the reach search", |app| {
        app.history().lane(Lane::Leaf).len() > 200
    });
    let frames = h.state().history().lane(Lane::Leaf);
    // Every move lies on the leaf (the default leaf walk moves about a third of each step across it).
    let worst = frames.iter().map(|f| f.off_leaf).fold(0.0f32, f32::max);
    assert!(worst <= 0.01, "a reach move is {worst} off the leaf");
    let (start, now) = (frames[0].distance, frames.last().unwrap().distance);
    assert!(now < start, "the gap shrinks: {start} -> {now}");
}
