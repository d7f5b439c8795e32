//! A presenter's clicker drives the app (issue 13, item 3): Page Down / Page Up step through the
//! presets like slides and, within a walk, through its key frames; each preset's caption shows in
//! lecture mode; a Fashion-MNIST preset loads its model and dataset together; B blanks the screen
//! (F5's mapping to full screen is tested beside the commands, src/app/commands.rs). The real app and worker, headless through egui_kittest.

use std::time::{Duration, Instant};

use dataleaf::app::{AppOptions, Choice, DataleafApp, Domain, Lane, PRESETS};
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;

/// Generous: the machine may be busy compiling; nothing here needs more than a few seconds alone.
const TIMEOUT: Duration = Duration::from_secs(180);

fn wait(h: &mut Harness<'static, DataleafApp>, what: &str, done: impl Fn(&DataleafApp) -> bool) {
    let began = Instant::now();
    loop {
        h.step();
        if done(h.state()) {
            return;
        }
        assert!(
            began.elapsed() < TIMEOUT,
            "timed out waiting for {what}; errors shown: {:?}",
            h.state().errors()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn lecture_app() -> Harness<'static, DataleafApp> {
    let mut h = Harness::builder()
        .with_size([1280.0, 720.0])
        .with_theme(egui::Theme::Light)
        .build_eframe(|cc| {
            DataleafApp::new(
                cc,
                AppOptions {
                    fresh: true,
                    lecture: true,
                    ..AppOptions::default()
                },
            )
        });
    wait(&mut h, "the model and the dataset", |app| {
        app.model().is_some() && app.dataset().is_some()
    });
    h
}

fn caption_shown(h: &Harness<'static, DataleafApp>, i: usize) -> bool {
    h.query_by_label(PRESETS[i].caption).is_some()
}

/// The preset `i` is loaded: its start and target chosen, its caption on screen.
fn on_preset(h: &mut Harness<'static, DataleafApp>, i: usize) {
    let p = &PRESETS[i];
    wait(h, &format!("preset {}", i + 1), |app| {
        app.current_preset() == Some(i)
            && app.settings().start == Some(Choice::Index(p.start))
            && app.settings().target == p.target.map(Choice::Index)
            && app.history().lane(Lane::Kernel).len() > 1
    });
    h.run_steps(2);
    assert!(caption_shown(h, i), "the caption of preset {}", i + 1);
    for j in (0..PRESETS.len()).filter(|&j| j != i) {
        assert!(!caption_shown(h, j), "preset {}'s caption is still shown", j + 1);
    }
}

#[test]
fn page_down_and_page_up_step_through_presets_and_key_frames() {
    let mut h = lecture_app();
    assert_eq!(h.state().current_preset(), None);
    assert!(h.query_by_label("Page Down: the first preset").is_some());

    // Page Down: the first preset, then the second, like slides.
    h.key_press(egui::Key::PageDown);
    on_preset(&mut h, 0);
    assert!(h.state().is_playing());
    h.key_press(egui::Key::PageDown);
    on_preset(&mut h, 1);

    // Page Up within a walk: it pauses on the key frames before the newest, down to step 0.
    wait(&mut h, "a few steps", |app| app.history().len() > 20);
    h.key_press(egui::Key::PageUp);
    h.run_steps(2);
    assert!(!h.state().is_playing(), "Page Up pauses the walk");
    let len = h.state().history().len();
    let first = h.state().shown_step().expect("a key frame is shown");
    assert!(first < len - 1, "step {first} of {len}");
    let mut shown = vec![first];
    while h.state().shown_step() != Some(0) {
        h.key_press(egui::Key::PageUp);
        h.run_steps(2);
        shown.push(h.state().shown_step().unwrap());
        assert!(shown.len() <= 9, "more than nine key frames: {shown:?}");
    }
    assert!(shown.windows(2).all(|w| w[1] < w[0]), "{shown:?}");
    assert_eq!(h.state().current_preset(), Some(1), "still the same preset");
    // Page Down walks the key frames forward again (the walk is paused: its length stays).
    let keys = dataleaf::export::evenly_spaced(h.state().history().len(), 9);
    h.key_press(egui::Key::PageDown);
    h.run_steps(2);
    assert_eq!(h.state().shown_step(), Some(keys[1]), "{keys:?}");
    assert_eq!(h.state().current_preset(), Some(1));
    // From step 0, Page Up is the previous preset.
    while h.state().shown_step() != Some(0) {
        h.key_press(egui::Key::PageUp);
        h.run_steps(2);
    }
    h.key_press(egui::Key::PageUp);
    on_preset(&mut h, 0);

    // Page Down on to the first Fashion-MNIST preset: its model and dataset load together.
    let fashion = PRESETS.iter().position(|p| p.domain == Domain::Fashion).unwrap();
    while h.state().current_preset() != Some(fashion) {
        h.key_press(egui::Key::PageDown);
        h.run_steps(2);
    }
    on_preset(&mut h, fashion);
    assert_eq!(h.state().model().unwrap().name, "fashion-mnist-medium-cnn");
    assert_eq!(h.state().dataset().unwrap().name, "Fashion-MNIST test");
    assert!(h.state().errors().is_empty(), "{:?}", h.state().errors());
}

#[test]
fn b_blanks_the_screen_and_brings_it_back() {
    let mut h = lecture_app();
    h.key_press(egui::Key::B);
    h.run_steps(2);
    assert!(h.state().is_blank());
    h.key_press(egui::Key::B);
    h.run_steps(2);
    assert!(!h.state().is_blank());
}
