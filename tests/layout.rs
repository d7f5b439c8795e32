//! The app's layout at the screen sizes people have (shared/DESIGN.md "The app" and "Testing"):
//! 1024x768 and 1280x720 projectors, 1366x768 laptops, 1920x1080, and a HiDPI screen at scale 2,
//! each in the normal and the lecture view, mid-walk. At every size the start, both lanes and the
//! target with their titles and readouts, Play / Step / Reset and the scrubber, both filmstrips, and
//! the spectrum and probability plots must be on screen without scrolling, and no two texts may
//! overlap (a label cut or run into its neighbour). A snapshot of each is kept in tests/snapshots/.

use std::time::{Duration, Instant};

use dataleaf::app::{AppOptions, DataleafApp, Lane};
use egui_kittest::kittest::{by, NodeT, Queryable};
use egui_kittest::Harness;

/// Generous: the machine may be busy compiling; nothing here needs more than a few seconds alone.
const TIMEOUT: Duration = Duration::from_secs(180);

/// Steps taken before the picture: nine frames in each filmstrip.
const STEPS: usize = 8;

fn frames(app: &DataleafApp, lane: Lane) -> usize {
    app.history().lane(lane).len()
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
            "timed out waiting for {what}; errors shown: {:?}",
            h.state().errors()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The first preset (4185 -> 5874), paused after exactly `STEPS` steps: the same pixels every run.
fn mid_walk(size: [f32; 2], pixels_per_point: f32, lecture: bool) -> Harness<'static, DataleafApp> {
    let mut h = Harness::builder()
        .with_size(size)
        .with_pixels_per_point(pixels_per_point)
        .with_theme(egui::Theme::Light)
        .build_eframe(move |cc| {
            DataleafApp::new(
                cc,
                AppOptions {
                    fresh: true,
                    lecture,
                    preset: Some(0),
                    ..AppOptions::default()
                },
            )
        });
    wait(&mut h, "the preset playing", |app| {
        app.is_playing() && frames(app, Lane::Leaf) >= 1
    });
    h.key_press(egui::Key::Space);
    h.step();
    h.key_press(egui::Key::R);
    wait(&mut h, "step 0, paused", |app| {
        frames(app, Lane::Leaf) == 1 && frames(app, Lane::Kernel) == 1 && !app.is_playing()
    });
    for k in 1..=STEPS {
        h.key_press(egui::Key::ArrowRight);
        wait(&mut h, "a step", |app| {
            frames(app, Lane::Leaf) == k + 1 && frames(app, Lane::Kernel) == k + 1
        });
    }
    // Notes fade after a few seconds of the harness's clock; let them, so every run looks the same.
    h.run_steps(600);
    h
}

/// A node's text: its label, or a label widget's value.
fn text(n: &egui_kittest::kittest::AccessKitNode<'_>) -> String {
    n.label().or_else(|| n.value()).unwrap_or_default()
}

/// Two rectangles that are one element's (a label and the text run inside it).
fn same_place(a: egui::Rect, b: egui::Rect) -> bool {
    let i = a.intersect(b);
    let area = |r: egui::Rect| r.width().max(0.0) * r.height().max(0.0);
    area(i) > 0.8 * area(a).max(area(b))
}

/// Texts starting with `prefix` and their rectangles, without the pieces a label's text is made of
/// (nodes inside another node of the list).
fn starting(h: &Harness<'static, DataleafApp>, prefix: &str) -> Vec<(String, egui::Rect)> {
    let all: Vec<(String, egui::Rect)> = h
        .query_all(by().predicate(|n| text(n).starts_with(prefix)))
        .map(|n| (text(&n.accesskit_node()), n.rect()))
        .collect();
    all.iter()
        .enumerate()
        .filter(|(i, (t, r))| {
            !all.iter()
                .enumerate()
                .any(|(j, (u, o))| j < *i && (o.contains_rect(*r) || (t == u && same_place(*o, *r))))
        })
        .map(|(_, x)| x.clone())
        .collect()
}

/// The rectangle of the node labelled exactly `label` (the first, or the `nth`).
fn rects_of(h: &Harness<'static, DataleafApp>, label: &str) -> Vec<egui::Rect> {
    h.query_all_by_label(label).map(|n| n.rect()).collect()
}

