//! The plane models and their walks (shared/REFERENCE.md sections 3 and 5): the features JSON, the
//! f64 dense network against finite differences, SiMEC on the papers' 2-5-5-1 sigmoid regression,
//! kernel leaves as level sets of p on a ReLU classifier, leaves orthogonal to kernel leaves, the
//! interval preimage, the toy datasets.

use dataleaf::data::toy::{generate, ToyKind};
use dataleaf::geometry::plane::{symmetric_eigen, Bounds, Field, PointGeometry};
use dataleaf::model::mlp::{Act, Mlp, MlpSpec, Trainer};
use dataleaf::model::{Architecture, Task};
use dataleaf::walk::simec::{integral_curve, interval_preimage, simec, simexp, Along, CurveConfig};

/// The papers' regression target, z = exp(x^2 + y^2 - 2).
fn bowl(x: f64, y: f64) -> f64 {
    (x * x + y * y - 2.0).exp()
}

/// A 2-5-5-1 sigmoid network fitted by full-batch Adam to the bowl on a 21 x 21 grid of [-1, 1]^2.
fn fitted_bowl() -> (Mlp, f64) {
    let spec = MlpSpec {
        inputs: 2,
        hidden: vec![5, 5],
        outputs: 1,
        act: Act::Sigmoid,
        task: Task::Regression,
    };
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for i in 0..21 {
        for j in 0..21 {
            let (x, y) = (-1.0 + 0.1 * i as f64, -1.0 + 0.1 * j as f64);
            xs.push(vec![x, y]);
            ys.push(vec![bowl(x, y)]);
        }
    }
    let mut t = Trainer::new(Mlp::new(&spec, 1), xs, ys, 1);
    for k in 0..STEPS {
        let lr = if k < STEPS / 2 { 0.01 } else { 0.002 };
        t.step(0, lr);
    }
    let loss = t.loss();
    (t.mlp, loss)
}
const STEPS: usize = 6000;

/// The fitted bowl, once per test binary.
fn bowl_model() -> &'static (Mlp, f64) {
    static BOWL: std::sync::OnceLock<(Mlp, f64)> = std::sync::OnceLock::new();
    BOWL.get_or_init(fitted_bowl)
}

/// Total angle swept about the origin by a path, radians.
fn winding(points: &[Vec<f64>], start: &[f64]) -> f64 {
    let mut total = 0.0;
    let mut prev = start[1].atan2(start[0]);
    for p in points {
        let a = p[1].atan2(p[0]);
        let mut d = a - prev;
        if d > std::f64::consts::PI {
            d -= std::f64::consts::TAU;
        }
        if d < -std::f64::consts::PI {
            d += std::f64::consts::TAU;
        }
        total += d;
        prev = a;
    }
    total
}

/// SiMEC from x0 until it has gone once round the origin: the largest |f - f0| on the way, the
/// distance from the start at the end, and the smallest and largest radius.
fn one_loop(mlp: &Mlp, x0: &[f64], delta: f64) -> (f64, f64, f64, f64, usize) {
    let f0 = mlp.predict(x0)[0];
    let max_steps = (20.0 / delta) as usize;
    let steps = simec(mlp, x0, delta, max_steps, false);
    let mut taken = Vec::new();
    for s in steps {
        taken.push(s.point.clone());
        if winding(&taken, x0).abs() >= std::f64::consts::TAU {
            break;
        }
    }
    assert!(
        winding(&taken, x0).abs() >= std::f64::consts::TAU,
        "did not go round the origin"
    );
    let drift = taken
        .iter()
        .map(|p| (mlp.predict(p)[0] - f0).abs())
        .fold(0.0, f64::max);
    let end = taken.last().unwrap();
    let gap = (end[0] - x0[0]).hypot(end[1] - x0[1]);
    let radii: Vec<f64> = taken.iter().map(|p| p[0].hypot(p[1])).collect();
    let rmin = radii.iter().cloned().fold(f64::INFINITY, f64::min);
    let rmax = radii.iter().cloned().fold(0.0, f64::max);
    (drift, gap, rmin, rmax, taken.len())
}

