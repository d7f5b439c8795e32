//! Small plotting for the experiments' figures: axes with ticks, lines, box plots, heat maps,
//! legends and image tiles. A `Canvas` draws each primitive twice over: at once into an
//! anti-aliased raster (the PNG and the app's texture), with text in the bundled DejaVu Sans
//! (`export::FONT`) so a figure never needs a system font; and into a list of shapes that
//! `to_svg` replays onto plotters' SVG back end, for a vector figure of the same layout (the SVG
//! names DejaVu Sans for its text, with sans-serif as the fallback).

use image::{Rgba, RgbaImage};
use plotters::prelude::{DrawingBackend, SVGBackend};
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontDesc, FontFamily, FontStyle, FontTransform, RGBColor, ShapeStyle, TextStyle};

pub type Colour = [u8; 3];

pub const BLACK: Colour = [0, 0, 0];
pub const GREY: Colour = [120, 120, 120];
pub const LIGHT: Colour = [225, 225, 225];
pub const WHITE: Colour = [255, 255, 255];
/// Distinguishable series colours (Tableau 10).
pub const PALETTE: [Colour; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Centre,
    Right,
}

/// One drawn primitive, kept for the SVG.
#[derive(Debug, Clone)]
enum Shape {
    Line {
        a: (f32, f32),
        b: (f32, f32),
        width: f32,
        colour: Colour,
    },
    Rect {
        x0: f32,
        y0: f32,
        x1: f32,
        y1: f32,
        colour: Colour,
    },
    Disc {
        centre: (f32, f32),
        radius: f32,
        colour: Colour,
    },
    Text {
        text: String,
        x: f32,
        y: f32,
        size: f32,
        colour: Colour,
        align: Align,
        vertical: bool,
    },
    Image {
        rgb: Vec<Colour>,
        width: usize,
        x0: f32,
        y0: f32,
        scale: u32,
    },
}

/// A white picture to draw on, in pixel coordinates (y down).
pub struct Canvas {
    pub img: RgbaImage,
    shapes: Vec<Shape>,
}

impl Canvas {
    pub fn new(width: u32, height: u32) -> Canvas {
        Canvas {
            img: RgbaImage::from_pixel(width, height, Rgba([255, 255, 255, 255])),
            shapes: Vec::new(),
        }
    }

    pub fn width(&self) -> f32 {
        self.img.width() as f32
    }

    pub fn height(&self) -> f32 {
        self.img.height() as f32
    }

    pub fn into_image(self) -> RgbaImage {
        self.img
    }

    /// Mix `colour` into one pixel with weight `alpha` in [0, 1]; outside the canvas does nothing.
    pub fn blend(&mut self, x: i64, y: i64, colour: Colour, alpha: f32) {
        if x < 0 || y < 0 || x >= self.img.width() as i64 || y >= self.img.height() as i64 {
            return;
        }
        let a = alpha.clamp(0.0, 1.0);
        let p = self.img.get_pixel_mut(x as u32, y as u32);
        for (channel, &target) in p.0.iter_mut().zip(&colour) {
            *channel = (*channel as f32 * (1.0 - a) + target as f32 * a).round() as u8;
        }
    }

    /// Fill the pixels whose centres lie in [x0, x1) x [y0, y1).
    pub fn fill_rect(&mut self, x0: f32, y0: f32, x1: f32, y1: f32, colour: Colour) {
        self.shapes.push(Shape::Rect {
            x0,
            y0,
            x1,
            y1,
            colour,
        });
        let (xa, xb) = (x0.min(x1).round() as i64, x0.max(x1).round() as i64);
        let (ya, yb) = (y0.min(y1).round() as i64, y0.max(y1).round() as i64);
        for y in ya..yb {
            for x in xa..xb {
                self.blend(x, y, colour, 1.0);
            }
        }
    }

