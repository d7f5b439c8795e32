//! The plane view's worker: it owns the toy dataset and the small network, trains it (Adam), and
//! after every change samples the plane (the output, the leaf and kernel directions, the singular
//! points) and the curves through the clicked point, sending each result as one `PlaneFrame`. The
//! UI thread only draws frames.

use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::data::toy::{self, ToyData, ToyKind};
use crate::geometry::plane::PointGeometry;
use crate::geometry::plane::{default_output, Bounds, Field, HeatMap, HeatOutput};
use crate::model::mlp::{Act, Mlp, MlpSpec, Trainer};
use crate::model::Task;
use crate::walk::simec::{
    class_curve, integral_curve, interval_preimage, simexp_toward, Along, Curve, CurveConfig, Preimage,
};

/// The dataset and network to train (changing any of these starts training over).
#[derive(Debug, Clone, PartialEq)]
pub struct PlaneSetup {
    pub dataset: ToyKind,
    pub noise: f64,
    pub seed: u64,
    pub count: usize,
    pub width: usize,
    pub depth: usize,
    pub act: Act,
}

impl Default for PlaneSetup {
    fn default() -> Self {
        PlaneSetup {
            dataset: ToyKind::Moons,
            noise: 0.1,
            seed: 1,
            count: 200,
            width: 12,
            depth: 2,
            act: Act::Relu,
        }
    }
}

/// How curves are drawn: steps, the interval swept, the plane's extent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlaneWalks {
    /// Step of the RK4 leaves and of SiMEC / SiMExp, in input units.
    pub step: f64,
    /// SiMExp stops once the output changed by this much.
    pub threshold: f64,
    /// The interval [a, b] of outputs whose preimage is swept, if any.
    pub interval: Option<(f64, f64)>,
    /// The plane shown: [-half, half]^2.
    pub half: f64,
}

impl Default for PlaneWalks {
    fn default() -> Self {
        PlaneWalks {
            step: 0.01,
            threshold: 0.5,
            interval: None,
            half: 2.0,
        }
    }
}

pub enum PlaneRequest {
    Setup(PlaneSetup),
    /// Train continuously, or stop.
    Play(bool),
    /// Train this many steps, then stop.
    Train(usize),
    LearningRate(f64),
    /// Draw the curves through this point (None clears them).
    Click(Option<[f64; 2]>),
    Walks(PlaneWalks),
    /// Replace the network by a features model file (2 inputs).
    Load(String),
    Save(String),
    /// Drop a loaded model for a fresh network of the current setup.
    Fresh,
    /// Which output the heat map shows.
    Show(HeatOutput),
}

/// The curves through the clicked point.
#[derive(Debug, Clone)]
pub struct Curves {
    pub at: [f64; 2],
    /// The outputs at the point.
    pub outputs: Vec<f64>,
    /// The data leaf (RK4 along the top eigenvector of G).
    pub leaf: Curve,
    /// The kernel leaf (RK4 along the bottom eigenvector).
    pub kernel: Curve,
    /// The equivalence class by SiMEC (Euler steps).
    pub class: Curve,
    /// SiMExp from the point until the output has changed by the threshold.
    pub simexp: Vec<[f64; 2]>,
    pub preimage: Option<Preimage>,
}

/// Everything the view draws, computed by the worker.
#[derive(Debug, Clone)]
pub struct PlaneFrame {
    /// Adam steps taken.
    pub steps: usize,
    pub loss: f64,
    /// Training accuracy (classification), else 0.
    pub accuracy: f64,
    pub playing: bool,
    pub task: Task,
    /// The output shown (a class probability or a regression output) and its name.
    pub output: usize,
    pub output_name: String,
    pub piecewise_linear: bool,
    pub model_name: String,
    /// What the heat map shows, and how many outputs the model has to choose from.
    pub shown: HeatOutput,
    pub outputs: usize,
    pub output_names: Vec<String>,
    /// The file the model came from, when it was loaded rather than trained here.
    pub loaded: Option<String>,
    /// The shown output on a grid (the heat map): coarser while training, so frames stay cheap.
    pub heat: HeatMap,
    /// Sampled coarsely while training; the frame after training stops is at full resolution.
    pub coarse: bool,
    /// Milliseconds the worker spent computing this frame.
    pub compute_ms: f64,
    /// Directions and singular points on a coarse grid (the segments).
    pub arrows: Field,
    pub data: Arc<ToyData>,
    pub curves: Option<Curves>,
    /// The clicked point the curves were asked for (they may still be on their way).
    pub click: Option<[f64; 2]>,
}

/// Messages from the worker.
pub enum PlaneReply {
    Frame(Arc<PlaneFrame>),
    Note(String),
    Error(String),
}

