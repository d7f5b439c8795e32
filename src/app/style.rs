//! Fonts, colours and image textures: one calm look, legible from the back of a lecture hall.

use std::sync::Arc;

use egui::{Color32, ColorImage, FontData, FontDefinitions, FontFamily, TextureHandle, TextureOptions};

use super::worker::Lane;
use crate::export::FONT;

/// The zoom factor of lecture mode.
pub const LECTURE_ZOOM: f32 = 1.6;

pub const LEAF_COLOR: Color32 = Color32::from_rgb(0, 114, 178);
pub const KERNEL_COLOR: Color32 = Color32::from_rgb(213, 94, 0);
pub const ERROR_COLOR: Color32 = Color32::from_rgb(190, 30, 45);
/// A calm note (not an error): dark amber, readable on both themes.
pub const NOTICE_COLOR: Color32 = Color32::from_rgb(170, 110, 0);

pub fn lane_color(lane: Lane) -> Color32 {
    match lane {
        Lane::Leaf => LEAF_COLOR,
        Lane::Kernel => KERNEL_COLOR,
    }
}

/// DejaVu Sans first (sturdy strokes, and the maths glyphs egui's fonts lack: ∇ ⊥ ᵀ ≤ →), egui's
/// own fonts after it for the icons.
pub fn install(ctx: &egui::Context) {
    let mut fonts = FontDefinitions::default();
    fonts
        .font_data
        .insert("DejaVuSans".into(), Arc::new(FontData::from_static(FONT)));
    for family in [FontFamily::Proportional, FontFamily::Monospace] {
        let list = fonts.families.entry(family.clone()).or_default();
        if family == FontFamily::Proportional {
            list.insert(0, "DejaVuSans".into());
        } else {
            list.push("DejaVuSans".into());
        }
    }
    ctx.set_fonts(fonts);
    ctx.set_theme(egui::Theme::Light);
    ctx.global_style_mut(|style| {
        style.spacing.item_spacing = egui::vec2(8.0, 6.0);
        style.spacing.button_padding = egui::vec2(8.0, 4.0);
        style.interaction.tooltip_delay = 0.3;
    });
}

/// Image shape (channels, height, width).
pub type Shape = (usize, usize, usize);

/// An NCHW image in [0, 1] as colours: grey for one channel, RGB for three.
pub fn color_image(pixels: &[f32], (c, h, w): Shape) -> ColorImage {
    let byte = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    let plane = h * w;
    let colors = (0..plane)
        .map(|i| {
            if c >= 3 {
                Color32::from_rgb(
                    byte(pixels.get(i).copied().unwrap_or(0.0)),
                    byte(pixels.get(plane + i).copied().unwrap_or(0.0)),
                    byte(pixels.get(2 * plane + i).copied().unwrap_or(0.0)),
                )
            } else {
                Color32::from_gray(byte(pixels.get(i).copied().unwrap_or(0.0)))
            }
        })
        .collect();
    ColorImage::new([w, h], colors)
}

/// A texture that follows one image, re-uploaded only when the key changes.
pub struct ImageSlot {
    name: String,
    texture: Option<TextureHandle>,
    key: Option<(u64, usize, usize)>,
}

impl ImageSlot {
    pub fn new(name: &str) -> Self {
        ImageSlot {
            name: name.into(),
            texture: None,
            key: None,
        }
    }

    /// The texture of `pixels`, uploaded when `key` differs from last time.
    pub fn get(
        &mut self,
        ctx: &egui::Context,
        key: (u64, usize, usize),
        pixels: &[f32],
        shape: Shape,
    ) -> &TextureHandle {
        if self.key != Some(key) || self.texture.is_none() {
            let image = color_image(pixels, shape);
            match &mut self.texture {
                Some(t) => t.set(image, TextureOptions::NEAREST),
                None => self.texture = Some(ctx.load_texture(&self.name, image, TextureOptions::NEAREST)),
            }
            self.key = Some(key);
        }
        self.texture.as_ref().expect("set above")
    }
}

/// A class index as its name.
pub fn class_name(classes: &[String], k: usize) -> String {
    classes.get(k).cloned().unwrap_or_else(|| k.to_string())
}
