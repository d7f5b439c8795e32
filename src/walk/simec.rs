//! Walks of a dense features model (shared/REFERENCE.md section 3): SiMEC along an equivalence
//! class (the output stays constant to O(delta)), SiMExp between classes, the data leaves and kernel
//! leaves of the plane integrated with RK4, and the preimage of an interval of outputs swept by
//! alternating SiMExp and SiMEC.

use crate::geometry::plane::{canonical, orient, Bounds, PointGeometry};
use crate::model::mlp::Mlp;

/// Which eigenvector of G a walk follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Along {
    /// The smallest eigenvalue's: across the data leaves, inside one equivalence class (SiMEC).
    Kernel,
    /// The largest eigenvalue's: along the data leaf, between classes (SiMExp).
    Leaf,
}

/// A point of a walk and the model's outputs there (probabilities or regression values).
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub point: Vec<f64>,
    pub outputs: Vec<f64>,
}

/// The Euler walk of SiMEC (kernel) or SiMExp (leaf), one step per item, without end. At x_k:
/// eigen-decompose g = J^T M J, take v = the eigenvector of the smallest (largest) eigenvalue,
/// flip it if <v_prev, v> < 0, and set x_{k+1} = x_k + delta v. Where G gives no direction
/// (G = 0, equal eigenvalues, non-finite values) the walk keeps going straight along v_prev.
pub struct ClassWalk<'a> {
    mlp: &'a Mlp,
    along: Along,
    x: Vec<f64>,
    delta: f64,
    /// The previous direction; at the start, the orientation to align the first one with.
    prev: Option<Vec<f64>>,
    reverse: bool,
    output: usize,
}

impl<'a> ClassWalk<'a> {
    /// From x0 with step delta. The first direction is oriented with its largest component
    /// positive (`reversed` flips it; `oriented_like` aligns it with a given vector instead).
    pub fn new(mlp: &'a Mlp, x0: &[f64], along: Along, delta: f64) -> ClassWalk<'a> {
        ClassWalk {
            mlp,
            along,
            x: x0.to_vec(),
            delta,
            prev: None,
            reverse: false,
            output: 0,
        }
    }

    pub fn reversed(mut self, reverse: bool) -> Self {
        self.reverse = reverse;
        self
    }

    pub fn oriented_like(mut self, hint: &[f64]) -> Self {
        if hint.iter().any(|&v| v != 0.0) {
            self.prev = Some(hint.to_vec());
        }
        self
    }

    /// The direction the next step takes from the current point.
    fn direction(&self, geo: &PointGeometry) -> Vec<f64> {
        let eigen = match self.along {
            Along::Kernel => geo.kernel_direction(),
            Along::Leaf => geo.leaf_direction(),
        };
        match &self.prev {
            Some(prev) if !geo.directions_defined() => prev.clone(),
            Some(prev) => orient(eigen, prev),
            None => {
                let v = canonical(eigen);
                if self.reverse {
                    v.iter().map(|a| -a).collect()
                } else {
                    v
                }
            }
        }
    }
}

impl Iterator for ClassWalk<'_> {
    type Item = Step;
    fn next(&mut self) -> Option<Step> {
        let geo = PointGeometry::at(self.mlp, &self.x, self.output);
        let v = self.direction(&geo);
        self.x.iter_mut().zip(&v).for_each(|(x, d)| *x += self.delta * d);
        self.prev = Some(v);
        let outputs = self.mlp.predict(&self.x);
        Some(Step {
            point: self.x.clone(),
            outputs,
        })
    }
}

/// SiMEC: `steps` Euler steps of length delta along the equivalence class through x0.
pub fn simec(mlp: &Mlp, x0: &[f64], delta: f64, steps: usize, reverse: bool) -> Vec<Step> {
    ClassWalk::new(mlp, x0, Along::Kernel, delta)
        .reversed(reverse)
        .take(steps)
        .collect()
}

/// SiMExp: steps along the data leaf until some output differs from its value at x0 by more than
/// `threshold` (that step included), or `max_steps`. Whether the threshold was passed.
pub fn simexp(
    mlp: &Mlp,
    x0: &[f64],
    delta: f64,
    threshold: f64,
    max_steps: usize,
    reverse: bool,
) -> (Vec<Step>, bool) {
    let walk = ClassWalk::new(mlp, x0, Along::Leaf, delta).reversed(reverse);
    until_changed(mlp, x0, walk, threshold, max_steps)
}

