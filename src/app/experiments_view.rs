//! The experiments window: the papers' batch studies (`crate::experiments`) run from the app, one
//! at a time, each on its own thread (it spreads its samples over all cores with rayon), with a
//! progress bar, a cancel button, and its figure and summary when done.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use egui::{RichText, TextureHandle, TextureOptions};

use crate::experiments::{self, ExperimentError, Outcome, Progress, NAMES};

use super::style;

/// A run in progress on its own thread.
struct Running {
    name: &'static str,
    progress: Arc<Progress>,
    thread: JoinHandle<Result<Outcome, ExperimentError>>,
}

/// The last finished run.
struct Finished {
    name: &'static str,
    summary: String,
    figure: TextureHandle,
}

pub struct ExperimentsView {
    pub open: bool,
    selected: usize,
    /// The samples field of each experiment, in `NAMES` order.
    samples: Vec<usize>,
    running: Option<Running>,
    finished: Option<Finished>,
    error: Option<String>,
}

impl Default for ExperimentsView {
    fn default() -> Self {
        ExperimentsView {
            open: false,
            selected: 0,
            samples: NAMES
                .iter()
                .map(|n| experiments::default_samples(n).unwrap_or(1))
                .collect(),
            running: None,
            finished: None,
            error: None,
        }
    }
}

impl ExperimentsView {
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// The summary of the last finished run.
    pub fn summary(&self) -> Option<&str> {
        self.finished.as_ref().map(|f| f.summary.as_str())
    }

    /// The error of the last run (a cancelled run reports "cancelled").
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Start `NAMES[selected]` on its own thread, against the model `model` (a spec as the app
    /// remembers it).
    fn start(&mut self, ctx: &egui::Context, model: &str, top_k: Option<usize>) {
        let name = NAMES[self.selected];
        let settings = experiments::Settings {
            samples: Some(self.samples[self.selected].max(1)),
            // `training` studies its own checkpoint series (the default model's is the shipped one).
            model: if experiments::uses_model(name) {
                model.to_string()
            } else {
                crate::model::DEFAULT_MODEL.to_string()
            },
            top_k: top_k.filter(|_| builds_g(name)),
            ..experiments::Settings::default()
        };
        let progress = Arc::new(Progress::new());
        let shared = progress.clone();
        let ctx = ctx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("experiment {name}"))
            .spawn(move || {
                let outcome = experiments::run(name, &settings, &shared);
                ctx.request_repaint();
                outcome
            });
        self.error = None;
        match spawned {
            Ok(thread) => {
                self.running = Some(Running {
                    name,
                    progress,
                    thread,
                })
            }
            Err(e) => self.error = Some(format!("cannot start the experiment: {e}")),
        }
    }

    /// Take in a run that has ended.
    fn poll(&mut self, ctx: &egui::Context) {
        if !self.running.as_ref().is_some_and(|r| r.thread.is_finished()) {
            return;
        }
        let Some(run) = self.running.take() else { return };
        match run.thread.join() {
            Ok(Ok(outcome)) => {
                let (w, h) = outcome.plot.dimensions();
                let image =
                    egui::ColorImage::from_rgba_unmultiplied([w as usize, h as usize], outcome.plot.as_raw());
                let figure = ctx.load_texture(
                    format!("experiment figure {}", run.name),
                    image,
                    TextureOptions::LINEAR,
                );
                self.finished = Some(Finished {
                    name: run.name,
                    summary: outcome.summary,
                    figure,
                });
            }
            Ok(Err(e)) => self.error = Some(format!("{}: {e}", run.name)),
            Err(_) => self.error = Some(format!("{}: the experiment stopped unexpectedly", run.name)),
        }
    }

    /// The window, when open. `model` is the loaded model's spec and `model_name` its name;
    /// `top_k` the app's "Classes in G" for it (`None`: exact), which the experiments follow.
    pub fn ui(&mut self, ctx: &egui::Context, model: &str, model_name: &str, top_k: Option<usize>) {
        self.poll(ctx);
        if self.running.is_some() {
            ctx.request_repaint_after(Duration::from_millis(100));
        }
        let mut open = self.open;
        egui::Window::new("Experiments")
            .open(&mut open)
            .default_size([900.0, 720.0])
            .vscroll(true)
            .show(ctx, |ui| self.contents(ui, model, model_name, top_k));
        self.open = open;
    }

    fn contents(&mut self, ui: &mut egui::Ui, model: &str, model_name: &str, top_k: Option<usize>) {
        ui.label("The papers' claims, checked on many images at once.");
        ui.add_space(4.0);
        let busy = self.running.is_some();
        egui::Grid::new("experiments list")
            .num_columns(2)
            .striped(true)
            .show(ui, |ui| {
                for (i, name) in NAMES.iter().enumerate() {
                    ui.add_enabled_ui(!busy, |ui| {
                        ui.radio_value(&mut self.selected, i, *name);
                    });
                    ui.label(experiments::claim(name).unwrap_or_default());
                    ui.end_row();
                }
            });
        ui.add_space(4.0);
        let name = NAMES[self.selected];
        ui.horizontal(|ui| {
            ui.add_enabled_ui(!busy, |ui| {
                let label = ui.label("Samples");
                ui.add(
                    egui::DragValue::new(&mut self.samples[self.selected])
                        .range(1..=100_000)
                        .speed(1.0),
                )
                .labelled_by(label.id)
                .on_hover_text("The experiment's main count: images, pairs or points");
                if ui
                    .button(RichText::new(format!("▶ Run {name}")).strong())
                    .clicked()
                {
                    self.start(ui.ctx(), model, top_k);
                }
            });
            if experiments::uses_model(name) {
                ui.weak(format!("on {model_name}"));
            } else {
                ui.weak("on the shipped LeNet training series");
            }
            if let Some(k) = top_k {
                ui.weak(if builds_g(name) {
                    format!("G from the top {k} classes (Classes in G)")
                } else {
                    "all classes: it builds no G".to_string()
                });
            }
        });
        if let Some(run) = &self.running {
            let (stage, done, total) = run.progress.snapshot();
            ui.horizontal(|ui| {
                ui.label(format!("{}: {stage}", run.name));
                if ui.button("Cancel").clicked() {
                    run.progress.cancel();
                }
            });
            ui.add(
                egui::ProgressBar::new(run.progress.fraction())
                    .text(format!("{done} / {total}"))
                    .animate(true),
            );
        }
        if let Some(e) = &self.error {
            ui.label(RichText::new(format!("⚠ {e}")).color(style::ERROR_COLOR).strong());
        }
        if let Some(f) = &self.finished {
            ui.separator();
            ui.label(RichText::new(f.name).strong());
            ui.label(RichText::new(&f.summary).monospace());
            let size = f.figure.size_vec2();
            let scale = (ui.available_width() / size.x).min(1.0);
            ui.add(
                egui::Image::new(&f.figure)
                    .fit_to_exact_size(size * scale)
                    .alt_text(format!("figure of {}", f.name)),
            );
        }
    }
}

/// Whether the experiment builds G (and so follows "Classes in G"); `involutivity` differentiates
/// every class gradient instead and refuses `--top-k`.
fn builds_g(name: &str) -> bool {
    name != "involutivity"
}