/// Cells of the heat map and of the segment grid across.
pub const HEAT_CELLS: usize = 120;
pub const ARROW_CELLS: usize = 22;
/// While training: the heat map at this resolution, the segments on this grid, the curves through
/// the click at most this often, so a wide network's frame does not hold training up.
pub const TRAINING_HEAT_CELLS: usize = 48;
pub const TRAINING_ARROW_CELLS: usize = 16;
const TRAINING_CURVES_EVERY: Duration = Duration::from_secs(2);
/// While training, the curves' steps are this many times longer (the shapes stay, the cost falls).
const TRAINING_CURVE_STRIDE: f64 = 4.0;

pub struct PlaneHandle {
    tx: Sender<PlaneRequest>,
    rx: Receiver<PlaneReply>,
    thread: Option<JoinHandle<()>>,
}

impl PlaneHandle {
    pub fn spawn(ctx: egui::Context, setup: PlaneSetup, walks: PlaneWalks, lr: f64) -> PlaneHandle {
        let (tx, requests) = mpsc::channel();
        let (replies, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("dataleaf plane".into())
            .spawn(move || {
                let mut w = Worker::new(setup, walks, lr, replies, ctx);
                w.run(requests);
            })
            .ok();
        PlaneHandle { tx, rx, thread }
    }

    pub fn send(&self, r: PlaneRequest) {
        // A stopped worker shows as such in the view; nothing to do here.
        let _ = self.tx.send(r);
    }

    pub fn try_recv(&self) -> Option<PlaneReply> {
        self.rx.try_recv().ok()
    }

    pub fn is_alive(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

struct Worker {
    setup: PlaneSetup,
    walks: PlaneWalks,
    lr: f64,
    data: Arc<ToyData>,
    trainer: Trainer,
    playing: bool,
    pending: usize,
    click: Option<[f64; 2]>,
    shown: HeatOutput,
    /// The file of a loaded model: data changes keep it (and train it), they do not replace it.
    loaded: Option<String>,
    /// The curves of the last frame while training, with when they were computed.
    curves: Option<(Instant, Option<Curves>)>,
    last_compute: Duration,
    replies: Sender<PlaneReply>,
    ctx: egui::Context,
}

/// The heat map a model opens with: the last class's p for two classes (class 1 against class 0),
/// the most probable class when there are more, the output of a regression.
fn default_shown(mlp: &Mlp) -> HeatOutput {
    if mlp.task == Task::Classification && mlp.outputs() > 2 {
        HeatOutput::Argmax
    } else {
        HeatOutput::Output(default_output(mlp))
    }
}

fn toy_xy(data: &ToyData) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let xs = data.points.iter().map(|p| p.to_vec()).collect();
    let ys = data.labels.iter().map(|&l| vec![l as f64]).collect();
    (xs, ys)
}

/// Adam's batch size in the plane view.
const BATCH: usize = 32;
/// Training runs in chunks of this many steps between looks at the channel.
const CHUNK: usize = 10;
/// A new frame at most this often while training.
const FRAME_EVERY: Duration = Duration::from_millis(70);

fn trainer_for(setup: &PlaneSetup, data: &ToyData) -> Trainer {
    let spec = MlpSpec {
        inputs: 2,
        hidden: vec![setup.width.max(1); setup.depth],
        outputs: 2,
        act: setup.act,
        task: Task::Classification,
    };
    let mut mlp = Mlp::new(&spec, setup.seed);
    mlp.name = format!(
        "{}-{}x{}-{}",
        slug(setup.dataset),
        setup.depth,
        setup.width,
        setup.act.name()
    );
    let (xs, ys) = toy_xy(data);
    Trainer::new(mlp, xs, ys, setup.seed)
}

fn slug(kind: ToyKind) -> &'static str {
    match kind {
        ToyKind::Moons => "moons",
        ToyKind::Circles => "circles",
        ToyKind::Xor => "xor",
        ToyKind::Spirals => "spirals",
    }
}

impl Worker {
    fn new(
        setup: PlaneSetup,
        walks: PlaneWalks,
        lr: f64,
        replies: Sender<PlaneReply>,
        ctx: egui::Context,
    ) -> Worker {
        let data = Arc::new(toy::generate(setup.dataset, setup.count, setup.noise, setup.seed));
        let trainer = trainer_for(&setup, &data);
        let shown = default_shown(&trainer.mlp);
        Worker {
            setup,
            walks,
            lr,
            data,
            trainer,
            playing: false,
            pending: 0,
            click: None,
            shown,
            loaded: None,
            curves: None,
            last_compute: Duration::ZERO,
            replies,
            ctx,
        }
    }

