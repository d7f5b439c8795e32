//! Reach: a search that moves only along leaves and tries to get closer to a target than the strict
//! greedy leaf walk does (shared/REFERENCE.md section 7). Every move is P_leaf(d) at the current
//! point, normalised to the step length: nothing of it lies outside D_x before the pixel box clamps
//! it. The greedy walk (d = target - x) stalls where target - x is orthogonal to D_x, a local
//! minimum of the distance on the leaf; the strategies here are ways past such stalls:
//!
//! - `greedy`: the strict greedy walk, until it stalls (the baseline);
//! - `hop` (basin hopping): from a stall, walk along a random leaf direction (re-projected every
//!   step), descend greedily again, keep the new stall if it is closer, else return to the best;
//! - `bidirectional`: also walk the target's leaf, each end greedily toward the other's current
//!   point, so the gap between the two leaf paths closes from both sides;
//! - `bidirectional-hop`: the bidirectional search, hopping one end (in turn) at each joint stall.
//!
//! `final_distance` is the gap that is left: the length of the one move off the leaves needed to
//! complete a path from start to target whose other moves all lie on leaves (from the best point of
//! the start's leaf path to the target, or to the best point of the target's leaf path).
//!
//! The search is an iterator of `Step`s (one per move of either end, indexed in order) bounded by a time budget and
//! an evaluation count; the last `Step` is the best point found.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

use super::{l2, Step, DEFAULT_STEP};
use crate::geometry::{norm, GeometryOptions, LocalGeometry};
use crate::model::Network;

/// Default time budget of a search.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(3);
/// Default cap on geometry evaluations (the time budget usually binds first).
pub const DEFAULT_MAX_EVALUATIONS: usize = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Greedy,
    Hop,
    Bidirectional,
    BidirectionalHop,
}

impl Strategy {
    pub const ALL: [Strategy; 4] = [
        Strategy::Greedy,
        Strategy::Hop,
        Strategy::Bidirectional,
        Strategy::BidirectionalHop,
    ];

    pub fn parse(s: &str) -> Option<Strategy> {
        Strategy::ALL.into_iter().find(|k| k.name() == s)
    }

    pub fn name(self) -> &'static str {
        match self {
            Strategy::Greedy => "greedy",
            Strategy::Hop => "hop",
            Strategy::Bidirectional => "bidirectional",
            Strategy::BidirectionalHop => "bidirectional-hop",
        }
    }

    fn both_ends(self) -> bool {
        matches!(self, Strategy::Bidirectional | Strategy::BidirectionalHop)
    }

    fn hops(self) -> bool {
        matches!(self, Strategy::Hop | Strategy::BidirectionalHop)
    }
}

/// The best strategy measured (README, "Instruments").
pub const DEFAULT_STRATEGY: Strategy = Strategy::BidirectionalHop;

#[derive(Debug, Clone, Copy)]
pub struct ReachConfig {
    pub strategy: Strategy,
    /// Step length in pixel units.
    pub step: f32,
    /// Wall-clock time the search may take.
    pub budget: Duration,
    /// Geometry evaluations at most (one per step of either end).
    pub max_evaluations: usize,
    /// A descent has stalled when the gap has not shrunk by a tenth of a step over this many steps.
    pub stall_steps: usize,
    /// Steps of a hop along a random leaf direction.
    pub hop_steps: usize,
    /// Seed of the hops' random directions.
    pub seed: u64,
    /// Keep only the K most probable classes in G (`None`: exact).
    pub top_k: Option<usize>,
}

impl Default for ReachConfig {
    fn default() -> ReachConfig {
        ReachConfig {
            strategy: DEFAULT_STRATEGY,
            step: DEFAULT_STEP,
            budget: DEFAULT_BUDGET,
            max_evaluations: DEFAULT_MAX_EVALUATIONS,
            stall_steps: 40,
            hop_steps: 60,
            seed: 0,
            top_k: None,
        }
    }
}

/// One end of the search: a point on a leaf, the geometry there and the leaf moves that led to it.
#[derive(Clone)]
struct End {
    x: Vec<f32>,
    geo: LocalGeometry,
    /// Leaf moves taken since the search began (the path to x).
    moves: usize,
}

