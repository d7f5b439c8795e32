//! The centre: start | the two lanes | target, the transport controls, the scrubber and the walk
//! settings.

use egui::{Color32, RichText, Sense, Stroke, Vec2};

use super::commands::Command;
use super::gallery::{START_COLOR, TARGET_COLOR};
use super::history::History;
use super::state::{KernelDirection, Settings};
use super::style::{self, ImageSlot, Shape};
use super::worker::{Frame, Lane};
use super::Action;

pub struct WalkView {
    start: ImageSlot,
    target: ImageSlot,
    lanes: [ImageSlot; 2],
    /// The filmstrips: nine evenly spaced frames per lane, as the papers show walks.
    strips: [Vec<ImageSlot>; 2],
    /// The secondary settings' window is open (when they are not shown inline).
    pub settings_open: bool,
}

/// Frames per filmstrip.
pub const STRIP: usize = 9;

impl Default for WalkView {
    fn default() -> Self {
        let strip = |name: &str| {
            (0..STRIP)
                .map(|k| ImageSlot::new(&format!("{name} {k}")))
                .collect()
        };
        WalkView {
            start: ImageSlot::new("start"),
            target: ImageSlot::new("target"),
            lanes: [ImageSlot::new("leaf lane"), ImageSlot::new("kernel lane")],
            strips: [strip("leaf strip"), strip("kernel strip")],
            settings_open: false,
        }
    }
}

/// What the centre shows besides the settings.
pub struct Shown<'a> {
    pub history: &'a History,
    /// The scrubbed step, None = the latest.
    pub at: Option<usize>,
    pub shape: Option<Shape>,
    pub classes: &'a [String],
    pub playing: bool,
    /// Dataset labels of the start and target, when they come from the dataset.
    pub start_label: Option<String>,
    pub target_label: Option<String>,
    /// The parameters changed since the walks began.
    pub stale: bool,
    /// Lecture mode: the secondary settings live behind their toggle.
    pub lecture: bool,
    /// Each lane's recent steps per second, indexed by `Lane as usize`.
    pub steps_per_second: [Option<f32>; 2],
}

/// The largest readout type (points, before lecture mode's zoom).
const BIG: f32 = 22.0;

/// The height of `text` in `font` wrapped at `width`.
fn text_size(ui: &egui::Ui, text: &str, font: &egui::FontId, width: f32) -> Vec2 {
    ui.ctx().fonts_mut(|f| {
        f.layout(text.to_string(), font.clone(), Color32::BLACK, width)
            .size()
    })
}

/// The font size (at most `size`) at which `text` fits on one line of `width`.
fn fitting(ui: &egui::Ui, text: &str, size: f32, width: f32) -> f32 {
    let w = text_size(ui, text, &egui::FontId::proportional(size), f32::INFINITY).x;
    if w <= width {
        size
    } else {
        (size * width / w).floor().max(8.0)
    }
}

/// Sizes chosen for the space the centre has: the columns from the width, the images from what
/// the height leaves, every readout on one line in type fitted to its column (so nothing wraps or
/// is cut), the filmstrips' frames, and whether the walk settings fit or go behind their toggle.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Width of each of the four columns.
    column: f32,
    /// The images' side (at most the column width).
    side: f32,
    gap: f32,
    title_font: f32,
    /// Readout type: the step counter; the others fitted to the column.
    big: f32,
    predicts_font: f32,
    detail_font: f32,
    /// Lecture mode: three readout lines, the scrubber beside the transport.
    compact: bool,
    strip_frame: f32,
    strip_label: f32,
    speed_inline: bool,
    settings_inline: bool,
}

/// The widest text a lane's readouts may show, for sizing their type.
fn longest_class(classes: &[String]) -> String {
    classes
        .iter()
        .max_by_key(|c| c.chars().count())
        .cloned()
        .unwrap_or_else(|| "0".into())
}