    pub fn stroke_rect(&mut self, x0: f32, y0: f32, x1: f32, y1: f32, width: f32, colour: Colour) {
        self.line((x0, y0), (x1, y0), width, colour);
        self.line((x1, y0), (x1, y1), width, colour);
        self.line((x1, y1), (x0, y1), width, colour);
        self.line((x0, y1), (x0, y0), width, colour);
    }

    /// An anti-aliased segment of the given width (coverage from the distance to the segment).
    pub fn line(&mut self, a: (f32, f32), b: (f32, f32), width: f32, colour: Colour) {
        self.shapes.push(Shape::Line { a, b, width, colour });
        self.raster_line(a, b, width, colour);
    }

    fn raster_line(&mut self, a: (f32, f32), b: (f32, f32), width: f32, colour: Colour) {
        if !(a.0.is_finite() && a.1.is_finite() && b.0.is_finite() && b.1.is_finite()) {
            return;
        }
        let r = width / 2.0;
        let (x0, x1) = ((a.0.min(b.0) - r - 1.0).floor(), (a.0.max(b.0) + r + 1.0).ceil());
        let (y0, y1) = ((a.1.min(b.1) - r - 1.0).floor(), (a.1.max(b.1) + r + 1.0).ceil());
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let len2 = dx * dx + dy * dy;
        for y in y0 as i64..=y1 as i64 {
            for x in x0 as i64..=x1 as i64 {
                let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                let t = if len2 > 0.0 {
                    (((px - a.0) * dx + (py - a.1) * dy) / len2).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                let (cx, cy) = (a.0 + t * dx, a.1 + t * dy);
                let d = ((px - cx).powi(2) + (py - cy).powi(2)).sqrt();
                let coverage = (r + 0.5 - d).clamp(0.0, 1.0);
                if coverage > 0.0 {
                    self.blend(x, y, colour, coverage);
                }
            }
        }
    }

    /// A dashed segment: `dash` pixels drawn, `dash` skipped.
    pub fn dashed_line(&mut self, a: (f32, f32), b: (f32, f32), width: f32, dash: f32, colour: Colour) {
        let len = ((b.0 - a.0).powi(2) + (b.1 - a.1).powi(2)).sqrt();
        let pieces = (len / dash).ceil() as usize;
        for k in (0..pieces).step_by(2) {
            let t0 = k as f32 * dash / len;
            let t1 = ((k + 1) as f32 * dash / len).min(1.0);
            let at = |t: f32| (a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1));
            self.line(at(t0), at(t1), width, colour);
        }
    }

    /// A filled anti-aliased disc.
    pub fn disc(&mut self, centre: (f32, f32), radius: f32, colour: Colour) {
        self.shapes.push(Shape::Disc {
            centre,
            radius,
            colour,
        });
        self.raster_line(centre, centre, 2.0 * radius, colour);
    }

    /// Width in pixels of `text` at `size` px.
    pub fn text_width(&self, text: &str, size: f32) -> f32 {
        crate::export::text_width(text, size)
    }

    /// Draw `text` with its vertical middle at `y`, aligned on `x` as `align` says.
    pub fn text(&mut self, text: &str, x: f32, y: f32, size: f32, colour: Colour, align: Align) {
        self.shapes.push(Shape::Text {
            text: text.into(),
            x,
            y,
            size,
            colour,
            align,
            vertical: false,
        });
        let width = self.text_width(text, size);
        let left = match align {
            Align::Left => x,
            Align::Centre => x - width / 2.0,
            Align::Right => x - width,
        };
        // Cap height is about 0.72 em: centre the digits and capitals on y.
        let baseline = y + 0.36 * size;
        crate::export::draw_text(text, left, baseline, size, |px, py, coverage| {
            self.blend(px, py, colour, coverage)
        });
    }

