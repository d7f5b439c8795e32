//! The instruments honour "Classes in G" (issue 15, Scale): with the top K chosen in the walk
//! settings, the leaf directions and the chart are those of G from the K most probable classes,
//! the window says K and the dropped mass, and the directions' PNG export carries the same note.

use std::time::{Duration, Instant};

use dataleaf::app::{AppOptions, ClassesInG, DataleafApp, Lane};
use dataleaf::export::instruments::{directions_strip, top_k_note};
use dataleaf::export::ImageShape;
use dataleaf::geometry::{GeometryOptions, LocalGeometry};
use dataleaf::model::{Model, DEFAULT_MODEL};
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;

/// Generous: the machine may be busy compiling; nothing here needs more than a few seconds alone.
const TIMEOUT: Duration = Duration::from_secs(240);

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
fn the_instruments_follow_classes_in_g() {
    let mut h = Harness::builder()
        .with_size([1600.0, 1000.0])
        .with_theme(egui::Theme::Light)
        .build_eframe(|cc| {
            DataleafApp::new(
                cc,
                AppOptions {
                    fresh: true,
                    instruments: true,
                    ..AppOptions::default()
                },
            )
        });
    wait(&mut h, "the model and the dataset", |app| {
        app.model().is_some() && app.dataset().is_some()
    });
    // The first preset (4185 -> 5874) plays at once; exact G on MNIST (auto, C = 10).
    h.key_press(egui::Key::Num1);
    h.run_steps(2);
    wait(&mut h, "exact directions", |app| {
        app.instruments()
            .directions_of(Lane::Leaf)
            .is_some_and(|(i, l)| i > 0 && l.len() == 9)
    });
    assert!(h.state().instruments().directions_note(Lane::Leaf).is_none());
    assert!(h.query_by_label_contains("G from the top").is_none());
    // Pause, so the point stays where it is while the setting changes.
    h.key_press(egui::Key::Space);
    h.run_steps(2);
    assert!(!h.state().is_playing());

    // "Classes in G": the top 3 (W shows the walk settings when they are folded away).
    if h.query_by_label("top").is_none() {
        h.key_press(egui::Key::W);
        h.run_steps(3);
    }
    h.get_by_label("top").click();
    h.run_steps(2);
    h.get_by_label("Classes in G").set_value_accesskit(3.0);
    h.run_steps(2);
    assert_eq!(h.state().settings().params.classes_in_g, ClassesInG::Top(3));
    wait(&mut h, "directions of G from the top 3 classes", |app| {
        Lane::BOTH
            .iter()
            .all(|&l| app.instruments().directions_note(l).is_some())
    });

    // The same point's G from the top 3 classes, computed here: its directions and its note.
    let model = Model::open(DEFAULT_MODEL).unwrap();
    let (step, lambdas) = h.state().instruments().directions_of(Lane::Leaf).unwrap();
    let lambdas = lambdas.to_vec();
    let frame = h
        .state()
        .history()
        .lane(Lane::Leaf)
        .iter()
        .find(|f| f.index == step)
        .expect("the frame shown")
        .clone();
    let options = GeometryOptions {
        top_k: Some(3),
        basis: true,
    };
    let geo = LocalGeometry::with(&model.network, &frame.image, options);
    assert!(!geo.is_exact() && geo.dropped_mass > 0.0);
    assert!(lambdas.len() <= 3 && lambdas.len() == geo.rank, "{lambdas:?}");
    for (a, b) in lambdas.iter().zip(&geo.eigenvalues) {
        assert!((a - b).abs() <= 1e-9 * b.abs(), "{a} vs {b}");
    }
    let note = top_k_note(3, 10, geo.dropped_mass);
    assert!(note.starts_with("G from the top 3 of 10 classes, dropped p "));
    assert_eq!(
        h.state().instruments().directions_note(Lane::Leaf),
        Some(note.as_str())
    );
    h.run_steps(2);
    // Beside the lane's directions in the window.
    h.get_by_label_contains(&format!("step {step}, rank {}, {note}", lambdas.len()));

    // The chart follows the walk (opened from the command line): charted again for the new G.
    wait(&mut h, "a chart of G from the top 3 classes", |app| {
        app.instruments()
            .chart_note()
            .is_some_and(|n| n.starts_with("G from the top 3 of 10 classes, dropped p "))
            && !app.instruments().chart_running()
    });
    assert_eq!(h.state().instruments().chart_of().map(|c| c.2), Some(25));

    // The PNG export of the leaf lane's directions: the window's directions, the note under them.
    let path = std::env::temp_dir().join(format!("dataleaf-directions-leaf-{step}.png"));
    let _ = std::fs::remove_file(&path);
    h.get_all_by_label("Export PNG…")
        .next()
        .expect("an export button")
        .click();
    h.run_steps(2);
    let png = image::open(&path).expect("the export is written").to_rgba8();
    let shape = ImageShape {
        channels: 1,
        height: 28,
        width: 28,
    };
    let expected = directions_strip(&geo.leaf_directions(), shape, 4, Some(&note));
    assert_eq!(png.dimensions(), expected.dimensions());
    // 112 px of images, 22 of lambdas, 20 of the note.
    assert_eq!(png.height(), 4 * 28 + 22 + 20);
    let differing = png
        .pixels()
        .zip(expected.pixels())
        .filter(|(a, b)| a.0.iter().zip(b.0).any(|(x, y)| x.abs_diff(y) > 2))
        .count();
    assert_eq!(
        differing, 0,
        "the exported strip is the directions of G from the top 3 classes"
    );
    let _ = std::fs::remove_file(&path);

    // Back to all classes: exact directions again, no note.
    h.get_by_label("all").click();
    h.run_steps(2);
    assert_eq!(h.state().settings().params.classes_in_g, ClassesInG::All);
    wait(&mut h, "exact directions again", |app| {
        app.instruments()
            .directions_of(Lane::Leaf)
            .is_some_and(|(_, l)| l.len() == 9)
            && app.instruments().directions_note(Lane::Leaf).is_none()
    });
    assert!(h.state().instruments().error().is_none());
}