    fn reply(&self, r: PlaneReply) {
        let _ = self.replies.send(r);
        self.ctx.request_repaint();
    }

    /// Take one request; whether a new frame is due.
    fn handle(&mut self, r: PlaneRequest) -> bool {
        match r {
            PlaneRequest::Setup(s) => {
                self.setup = s;
                self.data = Arc::new(toy::generate(
                    self.setup.dataset,
                    self.setup.count,
                    self.setup.noise,
                    self.setup.seed,
                ));
                if self.loaded.is_some() {
                    // A loaded model keeps its weights: the new data is what it trains on next.
                    let (xs, ys) = toy_xy(&self.data);
                    let mlp = self.trainer.mlp.clone();
                    self.trainer = Trainer::new(mlp, xs, ys, self.setup.seed);
                } else {
                    self.trainer = trainer_for(&self.setup, &self.data);
                    self.shown = default_shown(&self.trainer.mlp);
                }
                self.pending = 0;
            }
            PlaneRequest::Fresh => {
                self.loaded = None;
                self.data = Arc::new(toy::generate(
                    self.setup.dataset,
                    self.setup.count,
                    self.setup.noise,
                    self.setup.seed,
                ));
                self.trainer = trainer_for(&self.setup, &self.data);
                self.shown = default_shown(&self.trainer.mlp);
                self.playing = false;
                self.pending = 0;
            }
            PlaneRequest::Show(shown) => self.shown = shown,
            PlaneRequest::Play(on) => {
                self.playing = on && !self.data.points.is_empty();
                self.pending = 0;
            }
            PlaneRequest::Train(n) => self.pending = if self.data.points.is_empty() { 0 } else { n },
            PlaneRequest::LearningRate(lr) => {
                self.lr = lr;
                return false;
            }
            PlaneRequest::Click(p) => self.click = p,
            PlaneRequest::Walks(w) => self.walks = w,
            PlaneRequest::Load(path) => match Mlp::load(Path::new(&path)) {
                Ok(mlp) if mlp.inputs() != 2 => self.reply(PlaneReply::Error(format!(
                    "{path}: model {} takes {} features; the plane view shows models of 2",
                    mlp.name,
                    mlp.inputs()
                ))),
                Ok(mlp) => {
                    self.shown = default_shown(&mlp);
                    self.loaded = Some(path.clone());
                    let name = mlp.name.clone();
                    // A loaded model is shown as it is: no training data, so nothing to train.
                    self.data = Arc::new(ToyData::default());
                    self.trainer = Trainer::new(mlp, Vec::new(), Vec::new(), 0);
                    self.playing = false;
                    self.pending = 0;
                    self.reply(PlaneReply::Note(format!("opened {name} from {path}")));
                }
                Err(e) => self.reply(PlaneReply::Error(e.to_string())),
            },
            PlaneRequest::Save(path) => {
                match self.trainer.mlp.save(Path::new(&path)) {
                    Ok(()) => self.reply(PlaneReply::Note(format!(
                        "saved {path} (try: dataleaf simec --model {path} --start 0,0 --json)"
                    ))),
                    Err(e) => self.reply(PlaneReply::Error(e.to_string())),
                }
                return false;
            }
        }
        true
    }

