//! The instruments window (for researchers): the leaf directions at each lane's current point as
//! signed images with lambda_k under each (hover: the class gradients a direction follows), a PNG
//! export of them, and a chart of the neighbourhood of the current point along the leaf or across it.
//! Everything is computed on the instruments' own worker thread, which opens its own copy of the
//! model; the UI only uploads textures.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use egui::{Color32, ColorImage, RichText, TextureHandle, TextureOptions};

use crate::export::instruments::{direction_rgb, top_k_note, write_directions};
use crate::export::ImageShape;
use crate::geometry::directions::Direction;
use crate::geometry::{softmax, top_classes, GeometryOptions, LocalGeometry};
use crate::model::Model;
use crate::walk::chart::{self, Cell, ChartConfig, Plane};

use super::history::History;
use super::state::Settings;
use super::style::{self, lane_color, Shape};
use super::worker::Lane;
use super::Action;

/// Which frame a result belongs to: (session, lane, step index).
type Key = (u64, usize, usize);

enum Job {
    Directions {
        key: Key,
        image: Vec<f32>,
        /// G from the K most probable classes ("Classes in G"; `None`: exact).
        top_k: Option<usize>,
    },
    Chart {
        key: Key,
        image: Vec<f32>,
        config: ChartConfig,
        cancel: Arc<AtomicBool>,
    },
}

enum Done {
    Directions {
        key: Key,
        directions: Vec<Direction>,
        mixing: Vec<String>,
        /// What G was made of: "G from the top K of C classes, dropped p ..." (None: exact).
        top_k_note: Option<String>,
    },
    Chart {
        key: Key,
        config: ChartConfig,
        cells: Vec<Cell>,
        centre: usize,
        /// The same note for the chart's point (None: exact).
        top_k_note: Option<String>,
    },
    Error(String),
}