#[test]
fn dataleaf_top_k_sets_classes_in_g_and_presets_keep_it() {
    // `dataleaf --top-k 4` is AppOptions::top_k.
    let mut h = Harness::builder()
        .with_size([1600.0, 1000.0])
        .with_theme(egui::Theme::Light)
        .build_eframe(|cc| {
            DataleafApp::new(
                cc,
                AppOptions {
                    fresh: true,
                    instruments: true,
                    top_k: Some(4),
                    ..AppOptions::default()
                },
            )
        });
    wait(&mut h, "the model and the dataset", |app| {
        app.model().is_some() && app.dataset().is_some()
    });
    assert_eq!(h.state().settings().params.classes_in_g, ClassesInG::Top(4));
    // A preset sets the walk's parameters, not how G is built.
    h.key_press(egui::Key::Num1);
    h.run_steps(2);
    assert_eq!(h.state().current_preset(), Some(0));
    assert_eq!(h.state().settings().params.classes_in_g, ClassesInG::Top(4));
    wait(
        &mut h,
        "frames and directions of G from the top 4 classes",
        |app| {
            app.history()
                .lane(Lane::Leaf)
                .iter()
                .any(|f| f.eigenvalues.len() == 4)
                && app
                    .instruments()
                    .directions_note(Lane::Leaf)
                    .is_some_and(|n| n.starts_with("G from the top 4 of 10 classes, dropped p "))
        },
    );
    let (_, lambdas) = h.state().instruments().directions_of(Lane::Leaf).unwrap();
    assert!(!lambdas.is_empty() && lambdas.len() <= 4, "{lambdas:?}");
}

#[test]
fn the_experiments_window_follows_classes_in_g() {
    let mut h = Harness::builder()
        .with_size([1600.0, 1000.0])
        .with_theme(egui::Theme::Light)
        .build_eframe(|cc| {
            DataleafApp::new(
                cc,
                AppOptions {
                    fresh: true,
                    top_k: Some(3),
                    ..AppOptions::default()
                },
            )
        });
    wait(&mut h, "the model and the dataset", |app| {
        app.model().is_some() && app.dataset().is_some()
    });
    // The experiments window (Ctrl+R): ood on 8 images per set (CIFAR-10 grey has its 20).
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::R);
    h.run_steps(2);
    h.get_by_label("ood").click();
    h.run_steps(2);
    h.get_by_role_and_label(egui::Role::SpinButton, "Samples")
        .set_value_accesskit(8.0);
    h.run_steps(2);
    h.get_by_label("G from the top 3 classes (Classes in G)");
    h.get_by_label("▶ Run ood").click();
    h.run_steps(2);
    wait(&mut h, "the ood experiment", |app| !app.experiment_running());
    assert_eq!(h.state().experiment_error(), None);
    let summary = h.state().experiment_summary().expect("a summary");
    let last = summary.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("G from the top 3 of 10 classes: dropped probability mass over the 52 points"),
        "{summary}"
    );
    // involutivity builds no G: it runs on all classes, and says so.
    h.get_by_label("involutivity").click();
    h.run_steps(2);
    h.get_by_label("all classes: it builds no G");
}
