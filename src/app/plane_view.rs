//! The plane view: a two-feature classifier trained live on a toy dataset, with its whole
//! foliation on one canvas — the output as a heat map, short segments of the data leaves and of the
//! kernel leaves, the singular points, the training data, and through a clicked point the leaf and
//! kernel leaf (RK4), the equivalence class (SiMEC), a SiMExp path and the preimage of [a, b].
//! Everything drawn comes from the plane worker; this file only maps it to pixels.

use std::sync::Arc;

use egui::{Color32, ColorImage, Pos2, Rect, RichText, Sense, Shape, Stroke, TextureHandle, TextureOptions};

use crate::data::toy::ToyKind;
use crate::geometry::plane::{Bounds, HeatOutput, Singular};
use crate::model::mlp::Act;
use crate::model::Task;

use super::plane_worker::{PlaneFrame, PlaneHandle, PlaneReply, PlaneRequest, PlaneSetup, PlaneWalks};
use super::style;

/// Heat-map ends: class 0 (p = 0) lilac, p = 1/2 white, class 1 pale green.
const HEAT_LOW: [f32; 3] = [196.0, 176.0, 232.0];
const HEAT_HIGH: [f32; 3] = [170.0, 222.0, 170.0];
const CLASS_COLORS: [Color32; 2] = [Color32::from_rgb(105, 55, 160), Color32::from_rgb(25, 120, 55)];
const CLASS_CURVE_COLOR: Color32 = Color32::from_rgb(20, 20, 20);
const SIMEXP_COLOR: Color32 = Color32::from_rgb(200, 20, 60);
const PREIMAGE_COLOR: Color32 = Color32::from_rgba_premultiplied(120, 100, 0, 110);

/// Which layers are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layers {
    pub heat: bool,
    pub leaves: bool,
    pub kernels: bool,
    pub singular: bool,
    pub data: bool,
    pub leaf_curve: bool,
    pub kernel_curve: bool,
    pub class_curve: bool,
    pub simexp: bool,
}

impl Default for Layers {
    fn default() -> Self {
        Layers {
            heat: true,
            leaves: true,
            kernels: true,
            singular: true,
            data: true,
            leaf_curve: true,
            kernel_curve: true,
            class_curve: true,
            simexp: true,
        }
    }
}

/// A run scripted from the command line or a test: train this many steps, then click here.
#[derive(Debug, Clone, Copy, Default)]
pub struct Script {
    pub train_steps: usize,
    pub click: Option<[f64; 2]>,
    /// Sweep the preimage of this interval of outputs.
    pub interval: Option<(f64, f64)>,
}

pub struct PlaneView {
    handle: Option<PlaneHandle>,
    setup: PlaneSetup,
    walks: PlaneWalks,
    lr: f64,
    interval_on: bool,
    interval: (f64, f64),
    pub layers: Layers,
    frame: Option<Arc<PlaneFrame>>,
    texture: Option<TextureHandle>,
    /// The frame the texture shows (by address), so it is uploaded once per frame.
    texture_of: usize,
    model_path: String,
    note: Option<String>,
    error: Option<String>,
    script: Option<Script>,
    /// Training was asked for and its frames have not all come back.
    playing: bool,
    /// A model to open as soon as the worker starts.
    pending_load: bool,
}

impl Default for PlaneView {
    fn default() -> Self {
        PlaneView {
            handle: None,
            setup: PlaneSetup::default(),
            walks: PlaneWalks::default(),
            lr: 0.01,
            interval_on: false,
            interval: (0.3, 0.7),
            layers: Layers::default(),
            frame: None,
            texture: None,
            texture_of: 0,
            model_path: "plane-model.json".into(),
            note: None,
            error: None,
            script: None,
            playing: false,
            pending_load: false,
        }
    }
}

impl PlaneView {
    /// Train `train_steps` and click a point once the worker runs.
    pub fn script(&mut self, script: Script) {
        if let Some(i) = script.interval {
            self.interval = i;
            self.interval_on = true;
            self.walks.interval = Some(i);
        }
        self.script = Some(script);
    }

    /// Open this features model file once the worker runs.
    pub fn open_model(&mut self, path: &str) {
        self.model_path = path.to_string();
        self.send(PlaneRequest::Load(path.to_string()));
    }

