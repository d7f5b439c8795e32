//! The background worker: it owns the model, runs the two walks interleaved and streams their frames
//! back over a channel, so the UI thread never computes a Jacobian.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::data::{Dataset, DEFAULT_DATASET};
use crate::model::{Model, Network, DEFAULT_MODEL};
use crate::walk::{self, Step, Walk, WalkConfig};

use super::state::{KernelDirection, Params};

/// The two walks shown side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Along the data leaf, toward the target.
    Leaf = 0,
    /// Across leaves, in ker G.
    Kernel = 1,
}

impl Lane {
    pub const BOTH: [Lane; 2] = [Lane::Leaf, Lane::Kernel];

    pub fn title(self) -> &'static str {
        match self {
            Lane::Leaf => "along the data leaf",
            Lane::Kernel => "across leaves (kernel)",
        }
    }

    /// The title beside the lane's filmstrip.
    pub fn strip_title(self) -> &'static str {
        match self {
            Lane::Leaf => "data leaf",
            Lane::Kernel => "kernel",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Lane::Leaf => "leaf",
            Lane::Kernel => "kernel",
        }
    }
}

/// One step of one lane, as the UI needs it (small: the image and a few numbers).
#[derive(Debug, Clone)]
pub struct Frame {
    pub session: u64,
    pub lane: Lane,
    pub index: usize,
    pub image: Vec<f32>,
    pub probs: Vec<f32>,
    pub argmax: usize,
    /// G's eigenvalues, descending.
    pub eigenvalues: Vec<f64>,
    pub rank: usize,
    pub trace: f64,
    /// L2 (pixels) to the target, or to the start when there is no target.
    pub distance: f32,
    /// Fraction of the move that led here lying outside the data leaf.
    pub off_leaf: f32,
    /// This lane's last frame.
    pub last: bool,
    /// The lane ended within the stop distance of the target.
    pub reached: bool,
    /// Milliseconds the worker spent computing this step (for the lane's steps/s readout).
    pub step_ms: f32,
}

impl Frame {
    pub fn max_prob(&self) -> f32 {
        self.probs.get(self.argmax).copied().unwrap_or(f32::NAN)
    }
}

/// What the UI needs to know of a model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub name: String,
    pub source: String,
    pub classes: Vec<String>,
    /// False with sigmoid, tanh or GELU layers, where the papers' ReLU results do not apply.
    pub piecewise_linear: bool,
}

/// Start a new pair of walks; `session` tags their frames so stale ones can be dropped.
#[derive(Debug, Clone)]
pub struct Setup {
    pub session: u64,
    pub start: Vec<f32>,
    pub target: Option<Vec<f32>>,
    pub params: Params,
}

pub enum Request {
    /// Open a model and/or a dataset; both are checked together and kept only if they fit.
    Load {
        model: Option<String>,
        dataset: Option<String>,
    },
    Setup(Setup),
    Play,
    Pause,
    /// One step of each lane.
    Step,
    /// Steps per second per lane; `None` = as fast as possible.
    Speed(Option<f32>),
    Quit,
}

pub enum Reply {
    /// A load succeeded: the spec strings that were asked for, and what they opened.
    Loaded {
        model: Option<(String, ModelInfo)>,
        dataset: Option<(String, Arc<Dataset>)>,
    },
    Error(String),
    /// Making the noisy start: kernel steps done out of total.
    Preparing {
        session: u64,
        done: usize,
        total: usize,
    },
    /// The walks begin from this image (the noisy start, or the start itself).
    Started {
        session: u64,
        start: Vec<f32>,
    },
    Frames(Vec<Frame>),
    Playing(bool),
}

/// The UI's end of the worker.
pub struct WorkerHandle {
    tx: Sender<Request>,
    rx: Receiver<Reply>,
    thread: Option<JoinHandle<()>>,
}

