//! The desktop app: a gallery to choose a start and a target, two walks animated side by side
//! (along the data leaf, across leaves), and live plots of G's spectrum, the probabilities and
//! the series over steps. A background worker owns the model and runs the walks
//! (`worker`); this thread only draws and sends commands. No mathematics lives here.

mod commands;
mod draw_pad;
mod experiments_view;
mod files;
pub mod frame_stats;
mod gallery;
mod history;
pub mod instruments;
mod plane_view;
mod plane_worker;
mod plots;
mod sched;
mod state;
mod style;
mod walk_view;
mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use egui::{Color32, RichText};

pub use commands::Command;
pub use history::{History, Series};
pub use plane_view::Layers as PlaneLayers;
pub use plane_worker::{Curves, PlaneFrame, HEAT_CELLS, TRAINING_HEAT_CELLS};
pub use state::{
    find_preset, presets_of, Choice, ClassesInG, Domain, KernelDirection, Params, Preset, Settings, PRESETS,
};
pub use walk_view::EXPLANATION;
pub use worker::{Frame, Lane, ModelInfo};

use crate::data::Dataset;
use crate::walk;
use worker::{Reply, Request, Setup, WorkerHandle};

/// How the app is started (from the command line, or by a test).
#[derive(Debug, Clone, Default)]
pub struct AppOptions {
    /// Model to open instead of the remembered one.
    pub model: Option<String>,
    /// Dataset to open instead of the remembered one.
    pub dataset: Option<String>,
    /// Load this preset (index into `PRESETS`) and play it.
    pub preset: Option<usize>,
    /// Start playing once loaded.
    pub play: bool,
    /// Save a screenshot of the window here once the leaf lane has `screenshot_step` steps (or
    /// the walks have ended), then close.
    pub screenshot: Option<PathBuf>,
    pub screenshot_step: usize,
    /// Start from the defaults; the run neither reads nor changes the remembered state.
    pub fresh: bool,
    pub lecture: bool,
    /// Open onto the 2-D plane view.
    pub plane: bool,
    /// Plane view: train this many steps at once, then pause (for a scripted screenshot).
    pub plane_train_steps: usize,
    /// Plane view: draw the curves through this point.
    pub plane_click: Option<[f64; 2]>,
    /// Plane view: open this features model instead of training one.
    pub plane_model: Option<String>,
    /// Plane view: sweep the preimage of this interval [a, b] of outputs from the clicked point.
    pub plane_interval: Option<(f64, f64)>,
    /// Open the instruments window (leaf directions and chart).
    pub instruments: bool,
    /// When the process started, for the start-up log line (`DATALEAF_LOG_STARTUP=1`).
    pub launched: Option<Instant>,
    /// The walks' speed instead of the remembered one: steps per second per lane, or None for
    /// as fast as possible.
    pub speed: Option<Option<f32>>,
    /// "Classes in G" for this run: the top K (`dataleaf --top-k K`) instead of the remembered one.
    pub top_k: Option<usize>,
}

/// Something a panel asks the app to do.
#[derive(Debug, Clone)]
pub enum Action {
    Command(Command),
    SetStart(Choice),
    SetTarget(Option<Choice>),
    Load {
        model: Option<String>,
        dataset: Option<String>,
    },
    ParamsChanged,
    Speed,
    Scrub(Option<usize>),
    Error(String),
}

/// A line in the status area: errors stay until dismissed, notes fade.
struct Message {
    text: String,
    error: bool,
    time: f64,
}

/// Shown beside the model's name when it is not piecewise linear.
pub const SMOOTH_NOTE: &str = "This model uses smooth activations (sigmoid/tanh/GELU): the foliation results assume ReLU networks; G is still computed.";

/// Seconds a note stays.
const NOTE_SECONDS: f64 = 8.0;

enum Shot {
    Off,
    /// The file, and when to take the picture anyway (nothing to walk, or walks too slow).
    Waiting(PathBuf, std::time::Instant),
    Requested,
}

/// A scripted screenshot never waits longer than this for its walk frames.
const SCREENSHOT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(90);

pub struct DataleafApp {
    settings: Settings,
    options: AppOptions,
    worker: WorkerHandle,
    model: Option<ModelInfo>,
    data: Option<Arc<Dataset>>,
    history: History,
    session: u64,
    playing: bool,
    /// The scrubbed step; None follows the newest.
    at: Option<usize>,
    /// Parameters changed after the walks began.
    stale: bool,
    pending_preset: Option<usize>,
    /// The preset last chosen: where Page Down / Page Up go on from, like slides.
    current_preset: Option<usize>,
    /// The screen is blanked (B).
    blank: bool,
    gallery: gallery::Gallery,
    walk_view: walk_view::WalkView,
    plots: plots::Plots,
    draw_pad: draw_pad::DrawPad,
    files: files::FilesWindow,
    experiments: experiments_view::ExperimentsView,
    instruments: instruments::InstrumentsView,
    plane: plane_view::PlaneView,
    /// The plane view fills the window instead of the image walks.
    plane_mode: bool,
    messages: Vec<Message>,
    shot: Shot,
    /// Recent UI frame times in milliseconds: the frame's work as eframe reports it (ui,
    /// tessellation, painting; waiting for vsync excluded), or the work of `ui` alone in tests.
    frame_ms: Vec<f32>,
    /// Wall-clock milliseconds between recent frames.
    intervals: Vec<f32>,
    last_frame: Option<Instant>,
    /// When the app was built, for the first frame's log line.
    launched: Instant,
    /// Start-up log lines written: 0 none, 1 the first frame's layout, 2 its painting.
    first_frame_logged: u8,
    /// The window has been fitted to the screen once.
    screen_fitted: bool,
    /// Milliseconds from launch to the app's construction (the window and renderer are up by then).
    built_ms: f64,
    /// Each lane's pace, indexed by `Lane as usize`.
    rates: [frame_stats::LaneRate; 2],
    /// The frame-time log asked for by `DATALEAF_FRAME_LOG`.
    frame_log: Option<frame_stats::FrameLog>,
}

