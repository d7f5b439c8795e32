//! The app's "Classes in G" control (issue 15, Scale): choosing the top K in the walk settings makes
//! the lanes walk on G from the K most probable classes, and the spectrum's caption says so.

use std::time::{Duration, Instant};

use dataleaf::app::{AppOptions, ClassesInG, DataleafApp, Lane};
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;

const TIMEOUT: Duration = Duration::from_secs(180);

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

#[test]
fn top_k_in_the_settings_walks_on_k_classes() {
    let mut h = Harness::builder()
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
    wait(&mut h, "the first frames", |app| {
        !app.history().lane(Lane::Kernel).is_empty()
    });
    // MNIST has 10 classes: auto is exact there.
    assert_eq!(h.state().settings().params.classes_in_g, ClassesInG::Auto);
    assert_eq!(h.state().history().lane(Lane::Kernel)[0].eigenvalues.len(), 10);

    // W shows the walk settings when they are folded behind their toggle.
    h.key_press(egui::Key::W);
    h.run_steps(3);
    h.get_by_label("top").click();
    h.run_steps(2);
    assert_eq!(h.state().settings().params.classes_in_g, ClassesInG::Top(10));
    h.get_by_label("Classes in G").set_value_accesskit(3.0);
    h.run_steps(2);
    assert_eq!(h.state().settings().params.classes_in_g, ClassesInG::Top(3));
    wait(&mut h, "frames from G over the top 3 classes", |app| {
        app.history()
            .lane(Lane::Kernel)
            .iter()
            .any(|f| f.eigenvalues.len() == 3)
    });
    h.run_steps(2);
    // The spectrum's caption names K and the dropped mass (the query fails when it is not there).
    h.get_by_label_contains("top 3 classes, dropped p");
}
