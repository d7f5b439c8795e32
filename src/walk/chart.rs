//! Charts of the neighbourhood of x: a K x K grid of images, cell (a, b) in [-R, R]^2 reached from x by
//! a walk of length sqrt(a^2 + b^2) toward a e_1 + b e_2, re-projected at every step onto the leaf
//! (leaf plane: e_1, e_2 = the top two leaf directions at x) or onto ker G (kernel plane: e_1, e_2 =
//! two seeded random directions projected on ker G at x). Along the leaf the prediction changes
//! within a few pixel units; across the leaves it should not (shared/REFERENCE.md sections 1, 7).

use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

use super::DEFAULT_STEP;
use crate::geometry::{dot, norm, GeometryOptions, LocalGeometry};
use crate::model::Network;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plane {
    Leaf,
    Kernel,
}

impl Plane {
    pub fn parse(s: &str) -> Option<Plane> {
        match s {
            "leaf" => Some(Plane::Leaf),
            "kernel" => Some(Plane::Kernel),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Plane::Leaf => "leaf",
            Plane::Kernel => "kernel",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ChartConfig {
    pub plane: Plane,
    /// Cells per side (K >= 2).
    pub size: usize,
    /// Half-width R of the chart in pixel units.
    pub radius: f32,
    /// Seed of the kernel plane's random directions.
    pub seed: u64,
    /// Step of the walks to the cells, pixel units.
    pub step: f32,
    /// Keep only the K most probable classes in G (`None`: exact).
    pub top_k: Option<usize>,
}

impl Default for ChartConfig {
    fn default() -> ChartConfig {
        ChartConfig {
            plane: Plane::Leaf,
            size: 5,
            radius: 4.0,
            seed: 0,
            step: DEFAULT_STEP,
            top_k: None,
        }
    }
}

/// Steps of the walk to a chart's farthest side cell: the step grows with the radius, so a chart
/// costs about the same at every radius.
pub const STEPS_PER_RADIUS: f32 = 40.0;

impl ChartConfig {
    /// A chart of `size` x `size` cells in [-radius, radius]^2, stepping radius / 40 (at least the
    /// walks' default step).
    pub fn for_radius(plane: Plane, size: usize, radius: f32) -> ChartConfig {
        ChartConfig {
            plane,
            size,
            radius,
            step: (radius / STEPS_PER_RADIUS).max(DEFAULT_STEP),
            ..ChartConfig::default()
        }
    }
}

/// One cell of a chart.
#[derive(Debug, Clone)]
pub struct Cell {
    /// Chart coordinates in pixel units.
    pub a: f32,
    pub b: f32,
    /// Grid position: column (a) and row (b), 0..K.
    pub column: usize,
    pub row: usize,
    pub prediction: usize,
    pub max_prob: f64,
    /// Mean fraction of the walk's moves that lay outside D_x (0 at the centre).
    pub off_leaf: f32,
    pub image: Vec<f32>,
}

/// A ray from x by its reduced integer direction (p, q).
type RayKey = (i64, i64);
/// A cell on a ray: its multiple of the ray's unit cell, column and row.
type RayCell = (i64, usize, usize);

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a.abs()
    } else {
        gcd(b, a % b)
    }
}

/// The two chart axes at x: orthonormal, n values each. Fewer when the plane has fewer dimensions.
fn axes(geo: &LocalGeometry, config: &ChartConfig) -> Vec<Vec<f64>> {
    let candidates: Vec<Vec<f64>> = match config.plane {
        Plane::Leaf => geo.leaf_basis.iter().take(2).cloned().collect(),
        Plane::Kernel => {
            let mut rng = StdRng::seed_from_u64(config.seed);
            (0..2)
                .map(|_| {
                    let r: Vec<f64> = (0..geo.n).map(|_| StandardNormal.sample(&mut rng)).collect();
                    geo.project_kernel(&r)
                })
                .collect()
        }
    };
    let mut out: Vec<Vec<f64>> = Vec::new();
    for mut v in candidates {
        for prev in &out {
            let d = dot(&v, prev);
            v.iter_mut().zip(prev).for_each(|(x, p)| *x -= d * p);
        }
        let len = norm(&v);
        if len > 1e-9 {
            v.iter_mut().for_each(|x| *x /= len);
            out.push(v);
        }
    }
    out
}

/// The chart around `x`; `cancelled` is polled between steps (a cancelled chart returns None).
pub fn chart(
    network: &Network,
    x: &[f32],
    config: &ChartConfig,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<Option<Vec<Cell>>, String> {
    if x.len() != network.input_len() {
        return Err(format!(
            "the image must have {} values for this model",
            network.input_len()
        ));
    }
    if config.size < 2 {
        return Err(format!(
            "a chart needs at least 2 cells a side, got {}",
            config.size
        ));
    }
    if !(config.radius.is_finite() && config.radius > 0.0) {
        return Err(format!(
            "the radius must be a positive number of pixel units, got {}",
            config.radius
        ));
    }
    if !(config.step.is_finite() && config.step > 0.0) {
        return Err(format!("step must be a positive number, got {}", config.step));
    }
    GeometryOptions {
        top_k: config.top_k,
        basis: true,
    }
    .check()?;
    // The basis only at x, for the leaf plane's axes; the walks to the cells project without it.
    let geo = LocalGeometry::with(
        network,
        x,
        GeometryOptions {
            top_k: config.top_k,
            basis: config.plane == Plane::Leaf,
        },
    );
    let axes = axes(&geo, config);
    let k = config.size as i64;
    // Integer grid coordinates p, q in {-(K-1), -(K-3), ..., K-1}; a = p R / (K-1).
    let unit = config.radius as f64 / (k - 1) as f64;
    let coord = |i: i64| 2 * i - (k - 1);
    // Cells on one ray from x share a walk: group them by the reduced direction.
    let mut rays: Vec<(RayKey, Vec<RayCell>)> = Vec::new();
    let mut centre: Vec<(usize, usize)> = Vec::new();
    for row in 0..config.size {
        for column in 0..config.size {
            let (p, q) = (coord(column as i64), coord(row as i64));
            if p == 0 && q == 0 {
                centre.push((column, row));
                continue;
            }
            let g = gcd(p, q);
            let key = (p / g, q / g);
            match rays.iter_mut().find(|(k, _)| *k == key) {
                Some((_, cells)) => cells.push((g, column, row)),
                None => rays.push((key, vec![(g, column, row)])),
            }
        }
    }
    let cell_of = |column: usize, row: usize, g: &LocalGeometry, image: Vec<f32>, off: f32| Cell {
        a: (coord(column as i64) as f64 * unit) as f32,
        b: (coord(row as i64) as f64 * unit) as f32,
        column,
        row,
        prediction: g.argmax(),
        max_prob: g.max_prob(),
        off_leaf: off,
        image,
    };
    let walked: Vec<Option<Vec<Cell>>> = rays
        .par_iter()
        .map(|((dp, dq), cells)| {
            // w = a e_1 + b e_2 for the ray's unit cell; cells sit at multiples g of its length.
            let (wa, wb) = (*dp as f64 * unit, *dq as f64 * unit);
            let w: Vec<f64> = (0..geo.n)
                .map(|i| wa * axes.first().map_or(0.0, |e| e[i]) + wb * axes.get(1).map_or(0.0, |e| e[i]))
                .collect();
            let ray_len = (wa * wa + wb * wb).sqrt();
            let mut wanted: Vec<RayCell> = cells.clone();
            wanted.sort();
            let mut out = Vec::new();
            let mut here = x.to_vec();
            let mut here_geo = geo.clone();
            let mut travelled = 0.0f64;
            let (mut off_sum, mut moves) = (0.0f64, 0usize);
            for (g, column, row) in wanted {
                let length = g as f64 * ray_len;
                while travelled < length - 1e-9 {
                    if cancelled() {
                        return None;
                    }
                    let d = match config.plane {
                        Plane::Leaf => here_geo.project_leaf(&w),
                        Plane::Kernel => here_geo.project_kernel(&w),
                    };
                    let len = norm(&d);
                    let h = (config.step as f64).min(length - travelled);
                    travelled += h;
                    if len.is_nan() || len <= 1e-12 {
                        // Nothing of w left in this plane here: the walk stays put.
                        continue;
                    }
                    let dx: Vec<f64> = d.iter().map(|v| v * h / len).collect();
                    off_sum += norm(&here_geo.project_kernel(&dx)) / h;
                    moves += 1;
                    here.iter_mut()
                        .zip(&dx)
                        .for_each(|(x, d)| *x = (*x as f64 + d).clamp(0.0, 1.0) as f32);
                    here_geo = LocalGeometry::with(network, &here, GeometryOptions::walk(config.top_k));
                }
                let off = (off_sum / moves.max(1) as f64) as f32;
                out.push(cell_of(column, row, &here_geo, here.clone(), off));
            }
            Some(out)
        })
        .collect();
    let mut cells: Vec<Cell> = Vec::with_capacity(config.size * config.size);
    for (column, row) in centre {
        cells.push(cell_of(column, row, &geo, x.to_vec(), 0.0));
    }
    for ray in walked {
        match ray {
            Some(c) => cells.extend(c),
            None => return Ok(None),
        }
    }
    // Row-major from the top-left: b descending (up is +b), a ascending.
    cells.sort_by_key(|c| (config.size - 1 - c.row, c.column));
    Ok(Some(cells))
}