/// The app in a native window.
pub fn run(options: AppOptions) -> Result<(), String> {
    let native = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("dataleaf")
            .with_app_id("dataleaf")
            .with_inner_size([1600.0, 1000.0])
            .with_min_inner_size([900.0, 600.0])
            .with_drag_and_drop(true),
        // The bundled DejaVu Sans covers every glyph the app draws; scanning the system's fonts
        // would only delay the first frame.
        system_font_fallback: false,
        ..Default::default()
    };
    let native = if options.fresh {
        // A fresh run reads none of the remembered state (window, panels, settings) and writes none.
        eframe::NativeOptions {
            persistence_path: Some(
                std::env::temp_dir().join(format!("dataleaf-fresh-{}.ron", std::process::id())),
            ),
            persist_window: false,
            ..native
        }
    } else {
        native
    };
    eframe::run_native(
        "dataleaf",
        native,
        Box::new(move |cc| Ok(Box::new(DataleafApp::new(cc, options)))),
    )
    .map_err(|e| format!("cannot open the window: {e}"))
}

impl DataleafApp {
    pub fn new(cc: &eframe::CreationContext<'_>, options: AppOptions) -> DataleafApp {
        let launched = options.launched.unwrap_or_else(Instant::now);
        // A frame's work waits for no walk step (see sched.rs).
        sched::request_slice(sched::UI_SLICE);
        style::install(&cc.egui_ctx);
        let mut settings: Settings = if options.fresh {
            Settings::default()
        } else {
            cc.storage
                .and_then(|s| eframe::get_value(s, eframe::APP_KEY))
                .unwrap_or_default()
        };
        if let Some(m) = &options.model {
            settings.model = m.clone();
        }
        if let Some(d) = &options.dataset {
            settings.dataset = d.clone();
        }
        if let Some(speed) = options.speed {
            settings.speed = speed;
        }
        if let Some(k) = options.top_k {
            settings.params.classes_in_g = ClassesInG::Top(k);
        }
        if options.lecture {
            settings.lecture = true;
            settings.gallery = false;
        }
        style::apply_theme(&cc.egui_ctx, settings.lecture, settings.dark);
        let worker = WorkerHandle::spawn(
            cc.egui_ctx.clone(),
            settings.model.clone(),
            settings.dataset.clone(),
        );
        worker.send(Request::Speed(settings.speed));
        let mut plane = plane_view::PlaneView::default();
        if options.plane_train_steps > 0 || options.plane_click.is_some() || options.plane_interval.is_some()
        {
            plane.script(plane_view::Script {
                train_steps: options.plane_train_steps,
                click: options.plane_click,
                interval: options.plane_interval,
            });
        }
        if let Some(m) = &options.plane_model {
            plane.open_model(m);
        }
        let plane_mode = options.plane || options.plane_model.is_some();
        let shot = match &options.screenshot {
            Some(path) => Shot::Waiting(path.clone(), std::time::Instant::now() + SCREENSHOT_DEADLINE),
            None => Shot::Off,
        };
        let instruments_open = options.instruments;
        DataleafApp {
            pending_preset: options.preset,
            current_preset: options.preset,
            blank: false,
            settings,
            options,
            worker,
            model: None,
            data: None,
            history: History::default(),
            session: 0,
            playing: false,
            at: None,
            stale: false,
            gallery: Default::default(),
            walk_view: Default::default(),
            plots: Default::default(),
            draw_pad: Default::default(),
            files: Default::default(),
            experiments: Default::default(),
            instruments: instruments::InstrumentsView::opened(instruments_open),
            plane,
            plane_mode,
            messages: Vec::new(),
            shot,
            frame_ms: Vec::new(),
            intervals: Vec::new(),
            last_frame: None,
            launched,
            first_frame_logged: 0,
            screen_fitted: false,
            built_ms: launched.elapsed().as_secs_f64() * 1000.0,
            rates: Default::default(),
            frame_log: frame_stats::FrameLog::from_env(),
        }
    }

    // What tests and the screenshot tool read.

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    pub fn model(&self) -> Option<&ModelInfo> {
        self.model.as_ref()
    }

    pub fn dataset(&self) -> Option<&Dataset> {
        self.data.as_deref()
    }

    pub fn is_playing(&self) -> bool {
        self.playing
    }

    /// The preset last chosen (Page Down / Page Up go on from it).
    pub fn current_preset(&self) -> Option<usize> {
        self.current_preset
    }

    /// The step shown: None follows the newest.
    pub fn shown_step(&self) -> Option<usize> {
        self.at
    }

    /// Whether the screen is blanked.
    pub fn is_blank(&self) -> bool {
        self.blank
    }

    /// The experiments window: whether a run is going, its summary or error when done.
    pub fn experiment_running(&self) -> bool {
        self.experiments.is_running()
    }

    pub fn experiment_summary(&self) -> Option<&str> {
        self.experiments.summary()
    }

    pub fn experiment_error(&self) -> Option<&str> {
        self.experiments.error()
    }

    /// Whether the plane view fills the window.
    /// The instruments window (leaf directions, chart), for tests.
    pub fn instruments(&self) -> &instruments::InstrumentsView {
        &self.instruments
    }

    pub fn instruments_mut(&mut self) -> &mut instruments::InstrumentsView {
        &mut self.instruments
    }

    pub fn plane_mode(&self) -> bool {
        self.plane_mode
    }

    /// The plane view's latest frame (what its canvas shows).
    pub fn plane_frame(&self) -> Option<&PlaneFrame> {
        self.plane.frame()
    }

    /// The plane view's error, if it shows one.
    pub fn plane_error(&self) -> Option<&str> {
        self.plane.error()
    }

    /// The errors shown in the window.
    pub fn errors(&self) -> Vec<&str> {
        self.messages
            .iter()
            .filter(|m| m.error)
            .map(|m| m.text.as_str())
            .collect()
    }

