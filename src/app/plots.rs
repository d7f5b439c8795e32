//! Live plots of the frames shown: G's spectrum, the model's probabilities, and series over steps.

use egui::{Color32, RichText};
use egui_plot::{Bar, BarChart, HLine, Legend, Line, LineStyle, Plot, PlotPoint, Points, Text, VLine};

use super::history::{History, Series};
use super::style::{self, lane_color};
use super::worker::Lane;

/// Points per plotted series at most; longer walks are thinned for drawing only.
const SERIES_BUDGET: usize = 1500;
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
    /// `at` is the scrubbed step (None = latest); `stop` the stop distance drawn on the distance plot.
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        history: &History,
        at: Option<usize>,
        classes: &[String],
        stop: f32,
    ) {
        // Six plots and their headings share the panel's height; below the minimums it scrolls.
        let row = ui.text_style_height(&egui::TextStyle::Body) + ui.spacing().item_spacing.y;
        let room = ui.available_height() - 8.0 * row - 6.0 * ui.spacing().item_spacing.y;
        let big = (room * 0.25).clamp(120.0, 320.0);
        let small = (room * 0.125).clamp(70.0, 200.0);
        let c = classes.len().max(1);
        let frames: Vec<_> = Lane::BOTH.map(|l| history.frame(l, at)).to_vec();
        let legend = || Legend::default().position(egui_plot::Corner::RightTop);

        // G's spectrum at the frames shown.
        let rank_text = Lane::BOTH
            .iter()
            .zip(&frames)
            .filter_map(|(l, f)| f.map(|f| format!("{} rank {}, trace {:.2e}", l.short(), f.rank, f.trace)))
            .collect::<Vec<_>>()
            .join(" · ");
        ui.label(RichText::new("Spectrum of G = Jᵀ(diag p − ppᵀ)J").strong());
        ui.weak(if rank_text.is_empty() {
            "no frames yet".to_string()
        } else {
            rank_text
        });
        still("spectrum", big)
            .legend(Legend::default().position(egui_plot::Corner::LeftBottom))
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
                    let color = lane_color(*lane);
                    plot.line(Line::new(lane.title(), points.clone()).color(color).width(2.0));
                    plot.points(
                        Points::new(lane.title(), points)
                            .color(color)
                            .radius(4.0)
                            .filled(true),
                    );
                }
            });

        // Probabilities of both lanes, side by side per class.
        ui.label(RichText::new("Probabilities p = softmax(logits)").strong());
        let names: Vec<String> = (0..c).map(|k| style::class_name(classes, k)).collect();
        let ui_text_color = ui.visuals().text_color();
        // Long class names (CIFAR's "automobile") would run into each other: stagger them on two rows.
        let stagger = c > 5 && names.iter().any(|n| n.chars().count() > 3);
        still("probabilities", big)
            .legend(legend())
            .include_y(if stagger { -0.2 } else { -0.12 })
            .include_y(1.05)
            .include_x(-0.6)
            .include_x(c as f64 - 0.4)
            .show_axes([false, true])
            .show(ui, |plot| {
                // Every class named under its bars (axis labels thin out when space is short).
                for (k, name) in names.iter().enumerate() {
                    let y = if stagger && k % 2 == 1 { -0.14 } else { -0.06 };
                    plot.text(
                        Text::new("", PlotPoint::new(k as f64, y), RichText::new(name).strong())
                            .color(ui_text_color),
                    );
                }
                for (i, (lane, frame)) in Lane::BOTH.iter().zip(&frames).enumerate() {
                    let Some(f) = frame else { continue };
                    let offset = if i == 0 { -0.2 } else { 0.2 };
                    let color = lane_color(*lane);
                    let bars = f
                        .probs
                        .iter()
                        .enumerate()
                        .map(|(k, &p)| {
                            Bar::new(k as f64 + offset, p as f64)
                                .width(0.38)
                                .name(names.get(k).cloned().unwrap_or_default())
                                .fill(color)
                                .stroke(egui::Stroke::new(1.0, color))
                        })
                        .collect();
                    plot.bar_chart(BarChart::new(lane.title(), bars).color(color));
                }
            });

        // Series over steps, with the shown step marked.
        let marker = at.or_else(|| history.len().checked_sub(1));
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
            plot.show(ui, |plot| {
                if series == Series::Distance {
                    plot.hline(
                        HLine::new("stop distance", stop as f64)
                            .color(Color32::from_gray(140))
                            .style(LineStyle::dashed_loose()),
                    );
                }
                for lane in Lane::BOTH {
                    let points = series.points(history.lane(lane), SERIES_BUDGET);
                    if points.is_empty() {
                        continue;
                    }
                    plot.line(Line::new(lane.title(), points).color(lane_color(lane)).width(2.0));
                }
                if let Some(m) = marker {
                    plot.vline(VLine::new("shown step", m as f64).color(Color32::from_gray(90)));
                }
            });
        }
    }
}
