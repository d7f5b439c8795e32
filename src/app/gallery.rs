//! The dataset as thumbnails: virtualised rows (only visible rows are laid out), images packed 256
//! to a texture page made when first seen, a class filter, jump to index, random.

use std::collections::HashMap;
use std::sync::Arc;

use egui::{Color32, ColorImage, Rect, Sense, Stroke, TextureHandle, TextureOptions, Vec2};
use rand::Rng;

use super::state::Choice;
use super::style::{self, Shape};
use super::Action;
use crate::data::Dataset;

/// Thumbnails per texture page side (a page holds PAGE_SIDE² images).
const PAGE_SIDE: usize = 16;
const PAGE: usize = PAGE_SIDE * PAGE_SIDE;
/// Pages made per frame at most, so scrolling through new ground stays smooth.
const PAGES_PER_FRAME: usize = 6;
const THUMB: f32 = 40.0;

pub const START_COLOR: Color32 = Color32::from_rgb(0, 158, 115);
pub const TARGET_COLOR: Color32 = Color32::from_rgb(204, 121, 167);
const FOCUS_COLOR: Color32 = Color32::from_rgb(230, 159, 0);

#[derive(Default)]
pub struct Gallery {
    data: Option<Arc<Dataset>>,
    pages: HashMap<usize, TextureHandle>,
    /// Show only this class.
    filter: Option<usize>,
    /// Dataset indices shown, in order (all, or one class).
    shown: Vec<usize>,
    jump: String,
    /// The highlighted image the "as start" / "as target" buttons act on.
    pub focus: Option<usize>,
    scroll_to: Option<usize>,
}

impl Gallery {
    /// Show a new dataset (pages are made again as they come into view).
    pub fn set_dataset(&mut self, data: Arc<Dataset>) {
        self.pages.clear();
        self.filter = None;
        self.focus = None;
        self.shown = (0..data.len()).collect();
        self.data = Some(data);
    }

    /// Highlight image `index` and scroll to it.
    pub fn reveal(&mut self, index: usize) {
        let Some(data) = &self.data else { return };
        if index >= data.len() {
            return;
        }
        if self.filter.is_some_and(|c| data.labels.get(index) != Some(&c)) {
            self.set_filter(None);
        }
        self.focus = Some(index);
        self.scroll_to = Some(index);
    }

    fn set_filter(&mut self, filter: Option<usize>) {
        self.filter = filter;
        if let Some(data) = &self.data {
            self.shown = (0..data.len())
                .filter(|&i| filter.is_none_or(|c| data.labels.get(i) == Some(&c)))
                .collect();
        }
    }

