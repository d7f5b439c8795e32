//! Walks through input space as iterators of `Step` values (shared/REFERENCE.md section 3).
//! Each step recomputes the geometry at the current image, projects a direction onto the data
//! leaf D_x (leaf walk) or onto ker G (kernel walk), normalises it, and moves `step` pixel units,
//! clamped to the pixel box [0, 1]. The free walk is the straight line, the baseline that leaves
//! the data leaf.

pub mod chart;
pub mod reach;
pub mod simec;

use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

use crate::geometry::{norm, GeometryOptions, LocalGeometry};
use crate::model::Network;

/// The papers' step eta = 0.1 in MNIST-normalised units, in pixel units (times std 0.3081).
pub const DEFAULT_STEP: f32 = 0.1 * 0.3081;
/// The papers' stop distance 1.0 in normalised units, in pixel units.
pub const DEFAULT_STOP: f32 = 1.0 * 0.3081;
pub const DEFAULT_LEAF_MAX_STEPS: usize = 10_000;
pub const DEFAULT_KERNEL_STEPS: usize = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Toward the target, projected onto D_x each step.
    Leaf,
    /// Across leaves: a fixed random direction (or the target direction) projected onto ker G.
    Kernel,
    /// The straight line toward the target.
    Free,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "leaf" => Some(Mode::Leaf),
            "kernel" => Some(Mode::Kernel),
            "free" => Some(Mode::Free),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Mode::Leaf => "leaf",
            Mode::Kernel => "kernel",
            Mode::Free => "free",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct WalkConfig {
    pub mode: Mode,
    /// Step length in pixel units (L2 over pixels in [0, 1]).
    pub step: f32,
    /// Stop when the distance to the target is at most this (walks with a target).
    pub stop: f32,
    /// Steps taken at most (the start is step 0 and not counted).
    pub max_steps: usize,
    /// Seed of the kernel walk's random direction.
    pub seed: u64,
    /// Leaf walks only: weight w of the transverse part, displacement ~ P_leaf d + w P_kernel d.
    /// 0 keeps the walk strictly on the leaf, where it can stall at a local minimum of the distance
    /// to the target. `None` uses w = 1 / sqrt(n - rank), the size of the one extra direction that
    /// the papers' float32 least squares over all C gradient columns spans besides D_x (see README).
    pub transverse: Option<f32>,
    /// Keep only the K most probable classes in G (`None`: exact).
    pub top_k: Option<usize>,
}

impl WalkConfig {
    /// The authors' defaults for a mode, in pixel units.
    pub fn defaults(mode: Mode) -> WalkConfig {
        WalkConfig {
            mode,
            step: DEFAULT_STEP,
            stop: DEFAULT_STOP,
            max_steps: match mode {
                Mode::Kernel => DEFAULT_KERNEL_STEPS,
                _ => DEFAULT_LEAF_MAX_STEPS,
            },
            seed: 0,
            transverse: None,
            top_k: None,
        }
    }
}

/// One point of a walk: the image and what the model makes of it there.
#[derive(Debug, Clone)]
pub struct Step {
    /// 0 for the start.
    pub index: usize,
    pub x: Vec<f32>,
    pub probs: Vec<f64>,
    pub argmax: usize,
    /// G's eigenvalues at x, descending.
    pub eigenvalues: Vec<f64>,
    pub rank: usize,
    pub trace: f64,
    /// Probability mass of the classes top-k left out of G here (0 when exact).
    pub dropped_mass: f64,
    /// L2 distance (pixels) to the target, or to the start when there is none.
    pub distance: f32,
    /// Fraction of the move that led here lying outside D_x (of the previous point), in [0, 1];
    /// 0 for the start. Near 0 for leaf steps, near 1 for kernel steps.
    pub off_leaf: f32,
}

impl Step {
    pub fn max_prob(&self) -> f64 {
        self.probs.get(self.argmax).copied().unwrap_or(f64::NAN)
    }
}

/// A walk from a start image; iterate it to get the start and then one `Step` per move.
pub struct Walk<'a> {
    network: &'a Network,
    config: WalkConfig,
    x: Vec<f32>,
    start: Vec<f32>,
    target: Option<Vec<f32>>,
    /// The kernel walk's fixed random direction.
    direction: Option<Vec<f32>>,
    index: usize,
    off_leaf: f32,
    finished: bool,
    /// Whether the walk ended within the stop distance of its target.
    pub reached: bool,
}