    pub fn frame(&self) -> Option<&PlaneFrame> {
        self.frame.as_deref()
    }

    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    fn send(&mut self, r: PlaneRequest) {
        if let Some(h) = &self.handle {
            h.send(r);
        } else if let PlaneRequest::Load(p) = r {
            // Before the worker starts: remembered, sent with the start.
            self.model_path = p;
            self.pending_load = true;
        }
    }

    fn start(&mut self, ctx: &egui::Context) {
        if self.handle.is_some() {
            return;
        }
        let h = PlaneHandle::spawn(ctx.clone(), self.setup.clone(), self.walks, self.lr);
        if std::mem::take(&mut self.pending_load) {
            h.send(PlaneRequest::Load(self.model_path.clone()));
        }
        if let Some(s) = self.script {
            if s.train_steps > 0 {
                h.send(PlaneRequest::Train(s.train_steps));
                self.playing = true;
            }
            h.send(PlaneRequest::Click(s.click));
        }
        self.handle = Some(h);
    }

    /// Whether the scripted run is done: its training finished and its curves drawn.
    pub fn script_done(&self) -> bool {
        let Some(s) = self.script else { return true };
        self.frame.as_ref().is_some_and(|f| {
            f.steps >= s.train_steps && !f.playing && (s.click.is_none() || f.curves.is_some())
        })
    }

    fn receive(&mut self) {
        let Some(h) = &self.handle else { return };
        while let Some(r) = h.try_recv() {
            match r {
                PlaneReply::Frame(f) => {
                    self.playing = f.playing;
                    self.frame = Some(f);
                }
                PlaneReply::Note(n) => {
                    self.note = Some(n);
                    self.error = None;
                }
                PlaneReply::Error(e) => {
                    eprintln!("dataleaf: {e}");
                    self.error = Some(e);
                }
            }
        }
    }

