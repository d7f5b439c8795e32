//! Live plots of the frames shown: G's spectrum, the model's probabilities, and series over steps.

use egui::{Color32, RichText};
use egui_plot::{HLine, Legend, Line, LineStyle, Plot, Points, VLine};

use super::history::{History, Series};
use super::style;
use super::worker::Lane;

/// Points per plotted series: one lowest/highest pair per this many pixels of the plot's width
/// (longer walks are thinned for drawing only; the CSV export keeps every step).
const PIXELS_PER_PAIR: f32 = 2.0;
/// Eigenvalues at or below this are drawn on the floor (the null direction sits near 1e-17).
const LOG_FLOOR: f64 = -18.0;
/// Relative size below which an eigenvalue is round-off (below the rank tolerance 1e-12).
const ROUND_OFF: f64 = 1e-13;

#[derive(Default)]
pub struct Plots;

/// Grid steps for a step axis: about four labelled marks, at 1, 2 or 5 times a power of ten.
fn step_marks(input: egui_plot::GridInput) -> [f64; 3] {
    let span = (input.bounds.1 - input.bounds.0).max(1.0);
    let raw = span / 4.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let nice = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(raw);
    [nice / 5.0, nice, nice * 10.0]
}

/// A plot that does not move under the mouse: calm, and nothing to reset.
fn still(id: &str, height: f32) -> Plot<'static> {
    Plot::new(id.to_string())
        .height(height)
        .allow_drag(false)
        .allow_zoom(false)
        .allow_scroll(false)
        .allow_boxed_zoom(false)
        .allow_double_click_reset(false)
        .show_crosshair(false)
        .sense(egui::Sense::hover())
        // The same axis width everywhere, so the step axes of the series line up.
        .y_axis_min_width(40.0)
}