    /// Text turned a quarter counter-clockwise (reading upward), centred on (x, y): y-axis labels.
    pub fn vertical_text(&mut self, text: &str, x: f32, y: f32, size: f32, colour: Colour) {
        self.shapes.push(Shape::Text {
            text: text.into(),
            x,
            y,
            size,
            colour,
            align: Align::Centre,
            vertical: true,
        });
        let w = self.text_width(text, size).ceil() as u32 + 4;
        let h = (size * 1.4).ceil() as u32;
        let mut tmp = Canvas::new(w, h);
        tmp.text(text, 2.0, h as f32 / 2.0, size, BLACK, Align::Left);
        let turned = image::imageops::rotate270(&tmp.img);
        let (x0, y0) = (x - turned.width() as f32 / 2.0, y - turned.height() as f32 / 2.0);
        for (tx, ty, p) in turned.enumerate_pixels() {
            let ink = 1.0 - p.0[0] as f32 / 255.0;
            if ink > 0.0 {
                self.blend(x0 as i64 + tx as i64, y0 as i64 + ty as i64, colour, ink);
            }
        }
    }

    /// A grey (one channel) or RGB (three) image in [0, 1], NCHW, upscaled by `scale`, top left at (x0, y0).
    pub fn image(&mut self, pixels: &[f32], shape: (usize, usize, usize), x0: f32, y0: f32, scale: u32) {
        let (channels, height, width) = shape;
        let plane = height * width;
        let mut rgb = Vec::with_capacity(plane);
        for y in 0..height {
            for x in 0..width {
                let at = |c: usize| {
                    let v = pixels[c.min(channels - 1) * plane + y * width + x];
                    (v.clamp(0.0, 1.0) * 255.0).round() as u8
                };
                let colour = [at(0), at(1), at(2)];
                rgb.push(colour);
                for dy in 0..scale {
                    for dx in 0..scale {
                        self.blend(
                            x0 as i64 + (x as u32 * scale + dx) as i64,
                            y0 as i64 + (y as u32 * scale + dy) as i64,
                            colour,
                            1.0,
                        );
                    }
                }
            }
        }
        self.shapes.push(Shape::Image {
            rgb,
            width,
            x0,
            y0,
            scale,
        });
    }

    /// A title centred across the top of the canvas.
    pub fn title(&mut self, text: &str) {
        let x = self.width() / 2.0;
        self.text(text, x, 18.0, 18.0, BLACK, Align::Centre);
    }

    /// One legend row per entry: a colour swatch and its label, from (x, y) downward.
    pub fn legend(&mut self, x: f32, y: f32, entries: &[(String, Colour)], size: f32) {
        for (k, (label, colour)) in entries.iter().enumerate() {
            let cy = y + k as f32 * (size * 1.5);
            self.line((x, cy), (x + 22.0, cy), 3.0, *colour);
            self.text(label, x + 30.0, cy, size, BLACK, Align::Left);
        }
    }

    /// The figure with a line of small text in a strip added below it (what every figure of a
    /// top-k run says about G), the same in the PNG and the SVG.
    pub fn with_caption(self, text: &str) -> Canvas {
        const STRIP: u32 = 26;
        let mut out = Canvas::new(self.img.width(), self.img.height() + STRIP);
        image::imageops::overlay(&mut out.img, &self.img, 0, 0);
        out.shapes = self.shapes;
        let y = self.img.height() as f32 + STRIP as f32 / 2.0;
        out.text(text, 12.0, y, 13.0, BLACK, Align::Left);
        out
    }

    pub fn save(&self, path: &std::path::Path) -> Result<(), String> {
        self.img
            .save(path)
            .map_err(|e| format!("{}: cannot write the plot: {e}", path.display()))
    }

    /// The figure as SVG: every primitive replayed onto plotters' SVG back end, in drawing order.
    /// Joined segments of one style become one path; image tiles become one rectangle per run of
    /// equal pixels in a row.
    pub fn to_svg(&self) -> String {
        let mut out = String::new();
        {
            let mut svg = SVGBackend::with_string(&mut out, (self.img.width(), self.img.height()));
            // Drawing into a String cannot fail; a failed primitive would only be missing.
            let _ = replay(&self.shapes, &mut svg, self.img.dimensions());
            let _ = svg.present();
        }
        out
    }
}

