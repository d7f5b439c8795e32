//! A pad to draw your own target (or start): a symbol the dataset does not hold.

use egui::{Color32, Pos2, Sense, Stroke, Vec2};

use super::state::Choice;
use super::style::{ImageSlot, Shape};
use super::Action;

/// Brush radius in image pixels: strokes about as thick as MNIST's pen.
const BRUSH: f32 = 1.1;

pub struct DrawPad {
    /// One plane, height x width, in [0, 1].
    pixels: Vec<f32>,
    size: (usize, usize),
    last: Option<Pos2>,
    /// Bumped on every change, so the texture is made again only then.
    generation: usize,
    slot: ImageSlot,
}

impl Default for DrawPad {
    fn default() -> Self {
        DrawPad {
            pixels: vec![0.0; 28 * 28],
            size: (28, 28),
            last: None,
            generation: 0,
            slot: ImageSlot::new("draw pad"),
        }
    }
}

impl DrawPad {
    fn clear(&mut self) {
        self.pixels.iter_mut().for_each(|p| *p = 0.0);
        self.generation += 1;
    }

    /// Ink a soft round dot at (x, y) in image pixels.
    fn dab(&mut self, x: f32, y: f32) {
        let (h, w) = self.size;
        let r = BRUSH + 1.0;
        let (x0, x1) = (
            (x - r).floor().max(0.0) as usize,
            ((x + r).ceil() as usize).min(w),
        );
        let (y0, y1) = (
            (y - r).floor().max(0.0) as usize,
            ((y + r).ceil() as usize).min(h),
        );
        for py in y0..y1 {
            for px in x0..x1 {
                let d = ((px as f32 + 0.5 - x).powi(2) + (py as f32 + 0.5 - y).powi(2)).sqrt();
                let ink = (1.0 - (d - BRUSH).max(0.0)).clamp(0.0, 1.0);
                let p = &mut self.pixels[py * w + px];
                *p = p.max(ink);
            }
        }
        self.generation += 1;
    }

    /// The drawing in the dataset's shape (the plane repeated over channels).
    fn image(&self, channels: usize) -> Vec<f32> {
        self.pixels.repeat(channels.max(1))
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, shape: Option<Shape>, actions: &mut Vec<Action>) {
        let Some((c, h, w)) = shape else {
            ui.weak("Open a dataset to draw in its image size.");
            return;
        };
        if self.size != (h, w) {
            self.size = (h, w);
            self.pixels = vec![0.0; h * w];
            self.generation += 1;
        }
        let side = (ui.available_width() - 110.0).clamp(100.0, 200.0);
        ui.horizontal(|ui| {
            let (rect, response) = ui.allocate_exact_size(Vec2::splat(side), Sense::drag());
            response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Canvas, true, "drawing pad"));
            if let Some(pos) = response.interact_pointer_pos() {
                let to_image = |p: Pos2| {
                    let u = (p - rect.min) / rect.size();
                    Pos2::new(u.x * w as f32, u.y * h as f32)
                };
                let now = to_image(pos);
                let from = self.last.unwrap_or(now);
                // Dabs every quarter pixel along the stroke, so fast strokes have no gaps.
                let steps = ((now - from).length() * 4.0).ceil().max(1.0) as usize;
                for k in 0..=steps {
                    let p = from + (now - from) * (k as f32 / steps as f32);
                    self.dab(p.x, p.y);
                }
                self.last = Some(now);
            }
            if !response.dragged() {
                self.last = None;
            }
            let texture = self
                .slot
                .get(ui.ctx(), (0, self.generation, 0), &self.pixels, (1, h, w));
            let uv = egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0));
            ui.painter().image(texture.id(), rect, uv, Color32::WHITE);
            ui.painter().rect_stroke(
                rect,
                0.0,
                Stroke::new(1.0, Color32::GRAY),
                egui::StrokeKind::Outside,
            );
            ui.vertical(|ui| {
                if ui.button("Use as target").clicked() {
                    actions.push(Action::SetTarget(Some(Choice::Drawn(self.image(c)))));
                }
                if ui.button("Use as start").clicked() {
                    actions.push(Action::SetStart(Choice::Drawn(self.image(c))));
                }
                if ui.button("Clear").clicked() {
                    self.clear();
                }
            });
        });
    }
}