    /// Recent UI frame times in milliseconds.
    pub fn frame_times(&self) -> &[f32] {
        &self.frame_ms
    }

    /// A lane's pace: its steps per second and the worker's time per step.
    pub fn lane_rate(&self, lane: Lane) -> &frame_stats::LaneRate {
        &self.rates[lane as usize]
    }

    fn note(&mut self, text: String, time: f64) {
        self.messages.push(Message {
            text,
            error: false,
            time,
        });
    }

    fn error(&mut self, text: String, time: f64) {
        // Logged as well as shown: the terminal keeps what the window forgets.
        eprintln!("dataleaf: {text}");
        self.messages.push(Message {
            text,
            error: true,
            time,
        });
    }

    fn shape(&self) -> Option<style::Shape> {
        self.data.as_ref().map(|d| (d.channels, d.height, d.width))
    }

    fn classes(&self) -> Vec<String> {
        match (&self.model, &self.data) {
            // The dataset's names (Fashion-MNIST's, say) beat the model's digits when they agree in number.
            (Some(m), Some(d)) if d.class_names.len() == m.classes.len() => d.class_names.clone(),
            (Some(m), _) => m.classes.clone(),
            (None, Some(d)) => d.class_names.clone(),
            (None, None) => Vec::new(),
        }
    }

    /// The pixels of a choice, if it fits the current dataset.
    fn pixels(&self, choice: &Choice) -> Option<Vec<f32>> {
        let data = self.data.as_ref()?;
        match choice {
            Choice::Index(i) if *i < data.len() => data.image(*i).map(<[f32]>::to_vec),
            Choice::Index(_) => None,
            Choice::Drawn(p) if p.len() == data.image_len() => Some(p.clone()),
            Choice::Drawn(_) => None,
        }
    }

    fn label_of(&self, choice: &Option<Choice>) -> Option<String> {
        let data = self.data.as_ref()?;
        match choice {
            Some(Choice::Index(i)) => data
                .labels
                .get(*i)
                .map(|&l| style::class_name(&data.class_names, l)),
            _ => None,
        }
    }

    /// Start new walks from the chosen start toward the chosen target, with the current settings.
    fn restart(&mut self) {
        self.session += 1;
        self.at = None;
        self.stale = false;
        let start = self.settings.start.as_ref().and_then(|c| self.pixels(c));
        let width = self.data.as_ref().map_or(1, |d| d.width);
        let target = self
            .settings
            .target
            .as_ref()
            .and_then(|c| self.pixels(c))
            .map(|t| {
                if self.settings.mirror {
                    walk::mirror(&t, width)
                } else {
                    t
                }
            });
        self.history.reset(self.session, start.clone(), target.clone());
        self.rates.iter_mut().for_each(frame_stats::LaneRate::reset);
        let Some(start) = start else { return };
        if self.model.is_none() {
            return;
        }
        self.worker.send(Request::Setup(Setup {
            session: self.session,
            start,
            target,
            params: self.settings.params.clone(),
        }));
    }

    fn play(&mut self, on: bool) {
        self.playing = on;
        self.worker.send(if on { Request::Play } else { Request::Pause });
    }

    fn apply_preset(&mut self, index: usize, time: f64) {
        let Some(p) = PRESETS.get(index) else { return };
        self.current_preset = Some(index);
        let domain = p.domain;
        let model_ok = self.settings.model.eq_ignore_ascii_case(domain.model());
        let data_ok = self.settings.dataset.eq_ignore_ascii_case(domain.dataset());
        if !model_ok || !data_ok {
            // A preset's indices point into its domain's test set, walked by its domain's model.
            self.pending_preset = Some(index);
            self.playing = false;
            self.worker.send(Request::Pause);
            self.worker.send(Request::Load {
                model: (!model_ok).then(|| domain.model().to_string()),
                dataset: (!data_ok).then(|| domain.dataset().to_string()),
            });
            self.note(format!("opening {} for the preset", domain.name()), time);
            return;
        }
        self.settings.start = Some(Choice::Index(p.start));
        self.settings.target = p.target.map(Choice::Index);
        self.settings.mirror = p.mirror;
        self.settings.params = Params {
            noise_steps: p.noise_steps,
            seed: p.seed,
            // How G is built is the machine's choice (and `--top-k`'s), not the figure's.
            classes_in_g: self.settings.params.classes_in_g,
            ..Params::default()
        };
        self.gallery.reveal(p.start);
        self.restart();
        self.play(true);
    }

    /// The walk's key frames: the filmstrip's evenly spaced steps of what has been computed.
    fn key_frames(&self) -> Vec<usize> {
        crate::export::evenly_spaced(self.history.len(), walk_view::STRIP)
    }

    /// Page Down: within a walk scrubbed back, its next key frame; otherwise the next preset.
    fn next_slide(&mut self, time: f64) {
        if let Some(at) = self.at {
            if let Some(&k) = self.key_frames().iter().find(|&&k| k > at) {
                self.at = Some(k);
                return;
            }
        }
        let next = self.current_preset.map_or(0, |i| i + 1);
        if next < PRESETS.len() {
            self.apply_preset(next, time);
        } else {
            self.note("that was the last preset".into(), time);
        }
    }

    /// Page Up: the walk's previous key frame (pausing it); from its first frame, the previous preset.
    fn previous_slide(&mut self, time: f64) {
        let last = self.history.len().saturating_sub(1);
        let current = self.at.unwrap_or(last);
        if let Some(&k) = self.key_frames().iter().rev().find(|&&k| k < current) {
            if self.playing {
                self.play(false);
            }
            self.at = Some(k);
            return;
        }
        match self.current_preset {
            Some(i) if i > 0 => self.apply_preset(i - 1, time),
            Some(_) => self.note("this is the first preset".into(), time),
            None => self.apply_preset(0, time),
        }
    }