impl Plan {
    fn new(ui: &egui::Ui, shown: &Shown, titles: &[&str; 4]) -> Plan {
        let avail = ui.available_size();
        let spacing = ui.spacing().item_spacing;
        let body = ui.text_style_height(&egui::TextStyle::Body);
        let small = ui.text_style_height(&egui::TextStyle::Small);
        let compact = shown.lecture;
        let gap = if avail.x < 720.0 {
            spacing.x * 1.5
        } else {
            spacing.x * 3.0
        };
        let column = ((avail.x - 3.0 * gap) / 4.0).clamp(56.0, 340.0);
        // Titles: at most two lines, each word whole.
        let mut title_font = (column / 8.0).clamp(12.0, BIG * 0.8);
        let lines = |font: f32| {
            titles
                .iter()
                .map(|t| {
                    let one = text_size(ui, "Ag", &egui::FontId::proportional(font), f32::INFINITY).y;
                    let words_fit = t.split_whitespace().all(|w| {
                        text_size(ui, w, &egui::FontId::proportional(font), f32::INFINITY).x <= column
                    });
                    let h = text_size(ui, t, &egui::FontId::proportional(font), column).y;
                    if words_fit {
                        (h / one).round()
                    } else {
                        99.0
                    }
                })
                .fold(0.0, f32::max)
        };
        while title_font > 10.0 && lines(title_font) > 2.0 {
            title_font -= 1.0;
        }
        let title_h = titles
            .iter()
            .map(|t| text_size(ui, t, &egui::FontId::proportional(title_font), column).y)
            .fold(0.0, f32::max)
            + 2.0;
        let longest = longest_class(shown.classes);
        let big = (column / 6.5).clamp(13.0, BIG);
        let predicts_font = fitting(ui, &format!("predicts {longest}"), 0.9 * big, column);
        let detail_font = fitting(ui, "100 % off the leaf", body, column)
            .min(fitting(ui, "from start 10.000", body, column))
            .min(fitting(ui, "reached the target ✓", body, column))
            .min(fitting(ui, "walking… 120 steps/s", body, column));
        let detail = detail_font * 1.2;
        // Readouts: step, predicts (and p), distance, then off the leaf and the status.
        let readouts = if compact {
            big * 1.2 + predicts_font * 1.2 + 0.8 * big * 1.2 + detail + 4.0 * spacing.y + 4.0
        } else {
            big * 1.2 + predicts_font * 1.2 + 0.8 * big * 1.2 + 3.0 * detail + 6.0 * spacing.y + 4.0
        };
        // Play / Step / Reset on one row, the speed beside them when there is room; in lecture
        // mode the scrubber on the same row.
        // (The three buttons, the speed's slider and box, and room for the settings' toggle.)
        let speed_inline = !compact && avail.x >= 3.0 * 118.0 + 430.0 + 150.0;
        let transport = 36.0 + 2.0 * spacing.y + 6.0;
        let scrubber = body.max(ui.spacing().interact_size.y) + spacing.y + 4.0;
        // Filmstrips: frames with a two-line caption; as many as fit across, at most nine.
        let strip_label = ["data leaf", "kernel"]
            .iter()
            .map(|t| text_size(ui, t, &egui::FontId::proportional(body), f32::INFINITY).x)
            .fold(0.0, f32::max)
            + 2.0 * spacing.x;
        let room = avail.x - strip_label;
        let strip_h = |frame: f32| 2.0 * (frame + 2.0 * small + 6.0 + spacing.y + 6.0);
        let mut strip_frame = ((room / STRIP as f32) - spacing.x).clamp(36.0, 80.0);
        // Settings: five rows of drag values under the strips, when the window is tall enough.
        let settings_h = 5.0 * (ui.spacing().interact_size.y + 6.0) + body + 16.0;
        let fixed = |strip_frame: f32| {
            title_h
                + 8.0 // the frame round each image
                + readouts
                + transport
                + scrubber
                + strip_h(strip_frame)
                + 5.0 * spacing.y
                + 20.0
        };
        let mut side = column.min(avail.y - fixed(strip_frame));
        // Short of height: smaller strip frames first, then smaller images.
        if side < column * 0.8 {
            strip_frame = 40.0_f32.min(strip_frame);
            side = column.min(avail.y - fixed(strip_frame));
        }
        let side = side.max(48.0);
        let settings_inline = !compact && avail.y - fixed(strip_frame) - settings_h >= side - 1.0;
        Plan {
            column,
            side,
            gap,
            title_font,
            big,
            predicts_font,
            detail_font,
            compact,
            strip_frame,
            strip_label,
            speed_inline,
            settings_inline,
        }
    }
}