/// SiMExp whose first step runs with `hint` (e.g. up or down the gradient of an output).
pub fn simexp_toward(
    mlp: &Mlp,
    x0: &[f64],
    delta: f64,
    threshold: f64,
    max_steps: usize,
    hint: &[f64],
) -> (Vec<Step>, bool) {
    let walk = ClassWalk::new(mlp, x0, Along::Leaf, delta).oriented_like(hint);
    until_changed(mlp, x0, walk, threshold, max_steps)
}

fn until_changed(
    mlp: &Mlp,
    x0: &[f64],
    walk: ClassWalk,
    threshold: f64,
    max_steps: usize,
) -> (Vec<Step>, bool) {
    let f0 = mlp.predict(x0);
    let mut steps = Vec::new();
    for step in walk.take(max_steps) {
        let change = step
            .outputs
            .iter()
            .zip(&f0)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        steps.push(step);
        if change > threshold {
            return (steps, true);
        }
    }
    (steps, false)
}

/// A curve in the plane, open or closed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Curve {
    pub points: Vec<[f64; 2]>,
    /// It came back to its start (a loop).
    pub closed: bool,
}

/// Limits of a curve in the plane: its step, how many steps each way, the box it must stay in,
/// and the output whose gradient orients it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurveConfig {
    pub step: f64,
    pub max_steps: usize,
    pub bounds: Bounds,
    pub output: usize,
}

fn two(v: &[f64]) -> [f64; 2] {
    [
        v.first().copied().unwrap_or(0.0),
        v.get(1).copied().unwrap_or(0.0),
    ]
}

fn dist(a: [f64; 2], b: [f64; 2]) -> f64 {
    (a[0] - b[0]).hypot(a[1] - b[1])
}

/// Whether a walk that left its start came back: it crosses the line through the start across
/// its first direction, within ten steps of the start, after going at least five steps away.
/// (Euler's drift moves the return point O(delta) per loop, so "within a step" would miss it.)
struct LoopCheck {
    start: [f64; 2],
    first: Option<[f64; 2]>,
    left: bool,
    ahead: f64,
}

impl LoopCheck {
    fn new(start: [f64; 2]) -> LoopCheck {
        LoopCheck {
            start,
            first: None,
            left: false,
            ahead: 0.0,
        }
    }

    fn closes(&mut self, p: [f64; 2], step: f64) -> bool {
        let d = [p[0] - self.start[0], p[1] - self.start[1]];
        let Some(first) = self.first else {
            self.first = Some(d);
            self.ahead = d[0] * d[0] + d[1] * d[1];
            return false;
        };
        let ahead = d[0] * first[0] + d[1] * first[1];
        let (before, near) = (self.ahead, d[0].hypot(d[1]) <= 10.0 * step);
        self.ahead = ahead;
        self.left |= d[0].hypot(d[1]) > 5.0 * step;
        self.left && near && before < 0.0 && ahead >= 0.0
    }
}

/// One way of an integral curve from x0 by RK4 on the unit direction field (leaf or kernel), each
/// stage's direction oriented like the step's first: k1 = v(x), k2 = v(x + h/2 k1), k3 = v(x + h/2 k2),
/// k4 = v(x + h k3), x <- x + h/6 (k1 + 2 k2 + 2 k3 + k4). Stops at a singular point, the box edge,
/// a closed loop or max_steps.
fn rk4_way(mlp: &Mlp, x0: [f64; 2], along: Along, first: [f64; 2], cfg: &CurveConfig) -> Curve {
    let field = |x: [f64; 2], reference: [f64; 2]| -> Option<[f64; 2]> {
        let g = PointGeometry::at(mlp, &x, cfg.output);
        if !g.directions_defined() {
            return None;
        }
        let v = match along {
            Along::Kernel => g.kernel_direction(),
            Along::Leaf => g.leaf_direction(),
        };
        Some(two(&orient(v, &reference)))
    };
    let h = cfg.step;
    let mut x = x0;
    let mut reference = first;
    let mut points = vec![x0];
    let mut check = LoopCheck::new(x0);
    let add = |x: [f64; 2], k: [f64; 2], s: f64| [x[0] + s * k[0], x[1] + s * k[1]];
    for _ in 0..cfg.max_steps {
        let Some(k1) = field(x, reference) else { break };
        let Some(k2) = field(add(x, k1, h / 2.0), k1) else {
            break;
        };
        let Some(k3) = field(add(x, k2, h / 2.0), k1) else {
            break;
        };
        let Some(k4) = field(add(x, k3, h), k1) else { break };
        let next = [
            x[0] + h / 6.0 * (k1[0] + 2.0 * k2[0] + 2.0 * k3[0] + k4[0]),
            x[1] + h / 6.0 * (k1[1] + 2.0 * k2[1] + 2.0 * k3[1] + k4[1]),
        ];
        if !cfg.bounds.contains(&next) || !next[0].is_finite() || !next[1].is_finite() {
            break;
        }
        points.push(next);
        if check.closes(next, h) {
            *points.last_mut().expect("a point") = x0;
            return Curve { points, closed: true };
        }
        reference = k1;
        x = next;
    }
    Curve {
        points,
        closed: false,
    }
}