    /// Take in everything the worker sent since the last frame.
    fn receive(&mut self, time: f64) {
        let now = Instant::now();
        while let Some(reply) = self.worker.try_recv() {
            if let Reply::Frames(frames) = &reply {
                for f in frames.iter().filter(|f| f.session == self.history.session) {
                    self.rates[f.lane as usize].arrived(now, f.index, f.step_ms);
                }
            }
            if self.history.absorb(&reply) {
                continue;
            }
            match reply {
                Reply::Loaded { model, dataset } => {
                    let mut what = Vec::new();
                    if let Some((spec, info)) = model {
                        if !spec.eq_ignore_ascii_case(crate::model::DEFAULT_MODEL) {
                            state::remember(&mut self.settings.recent_models, &spec);
                        }
                        what.push(format!("model {}", info.name));
                        self.settings.model = spec;
                        self.model = Some(info);
                    }
                    if let Some((spec, data)) = dataset {
                        if !crate::data::BUILT_IN.contains(&spec.to_ascii_lowercase().as_str()) {
                            state::remember(&mut self.settings.recent_datasets, &spec);
                        }
                        what.push(format!("dataset {} ({} images)", data.name, data.len()));
                        self.settings.dataset = spec;
                        self.gallery.set_dataset(data.clone());
                        self.data = Some(data);
                        for choice in [&mut self.settings.start, &mut self.settings.target] {
                            let fits = match choice {
                                Some(Choice::Index(i)) => *i < self.data.as_ref().map_or(0, |d| d.len()),
                                Some(Choice::Drawn(p)) => {
                                    p.len() == self.data.as_ref().map_or(0, |d| d.image_len())
                                }
                                None => true,
                            };
                            if !fits {
                                *choice = None;
                            }
                        }
                        // A new dataset whose indices the old walk does not fit: its first two
                        // images, so there is a walk to play at once.
                        let len = self.data.as_ref().map_or(0, |d| d.len());
                        if self.settings.start.is_none() && len > 0 {
                            self.settings.start = Some(Choice::Index(0));
                        }
                        if self.settings.target.is_none() && len > 1 {
                            self.settings.target = Some(Choice::Index(1));
                        }
                        if let Some(Choice::Index(i)) = self.settings.start {
                            self.gallery.reveal(i);
                        }
                    }
                    if !what.is_empty() {
                        self.note(format!("opened {}", what.join(" and ")), time);
                    }
                    self.playing = false;
                    self.worker.send(Request::Pause);
                    if let Some(p) = self.pending_preset.take() {
                        self.apply_preset(p, time);
                    } else {
                        self.restart();
                        if std::mem::take(&mut self.options.play) || matches!(self.shot, Shot::Waiting(..)) {
                            self.play(true);
                        }
                    }
                }
                Reply::Error(e) => self.error(e, time),
                Reply::Playing(p) => self.playing = p,
                _ => {}
            }
        }
    }

    fn apply(&mut self, action: Action, ctx: &egui::Context) {
        let time = ctx.input(|i| i.time);
        match action {
            Action::Command(c) => self.run_command(c, ctx, time),
            Action::SetStart(choice) => {
                if let Choice::Index(i) = choice {
                    self.gallery.focus = Some(i);
                }
                self.settings.start = Some(choice);
                self.restart();
            }
            Action::SetTarget(choice) => {
                self.settings.target = choice;
                self.restart();
            }
            Action::Load { model, dataset } => {
                let what = [model.as_deref(), dataset.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" and ");
                self.note(format!("opening {what}…"), time);
                self.worker.send(Request::Load { model, dataset });
            }
            Action::ParamsChanged => {
                if self.history.len() <= 1 {
                    self.restart();
                } else {
                    self.stale = true;
                }
            }
            Action::Speed => self.worker.send(Request::Speed(self.settings.speed)),
            Action::Scrub(at) => self.at = at,
            Action::Error(e) => self.error(e, time),
        }
    }

    fn run_command(&mut self, command: Command, ctx: &egui::Context, time: f64) {
        // The image walks' commands do nothing while the plane fills the window.
        let walks_only = matches!(
            command,
            Command::PlayPause
                | Command::Step
                | Command::Reset
                | Command::RandomStart
                | Command::SwapStartTarget
                | Command::MirrorTarget
                | Command::Gallery
                | Command::ExportStrip
                | Command::ExportGif
                | Command::ExportCsv
                | Command::NextSlide
                | Command::PreviousSlide
                | Command::Settings
        );
        if self.plane_mode && walks_only {
            return;
        }
        match command {
            Command::Plane => self.plane_mode = !self.plane_mode,
            Command::PlayPause => {
                if self.playing {
                    self.play(false);
                } else if self.settings.start.is_none() {
                    self.error(
                        "choose a start image first (click one in the gallery)".into(),
                        time,
                    );
                } else {
                    if self.history.finished() || self.stale {
                        self.restart();
                    }
                    self.at = None;
                    self.play(true);
                }
            }
            Command::Step => {
                if self.stale {
                    self.restart();
                }
                self.playing = false;
                self.at = None;
                self.worker.send(Request::Step);
            }
            Command::Reset => {
                self.play(false);
                self.restart();
            }
            Command::LectureMode => {
                self.settings.lecture = !self.settings.lecture;
                self.settings.gallery = !self.settings.lecture;
                style::apply_theme(ctx, self.settings.lecture, self.settings.dark);
                self.fit_zoom(ctx);
            }
            Command::DarkTheme => {
                self.settings.dark = !self.settings.dark;
                style::apply_theme(ctx, self.settings.lecture, self.settings.dark);
            }
            Command::Blank => self.blank = !self.blank,
            Command::Settings => self.walk_view.settings_open = !self.walk_view.settings_open,
            Command::NextSlide => self.next_slide(time),
            Command::PreviousSlide => self.previous_slide(time),
            Command::Gallery => self.settings.gallery = !self.settings.gallery,
            Command::FullScreen => {
                let full = ctx.input(|i| i.viewport().fullscreen.unwrap_or(false));
                ctx.send_viewport_cmd(egui::ViewportCommand::Fullscreen(!full));
            }
            Command::RandomStart => {
                if let Some(i) = self.gallery.random() {
                    self.gallery.reveal(i);
                    self.apply(Action::SetStart(Choice::Index(i)), ctx);
                }
            }
            Command::SwapStartTarget => {
                if self.settings.target.is_some() {
                    std::mem::swap(&mut self.settings.start, &mut self.settings.target);
                    self.restart();
                }
            }
            Command::MirrorTarget => {
                self.settings.mirror = !self.settings.mirror;
                self.restart();
            }
            Command::OpenModel => self.files.pick(files::Kind::Model),
            Command::OpenDataset => self.files.pick(files::Kind::Dataset),
            Command::TypePaths => self.files.open = true,
            Command::Experiments => self.experiments.open = true,
            Command::Instruments => self.instruments.open = !self.instruments.open,
            Command::ExportStrip | Command::ExportGif | Command::ExportCsv => {
                let Some(shape) = self.shape() else { return };
                let classes = self.classes();
                let describe = |c: &Option<Choice>| {
                    c.as_ref()
                        .map_or("none".into(), |c| c.describe().replace('#', ""))
                };
                let mut stem = format!(
                    "{}-{}",
                    describe(&self.settings.start),
                    describe(&self.settings.target)
                );
                if self.settings.mirror {
                    stem.push_str("-mirrored");
                }
                let dir = PathBuf::from(&self.settings.export_dir);
                let input = files::ExportInput {
                    history: &self.history,
                    shape,
                    classes: &classes,
                    stem,
                    dir: &dir,
                };
                let result = match command {
                    Command::ExportStrip => files::write_strip(&input),
                    Command::ExportGif => files::write_gif(&input),
                    _ => files::write_csv(&input),
                };
                match result {
                    Ok(path) => self.note(format!("wrote {}", path.display()), time),
                    Err(e) => self.error(e, time),
                }
            }
            Command::Preset(i) => self.apply_preset(i, time),
            Command::Quit => ctx.send_viewport_cmd(egui::ViewportCommand::Close),
        }
    }