    pub fn ui(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        self.start(&ctx);
        self.receive();
        egui::Panel::left("plane controls")
            .resizable(true)
            .default_size(330.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical()
                    .id_salt("plane controls scroll")
                    .show(ui, |ui| self.controls(ui));
            });
        egui::Panel::right("plane notes")
            .resizable(true)
            .default_size(280.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical()
                    .id_salt("plane notes scroll")
                    .show(ui, notes);
            });
        egui::CentralPanel::default().show(ui, |ui| self.canvas(ui));
    }

    fn controls(&mut self, ui: &mut egui::Ui) {
        ui.heading("The plane");
        ui.label("A two-feature classifier, trained live. Every object of the theory fits on the screen.");
        ui.add_space(4.0);
        let mut setup = self.setup.clone();
        ui.label(RichText::new("Data").strong());
        egui::ComboBox::from_label("Dataset")
            .selected_text(setup.dataset.name())
            .show_ui(ui, |ui| {
                for k in ToyKind::ALL {
                    ui.selectable_value(&mut setup.dataset, k, k.name());
                }
            });
        ui.add(egui::Slider::new(&mut setup.noise, 0.0..=0.5).text("Noise"));
        ui.add(egui::Slider::new(&mut setup.count, 20..=1000).text("Points"));
        ui.add(egui::Slider::new(&mut setup.seed, 0..=99).text("Seed"));
        ui.label(RichText::new("Network").strong());
        let loaded = self.frame.as_ref().and_then(|f| f.loaded.clone());
        if let Some(path) = &loaded {
            // The loaded model stays: new data is what it would train on; the network's shape is its own.
            ui.label(
                RichText::new(format!(
                    "Showing the model loaded from {path}. New data keeps it; the controls below make a fresh network."
                ))
                .small(),
            );
            if ui
                .button("Fresh network")
                .on_hover_text("Drop the loaded model and train a new network of this shape")
                .clicked()
            {
                self.send(PlaneRequest::Fresh);
            }
        }
        ui.add_enabled_ui(loaded.is_none(), |ui| {
            ui.add(egui::Slider::new(&mut setup.depth, 1..=4).text("Hidden layers"));
            ui.add(egui::Slider::new(&mut setup.width, 1..=32).text("Width"));
            egui::ComboBox::from_label("Activation")
                .selected_text(setup.act.name())
                .show_ui(ui, |ui| {
                    for (a, name) in Act::CHOICES {
                        ui.selectable_value(&mut setup.act, a, name);
                    }
                });
        });
        if setup != self.setup {
            // A new dataset or network starts training over, as in TensorFlow Playground; a
            // loaded model keeps its weights and takes the new data.
            self.setup = setup.clone();
            self.send(PlaneRequest::Setup(setup));
        }
        if let Some(f) = self.frame.clone() {
            if f.task == Task::Classification && f.outputs >= 2 {
                let text = |s: HeatOutput| match s {
                    HeatOutput::Argmax => "the most probable class".to_string(),
                    HeatOutput::Output(k) => format!(
                        "p(class {})",
                        f.output_names.get(k).cloned().unwrap_or_else(|| k.to_string())
                    ),
                };
                let mut shown = f.shown;
                egui::ComboBox::from_label("Heat map")
                    .selected_text(text(shown))
                    .show_ui(ui, |ui| {
                        if f.outputs > 2 {
                            ui.selectable_value(&mut shown, HeatOutput::Argmax, text(HeatOutput::Argmax));
                        }
                        for k in 0..f.outputs {
                            ui.selectable_value(
                                &mut shown,
                                HeatOutput::Output(k),
                                text(HeatOutput::Output(k)),
                            );
                        }
                    })
                    .response
                    .on_hover_text("Which class's probability the heat map shows, or every class at once");
                if shown != f.shown {
                    self.send(PlaneRequest::Show(shown));
                }
            }
        }
        let mut lr = self.lr;
        ui.add(
            egui::Slider::new(&mut lr, 1e-4..=0.3)
                .logarithmic(true)
                .text("Learning rate"),
        );
        if lr != self.lr {
            self.lr = lr;
            self.send(PlaneRequest::LearningRate(lr));
        }
        ui.horizontal(|ui| {
            let label = if self.playing { "❚❚ Pause" } else { "▶ Train" };
            if ui
                .button(label)
                .on_hover_text("Adam on minibatches of 32")
                .clicked()
            {
                self.playing = !self.playing;
                let on = self.playing;
                self.send(PlaneRequest::Play(on));
            }
            if ui.button("+100 steps").clicked() {
                self.playing = true;
                self.send(PlaneRequest::Train(100));
            }
            let loaded = self.frame.as_ref().and_then(|f| f.loaded.clone());
            let tip = if loaded.is_some() {
                "The loaded model as it is in its file; training stops"
            } else {
                "Fresh weights, same data; training stops"
            };
            if ui.button("Reset").on_hover_text(tip).clicked() {
                self.playing = false;
                self.send(PlaneRequest::Play(false));
                match loaded {
                    Some(path) => self.send(PlaneRequest::Load(path)),
                    None => {
                        let s = self.setup.clone();
                        self.send(PlaneRequest::Setup(s));
                    }
                }
            }
        });
        if let Some(f) = &self.frame {
            // The frame's cost on hover only: a number that differs run to run stays out of pictures.
            ui.label(format!("{} · {} steps", f.model_name, f.steps))
                .on_hover_text(format!(
                    "The worker computed this frame (heat map, segments, curves) in {:.0} ms{}",
                    f.compute_ms,
                    if f.coarse { ", coarsely while training" } else { "" }
                ));
            if f.task == Task::Classification && !f.data.points.is_empty() {
                ui.label(format!(
                    "loss {:.4} · training accuracy {:.1} %",
                    f.loss,
                    100.0 * f.accuracy
                ));
            }
            if !f.piecewise_linear {
                ui.label(
                    RichText::new("Smooth activations: the foliation results assume ReLU; G is still exact.")
                        .color(style::NOTICE_COLOR)
                        .small(),
                );
            }
        }
        ui.separator();
        ui.label(RichText::new("Layers").strong());
        let l = &mut self.layers;
        let swatch = |ui: &mut egui::Ui, on: &mut bool, color: Color32, text: &str, tip: &str| {
            ui.horizontal(|ui| {
                let (r, _) = ui.allocate_exact_size(egui::vec2(14.0, 14.0), Sense::hover());
                ui.painter().rect_filled(r.shrink(2.0), 2.0, color);
                ui.checkbox(on, text).on_hover_text(tip);
            });
        };
        swatch(
            ui,
            &mut l.heat,
            Color32::from_rgb(200, 200, 210),
            "Output heat map",
            "The probability of class 1 (or the regression output)",
        );
        swatch(
            ui,
            &mut l.leaves,
            style::LEAF_COLOR,
            "Data leaves (segments)",
            "D_x = (ker G)⊥: the direction of the top eigenvector of G",
        );
        swatch(
            ui,
            &mut l.kernels,
            style::KERNEL_COLOR,
            "Kernel leaves (segments)",
            "ker G: the level sets of p, the equivalence classes",
        );
        swatch(
            ui,
            &mut l.singular,
            Color32::BLACK,
            "Singular points",
            "Where G's rank drops: ○ extremum, ✕ saddle, ▪ G = 0",
        );
        swatch(
            ui,
            &mut l.data,
            CLASS_COLORS[1],
            "Training data",
            "The toy dataset",
        );
        ui.label(RichText::new("Through the clicked point").strong());
        swatch(
            ui,
            &mut l.leaf_curve,
            style::LEAF_COLOR,
            "Data leaf (RK4)",
            "Integral curve of the top eigenvector, both ways",
        );
        swatch(
            ui,
            &mut l.kernel_curve,
            style::KERNEL_COLOR,
            "Kernel leaf (RK4)",
            "Integral curve of the bottom eigenvector: a level set of p",
        );
        swatch(
            ui,
            &mut l.class_curve,
            CLASS_CURVE_COLOR,
            "Equivalence class (SiMEC)",
            "Euler steps along ker G: the output stays constant to O(delta)",
        );
        swatch(
            ui,
            &mut l.simexp,
            SIMEXP_COLOR,
            "SiMExp path",
            "Along the data leaf until the output has changed by the threshold",
        );
        let mut walks = self.walks;
        ui.add(
            egui::Slider::new(&mut walks.step, 0.002..=0.05)
                .logarithmic(true)
                .text("Step δ"),
        );
        ui.add(egui::Slider::new(&mut walks.threshold, 0.01..=0.9).text("SiMExp threshold"));
        ui.add(egui::Slider::new(&mut walks.half, 0.5..=6.0).text("Plane half-width"));
        ui.horizontal(|ui| {
            ui.checkbox(&mut self.interval_on, "Preimage of [a, b]");
            ui.add(
                egui::DragValue::new(&mut self.interval.0)
                    .speed(0.01)
                    .prefix("a "),
            );
            ui.add(
                egui::DragValue::new(&mut self.interval.1)
                    .speed(0.01)
                    .prefix("b "),
            );
        })
        .response
        .on_hover_text("Swept from the clicked point by alternating SiMExp and SiMEC slices");
        walks.interval = self.interval_on.then_some(self.interval);
        if walks != self.walks {
            self.walks = walks;
            self.send(PlaneRequest::Walks(walks));
        }
        ui.weak("Click the plane to draw the curves through a point; right-click clears them.");
        ui.separator();
        ui.label(RichText::new("Model file").strong());
        ui.horizontal(|ui| {
            let label = ui.label("Path");
            ui.add(egui::TextEdit::singleline(&mut self.model_path).desired_width(220.0))
                .labelled_by(label.id)
                .on_hover_text("A features model (.json, 2 inputs); its .safetensors beside it");
        });
        ui.horizontal(|ui| {
            if ui.button("Load model").clicked() {
                let p = self.model_path.clone();
                self.send(PlaneRequest::Load(p));
            }
            if ui
                .button("Save model")
                .on_hover_text("JSON + safetensors, readable by dataleaf simec")
                .clicked()
            {
                let p = self.model_path.clone();
                self.send(PlaneRequest::Save(p));
            }
        });
        if let Some(e) = &self.error {
            ui.label(RichText::new(format!("⚠ {e}")).color(style::ERROR_COLOR).strong());
        } else if let Some(n) = &self.note {
            ui.label(n);
        }
        if self.handle.as_ref().is_some_and(|h| !h.is_alive()) {
            ui.label(RichText::new("the plane worker stopped").color(style::ERROR_COLOR));
        }
    }

    fn canvas(&mut self, ui: &mut egui::Ui) {
        let Some(frame) = self.frame.clone() else {
            ui.centered_and_justified(|ui| ui.spinner());
            return;
        };
        let side = ui.available_width().min(ui.available_height() - 28.0).max(100.0);
        let (response, painter) = ui.allocate_painter(egui::vec2(side, side), Sense::click());
        response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Canvas, true, "plane canvas"));
        let rect = response.rect;
        let b = frame.heat.bounds;
        let to_screen = move |p: [f64; 2]| -> Pos2 {
            Pos2::new(
                rect.left() + ((p[0] - b.min[0]) / b.width()) as f32 * rect.width(),
                rect.bottom() - ((p[1] - b.min[1]) / b.height()) as f32 * rect.height(),
            )
        };
        let to_plane = move |s: Pos2| -> [f64; 2] {
            [
                b.min[0] + ((s.x - rect.left()) / rect.width()) as f64 * b.width(),
                b.min[1] + ((rect.bottom() - s.y) / rect.height()) as f64 * b.height(),
            ]
        };
        painter.rect_filled(rect, 0.0, Color32::WHITE);
        if self.layers.heat {
            let tex = self.heat_texture(ui.ctx(), &frame);
            painter.image(
                tex.id(),
                rect,
                Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0)),
                Color32::WHITE,
            );
        }
        let clip = painter.with_clip_rect(rect);
        if let Some(c) = &frame.curves {
            if let Some(pre) = &c.preimage {
                let mut mesh = egui::Mesh::default();
                for q in &pre.strips {
                    let base = mesh.vertices.len() as u32;
                    for p in q {
                        mesh.colored_vertex(to_screen(*p), PREIMAGE_COLOR);
                    }
                    mesh.add_triangle(base, base + 1, base + 2);
                    mesh.add_triangle(base, base + 2, base + 3);
                }
                clip.add(Shape::mesh(mesh));
            }
        }
        let a = &frame.arrows;
        let cell = (b.width() / a.nx as f64) * 0.36;
        for j in 0..a.ny {
            for i in 0..a.nx {
                let k = j * a.nx + i;
                let c = b.cell_centre(i, j, a.nx, a.ny);
                for (on, dir, color) in [
                    (self.layers.leaves, a.leaf[k], style::LEAF_COLOR),
                    (self.layers.kernels, a.kernel[k], style::KERNEL_COLOR),
                ] {
                    if on && (dir[0] != 0.0 || dir[1] != 0.0) {
                        let p0 = [c[0] - cell * dir[0], c[1] - cell * dir[1]];
                        let p1 = [c[0] + cell * dir[0], c[1] + cell * dir[1]];
                        clip.line_segment(
                            [to_screen(p0), to_screen(p1)],
                            Stroke::new(1.4, color.gamma_multiply(0.8)),
                        );
                    }
                }
            }
        }
        if self.layers.singular {
            for (p, kind) in &frame.arrows.singular {
                let s = to_screen(*p);
                match kind {
                    Singular::Extremum => {
                        clip.circle_stroke(s, 6.0, Stroke::new(2.0, Color32::BLACK));
                    }
                    Singular::Saddle => {
                        let d = 5.0;
                        let st = Stroke::new(2.0, Color32::BLACK);
                        clip.line_segment([s + egui::vec2(-d, -d), s + egui::vec2(d, d)], st);
                        clip.line_segment([s + egui::vec2(-d, d), s + egui::vec2(d, -d)], st);
                    }
                    Singular::Flat => {
                        clip.rect_filled(
                            Rect::from_center_size(s, egui::vec2(4.0, 4.0)),
                            0.0,
                            Color32::from_gray(90),
                        );
                    }
                }
            }
        }
        if self.layers.data {
            for (p, &l) in frame.data.points.iter().zip(&frame.data.labels) {
                let color = CLASS_COLORS[l.min(1)];
                clip.circle(to_screen(*p), 3.6, color, Stroke::new(1.0, Color32::WHITE));
            }
        }
        if let Some(c) = &frame.curves {
            let line = |pts: &[[f64; 2]]| pts.iter().map(|p| to_screen(*p)).collect::<Vec<Pos2>>();
            if self.layers.leaf_curve {
                clip.add(Shape::line(
                    line(&c.leaf.points),
                    Stroke::new(3.0, style::LEAF_COLOR),
                ));
            }
            if self.layers.kernel_curve {
                clip.add(Shape::line(
                    line(&c.kernel.points),
                    Stroke::new(3.0, style::KERNEL_COLOR),
                ));
            }
            if self.layers.class_curve {
                clip.extend(Shape::dashed_line(
                    &line(&c.class.points),
                    Stroke::new(2.0, CLASS_CURVE_COLOR),
                    7.0,
                    5.0,
                ));
            }
            if self.layers.simexp && c.simexp.len() > 1 {
                let pts = line(&c.simexp);
                clip.add(Shape::line(pts.clone(), Stroke::new(2.5, SIMEXP_COLOR)));
                if let Some(end) = pts.last() {
                    clip.circle_filled(*end, 4.5, SIMEXP_COLOR);
                }
            }
            clip.circle(
                to_screen(c.at),
                5.0,
                Color32::WHITE,
                Stroke::new(2.0, Color32::BLACK),
            );
        }
        if response.clicked() {
            if let Some(pos) = response.interact_pointer_pos() {
                self.send(PlaneRequest::Click(Some(to_plane(pos))));
            }
        }
        if response.secondary_clicked() {
            self.send(PlaneRequest::Click(None));
        }
        // The caption: what the heat map shows, the value under the pointer (from the sampled grid).
        let mut caption = format!(
            "{}: heat map  ·  plane [{:.1}, {:.1}]²",
            frame.output_name, b.min[0], b.max[0]
        );
        if let Some(pos) = response.hover_pos() {
            let p = to_plane(pos);
            if let Some(v) = grid_value(&frame.heat.values, b, frame.heat.nx, frame.heat.ny, p) {
                caption.push_str(&format!(
                    "  ·  at ({:.2}, {:.2}): {} ≈ {v:.3}",
                    p[0], p[1], frame.output_name
                ));
            }
        }
        if let Some(c) = &frame.curves {
            let shown: Vec<String> = c.outputs.iter().map(|v| format!("{v:.3}")).collect();
            caption.push_str(&format!(
                "  ·  clicked ({:.2}, {:.2}): outputs [{}]",
                c.at[0],
                c.at[1],
                shown.join(", ")
            ));
            if c.leaf.points.is_empty() {
                caption.push_str(" (a singular point: no leaf)");
            }
        }
        ui.label(caption);
    }

    fn heat_texture(&mut self, ctx: &egui::Context, frame: &Arc<PlaneFrame>) -> TextureHandle {
        let id = Arc::as_ptr(frame) as usize;
        if let Some(t) = &self.texture {
            if self.texture_of == id {
                return t.clone();
            }
        }
        let h = &frame.heat;
        if !h.classes.is_empty() {
            // Every class at once: its hue, paler where the model hesitates (p near 1/C).
            let floor = 1.0 / frame.outputs.max(1) as f64;
            let mut pixels = Vec::with_capacity(h.nx * h.ny);
            for row in 0..h.ny {
                let j = h.ny - 1 - row;
                for i in 0..h.nx {
                    let k = j * h.nx + i;
                    let t = ((h.values[k] - floor) / (1.0 - floor)).clamp(0.0, 1.0) as f32;
                    pixels.push(class_heat_color(h.classes[k], t));
                }
            }
            let image = ColorImage::new([h.nx, h.ny], pixels);
            let tex = ctx.load_texture("plane heat map", image, TextureOptions::NEAREST);
            self.texture = Some(tex.clone());
            self.texture_of = id;
            return tex;
        }
        let (lo, hi) = match frame.task {
            // Probabilities on their own scale, so 1/2 is white everywhere.
            Task::Classification => (0.0, 1.0),
            Task::Regression => h
                .values
                .iter()
                .filter(|v| v.is_finite())
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                    (a.min(v), b.max(v))
                }),
        };
        let span = if hi > lo { hi - lo } else { 1.0 };
        let mut pixels = Vec::with_capacity(h.nx * h.ny);
        for row in 0..h.ny {
            // Image rows run down, the plane's y up.
            let j = h.ny - 1 - row;
            for i in 0..h.nx {
                let v = h.values[j * h.nx + i];
                pixels.push(heat_color(((v - lo) / span) as f32));
            }
        }
        let image = ColorImage::new([h.nx, h.ny], pixels);
        let tex = ctx.load_texture("plane heat map", image, TextureOptions::LINEAR);
        self.texture = Some(tex.clone());
        self.texture_of = id;
        tex
    }
}

