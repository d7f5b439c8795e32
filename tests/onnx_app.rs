//! The app opens ONNX models like any other: by typed path and by drop (kittest, the real app and
//! worker). A colour model dropped over the MNIST gallery brings the CIFAR-10 samples with it, and
//! both lanes walk.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataleaf::app::{AppOptions, DataleafApp, Lane};
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;

const TIMEOUT: Duration = Duration::from_secs(180);

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/onnx")
        .join(name)
}

fn app() -> Harness<'static, DataleafApp> {
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
    wait(&mut h, "the default model", |app| {
        app.model().is_some() && app.dataset().is_some()
    });
    h
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
            "timed out waiting for {what}; errors: {:?}",
            h.state().errors()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
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

fn walks(h: &mut Harness<'static, DataleafApp>) {
    let before = h.state().history().lane(Lane::Leaf).len();
    h.get_by_label("→ Step").click();
    wait(h, "a step of both lanes", |app| {
        app.history().lane(Lane::Leaf).len() > before && app.history().lane(Lane::Kernel).len() > before
    });
}

#[test]
fn an_onnx_model_opens_by_typed_path() {
    let mut h = app();
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::L);
    h.run_steps(2);
    let field = h.get_by_label("Model");
    field.focus();
    field.type_text(fixture("resnet18-w16.onnx").to_str().expect("utf-8"));
    h.step();
    h.get_by_label("Load model").click();
    wait(&mut h, "the ONNX model and the CIFAR samples", |app| {
        app.model().is_some_and(|m| m.name == "resnet18-w16")
            && app.dataset().is_some_and(|d| d.channels == 3)
    });
    assert!(h.state().errors().is_empty(), "{:?}", h.state().errors());
    assert_eq!(h.state().model().expect("model").classes[3], "cat");
    walks(&mut h);
}

#[test]
fn an_onnx_model_opens_by_drop() {
    let mut h = app();
    h.input_mut()
        .dropped_files
        .push(Arc::new(Dropped(fixture("mobilenet_v2-w25.onnx"))));
    wait(&mut h, "the dropped ONNX model", |app| {
        app.model().is_some_and(|m| m.name == "mobilenet_v2-w25")
            && app.dataset().is_some_and(|d| d.channels == 3)
    });
    assert!(h.state().errors().is_empty(), "{:?}", h.state().errors());
    walks(&mut h);
    // A broken ONNX file leaves the model in place, with its error in the window.
    let dir = std::env::temp_dir().join(format!("dataleaf-onnx-app-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp");
    let bad = dir.join("broken.onnx");
    std::fs::write(&bad, b"\x0a\xff\xff\xff\x0f not onnx").expect("write");
    h.input_mut().dropped_files.push(Arc::new(Dropped(bad)));
    wait(&mut h, "the error", |app| !app.errors().is_empty());
    assert!(
        h.state().errors()[0].contains("broken.onnx"),
        "{:?}",
        h.state().errors()
    );
    assert_eq!(h.state().model().expect("model").name, "mobilenet_v2-w25");
    std::fs::remove_dir_all(&dir).ok();
}