impl WorkerHandle {
    /// Start the worker; it opens `model` and `dataset` (falling back to the defaults on error).
    pub fn spawn(ctx: egui::Context, model: String, dataset: String) -> WorkerHandle {
        let (tx, requests) = mpsc::channel();
        let (replies, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("dataleaf-worker".into())
            .spawn(move || {
                super::sched::request_slice(super::sched::WORKER_SLICE);
                let worker = Worker {
                    rx: requests,
                    tx: replies,
                    ctx,
                    dataset: None,
                    playing: false,
                    speed: None,
                    pending_steps: 0,
                };
                // One core is left to the UI thread, so frames keep their pace while a walk
                // runs (on two cores the walk then takes one: 3.5 instead of 2.6 ms a step).
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                let threads = std::env::var("DATALEAF_WORKER_THREADS")
                    .ok()
                    .and_then(|t| t.parse::<usize>().ok())
                    .filter(|&n| n > 0)
                    .unwrap_or(cores.saturating_sub(1).max(1));
                match rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .start_handler(|_| {
                        super::sched::request_slice(super::sched::WORKER_SLICE);
                    })
                    .build()
                {
                    Ok(pool) => pool.install(|| worker.run(model, dataset)),
                    Err(_) => worker.run(model, dataset),
                }
            })
            .ok();
        WorkerHandle { tx, rx, thread }
    }

    pub fn send(&self, request: Request) {
        // A closed channel means the worker is gone; the UI reports that on the next receive.
        let _ = self.tx.send(request);
    }

    /// The next reply, if one is waiting.
    pub fn try_recv(&self) -> Option<Reply> {
        match self.rx.try_recv() {
            Ok(reply) => Some(reply),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => None,
        }
    }

    pub fn is_alive(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        let _ = self.tx.send(Request::Quit);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Worker {
    rx: Receiver<Request>,
    tx: Sender<Reply>,
    ctx: egui::Context,
    dataset: Option<Arc<Dataset>>,
    playing: bool,
    speed: Option<f32>,
    pending_steps: usize,
}

/// Why `serve` returned.
enum Exit {
    Quit,
    /// A new model was loaded; the walks borrowing the old one are gone.
    Swap(Box<Model>),
}

/// How long one noisy-start tick may run before the worker looks at its requests again.
const PREPARE_SLICE: Duration = Duration::from_millis(40);

impl Worker {
    fn reply(&self, reply: Reply) {
        let _ = self.tx.send(reply);
        self.ctx.request_repaint();
    }

    fn run(mut self, model: String, dataset: String) {
        let mut current = match self.load(None, Some(model.clone()), Some(dataset.clone())) {
            Ok(m) => m,
            Err(e) => {
                self.reply(Reply::Error(format!("{e}; opened the defaults instead")));
                self.load(None, Some(DEFAULT_MODEL.into()), Some(DEFAULT_DATASET.into()))
                    .unwrap_or_else(|e| {
                        self.reply(Reply::Error(e));
                        None
                    })
            }
        };
        loop {
            match self.serve(current.as_deref()) {
                Exit::Quit => return,
                Exit::Swap(model) => current = Some(model),
            }
        }
    }

    /// Open what is asked, check the pair, and announce it. Returns the new model, if one was asked.
    fn load(
        &mut self,
        current: Option<&Model>,
        model_spec: Option<String>,
        dataset_spec: Option<String>,
    ) -> Result<Option<Box<Model>>, String> {
        let model = match &model_spec {
            Some(spec) => Some(Box::new(
                Model::open(spec).map_err(|e| format!("cannot open model: {e}"))?,
            )),
            None => None,
        };
        let mut dataset_spec = dataset_spec;
        let mut data = match &dataset_spec {
            Some(spec) => Some(Arc::new(
                Dataset::open(spec).map_err(|e| format!("cannot open dataset: {e}"))?,
            )),
            None => None,
        };
        // A model alone that does not fit the open dataset (a CIFAR model over MNIST) comes with the
        // first built-in dataset it fits, so one drop or one typed path is enough.
        if let (Some(m), None, Some(current)) = (model.as_deref(), &data, self.dataset.as_ref()) {
            if m.check_dataset(current).is_err() {
                // mnist-train has the test set's shape and takes a second to read: skipped.
                let candidates = crate::data::BUILT_IN.iter().filter(|s| **s != "mnist-train");
                if let Some((spec, d)) = candidates.into_iter().find_map(|spec| {
                    let d = Dataset::open(spec).ok()?;
                    m.check_dataset(&d).is_ok().then(|| (spec.to_string(), d))
                }) {
                    dataset_spec = Some(spec);
                    data = Some(Arc::new(d));
                }
            }
        }
        if let (Some(m), Some(d)) = (
            model.as_deref().or(current),
            data.as_ref().or(self.dataset.as_ref()),
        ) {
            m.check_dataset(d)?;
        }
        if let Some(d) = &data {
            self.dataset = Some(d.clone());
        }
        let info = model.as_ref().map(|m| ModelInfo {
            name: m.name().to_string(),
            source: m.source.display().to_string(),
            classes: m.arch.classes.clone(),
            piecewise_linear: m.arch.is_piecewise_linear(),
        });
        self.reply(Reply::Loaded {
            model: model_spec.zip(info),
            dataset: dataset_spec.zip(data),
        });
        Ok(model)
    }

    /// Answer requests and run walks on one model until it is replaced or the app quits.
    fn serve(&mut self, model: Option<&Model>) -> Exit {
        let mut lanes: Option<Lanes> = None;
        let mut next_tick = Instant::now();
        loop {
            let busy = lanes
                .as_ref()
                .is_some_and(|l| l.setting_up() || ((self.playing || self.pending_steps > 0) && !l.done()));
            let request = if !busy {
                match self.rx.recv() {
                    Ok(r) => Some(r),
                    Err(_) => return Exit::Quit,
                }
            } else {
                let wait = next_tick.saturating_duration_since(Instant::now());
                let paced = lanes.as_ref().is_some_and(|l| !l.setting_up()) && self.pending_steps == 0;
                if wait.is_zero() || !paced {
                    match self.rx.try_recv() {
                        Ok(r) => Some(r),
                        Err(TryRecvError::Empty) => None,
                        Err(TryRecvError::Disconnected) => return Exit::Quit,
                    }
                } else {
                    match self.rx.recv_timeout(wait) {
                        Ok(r) => Some(r),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => return Exit::Quit,
                    }
                }
            };
            if let Some(request) = request {
                match request {
                    Request::Quit => return Exit::Quit,
                    Request::Load { model: m, dataset: d } => match self.load(model, m, d) {
                        Ok(Some(new_model)) => {
                            self.playing = false;
                            self.pending_steps = 0;
                            return Exit::Swap(new_model);
                        }
                        Ok(None) => {}
                        Err(e) => self.reply(Reply::Error(e)),
                    },
                    Request::Setup(setup) => {
                        self.pending_steps = 0;
                        lanes = match model {
                            Some(m) => Some(Lanes::new(&m.network, setup)),
                            None => {
                                self.reply(Reply::Error("no model is loaded".into()));
                                None
                            }
                        };
                    }
                    Request::Play => self.playing = true,
                    Request::Pause => {
                        self.playing = false;
                        self.pending_steps = 0;
                    }
                    Request::Step => {
                        self.playing = false;
                        self.pending_steps += 1;
                    }
                    Request::Speed(speed) => self.speed = speed,
                }
                continue;
            }
            let Some(l) = lanes.as_mut() else { continue };
            let began = Instant::now();
            let was_walking = !l.setting_up();
            let replies = l.tick();
            for reply in replies {
                self.reply(reply);
            }
            if was_walking {
                self.pending_steps = self.pending_steps.saturating_sub(1);
                let period = self
                    .speed
                    .filter(|s| *s > 0.0)
                    .map_or(Duration::ZERO, |s| Duration::from_secs_f32(1.0 / s));
                next_tick = began + period;
            }
            if l.done() && self.playing {
                self.playing = false;
                self.reply(Reply::Playing(false));
            }
        }
    }
}

/// One walk in progress.
struct LaneRun<'a> {
    lane: Lane,
    walk: super::instruments::LeafLaneWalk<'a>,
    max_steps: usize,
    done: bool,
}

impl LaneRun<'_> {
    /// The lane's next step as a frame, timed; None once the walk has nothing more.
    fn step(&mut self, session: u64, target: Option<&[f32]>) -> Option<Frame> {
        let began = Instant::now();
        let Some(step) = self.walk.next() else {
            self.done = true;
            return None;
        };
        let step_ms = began.elapsed().as_secs_f32() * 1000.0;
        let last = self.walk.reached() || self.walk.finished() || step.index >= self.max_steps;
        self.done = last;
        // A reach search's distance is its own gap (to the target's leaf path), kept as is.
        let target = target.filter(|_| !self.walk.is_reach());
        let mut f = frame(session, self.lane, step, target, last, self.walk.reached());
        f.step_ms = step_ms;
        Some(f)
    }
}

/// The noisy start in progress: a kernel walk whose last image becomes the start.
struct Noise<'a> {
    walk: Walk<'a>,
    total: usize,
    /// Steps taken so far.
    done: usize,
    last: Vec<f32>,
}