/// The leaf (`Along::Leaf`) or kernel leaf (`Along::Kernel`) through x0, integrated with RK4 both ways
/// from x0 (one way when it closes). Empty when x0 is a singular point.
pub fn integral_curve(mlp: &Mlp, x0: [f64; 2], along: Along, cfg: &CurveConfig) -> Curve {
    let g = PointGeometry::at(mlp, &x0, cfg.output);
    if !g.directions_defined() || !cfg.bounds.contains(&x0) {
        return Curve::default();
    }
    let v = two(match along {
        Along::Kernel => g.kernel_direction(),
        Along::Leaf => g.leaf_direction(),
    });
    let forward = rk4_way(mlp, x0, along, v, cfg);
    if forward.closed {
        return forward;
    }
    join(rk4_way(mlp, x0, along, [-v[0], -v[1]], cfg), forward)
}

/// `back` reversed then `forward` (both start at the same point, which appears once).
fn join(back: Curve, forward: Curve) -> Curve {
    let mut points: Vec<[f64; 2]> = back.points.into_iter().rev().collect();
    points.extend(forward.points.into_iter().skip(1));
    Curve {
        points,
        closed: false,
    }
}

/// The kernel direction at x0 turned to run with grad s rotated a quarter turn counter-clockwise:
/// every slice of a sweep then runs the same way round.
fn kernel_hint(mlp: &Mlp, x: &[f64], output: usize) -> [f64; 2] {
    let g = PointGeometry::at(mlp, x, output);
    [-g.gradient.get(1).copied().unwrap_or(0.0), g.gradient[0]]
}

/// The equivalence class through x0 by SiMEC (Euler steps of `cfg.step`), both ways unless it closes,
/// within the box. Oriented counter-clockwise about grad s, the shown output's gradient.
pub fn class_curve(mlp: &Mlp, x0: [f64; 2], cfg: &CurveConfig) -> Curve {
    let hint = kernel_hint(mlp, &x0, cfg.output);
    let way = |sign: f64| -> Curve {
        let mut walk = ClassWalk::new(mlp, &x0, Along::Kernel, cfg.step)
            .oriented_like(&[sign * hint[0], sign * hint[1]]);
        walk.output = cfg.output;
        let mut points = vec![x0];
        let mut check = LoopCheck::new(x0);
        for step in walk.take(cfg.max_steps) {
            let p = two(&step.point);
            if !cfg.bounds.contains(&p) {
                break;
            }
            if check.closes(p, cfg.step) {
                points.push(x0);
                return Curve { points, closed: true };
            }
            points.push(p);
        }
        Curve {
            points,
            closed: false,
        }
    };
    let forward = way(1.0);
    if forward.closed || !cfg.bounds.contains(&x0) {
        return forward;
    }
    join(way(-1.0), forward)
}

/// The preimage of [a, b] of the shown output: level curves (SiMEC slices) at levels spaced
/// (b - a) / slices apart, reached from one another by SiMExp along the data leaf, and the strips
/// between neighbouring slices as quadrilaterals to fill.
#[derive(Debug, Clone, Default)]
pub struct Preimage {
    /// (level, slice), ascending in level.
    pub slices: Vec<(f64, Curve)>,
    pub strips: Vec<[[f64; 2]; 4]>,
}

