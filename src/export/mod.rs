//! Pictures of walks: a strip of evenly spaced frames labelled with prediction and probability
//! (as the papers show them), and an animated GIF.

use std::path::Path;

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use image::{Delay, Frame, Rgba, RgbaImage};

use crate::walk::Step;

pub mod instruments;

/// DejaVu Sans, shipped in assets/fonts (see assets/ATTRIBUTION).
pub const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// An image with its caption.
pub struct Labelled<'a> {
    pub pixels: &'a [f32],
    pub caption: String,
}

/// Up to `count` evenly spaced steps of a walk, captioned "class (max probability)" as the papers do.
pub fn walk_frames<'a>(steps: &'a [Step], count: usize, classes: &[String]) -> Vec<Labelled<'a>> {
    evenly_spaced(steps.len(), count)
        .into_iter()
        .map(|i| {
            let s = &steps[i];
            let class = classes
                .get(s.argmax)
                .cloned()
                .unwrap_or_else(|| s.argmax.to_string());
            Labelled {
                pixels: &s.x,
                caption: format!("{class} ({:.2})", s.max_prob()),
            }
        })
        .collect()
}

/// Image geometry: channels x height x width, pixels in [0, 1].
#[derive(Clone, Copy)]
pub struct ImageShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

const CAPTION_PX: u32 = 22;

/// Indices of `count` evenly spaced frames out of `len` (first and last included).
pub fn evenly_spaced(len: usize, count: usize) -> Vec<usize> {
    match (len, count) {
        (0, _) | (_, 0) => Vec::new(),
        (1, _) | (_, 1) => vec![len - 1],
        _ => {
            let mut v: Vec<usize> = (0..count).map(|k| k * (len - 1) / (count - 1)).collect();
            v.dedup();
            v
        }
    }
}

fn to_byte(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// Draw one image, upscaled by `scale` with square pixels, at (x0, y0).
pub(crate) fn blit(canvas: &mut RgbaImage, pixels: &[f32], shape: ImageShape, scale: u32, x0: u32, y0: u32) {
    let plane = shape.height * shape.width;
    for y in 0..shape.height {
        for x in 0..shape.width {
            let at = |c: usize| to_byte(pixels[(c.min(shape.channels - 1)) * plane + y * shape.width + x]);
            let colour = Rgba([at(0), at(1), at(2), 255]);
            for dy in 0..scale {
                for dx in 0..scale {
                    canvas.put_pixel(x0 + x as u32 * scale + dx, y0 + y as u32 * scale + dy, colour);
                }
            }
        }
    }
}

/// Width in pixels of `text` in the bundled font at `size` px.
pub fn text_width(text: &str, size: f32) -> f32 {
    let font = FontRef::try_from_slice(FONT).expect("the bundled font parses");
    let scaled = font.as_scaled(PxScale::from(size));
    text.chars().map(|c| scaled.h_advance(font.glyph_id(c))).sum()
}

/// Rasterise `text` in the bundled font from (x, baseline); `ink(px, py, coverage)` paints each
/// pixel a glyph covers. The one text renderer of strips, GIFs and experiment figures.
pub fn draw_text(text: &str, x: f32, baseline: f32, size: f32, mut ink: impl FnMut(i64, i64, f32)) {
    let font = FontRef::try_from_slice(FONT).expect("the bundled font parses");
    let scaled = font.as_scaled(PxScale::from(size));
    let mut pen = x;
    for ch in text.chars() {
        let glyph = font
            .glyph_id(ch)
            .with_scale_and_position(PxScale::from(size), ab_glyph::point(pen, baseline));
        pen += scaled.h_advance(glyph.id);
        if let Some(outline) = font.outline_glyph(glyph) {
            let bounds = outline.px_bounds();
            outline.draw(|gx, gy, coverage| {
                ink(
                    bounds.min.x as i64 + gx as i64,
                    bounds.min.y as i64 + gy as i64,
                    coverage,
                )
            });
        }
    }
}

/// Write `text` in black, centred in the box [x0, x0 + width), its top at `y0`.
pub(crate) fn caption(canvas: &mut RgbaImage, text: &str, x0: u32, y0: u32, width: u32, size: f32) {
    let font = FontRef::try_from_slice(FONT).expect("the bundled font parses");
    let left = x0 as f32 + ((width as f32 - text_width(text, size)) / 2.0).max(0.0);
    let baseline = y0 as f32 + font.as_scaled(PxScale::from(size)).ascent();
    draw_text(text, left, baseline, size, |px, py, coverage| {
        if px >= 0 && py >= 0 && (px as u32) < canvas.width() && (py as u32) < canvas.height() {
            let p = canvas.get_pixel_mut(px as u32, py as u32);
            let ink = 1.0 - coverage.clamp(0.0, 1.0);
            for c in 0..3 {
                p.0[c] = (p.0[c] as f32 * ink) as u8;
            }
        }
    });
}

/// One labelled frame: the image upscaled, the caption below on white.
pub(crate) fn tile(frame: &Labelled, shape: ImageShape, scale: u32) -> RgbaImage {
    let (w, h) = (shape.width as u32 * scale, shape.height as u32 * scale);
    let mut canvas = RgbaImage::from_pixel(w, h + CAPTION_PX, Rgba([255, 255, 255, 255]));
    blit(&mut canvas, frame.pixels, shape, scale, 0, 0);
    caption(&mut canvas, &frame.caption, 0, h + 2, w, 16.0);
    canvas
}

/// The frames side by side, with a 4-pixel white gap.
pub fn strip(frames: &[Labelled], shape: ImageShape, scale: u32) -> RgbaImage {
    let tiles: Vec<RgbaImage> = frames.iter().map(|f| tile(f, shape, scale)).collect();
    let gap = 4;
    let tw = tiles.first().map_or(0, |t| t.width());
    let th = tiles.first().map_or(0, |t| t.height());
    let n = tiles.len() as u32;
    let mut canvas = RgbaImage::from_pixel((tw + gap) * n.max(1) - gap, th, Rgba([255, 255, 255, 255]));
    for (k, t) in tiles.iter().enumerate() {
        image::imageops::overlay(&mut canvas, t, (k as u32 * (tw + gap)) as i64, 0);
    }
    canvas
}

pub fn write_strip(path: &Path, frames: &[Labelled], shape: ImageShape, scale: u32) -> Result<(), String> {
    strip(frames, shape, scale)
        .save(path)
        .map_err(|e| format!("{}: cannot write the strip: {e}", path.display()))
}

/// An animated GIF of the frames, `delay_ms` each, looping.
pub fn write_gif(
    path: &Path,
    frames: &[Labelled],
    shape: ImageShape,
    scale: u32,
    delay_ms: u32,
) -> Result<(), String> {
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut encoder = image::codecs::gif::GifEncoder::new_with_speed(std::io::BufWriter::new(file), 10);
    encoder
        .set_repeat(image::codecs::gif::Repeat::Infinite)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let frames = frames.iter().map(|f| {
        Frame::from_parts(
            tile(f, shape, scale),
            0,
            0,
            Delay::from_numer_denom_ms(delay_ms, 1),
        )
    });
    encoder
        .encode_frames(frames)
        .map_err(|e| format!("{}: cannot write the GIF: {e}", path.display()))
}
