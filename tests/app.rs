//! The desktop app, headless through egui_kittest: the real `DataleafApp` with its real worker
//! thread, driven by clicks and keys as a person would (shared/DESIGN.md, "The app" and "Testing").
//!
//! The worker answers asynchronously, so each test steps the UI and polls the app's state with a
//! timeout (`wait`) instead of `Harness::run`, which would stop at the worker's repaint requests.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataleaf::app::{AppOptions, Choice, DataleafApp, Lane, PRESETS};
use dataleaf::data::Dataset;
use dataleaf::model::Model;
use dataleaf::walk::{self, Mode, Walk, WalkConfig};
use egui_kittest::kittest::{NodeT, Queryable};
use egui_kittest::Harness;

/// Generous: the machine may be busy compiling; nothing here needs more than a few seconds alone.
const TIMEOUT: Duration = Duration::from_secs(180);

fn app() -> Harness<'static, DataleafApp> {
    let mut harness = Harness::builder()
        .with_size([1600.0, 1000.0])
        .with_theme(egui::Theme::Light)
        .build_eframe(|cc| {
            DataleafApp::new(
                cc,
                AppOptions {
                    fresh: true,
                    ..AppOptions::default()
                },
            )
        });
    wait(
        &mut harness,
        "the model, the dataset and the first frames",
        |app| app.model().is_some() && app.dataset().is_some() && frames(app, Lane::Kernel) >= 1,
    );
    harness
}