fn rgb(c: Colour) -> RGBColor {
    RGBColor(c[0], c[1], c[2])
}

fn px(v: f32) -> i32 {
    v.round() as i32
}

fn stroke(colour: Colour, width: f32) -> ShapeStyle {
    ShapeStyle {
        color: rgb(colour).into(),
        filled: false,
        stroke_width: width.round().max(1.0) as u32,
    }
}

fn fill(colour: Colour) -> ShapeStyle {
    ShapeStyle {
        color: rgb(colour).into(),
        filled: true,
        stroke_width: 1,
    }
}

/// The SVG font size (px per em) that matches the raster's `size` (ab_glyph's PxScale is the
/// height from descender to ascender, not the em).
fn em_of(size: f32) -> f32 {
    use ab_glyph::{Font, FontRef};
    let font = FontRef::try_from_slice(crate::export::FONT).expect("the bundled font parses");
    let per_em = font.units_per_em().unwrap_or(2048.0);
    size * per_em / font.height_unscaled()
}

fn replay<B: DrawingBackend>(shapes: &[Shape], out: &mut B, (width, height): (u32, u32)) -> Option<()> {
    out.draw_rect((0, 0), (width as i32, height as i32), &fill(WHITE), true)
        .ok()?;
    let mut k = 0;
    while k < shapes.len() {
        match &shapes[k] {
            Shape::Line { a, width, colour, .. } => {
                // Gather the segments that continue this one in the same style into a path.
                let mut points = vec![(px(a.0), px(a.1))];
                while let Some(Shape::Line {
                    a,
                    b,
                    width: w,
                    colour: c,
                }) = shapes.get(k)
                {
                    let last = *points.last().expect("non-empty");
                    if w != width || c != colour || (points.len() > 1 && (px(a.0), px(a.1)) != last) {
                        break;
                    }
                    points.push((px(b.0), px(b.1)));
                    k += 1;
                }
                out.draw_path(points, &stroke(*colour, *width)).ok()?;
                continue;
            }
            Shape::Rect {
                x0,
                y0,
                x1,
                y1,
                colour,
            } => out
                .draw_rect(
                    (px(x0.min(*x1)), px(y0.min(*y1))),
                    (px(x0.max(*x1)), px(y0.max(*y1))),
                    &fill(*colour),
                    true,
                )
                .ok()?,
            Shape::Disc {
                centre,
                radius,
                colour,
            } => out
                .draw_circle(
                    (px(centre.0), px(centre.1)),
                    radius.round().max(1.0) as u32,
                    &fill(*colour),
                    true,
                )
                .ok()?,
            Shape::Text {
                text,
                x,
                y,
                size,
                colour,
                align,
                vertical,
            } => {
                let em = em_of(*size);
                // plotters writes font-size = size / 1.24 and puts the baseline 0.76 em below a
                // top-anchored point; the raster's baseline is 0.36 size below y.
                let h = match align {
                    Align::Left => HPos::Left,
                    Align::Centre => HPos::Center,
                    Align::Right => HPos::Right,
                };
                let shift = 0.36 * size - 0.76 * em;
                let font = FontDesc::new(
                    FontFamily::Name("DejaVu Sans, sans-serif"),
                    (em * 1.24) as f64,
                    FontStyle::Normal,
                );
                let ink = rgb(*colour);
                let mut style = TextStyle::from(font).color(&ink).pos(Pos::new(h, VPos::Top));
                let at = if *vertical {
                    style = style.transform(FontTransform::Rotate270);
                    (px(x + shift), px(*y))
                } else {
                    (px(*x), px(y + shift))
                };
                out.draw_text(text, &style, at).ok()?;
            }
            Shape::Image {
                rgb: pixels,
                width,
                x0,
                y0,
                scale,
            } => {
                let s = *scale as i32;
                for (row, line) in pixels.chunks(*width).enumerate() {
                    let mut start = 0;
                    while start < line.len() {
                        let mut end = start + 1;
                        while end < line.len() && line[end] == line[start] {
                            end += 1;
                        }
                        let (left, top) = (px(*x0) + start as i32 * s, px(*y0) + row as i32 * s);
                        out.draw_rect(
                            (left, top),
                            (left + (end - start) as i32 * s, top + s),
                            &fill(line[start]),
                            true,
                        )
                        .ok()?;
                        start = end;
                    }
                }
            }
        }
        k += 1;
    }
    Some(())
}