#[test]
fn simec_on_the_papers_bowl_closes_its_loop_with_drift_of_order_delta() {
    let began = std::time::Instant::now();
    let (mlp, loss) = bowl_model();
    let (mlp, loss) = (mlp, *loss);
    eprintln!("fit: loss {loss:.3e} in {:?}", began.elapsed());
    let x0 = [0.25, 0.25];
    let (d3, gap3, rmin, rmax, n3) = one_loop(mlp, &x0, 1e-3);
    let (d4, gap4, _, _, n4) = one_loop(mlp, &x0, 1e-4);
    eprintln!(
        "delta 1e-3: {n3} steps, max |f - f0| {d3:.3e}, end gap {gap3:.2e}, radius {rmin:.3}-{rmax:.3}"
    );
    eprintln!(
        "delta 1e-4: {n4} steps, max |f - f0| {d4:.3e}, end gap {gap4:.2e}; ratio {:.2}",
        d3 / d4
    );
    let (d125, _, rmin125, rmax125, _) = one_loop(mlp, &x0, 0.0125);
    eprintln!("delta 0.0125: max |f - f0| {d125:.3e}, radius {rmin125:.3}-{rmax125:.3}");
    assert!(loss < 1e-4, "the fit is poor: loss {loss}");
    // The papers' figure: within 3.2e-4 of f(x0) at delta 1e-3, a loop of radius 0.34-0.40.
    assert!(d3 < 1e-3, "drift {d3} at delta 1e-3");
    assert!(gap3 < 5e-3, "the loop ends {gap3} from its start");
    assert!(rmin > 0.33 && rmax < 0.41, "radius {rmin}-{rmax}");
    assert!(
        rmin125 > 0.33 && rmax125 < 0.41,
        "radius {rmin125}-{rmax125} at delta 0.0125"
    );
    // Euler's drift is first order: a tenth of the step, a tenth of the drift.
    let ratio = d3 / d4;
    assert!((7.0..14.0).contains(&ratio), "drift ratio {ratio}");
    assert!(gap4 < 5e-4, "the loop ends {gap4} from its start at delta 1e-4");
}

/// A ReLU 2-16-16-2 classifier trained on two moons with Adam.
fn moons_classifier(act: Act, steps: usize) -> (Mlp, f64) {
    let data = generate(ToyKind::Moons, 200, 0.1, 3);
    let xs: Vec<Vec<f64>> = data.points.iter().map(|p| p.to_vec()).collect();
    let ys: Vec<Vec<f64>> = data.labels.iter().map(|&l| vec![l as f64]).collect();
    let spec = MlpSpec {
        inputs: 2,
        hidden: vec![16, 16],
        outputs: 2,
        act,
        task: Task::Classification,
    };
    let mut t = Trainer::new(Mlp::new(&spec, 7), xs, ys, 7);
    for _ in 0..steps {
        t.step(32, 0.01);
    }
    let acc = t.accuracy();
    (t.mlp, acc)
}

fn p1(mlp: &Mlp, x: &[f64]) -> f64 {
    mlp.predict(x)[1]
}