fn frames(app: &DataleafApp, lane: Lane) -> usize {
    app.history().lane(lane).len()
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
            "timed out waiting for {what}; errors shown: {:?}",
            harness.state().errors()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Type an index into the gallery's jump field and press Go.
fn jump(harness: &mut Harness<'static, DataleafApp>, index: usize) {
    let field = harness.get_by_label("Index");
    field.focus();
    field.type_text(&index.to_string());
    harness.step();
    harness.get_by_label("Go").click();
    harness.run_steps(3);
}

/// The text of the first label containing `part`.
fn label_with(harness: &Harness<'static, DataleafApp>, part: &str) -> String {
    let node = harness
        .query_all_by_label_contains(part)
        .next()
        .unwrap_or_else(|| panic!("no label contains {part:?}"))
        .accesskit_node();
    node.label().or_else(|| node.value()).unwrap_or_default()
}

#[test]
fn choose_start_and_target_then_step_and_play() {
    let mut h = app();

    // The start from a click, the target from a right-click, both found through "jump to index".
    jump(&mut h, 12);
    h.get_by_label("image 12").click();
    h.run_steps(2);
    jump(&mut h, 34);
    h.get_by_label("image 34").click_secondary();
    h.run_steps(2);
    assert_eq!(h.state().settings().start, Some(Choice::Index(12)));
    assert_eq!(h.state().settings().target, Some(Choice::Index(34)));

    wait(&mut h, "step 0 of both lanes", |app| {
        frames(app, Lane::Leaf) == 1 && frames(app, Lane::Kernel) == 1
    });
    let data = Dataset::open("mnist").unwrap();
    assert_eq!(h.state().history().start.as_deref(), data.image(12));
    assert_eq!(h.state().history().target.as_deref(), data.image(34));
    assert_eq!(h.get_all_by_label("step 0").count(), 2, "both lanes show step 0");
    let spectrum_before = label_with(&h, "leaf rank");
    let first = h.state().history().frame(Lane::Leaf, Some(0)).unwrap().clone();

    // A single step, from the button: both counters move, and so do the probabilities and the spectrum.
    h.get_by_label("→ Step").click();
    wait(&mut h, "step 1 of both lanes", |app| {
        frames(app, Lane::Leaf) == 2 && frames(app, Lane::Kernel) == 2
    });
    h.run_steps(2);
    assert_eq!(h.get_all_by_label("step 1").count(), 2, "both lanes show step 1");
    let second = h.state().history().frame(Lane::Leaf, Some(1)).unwrap().clone();
    assert_ne!(first.probs, second.probs, "the probabilities moved");
    assert_ne!(first.eigenvalues, second.eigenvalues, "the spectrum moved");
    assert_ne!(
        label_with(&h, "leaf rank"),
        spectrum_before,
        "the spectrum's caption moved"
    );
    assert!(
        h.query_all_by_label_contains("predicts").count() >= 3
            && h.query_all_by_label_contains("p = ").count() >= 3
    );

    // The right arrow steps too.
    h.key_press(egui::Key::ArrowRight);
    wait(&mut h, "step 2 from the right arrow", |app| {
        frames(app, Lane::Leaf) == 3
    });

    // Space plays, space pauses.
    h.key_press(egui::Key::Space);
    h.step();
    assert!(h.state().is_playing());
    wait(&mut h, "ten more steps while playing", |app| {
        frames(app, Lane::Kernel) >= 13
    });
    h.key_press(egui::Key::Space);
    h.step();
    assert!(!h.state().is_playing());
    let paused_at = frames(h.state(), Lane::Kernel);
    h.run_steps(5);
    std::thread::sleep(Duration::from_millis(200));
    h.run_steps(5);
    assert!(
        frames(h.state(), Lane::Kernel) <= paused_at + 1,
        "pause stops the walks"
    );

    // R resets to step 0.
    h.key_press(egui::Key::R);
    wait(&mut h, "the reset walks' step 0", |app| {
        frames(app, Lane::Leaf) == 1 && frames(app, Lane::Kernel) == 1
    });
    assert!(h.state().errors().is_empty(), "{:?}", h.state().errors());
}

#[derive(Debug)]
struct Dropped(PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &Path {
        &self.0
    }
    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

#[test]
fn a_bad_file_shows_its_error_and_the_model_keeps_working() {
    let mut h = app();
    let model_before = h.state().model().unwrap().name.clone();

    // A typed path that does not exist, through the Open window (Ctrl+L).
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::L);
    h.run_steps(2);
    let field = h.get_by_label("Model");
    field.focus();
    field.type_text("/no/such/model.json");
    h.step();
    h.get_by_label("Load model").click();
    wait(&mut h, "the error", |app| !app.errors().is_empty());
    h.run_steps(2);
    let shown = label_with(&h, "cannot open model");
    assert!(shown.contains("/no/such/model.json"), "{shown}");

    // A corrupt model dropped on the window.
    let dir = std::env::temp_dir().join(format!("dataleaf-app-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("broken.json");
    std::fs::write(&bad, "{ this is not json").unwrap();
    std::fs::write(dir.join("broken.safetensors"), b"nope").unwrap();
    h.input_mut().dropped_files.push(Arc::new(Dropped(bad.clone())));
    wait(&mut h, "the second error", |app| app.errors().len() >= 2);
    h.run_steps(2);
    assert!(
        h.state().errors()[1].contains("broken.json"),
        "{:?}",
        h.state().errors()
    );
    assert!(
        h.query_all_by_label_contains("broken.json").next().is_some(),
        "the error is in the window"
    );

    // A dataset that is not one.
    h.input_mut().dropped_files.push(Arc::new(Dropped(
        dir.join("broken.safetensors").with_extension("idx"),
    )));
    wait(&mut h, "the third error", |app| app.errors().len() >= 3);
    std::fs::remove_dir_all(&dir).ok();

    // The previous model and data are still there, and still walk.
    assert_eq!(h.state().model().unwrap().name, model_before);
    assert_eq!(h.state().dataset().unwrap().len(), 10_000);
    let before = frames(h.state(), Lane::Kernel);
    h.get_by_label("→ Step").click();
    wait(&mut h, "a step after the failed loads", |app| {
        frames(app, Lane::Kernel) == before + 1
    });

    // Errors can be dismissed.
    let shown = h.state().errors().len();
    h.get_all_by_label("Dismiss").next().unwrap().click();
    h.run_steps(2);
    assert_eq!(h.state().errors().len(), shown - 1);
}

#[test]
fn presets_load_their_start_and_target() {
    let mut h = app();
    let data = Dataset::open("mnist").unwrap();

    // The mirrored target.
    h.get_by_label(PRESETS[4].title).click();
    h.run_steps(2);
    let s = h.state().settings();
    assert_eq!(s.start, Some(Choice::Index(125)));
    assert_eq!(s.target, Some(Choice::Index(6349)));
    assert!(s.mirror);
    let mirrored = walk::mirror(data.image(6349).unwrap(), data.width);
    assert_eq!(h.state().history().target.as_deref(), Some(mirrored.as_slice()));
    assert!(h.state().is_playing(), "a preset plays at once");
    h.key_press(egui::Key::Space);
    h.step();

    // The kernel walk alone: no target.
    h.key_press(egui::Key::Num3);
    h.run_steps(2);
    assert_eq!(h.state().settings().start, Some(Choice::Index(6311)));
    assert_eq!(h.state().settings().target, None);
    wait(&mut h, "kernel steps with no target", |app| {
        frames(app, Lane::Kernel) >= 3
    });
    assert_eq!(frames(h.state(), Lane::Leaf), 0, "no leaf walk without a target");

    // The noisy start: 250 kernel steps first, then both walks start from the noisy image.
    h.get_by_label(PRESETS[3].title).click();
    h.run_steps(2);
    assert_eq!(h.state().settings().params.noise_steps, 250);
    wait(&mut h, "the noisy start", |app| frames(app, Lane::Leaf) >= 1);
    wait(&mut h, "the walks playing on from the noisy start", |app| {
        frames(app, Lane::Leaf) >= 5 && app.is_playing()
    });
    h.key_press(egui::Key::Space);
    h.step();
    let start = h.state().history().start.clone().unwrap();
    let clean = data.image(2386).unwrap();
    assert!(walk::l2(&start, clean) > 1.0, "the start is noisy");
    assert_eq!(h.state().history().target.as_deref(), data.image(7528));
}

#[test]
fn the_first_preset_reaches_its_target_as_the_library_walk_does_while_the_ui_answers() {
    let mut h = app();
    // As fast as the worker can (the speed is among the walk settings: W shows them when folded).
    h.key_press(egui::Key::W);
    h.run_steps(2);
    h.get_by_label("as fast as possible").click();
    h.run_steps(2);
    h.get_by_label(PRESETS[0].title).click();
    h.run_steps(2);
    assert!(h.state().is_playing());

    // While it walks, the UI keeps answering clicks: each "Random" click highlights a new image
    // at once, in the same frame as it is handled.
    let mut answered = 0;
    let began = Instant::now();
    while !h.state().history().finished() {
        assert!(began.elapsed() < TIMEOUT, "the walk did not finish");
        let focus_before = label_with(&h, "Highlighted");
        h.get_by_label("Random").click();
        h.run_steps(2);
        if label_with(&h, "Highlighted") != focus_before {
            answered += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        answered >= 3,
        "the UI answered only {answered} clicks during the walk"
    );
    let mut times = h.state().frame_times().to_vec();
    times.sort_by(f32::total_cmp);
    eprintln!(
        "UI work per frame while walking: median {:.1} ms, max {:.1} ms ({} frames; {answered} clicks answered)",
        times[times.len() / 2],
        times[times.len() - 1],
        times.len()
    );
    h.run_steps(2);
    assert!(h
        .query_all_by_label_contains("reached the target")
        .next()
        .is_some());

    // The same walk through the library, as the CLI runs it.
    let model = Model::open(dataleaf::model::DEFAULT_MODEL).unwrap();
    let data = Dataset::open("mnist").unwrap();
    let mut reference = Walk::new(
        &model.network,
        WalkConfig::defaults(Mode::Leaf),
        data.image(4185).unwrap().to_vec(),
        Some(data.image(5874).unwrap().to_vec()),
    )
    .unwrap();
    let steps: Vec<_> = reference.by_ref().collect();
    let leaf = h.state().history().lane(Lane::Leaf);
    assert!(reference.reached);
    assert!(h.state().history().reached());
    assert_eq!(leaf.len(), steps.len(), "same number of steps");
    assert_eq!(
        leaf.last().unwrap().image,
        steps.last().unwrap().x,
        "same final image"
    );
    assert!(leaf.last().unwrap().distance <= dataleaf::walk::DEFAULT_STOP);
}

#[test]
fn lecture_mode_and_commands_from_the_keyboard() {
    let mut h = app();
    assert!(!h.state().settings().lecture);
    h.key_press(egui::Key::L);
    h.run_steps(3);
    assert!(h.state().settings().lecture);
    assert!((h.ctx.zoom_factor() - 1.6).abs() < 1e-6);
    h.key_press(egui::Key::L);
    h.run_steps(3);
    assert!(!h.state().settings().lecture);

    // M mirrors the target; S swaps start and target.
    let before = h.state().settings().clone();
    h.key_press(egui::Key::M);
    h.run_steps(2);
    assert_eq!(h.state().settings().mirror, !before.mirror);
    h.key_press(egui::Key::S);
    h.run_steps(2);
    assert_eq!(h.state().settings().start, before.target);
    assert_eq!(h.state().settings().target, before.start);

    // Keys typed in a text field stay there.
    let field = h.get_by_label("Index");
    field.focus();
    field.type_text("L");
    h.run_steps(2);
    assert!(!h.state().settings().lecture, "typing an L is not a shortcut");
}

#[test]
fn exports_write_a_strip_a_gif_and_a_csv() {
    let mut h = app();
    let dir = std::env::temp_dir().join(format!("dataleaf-export-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::L);
    h.run_steps(2);
    h.get_by_label("Export folder").focus();
    h.step();
    h.key_combination_modifiers(egui::Modifiers::COMMAND, &[egui::Key::A]);
    h.step();
    h.get_by_label("Export folder")
        .type_text(&dir.display().to_string());
    h.run_steps(2);
    // Leave the field, so the next keys are shortcuts again.
    h.key_press(egui::Key::Escape);
    h.run_steps(2);
    for _ in 0..3 {
        h.key_press(egui::Key::ArrowRight);
        h.step();
    }
    wait(&mut h, "three steps", |app| frames(app, Lane::Leaf) >= 4);
    for key in [egui::Key::E, egui::Key::G, egui::Key::T] {
        h.key_press_modifiers(egui::Modifiers::COMMAND, key);
        h.run_steps(2);
    }
    assert!(h.state().errors().is_empty(), "{:?}", h.state().errors());
    let strip = image::open(dir.join("dataleaf-4185-5874-strip.png")).unwrap();
    assert!(
        strip.width() > 9 * 28 && strip.height() > 2 * 28,
        "two lanes of frames"
    );
    assert!(dir.join("dataleaf-4185-5874-walk.gif").metadata().unwrap().len() > 0);
    let csv = std::fs::read_to_string(dir.join("dataleaf-4185-5874-series.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert!(rows[0].starts_with("step,leaf_distance,leaf_max_prob,leaf_class"));
    assert_eq!(rows.len(), 1 + frames(h.state(), Lane::Leaf));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn snapshot_of_the_first_preset_after_three_steps() {
    let mut h = app();
    h.get_by_label(PRESETS[0].title).click();
    h.step();
    h.key_press(egui::Key::Space);
    h.step();
    // Back to step 0, paused, then exactly three steps: the same pixels on every run.
    h.key_press(egui::Key::R);
    wait(&mut h, "step 0", |app| {
        frames(app, Lane::Leaf) == 1 && !app.is_playing()
    });
    for k in 1..=3 {
        h.key_press(egui::Key::ArrowRight);
        wait(&mut h, "a step", |app| {
            frames(app, Lane::Leaf) == k + 1 && frames(app, Lane::Kernel) == k + 1
        });
    }
    // Notes fade after a few seconds of the harness's clock; let them, so the layout is the same
    // on every run.
    h.run_steps(600);
    assert!(h.query_all_by_label_contains("opened model").next().is_none());
    // The status line's timings (frame time, the lanes' steps/s) differ from run to run.
    for part in ["UI frame", "steps/s"] {
        let rects: Vec<egui::Rect> = h.query_all_by_label_contains(part).map(|n| n.rect()).collect();
        for rect in rects {
            h.mask(rect.expand(4.0));
        }
    }
    // Rendering needs a GPU or Mesa's software renderer (.ci/run installs mesa-vulkan-drivers).
    if let Err(e) = h.render() {
        eprintln!("note: no renderer, snapshot skipped: {e}");
        return;
    }
    h.snapshot("app_4185_5874_step_3");
}

#[test]
fn draw_a_target_and_scrub_back() {
    let mut h = app();
    h.get_by_label("Draw a target").click();
    h.run_steps(3);
    let pad = h.get_by_label("drawing pad").rect();
    // A stroke across the pad, pressed, moved and released as a mouse would.
    h.drag_at(pad.center() + egui::vec2(-30.0, -30.0));
    h.step();
    for k in 1..=6 {
        h.hover_at(pad.center() + egui::vec2(-30.0 + 10.0 * k as f32, -30.0 + 10.0 * k as f32));
        h.step();
    }
    h.drop_at(pad.center() + egui::vec2(30.0, 30.0));
    h.step();
    h.get_by_label("Use as target").click();
    h.run_steps(2);
    let Some(Choice::Drawn(pixels)) = h.state().settings().target.clone() else {
        panic!(
            "the drawing is not the target: {:?}",
            h.state().settings().target.as_ref().map(|c| c.describe())
        );
    };
    assert_eq!(pixels.len(), 784);
    let ink: f32 = pixels.iter().sum();
    assert!(ink > 5.0, "the stroke left ink ({ink})");
    assert_eq!(h.state().history().target.as_deref(), Some(pixels.as_slice()));

    // Three steps toward the drawing, then the scrubber shows step 1 again.
    for k in 1..=3 {
        h.key_press(egui::Key::ArrowRight);
        wait(&mut h, "a step", |app| frames(app, Lane::Leaf) == k + 1);
    }
    h.get_by_role_and_label(egui::Role::Slider, "Frames")
        .set_value_accesskit(1.0);
    h.run_steps(3);
    assert_eq!(
        h.get_all_by_label("step 1").count(),
        2,
        "both lanes show the scrubbed step"
    );
    h.get_by_label("live").click();
    h.run_steps(2);
    assert_eq!(h.get_all_by_label("step 3").count(), 2);
}

#[test]
fn open_another_dataset_from_the_window() {
    let mut h = app();
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::L);
    h.run_steps(2);
    h.get_by_label("fashion-mnist").click();
    wait(&mut h, "Fashion-MNIST", |app| {
        app.dataset()
            .is_some_and(|d| d.class_names.len() == 10 && d.name != "MNIST test")
    });
    wait(&mut h, "walks on the new images", |app| {
        frames(app, Lane::Kernel) >= 1
    });
    h.run_steps(2);
    assert!(h.state().errors().is_empty(), "{:?}", h.state().errors());
    // The class names follow the dataset, in the gallery's filter and in the predictions.
    let data = h.state().dataset().unwrap();
    let name = data.class_names[data.labels[4185]].clone();
    assert!(h
        .query_all_by_label_contains(&format!("label {name}"))
        .next()
        .is_some());
    assert_eq!(h.state().settings().dataset, "fashion-mnist");
}

/// Open the experiments window (Ctrl+R) and choose `name` with `samples`.
fn choose_experiment(h: &mut Harness<'static, DataleafApp>, name: &str, samples: usize) {
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::R);
    h.run_steps(2);
    h.get_by_label(name).click();
    h.run_steps(2);
    h.get_by_role_and_label(egui::Role::SpinButton, "Samples")
        .set_value_accesskit(samples as f64);
    h.run_steps(2);
}

#[test]
fn an_experiment_runs_from_its_window_and_shows_its_figure() {
    let mut h = app();
    choose_experiment(&mut h, "training", 40);
    assert!(h
        .query_all_by_label_contains("G vanishes as the model becomes certain")
        .next()
        .is_some());
    h.get_by_label("▶ Run training").click();
    h.run_steps(2);
    assert!(h.state().experiment_running(), "the run starts");
    // The window keeps answering while the experiment runs on its own thread.
    assert!(h.query_all_by_label("Cancel").next().is_some());
    wait(&mut h, "the training experiment", |app| !app.experiment_running());
    h.run_steps(2);
    assert_eq!(h.state().experiment_error(), None);
    let summary = h.state().experiment_summary().expect("a summary").to_string();
    let first = summary.lines().next().unwrap_or_default();
    assert!(!first.is_empty());
    assert!(
        h.query_all_by_label_contains(first).next().is_some(),
        "the summary is in the window: {summary}"
    );
    assert!(h.query_all_by_label("figure of training").next().is_some());
    assert!(h.state().errors().is_empty(), "{:?}", h.state().errors());
}

#[test]
fn a_running_experiment_can_be_cancelled() {
    let mut h = app();
    choose_experiment(&mut h, "dataset-spectra", 5000);
    h.get_by_label("▶ Run dataset-spectra").click();
    h.run_steps(2);
    assert!(h.state().experiment_running());
    h.get_by_label("Cancel").click();
    wait(&mut h, "the cancelled run to stop", |app| {
        !app.experiment_running()
    });
    h.run_steps(2);
    assert_eq!(h.state().experiment_summary(), None);
    let error = h.state().experiment_error().unwrap_or_default().to_string();
    assert!(error.contains("cancelled"), "{error}");
    assert!(h.query_all_by_label_contains("cancelled").next().is_some());
}

#[test]
fn a_model_with_smooth_activations_shows_a_note() {
    let mut h = app();
    assert!(
        h.query_all_by_label_contains("smooth activations")
            .next()
            .is_none(),
        "the shipped ReLU model needs no note"
    );
    let dir = std::env::temp_dir().join(format!("dataleaf-smooth-test-{}", std::process::id()));
    let arch = dataleaf::experiments::involutivity::mlp_with("sigmoid").unwrap();
    let weights = dataleaf::model::Network::initial_weights(&arch, 3);
    let json = dir.join("sigmoid.json");
    dataleaf::model::files::write_model(&json, &arch, &weights).unwrap();

    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::L);
    h.run_steps(2);
    let field = h.get_by_label("Model");
    field.focus();
    field.type_text(&json.display().to_string());
    h.step();
    h.get_by_label("Load model").click();
    wait(&mut h, "the sigmoid model", |app| {
        app.model().is_some_and(|m| m.name == arch.name)
    });
    h.run_steps(2);
    std::fs::remove_dir_all(&dir).ok();
    assert!(h.state().errors().is_empty(), "{:?}", h.state().errors());
    let note = label_with(&h, "smooth activations");
    assert!(
        note.contains("the foliation results assume ReLU networks"),
        "{note}"
    );
    assert!(!h.state().model().unwrap().piecewise_linear);
}