impl End {
    fn at(network: &Network, x: Vec<f32>, top_k: Option<usize>) -> End {
        let geo = LocalGeometry::with(network, &x, GeometryOptions::walk(top_k));
        End { x, geo, moves: 0 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Greedy descent of the gap.
    Descend,
    /// Walking along a random leaf direction, `left` steps to go.
    Hop {
        left: usize,
    },
    Finished,
}

/// What a finished search reports beside its steps.
#[derive(Debug, Clone, Default)]
pub struct ReachSummary {
    pub evaluations: usize,
    pub hops: usize,
    pub accepted_hops: usize,
    /// Leaf moves on the kept path: the start's end plus the target's end.
    pub path_moves: usize,
    /// Over every move made: the mean and the largest fraction outside D_x (before the box clamps).
    pub mean_off_leaf: f64,
    pub max_off_leaf: f64,
    /// The same fractions of the moves as taken, after the clamp to the pixel box [0, 1].
    pub mean_off_leaf_clamped: f64,
    pub max_off_leaf_clamped: f64,
    /// The fraction of each move as taken outside D at the point it arrives at (a measure of how
    /// far the leaf turned during the step).
    pub mean_off_leaf_end: f64,
    pub max_off_leaf_end: f64,
    pub seconds: f64,
    pub start_distance: f32,
    pub final_distance: f32,
    /// The best gap after each stall (a descent's end), for "how it improves with the budget".
    pub stalls: Vec<(f64, f32)>,
}

pub struct Reach<'a> {
    network: &'a Network,
    config: ReachConfig,
    target: Vec<f32>,
    /// The start's end and, for two-ended strategies, the target's end.
    ends: Vec<End>,
    /// The best state found (ends) and its gap.
    best: Vec<End>,
    best_gap: f32,
    phase: Phase,
    /// Which end moves next.
    turn: usize,
    /// The end a hop moves, and its fixed random direction.
    hop_end: usize,
    hop_direction: Vec<f32>,
    /// Gap at the last sign of progress, and the evaluation it happened at.
    progress_gap: f32,
    progress_at: usize,
    rng: StdRng,
    began: Instant,
    started: bool,
    /// Steps yielded so far (the index of the next one).
    yielded: usize,
    summary: ReachSummary,
    off_sum: f64,
    off_clamped_sum: f64,
    off_end_sum: f64,
    moves_made: usize,
}

impl<'a> Reach<'a> {
    pub fn new(
        network: &'a Network,
        config: ReachConfig,
        start: Vec<f32>,
        target: Vec<f32>,
    ) -> Result<Reach<'a>, String> {
        let n = network.input_len();
        if start.len() != n || target.len() != n {
            return Err(format!("images must have {n} values for this model"));
        }
        if !(config.step.is_finite() && config.step > 0.0) {
            return Err(format!("step must be a positive number, got {}", config.step));
        }
        if config.stall_steps == 0 || config.hop_steps == 0 {
            return Err("stall and hop lengths must be at least one step".into());
        }
        GeometryOptions::walk(config.top_k).check()?;
        let began = Instant::now();
        let mut ends = vec![End::at(network, start.clone(), config.top_k)];
        if config.strategy.both_ends() {
            ends.push(End::at(network, target.clone(), config.top_k));
        }
        let gap = l2(&start, &target);
        let summary = ReachSummary {
            start_distance: gap,
            final_distance: gap,
            evaluations: ends.len(),
            ..ReachSummary::default()
        };
        Ok(Reach {
            network,
            config,
            target,
            best: ends.clone(),
            ends,
            best_gap: gap,
            phase: Phase::Descend,
            turn: 0,
            hop_end: 0,
            hop_direction: Vec::new(),
            progress_gap: gap,
            progress_at: 0,
            rng: StdRng::seed_from_u64(config.seed),
            began,
            started: false,
            yielded: 0,
            summary,
            off_sum: 0.0,
            off_clamped_sum: 0.0,
            off_end_sum: 0.0,
            moves_made: 0,
        })
    }

