//! The plane view's known faults, each pinned by a test (issue 13, item 5): a loaded model survives
//! a change of the training controls; with more than two classes the user chooses what the heat
//! map shows (every class by default, not only the last one's p); a wide network trains with cheap
//! coarse frames and gets its full-resolution frame when training stops; docs/plane.png is small.
//! The real app and its real plane worker, driven through egui_kittest as in tests/plane_app.rs.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use dataleaf::app::{AppOptions, DataleafApp, HEAT_CELLS, TRAINING_HEAT_CELLS};
use dataleaf::geometry::plane::HeatOutput;
use dataleaf::model::mlp::{Act, Mlp, MlpSpec};
use dataleaf::model::Task;
use egui_kittest::kittest::{by, NodeT, Queryable};
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
                    plane: true,
                    ..options.clone()
                },
            )
        })
}

fn wait(h: &mut Harness<'static, DataleafApp>, what: &str, done: impl Fn(&DataleafApp) -> bool) {
    let began = Instant::now();
    loop {
        h.step();
        if done(h.state()) {
            return;
        }
        assert!(
            began.elapsed() < TIMEOUT,
            "timed out waiting for {what}; plane error: {:?}",
            h.state().plane_error()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A features model saved to a temporary file, as `Save model` or a script would write it.
fn saved(name: &str, hidden: Vec<usize>, outputs: usize, seed: u64) -> (PathBuf, Mlp) {
    let spec = MlpSpec {
        inputs: 2,
        hidden,
        outputs,
        act: Act::Relu,
        task: Task::Classification,
    };
    let mut mlp = Mlp::new(&spec, seed);
    mlp.name = name.into();
    let dir = std::env::temp_dir().join(format!("dataleaf-plane-faults-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.json"));
    mlp.save(&path).unwrap();
    let loaded = Mlp::load(&path).unwrap();
    (path, loaded)
}

/// The slider labelled `label` (its text label is a node of the same name).
fn slider<'a>(h: &'a Harness<'static, DataleafApp>, label: &'a str) -> egui_kittest::Node<'a> {
    h.get(by().label(label).role(egui::Role::Slider))
}

/// Set the slider labelled `label` to `value`, as assistive technology does.
fn set(h: &mut Harness<'static, DataleafApp>, label: &str, value: f64) {
    slider(h, label).set_value_accesskit(value);
    h.run_steps(2);
}

#[test]
fn a_loaded_model_survives_a_change_of_the_data_and_trains_on_it() {
    let (path, mlp) = saved("loaded-net", vec![8], 2, 3);
    let mut h = app(AppOptions {
        plane_model: Some(path.display().to_string()),
        ..AppOptions::default()
    });
    wait(&mut h, "the loaded model", |app| {
        app.plane_frame()
            .is_some_and(|f| f.model_name == "loaded-net" && f.loaded.is_some() && !f.coarse)
    });
    let before = h.state().plane_frame().unwrap().heat.values.clone();
    // The network's shape belongs to the loaded model: those controls are off.
    assert!(slider(&h, "Width").accesskit_node().is_disabled());

    // More points: new data, the same model (same heat map, same name).
    set(&mut h, "Points", 260.0);
    wait(&mut h, "the new data", |app| {
        app.plane_frame()
            .is_some_and(|f| !f.data.points.is_empty() && !f.coarse)
    });
    let f = h.state().plane_frame().unwrap();
    assert_eq!(
        f.model_name, "loaded-net",
        "a data change replaced the loaded model"
    );
    assert_eq!(f.heat.values, before, "the loaded weights changed");
    let b = f.heat.bounds;
    let k = 37 * f.heat.nx + 81;
    let centre = b.cell_centre(k % f.heat.nx, k / f.heat.nx, f.heat.nx, f.heat.ny);
    assert_eq!(f.heat.values[k], mlp.predict(&centre)[1]);

    // It trains on that data, and stays itself.
    h.get_by_label("+100 steps").click();
    wait(&mut h, "100 steps of the loaded model", |app| {
        app.plane_frame().is_some_and(|f| f.steps >= 100 && !f.playing)
    });
    let f = h.state().plane_frame().unwrap();
    assert_eq!(f.model_name, "loaded-net");
    assert_ne!(f.heat.values, before, "training moved the model");

    // Reset goes back to the file; "Fresh network" drops it for a new one of the controls' shape.
    h.get_by_label("Reset").click();
    wait(&mut h, "the file's weights again", |app| {
        app.plane_frame()
            .is_some_and(|f| f.steps == 0 && f.heat.values == before)
    });
    h.get_by_label("Fresh network").click();
    wait(&mut h, "a fresh network", |app| {
        app.plane_frame().is_some_and(|f| f.loaded.is_none())
    });
    assert!(h
        .state()
        .plane_frame()
        .unwrap()
        .model_name
        .starts_with("moons-2x12"));
    assert!(!slider(&h, "Width").accesskit_node().is_disabled());
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
}

#[test]
fn with_three_classes_the_map_shows_every_class_or_the_one_chosen() {
    let (path, mlp) = saved("three-classes", vec![], 3, 5);
    let mut h = app(AppOptions {
        plane_model: Some(path.display().to_string()),
        ..AppOptions::default()
    });
    wait(&mut h, "the three-class model", |app| {
        app.plane_frame().is_some_and(|f| f.model_name == "three-classes")
    });
    let f = h.state().plane_frame().unwrap();
    assert_eq!(
        f.shown,
        HeatOutput::Argmax,
        "more than two classes: all of them at once"
    );
    assert_eq!(f.heat.classes.len(), f.heat.nx * f.heat.ny);
    let (nx, ny, b) = (f.heat.nx, f.heat.ny, f.heat.bounds);
    let mut seen = [false; 3];
    for k in (0..nx * ny).step_by(97) {
        let p = mlp.predict(&b.cell_centre(k % nx, k / nx, nx, ny));
        let best = (0..3).max_by(|&i, &j| p[i].total_cmp(&p[j])).unwrap();
        assert_eq!(f.heat.classes[k], best, "cell {k}");
        assert_eq!(f.heat.values[k], p[best]);
        seen[best] = true;
    }
    assert!(
        seen.iter().filter(|&&s| s).count() >= 2,
        "the map shows one class only: {seen:?}"
    );

    // Choose class 0: the map is p_0, not the last class's p.
    h.get_by_label("Heat map").click();
    h.run_steps(2);
    h.get_by_label("p(class 0)").click();
    wait(&mut h, "the map of class 0", |app| {
        app.plane_frame()
            .is_some_and(|f| f.shown == HeatOutput::Output(0))
    });
    let f = h.state().plane_frame().unwrap();
    assert!(f.heat.classes.is_empty());
    for k in (0..nx * ny).step_by(131) {
        let p = mlp.predict(&b.cell_centre(k % nx, k / nx, nx, ny));
        assert_eq!(f.heat.values[k], p[0], "cell {k}");
    }
    assert!(h
        .query_all_by_label_contains("p(class 0): heat map")
        .next()
        .is_some());
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
}

#[test]
fn a_wide_network_trains_with_coarse_frames_and_ends_on_a_full_one() {
    let mut h = app(AppOptions::default());
    wait(&mut h, "the first plane frame", |app| app.plane_frame().is_some());
    // 4 hidden layers of 32, from the sliders.
    set(&mut h, "Hidden layers", 4.0);
    set(&mut h, "Width", 32.0);
    h.get_by_label("plane canvas").click();
    wait(&mut h, "the 4x32 network with curves", |app| {
        app.plane_frame()
            .is_some_and(|f| f.model_name.contains("4x32") && f.curves.is_some() && !f.coarse)
    });
    let full = h.state().plane_frame().unwrap().compute_ms;

    h.get_by_label("▶ Train").click();
    let mut coarse = Vec::new();
    let began = Instant::now();
    while coarse.len() < 5 {
        assert!(began.elapsed() < TIMEOUT, "no training frames");
        h.step();
        if let Some(f) = h.state().plane_frame() {
            if f.playing && f.steps > 0 && coarse.last().is_none_or(|&(s, _)| s < f.steps) {
                assert!(f.coarse, "a frame at full resolution while training");
                assert_eq!(f.heat.nx, TRAINING_HEAT_CELLS);
                assert!(f.curves.is_some(), "the curves stay drawn while training");
                coarse.push((f.steps, f.compute_ms));
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    h.get_by_label("❚❚ Pause").click();
    wait(&mut h, "the frame after training", |app| {
        app.plane_frame().is_some_and(|f| !f.playing && !f.coarse)
    });
    let f = h.state().plane_frame().unwrap();
    assert_eq!(f.heat.nx, HEAT_CELLS);
    eprintln!(
        "4x32 ReLU: full frame {full:.0} ms; while training (steps, ms): {coarse:?}; after {:.0} ms",
        f.compute_ms
    );
}

#[test]
fn the_plane_picture_in_the_readme_is_small() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/plane.png");
    let bytes = std::fs::metadata(path).unwrap().len();
    assert!(bytes < 300_000, "docs/plane.png is {bytes} bytes");
    let image = image::open(path).unwrap();
    assert!(image.width() >= 1000, "still a readable picture");
}
