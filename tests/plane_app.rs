//! The plane view through egui_kittest: the real app with its real plane worker, driven by clicks
//! as a person would. Like tests/app.rs, each test steps the UI and polls the app's state with a
//! generous timeout, since the worker answers asynchronously.

use std::time::{Duration, Instant};

use dataleaf::app::{AppOptions, DataleafApp};
use dataleaf::model::mlp::Mlp;
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;

/// Generous: the machine may be busy compiling; nothing here needs more than a few seconds alone.
const TIMEOUT: Duration = Duration::from_secs(180);

fn app(options: AppOptions) -> Harness<'static, DataleafApp> {
    Harness::builder()
        .with_size([1600.0, 1000.0])
        .with_theme(egui::Theme::Light)
        .build_eframe(move |cc| {
            DataleafApp::new(
                cc,
                AppOptions {
                    fresh: true,
                    ..options.clone()
                },
            )
        })
}

/// Step the UI until `done` holds, or fail after TIMEOUT.
fn wait(harness: &mut Harness<'static, DataleafApp>, what: &str, done: impl Fn(&DataleafApp) -> bool) {
    let began = Instant::now();
    loop {
        harness.step();
        if done(harness.state()) {
            return;
        }
        assert!(
            began.elapsed() < TIMEOUT,
            "timed out waiting for {what}; plane error: {:?}",
            harness.state().plane_error()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Replace the text of the model path field.
fn type_path(h: &mut Harness<'static, DataleafApp>, text: &str) {
    h.get_by_label("Path").focus();
    h.step();
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    h.step();
    h.get_by_label("Path").type_text(text);
    h.step();
}

fn steps(app: &DataleafApp) -> usize {
    app.plane_frame().map_or(0, |f| f.steps)
}

#[test]
fn train_click_a_point_and_see_its_class_curve() {
    // Opened from the top bar, as a person would.
    let mut h = app(AppOptions::default());
    h.run_steps(2);
    assert!(!h.state().plane_mode());
    h.get_by_label("2-D plane ▶").click();
    wait(&mut h, "the first plane frame", |app| {
        app.plane_mode() && app.plane_frame().is_some()
    });
    assert_eq!(steps(h.state()), 0);

    // A few training steps from the button: the loss falls.
    let loss0 = h.state().plane_frame().unwrap().loss;
    h.get_by_label("+100 steps").click();
    wait(&mut h, "100 steps", |app| {
        app.plane_frame().is_some_and(|f| f.steps >= 100 && !f.playing)
    });
    let trained = h.state().plane_frame().unwrap();
    assert_eq!(trained.steps, 100);
    assert!(trained.loss < loss0, "loss {loss0} -> {}", trained.loss);
    assert!(trained.curves.is_none());

    // A click in the middle of the canvas: the plane's origin.
    h.get_by_label("plane canvas").click();
    wait(&mut h, "the curves through the click", |app| {
        app.plane_frame().is_some_and(|f| f.curves.is_some())
    });
    let f = h.state().plane_frame().unwrap();
    let c = f.curves.as_ref().unwrap();
    assert!(
        c.at[0].abs() < 0.02 && c.at[1].abs() < 0.02,
        "clicked at {:?}",
        c.at
    );
    assert!(
        c.class.points.len() > 10,
        "the class curve has {} points",
        c.class.points.len()
    );
    assert!(c.leaf.points.len() > 10 && c.kernel.points.len() > 10);
    // The class curve passes through the click, and the caption reports it.
    assert!(c.class.points.contains(&c.at));
    assert!(
        (c.outputs.iter().sum::<f64>() - 1.0).abs() < 1e-9,
        "probabilities {:?}",
        c.outputs
    );
    assert!(h.query_all_by_label_contains("clicked (").next().is_some());

    // Right-click clears the curves.
    h.get_by_label("plane canvas").click_secondary();
    wait(&mut h, "the curves cleared", |app| {
        app.plane_frame().is_some_and(|f| f.curves.is_none())
    });
}

#[test]
fn a_scripted_run_saves_a_model_that_simec_reads_and_a_bad_path_shows_its_error() {
    let mut h = app(AppOptions {
        plane: true,
        plane_train_steps: 150,
        plane_click: Some([0.2, 0.3]),
        plane_interval: Some((0.3, 0.7)),
        ..AppOptions::default()
    });
    wait(&mut h, "the scripted training and curves", |app| {
        app.plane_frame()
            .is_some_and(|f| f.steps >= 150 && !f.playing && f.curves.is_some())
    });
    let f = h.state().plane_frame().unwrap();
    let pre = f
        .curves
        .as_ref()
        .unwrap()
        .preimage
        .as_ref()
        .expect("the interval was asked for");
    assert!(!pre.strips.is_empty(), "the preimage of [0.3, 0.7] is empty");
    // Each slice sits on its level: SiMExp's last step is bisected back onto it.
    assert!(pre
        .slices
        .iter()
        .all(|(level, _)| (0.3 - 1e-6..=0.7 + 1e-6).contains(level)));

    // Save the trained model through the path field.
    let dir = std::env::temp_dir().join(format!("dataleaf-plane-app-{}", std::process::id()));
    let path = dir.join("moons.json");
    type_path(&mut h, path.to_str().unwrap());
    h.get_by_label("Save model").click();
    wait(&mut h, "the saved file", |_| {
        path.exists() && path.with_extension("safetensors").exists()
    });
    h.run_steps(3);
    let saved = Mlp::load(&path).expect("the saved model reads back");
    assert_eq!(saved.inputs(), 2);

    // A path that does not exist: the error names it, the view keeps its model.
    type_path(&mut h, "/no/such/plane.json");
    h.get_by_label("Load model").click();
    wait(&mut h, "the error", |app| app.plane_error().is_some());
    assert!(h.state().plane_error().unwrap().contains("/no/such/plane.json"));
    assert!(h.state().plane_frame().unwrap().model_name.starts_with("moons-"));

    // Loading the saved file shows it, with no training data.
    type_path(&mut h, path.to_str().unwrap());
    h.get_by_label("Load model").click();
    wait(&mut h, "the loaded model", |app| {
        app.plane_frame().is_some_and(|f| f.data.points.is_empty())
    });
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn snapshot_of_two_moons_after_200_steps_with_the_curves_through_a_point() {
    let mut h = app(AppOptions {
        plane: true,
        plane_train_steps: 200,
        plane_click: Some([0.25, 0.75]),
        ..AppOptions::default()
    });
    wait(&mut h, "the scripted training and curves", |app| {
        app.plane_frame()
            .is_some_and(|f| f.steps >= 200 && !f.playing && f.curves.is_some())
    });
    h.run_steps(3);
    // Rendering needs a GPU or Mesa's software renderer (.ci/run installs mesa-vulkan-drivers).
    if let Err(e) = h.render() {
        eprintln!("note: no renderer, snapshot skipped: {e}");
        return;
    }
    h.snapshot("plane_moons_200_steps");
}