    fn run(&mut self, requests: Receiver<PlaneRequest>) {
        let mut due = true;
        let mut last_frame = Instant::now();
        loop {
            let training = self.playing || self.pending > 0;
            // Wait for a request when idle; otherwise only look.
            let first = if training || due {
                match requests.try_recv() {
                    Ok(r) => Some(r),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => return,
                }
            } else {
                match requests.recv_timeout(Duration::from_secs(3600)) {
                    Ok(r) => Some(r),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            };
            if let Some(r) = first {
                due |= self.handle(r);
                continue;
            }
            if self.playing || self.pending > 0 {
                // Frames take at most a third of the time while training.
                let every = FRAME_EVERY.max(2 * self.last_compute);
                let n = if self.pending > 0 {
                    self.pending.min(CHUNK)
                } else {
                    CHUNK
                };
                for _ in 0..n {
                    self.trainer.step(BATCH, self.lr);
                }
                self.pending -= n.min(self.pending);
                due = true;
                // While training, frames at a steady pace; the last one of a run at once.
                let finished = !self.playing && self.pending == 0;
                if !finished && last_frame.elapsed() < every {
                    continue;
                }
            }
            if due {
                let began = Instant::now();
                let frame = self.frame(began);
                self.last_compute = began.elapsed();
                last_frame = Instant::now();
                self.reply(PlaneReply::Frame(Arc::new(frame)));
                due = false;
            }
        }
    }

    fn frame(&mut self, began: Instant) -> PlaneFrame {
        let training = self.playing || self.pending > 0;
        let bounds = Bounds::square(self.walks.half);
        let (heat_cells, arrow_cells) = if training {
            (TRAINING_HEAT_CELLS, TRAINING_ARROW_CELLS)
        } else {
            (HEAT_CELLS, ARROW_CELLS)
        };
        // The segments and singular points follow the class shown (class 1 of 2 for the argmax map).
        let output = match self.shown {
            HeatOutput::Output(o) => o.min(self.trainer.mlp.outputs().saturating_sub(1)),
            HeatOutput::Argmax => default_output(&self.trainer.mlp),
        };
        let mlp = &self.trainer.mlp;
        let heat = HeatMap::sample(mlp, bounds, heat_cells, heat_cells, self.shown);
        let arrows = Field::sample(mlp, bounds, arrow_cells, arrow_cells, output);
        let curves = match (&self.curves, training) {
            // While training, the curves of a recent frame stand in until they are due again.
            (Some((when, c)), true)
                if when.elapsed() < TRAINING_CURVES_EVERY && c.as_ref().map(|c| c.at) == self.click =>
            {
                c.clone()
            }
            _ => {
                let c = self.click.map(|at| self.curves(at, bounds, output, training));
                self.curves = Some((Instant::now(), c.clone()));
                c
            }
        };
        let mlp = &self.trainer.mlp;
        let loss = if self.data.points.is_empty() {
            0.0
        } else {
            self.trainer.loss()
        };
        PlaneFrame {
            steps: self.trainer.steps,
            loss,
            accuracy: self.trainer.accuracy(),
            playing: self.playing || self.pending > 0,
            task: mlp.task,
            output,
            output_name: match (mlp.task, self.shown) {
                (Task::Classification, HeatOutput::Argmax) => "the most probable class".into(),
                (Task::Classification, _) => format!(
                    "p(class {})",
                    mlp.names
                        .get(output)
                        .cloned()
                        .unwrap_or_else(|| output.to_string())
                ),
                (Task::Regression, _) => mlp.names.get(output).cloned().unwrap_or_else(|| "output".into()),
            },
            shown: self.shown,
            outputs: mlp.outputs(),
            output_names: (0..mlp.outputs())
                .map(|k| mlp.names.get(k).cloned().unwrap_or_else(|| k.to_string()))
                .collect(),
            loaded: self.loaded.clone(),
            coarse: training,
            compute_ms: began.elapsed().as_secs_f64() * 1000.0,
            piecewise_linear: mlp.is_piecewise_linear(),
            model_name: mlp.name.clone(),
            heat,
            arrows,
            data: self.data.clone(),
            curves,
            click: self.click,
        }
    }

    /// The curves through `at`; `coarse` (while training) takes steps `TRAINING_CURVE_STRIDE` times longer.
    fn curves(&self, at: [f64; 2], bounds: Bounds, output: usize, coarse: bool) -> Curves {
        let mlp = &self.trainer.mlp;
        let w = &self.walks;
        let span = 2.0 * w.half;
        let step = if coarse {
            w.step * TRAINING_CURVE_STRIDE
        } else {
            w.step
        };
        let cfg = CurveConfig {
            step,
            // Enough to cross the plane three times.
            max_steps: (3.0 * span / step).ceil() as usize,
            bounds,
            output,
        };
        // SiMExp toward the middle of the output's range: a class probability climbs when below
        // 1/2 and falls when above, so the path heads for the other class.
        let here = PointGeometry::at(mlp, &at, output);
        let value = here.outputs.get(output).copied().unwrap_or(0.0);
        let up = match mlp.task {
            Task::Classification => value < 0.5,
            Task::Regression => true,
        };
        let sign = if up { 1.0 } else { -1.0 };
        let hint: Vec<f64> = here.gradient.iter().map(|g| sign * g).collect();
        let (path, _) = simexp_toward(mlp, &at, step, w.threshold, cfg.max_steps, &hint);
        let simexp = std::iter::once(at)
            .chain(path.iter().map(|s| [s.point[0], s.point[1]]))
            .take_while(|p| bounds.contains(p))
            .collect();
        let preimage = w.interval.map(|(a, b)| {
            // The slices a little coarser than the curves: a sweep makes many of them.
            let sweep = CurveConfig {
                step: step * 1.5,
                ..cfg
            };
            interval_preimage(mlp, at, a, b, 10, &sweep)
        });
        Curves {
            at,
            outputs: mlp.predict(&at),
            leaf: integral_curve(mlp, at, Along::Leaf, &cfg),
            kernel: integral_curve(mlp, at, Along::Kernel, &cfg),
            class: class_curve(mlp, at, &cfg),
            simexp,
            preimage,
        }
    }
}