/// Tick positions with their labels.
pub type Ticks = Vec<(f64, String)>;

/// About `count` round tick values (steps of 1, 2 or 5 times a power of ten) covering [lo, hi].
pub fn nice_ticks(lo: f64, hi: f64, count: usize) -> Ticks {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![(lo, format_tick(lo, 1.0))];
    }
    let raw = (hi - lo) / count.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last)
        .map(|k| {
            let v = k as f64 * step;
            (v, format_tick(v, step))
        })
        .collect()
}

fn format_tick(v: f64, step: f64) -> String {
    // As many decimals as the step needs: 0.25 -> 2, 0.5 -> 1, 2.5 -> 1, 5 -> 0.
    let mut decimals = 0;
    let mut scaled = step;
    while (scaled - scaled.round()).abs() > 1e-6 * scaled.abs().max(1.0) && decimals < 6 {
        scaled *= 10.0;
        decimals += 1;
    }
    let s = format!("{:.*}", decimals, v);
    if s == "-0" {
        "0".into()
    } else {
        s
    }
}

/// Five-number summary for a box plot: quartiles, and whiskers at the most extreme data within 1.5
/// interquartile ranges of the box (Tukey).
#[derive(Debug, Clone, Copy)]
pub struct BoxStats {
    pub low: f64,
    pub q1: f64,
    pub median: f64,
    pub q3: f64,
    pub high: f64,
}

/// The q-quantile of sorted data, by linear interpolation between order statistics.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos.fract());
    if i + 1 < sorted.len() {
        sorted[i] * (1.0 - frac) + sorted[i + 1] * frac
    } else {
        sorted[i]
    }
}

/// The median of finite values (NaN when there are none).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    quantile(&v, 0.5)
}

impl BoxStats {
    pub fn of(values: &[f64]) -> BoxStats {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        let (q1, median, q3) = (quantile(&v, 0.25), quantile(&v, 0.5), quantile(&v, 0.75));
        let reach = 1.5 * (q3 - q1);
        let low = v.iter().copied().find(|x| *x >= q1 - reach).unwrap_or(q1);
        let high = v.iter().rev().copied().find(|x| *x <= q3 + reach).unwrap_or(q3);
        BoxStats {
            low,
            q1,
            median,
            q3,
            high,
        }
    }
}

/// A plotting area inside a canvas, mapping data (x, y) to pixels.
#[derive(Debug, Clone, Copy)]
pub struct Axes {
    pub left: f32,
    pub top: f32,
    pub width: f32,
    pub height: f32,
    pub x: (f64, f64),
    pub y: (f64, f64),
}

impl Axes {
    pub fn new(left: f32, top: f32, width: f32, height: f32, x: (f64, f64), y: (f64, f64)) -> Axes {
        Axes {
            left,
            top,
            width,
            height,
            x,
            y,
        }
    }

    pub fn px(&self, x: f64, y: f64) -> (f32, f32) {
        let fx = (x - self.x.0) / (self.x.1 - self.x.0);
        let fy = (y - self.y.0) / (self.y.1 - self.y.0);
        (
            self.left + (fx as f32) * self.width,
            self.top + (1.0 - fy as f32) * self.height,
        )
    }