#[test]
fn on_a_relu_classifier_the_kernel_leaf_is_a_level_set_of_p() {
    let began = std::time::Instant::now();
    let (mlp, acc) = moons_classifier(Act::Relu, 300);
    eprintln!(
        "two moons, ReLU 2-16-16-2, 300 Adam steps: accuracy {acc:.3} in {:?}",
        began.elapsed()
    );
    assert!(acc > 0.95, "accuracy {acc}");
    let cfg = CurveConfig {
        step: 1e-3,
        max_steps: 5000,
        bounds: Bounds::square(2.0),
        output: 1,
    };
    // Points on the levels 0.2, 0.5 and 0.8 of p: the first crossing of each along a few lines.
    let mut starts = Vec::new();
    for (y, level) in [(0.0, 0.5), (0.25, 0.2), (-0.2, 0.8), (0.5, 0.5)] {
        let f = |x: f64| p1(&mlp, &[x, y]) - level;
        let xs: Vec<f64> = (0..=300).map(|i| -1.5 + 0.01 * i as f64).collect();
        if let Some(w) = xs.windows(2).find(|w| f(w[0]) * f(w[1]) < 0.0) {
            let (mut lo, mut hi) = (w[0], w[1]);
            for _ in 0..60 {
                let mid = 0.5 * (lo + hi);
                if f(lo) * f(mid) <= 0.0 {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            starts.push([lo, y]);
        }
    }
    let mut checked = 0;
    let (mut rk4, mut euler) = (Vec::new(), Vec::new());
    for x0 in starts {
        let p0 = p1(&mlp, &x0);
        // The RK4 kernel leaf stays on the level set of p through x0. Within a linear region a
        // ReLU net's level set is straight and every step exact; the error comes from crossing
        // region boundaries, O(step) each.
        let leaf_drift = |step: f64| {
            let cfg = CurveConfig {
                step,
                max_steps: (1.0 / step) as usize,
                ..cfg
            };
            let curve = integral_curve(&mlp, x0, Along::Kernel, &cfg);
            assert!(
                curve.points.len() > 100,
                "kernel leaf from {x0:?} has {} points",
                curve.points.len()
            );
            curve
                .points
                .iter()
                .map(|p| (p1(&mlp, p) - p0).abs())
                .fold(0.0, f64::max)
        };
        let (k3, k4) = (leaf_drift(1e-3), leaf_drift(1e-4));
        eprintln!("kernel leaf (RK4) from {x0:?}, p0 {p0:.2}, 1 each way: max |p - p0| {k3:.2e} (step 1e-3), {k4:.2e} (1e-4)");
        assert!(k3 < 2e-3, "kernel leaf drift {k3} at step 1e-3");
        rk4.push((k3, k4));
        // SiMEC (Euler) over the same length: drift of order delta, a tenth at a tenth of the step.
        let simec_drift = |delta: f64| {
            let steps = simec(&mlp, &x0, delta, (1.0 / delta) as usize, false);
            steps
                .iter()
                .map(|s| (s.outputs[1] - p0).abs())
                .fold(0.0, f64::max)
        };
        let (d3, d4) = (simec_drift(1e-3), simec_drift(1e-4));
        eprintln!("SiMEC from {x0:?} over length 1: max |p - p0| {d3:.2e} (delta 1e-3), {d4:.2e} (1e-4)");
        assert!(d3 < 1e-2, "SiMEC drift {d3} at delta 1e-3");
        euler.push((d3, d4));
        // The data leaf through x0 is not a level set: p moves along it.
        let leaf = integral_curve(&mlp, x0, Along::Leaf, &cfg);
        let spread = leaf
            .points
            .iter()
            .map(|p| (p1(&mlp, p) - p0).abs())
            .fold(0.0, f64::max);
        assert!(spread > 0.1, "p changes only {spread} along the data leaf");
        checked += 1;
    }
    assert!(checked >= 3, "too few points on the levels");
    // The drift is of the order of the step: summed over the starts (one may sit in a single linear
    // region, where the level set is straight and every step exact), a tenth of the step gives a
    // few times less for RK4 (whose order drops to one across the field's jumps at region
    // boundaries) and about ten times less for Euler.
    let ratio = |v: &[(f64, f64)]| v.iter().map(|d| d.0).sum::<f64>() / v.iter().map(|d| d.1).sum::<f64>();
    let (r_rk4, r_euler) = (ratio(&rk4), ratio(&euler));
    eprintln!("drift ratios step 1e-3 / 1e-4: RK4 {r_rk4:.1}, SiMEC {r_euler:.1}");
    assert!(r_rk4 > 3.0, "RK4 drift ratio {r_rk4}");
    assert!(r_euler > 6.0, "SiMEC drift ratio {r_euler}");
}

#[test]
fn leaves_and_kernel_leaves_cross_at_right_angles() {
    let (mlp, _) = moons_classifier(Act::Tanh, 300);
    for (name, m, output) in [("moons tanh", &mlp, 1), ("bowl", &bowl_model().0, 0)] {
        let mut worst: f64 = 0.0;
        for i in 0..15 {
            for j in 0..15 {
                let x = [-1.4 + 0.2 * i as f64, -1.4 + 0.2 * j as f64];
                let g = PointGeometry::at(m, &x, output);
                if !g.directions_defined() {
                    continue;
                }
                let (l, k) = (g.leaf_direction(), g.kernel_direction());
                worst = worst.max((l[0] * k[0] + l[1] * k[1]).abs());
                // With one effective output, the leaf runs along grad s and the kernel across it.
                let gn = g.gradient[0].hypot(g.gradient[1]);
                if gn > 1e-8 {
                    let along = (l[0] * g.gradient[0] + l[1] * g.gradient[1]).abs() / gn;
                    assert!(
                        (along - 1.0).abs() < 1e-9,
                        "{name} at {x:?}: leaf . grad = {along}"
                    );
                }
            }
        }
        assert!(worst < 1e-9, "{name}: |cos(leaf, kernel)| up to {worst}");
        // The curves themselves: their tangents at the shared point are perpendicular to O(h).
        let cfg = CurveConfig {
            step: 1e-3,
            max_steps: 50,
            bounds: Bounds::square(2.0),
            output,
        };
        let x0 = [0.3, 0.2];
        let leaf = integral_curve(m, x0, Along::Leaf, &cfg);
        let kernel = integral_curve(m, x0, Along::Kernel, &cfg);
        let tangent = |c: &[[f64; 2]]| {
            let i = c
                .iter()
                .position(|p| *p == x0)
                .expect("the curve passes through x0");
            let (a, b) = (c[i.saturating_sub(1)], c[(i + 1).min(c.len() - 1)]);
            let n = (b[0] - a[0]).hypot(b[1] - a[1]);
            [(b[0] - a[0]) / n, (b[1] - a[1]) / n]
        };
        let (t1, t2) = (tangent(&leaf.points), tangent(&kernel.points));
        let cos = (t1[0] * t2[0] + t1[1] * t2[1]).abs();
        eprintln!("{name}: |cos| of the curves' tangents at {x0:?}: {cos:.2e}");
        assert!(cos < 1e-2, "{name}: the curves cross with |cos| {cos}");
    }
}

#[test]
fn the_jacobian_matches_finite_differences_for_every_activation() {
    for (act, _) in Act::CHOICES.iter().chain([(Act::Gelu, "gelu")].iter()) {
        for task in [Task::Classification, Task::Regression] {
            let spec = MlpSpec {
                inputs: 3,
                hidden: vec![6, 5],
                outputs: 2,
                act: *act,
                task,
            };
            let mlp = Mlp::new(&spec, 11);
            let x = [0.3, -0.7, 1.1];
            let e = mlp.evaluate(&x);
            assert_eq!(e.raw, mlp.raw(&x));
            let h = 1e-6;
            for j in 0..3 {
                let (mut xp, mut xm) = (x, x);
                xp[j] += h;
                xm[j] -= h;
                let (fp, fm) = (mlp.raw(&xp), mlp.raw(&xm));
                for k in 0..2 {
                    let fd = (fp[k] - fm[k]) / (2.0 * h);
                    let an = e.jacobian[k * 3 + j];
                    assert!(
                        (fd - an).abs() < 1e-6 * (1.0 + an.abs()),
                        "{act:?}: J[{k},{j}] {an} vs {fd}"
                    );
                }
            }
        }
    }
}

#[test]
fn the_metric_is_the_pullback_and_its_eigenvectors_are_exact() {
    // Jacobi on a random symmetric 4 x 4: A v = lambda v, V orthonormal, ascending.
    let a = [
        4.0, 1.0, -2.0, 0.5, 1.0, 3.0, 0.0, 1.5, -2.0, 0.0, 5.0, -1.0, 0.5, 1.5, -1.0, 1.0,
    ];
    let (values, vectors) = symmetric_eigen(&a, 4);
    assert!(values.windows(2).all(|w| w[0] <= w[1]));
    for (l, v) in values.iter().zip(&vectors) {
        for i in 0..4 {
            let av: f64 = (0..4).map(|j| a[i * 4 + j] * v[j]).sum();
            assert!((av - l * v[i]).abs() < 1e-12, "A v != lambda v");
        }
    }
    for i in 0..4 {
        for j in 0..4 {
            let dot: f64 = (0..4).map(|k| vectors[i][k] * vectors[j][k]).sum();
            assert!((dot - f64::from(u8::from(i == j))).abs() < 1e-12);
        }
    }
    // KL ~ 1/2 dx^T G dx for a classifier; |df|^2 = dx^T G dx for a regression.
    let (mlp, _) = moons_classifier(Act::Tanh, 100);
    let x = [0.2, 0.1];
    let g = PointGeometry::at(&mlp, &x, 1);
    let dx = [1e-5, -2e-5];
    let (p, q) = (mlp.predict(&x), mlp.predict(&[x[0] + dx[0], x[1] + dx[1]]));
    let kl: f64 = q.iter().zip(&p).map(|(a, b)| a * (a / b).ln()).sum();
    let quad = 0.5
        * (0..2)
            .map(|i| (0..2).map(|j| dx[i] * g.metric[i * 2 + j] * dx[j]).sum::<f64>())
            .sum::<f64>();
    assert!((kl - quad).abs() < 1e-3 * quad, "KL {kl} vs 1/2 dx^T G dx {quad}");
}

#[test]
fn degenerate_points_give_defined_results() {
    // A ReLU layer whose units are all dead: G = 0 everywhere.
    let arch = Architecture::from_json(
        r#"{"name": "dead", "input": {"features": 2}, "task": "regression",
            "layers": [{"type": "linear", "name": "0", "in": 2, "out": 2}, {"type": "relu"},
                       {"type": "linear", "name": "2", "in": 2, "out": 1}]}"#,
    )
    .unwrap();
    let t = |shape: Vec<usize>, data: Vec<f32>| dataleaf::model::Tensor32 { shape, data };
    let mut w = dataleaf::model::Weights::new();
    w.insert("0.weight".into(), t(vec![2, 2], vec![0.0; 4]));
    w.insert("0.bias".into(), t(vec![2], vec![-1.0, -1.0]));
    w.insert("2.weight".into(), t(vec![1, 2], vec![1.0, 1.0]));
    w.insert("2.bias".into(), t(vec![1], vec![0.5]));
    let dead = Mlp::from_parts(&arch, &w).unwrap();
    let g = PointGeometry::at(&dead, &[0.1, 0.2], 0);
    assert!(g.metric.iter().all(|&v| v == 0.0));
    assert!(!g.directions_defined());
    // SiMEC goes straight along the first axis; every direction keeps f.
    let steps = simec(&dead, &[0.1, 0.2], 0.01, 5, false);
    assert_eq!(steps.len(), 5);
    assert!(steps
        .iter()
        .all(|s| s.outputs == vec![0.5] && s.point.iter().all(|v| v.is_finite())));
    let cfg = CurveConfig {
        step: 0.01,
        max_steps: 10,
        bounds: Bounds::square(2.0),
        output: 0,
    };
    assert!(integral_curve(&dead, [0.1, 0.2], Along::Leaf, &cfg)
        .points
        .is_empty());
    let field = Field::sample(&dead, Bounds::square(1.0), 4, 4, 0);
    assert_eq!(field.singular.len(), 16, "every cell is flat");
    // NaN input: zero metric, no direction, no panic.
    let g = PointGeometry::at(&dead, &[f64::NAN, 0.0], 0);
    assert!(!g.directions_defined());
    // A saturated softmax: p = 1 to round-off far out, G = 0 there, still defined.
    let (mlp, _) = moons_classifier(Act::Sigmoid, 50);
    let far = PointGeometry::at(&mlp, &[1e6, 1e6], 1);
    assert!(far.eigenvalues.iter().all(|v| v.is_finite()));
    assert!(far.outputs.iter().all(|v| v.is_finite()));
}

#[test]
fn simexp_leaves_the_class_and_the_interval_preimage_is_an_annulus() {
    let bowl = &bowl_model().0;
    let x0 = [0.25, 0.25];
    let f0 = bowl.predict(&x0)[0];
    let (steps, passed) = simexp(bowl, &x0, 1e-3, 0.01, 10_000, false);
    assert!(passed);
    let last = steps.last().unwrap();
    assert!((last.outputs[0] - f0).abs() > 0.01);
    assert!((last.outputs[0] - f0).abs() < 0.01 + 1e-3, "overshoot");
    // The preimage of [f(r = 0.3), f(r = 0.5)]: nested loops between the two radii.
    let (a, b) = (bowl.predict(&[0.3, 0.0])[0], bowl.predict(&[0.5, 0.0])[0]);
    let cfg = CurveConfig {
        step: 2e-3,
        max_steps: 5000,
        bounds: Bounds::square(1.5),
        output: 0,
    };
    let pre = interval_preimage(bowl, [0.2, 0.3], a, b, 6, &cfg);
    eprintln!(
        "preimage: {} slices, {} strips",
        pre.slices.len(),
        pre.strips.len()
    );
    assert!(pre.slices.len() >= 6, "{} slices", pre.slices.len());
    assert!(!pre.strips.is_empty());
    for (level, curve) in &pre.slices {
        assert!(
            *level >= a - 1e-3 && *level <= b + 1e-3,
            "level {level} outside [{a}, {b}]"
        );
        assert!(curve.closed, "slice at {level} does not close");
        for p in &curve.points {
            assert!((bowl.predict(p)[0] - level).abs() < 2e-3);
        }
    }
    for quad in &pre.strips {
        for p in quad {
            let r = p[0].hypot(p[1]);
            // The fitted bowl is round to a few per cent.
            assert!((0.27..0.56).contains(&r), "strip corner at radius {r}");
        }
    }
}

#[test]
fn the_bowl_has_one_singular_point_its_minimum() {
    // G = grad f grad f^T drops to rank 0 where grad f = 0: the bottom of the bowl, an extremum
    // (index +1), and nowhere else in the square.
    let (bowl, _) = bowl_model();
    let field = Field::sample(bowl, Bounds::square(1.0), 40, 40, 0);
    let found: Vec<_> = field.singular.iter().collect();
    assert_eq!(found.len(), 1, "singular points {found:?}");
    let (p, kind) = found[0];
    assert_eq!(*kind, dataleaf::geometry::plane::Singular::Extremum);
    assert!(p[0].hypot(p[1]) < 0.1, "the minimum found at {p:?}");
    // Everywhere else both directions are defined and unit.
    let defined = field
        .leaf
        .iter()
        .filter(|v| (v[0].hypot(v[1]) - 1.0).abs() < 1e-12)
        .count();
    assert!(defined >= 40 * 40 - 4, "{defined} cells with a direction");
}

#[test]
fn toy_datasets_are_seeded_balanced_and_learnable() {
    for kind in ToyKind::ALL {
        let a = generate(kind, 300, 0.05, 9);
        assert_eq!(a, generate(kind, 300, 0.05, 9), "{kind:?} is not deterministic");
        assert_ne!(a, generate(kind, 300, 0.05, 10));
        assert_eq!(a.labels.iter().filter(|&&l| l == 1).count(), 150);
        assert!(a.points.iter().all(|p| p[0].abs() < 2.0 && p[1].abs() < 2.0));
        // A 2-16-16-2 tanh network learns each with Adam.
        let began = std::time::Instant::now();
        let spec = MlpSpec {
            inputs: 2,
            hidden: vec![16, 16],
            outputs: 2,
            act: Act::Tanh,
            task: Task::Classification,
        };
        let xs = a.points.iter().map(|p| p.to_vec()).collect();
        let ys = a.labels.iter().map(|&l| vec![l as f64]).collect();
        let mut t = Trainer::new(Mlp::new(&spec, 5), xs, ys, 5);
        for _ in 0..2000 {
            t.step(32, 0.01);
        }
        let acc = t.accuracy();
        eprintln!(
            "{}: 2000 Adam steps in {:?}, training accuracy {acc:.3}",
            kind.name(),
            began.elapsed()
        );
        assert!(acc > 0.95, "{kind:?}: accuracy {acc}");
    }
}

#[test]
fn a_saved_plane_model_reads_back_and_old_image_files_are_unchanged() {
    let (mlp, _) = moons_classifier(Act::Softplus, 50);
    let dir = std::env::temp_dir().join(format!("dataleaf-plane-{}", std::process::id()));
    let json = dir.join("moons.json");
    mlp.save(&json).unwrap();
    let back = Mlp::load(&json).unwrap();
    let rounded = mlp.rounded_to_f32();
    for x in [[0.1, 0.2], [-1.0, 0.5]] {
        assert_eq!(back.raw(&x), rounded.raw(&x));
    }
    // The image engines refuse it with a pointer to the plane view.
    let err = dataleaf::model::Model::load(&json)
        .err()
        .expect("not an image model")
        .to_string();
    assert!(err.contains("plane view") && err.contains("moons.json"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
    // The shipped image model's JSON reads and writes back the same (no "task", image input).
    let path = dataleaf::model::models_dir().join("mnist-medium-cnn.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let arch = Architecture::from_json(&text).unwrap();
    assert_eq!(arch.task, Task::Classification);
    let again: serde_json::Value = serde_json::from_str(&arch.to_json()).unwrap();
    let original: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(again, original);
}