/// A label on one line, never wrapped (its type is fitted to the column beforehand).
fn line(ui: &mut egui::Ui, text: RichText) -> egui::Response {
    ui.add(egui::Label::new(text).wrap_mode(egui::TextWrapMode::Extend))
}

impl WalkView {
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        shown: &Shown,
        settings: &mut Settings,
        actions: &mut Vec<Action>,
    ) {
        let h = shown.history;
        let first = h
            .frame(Lane::Leaf, Some(0))
            .or_else(|| h.frame(Lane::Kernel, Some(0)));
        let mut start_text = format!(
            "Start {}",
            settings.start.as_ref().map_or("—".into(), |c| c.describe())
        );
        if settings.params.noise_steps > 0 {
            start_text.push_str(&format!(" + {} noise", settings.params.noise_steps));
        }
        let mut target_text = format!(
            "Target {}",
            settings.target.as_ref().map_or("—".into(), |c| c.describe())
        );
        if settings.mirror && settings.target.is_some() {
            target_text.push_str(" mirrored");
        }
        let titles = [
            start_text.as_str(),
            Lane::Leaf.title(),
            Lane::Kernel.title(),
            target_text.as_str(),
        ];
        let plan = Plan::new(ui, shown, &titles);
        let (width, side) = (plan.column, plan.side);
        let visuals = ui.visuals().clone();
        let column = |ui: &mut egui::Ui, add: &mut dyn FnMut(&mut egui::Ui)| {
            ui.allocate_ui_with_layout(
                Vec2::new(width, ui.available_height()),
                egui::Layout::top_down(egui::Align::Center),
                |ui| {
                    ui.set_width(width);
                    add(ui)
                },
            );
        };
        // Titles get the same height in every column, so the four images line up.
        let title_font = egui::FontId::proportional(plan.title_font);
        let title_height = titles
            .iter()
            .map(|t| text_size(ui, t, &title_font, width).y)
            .fold(0.0, f32::max)
            + 2.0;
        let title = |ui: &mut egui::Ui, text: &str, color: Color32| {
            ui.allocate_ui_with_layout(
                Vec2::new(width, title_height),
                egui::Layout::bottom_up(egui::Align::Center),
                |ui| {
                    ui.set_min_size(Vec2::new(width, title_height));
                    ui.label(RichText::new(text).size(plan.title_font).color(color).strong());
                },
            );
        };
        ui.horizontal_top(|ui| {
            ui.spacing_mut().item_spacing.x = plan.gap;
            column(ui, &mut |ui| {
                title(ui, &start_text, START_COLOR);
                let key = (h.session, h.start_version, 0);
                self.start
                    .show(ui, key, h.start.as_deref(), shown.shape, side, START_COLOR);
                if let Some((done, total)) = h.preparing {
                    ui.label(format!("making the noisy start: {done} / {total} kernel steps"));
                    ui.add(egui::ProgressBar::new(done as f32 / total.max(1) as f32).desired_width(side));
                }
                if let Some(l) = &shown.start_label {
                    let text = format!("label {l}");
                    let size = fitting(ui, &text, plan.big * 0.75, width);
                    line(ui, RichText::new(text).size(size));
                }
                if let Some(f) = first {
                    let text = prediction(f, shown.classes);
                    let size = fitting(ui, &text, plan.big * 0.75, width);
                    line(ui, RichText::new(text).size(size));
                }
            });
            for lane in Lane::BOTH {
                let frame = h.frame(lane, shown.at);
                let color = style::lane_color_on(&visuals, lane);
                column(ui, &mut |ui| {
                    title(ui, lane.title(), color);
                    let key = (h.session, lane as usize, frame.map_or(usize::MAX, |f| f.index));
                    self.lanes[lane as usize].show(
                        ui,
                        key,
                        frame.map(|f| f.image.as_slice()),
                        shown.shape,
                        side,
                        color,
                    );
                    lane_facts(ui, lane, frame, shown, settings, &plan);
                    if lane == Lane::Leaf {
                        super::instruments::reach_toggle(ui, settings, actions);
                    }
                });
            }
            column(ui, &mut |ui| {
                title(ui, &target_text, TARGET_COLOR);
                let key = (h.session, h.start_version, 1);
                self.target
                    .show(ui, key, h.target.as_deref(), shown.shape, side, TARGET_COLOR);
                if let Some(l) = &shown.target_label {
                    let text = format!("label {l}");
                    let size = fitting(ui, &text, plan.big * 0.75, width);
                    line(ui, RichText::new(text).size(size));
                }
                if settings.target.is_some() {
                    let mut mirror = settings.mirror;
                    if ui
                        .checkbox(&mut mirror, "mirror it")
                        .on_hover_text(Command::MirrorTarget.tooltip())
                        .changed()
                    {
                        actions.push(Action::Command(Command::MirrorTarget));
                    }
                }
                if settings.target.is_none() {
                    ui.label(RichText::new("No target: the kernel lane walks alone.").size(plan.detail_font));
                    if !plan.compact {
                        ui.weak(RichText::new("Right-click an image to choose one.").size(plan.detail_font));
                    }
                }
            });
        });
        ui.add_space(6.0);
        transport(ui, shown, settings, actions, &plan, self.settings_open);
        ui.add_space(4.0);
        scrubber(ui, shown, actions);
        ui.add_space(6.0);
        self.filmstrips(ui, shown, &plan);
        ui.add_space(4.0);
        if plan.settings_inline {
            egui::CollapsingHeader::new("Walk settings")
                .default_open(true)
                .show(ui, |ui| {
                    walk_settings(ui, shown, settings, actions, !plan.speed_inline)
                });
        } else if self.settings_open {
            let mut open = true;
            egui::Window::new("Walk settings")
                .open(&mut open)
                .resizable(false)
                .collapsible(false)
                .anchor(egui::Align2::CENTER_BOTTOM, egui::vec2(0.0, -40.0))
                .show(ui.ctx(), |ui| walk_settings(ui, shown, settings, actions, true));
            self.settings_open = open;
        }
        // The lecturer explains; in lecture mode the preset's caption says it in a sentence.
        if !settings.lecture {
            egui::CollapsingHeader::new("What you are looking at")
                .default_open(false)
                .show(ui, |ui| {
                    ui.label(EXPLANATION);
                });
        }
    }
}