    /// Frame, grid lines at the ticks, tick labels, axis labels and a title above.
    pub fn frame(
        &self,
        c: &mut Canvas,
        title: &str,
        xlabel: &str,
        ylabel: &str,
        xticks: &Ticks,
        yticks: &Ticks,
    ) {
        let (l, t, r, b) = (
            self.left,
            self.top,
            self.left + self.width,
            self.top + self.height,
        );
        for (v, label) in yticks {
            let (_, y) = self.px(self.x.0, *v);
            if y < t - 0.5 || y > b + 0.5 {
                continue;
            }
            c.line((l, y), (r, y), 1.0, LIGHT);
            c.line((l - 5.0, y), (l, y), 1.0, BLACK);
            c.text(label, l - 8.0, y, 13.0, BLACK, Align::Right);
        }
        for (v, label) in xticks {
            let (x, _) = self.px(*v, self.y.0);
            if x < l - 0.5 || x > r + 0.5 {
                continue;
            }
            c.line((x, t), (x, b), 1.0, LIGHT);
            c.line((x, b), (x, b + 5.0), 1.0, BLACK);
            c.text(label, x, b + 16.0, 13.0, BLACK, Align::Centre);
        }
        c.stroke_rect(l, t, r, b, 1.0, BLACK);
        if !title.is_empty() {
            c.text(title, (l + r) / 2.0, t - 14.0, 15.0, BLACK, Align::Centre);
        }
        if !xlabel.is_empty() {
            c.text(xlabel, (l + r) / 2.0, b + 38.0, 14.0, BLACK, Align::Centre);
        }
        if !ylabel.is_empty() {
            let widest = yticks
                .iter()
                .map(|(_, s)| c.text_width(s, 13.0))
                .fold(0.0, f32::max);
            c.vertical_text(ylabel, l - 20.0 - widest, (t + b) / 2.0, 14.0, BLACK);
        }
    }

    /// Whether a data point lies inside the axes' ranges.
    fn inside(&self, x: f64, y: f64) -> bool {
        let within = |v: f64, (a, b): (f64, f64)| v >= a.min(b) - 1e-12 && v <= a.max(b) + 1e-12;
        within(x, self.x) && within(y, self.y)
    }

    /// A polyline through the finite points, with a dot at each.
    pub fn series(&self, c: &mut Canvas, points: &[(f64, f64)], width: f32, colour: Colour, dots: bool) {
        let finite: Vec<(f32, f32)> = points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| self.px(x, y))
            .collect();
        for pair in finite.windows(2) {
            c.line(pair[0], pair[1], width, colour);
        }
        if dots {
            for &p in &finite {
                c.disc(p, width + 1.5, colour);
            }
        }
    }

    /// A dashed polyline through the finite points (dashes restart at each vertex).
    pub fn dashed_series(&self, c: &mut Canvas, points: &[(f64, f64)], width: f32, colour: Colour) {
        let finite: Vec<(f32, f32)> = points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| self.px(x, y))
            .collect();
        for pair in finite.windows(2) {
            c.dashed_line(pair[0], pair[1], width, 7.0, colour);
        }
    }

    /// A dot per point inside the axes.
    pub fn scatter(&self, c: &mut Canvas, points: &[(f64, f64)], radius: f32, colour: Colour) {
        for &(x, y) in points {
            if x.is_finite() && y.is_finite() && self.inside(x, y) {
                c.disc(self.px(x, y), radius, colour);
            }
        }
    }

    /// A horizontal dashed reference line at y, labelled at the right end.
    pub fn reference(&self, c: &mut Canvas, y: f64, label: &str, colour: Colour) {
        let (x0, py) = self.px(self.x.0, y);
        let (x1, _) = self.px(self.x.1, y);
        c.dashed_line((x0, py), (x1, py), 1.5, 6.0, colour);
        if !label.is_empty() {
            c.text(label, x1 - 4.0, py - 9.0, 12.0, colour, Align::Right);
        }
    }

    /// A box plot centred on x, `half` data units wide.
    pub fn boxplot(&self, c: &mut Canvas, x: f64, half: f64, s: &BoxStats, colour: Colour) {
        if !s.median.is_finite() {
            return;
        }
        let (xl, yq3) = self.px(x - half, s.q3);
        let (xr, yq1) = self.px(x + half, s.q1);
        let (xm, ylow) = self.px(x, s.low);
        let (_, yhigh) = self.px(x, s.high);
        let (_, ymed) = self.px(x, s.median);
        let pale = [
            ((colour[0] as u16 + 2 * 255) / 3) as u8,
            ((colour[1] as u16 + 2 * 255) / 3) as u8,
            ((colour[2] as u16 + 2 * 255) / 3) as u8,
        ];
        c.line((xm, ylow), (xm, yq1), 1.0, colour);
        c.line((xm, yq3), (xm, yhigh), 1.0, colour);
        let cap = (xr - xl) / 4.0;
        c.line((xm - cap, ylow), (xm + cap, ylow), 1.0, colour);
        c.line((xm - cap, yhigh), (xm + cap, yhigh), 1.0, colour);
        c.fill_rect(xl, yq3, xr, yq1.max(yq3 + 1.0), pale);
        c.stroke_rect(xl, yq3, xr, yq1.max(yq3 + 1.0), 1.0, colour);
        c.line((xl, ymed), (xr, ymed), 2.5, colour);
    }
}

