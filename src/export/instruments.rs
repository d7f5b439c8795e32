//! Pictures of the instruments: the leaf directions as signed images (a diverging colour map, zero
//! neutral) and a chart as a K x K grid of labelled images.

use std::path::Path;

use image::{Rgba, RgbaImage};

use super::{caption, tile, ImageShape, Labelled};
use crate::geometry::directions::Direction;
use crate::walk::chart::Cell;

/// Negative end, zero and positive end of the diverging map (ColorBrewer RdBu).
const NEGATIVE: [f32; 3] = [33.0, 102.0, 172.0];
const ZERO: [f32; 3] = [247.0, 247.0, 247.0];
const POSITIVE: [f32; 3] = [178.0, 24.0, 43.0];

/// The diverging colour of t in [-1, 1]: blue below zero, near-white at zero, red above.
pub fn diverging(t: f32) -> [u8; 3] {
    let t = if t.is_finite() { t.clamp(-1.0, 1.0) } else { 0.0 };
    let end = if t < 0.0 { NEGATIVE } else { POSITIVE };
    let s = t.abs();
    let mut out = [0u8; 3];
    for c in 0..3 {
        out[c] = (ZERO[c] + s * (end[c] - ZERO[c])).round() as u8;
    }
    out
}

/// A direction as an RGB image of the input's height x width (channels averaged), each value over
/// the direction's largest |value|, so every direction uses the whole map with zero in the middle.
pub fn direction_rgb(u: &[f64], shape: ImageShape) -> Vec<[u8; 3]> {
    let plane = shape.height * shape.width;
    let mean: Vec<f64> = (0..plane)
        .map(|i| (0..shape.channels).map(|c| u[c * plane + i]).sum::<f64>() / shape.channels as f64)
        .collect();
    let top = mean.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let scale = if top > 0.0 { 1.0 / top } else { 0.0 };
    mean.iter().map(|v| diverging((v * scale) as f32)).collect()
}

/// What a top-k G was made of, as the instruments and their pictures say it (shared/REFERENCE.md
/// section 8): "G from the top 3 of 10 classes, dropped p 1.2e-3".
pub fn top_k_note(k: usize, classes: usize, dropped_mass: f64) -> String {
    format!("G from the top {k} of {classes} classes, dropped p {dropped_mass:.1e}")
}

/// The directions side by side, lambda_k under each; `note` (a top-k G's `top_k_note`) in a line
/// below them.
pub fn directions_strip(
    directions: &[Direction],
    shape: ImageShape,
    scale: u32,
    note: Option<&str>,
) -> RgbaImage {
    let (w, h) = (shape.width as u32 * scale, shape.height as u32 * scale);
    let gap = 4;
    let caption_px = 22;
    let note_px = if note.is_some() { 20 } else { 0 };
    let count = directions.len().max(1) as u32;
    let mut width = (w + gap) * count - gap;
    if let Some(note) = note {
        // Wide enough for the note when there are few directions.
        width = width.max(super::text_width(note, 13.0).ceil() as u32 + 8);
    }
    let mut canvas = RgbaImage::from_pixel(width, h + caption_px + note_px, Rgba([255; 4]));
    for (k, d) in directions.iter().enumerate() {
        let x0 = k as u32 * (w + gap);
        let rgb = direction_rgb(&d.u, shape);
        for y in 0..shape.height {
            for x in 0..shape.width {
                let [r, g, b] = rgb[y * shape.width + x];
                for dy in 0..scale {
                    for dx in 0..scale {
                        canvas.put_pixel(
                            x0 + x as u32 * scale + dx,
                            y as u32 * scale + dy,
                            Rgba([r, g, b, 255]),
                        );
                    }
                }
            }
        }
        caption(
            &mut canvas,
            &format!("λ{} {:.1e}", k + 1, d.lambda),
            x0,
            h + 2,
            w,
            13.0,
        );
    }
    if let Some(note) = note {
        caption(&mut canvas, note, 0, h + caption_px, width, 13.0);
    }
    canvas
}

/// The directions' PNG (`directions_strip` at 4x), as `dataleaf directions --png` and the app's
/// instruments write it.
pub fn write_directions(
    path: &Path,
    directions: &[Direction],
    shape: ImageShape,
    note: Option<&str>,
) -> Result<(), String> {
    directions_strip(directions, shape, 4, note)
        .save(path)
        .map_err(|e| format!("{}: cannot write the directions: {e}", path.display()))
}

/// The chart as a grid (top row = largest b), each cell captioned "class (p)"; cells whose class
/// differs from the centre's get a red frame; `note` (a top-k G's `top_k_note`) in a line below.
pub fn chart_grid(
    cells: &[Cell],
    size: usize,
    centre_class: usize,
    shape: ImageShape,
    classes: &[String],
    note: Option<&str>,
) -> RgbaImage {
    let scale = 3;
    let gap = 6u32;
    let name = |k: usize| classes.get(k).cloned().unwrap_or_else(|| k.to_string());
    let tiles: Vec<(RgbaImage, &Cell)> = cells
        .iter()
        .map(|c| {
            let frame = Labelled {
                pixels: &c.image,
                caption: format!("{} ({:.2})", name(c.prediction), c.max_prob),
            };
            (tile(&frame, shape, scale), c)
        })
        .collect();
    let (tw, th) = tiles.first().map_or((1, 1), |(t, _)| (t.width(), t.height()));
    let side = size as u32;
    let note_px = if note.is_some() { 20 } else { 0 };
    let mut width = side * (tw + gap) + gap;
    if let Some(note) = note {
        width = width.max(super::text_width(note, 13.0).ceil() as u32 + 8);
    }
    let mut canvas = RgbaImage::from_pixel(
        width,
        side * (th + gap) + gap + note_px,
        Rgba([255, 255, 255, 255]),
    );
    if let Some(note) = note {
        caption(&mut canvas, note, 0, side * (th + gap) + gap, width, 13.0);
    }
    for (t, c) in &tiles {
        let x0 = gap + c.column as u32 * (tw + gap);
        let y0 = gap + (size - 1 - c.row) as u32 * (th + gap);
        image::imageops::overlay(&mut canvas, t, x0 as i64, y0 as i64);
        let changed = c.prediction != centre_class;
        let centre = c.a == 0.0 && c.b == 0.0;
        if changed || centre {
            let colour = if centre {
                Rgba([40, 40, 40, 255])
            } else {
                Rgba([200, 30, 30, 255])
            };
            for i in 0..tw + 4 {
                for j in 0..2 {
                    let (xa, ya) = (x0 + i - 2, y0 - 2 + j);
                    let yb = y0 + th + j;
                    if xa < canvas.width() && yb < canvas.height() {
                        canvas.put_pixel(xa, ya, colour);
                        canvas.put_pixel(xa, yb, colour);
                    }
                }
            }
            for i in 0..th + 4 {
                for j in 0..2 {
                    let (ya, xa, xb) = (y0 + i - 2, x0 - 2 + j, x0 + tw + j);
                    if ya < canvas.height() && xb < canvas.width() {
                        canvas.put_pixel(xa, ya, colour);
                        canvas.put_pixel(xb, ya, colour);
                    }
                }
            }
        }
    }
    canvas
}

pub fn write_chart(
    path: &Path,
    cells: &[Cell],
    size: usize,
    centre_class: usize,
    shape: ImageShape,
    classes: &[String],
    note: Option<&str>,
) -> Result<(), String> {
    chart_grid(cells, size, centre_class, shape, classes, note)
        .save(path)
        .map_err(|e| format!("{}: cannot write the chart: {e}", path.display()))
}