/// Every element the issue names, on screen and apart; then the snapshot.
fn check(mut h: Harness<'static, DataleafApp>, name: &str) {
    // LAYOUT_DUMP=DIR saves what the harness drew before anything is checked, to look at.
    if let Some(dir) = std::env::var_os("LAYOUT_DUMP") {
        if let Ok(image) = h.render() {
            let path = std::path::Path::new(&dir).join(format!("{name}.png"));
            image.save(&path).ok();
        }
    }
    let screen = h.ctx.content_rect();
    let lecture = h.state().settings().lecture;
    let on_screen = |what: &str, r: egui::Rect| {
        assert!(
            screen.expand(0.5).contains_rect(r),
            "{name}: {what} at {r:?} is outside the window {screen:?}"
        );
    };
    let mut texts: Vec<(String, egui::Rect)> = Vec::new();
    let one = |h: &Harness<'static, DataleafApp>, label: &str, count: usize| {
        let rects = rects_of(h, label);
        assert!(
            rects.len() >= count,
            "{name}: {count} x {label:?} expected, found {}",
            rects.len()
        );
        rects
            .into_iter()
            .map(|r| {
                on_screen(label, r);
                (label.to_string(), r)
            })
            .collect::<Vec<_>>()
    };
    // The four columns' titles and the lanes' readouts.
    texts.extend(one(&h, "Start #4185", 1));
    texts.extend(one(&h, "along the data leaf", 1));
    texts.extend(one(&h, "across leaves (kernel)", 1));
    texts.extend(one(&h, "Target #5874", 1));
    texts.extend(one(&h, &format!("step {STEPS}"), 2));
    // The start's prediction and both lanes' (in lecture mode with p on the same line).
    let predicts = starting(&h, "predicts 1");
    assert!(predicts.len() >= 3, "{name}: predictions shown: {predicts:?}");
    for (t, r) in &predicts {
        on_screen(t, *r);
    }
    texts.extend(predicts);
    // The transport and the scrubber.
    texts.extend(one(&h, "▶ Play", 1));
    texts.extend(one(&h, "→ Step", 1));
    texts.extend(one(&h, "⟲ Reset", 1));
    texts.extend(one(&h, "Frames", 1));
    texts.extend(one(&h, "live", 1));
    // The filmstrips: their titles and at least three captioned frames each, step 0 first.
    texts.extend(one(&h, "data leaf", 1));
    texts.extend(one(&h, "kernel", 1));
    let captions: Vec<(String, egui::Rect)> = h
        .query_all(by().predicate(|n| {
            text(n).split_once('\n').is_some_and(|(step, rest)| {
                !step.is_empty() && !rest.is_empty() && step.chars().all(|c| c.is_ascii_digit())
            })
        }))
        .map(|n| (text(&n.accesskit_node()), n.rect()))
        .collect();
    assert!(
        captions.len() >= 6,
        "{name}: {} filmstrip captions, expected 3 or more per lane",
        captions.len()
    );
    assert!(captions.iter().any(|(c, _)| c.starts_with("0\n")));
    assert!(captions.iter().any(|(c, _)| c.starts_with(&format!("{STEPS}\n"))));
    for (c, r) in &captions {
        on_screen(c, *r);
    }
    texts.extend(captions);
    // The two main plots, whole.
    for plot in ["spectrum plot", "probabilities chart"] {
        let r = rects_of(&h, plot);
        assert_eq!(r.len(), 1, "{name}: {plot}");
        on_screen(plot, r[0]);
        assert!(
            r[0].height() >= 80.0 && r[0].width() >= 180.0,
            "{name}: {plot} is only {:?}",
            r[0].size()
        );
    }
    // In lecture mode the preset's caption is on screen.
    if lecture {
        let caption = dataleaf::app::PRESETS[0].caption;
        texts.extend(one(&h, caption, 1));
    }
    // No two texts overlap: nothing is cut by, or runs into, its neighbour.
    for (i, (a, ra)) in texts.iter().enumerate() {
        for (b, rb) in &texts[i + 1..] {
            let overlap = ra.intersect(*rb);
            if a == b && same_place(*ra, *rb) {
                continue;
            }
            assert!(
                !(overlap.width() > 1.0 && overlap.height() > 1.0),
                "{name}: {a:?} at {ra:?} overlaps {b:?} at {rb:?}"
            );
        }
    }
    // The status line's timings differ from run to run.
    let rects: Vec<egui::Rect> = h
        .query_all_by_label_contains("UI frame")
        .map(|n| n.rect())
        .collect();
    for rect in rects {
        h.mask(rect.expand(4.0));
    }
    // Rendering needs a GPU or Mesa's software renderer (.ci/run installs mesa-vulkan-drivers).
    if let Err(e) = h.render() {
        eprintln!("note: no renderer, snapshot skipped: {e}");
        return;
    }
    h.snapshot(name);
}

#[test]
fn projector_1024x768() {
    check(mid_walk([1024.0, 768.0], 1.0, false), "layout_1024x768");
}

#[test]
fn projector_1024x768_lecture() {
    check(mid_walk([1024.0, 768.0], 1.0, true), "layout_1024x768_lecture");
}

#[test]
fn projector_1280x720() {
    check(mid_walk([1280.0, 720.0], 1.0, false), "layout_1280x720");
}

#[test]
fn projector_1280x720_lecture() {
    check(mid_walk([1280.0, 720.0], 1.0, true), "layout_1280x720_lecture");
}

#[test]
fn laptop_1366x768() {
    check(mid_walk([1366.0, 768.0], 1.0, false), "layout_1366x768");
}

#[test]
fn laptop_1366x768_lecture() {
    check(mid_walk([1366.0, 768.0], 1.0, true), "layout_1366x768_lecture");
}

#[test]
fn full_hd_1920x1080() {
    check(mid_walk([1920.0, 1080.0], 1.0, false), "layout_1920x1080");
}

#[test]
fn full_hd_1920x1080_lecture() {
    check(mid_walk([1920.0, 1080.0], 1.0, true), "layout_1920x1080_lecture");
}

/// A 2560x1440 screen at scale 2: 1280x720 points, every pixel doubled.
#[test]
fn hidpi_scale_2() {
    check(mid_walk([1280.0, 720.0], 2.0, false), "layout_hidpi_2x");
}

#[test]
fn hidpi_scale_2_lecture() {
    check(mid_walk([1280.0, 720.0], 2.0, true), "layout_hidpi_2x_lecture");
}