/// What the canvas shows, in the papers' terms.
fn notes(ui: &mut egui::Ui) {
    ui.heading("What you see");
    let item = |ui: &mut egui::Ui, color: Color32, title: &str, text: &str| {
        ui.horizontal_wrapped(|ui| {
            ui.label(RichText::new("■").color(color));
            ui.label(RichText::new(title).strong());
        });
        ui.label(text);
        ui.add_space(4.0);
    };
    item(
        ui,
        Color32::from_rgb(200, 200, 210),
        "The output",
        "p(class 1), white where the model hesitates (p = 1/2). For a regression model, its output.",
    );
    item(
        ui,
        style::LEAF_COLOR,
        "Data leaves",
        "G(x) = Jᵀ (diag p − p pᵀ) J has rank 1 here; its top eigenvector spans D_x = span{∇ log p_i}. \
         Its integral curves run along ∇p, across the decision boundary.",
    );
    item(
        ui,
        style::KERNEL_COLOR,
        "Kernel leaves",
        "ker G, at right angles to the data leaves: moving along it leaves p unchanged to first order. \
         Its integral curves are the level sets of p, the equivalence classes of Benfenati and Marta.",
    );
    item(
        ui,
        CLASS_CURVE_COLOR,
        "SiMEC (dashed)",
        "x ← x + δ v with v the eigenvector of G's smallest eigenvalue, its sign kept continuous: \
         the class curve, constant output to O(δ).",
    );
    item(
        ui,
        SIMEXP_COLOR,
        "SiMExp",
        "The same step along the top eigenvector: it leaves the class, until the output has changed by the threshold.",
    );
    item(
        ui,
        PREIMAGE_COLOR,
        "Preimage of [a, b]",
        "Swept by alternating SiMExp (to the next level) and SiMEC (round the level): every input whose output lies in [a, b].",
    );
    item(
        ui,
        Color32::BLACK,
        "Singular points",
        "Where G's rank drops: ○ an extremum of the output, ✕ a saddle, ▪ G = 0 (dead ReLUs, or a saturated softmax).",
    );
    ui.weak("The CLI walks a saved model the same way: dataleaf simec --model M.json --start X,Y --json");
}