impl Plots {
    /// `at` is the scrubbed step (None = latest); `stop` the stop distance drawn on the distance
    /// plot. The spectrum and the probabilities always fit the panel's height; the four series
    /// take what is left, or fold behind their header (always in lecture mode).
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        history: &History,
        at: Option<usize>,
        classes: &[String],
        stop: f32,
        lecture: bool,
    ) {
        let spacing = ui.spacing().item_spacing.y;
        let row = ui.text_style_height(&egui::TextStyle::Body) + spacing;
        let c = classes.len().max(1);
        // Headings and captions: spectrum title + rank line, probabilities title, series header.
        let room = ui.available_height() - 4.0 * row - 4.0 * spacing - 8.0;
        let small = 70.0;
        let series_h = 4.0 * (row + small + spacing);
        let show_series = !lecture && room - series_h >= 2.0 * 150.0;
        let main = if show_series { room - series_h } else { room };
        // The bars need a row per class; the spectrum takes the rest, within reason.
        let probs_h = (main * 0.55)
            .clamp(c as f32 * 14.0, 440.0)
            .min(main - 90.0)
            .max(60.0);
        let spectrum_h = (main - probs_h).clamp(90.0, 420.0);
        let frames: Vec<_> = Lane::BOTH.map(|l| history.frame(l, at)).to_vec();
        let visuals = ui.visuals().clone();
        let color_of = |lane: Lane| style::lane_color_on(&visuals, lane);

        // G's spectrum at the frames shown.
        let rank_text = Lane::BOTH
            .iter()
            .zip(&frames)
            .filter_map(|(l, f)| {
                f.map(|f| {
                    // Top-k: K eigenvalues of C; G leaves out the mass of the C - K least probable.
                    let top_k = if f.eigenvalues.len() < f.probs.len() {
                        let mut p = f.probs.clone();
                        p.sort_by(|a, b| b.total_cmp(a));
                        let dropped: f32 = p[f.eigenvalues.len()..].iter().sum();
                        format!(", top {} classes, dropped p {dropped:.1e}", f.eigenvalues.len())
                    } else {
                        String::new()
                    };
                    format!("{} rank {}, trace {:.2e}{top_k}", l.short(), f.rank, f.trace)
                })
            })
            .collect::<Vec<_>>()
            .join(" · ");
        ui.label(RichText::new("Spectrum of G = Jᵀ(diag p − ppᵀ)J").strong());
        ui.weak(if rank_text.is_empty() {
            "no frames yet".to_string()
        } else {
            rank_text
        });
        let mut spectrum = still("spectrum", spectrum_h);
        // The legend only where it has room beside the points (the lanes' colours are their titles').
        if spectrum_h >= 220.0 {
            spectrum = spectrum.legend(Legend::default().position(egui_plot::Corner::LeftBottom));
        }
        let response = spectrum
            .include_x(0.5)
            .include_x(c as f64 + 0.5)
            .include_y(LOG_FLOOR)
            .include_y(1.0)
            .y_axis_label("log₁₀ λ")
            .x_axis_label("eigenvalue k")
            .x_grid_spacer(egui_plot::uniform_grid_spacer(|_| [1.0, 5.0, 10.0]))
            .show(ui, |plot| {
                plot.vline(
                    VLine::new("rank bound C − 1", (c as f64 - 1.0) + 0.5)
                        .color(Color32::from_gray(120))
                        .style(LineStyle::dashed_loose()),
                );
                for (lane, frame) in Lane::BOTH.iter().zip(&frames) {
                    let Some(f) = frame else { continue };
                    // Eigenvalues under 1e-13 of the largest are f64 round-off (the null direction
                    // sqrt p): drawn at that level, not at whatever digits the summation order left.
                    let top = f.eigenvalues.first().copied().unwrap_or(0.0);
                    let round_off = top * ROUND_OFF;
                    let points: Vec<[f64; 2]> = f
                        .eigenvalues
                        .iter()
                        .enumerate()
                        .map(|(k, &l)| {
                            let shown = l.max(round_off);
                            [
                                k as f64 + 1.0,
                                if shown > 0.0 {
                                    shown.log10().max(LOG_FLOOR)
                                } else {
                                    LOG_FLOOR
                                },
                            ]
                        })
                        .collect();
                    let color = color_of(*lane);
                    plot.line(Line::new(lane.title(), points.clone()).color(color).width(2.0));
                    plot.points(
                        Points::new(lane.title(), points)
                            .color(color)
                            .radius(4.0)
                            .filled(true),
                    );
                }
            })
            .response;
        response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, "spectrum plot"));

        // Probabilities of both lanes, a row per class: the names never collide, whatever their length.
        ui.label(RichText::new("Probabilities p = softmax(logits)").strong());
        let names: Vec<String> = (0..c).map(|k| style::class_name(classes, k)).collect();
        probability_rows(ui, &names, &frames, probs_h, &color_of);

        let mut series_ui = |ui: &mut egui::Ui| self.series(ui, history, at, &names, stop, small, &color_of);
        if show_series {
            series_ui(ui);
        } else {
            egui::CollapsingHeader::new("Series over steps")
                .id_salt("series header")
                .default_open(false)
                .show(ui, |ui| series_ui(ui));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn series(
        &mut self,
        ui: &mut egui::Ui,
        history: &History,
        at: Option<usize>,
        names: &[String],
        stop: f32,
        small: f32,
        color_of: &dyn Fn(Lane) -> Color32,
    ) {
        let c = names.len().max(1);
        // Series over steps, with the shown step marked.
        let marker = at.or_else(|| history.len().checked_sub(1));
        let names = names.to_vec();
        for series in Series::ALL {
            ui.label(RichText::new(series.title()).strong());
            let mut plot = still(series.column(), small)
                .x_axis_label("step")
                .x_grid_spacer(egui_plot::uniform_grid_spacer(step_marks))
                .include_x(0.0)
                .include_x(10.0);
            plot = match series {
                Series::Distance => plot.include_y(0.0),
                Series::MaxProb => plot.include_y(0.0).include_y(1.0),
                Series::Class => {
                    let axis_names = names.clone();
                    plot.include_y(-0.5)
                        .include_y(c as f64 - 0.5)
                        .y_grid_spacer(egui_plot::uniform_grid_spacer(|_| [1.0, 5.0, 10.0]))
                        .y_axis_formatter(move |mark, _| {
                            let k = mark.value.round();
                            if (mark.value - k).abs() < 1e-6 && k >= 0.0 {
                                axis_names.get(k as usize).cloned().unwrap_or_default()
                            } else {
                                String::new()
                            }
                        })
                }
                Series::Trace => plot,
            };
            let pixels = ui.available_width() * ui.ctx().pixels_per_point();
            let budget = (2.0 * pixels / PIXELS_PER_PAIR).max(64.0) as usize;
            plot.show(ui, |plot| {
                if series == Series::Distance {
                    plot.hline(
                        HLine::new("stop distance", stop as f64)
                            .color(Color32::from_gray(140))
                            .style(LineStyle::dashed_loose()),
                    );
                }
                for lane in Lane::BOTH {
                    let points = series.points(history.lane(lane), budget);
                    if points.is_empty() {
                        continue;
                    }
                    plot.line(Line::new(lane.title(), points).color(color_of(lane)).width(2.0));
                }
                if let Some(m) = marker {
                    plot.vline(VLine::new("shown step", m as f64).color(Color32::from_gray(90)));
                }
            });
        }
    }
}