    fn menu_bar(&mut self, ui: &mut egui::Ui, actions: &mut Vec<Action>) {
        egui::MenuBar::new().ui(ui, |ui| {
            let mut item = |ui: &mut egui::Ui, c: Command| {
                if c.menu_item(ui) {
                    actions.push(Action::Command(c));
                }
            };
            ui.menu_button("File", |ui| {
                for c in [Command::OpenModel, Command::OpenDataset, Command::TypePaths] {
                    item(ui, c);
                }
                ui.separator();
                for c in [Command::ExportStrip, Command::ExportGif, Command::ExportCsv] {
                    item(ui, c);
                }
                ui.separator();
                item(ui, Command::Quit);
            });
            ui.menu_button("Walk", |ui| {
                for c in [
                    Command::PlayPause,
                    Command::Step,
                    Command::Reset,
                    Command::RandomStart,
                    Command::SwapStartTarget,
                    Command::MirrorTarget,
                ] {
                    item(ui, c);
                }
            });
            ui.menu_button("Experiments", |ui| {
                item(ui, Command::Experiments);
                item(ui, Command::Instruments);
            });
            ui.menu_button("Plane", |ui| item(ui, Command::Plane));
            ui.menu_button("Presets", |ui| {
                for (d, domain) in Domain::ALL.into_iter().enumerate() {
                    if d > 0 {
                        ui.separator();
                    }
                    ui.label(RichText::new(domain.name()).strong());
                    for (i, _) in presets_of(domain) {
                        item(ui, Command::Preset(i));
                    }
                }
                ui.separator();
                for c in [Command::NextSlide, Command::PreviousSlide] {
                    item(ui, c);
                }
            });
            ui.menu_button("View", |ui| {
                for c in [
                    Command::LectureMode,
                    Command::DarkTheme,
                    Command::FullScreen,
                    Command::Blank,
                    Command::Gallery,
                    Command::Settings,
                ] {
                    item(ui, c);
                }
                ui.separator();
                ui.label("Shortcuts");
                for c in Command::all() {
                    for s in [c.shortcut(), c.alternative()].into_iter().flatten() {
                        ui.weak(format!("{:>8}  {}", ui.ctx().format_shortcut(&s), c.name()));
                    }
                }
            });
            ui.separator();
            if self.settings.lecture && !self.plane_mode {
                // The room goes to the slide counter; the plane is in its menu and on P.
                self.slide_counter(ui, actions);
                return;
            }
            let text = if self.plane_mode {
                "◀ Back to the images"
            } else {
                "2-D plane ▶"
            };
            if ui
                .selectable_label(self.plane_mode, text)
                .on_hover_text(Command::Plane.tooltip())
                .clicked()
            {
                actions.push(Action::Command(Command::Plane));
            }
            if self.plane_mode {
                return;
            }
            ui.separator();
            let model = self
                .model
                .as_ref()
                .map_or("no model".to_string(), |m| m.name.clone());
            let data = self
                .data
                .as_ref()
                .map_or("no dataset".to_string(), |d| d.name.clone());
            ui.label(RichText::new(format!("{model}  ·  {data}")).strong())
                .on_hover_text(self.model.as_ref().map_or(String::new(), |m| m.source.clone()));
        });
    }

    /// Lecture mode's slide counter in the menu bar: back, forward, which preset of how many.
    fn slide_counter(&mut self, ui: &mut egui::Ui, actions: &mut Vec<Action>) {
        let ctx = ui.ctx().clone();
        for (c, text) in [(Command::PreviousSlide, "◀"), (Command::NextSlide, "▶")] {
            let tip = format!("{} ({})", c.tooltip(), c.shortcut_text(&ctx));
            if ui
                .button(RichText::new(text).strong())
                .on_hover_text(tip)
                .clicked()
            {
                actions.push(Action::Command(c));
            }
        }
        let text = match self.current_preset.and_then(|i| PRESETS.get(i).map(|p| (i, p))) {
            Some((i, p)) => format!(
                "{} / {}  ·  {}  ·  {}",
                i + 1,
                PRESETS.len(),
                p.domain.name(),
                p.title
            ),
            None => "Page Down: the first preset".into(),
        };
        ui.add(egui::Label::new(RichText::new(text).strong()).wrap_mode(egui::TextWrapMode::Extend));
    }