impl WalkView {
    /// Evenly spaced frames of each lane computed so far (nine, fewer when narrow), labelled like
    /// the papers' figures: the step, then the prediction and its probability.
    fn filmstrips(&mut self, ui: &mut egui::Ui, shown: &Shown, plan: &Plan) {
        let h = shown.history;
        let visuals = ui.visuals().clone();
        let small = egui::TextStyle::Small.resolve(ui.style());
        let line = ui.text_style_height(&egui::TextStyle::Small);
        for lane in Lane::BOTH {
            let frames = h.lane(lane);
            if frames.is_empty() {
                continue;
            }
            let color = style::lane_color_on(&visuals, lane);
            ui.horizontal(|ui| {
                let label = Vec2::new(plan.strip_label - ui.spacing().item_spacing.x, plan.strip_frame);
                ui.allocate_ui_with_layout(label, egui::Layout::left_to_right(egui::Align::Center), |ui| {
                    ui.set_min_size(label);
                    ui.label(RichText::new(lane.strip_title()).color(color).strong());
                });
                // As many frames as their captions leave room for (nine at most, three at least).
                let caption = |f: &Frame| {
                    format!(
                        "{}\n{} {:.2}",
                        f.index,
                        style::class_name(shown.classes, f.argmax),
                        f.max_prob()
                    )
                };
                let room = ui.available_width();
                let gap = ui.spacing().item_spacing.x;
                let mut count = STRIP;
                let cell = loop {
                    let picks = crate::export::evenly_spaced(frames.len(), count);
                    let widest = picks
                        .iter()
                        .map(|&i| text_size(ui, &caption(&frames[i]), &small, f32::INFINITY).x + 4.0)
                        .fold(plan.strip_frame, f32::max);
                    if count <= 3 || count as f32 * (widest + gap) <= room + gap {
                        break widest;
                    }
                    count -= 1;
                };
                let picks = crate::export::evenly_spaced(frames.len(), count);
                for (slot, &i) in self.strips[lane as usize].iter_mut().zip(&picks) {
                    let f = &frames[i];
                    ui.allocate_ui_with_layout(
                        Vec2::new(cell, plan.strip_frame + 2.0 * line + 10.0),
                        egui::Layout::top_down(egui::Align::Center),
                        |ui| {
                            ui.set_width(cell);
                            ui.spacing_mut().item_spacing.y = 0.0;
                            slot.show(
                                ui,
                                (h.session, lane as usize, f.index),
                                Some(&f.image),
                                shown.shape,
                                plan.strip_frame,
                                Color32::from_gray(200),
                            );
                            ui.add_space(4.0);
                            ui.add(
                                egui::Label::new(RichText::new(caption(f)).font(small.clone()))
                                    .wrap_mode(egui::TextWrapMode::Extend),
                            );
                        },
                    );
                }
            });
        }
    }
}