    /// The point the start's end is heading for: the target, or the target's end.
    fn other(&self, end: usize) -> &[f32] {
        match (self.ends.len(), end) {
            (1, _) => &self.target,
            (_, 0) => &self.ends[1].x,
            _ => &self.ends[0].x,
        }
    }

    fn gap(&self) -> f32 {
        l2(&self.ends[0].x, self.other(0))
    }

    /// Time since the search began.
    pub fn elapsed(&self) -> Duration {
        self.began.elapsed()
    }

    /// The last (best) point has been yielded.
    pub fn finished(&self) -> bool {
        self.phase == Phase::Finished
    }

    /// The summary so far (final once the iterator is exhausted).
    pub fn summary(&self) -> &ReachSummary {
        &self.summary
    }

    /// The best point of the target's leaf path (two-ended strategies), else the target.
    pub fn best_target_end(&self) -> &[f32] {
        self.best.get(1).map_or(&self.target, |e| &e.x)
    }

    fn step_record(&mut self, x: &End, distance: f32, off_leaf: f32) -> Step {
        let index = self.yielded;
        self.yielded += 1;
        Step {
            index,
            x: x.x.clone(),
            probs: x.geo.probs.clone(),
            argmax: x.geo.argmax(),
            eigenvalues: x.geo.eigenvalues.clone(),
            rank: x.geo.rank,
            trace: x.geo.trace,
            dropped_mass: x.geo.dropped_mass,
            distance,
            off_leaf,
        }
    }

    /// Move end `e` one step along P_leaf(d), clamped to the pixel box; returns the fraction of the
    /// move outside D_x before the clamp, or None when nothing of d lies on the leaf there.
    fn leaf_move(&mut self, e: usize, d: &[f32]) -> Option<f32> {
        let end = &self.ends[e];
        let v = end.geo.project_leaf(d);
        let len = norm(&v);
        if len.is_nan() || len <= 1e-12 {
            return None;
        }
        let h = self.config.step as f64;
        // The plain step x + h P_leaf d / |P_leaf d|, before the box.
        let z: Vec<f64> = end
            .x
            .iter()
            .zip(&v)
            .map(|(&x, a)| x as f64 + a * h / len)
            .collect();
        let off_plain = {
            let dx: Vec<f64> = v.iter().map(|a| a * h / len).collect();
            (norm(&end.geo.project_kernel(&dx)) / h) as f32
        };
        // Clamped to the pixel box as every walk is; the clamp's own off-leaf share is reported apart.
        let moved: Vec<f32> = z.iter().map(|v| v.clamp(0.0, 1.0) as f32).collect();
        let actual: Vec<f64> = moved.iter().zip(&end.x).map(|(a, b)| (a - b) as f64).collect();
        let actual_len = norm(&actual);
        // Pinned against the box in every pixel the step would move.
        if actual_len.is_nan() || actual_len <= 1e-4 * h {
            return None;
        }
        let off_clamped = norm(&end.geo.project_kernel(&actual)) / actual_len;
        let geo = LocalGeometry::with(self.network, &moved, GeometryOptions::walk(self.config.top_k));
        // The same move seen from where it arrives: D changes where a ReLU switches on the way.
        let off_end = norm(&geo.project_kernel(&actual)) / actual_len;
        self.off_end_sum += off_end;
        self.summary.max_off_leaf_end = self.summary.max_off_leaf_end.max(off_end);
        let end = &mut self.ends[e];
        end.x = moved;
        end.geo = geo;
        end.moves += 1;
        self.summary.evaluations += 1;
        self.moves_made += 1;
        self.off_sum += off_plain as f64;
        self.off_clamped_sum += off_clamped;
        self.summary.max_off_leaf = self.summary.max_off_leaf.max(off_plain as f64);
        self.summary.max_off_leaf_clamped = self.summary.max_off_leaf_clamped.max(off_clamped);
        Some(off_plain)
    }

    fn out_of_budget(&self) -> bool {
        self.began.elapsed() >= self.config.budget || self.summary.evaluations >= self.config.max_evaluations
    }