    /// The presets by domain, one button each; in lecture mode the chosen preset's caption instead.
    fn presets_bar(&mut self, ui: &mut egui::Ui, actions: &mut Vec<Action>) {
        if self.settings.lecture {
            if let Some(p) = self.current_preset.and_then(|i| PRESETS.get(i)) {
                ui.add(egui::Label::new(RichText::new(p.caption).strong()).wrap());
            }
            return;
        }
        ui.horizontal_wrapped(|ui| {
            for (d, domain) in Domain::ALL.into_iter().enumerate() {
                if d > 0 {
                    ui.separator();
                }
                ui.label(RichText::new(format!("{}:", domain.name())).strong());
                for (i, _) in presets_of(domain) {
                    let c = Command::Preset(i);
                    let tip = format!("{} ({})", c.tooltip(), c.shortcut_text(ui.ctx()));
                    let chosen = self.current_preset == Some(i);
                    if ui
                        .add(egui::Button::new(c.name()).selected(chosen))
                        .on_hover_text(tip)
                        .clicked()
                    {
                        actions.push(Action::Command(c));
                    }
                }
            }
        });
    }

    /// A window asked for at 1600x1000 on a smaller screen (a 1024x768 projector) shrinks to it.
    fn fit_screen(&mut self, ctx: &egui::Context) {
        if self.screen_fitted {
            return;
        }
        let (monitor, inner) = ctx.input(|i| (i.viewport().monitor_size, i.viewport().inner_rect));
        let (Some(monitor), Some(inner)) = (monitor, inner) else {
            return;
        };
        self.screen_fitted = true;
        if inner.width() > monitor.x || inner.height() > monitor.y {
            ctx.send_viewport_cmd(egui::ViewportCommand::OuterPosition(egui::pos2(0.0, 0.0)));
            ctx.send_viewport_cmd(egui::ViewportCommand::InnerSize(inner.size().min(monitor)));
        }
    }

    /// Lecture mode's zoom follows the window, so every size keeps room for the whole layout.
    fn fit_zoom(&self, ctx: &egui::Context) {
        let zoom = ctx.zoom_factor();
        let native = ctx.content_rect().size() * zoom;
        let want = if self.settings.lecture {
            style::lecture_zoom(native)
        } else {
            1.0
        };
        if (want - zoom).abs() > 0.005 {
            ctx.set_zoom_factor(want);
        }
    }

    fn status_bar(&mut self, ui: &mut egui::Ui, time: f64) {
        self.messages.retain(|m| m.error || time - m.time < NOTE_SECONDS);
        if self.messages.iter().any(|m| !m.error) {
            ui.ctx().request_repaint_after(std::time::Duration::from_secs(1));
        }
        // The newest three errors, each until dismissed, then the newest note.
        let mut dismiss = None;
        let errors: Vec<usize> = (0..self.messages.len())
            .filter(|&i| self.messages[i].error)
            .collect();
        for &i in errors.iter().rev().take(3) {
            ui.horizontal(|ui| {
                ui.label(
                    RichText::new(format!("⚠ {}", self.messages[i].text))
                        .color(style::ERROR_COLOR)
                        .strong(),
                );
                if ui.small_button("Dismiss").clicked() {
                    dismiss = Some(i);
                }
            });
        }
        if errors.len() > 3 {
            ui.horizontal(|ui| {
                ui.label(format!("and {} earlier errors", errors.len() - 3));
                if ui.small_button("Dismiss all").clicked() {
                    self.messages.retain(|m| !m.error);
                }
            });
        }
        if let Some(m) = self.messages.iter().rev().find(|m| !m.error) {
            ui.label(&m.text);
        }
        if let Some(i) = dismiss {
            self.messages.remove(i);
        }
        ui.horizontal(|ui| {
            let h = &self.history;
            let state = if h.preparing.is_some() {
                "making the noisy start".to_string()
            } else if self.playing {
                "walking".to_string()
            } else if h.finished() {
                if h.reached() {
                    "done: the leaf walk reached its target".into()
                } else {
                    "done".into()
                }
            } else {
                "paused".to_string()
            };
            ui.label(state);
            ui.separator();
            ui.label(format!("{} steps computed", h.len().saturating_sub(1)));
            let rates: Vec<String> = Lane::BOTH
                .iter()
                .filter_map(|&l| {
                    let r = &self.rates[l as usize];
                    // Only while walking: a paused or hand-stepped walk has no rate worth showing
                    // (and the window then looks the same on every run).
                    let shown = if self.playing { r.recent() } else { None };
                    shown.map(|v| format!("{} {}", l.short(), frame_stats::rate_text(v)))
                })
                .collect();
            if !rates.is_empty() {
                ui.separator();
                let tip = Lane::BOTH
                    .iter()
                    .filter_map(|&l| {
                        let r = &self.rates[l as usize];
                        r.step_ms().map(|ms| {
                            format!("{}: the worker computes a step in {ms:.1} ms (median of the last 60)", l.short())
                        })
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                ui.label(rates.join(" · ")).on_hover_text(format!(
                    "Steps per second of each lane over the last two seconds. The lanes take turns on one worker.\n{tip}"
                ));
            }
            if !self.worker.is_alive() {
                ui.separator();
                ui.label(RichText::new("the worker stopped").color(style::ERROR_COLOR));
            }
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                if let Some((median, max)) = median_max(&self.frame_ms) {
                    // A fixed width, so the hint beside it stays put as the figures change.
                    let row = ui.text_style_height(&egui::TextStyle::Body);
                    ui.add_sized(
                        [210.0, row],
                        egui::Label::new(
                            RichText::new(format!("UI frame {median:.1} ms (max {max:.1})")).weak(),
                        ),
                    )
                    .on_hover_text(
                        "Time the UI thread spent per frame, median and max of the last 120 frames",
                    );
                }
                ui.weak("Space play · → step · R reset · L lecture · PgDn/PgUp presets · B blank");
            });
        });
    }

