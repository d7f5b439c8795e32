//! Fonts, colours and image textures: one calm look, legible from the back of a lecture hall.

use std::sync::Arc;

use egui::{Color32, ColorImage, FontData, FontDefinitions, FontFamily, TextureHandle, TextureOptions};

use super::worker::Lane;
use crate::export::FONT;

/// The zoom factor of lecture mode on a large screen.
pub const LECTURE_ZOOM: f32 = 1.6;

/// The logical size (points) lecture mode's layout needs at least: its zoom is the largest, up to
/// `LECTURE_ZOOM`, that leaves this much room, so a 1024x768 or 1280x720 projector shows everything.
const LECTURE_ROOM: [f32; 2] = [900.0, 600.0];

/// Lecture mode's zoom for a window of `native` points (at zoom 1).
pub fn lecture_zoom(native: egui::Vec2) -> f32 {
    (native.x / LECTURE_ROOM[0])
        .min(native.y / LECTURE_ROOM[1])
        .clamp(1.0, LECTURE_ZOOM)
}

/// The lanes' colours on a dark background: the same hues, lighter (Okabe-Ito sky blue and orange).
pub const LEAF_COLOR_DARK: Color32 = Color32::from_rgb(86, 180, 233);
pub const KERNEL_COLOR_DARK: Color32 = Color32::from_rgb(240, 150, 40);

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

/// A lane's colour legible on the theme in use.
pub fn lane_color_on(visuals: &egui::Visuals, lane: Lane) -> Color32 {
    match (visuals.dark_mode, lane) {
        (false, _) => lane_color(lane),
        (true, Lane::Leaf) => LEAF_COLOR_DARK,
        (true, Lane::Kernel) => KERNEL_COLOR_DARK,
    }
}

/// The look for the mode: light or dark; in lecture mode high contrast (pure black on white or
/// white on black, heavier strokes) and larger type, for the back of a lecture hall.
pub fn apply_theme(ctx: &egui::Context, lecture: bool, dark: bool) {
    let theme = if dark {
        egui::Theme::Dark
    } else {
        egui::Theme::Light
    };
    let mut style = (*ctx.style_of(theme)).clone();
    let mut visuals = if dark {
        egui::Visuals::dark()
    } else {
        egui::Visuals::light()
    };
    let base = egui::Style::default();
    style.text_styles = base.text_styles.clone();
    if lecture {
        let (ink, paper) = if dark {
            (Color32::WHITE, Color32::BLACK)
        } else {
            (Color32::BLACK, Color32::WHITE)
        };
        visuals.override_text_color = Some(ink);
        visuals.panel_fill = paper;
        visuals.window_fill = paper;
        visuals.extreme_bg_color = paper;
        visuals.weak_text_color = Some(if dark {
            Color32::from_gray(200)
        } else {
            Color32::from_gray(60)
        });
        for w in [
            &mut visuals.widgets.inactive,
            &mut visuals.widgets.hovered,
            &mut visuals.widgets.active,
            &mut visuals.widgets.open,
        ] {
            w.fg_stroke = egui::Stroke::new(w.fg_stroke.width.max(1.5), ink);
            w.bg_stroke = egui::Stroke::new(1.5, ink.gamma_multiply(0.7));
        }
        visuals.widgets.noninteractive.fg_stroke = egui::Stroke::new(1.5, ink);
        visuals.widgets.noninteractive.bg_stroke = egui::Stroke::new(1.0, ink.gamma_multiply(0.5));
        for (text_style, font) in style.text_styles.iter_mut() {
            // A size or two up on top of the zoom: body text 16 points.
            let extra = match text_style {
                egui::TextStyle::Small => 2.0,
                egui::TextStyle::Heading => 2.0,
                _ => 2.5,
            };
            font.size += extra;
        }
    }
    style.visuals = visuals;
    ctx.set_style_of(theme, style);
    ctx.set_theme(theme);
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
