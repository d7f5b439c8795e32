//! The exact C = 1000 step's pieces after J (README "Scale"): the f32 panel gram against the f64
//! gram, the eigen-decomposition of a 1000 x 1000 gram, and the walk's off-leaf fraction taken
//! from the step's own projection.

use dataleaf::data::Dataset;
use dataleaf::geometry::eigen::symmetric_eigen;
use dataleaf::geometry::gram::BRows;
use dataleaf::geometry::{norm, softmax, GeometryOptions, LocalGeometry};
use dataleaf::model::matmul::{matmul, Threads, View};
use dataleaf::model::Model;
use dataleaf::walk::{Mode, Step, Walk, WalkConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A random J (c x n) with a shared component, as real Jacobians have, and logits spread over
/// many decades of p: B's rows are then graded like a trained model's.
fn random_rows(c: usize, n: usize, seed: u64) -> (Vec<f32>, Vec<f64>, Vec<f64>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let common: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let j: Vec<f32> = (0..c * n)
        .map(|e| common[e % n] + 0.3 * rng.random_range(-1.0f32..1.0))
        .collect();
    let logits: Vec<f32> = (0..c).map(|_| rng.random_range(-12.0f32..4.0)).collect();
    let p = softmax(&logits);
    let mut mean = vec![0.0f64; n];
    for (k, &pk) in p.iter().enumerate() {
        for (m, &v) in mean.iter_mut().zip(&j[k * n..(k + 1) * n]) {
            *m += pk * v as f64;
        }
    }
    let scales = p.iter().map(|x| x.sqrt()).collect();
    (j, scales, mean)
}

#[test]
fn f32_panel_gram_matches_the_f64_gram() {
    // C = 1000 over three column blocks (the last partial) and a last panel 40 columns wide; 520
    // rows (just past the f32 threshold) in one block.
    for (c, n) in [(1000, 2600), (520, 700)] {
        let (j, scales, mean) = random_rows(c, n, c as u64);
        let rows = BRows {
            jacobian: &j,
            scales: &scales,
            mean: &mean,
            n,
        };
        assert!(rows.gram_in_f32());
        let fast = rows.gram();
        let exact = rows.gram_f64();
        let top = (0..c).map(|i| exact[i * c + i]).fold(0.0, f64::max);
        let worst = fast
            .iter()
            .zip(&exact)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        eprintln!(
            "C {c}: f32 panel gram within {:.2e} of the largest diagonal entry",
            worst / top
        );
        assert!(worst <= 1e-6 * top, "C {c}: {:e}", worst / top);
        for a in 0..c {
            for b in 0..a {
                assert_eq!(fast[a * c + b].to_bits(), fast[b * c + a].to_bits(), "symmetric");
            }
        }
    }
}

#[test]
fn eigen_decomposition_of_a_1000_class_gram_reconstructs_it() {
    let (c, n) = (1000, 1200);
    let (j, scales, mean) = random_rows(c, n, 7);
    let rows = BRows {
        jacobian: &j,
        scales: &scales,
        mean: &mean,
        n,
    };
    let gram = rows.gram();
    let (values, vectors) = symmetric_eigen(&gram, c);
    assert!(values.windows(2).all(|w| w[0] >= w[1]), "descending");
    let v: Vec<f64> = vectors.concat(); // rows are eigenvectors: V^T
    let scaled: Vec<f64> = vectors
        .iter()
        .zip(&values)
        .flat_map(|(x, &l)| x.iter().map(move |a| a * l))
        .collect();
    // V Lambda V^T = K and V^T V = I.
    let mut back = vec![0.0f64; c * c];
    matmul(
        &mut back,
        View::transposed(&v, c, c),
        View::rows(&scaled, c, c),
        false,
        Threads::All,
    );
    let mut identity = vec![0.0f64; c * c];
    matmul(
        &mut identity,
        View::rows(&v, c, c),
        View::transposed(&v, c, c),
        false,
        Threads::All,
    );
    let top = values[0];
    let worst = back
        .iter()
        .zip(&gram)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let ortho = (0..c * c)
        .map(|e| (identity[e] - if e / c == e % c { 1.0 } else { 0.0 }).abs())
        .fold(0.0, f64::max);
    eprintln!(
        "C 1000: |V L V^T - K| {:.2e} lambda_1, |V V^T - I| {ortho:.2e}",
        worst / top
    );
    assert!(worst <= 1e-12 * top, "{:e}", worst / top);
    assert!(ortho <= 1e-12, "{ortho:e}");
}

/// The off-leaf fraction a walk reports for its move from `step.x`, recomputed by projecting the
/// move again (what the walk did before it took it from the step's own projection).
fn projected_off_leaf(model: &Model, mode: Mode, step: &Step, target: &[f32]) -> f64 {
    let geo = LocalGeometry::with(&model.network, &step.x, GeometryOptions::walk(None));
    let toward: Vec<f32> = target.iter().zip(&step.x).map(|(a, b)| a - b).collect();
    let d: Vec<f64> = match mode {
        Mode::Leaf => {
            let w = 1.0 / ((geo.n - geo.rank).max(1) as f64).sqrt();
            let leaf = geo.project_leaf(&toward);
            leaf.iter()
                .zip(&toward)
                .map(|(l, &t)| (1.0 - w) * l + w * t as f64)
                .collect()
        }
        Mode::Kernel => geo.project_kernel(&toward),
        Mode::Free => toward.iter().map(|&t| t as f64).collect(),
    };
    norm(&geo.project_kernel(&d)) / norm(&d)
}

#[test]
fn walk_off_leaf_fraction_is_the_kernel_part_of_its_move() {
    let model = Model::open("mnist-medium-cnn").unwrap();
    let data = Dataset::open("mnist").unwrap();
    let (start, target) = (data.image(4185).unwrap(), data.image(5874).unwrap());
    for mode in [Mode::Leaf, Mode::Kernel, Mode::Free] {
        let config = WalkConfig {
            max_steps: 12,
            ..WalkConfig::defaults(mode)
        };
        let walk = Walk::new(&model.network, config, start.to_vec(), Some(target.to_vec())).unwrap();
        let steps: Vec<Step> = walk.collect();
        assert_eq!(steps.len(), 13, "{mode:?}");
        for pair in steps.windows(2) {
            let want = projected_off_leaf(&model, mode, &pair[0], target);
            let got = pair[1].off_leaf as f64;
            assert!(
                (got - want).abs() <= 1e-5,
                "{mode:?} step {}: {got} vs {want}",
                pair[1].index
            );
        }
    }
}