/// A colour on a white-to-blue ramp for t in [0, 1].
pub fn ramp(t: f64) -> Colour {
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 };
    let lerp = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    [lerp(247.0, 8.0), lerp(251.0, 48.0), lerp(255.0, 107.0)]
}

/// A labelled heat map of a square matrix in the box (left, top, size), values printed in the cells.
pub fn heatmap(
    c: &mut Canvas,
    left: f32,
    top: f32,
    size: f32,
    matrix: &[Vec<f64>],
    labels: &[String],
    title: &str,
) {
    let n = matrix.len().max(1);
    let cell = size / n as f32;
    let max = matrix
        .iter()
        .flatten()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    for (i, row) in matrix.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            let t = if max > 0.0 { v / max } else { 0.0 };
            let (x0, y0) = (left + j as f32 * cell, top + i as f32 * cell);
            c.fill_rect(x0, y0, x0 + cell, y0 + cell, ramp(t));
            let ink = if t > 0.55 { WHITE } else { BLACK };
            c.text(
                &format!("{v:.2}"),
                x0 + cell / 2.0,
                y0 + cell / 2.0,
                13.0,
                ink,
                Align::Centre,
            );
        }
    }
    c.stroke_rect(left, top, left + size, top + size, 1.0, BLACK);
    for (k, label) in labels.iter().enumerate() {
        let mid = (k as f32 + 0.5) * cell;
        c.text(label, left - 6.0, top + mid, 13.0, BLACK, Align::Right);
        c.vertical_text(
            label,
            left + mid,
            top + size + 8.0 + c.text_width(label, 13.0) / 2.0,
            13.0,
            BLACK,
        );
    }
    if !title.is_empty() {
        c.text(title, left + size / 2.0, top - 14.0, 15.0, BLACK, Align::Centre);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let t = nice_ticks(0.0, 1.0, 5);
        assert_eq!(t.first().unwrap().1, "0.0");
        assert_eq!(t.last().unwrap().1, "1.0");
        let t = nice_ticks(-8.3, 0.6, 6);
        assert!(t.iter().any(|(v, _)| *v == 0.0));
        assert!(t.iter().all(|(v, _)| *v >= -8.3 && *v <= 0.6));
    }

    #[test]
    fn box_stats_of_a_range() {
        let v: Vec<f64> = (0..=100).map(|k| k as f64).collect();
        let s = BoxStats::of(&v);
        assert_eq!((s.q1, s.median, s.q3), (25.0, 50.0, 75.0));
        assert_eq!((s.low, s.high), (0.0, 100.0));
    }
}