/// Sweep the preimage of [a, b] starting from x0 (moved into the interval first by SiMExp when
/// outside it). SiMExp steps are `cfg.step` long, at most `cfg.max_steps` per move.
pub fn interval_preimage(
    mlp: &Mlp,
    x0: [f64; 2],
    a: f64,
    b: f64,
    slices: usize,
    cfg: &CurveConfig,
) -> Preimage {
    let (a, b) = (a.min(b), a.max(b));
    let s = |x: &[f64]| mlp.predict(x).get(cfg.output).copied().unwrap_or(f64::NAN);
    // Move along the leaf, up or down the output, until `done` holds; None if it never does.
    let climb = |from: [f64; 2], up: bool, done: &dyn Fn(f64) -> bool| -> Option<[f64; 2]> {
        let g = PointGeometry::at(mlp, &from, cfg.output).gradient;
        let sign = if up { 1.0 } else { -1.0 };
        let mut walk =
            ClassWalk::new(mlp, &from, Along::Leaf, cfg.step).oriented_like(&[sign * g[0], sign * g[1]]);
        walk.output = cfg.output;
        let mut prev = from;
        for step in walk.take(cfg.max_steps) {
            let p = two(&step.point);
            if !cfg.bounds.contains(&p) {
                return None;
            }
            if done(step.outputs.get(cfg.output).copied().unwrap_or(f64::NAN)) {
                // The step overshoots by up to delta |grad s|: bisect the last step back to the level.
                let (mut lo, mut hi) = (prev, p);
                for _ in 0..40 {
                    let mid = [(lo[0] + hi[0]) / 2.0, (lo[1] + hi[1]) / 2.0];
                    if done(s(&mid)) {
                        hi = mid;
                    } else {
                        lo = mid;
                    }
                }
                return Some(hi);
            }
            prev = p;
        }
        None
    };
    let s0 = s(&x0);
    if !(s0.is_finite() && a.is_finite() && b.is_finite()) {
        return Preimage::default();
    }
    let start = if s0 < a {
        climb(x0, true, &|v| v >= a)
    } else if s0 > b {
        climb(x0, false, &|v| v <= b)
    } else {
        Some(x0)
    };
    let Some(start) = start else {
        return Preimage::default();
    };
    let spacing = (b - a) / slices.max(1) as f64;
    let mut found = vec![(s(&start), class_curve(mlp, start, cfg))];
    for up in [true, false] {
        let mut at = start;
        let mut level = s(&start);
        loop {
            let target = if up {
                (level + spacing).min(b)
            } else {
                (level - spacing).max(a)
            };
            if (up && level >= b) || (!up && level <= a) {
                break;
            }
            let reached = if up {
                climb(at, true, &|v| v >= target)
            } else {
                climb(at, false, &|v| v <= target)
            };
            let Some(p) = reached else { break };
            at = p;
            level = s(&p);
            found.push((level, class_curve(mlp, p, cfg)));
        }
    }
    found.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut strips = Vec::new();
    for pair in found.windows(2) {
        let (c0, c1) = (&pair[0].1, &pair[1].1);
        let m = (c0.points.len().max(c1.points.len()) / 4).clamp(16, 400);
        let (r0, r1) = (resample(&c0.points, m), resample(&c1.points, m));
        if r0.is_empty() || r1.is_empty() {
            continue;
        }
        for k in 0..m - 1 {
            strips.push([r0[k], r0[k + 1], r1[k + 1], r1[k]]);
        }
    }
    Preimage {
        slices: found,
        strips,
    }
}

/// `m` points evenly spaced by arc length along a polyline (its ends included).
pub fn resample(points: &[[f64; 2]], m: usize) -> Vec<[f64; 2]> {
    if points.len() < 2 || m < 2 {
        return Vec::new();
    }
    let mut cum = vec![0.0];
    for w in points.windows(2) {
        cum.push(cum.last().copied().unwrap_or(0.0) + dist(w[0], w[1]));
    }
    let total = cum.last().copied().unwrap_or(0.0);
    if total <= 0.0 {
        return vec![points[0]; m];
    }
    let mut out = Vec::with_capacity(m);
    let mut seg = 0;
    for k in 0..m {
        let t = total * k as f64 / (m - 1) as f64;
        while seg + 2 < cum.len() && cum[seg + 1] < t {
            seg += 1;
        }
        let len = cum[seg + 1] - cum[seg];
        let u = if len > 0.0 {
            ((t - cum[seg]) / len).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let (p, q) = (points[seg], points[seg + 1]);
        out.push([p[0] + u * (q[0] - p[0]), p[1] + u * (q[1] - p[1])]);
    }
    out
}
