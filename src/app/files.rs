//! Opening models and datasets (file dialog, typed path, drag and drop) and writing exports.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver};

use image::{Rgba, RgbaImage};

use super::history::{self, History};
use super::state::Settings;
use super::style::{self, Shape};
use super::worker::{Frame, Lane};
use super::Action;
use crate::export::{self, ImageShape, Labelled};

/// What a picked or dropped file is opened as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Model,
    Dataset,
}

impl Kind {
    /// A .json, .safetensors or .onnx file is a model; anything else (an IDX file or folder) a dataset.
    pub fn of(path: &Path) -> Kind {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("json") | Some("safetensors") | Some("onnx") => Kind::Model,
            _ => Kind::Dataset,
        }
    }

    pub fn action(self, spec: String) -> Action {
        match self {
            Kind::Model => Action::Load {
                model: Some(spec),
                dataset: None,
            },
            Kind::Dataset => Action::Load {
                model: None,
                dataset: Some(spec),
            },
        }
    }
}

/// The "Open" window: typed paths (rfd returns nothing when no desktop portal runs), recent files.
#[derive(Default)]
pub struct FilesWindow {
    pub open: bool,
    model: String,
    dataset: String,
    /// A file dialog running on its own thread, so the window keeps drawing meanwhile.
    picking: Option<(Kind, Receiver<Option<PathBuf>>)>,
}

impl FilesWindow {
    /// Ask the desktop for a file; when it gives nothing, this window opens for a typed path.
    pub fn pick(&mut self, kind: Kind) {
        let (tx, rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("file dialog".into())
            .spawn(move || {
                let dialog = rfd::FileDialog::new();
                let dialog = match kind {
                    Kind::Model => dialog
                        .set_title("Open a model (.onnx or .json)")
                        .add_filter("model", &["onnx", "json"]),
                    Kind::Dataset => dialog.set_title("Open an IDX images file (a folder: type its path)"),
                };
                let _ = tx.send(dialog.pick_file());
            });
        match spawned {
            Ok(_) => self.picking = Some((kind, rx)),
            Err(_) => self.open = true,
        }
    }

    /// A finished file dialog's choice, as an action; opens the window when the dialog gave nothing.
    pub fn poll(&mut self, actions: &mut Vec<Action>) {
        let Some((kind, rx)) = &self.picking else { return };
        match rx.try_recv() {
            Ok(Some(path)) => {
                actions.push(kind.action(path.display().to_string()));
                self.picking = None;
            }
            Ok(None) | Err(mpsc::TryRecvError::Disconnected) => {
                self.picking = None;
                self.open = true;
            }
            Err(mpsc::TryRecvError::Empty) => {}
        }
    }

    pub fn ui(&mut self, ctx: &egui::Context, settings: &mut Settings, actions: &mut Vec<Action>) {
        if !self.open {
            return;
        }
        let mut open = self.open;
        egui::Window::new("Open a model or a dataset")
            .open(&mut open)
            .collapsible(false)
            .default_width(560.0)
            .default_pos(ctx.content_rect().center_top() + egui::vec2(-280.0, 90.0))
            .show(ctx, |ui| {
                ui.label("Type a path, or drop files on the window.");
                // Plain rows (a grid sizes its cells a frame late, squeezing the fields).
                let row = |ui: &mut egui::Ui, name: &str, text: &mut String, hint: &str| -> bool {
                    ui.horizontal(|ui| {
                        let label = ui.add_sized([110.0, 20.0], egui::Label::new(name));
                        ui.add(
                            egui::TextEdit::singleline(text)
                                .hint_text(hint)
                                .desired_width(320.0),
                        )
                        .labelled_by(label.id);
                        ui.button(format!("Load {}", name.to_lowercase())).clicked()
                            && !text.trim().is_empty()
                    })
                    .inner
                };
                if row(
                    ui,
                    "Model",
                    &mut self.model,
                    "path/to/model.onnx or .json, or mnist-medium-cnn",
                ) {
                    actions.push(Kind::Model.action(self.model.trim().to_string()));
                }
                if row(
                    ui,
                    "Dataset",
                    &mut self.dataset,
                    "mnist, fashion-mnist, an IDX folder or file",
                ) {
                    actions.push(Kind::Dataset.action(self.dataset.trim().to_string()));
                }
                ui.horizontal(|ui| {
                    let label = ui.add_sized([110.0, 20.0], egui::Label::new("Export folder"));
                    ui.add(egui::TextEdit::singleline(&mut settings.export_dir).desired_width(320.0))
                        .labelled_by(label.id);
                });
                ui.separator();
                ui.horizontal_wrapped(|ui| {
                    ui.label("Built in:");
                    for name in crate::data::BUILT_IN {
                        if ui.small_button(*name).clicked() {
                            actions.push(Kind::Dataset.action(name.to_string()));
                        }
                    }
                });
                for (kind, list) in [
                    (Kind::Model, &settings.recent_models),
                    (Kind::Dataset, &settings.recent_datasets),
                ] {
                    if list.is_empty() {
                        continue;
                    }
                    ui.label(if kind == Kind::Model {
                        "Recent models"
                    } else {
                        "Recent datasets"
                    });
                    for spec in list {
                        if ui.small_button(spec).clicked() {
                            actions.push(kind.action(spec.clone()));
                        }
                    }
                }
            });
        self.open = open;
    }
}

/// Files dropped on the window this frame, as load actions.
pub fn dropped(ctx: &egui::Context, actions: &mut Vec<Action>) {
    let paths: Vec<PathBuf> = ctx.input(|i| {
        i.raw
            .dropped_files
            .iter()
            .map(|f| f.path().to_path_buf())
            .collect()
    });
    for path in paths {
        actions.push(Kind::of(&path).action(path.display().to_string()));
    }
}

/// What the exports need besides the frames.
pub struct ExportInput<'a> {
    pub history: &'a History,
    pub shape: Shape,
    pub classes: &'a [String],
    /// A file name stem naming the walk, e.g. "4185-5874".
    pub stem: String,
    pub dir: &'a Path,
}