impl<'a> Walk<'a> {
    /// A walk from `start`; `target` is required for leaf and free walks (checked by the caller
    /// through `Walk::new`'s error).
    pub fn new(
        network: &'a Network,
        config: WalkConfig,
        start: Vec<f32>,
        target: Option<Vec<f32>>,
    ) -> Result<Walk<'a>, String> {
        let n = network.input_len();
        if start.len() != n || target.as_ref().is_some_and(|t| t.len() != n) {
            return Err(format!("images must have {n} values for this model"));
        }
        if !(config.step.is_finite() && config.step > 0.0) {
            return Err(format!("step must be a positive number, got {}", config.step));
        }
        if config.transverse.is_some_and(|w| !(0.0..=1.0).contains(&w)) {
            return Err("the transverse weight must be between 0 and 1".into());
        }
        GeometryOptions::walk(config.top_k).check()?;
        if !(config.stop.is_finite() && config.stop >= 0.0) {
            return Err(format!(
                "stop distance must be a non-negative number, got {}",
                config.stop
            ));
        }
        if target.is_none() && config.mode != Mode::Kernel {
            return Err(format!("a {} walk needs a target", config.mode.name()));
        }
        let direction = (config.mode == Mode::Kernel && target.is_none()).then(|| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed);
            (0..n).map(|_| StandardNormal.sample(&mut rng)).collect()
        });
        Ok(Walk {
            network,
            config,
            x: start.clone(),
            start,
            target,
            direction,
            index: 0,
            off_leaf: 0.0,
            finished: false,
            reached: false,
        })
    }

    fn distance(&self) -> f32 {
        let other = self.target.as_ref().unwrap_or(&self.start);
        l2(&self.x, other)
    }

    /// The move from x given the geometry there (zero when the projected direction vanishes), and
    /// the fraction of it outside D_x, |P_kernel dx| / |dx|, from the same projection: P is a
    /// projector, so with l = P_leaf t the leaf move's kernel part is w (t - l), the kernel move
    /// (t - l) is all kernel, and the free move's is t - l. One projection per step (two passes
    /// over J at C = 1000 fewer than projecting dx again).
    fn displacement(&self, geo: &LocalGeometry) -> (Vec<f64>, f32) {
        let toward: Vec<f32> = match (&self.target, &self.direction) {
            (Some(t), _) => t.iter().zip(&self.x).map(|(a, b)| a - b).collect(),
            (None, Some(d)) => d.clone(),
            (None, None) => return (vec![0.0; self.x.len()], 0.0),
        };
        let leaf = geo.project_leaf(&toward);
        // P_kernel t = t - P_leaf t.
        let across: Vec<f64> = toward.iter().zip(&leaf).map(|(&t, l)| t as f64 - l).collect();
        let (d, off_part) = match self.config.mode {
            Mode::Leaf => {
                let w = match self.config.transverse {
                    Some(w) => w as f64,
                    None => 1.0 / ((geo.n - geo.rank).max(1) as f64).sqrt(),
                };
                // P_leaf d + w P_kernel d = (1 - w) P_leaf d + w d
                let d: Vec<f64> = leaf
                    .iter()
                    .zip(&toward)
                    .map(|(l, &t)| (1.0 - w) * l + w * t as f64)
                    .collect();
                (d, w * norm(&across))
            }
            Mode::Kernel => {
                let off = norm(&across);
                (across, off)
            }
            Mode::Free => (toward.iter().map(|&v| v as f64).collect(), norm(&across)),
        };
        let len = norm(&d);
        // A direction with nothing left after projection (G = 0 for a leaf walk, say), or NaN, stays put.
        if len.is_nan() || len <= 1e-12 {
            return (vec![0.0; d.len()], 0.0);
        }
        let scale = self.config.step as f64 / len;
        (d.iter().map(|v| v * scale).collect(), (off_part / len) as f32)
    }
}

impl Iterator for Walk<'_> {
    type Item = Step;

    fn next(&mut self) -> Option<Step> {
        if self.finished {
            return None;
        }
        let geo = LocalGeometry::with(self.network, &self.x, GeometryOptions::walk(self.config.top_k));
        let distance = self.distance();
        let step = Step {
            index: self.index,
            x: self.x.clone(),
            probs: geo.probs.clone(),
            argmax: geo.argmax(),
            eigenvalues: geo.eigenvalues.clone(),
            rank: geo.rank,
            trace: geo.trace,
            dropped_mass: geo.dropped_mass,
            distance,
            off_leaf: self.off_leaf,
        };
        let arrived =
            self.target.is_some() && self.config.mode != Mode::Kernel && distance <= self.config.stop;
        if arrived || self.index >= self.config.max_steps {
            self.reached = arrived;
            self.finished = true;
            return Some(step);
        }
        let (dx, off_leaf) = self.displacement(&geo);
        self.off_leaf = off_leaf;
        for (x, d) in self.x.iter_mut().zip(&dx) {
            *x = (*x as f64 + d).clamp(0.0, 1.0) as f32;
        }
        self.index += 1;
        Some(step)
    }
}

/// L2 distance between two images in pixel units.
pub fn l2(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}

/// The horizontal mirror of an NCHW image (each row reversed): a "symbol" not in the dataset.
pub fn mirror(image: &[f32], width: usize) -> Vec<f32> {
    image
        .chunks(width)
        .flat_map(|row| row.iter().rev().copied())
        .collect()
}

/// A noisy start: `steps` kernel steps from `start` (the papers' noisy leaves use 250).
pub fn noisy(
    network: &Network,
    start: &[f32],
    steps: usize,
    step: f32,
    seed: u64,
) -> Result<Vec<f32>, String> {
    noisy_with(network, start, steps, step, seed, None)
}

/// `noisy` with G from the `top_k` most probable classes (`None`: exact).
pub fn noisy_with(
    network: &Network,
    start: &[f32],
    steps: usize,
    step: f32,
    seed: u64,
    top_k: Option<usize>,
) -> Result<Vec<f32>, String> {
    let config = WalkConfig {
        max_steps: steps,
        step,
        seed,
        top_k,
        ..WalkConfig::defaults(Mode::Kernel)
    };
    let walk = Walk::new(network, config, start.to_vec(), None)?;
    Ok(walk.last().map(|s| s.x).unwrap_or_else(|| start.to_vec()))
}