    /// The image walks: gallery, the two lanes, the plots and the status line.
    fn walks_ui(&mut self, ui: &mut egui::Ui, time: f64, actions: &mut Vec<Action>) {
        // Lecture mode keeps the status line for errors only: the room goes to the walk, and the
        // notes each slide change brings ("opened model ...") are not for the audience.
        if !self.settings.lecture || self.messages.iter().any(|m| m.error) {
            egui::Panel::bottom("status").show(ui, |ui| self.status_bar(ui, time));
        }
        let shape = self.shape();
        let start = match self.settings.start {
            Some(Choice::Index(i)) => Some(i),
            _ => None,
        };
        let target = match self.settings.target {
            Some(Choice::Index(i)) => Some(i),
            _ => None,
        };
        // Side panels take a share of the width, so the centre keeps room in lecture mode's zoom.
        let width = ui.available_width();
        let lecture = self.settings.lecture;
        let mut gallery = self.settings.gallery;
        egui::Panel::left("gallery")
            .resizable(true)
            .default_size(330.0)
            .size_range(180.0..=(width * 0.22).max(180.0))
            .show_collapsible(ui, &mut gallery, |ui| {
                egui::Panel::bottom("draw pad").show(ui, |ui| {
                    egui::CollapsingHeader::new("Draw a target")
                        .default_open(false)
                        .show(ui, |ui| self.draw_pad.ui(ui, shape, actions));
                });
                self.gallery.ui(ui, start, target, actions);
            });
        self.settings.gallery = gallery;
        let classes = self.classes();
        // Lecture mode: the two main plots large, at a fixed share of the width.
        let plots = if lecture {
            egui::Panel::right("lecture plots").exact_size((width * 0.36).clamp(240.0, 560.0))
        } else {
            egui::Panel::right("plots")
                .resizable(true)
                .default_size(440.0)
                .size_range(240.0..=(width * 0.3).max(240.0))
        };
        plots.show(ui, |ui| {
            egui::ScrollArea::vertical()
                .id_salt("plots scroll")
                .show(ui, |ui| {
                    self.plots.ui(
                        ui,
                        &self.history,
                        self.at,
                        &classes,
                        self.settings.params.stop,
                        lecture,
                    );
                });
        });
        let shown = walk_view::Shown {
            history: &self.history,
            at: self.at,
            shape,
            classes: &classes,
            playing: self.playing,
            start_label: self.label_of(&self.settings.start),
            target_label: self.label_of(&self.settings.target),
            stale: self.stale,
            lecture,
            steps_per_second: self.rates.each_ref().map(frame_stats::LaneRate::recent),
        };
        egui::CentralPanel::default().show(ui, |ui| {
            egui::ScrollArea::vertical()
                .id_salt("centre scroll")
                .show(ui, |ui| {
                    self.walk_view.ui(ui, &shown, &mut self.settings, actions);
                });
        });
    }

    /// Take the screenshot asked for on the command line once the walks show enough.
    fn screenshot(&mut self, ctx: &egui::Context) {
        let Shot::Waiting(path, deadline) = &self.shot else {
            return;
        };
        let steps = self
            .history
            .lane(Lane::Leaf)
            .len()
            .max(self.history.lane(Lane::Kernel).len());
        let late = std::time::Instant::now() >= *deadline;
        let ready = if self.plane_mode {
            // The plane: its scripted training done and the curves through the click drawn.
            self.plane.script_done() && self.plane.frame().is_some()
        } else {
            steps > self.options.screenshot_step || self.history.finished()
        };
        if !ready && !late {
            // Keep frames coming so the deadline is noticed even when nothing walks.
            ctx.request_repaint_after(std::time::Duration::from_millis(500));
            return;
        }
        if late && !ready {
            eprintln!(
                "dataleaf: {steps} steps after {SCREENSHOT_DEADLINE:?}; taking the screenshot as it is"
            );
        }
        for lane in Lane::BOTH {
            let r = &self.rates[lane as usize];
            if let (Some(rate), Some(ms)) = (r.overall(), r.step_ms()) {
                eprintln!(
                    "dataleaf: {} lane {} over its first {} steps (the worker's step {ms:.1} ms)",
                    lane.short(),
                    frame_stats::rate_text(rate),
                    self.history.lane(lane).len().saturating_sub(1)
                );
            }
        }
        let path = path.clone();
        let times = self.frame_ms.clone();
        let intervals = self.intervals.clone();
        let viewport = ctx.clone();
        ctx.request_screenshot(move |image| {
            let rgba = image::RgbaImage::from_raw(
                image.width() as u32,
                image.height() as u32,
                image.as_raw().to_vec(),
            );
            match rgba.map(|i| i.save(&path)) {
                Some(Ok(())) => eprintln!("dataleaf: saved the window to {}", path.display()),
                Some(Err(e)) => eprintln!("dataleaf: {}: cannot save the screenshot: {e}", path.display()),
                None => eprintln!("dataleaf: the screenshot came back malformed"),
            }
            if let Some(summary) = frame_summary(&times) {
                eprintln!("dataleaf: UI work per frame {summary}");
            }
            if let Some(summary) = frame_summary(&intervals) {
                eprintln!("dataleaf: time between frames {summary}");
            }
            viewport.send_viewport_cmd(egui::ViewportCommand::Close);
        });
        self.shot = Shot::Requested;
    }
}

fn median_max(times: &[f32]) -> Option<(f32, f32)> {
    let mut sorted = times.to_vec();
    sorted.sort_by(f32::total_cmp);
    Some((*sorted.get(sorted.len() / 2)?, *sorted.last()?))
}

