//! Two-class toy datasets in the plane, generated in code (TensorFlow Playground's set): two moons,
//! circles, XOR, spirals. Seeded, so a seed and a noise level name one dataset. Points lie within
//! about [-1.5, 1.5]^2 before noise.

use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum ToyKind {
    #[default]
    Moons,
    Circles,
    Xor,
    Spirals,
}

impl ToyKind {
    pub const ALL: [ToyKind; 4] = [ToyKind::Moons, ToyKind::Circles, ToyKind::Xor, ToyKind::Spirals];

    pub fn name(self) -> &'static str {
        match self {
            ToyKind::Moons => "two moons",
            ToyKind::Circles => "circles",
            ToyKind::Xor => "XOR",
            ToyKind::Spirals => "spirals",
        }
    }
}

/// Points with labels 0 or 1.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ToyData {
    pub points: Vec<[f64; 2]>,
    pub labels: Vec<usize>,
}

/// `count` points, half of each class, with Gaussian noise of standard deviation `noise` added to
/// both coordinates.
pub fn generate(kind: ToyKind, count: usize, noise: f64, seed: u64) -> ToyData {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // A negative or NaN noise means none.
    let jitter = Normal::new(0.0, if noise > 0.0 { noise } else { 0.0 }).expect("finite deviation");
    let mut data = ToyData::default();
    for i in 0..count {
        let label = i % 2;
        let u: f64 = rng.random_range(0.0..1.0);
        let [x, y] = match kind {
            // sklearn's moons: the upper half circle and the lower one shifted by (1, 0.5), centred.
            ToyKind::Moons => {
                let t = std::f64::consts::PI * u;
                if label == 0 {
                    [t.cos() - 0.5, t.sin() - 0.25]
                } else {
                    [0.5 - t.cos(), 0.25 - t.sin()]
                }
            }
            // Inner disc of radius 0.5 (class 1) inside a ring of radius 1.2 (class 0).
            ToyKind::Circles => {
                let t = 2.0 * std::f64::consts::PI * u;
                let r = if label == 0 {
                    1.2
                } else {
                    0.5 * rng.random_range(0.0f64..1.0).sqrt()
                };
                [r * t.cos(), r * t.sin()]
            }
            // Class 1 where x and y have the same sign; kept 0.1 away from the axes.
            ToyKind::Xor => {
                let mut c = || rng.random_range(0.1..1.2) * if rng.random_bool(0.5) { 1.0 } else { -1.0 };
                let (a, b) = (c(), c());
                let b = if (a * b > 0.0) == (label == 1) { b } else { -b };
                [a, b]
            }
            // Two interleaved arms r = t / (3 pi) * 1.4, the second turned by pi.
            ToyKind::Spirals => {
                let t = 0.3 + u * (3.0 * std::f64::consts::PI - 0.3);
                let r = 1.4 * t / (3.0 * std::f64::consts::PI);
                let a = t + std::f64::consts::PI * label as f64;
                [r * a.cos(), r * a.sin()]
            }
        };
        data.points
            .push([x + jitter.sample(&mut rng), y + jitter.sample(&mut rng)]);
        data.labels.push(label);
    }
    data
}