/// t in [0, 1]: lilac, white at 1/2, green; NaN grey.
fn heat_color(t: f32) -> Color32 {
    if !t.is_finite() {
        return Color32::from_gray(160);
    }
    let t = t.clamp(0.0, 1.0);
    let (end, u) = if t < 0.5 {
        (HEAT_LOW, 1.0 - 2.0 * t)
    } else {
        (HEAT_HIGH, 2.0 * t - 1.0)
    };
    let mix = |k: usize| (255.0 + (end[k] - 255.0) * u).round() as u8;
    Color32::from_rgb(mix(0), mix(1), mix(2))
}

/// Pale class hues for the argmax map (Okabe-Ito), mixed toward white as t falls to 0.
fn class_heat_color(class: usize, t: f32) -> Color32 {
    const HUES: [[f32; 3]; 8] = [
        [196.0, 176.0, 232.0],
        [170.0, 222.0, 170.0],
        [250.0, 200.0, 140.0],
        [160.0, 210.0, 240.0],
        [240.0, 170.0, 200.0],
        [240.0, 230.0, 140.0],
        [180.0, 180.0, 180.0],
        [150.0, 220.0, 210.0],
    ];
    let end = HUES[class % HUES.len()];
    let u = 0.35 + 0.65 * t.clamp(0.0, 1.0);
    let mix = |k: usize| (255.0 + (end[k] - 255.0) * u).round() as u8;
    Color32::from_rgb(mix(0), mix(1), mix(2))
}

/// The sampled value of the cell holding p.
fn grid_value(values: &[f64], b: Bounds, nx: usize, ny: usize, p: [f64; 2]) -> Option<f64> {
    if !b.contains(&p) {
        return None;
    }
    let i = (((p[0] - b.min[0]) / b.width()) * nx as f64).floor() as usize;
    let j = (((p[1] - b.min[1]) / b.height()) * ny as f64).floor() as usize;
    values.get(j.min(ny - 1) * nx + i.min(nx - 1)).copied()
}