    /// A random image among those shown.
    pub fn random(&self) -> Option<usize> {
        if self.shown.is_empty() {
            return None;
        }
        Some(self.shown[rand::rng().random_range(0..self.shown.len())])
    }

    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        start: Option<usize>,
        target: Option<usize>,
        actions: &mut Vec<Action>,
    ) {
        let Some(data) = self.data.clone() else {
            ui.label("Loading the dataset…");
            return;
        };
        ui.horizontal(|ui| {
            ui.strong(&data.name);
            ui.weak(format!("{} images", data.len()));
        });
        // Rows wrap inside a narrow panel instead of widening it past the window's edge.
        ui.horizontal_wrapped(|ui| {
            let name = |c: Option<usize>| match c {
                None => "all classes".to_string(),
                Some(k) => format!("class {}", style::class_name(&data.class_names, k)),
            };
            let mut filter = self.filter;
            let label = ui.label("Show");
            egui::ComboBox::from_id_salt("class filter")
                .selected_text(name(filter))
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut filter, None, name(None));
                    for k in 0..data.num_classes() {
                        ui.selectable_value(&mut filter, Some(k), name(Some(k)));
                    }
                })
                .response
                .labelled_by(label.id);
            if filter != self.filter {
                self.set_filter(filter);
            }
            if ui
                .button("Random")
                .on_hover_text("Highlight a random image")
                .clicked()
            {
                if let Some(i) = self.random() {
                    self.reveal(i);
                }
            }
        });
        ui.horizontal(|ui| {
            let label = ui.label("Index");
            let edit = ui
                .add(egui::TextEdit::singleline(&mut self.jump).desired_width(64.0))
                .labelled_by(label.id);
            let enter = edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            if ui.button("Go").clicked() || enter {
                match self.jump.trim().parse::<usize>() {
                    Ok(i) if i < data.len() => {
                        self.reveal(i);
                        self.jump.clear();
                    }
                    _ => actions.push(Action::Error(format!(
                        "no image {:?}: {} has images 0 to {}",
                        self.jump.trim(),
                        data.name,
                        data.len().saturating_sub(1)
                    ))),
                }
            }
        });
        ui.horizontal_wrapped(|ui| {
            let focus = self.focus;
            let text = focus.map_or("—".to_string(), |i| format!("#{i}"));
            ui.label(format!("Highlighted {text}"));
            if ui
                .add_enabled(focus.is_some(), egui::Button::new("as start"))
                .clicked()
            {
                actions.extend(focus.map(|i| Action::SetStart(Choice::Index(i))));
            }
            if ui
                .add_enabled(focus.is_some(), egui::Button::new("as target"))
                .clicked()
            {
                actions.extend(focus.map(|i| Action::SetTarget(Some(Choice::Index(i)))));
            }
        });
        ui.weak("Click: start · right-click: target");
        ui.add_space(4.0);
        self.grid(ui, &data, start, target, actions);
    }

    fn grid(
        &mut self,
        ui: &mut egui::Ui,
        data: &Arc<Dataset>,
        start: Option<usize>,
        target: Option<usize>,
        actions: &mut Vec<Action>,
    ) {
        let gap = ui.spacing().item_spacing;
        let per_row = (((ui.available_width() + gap.x) / (THUMB + gap.x)).floor() as usize).max(1);
        let rows = self.shown.len().div_ceil(per_row);
        let mut area = egui::ScrollArea::vertical()
            .id_salt("gallery")
            .auto_shrink([false, false]);
        if let Some(i) = self.scroll_to.take() {
            if let Some(pos) = self.shown.iter().position(|&k| k == i) {
                let row = pos / per_row;
                let offset = (row as f32 * (THUMB + gap.y) - 2.0 * (THUMB + gap.y)).max(0.0);
                area = area.vertical_scroll_offset(offset);
            }
        }
        let shape = (data.channels, data.height, data.width);
        let mut made = 0;
        area.show_rows(ui, THUMB, rows, |ui, range| {
            for row in range {
                ui.horizontal(|ui| {
                    for &i in self.shown.iter().skip(row * per_row).take(per_row) {
                        let (rect, response) = ui.allocate_exact_size(Vec2::splat(THUMB), Sense::click());
                        response.widget_info(|| {
                            egui::WidgetInfo::labeled(egui::Role::Button, true, format!("image {i}"))
                        });
                        let page = i / PAGE;
                        if !self.pages.contains_key(&page) && made < PAGES_PER_FRAME {
                            self.pages.insert(page, make_page(ui.ctx(), data, page, shape));
                            made += 1;
                        }
                        let painter = ui.painter();
                        match self.pages.get(&page) {
                            Some(texture) => {
                                let k = i % PAGE;
                                let side = PAGE_SIDE as f32;
                                // Half a texel in from the tile's edge, so smoothing does not bleed
                                // in the neighbours.
                                let inset = 0.5 / (side * shape.2 as f32);
                                let uv = Rect::from_min_size(
                                    egui::pos2((k % PAGE_SIDE) as f32 / side, (k / PAGE_SIDE) as f32 / side),
                                    Vec2::splat(1.0 / side),
                                )
                                .shrink(inset);
                                painter.image(texture.id(), rect.shrink(2.0), uv, Color32::WHITE);
                            }
                            None => {
                                painter.rect_filled(rect.shrink(2.0), 0.0, Color32::from_gray(40));
                                ui.ctx().request_repaint();
                            }
                        }
                        let mark = if Some(i) == start {
                            Some(START_COLOR)
                        } else if Some(i) == target {
                            Some(TARGET_COLOR)
                        } else if Some(i) == self.focus {
                            Some(FOCUS_COLOR)
                        } else if response.hovered() {
                            Some(Color32::GRAY)
                        } else {
                            None
                        };
                        if let Some(color) = mark {
                            painter.rect_stroke(
                                rect.shrink(1.0),
                                0.0,
                                Stroke::new(3.0, color),
                                egui::StrokeKind::Inside,
                            );
                        }
                        let label = data
                            .labels
                            .get(i)
                            .map_or(String::new(), |&l| style::class_name(&data.class_names, l));
                        let response = response.on_hover_text(format!("image {i} · label {label}"));
                        if response.clicked() {
                            self.focus = Some(i);
                            actions.push(Action::SetStart(Choice::Index(i)));
                        }
                        if response.secondary_clicked() {
                            self.focus = Some(i);
                            actions.push(Action::SetTarget(Some(Choice::Index(i))));
                        }
                    }
                });
            }
        });
    }
}

/// One texture holding images page*PAGE .. (page+1)*PAGE side by side.
fn make_page(ctx: &egui::Context, data: &Dataset, page: usize, shape: Shape) -> TextureHandle {
    let (_, h, w) = shape;
    let mut atlas = ColorImage::filled([w * PAGE_SIDE, h * PAGE_SIDE], Color32::BLACK);
    let first = page * PAGE;
    let last = (first + PAGE).min(data.len());
    for (k, i) in (first..last).enumerate() {
        let Some(pixels) = data.image(i) else { continue };
        let tile = style::color_image(pixels, shape);
        let (x0, y0) = ((k % PAGE_SIDE) * w, (k / PAGE_SIDE) * h);
        for y in 0..h {
            for x in 0..w {
                atlas[(x0 + x, y0 + y)] = tile[(x, y)];
            }
        }
    }
    ctx.load_texture(format!("gallery page {page}"), atlas, TextureOptions::LINEAR)
}