fn caption(f: &Frame, classes: &[String]) -> String {
    format!(
        "{}: {} ({:.2})",
        f.index,
        style::class_name(classes, f.argmax),
        f.max_prob()
    )
}

fn image_shape((channels, height, width): Shape) -> ImageShape {
    ImageShape {
        channels,
        height,
        width,
    }
}

fn lane_strip(frames: &[Frame], input: &ExportInput, count: usize) -> Option<RgbaImage> {
    if frames.is_empty() {
        return None;
    }
    let picks = export::evenly_spaced(frames.len(), count);
    let captions: Vec<String> = picks
        .iter()
        .map(|&i| caption(&frames[i], input.classes))
        .collect();
    let labelled: Vec<Labelled> = picks
        .iter()
        .zip(&captions)
        .map(|(&i, c)| Labelled {
            pixels: &frames[i].image,
            caption: c.clone(),
        })
        .collect();
    Some(export::strip(&labelled, image_shape(input.shape), 4))
}

/// Images stacked top to bottom on white, 12 pixels apart.
fn stack(rows: Vec<RgbaImage>) -> Option<RgbaImage> {
    let gap = 12;
    let width = rows.iter().map(|r| r.width()).max()?;
    let height = rows.iter().map(|r| r.height()).sum::<u32>() + gap * (rows.len() as u32 - 1);
    let mut canvas = RgbaImage::from_pixel(width, height, Rgba([255, 255, 255, 255]));
    let mut y = 0;
    for row in &rows {
        image::imageops::overlay(&mut canvas, row, 0, y as i64);
        y += row.height() + gap;
    }
    Some(canvas)
}

/// Nine evenly spaced frames of each lane, the leaf lane above the kernel lane.
pub fn write_strip(input: &ExportInput) -> Result<PathBuf, String> {
    let rows: Vec<RgbaImage> = Lane::BOTH
        .iter()
        .filter_map(|&l| lane_strip(input.history.lane(l), input, 9))
        .collect();
    let canvas = stack(rows).ok_or("nothing to export yet: the walk has no frames")?;
    let path = input.dir.join(format!("dataleaf-{}-strip.png", input.stem));
    canvas
        .save(&path)
        .map_err(|e| format!("{}: cannot write the strip: {e}", path.display()))?;
    Ok(path)
}

/// Both lanes side by side, one GIF frame per shown step (at most 120, evenly spaced).
pub fn write_gif(input: &ExportInput) -> Result<PathBuf, String> {
    let len = input.history.len();
    if len == 0 {
        return Err("nothing to export yet: the walk has no frames".into());
    }
    let path = input.dir.join(format!("dataleaf-{}-walk.gif", input.stem));
    let file = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut encoder = image::codecs::gif::GifEncoder::new_with_speed(std::io::BufWriter::new(file), 10);
    encoder
        .set_repeat(image::codecs::gif::Repeat::Infinite)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let frames = export::evenly_spaced(len, len.min(120)).into_iter().map(|i| {
        let shown: Vec<&Frame> = Lane::BOTH
            .iter()
            .filter_map(|&l| input.history.frame(l, Some(i)))
            .collect();
        let captions: Vec<String> = shown.iter().map(|f| caption(f, input.classes)).collect();
        let labelled: Vec<Labelled> = shown
            .iter()
            .zip(&captions)
            .map(|(f, c)| Labelled {
                pixels: &f.image,
                caption: c.clone(),
            })
            .collect();
        let canvas = export::strip(&labelled, image_shape(input.shape), 4);
        image::Frame::from_parts(canvas, 0, 0, image::Delay::from_numer_denom_ms(80, 1))
    });
    encoder
        .encode_frames(frames)
        .map_err(|e| format!("{}: cannot write the GIF: {e}", path.display()))?;
    Ok(path)
}

/// The plotted series, one row per step.
pub fn write_csv(input: &ExportInput) -> Result<PathBuf, String> {
    if input.history.is_empty() {
        return Err("nothing to export yet: the walk has no frames".into());
    }
    let path = input.dir.join(format!("dataleaf-{}-series.csv", input.stem));
    std::fs::write(&path, history::to_csv(input.history, input.classes))
        .map_err(|e| format!("{}: cannot write the CSV: {e}", path.display()))?;
    Ok(path)
}