/// The probabilities as horizontal bars, one row per class: the class name right-aligned on the
/// left, both lanes' bars side by side, the value at the end of each bar.
fn probability_rows(
    ui: &mut egui::Ui,
    names: &[String],
    frames: &[Option<&crate::app::Frame>],
    height: f32,
    color_of: &dyn Fn(Lane) -> Color32,
) {
    let width = ui.available_width();
    let (rect, response) = ui.allocate_exact_size(egui::vec2(width, height), egui::Sense::hover());
    response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, "probabilities chart"));
    let painter = ui.painter_at(rect);
    let rows = names.len().max(1);
    let row_h = height / rows as f32;
    let text_color = ui.visuals().text_color();
    let font =
        egui::FontId::proportional((row_h * 0.62).clamp(9.0, ui.text_style_height(&egui::TextStyle::Body)));
    let name_w = names
        .iter()
        .map(|n| {
            ui.ctx()
                .fonts_mut(|f| f.layout_no_wrap(n.clone(), font.clone(), text_color).size().x)
        })
        .fold(0.0, f32::max)
        + 8.0;
    let value_w = ui
        .ctx()
        .fonts_mut(|f| f.layout_no_wrap("0.00".into(), font.clone(), text_color).size().x)
        + 6.0;
    let bar_left = rect.left() + name_w;
    let bar_room = (rect.right() - value_w - bar_left).max(10.0);
    let grid = ui.visuals().weak_text_color().gamma_multiply(0.4);
    for x in [0.0, 0.5, 1.0] {
        let px = bar_left + x * bar_room;
        painter.line_segment(
            [egui::pos2(px, rect.top()), egui::pos2(px, rect.bottom())],
            egui::Stroke::new(1.0, grid),
        );
    }
    for (k, name) in names.iter().enumerate() {
        let top = rect.top() + k as f32 * row_h;
        let mid = top + row_h / 2.0;
        painter.text(
            egui::pos2(bar_left - 6.0, mid),
            egui::Align2::RIGHT_CENTER,
            name,
            font.clone(),
            text_color,
        );
        let bar_h = (row_h * 0.8 / 2.0).max(2.0);
        for (i, (lane, frame)) in Lane::BOTH.iter().zip(frames).enumerate() {
            let Some(f) = frame else { continue };
            let p = f.probs.get(k).copied().unwrap_or(0.0).clamp(0.0, 1.0);
            let y = top + row_h * 0.1 + i as f32 * bar_h;
            let bar =
                egui::Rect::from_min_size(egui::pos2(bar_left, y), egui::vec2(p * bar_room, bar_h - 1.0));
            painter.rect_filled(bar, 1.0, color_of(*lane));
            if p >= 0.005 {
                painter.text(
                    egui::pos2(bar.right() + 3.0, y + bar_h / 2.0),
                    egui::Align2::LEFT_CENTER,
                    format!("{p:.2}"),
                    egui::FontId::proportional((bar_h * 1.1).clamp(9.0, font.size * 0.85)),
                    text_color,
                );
            }
        }
    }
}