/// A few lines for a student, also in the README.
pub const EXPLANATION: &str = "At every image x the model defines the matrix G(x) = Jᵀ(diag p − ppᵀ)J, \
where J is the Jacobian of its logits and p its probabilities. G has rank at most C − 1 (9 of the 784 \
pixel directions): those directions, spanned by the gradients ∇log pᵢ, are the only ones the model sees. \
Moving along them (the data leaf, blue) changes what the model thinks: walking toward a target morphs \
one digit into another through images that still look like handwriting. Moving in the other directions \
(ker G, across leaves, orange) changes nothing the model notices to first order: the image fills with \
noise while the prediction holds for hundreds of steps. The spectrum plot shows G's eigenvalues on a \
log scale, with the bound C − 1 marked; the other plots follow the probabilities, the distance to the \
target and trace G over the steps.";

fn prediction(f: &Frame, classes: &[String]) -> String {
    format!(
        "predicts {} (p = {:.2})",
        style::class_name(classes, f.argmax),
        f.max_prob()
    )
}

fn lane_facts(
    ui: &mut egui::Ui,
    lane: Lane,
    frame: Option<&Frame>,
    shown: &Shown,
    settings: &Settings,
    plan: &Plan,
) {
    if lane == Lane::Leaf && settings.target.is_none() {
        ui.label("needs a target");
        return;
    }
    let Some(f) = frame else {
        ui.weak("no frames yet");
        return;
    };
    line(
        ui,
        RichText::new(format!("step {}", f.index)).size(plan.big).strong(),
    );
    let class = style::class_name(shown.classes, f.argmax);
    let status = if f.reached {
        Some(RichText::new("reached the target ✓").color(START_COLOR).strong())
    } else if f.last {
        Some(RichText::new("stopped").strong())
    } else {
        None
    };
    let what = if settings.target.is_some() {
        "to target"
    } else {
        "from start"
    };
    let distance = format!("{what} {:.3}", f.distance);
    line(
        ui,
        RichText::new(format!("predicts {class}")).size(plan.predicts_font),
    );
    line(
        ui,
        RichText::new(format!("p = {:.2}", f.max_prob())).size(plan.big * 0.8),
    );
    if plan.compact {
        let text = status.unwrap_or_else(|| RichText::new(distance));
        line(ui, text.size(plan.detail_font));
        return;
    }
    line(ui, RichText::new(distance).size(plan.detail_font))
        .on_hover_text("L2 distance over pixels in [0, 1]");
    line(
        ui,
        RichText::new(format!("{:.0} % off the leaf", 100.0 * f.off_leaf))
            .size(plan.detail_font)
            .weak(),
    )
    .on_hover_text("The part of the last step's move outside D_x, the data leaf's tangent space");
    let status = status.unwrap_or_else(|| {
        RichText::new(match (shown.playing, shown.steps_per_second[lane as usize]) {
            (true, Some(rate)) => format!("walking… {}", super::frame_stats::rate_text(rate)),
            (true, None) => "walking…".into(),
            (false, _) => "paused".into(),
        })
    });
    line(ui, status.size(plan.detail_font))
        .on_hover_text("Steps per second: the steps this lane took in the last two seconds");
}