/// Median and maximum of frame times, for the log.
fn frame_summary(times: &[f32]) -> Option<String> {
    let (median, max) = median_max(times)?;
    Some(format!(
        "over the last {} frames: median {median:.1} ms, max {max:.1} ms",
        times.len()
    ))
}

impl eframe::App for DataleafApp {
    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        let began = Instant::now();
        let ctx = ui.ctx().clone();
        let time = ctx.input(|i| i.time);
        self.fit_screen(&ctx);
        self.fit_zoom(&ctx);
        self.receive(time);
        let mut actions: Vec<Action> = Command::pressed(&ctx).into_iter().map(Action::Command).collect();
        files::dropped(&ctx, &mut actions);
        self.files.poll(&mut actions);

        egui::Panel::top("menu").show(ui, |ui| {
            self.menu_bar(ui, &mut actions);
            if self.plane_mode {
                return;
            }
            if self.model.as_ref().is_some_and(|m| !m.piecewise_linear) {
                ui.label(RichText::new(SMOOTH_NOTE).color(style::NOTICE_COLOR))
                    .on_hover_text("The walks still run; the involutivity experiment shows what changes");
            }
            self.presets_bar(ui, &mut actions);
        });
        if self.plane_mode {
            self.plane.ui(ui);
        } else {
            self.walks_ui(ui, time, &mut actions);
        }
        self.files.ui(&ctx, &mut self.settings, &mut actions);
        let model_name = self.model.as_ref().map_or("no model", |m| m.name.as_str());
        // The experiments and the instruments build G as the walks do ("Classes in G").
        let top_k = self
            .model
            .as_ref()
            .and_then(|m| self.settings.params.classes_in_g.top_k(m.classes.len()));
        self.experiments.ui(&ctx, &self.settings.model, model_name, top_k);
        if !self.plane_mode {
            let (shape, classes) = (self.shape(), self.classes());
            let spec = self.settings.model.clone();
            self.instruments
                .ui(&ctx, &spec, &self.history, self.at, shape, &classes, top_k);
        }
        if ctx.input(|i| !i.raw.hovered_files.is_empty()) {
            let painter = ctx.layer_painter(egui::LayerId::new(
                egui::Order::Foreground,
                egui::Id::unique("drop"),
            ));
            let rect = ctx.content_rect();
            painter.rect_filled(rect, 0.0, Color32::from_black_alpha(160));
            painter.text(
                rect.center(),
                egui::Align2::CENTER_CENTER,
                "Drop a model (.json) or a dataset (IDX) to open it",
                egui::FontId::proportional(28.0),
                Color32::WHITE,
            );
        }
        for action in actions {
            self.apply(action, &ctx);
        }
        if self.blank {
            // A presenter's blank screen: black over everything until B again.
            let painter = ctx.layer_painter(egui::LayerId::new(
                egui::Order::Foreground,
                egui::Id::unique("blank screen"),
            ));
            painter.rect_filled(ctx.content_rect(), 0.0, Color32::BLACK);
        }
        self.screenshot(&ctx);
        if self.first_frame_logged < 2 && std::env::var_os("DATALEAF_LOG_STARTUP").is_some() {
            // The second frame begins once the first is painted and presented.
            let ms = self.launched.elapsed().as_secs_f64() * 1000.0;
            if self.first_frame_logged == 0 {
                eprintln!(
                    "dataleaf: window and renderer up {:.0} ms after launch, first frame laid out at {ms:.0} ms",
                    self.built_ms
                );
                ctx.request_repaint();
            } else {
                eprintln!(
                    "dataleaf: first frame on screen by {:.0} ms after launch",
                    began.duration_since(self.launched).as_secs_f64() * 1000.0
                );
            }
        }
        self.first_frame_logged = self.first_frame_logged.saturating_add(1).min(2);

        let ui_ms = began.elapsed().as_secs_f32() * 1000.0;
        let previous_work_ms = frame.info().cpu_usage.map(|c| c.max(0.0) * 1000.0);
        if let Some(log) = &mut self.frame_log {
            let facts = frame_stats::FrameFacts {
                session: self.session,
                playing: self.playing,
                finished: self.history.finished(),
                ui_ms,
                previous_work_ms,
                size: ctx.content_rect().size().into(),
                model: self.model.as_ref().map_or(String::new(), |m| m.name.clone()),
                steps: Lane::BOTH.map(|l| self.history.lane(l).len().saturating_sub(1)),
                steps_per_second: self.rates.each_ref().map(frame_stats::LaneRate::overall),
            };
            match log.frame(&facts) {
                Some(Ok(line)) => eprintln!("dataleaf: frame times of the walk: {line}"),
                Some(Err(e)) => self.error(e, time),
                None => {}
            }
        }
        let spent = previous_work_ms.map_or(ui_ms, |ms| ms) / 1000.0;
        self.frame_ms.push(spent * 1000.0);
        if self.frame_ms.len() > 120 {
            self.frame_ms.remove(0);
        }
        if let Some(last) = self.last_frame.replace(began) {
            self.intervals
                .push(began.duration_since(last).as_secs_f32() * 1000.0);
            if self.intervals.len() > 120 {
                self.intervals.remove(0);
            }
        }
    }

    fn persist_egui_memory(&self) -> bool {
        !self.options.fresh
    }

    fn raw_input_hook(&mut self, _ctx: &egui::Context, raw_input: &mut egui::RawInput) {
        // A screenshot shows the app, not whatever tooltip the idle pointer happens to raise.
        if matches!(self.shot, Shot::Waiting(..) | Shot::Requested) {
            raw_input
                .events
                .retain(|e| !matches!(e, egui::Event::PointerMoved(_)));
            raw_input.events.push(egui::Event::PointerGone);
        }
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        // Fresh and scripted screenshot runs leave the person's remembered state alone.
        if self.options.fresh || self.options.screenshot.is_some() {
            return;
        }
        eframe::set_value(storage, eframe::APP_KEY, &self.settings);
    }
}