    /// A descent has ended: keep the state if it is the best, then hop or finish.
    fn stalled(&mut self) {
        let gap = self.gap();
        if gap < self.best_gap {
            // The first stall is the greedy descent's; later improvements are hops that paid off.
            if !self.summary.stalls.is_empty() {
                self.summary.accepted_hops += 1;
            }
            self.best_gap = gap;
            self.best = self.ends.clone();
        } else {
            // Back to the best point: retracing the leaf path that led here, not a new move.
            self.ends = self.best.clone();
        }
        self.summary
            .stalls
            .push((self.began.elapsed().as_secs_f64(), self.best_gap));
        if !self.config.strategy.hops() {
            self.phase = Phase::Finished;
            return;
        }
        self.summary.hops += 1;
        self.hop_end = if self.ends.len() > 1 {
            self.summary.hops % 2
        } else {
            0
        };
        let n = self.ends[0].x.len();
        self.hop_direction = (0..n).map(|_| StandardNormal.sample(&mut self.rng)).collect();
        // Hop lengths vary (1/2 to 3/2 of the configured one) so repeated hops explore different radii.
        let scale = 0.5 + (self.summary.hops % 5) as f64 / 4.0;
        self.phase = Phase::Hop {
            left: ((self.config.hop_steps as f64 * scale).round() as usize).max(1),
        };
    }

    fn finish(&mut self) -> Step {
        self.phase = Phase::Finished;
        if self.gap() > self.best_gap {
            self.ends = self.best.clone();
        }
        if self.gap() < self.best_gap {
            self.best_gap = self.gap();
            self.best = self.ends.clone();
        }
        let n = self.moves_made.max(1) as f64;
        self.summary.mean_off_leaf = self.off_sum / n;
        self.summary.mean_off_leaf_clamped = self.off_clamped_sum / n;
        self.summary.mean_off_leaf_end = self.off_end_sum / n;
        self.summary.final_distance = self.best_gap;
        self.summary.path_moves = self.best.iter().map(|e| e.moves).sum();
        self.summary.seconds = self.began.elapsed().as_secs_f64();
        self.summary.stalls.push((self.summary.seconds, self.best_gap));
        let best = self.best[0].clone();
        self.step_record(&best, self.best_gap, 0.0)
    }
}

impl Iterator for Reach<'_> {
    type Item = Step;

    fn next(&mut self) -> Option<Step> {
        if !self.started {
            self.started = true;
            let gap = self.gap();
            let here = self.ends[0].clone();
            return Some(self.step_record(&here, gap, 0.0));
        }
        match self.phase {
            Phase::Finished => return None,
            _ if self.out_of_budget() => return Some(self.finish()),
            _ => {}
        }
        let e = match self.phase {
            Phase::Hop { .. } => self.hop_end,
            _ => {
                let e = self.turn % self.ends.len();
                self.turn += 1;
                e
            }
        };
        let d: Vec<f32> = match self.phase {
            Phase::Hop { .. } => self.hop_direction.clone(),
            _ => self
                .other(e)
                .iter()
                .zip(&self.ends[e].x)
                .map(|(a, b)| a - b)
                .collect(),
        };
        let off = self.leaf_move(e, &d);
        let gap = self.gap();
        match self.phase {
            Phase::Hop { left } => {
                self.phase = if left <= 1 || off.is_none() {
                    self.progress_gap = gap;
                    self.progress_at = self.summary.evaluations;
                    Phase::Descend
                } else {
                    Phase::Hop { left: left - 1 }
                };
            }
            Phase::Descend => {
                if gap < self.progress_gap - 0.1 * self.config.step {
                    self.progress_gap = gap;
                    self.progress_at = self.summary.evaluations;
                }
                // Both ends count toward the stall window when both move.
                let window = self.config.stall_steps * self.ends.len();
                let stuck = off.is_none() && self.ends.len() == 1;
                if stuck || self.summary.evaluations - self.progress_at >= window {
                    self.stalled();
                    if self.phase == Phase::Finished {
                        return Some(self.finish());
                    }
                }
            }
            Phase::Finished => {}
        }
        let here = self.ends[0].clone();
        Some(self.step_record(&here, gap, off.unwrap_or(0.0)))
    }
}