fn transport(
    ui: &mut egui::Ui,
    shown: &Shown,
    settings: &mut Settings,
    actions: &mut Vec<Action>,
    plan: &Plan,
    settings_open: bool,
) {
    ui.horizontal(|ui| {
        let play = if shown.playing { "❚❚ Pause" } else { "▶ Play" };
        let size = (plan.big * 0.8).min(BIG * 0.8);
        let big = |text: &str| {
            egui::Button::new(RichText::new(text).size(size))
                .min_size(Vec2::new((plan.column * 0.75).clamp(70.0, 110.0), 36.0))
        };
        let ctx = ui.ctx().clone();
        let tip = |c: Command| format!("{} ({})", c.tooltip(), c.shortcut_text(&ctx));
        if ui.add(big(play)).on_hover_text(tip(Command::PlayPause)).clicked() {
            actions.push(Action::Command(Command::PlayPause));
        }
        if ui.add(big("→ Step")).on_hover_text(tip(Command::Step)).clicked() {
            actions.push(Action::Command(Command::Step));
        }
        if ui
            .add(big("⟲ Reset"))
            .on_hover_text(tip(Command::Reset))
            .clicked()
        {
            actions.push(Action::Command(Command::Reset));
        }
        if !plan.settings_inline
            && ui
                .add(egui::Button::new(RichText::new("⚙ Settings").size(size)).selected(settings_open))
                .on_hover_text(tip(Command::Settings))
                .clicked()
        {
            actions.push(Action::Command(Command::Settings));
        }
        if plan.speed_inline {
            ui.separator();
            speed(ui, settings, actions);
        }
        if shown.stale {
            ui.label(RichText::new("new settings apply on Reset").color(Color32::from_rgb(160, 90, 0)));
        }
    });
}

/// The speed slider and its "as fast as possible" box.
fn speed(ui: &mut egui::Ui, settings: &mut Settings, actions: &mut Vec<Action>) {
    let label = ui.label("Speed");
    let mut fast = settings.speed.is_none();
    let mut speed = settings.speed.unwrap_or(60.0);
    let changed_speed = ui
        .add_enabled(
            !fast,
            egui::Slider::new(&mut speed, 1.0..=120.0)
                .logarithmic(true)
                .suffix(" steps/s"),
        )
        .labelled_by(label.id)
        .changed();
    let changed_fast = ui.checkbox(&mut fast, "as fast as possible").changed();
    if changed_speed || changed_fast {
        settings.speed = (!fast).then_some(speed);
        actions.push(Action::Speed);
    }
}

fn scrubber(ui: &mut egui::Ui, shown: &Shown, actions: &mut Vec<Action>) {
    let len = shown.history.len();
    ui.horizontal(|ui| {
        let label = ui.label("Frames");
        let last = len.saturating_sub(1);
        let mut at = shown.at.unwrap_or(last).min(last);
        let width = (ui.available_width() - 160.0).max(100.0);
        ui.spacing_mut().slider_width = width;
        let response = ui
            .add_enabled(len > 1, egui::Slider::new(&mut at, 0..=last.max(1)).integer())
            .labelled_by(label.id)
            .on_hover_text("Look back at any step computed so far");
        if response.changed() {
            actions.push(Action::Scrub(Some(at)));
        }
        let live = shown.at.is_none();
        if ui
            .selectable_label(live, "live")
            .on_hover_text("Follow the newest step")
            .clicked()
        {
            actions.push(Action::Scrub(None));
        }
    });
}