/// The instruments' worker: its own thread and its own copy of the model.
struct Worker {
    tx: Sender<(String, Job)>,
    rx: Receiver<Done>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    fn spawn(ctx: egui::Context) -> Worker {
        let (tx, jobs) = mpsc::channel::<(String, Job)>();
        let (done, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("dataleaf instruments".into())
            .spawn(move || {
                let mut model: Option<(String, Model)> = None;
                while let Ok(first) = jobs.recv() {
                    // Only the newest directions request matters (the walk has moved on); charts all run.
                    let mut batch = vec![first];
                    batch.extend(jobs.try_iter());
                    let newest = |lane: usize| {
                        batch
                            .iter()
                            .rposition(|(_, j)| matches!(j, Job::Directions { key, .. } if key.1 == lane))
                    };
                    let keep = [newest(0), newest(1)];
                    for (i, (spec, job)) in batch.into_iter().enumerate() {
                        if let Job::Directions { key, .. } = &job {
                            if keep.get(key.1).copied().flatten() != Some(i) {
                                continue;
                            }
                        }
                        if model.as_ref().is_none_or(|(s, _)| *s != spec) {
                            match Model::open(&spec) {
                                Ok(m) => model = Some((spec.clone(), m)),
                                Err(e) => {
                                    let _ = done.send(Done::Error(format!("instruments: {e}")));
                                    continue;
                                }
                            }
                        }
                        let network = &model.as_ref().expect("opened above").1.network;
                        let reply = run_job(network, job);
                        if let Some(reply) = reply {
                            if done.send(reply).is_err() {
                                return;
                            }
                            ctx.request_repaint();
                        }
                    }
                }
            })
            .expect("the instruments thread starts");
        Worker {
            tx,
            rx,
            thread: Some(thread),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop; it is not joined (a chart may be finishing).
        let (tx, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.tx, tx));
        drop(self.thread.take());
    }
}

fn run_job(network: &crate::model::Network, job: Job) -> Option<Done> {
    if network.input_len() == 0 {
        return Some(Done::Error("instruments: the model takes no input".into()));
    }
    match job {
        Job::Directions { key, image, top_k } => {
            if image.len() != network.input_len() {
                return Some(Done::Error(
                    "instruments: the image does not fit the model".into(),
                ));
            }
            // The directions are what is shown here: the basis, of G as "Classes in G" builds it.
            let geo = LocalGeometry::with(network, &image, GeometryOptions { top_k, basis: true });
            let top_k_note =
                (!geo.is_exact()).then(|| top_k_note(geo.classes.len(), geo.num_classes(), geo.dropped_mass));
            let mixing = geo
                .direction_mixing()
                .iter()
                .map(|m| {
                    m.iter()
                        .take(3)
                        .map(|x| format!("class {} ({:+.2})", x.class, x.cosine))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .collect();
            Some(Done::Directions {
                key,
                directions: geo.leaf_directions(),
                mixing,
                top_k_note,
            })
        }
        Job::Chart {
            key,
            image,
            config,
            cancel,
        } => {
            let cancelled = || cancel.load(Ordering::Relaxed);
            match chart::chart(network, &image, &config, &cancelled) {
                Ok(Some(cells)) => {
                    // The prediction and the mass top-k drops at the point: the logits suffice.
                    let logits = network.logits(&image, 1);
                    let probs = softmax(&logits);
                    let top_k_note = config.top_k.filter(|&k| k < probs.len()).map(|k| {
                        let kept: f64 = top_classes(&probs, k).iter().map(|&i| probs[i]).sum();
                        top_k_note(k, probs.len(), (1.0 - kept).max(0.0))
                    });
                    Some(Done::Chart {
                        key,
                        config,
                        cells,
                        centre: crate::model::argmax(&logits),
                        top_k_note,
                    })
                }
                Ok(None) => None,
                Err(e) => Some(Done::Error(format!("chart: {e}"))),
            }
        }
    }
}

/// The directions of one lane's point, as textures.
struct Shown {
    key: Key,
    textures: Vec<TextureHandle>,
    lambdas: Vec<f64>,
    mixing: Vec<String>,
    directions: Vec<Direction>,
    top_k_note: Option<String>,
}

struct ChartShown {
    key: Key,
    config: ChartConfig,
    textures: Vec<(TextureHandle, String, bool)>,
    kept: usize,
    top_k_note: Option<String>,
}

pub struct InstrumentsView {
    pub open: bool,
    /// Two workers, so a chart (seconds) never holds up the live directions (milliseconds).
    worker: Option<Worker>,
    chart_worker: Option<Worker>,
    directions: [Option<Shown>; 2],
    /// The key (and "Classes in G") last asked for, per lane, so each frame is asked once.
    asked: [Option<(Key, Option<usize>)>; 2],
    /// "Classes in G" for the open model, as the app passes it in (`None`: exact).
    top_k: Option<usize>,
    chart_lane: Lane,
    pub chart_plane: Plane,
    pub chart_radius: f32,
    chart_size: usize,
    chart: Option<ChartShown>,
    /// The chart being computed, and its cancel flag.
    chart_running: Option<(Key, Arc<AtomicBool>)>,
    /// Re-chart whenever the point has moved and the last chart is done.
    pub follow: bool,
    error: Option<String>,
    note: Option<String>,
}

impl Default for InstrumentsView {
    fn default() -> Self {
        InstrumentsView {
            open: false,
            worker: None,
            chart_worker: None,
            directions: [None, None],
            asked: [None, None],
            top_k: None,
            chart_lane: Lane::Leaf,
            chart_plane: Plane::Leaf,
            chart_radius: 4.0,
            chart_size: 5,
            chart: None,
            chart_running: None,
            follow: false,
            error: None,
            note: None,
        }
    }
}

fn signed_texture(ctx: &egui::Context, name: &str, u: &[f64], (c, h, w): Shape) -> TextureHandle {
    let rgb = direction_rgb(
        u,
        ImageShape {
            channels: c,
            height: h,
            width: w,
        },
    );
    let colors = rgb.iter().map(|&[r, g, b]| Color32::from_rgb(r, g, b)).collect();
    ctx.load_texture(name, ColorImage::new([w, h], colors), TextureOptions::NEAREST)
}

impl InstrumentsView {
    /// The window, open or not.
    pub fn opened(open: bool) -> InstrumentsView {
        // Opened from the command line, the chart follows the walk so a screenshot shows one.
        InstrumentsView {
            open,
            follow: open,
            ..InstrumentsView::default()
        }
    }

    /// Leaf directions shown for a lane: (step index, eigenvalues).
    pub fn directions_of(&self, lane: Lane) -> Option<(usize, &[f64])> {
        self.directions[lane as usize]
            .as_ref()
            .map(|s| (s.key.2, s.lambdas.as_slice()))
    }

    /// What G was made of for a lane's directions shown: "G from the top K of C classes, dropped
    /// p ..." for a top-k G, `None` when exact (or nothing is shown).
    pub fn directions_note(&self, lane: Lane) -> Option<&str> {
        self.directions[lane as usize]
            .as_ref()
            .and_then(|s| s.top_k_note.as_deref())
    }

    /// The chart shown's note on G (as `directions_note`).
    pub fn chart_note(&self) -> Option<&str> {
        self.chart.as_ref().and_then(|c| c.top_k_note.as_deref())
    }

    /// The chart shown: (plane, radius, cells, cells keeping the centre's class).
    pub fn chart_of(&self) -> Option<(Plane, f32, usize, usize)> {
        self.chart
            .as_ref()
            .map(|c| (c.config.plane, c.config.radius, c.textures.len(), c.kept))
    }

    pub fn chart_running(&self) -> bool {
        self.chart_running.is_some()
    }

    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    fn receive(&mut self, ctx: &egui::Context, shape: Shape, classes: &[String]) {
        let replies: Vec<Done> = [&self.worker, &self.chart_worker]
            .into_iter()
            .flatten()
            .flat_map(|w| w.rx.try_iter().collect::<Vec<_>>())
            .collect();
        for reply in replies {
            match reply {
                Done::Directions {
                    key,
                    directions,
                    mixing,
                    top_k_note,
                } => {
                    let textures = directions
                        .iter()
                        .enumerate()
                        .map(|(k, d)| signed_texture(ctx, &format!("direction {} {k}", key.1), &d.u, shape))
                        .collect();
                    self.directions[key.1] = Some(Shown {
                        key,
                        textures,
                        lambdas: directions.iter().map(|d| d.lambda).collect(),
                        mixing,
                        directions,
                        top_k_note,
                    });
                }
                Done::Chart {
                    key,
                    config,
                    cells,
                    centre,
                    top_k_note,
                } => {
                    if self.chart_running.as_ref().is_some_and(|(k, _)| *k == key) {
                        self.chart_running = None;
                    }
                    let kept = cells.iter().filter(|c| c.prediction == centre).count();
                    let textures = cells
                        .iter()
                        .enumerate()
                        .map(|(i, c)| {
                            let t = ctx.load_texture(
                                format!("chart cell {i}"),
                                style::color_image(&c.image, shape),
                                TextureOptions::NEAREST,
                            );
                            let label =
                                format!("{} {:.2}", style::class_name(classes, c.prediction), c.max_prob);
                            (t, label, c.prediction != centre)
                        })
                        .collect();
                    self.chart = Some(ChartShown {
                        key,
                        config,
                        textures,
                        kept,
                        top_k_note,
                    });
                }
                Done::Error(e) => {
                    self.chart_running = None;
                    self.error = Some(e);
                }
            }
        }
    }

    fn send(&mut self, ctx: &egui::Context, model: &str, job: Job) {
        let slot = match job {
            Job::Directions { .. } => &mut self.worker,
            Job::Chart { .. } => &mut self.chart_worker,
        };
        let worker = slot.get_or_insert_with(|| Worker::spawn(ctx.clone()));
        if worker.tx.send((model.to_string(), job)).is_err() {
            self.error = Some("the instruments' worker has stopped".into());
        }
    }

    /// The window; `model` is the spec the app has open, `top_k` its "Classes in G" for that
    /// model (`ClassesInG::top_k`; `None`: exact), which the directions and the chart follow.
    #[allow(clippy::too_many_arguments)]
    pub fn ui(
        &mut self,
        ctx: &egui::Context,
        model: &str,
        history: &History,
        at: Option<usize>,
        shape: Option<Shape>,
        classes: &[String],
        top_k: Option<usize>,
    ) {
        if !self.open {
            return;
        }
        let Some(shape) = shape else { return };
        self.top_k = top_k;
        self.receive(ctx, shape, classes);
        // Ask for the directions of each lane's current frame (once per frame shown).
        for lane in Lane::BOTH {
            if let Some(f) = history.frame(lane, at) {
                let key = (history.session, lane as usize, f.index);
                // Asked again when "Classes in G" changes, even while the walk stands still.
                if self.asked[lane as usize] != Some((key, top_k)) {
                    self.asked[lane as usize] = Some((key, top_k));
                    self.send(
                        ctx,
                        model,
                        Job::Directions {
                            key,
                            image: f.image.clone(),
                            top_k,
                        },
                    );
                }
            }
        }
        let mut open = self.open;
        // Over the plots at the right, leaving the presets, the lanes and their controls visible.
        let corner = ctx.content_rect().right_top() + egui::vec2(-8.0, 64.0);
        egui::Window::new("Instruments")
            .open(&mut open)
            .pivot(egui::Align2::RIGHT_TOP)
            .default_pos(corner)
            .default_size([640.0, 560.0])
            .vscroll(true)
            .show(ctx, |ui| self.contents(ui, ctx, model, history, at, shape));
        self.open = open;
        if !self.open {
            if let Some((_, cancel)) = self.chart_running.take() {
                cancel.store(true, Ordering::Relaxed);
            }
        }
    }

    fn start_chart(&mut self, ctx: &egui::Context, model: &str, history: &History, at: Option<usize>) {
        let Some(f) = history.frame(self.chart_lane, at) else {
            return;
        };
        let key = (history.session, self.chart_lane as usize, f.index);
        let cancel = Arc::new(AtomicBool::new(false));
        self.chart_running = Some((key, cancel.clone()));
        let config = ChartConfig {
            top_k: self.top_k,
            ..ChartConfig::for_radius(self.chart_plane, self.chart_size, self.chart_radius)
        };
        let image = f.image.clone();
        self.send(
            ctx,
            model,
            Job::Chart {
                key,
                image,
                config,
                cancel,
            },
        );
    }

    fn contents(
        &mut self,
        ui: &mut egui::Ui,
        ctx: &egui::Context,
        model: &str,
        history: &History,
        at: Option<usize>,
        shape: Shape,
    ) {
        if let Some(e) = &self.error {
            ui.colored_label(style::ERROR_COLOR, e);
        }
        ui.heading("Leaf directions: what the model can see here");
        ui.label(
            "The orthonormal eigenvectors u_k of G at each lane's current point (red > 0 > blue, white = 0). \
             Moving along u_k changes KL by ½ λ_k t²; any direction orthogonal to all of them changes p not at all to first order.",
        );
        if let Some(k) = self.top_k {
            ui.label(format!(
                "Of G from the top {k} classes, as the walks build it (Classes in G, in the walk settings): \
                 at most {k} directions; the probability mass left out is beside each lane's."
            ));
        }
        let side = 56.0;
        for lane in Lane::BOTH {
            ui.label(RichText::new(lane.title()).color(lane_color(lane)).strong());
            match &self.directions[lane as usize] {
                Some(s) => {
                    ui.horizontal_wrapped(|ui| {
                        for (k, t) in s.textures.iter().enumerate() {
                            ui.vertical(|ui| {
                                let hover = format!(
                                    "u_{}: λ = {:.3e}; mostly the gradients of log p of {}",
                                    k + 1,
                                    s.lambdas[k],
                                    s.mixing.get(k).map_or("", String::as_str)
                                );
                                ui.add(egui::Image::new(t).fit_to_exact_size(egui::vec2(side, side)))
                                    .on_hover_text(hover);
                                ui.small(format!("λ{} {:.1e}", k + 1, s.lambdas[k]));
                            });
                        }
                    });
                    ui.horizontal(|ui| {
                        ui.weak(match &s.top_k_note {
                            Some(note) => format!("step {}, rank {}, {note}", s.key.2, s.lambdas.len()),
                            None => format!("step {}, rank {}", s.key.2, s.lambdas.len()),
                        });
                        if ui.button("Export PNG…").clicked() {
                            let path = std::env::temp_dir().join(format!(
                                "dataleaf-directions-{}-{}.png",
                                lane.short(),
                                s.key.2
                            ));
                            let (c, h, w) = shape;
                            let image_shape = ImageShape {
                                channels: c,
                                height: h,
                                width: w,
                            };
                            let note = s.top_k_note.as_deref();
                            match write_directions(&path, &s.directions, image_shape, note) {
                                Ok(()) => self.note = Some(format!("saved {}", path.display())),
                                Err(e) => self.error = Some(e),
                            }
                        }
                    });
                }
                None => {
                    ui.weak("no point yet: choose a start (and a target) and walk");
                }
            }
        }
        if let Some(n) = &self.note {
            ui.weak(n);
        }
        ui.separator();
        ui.heading("Chart of the neighbourhood");
        ui.horizontal(|ui| {
            ui.label("point");
            for lane in Lane::BOTH {
                ui.radio_value(&mut self.chart_lane, lane, lane.short());
            }
            ui.separator();
            ui.label("plane");
            ui.radio_value(&mut self.chart_plane, Plane::Leaf, "along the leaf")
                .on_hover_text("Walks along the top two leaf directions, re-projected every step");
            ui.radio_value(&mut self.chart_plane, Plane::Kernel, "across leaves (ker G)")
                .on_hover_text("Walks along two seeded random directions, projected on ker G every step");
        });
        ui.horizontal(|ui| {
            ui.add(egui::Slider::new(&mut self.chart_radius, 0.5..=8.0).text("radius (px)"));
            ui.add(egui::Slider::new(&mut self.chart_size, 3..=7).text("cells a side"));
            let frame = history.frame(self.chart_lane, at);
            let running = self.chart_running.is_some();
            if running {
                ui.spinner();
                if ui.button("Cancel").clicked() {
                    if let Some((_, cancel)) = self.chart_running.take() {
                        cancel.store(true, Ordering::Relaxed);
                    }
                }
            } else if ui
                .add_enabled(frame.is_some(), egui::Button::new("Chart the current point"))
                .clicked()
            {
                self.start_chart(ctx, model, history, at);
            }
            ui.checkbox(&mut self.follow, "follow the walk").on_hover_text(
                "Chart the current point again whenever the last chart is done and the point has moved",
            );
        });
        if self.follow && self.chart_running.is_none() {
            let key = history
                .frame(self.chart_lane, at)
                .map(|f| (history.session, self.chart_lane as usize, f.index));
            let shown = self.chart.as_ref().map(|c| (c.key, c.config.top_k));
            if key.is_some() && key.map(|k| (k, self.top_k)) != shown {
                self.start_chart(ctx, model, history, at);
            }
        }
        if let Some(c) = &self.chart {
            ui.label(format!(
                "{} chart of {} step {}, radius {} px: the class is kept in {} of {} cells (red = changed)",
                c.config.plane.name(),
                Lane::BOTH[c.key.1].short(),
                c.key.2,
                c.config.radius,
                c.kept,
                c.textures.len()
            ));
            if let Some(note) = &c.top_k_note {
                ui.weak(format!(
                    "{note} at the charted point (its axes and every walk to a cell)"
                ));
            }
            let k = c.config.size;
            egui::Grid::new("chart grid").spacing([4.0, 4.0]).show(ui, |ui| {
                for row in c.textures.chunks(k) {
                    for (t, label, changed) in row {
                        ui.vertical(|ui| {
                            ui.add(egui::Image::new(t).fit_to_exact_size(egui::vec2(64.0, 64.0)));
                            let text = RichText::new(label).small();
                            ui.label(if *changed {
                                text.color(style::ERROR_COLOR)
                            } else {
                                text
                            });
                        });
                    }
                    ui.end_row();
                }
            });
        }
    }
}

/// The reach toggle under the leaf lane: the strict search instead of the default leaf walk.
pub fn reach_toggle(ui: &mut egui::Ui, settings: &mut Settings, actions: &mut Vec<Action>) {
    let mut on = settings.params.reach;
    // Its own id rather than the lane's running widget count, which the lines above it change from
    // frame to frame: a click (or an accessibility action) aimed at last frame's toggle must land.
    let toggle = ui.push_id("strict reach search", |ui| {
        ui.checkbox(&mut on, "strict reach search").on_hover_text(
            "Move only along leaves (no transverse part): a bidirectional search with hops past stalls. \
             The distance shown is the gap left between the start's and the target's leaf paths. \
             Pause or Reset stops it.",
        )
    });
    if toggle.inner.changed() {
        settings.params.reach = on;
        actions.push(Action::ParamsChanged);
    }
}

/// Geometry evaluations of the app's reach search (a few seconds at full speed on the MNIST model;
/// the app paces steps, so a time budget would end it early at slow speeds).
pub const APP_REACH_EVALUATIONS: usize = 2000;

/// The leaf lane's walk: the default leaf walk, or the strict reach search.
pub enum LeafLaneWalk<'a> {
    Walk(crate::walk::Walk<'a>),
    Reach(Box<crate::walk::reach::Reach<'a>>),
}

impl LeafLaneWalk<'_> {
    /// The walk ended within the stop distance (a reach search never claims it: it reports its gap).
    pub fn reached(&self) -> bool {
        match self {
            LeafLaneWalk::Walk(w) => w.reached,
            LeafLaneWalk::Reach(_) => false,
        }
    }

    /// A reach search that has yielded its last (best) point.
    pub fn finished(&self) -> bool {
        match self {
            LeafLaneWalk::Walk(_) => false,
            LeafLaneWalk::Reach(r) => r.finished(),
        }
    }

    pub fn is_reach(&self) -> bool {
        matches!(self, LeafLaneWalk::Reach(_))
    }
}

impl Iterator for LeafLaneWalk<'_> {
    type Item = crate::walk::Step;
    fn next(&mut self) -> Option<crate::walk::Step> {
        match self {
            LeafLaneWalk::Walk(w) => w.next(),
            LeafLaneWalk::Reach(r) => r.next(),
        }
    }
}

/// The reach search the leaf lane runs when the toggle is on.
pub fn lane_reach<'a>(
    network: &'a crate::model::Network,
    params: &super::state::Params,
    start: Vec<f32>,
    target: Vec<f32>,
) -> Result<LeafLaneWalk<'a>, String> {
    let config = crate::walk::reach::ReachConfig {
        step: params.step,
        seed: params.seed,
        max_evaluations: APP_REACH_EVALUATIONS,
        budget: std::time::Duration::from_secs(24 * 3600),
        top_k: params.classes_in_g.top_k(network.num_classes()),
        ..Default::default()
    };
    crate::walk::reach::Reach::new(network, config, start, target).map(|r| LeafLaneWalk::Reach(Box::new(r)))
}