/// The pair of walks of one session.
struct Lanes<'a> {
    network: &'a Network,
    session: u64,
    params: Params,
    target: Option<Vec<f32>>,
    noise: Option<Noise<'a>>,
    runs: Vec<LaneRun<'a>>,
    /// A setup error leaves the session with nothing to run.
    failed: bool,
    started: Option<Vec<f32>>,
    errors: Vec<String>,
}

impl<'a> Lanes<'a> {
    fn new(network: &'a Network, setup: Setup) -> Lanes<'a> {
        let mut lanes = Lanes {
            network,
            session: setup.session,
            params: setup.params.clone(),
            target: setup.target,
            noise: None,
            runs: Vec::new(),
            failed: false,
            started: None,
            errors: Vec::new(),
        };
        let top_k = setup.params.classes_in_g.top_k(network.num_classes());
        if setup.params.noise_steps > 0 {
            let config = WalkConfig {
                max_steps: setup.params.noise_steps,
                seed: setup.params.noise_seed(),
                top_k,
                ..setup.params.kernel_config()
            };
            match Walk::new(network, config, setup.start.clone(), None) {
                Ok(walk) => {
                    lanes.noise = Some(Noise {
                        walk,
                        total: setup.params.noise_steps,
                        done: 0,
                        last: setup.start,
                    })
                }
                Err(e) => lanes.fail(e),
            }
        } else {
            lanes.begin(setup.start);
        }
        lanes
    }

    fn fail(&mut self, message: String) {
        self.errors.push(message);
        self.failed = true;
    }

    /// Start both lanes from `start`.
    fn begin(&mut self, start: Vec<f32>) {
        let p = &self.params;
        let top_k = p.classes_in_g.top_k(self.network.num_classes());
        if let Some(target) = &self.target {
            let walk = if p.reach {
                super::instruments::lane_reach(self.network, p, start.clone(), target.clone())
            } else {
                let config = WalkConfig {
                    top_k,
                    ..p.leaf_config()
                };
                Walk::new(self.network, config, start.clone(), Some(target.clone()))
                    .map(super::instruments::LeafLaneWalk::Walk)
            };
            match walk {
                Ok(walk) => self.runs.push(LaneRun {
                    lane: Lane::Leaf,
                    walk,
                    max_steps: if p.reach { usize::MAX } else { p.leaf_max_steps },
                    done: false,
                }),
                Err(e) => return self.fail(e),
            }
        }
        let toward = match p.kernel_direction {
            KernelDirection::TowardTarget => self.target.clone(),
            KernelDirection::Random => None,
        };
        let config = WalkConfig {
            top_k,
            ..p.kernel_config()
        };
        match Walk::new(self.network, config, start.clone(), toward) {
            Ok(walk) => self.runs.push(LaneRun {
                lane: Lane::Kernel,
                walk: super::instruments::LeafLaneWalk::Walk(walk),
                max_steps: p.kernel_max_steps,
                done: false,
            }),
            Err(e) => return self.fail(e),
        }
        self.started = Some(start);
    }

    /// Still making the noisy start, or not yet announced.
    fn setting_up(&self) -> bool {
        self.noise.is_some() || self.started.is_some() || !self.errors.is_empty()
    }

    fn done(&self) -> bool {
        // While the noisy start is made there are no runs yet, and that is not the end.
        self.failed || (self.noise.is_none() && !self.runs.is_empty() && self.runs.iter().all(|r| r.done))
    }

    /// One slice of work: a few noisy-start steps, the start's announcement with both lanes'
    /// step 0, or one step of each running lane.
    fn tick(&mut self) -> Vec<Reply> {
        let mut replies: Vec<Reply> = self.errors.drain(..).map(Reply::Error).collect();
        if self.failed {
            return replies;
        }
        if let Some(noise) = &mut self.noise {
            let began = Instant::now();
            let mut finished = false;
            while began.elapsed() < PREPARE_SLICE {
                match noise.walk.next() {
                    Some(step) => {
                        noise.done = step.index;
                        noise.last = step.x;
                    }
                    None => {
                        finished = true;
                        break;
                    }
                }
            }
            replies.push(Reply::Preparing {
                session: self.session,
                done: noise.done,
                total: noise.total,
            });
            if finished {
                let start = std::mem::take(&mut noise.last);
                self.noise = None;
                self.begin(start);
            }
            return replies;
        }
        if let Some(start) = self.started.take() {
            replies.push(Reply::Started {
                session: self.session,
                start,
            });
        }
        let (session, target) = (self.session, self.target.as_deref());
        let mut frames = Vec::new();
        match self.runs.as_mut_slice() {
            // Both lanes at once where the pool has a thread for each: no lane waits for the
            // other's step, and each step's own parallel parts share the pool as they go.
            [a, b] if !a.done && !b.done && rayon::current_num_threads() >= 2 => {
                let (fa, fb) = rayon::join(|| a.step(session, target), || b.step(session, target));
                frames.extend(fa.into_iter().chain(fb));
            }
            runs => {
                for run in runs.iter_mut().filter(|r| !r.done) {
                    frames.extend(run.step(session, target));
                }
            }
        }
        if !frames.is_empty() {
            replies.push(Reply::Frames(frames));
        }
        replies
    }
}

fn frame(session: u64, lane: Lane, step: Step, target: Option<&[f32]>, last: bool, reached: bool) -> Frame {
    let distance = target.map_or(step.distance, |t| walk::l2(&step.x, t));
    Frame {
        session,
        lane,
        index: step.index,
        probs: step.probs.iter().map(|&p| p as f32).collect(),
        argmax: step.argmax,
        eigenvalues: step.eigenvalues,
        rank: step.rank,
        trace: step.trace,
        distance,
        off_leaf: step.off_leaf,
        image: step.x,
        last,
        reached,
        step_ms: f32::NAN,
    }
}