fn walk_settings(
    ui: &mut egui::Ui,
    shown: &Shown,
    settings: &mut Settings,
    actions: &mut Vec<Action>,
    with_speed: bool,
) {
    if with_speed {
        ui.horizontal(|ui| speed(ui, settings, actions));
    }
    let before = settings.params.clone();
    let p = &mut settings.params;
    egui::Grid::new("walk settings")
        .num_columns(4)
        .spacing([12.0, 6.0])
        .show(ui, |ui| {
            let label = ui.label("Step size");
            ui.add(
                egui::DragValue::new(&mut p.step)
                    .range(0.001..=1.0)
                    .speed(0.001)
                    .max_decimals(4)
                    .suffix(" px"),
            )
            .labelled_by(label.id)
            .on_hover_text("L2 length of each step, pixels in [0, 1] (papers: 0.0308)");
            let label = ui.label("Stop distance");
            ui.add(
                egui::DragValue::new(&mut p.stop)
                    .range(0.0..=50.0)
                    .speed(0.01)
                    .max_decimals(4)
                    .suffix(" px"),
            )
            .labelled_by(label.id)
            .on_hover_text("The leaf walk stops this close to the target (papers: 0.3081)");
            ui.end_row();
            let label = ui.label("Leaf max steps");
            ui.add(
                egui::DragValue::new(&mut p.leaf_max_steps)
                    .range(1..=100_000)
                    .speed(10.0),
            )
            .labelled_by(label.id);
            let label = ui.label("Kernel steps");
            ui.add(
                egui::DragValue::new(&mut p.kernel_max_steps)
                    .range(1..=100_000)
                    .speed(10.0),
            )
            .labelled_by(label.id)
            .on_hover_text("The kernel walk has no stop rule; it runs this many steps");
            ui.end_row();
            ui.label("Kernel direction");
            ui.horizontal(|ui| {
                ui.radio_value(&mut p.kernel_direction, KernelDirection::Random, "random");
                ui.radio_value(
                    &mut p.kernel_direction,
                    KernelDirection::TowardTarget,
                    "toward target",
                );
            });
            let label = ui.label("Seed");
            ui.add(egui::DragValue::new(&mut p.seed).range(0..=u32::MAX as u64))
                .labelled_by(label.id)
                .on_hover_text("Seed of the kernel walk's random direction (and of the noisy start)");
            ui.end_row();
            let label = ui.label("Noisy start");
            ui.add(
                egui::DragValue::new(&mut p.noise_steps)
                    .range(0..=5000)
                    .speed(5.0)
                    .suffix(" kernel steps"),
            )
            .labelled_by(label.id)
            .on_hover_text(
                "Kernel steps from the start before the walks: a start on a noisy leaf (papers: 250)",
            );
            ui.end_row();
            classes_in_g(ui, p);
            if ui.button("Papers' defaults").clicked() {
                let noise = p.noise_steps;
                *p = Default::default();
                p.noise_steps = noise;
            }
            ui.end_row();
        });
    let _ = shown;
    if settings.params != before {
        actions.push(Action::ParamsChanged);
    }
}

impl ImageSlot {
    /// The image at `side` points square with a coloured frame, or an empty frame.
    fn show(
        &mut self,
        ui: &mut egui::Ui,
        key: (u64, usize, usize),
        pixels: Option<&[f32]>,
        shape: Option<Shape>,
        side: f32,
        frame: Color32,
    ) {
        let (rect, _) = ui.allocate_exact_size(Vec2::splat(side), Sense::hover());
        match (pixels, shape) {
            (Some(p), Some(shape)) if p.len() == shape.0 * shape.1 * shape.2 => {
                let texture = self.get(ui.ctx(), key, p, shape);
                let uv = egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0));
                ui.painter().image(texture.id(), rect, uv, Color32::WHITE);
            }
            _ => {
                ui.painter().rect_filled(rect, 4.0, Color32::from_gray(230));
            }
        }
        ui.painter().rect_stroke(
            rect.expand(2.0),
            2.0,
            Stroke::new(3.0, frame),
            egui::StrokeKind::Outside,
        );
    }
}

/// "Classes in G": all, the top K, or automatic (exact up to 100 classes, the top 10 above).
fn classes_in_g(ui: &mut egui::Ui, p: &mut super::state::Params) {
    use super::state::{ClassesInG, AUTO_EXACT_MAX, AUTO_TOP_K};
    let label = ui.label("Classes in G");
    ui.horizontal(|ui| {
        ui.radio_value(&mut p.classes_in_g, ClassesInG::Auto, "auto")
            .on_hover_text(format!(
                "All classes up to C = {AUTO_EXACT_MAX}, the top {AUTO_TOP_K} above"
            ));
        ui.radio_value(&mut p.classes_in_g, ClassesInG::All, "all");
        let mut k = match p.classes_in_g {
            ClassesInG::Top(k) => k,
            _ => AUTO_TOP_K,
        };
        let top = matches!(p.classes_in_g, ClassesInG::Top(_));
        if ui.radio(top, "top").clicked() {
            p.classes_in_g = ClassesInG::Top(k);
        }
        let drag = ui
            .add_enabled(top, egui::DragValue::new(&mut k).range(1..=1000))
            .labelled_by(label.id)
            .on_hover_text(
                "G from the K most probable classes only (K + 1 reverse rows instead of C); the \
                 probability mass left out is shown beside the spectrum",
            );
        if top && drag.changed() {
            p.classes_in_g = ClassesInG::Top(k);
        }
    });
}
