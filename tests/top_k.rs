//! Scale (shared/REFERENCE.md section 8, issue 15): G from the top-k classes with the dropped mass,
//! the leaf projection B^T (B B^T)^+ B without the basis, and the gram from column blocks of B,
//! on the shipped MNIST medium CNN and a CIFAR-10 ONNX fixture (torchvision resnet18, width 16).

use std::path::Path;
use std::process::Command;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use serde_json::Value;

use dataleaf::data::Dataset;
use dataleaf::geometry::eigen::symmetric_eigen;
use dataleaf::geometry::jacobian::logits_and_jacobian;
use dataleaf::geometry::{softmax, GeometryOptions, LocalGeometry};
use dataleaf::model::Model;

const BIN: &str = env!("CARGO_BIN_EXE_dataleaf");

/// The basis-free projection against U U^T d, relative to |d|: both are P_leaf d in exact
/// arithmetic; they differ by round-off amplified by lambda_1 / lambda_r (~1e7 on the medium CNN).
const PROJECTION_RTOL: f64 = 1e-9;

/// (model, dataset, images): the shipped medium CNN on MNIST and resnet18 (ONNX) on CIFAR-10.
fn cases() -> Vec<(Model, Dataset, Vec<usize>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let onnx = root.join("tests/fixtures/onnx/resnet18-w16.onnx");
    let cifar = root.join("assets/data/cifar10-samples");
    vec![
        (
            Model::open("mnist-medium-cnn").expect("shipped model"),
            Dataset::open("mnist").expect("embedded MNIST"),
            vec![4185, 5874, 11],
        ),
        (
            Model::open(onnx.to_str().unwrap()).expect("resnet18 fixture"),
            Dataset::open(cifar.to_str().unwrap()).expect("CIFAR-10 samples"),
            vec![0, 1, 2],
        ),
    ]
}

fn gaussian(n: usize, rng: &mut StdRng) -> Vec<f64> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}

fn norm(a: &[f64]) -> f64 {
    a.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

#[test]
fn projection_without_the_basis_equals_u_u_transpose() {
    let mut rng = StdRng::seed_from_u64(7);
    for (model, data, images) in cases() {
        let name = model.name();
        for &i in &images {
            let x = data.image(i).unwrap();
            let with_basis = LocalGeometry::at(&model.network, x);
            let free = LocalGeometry::with(&model.network, x, GeometryOptions::walk(None));
            assert!(free.leaf_basis.is_empty(), "{name} {i}: no basis was asked for");
            assert_eq!(free.rank, with_basis.rank, "{name} {i}");
            assert_eq!(free.eigenvalues, with_basis.eigenvalues, "{name} {i}");
            // A random direction, the direction to another image (a walk's), and a class gradient.
            let other = data.image(i + 1).unwrap();
            let toward: Vec<f64> = other.iter().zip(x).map(|(a, b)| (a - b) as f64).collect();
            let gradient = with_basis.class_gradients()[with_basis.argmax()].clone();
            for d in [gaussian(x.len(), &mut rng), toward, gradient] {
                let scale = norm(&d);
                let a = with_basis.project_leaf(&d);
                let b = free.project_leaf(&d);
                let err = max_abs_diff(&a, &b) / scale;
                eprintln!("{name} image {i}: |P d - U U^T d| / |d| = {err:.2e}");
                assert!(err <= PROJECTION_RTOL, "{name} image {i}: {err:e}");
                let err = max_abs_diff(&with_basis.project_kernel(&d), &free.project_kernel(&d)) / scale;
                assert!(err <= PROJECTION_RTOL, "{name} image {i}: kernel {err:e}");
            }
        }
    }
}

#[test]
fn top_k_with_k_at_least_c_is_exact() {
    for (model, data, images) in cases() {
        let c = model.num_classes();
        let x = data.image(images[0]).unwrap();
        let exact = LocalGeometry::at(&model.network, x);
        assert_eq!(exact.dropped_mass, 0.0);
        assert_eq!(exact.classes, (0..c).collect::<Vec<_>>());
        for k in [c, c + 5] {
            let top = LocalGeometry::with(
                &model.network,
                x,
                GeometryOptions {
                    top_k: Some(k),
                    basis: true,
                },
            );
            assert_eq!(top.eigenvalues, exact.eigenvalues, "K = {k}");
            assert_eq!(top.rank, exact.rank);
            assert_eq!(top.dropped_mass, 0.0);
            assert_eq!(top.leaf_basis, exact.leaf_basis);
            assert!(top.is_exact());
        }
    }
}

/// Top-k from K + 1 reverse rows against the K-row B built here from the full J in f64:
/// B_i = sqrt(p_i) (J_i - J^T p) for the K most probable classes, nothing renormalised.
#[test]
fn top_k_spectrum_is_that_of_the_k_row_b_from_the_full_jacobian() {
    for (model, data, images) in cases() {
        let name = model.name();
        let c = model.num_classes();
        for &i in &images {
            let x = data.image(i).unwrap();
            let n = x.len();
            let (logits, j) = logits_and_jacobian(&model.network, x);
            let p = softmax(&logits);
            let mut order: Vec<usize> = (0..c).collect();
            order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
            let mut mean = vec![0.0f64; n];
            for k in 0..c {
                for (m, &v) in mean.iter_mut().zip(&j[k * n..(k + 1) * n]) {
                    *m += p[k] * v as f64;
                }
            }
            for k in [1, 3, 5] {
                let kept = &order[..k];
                let b: Vec<Vec<f64>> = kept
                    .iter()
                    .map(|&a| {
                        (0..n)
                            .map(|t| p[a].sqrt() * (j[a * n + t] as f64 - mean[t]))
                            .collect()
                    })
                    .collect();
                let gram: Vec<f64> = (0..k * k)
                    .map(|e| b[e / k].iter().zip(&b[e % k]).map(|(u, v)| u * v).sum())
                    .collect();
                let (want, _) = symmetric_eigen(&gram, k);
                let top = LocalGeometry::with(&model.network, x, GeometryOptions::walk(Some(k)));
                assert_eq!(top.classes, kept, "{name} {i}: the K most probable classes");
                let dropped: f64 = order[k..].iter().map(|&a| p[a]).sum();
                assert!((top.dropped_mass - dropped).abs() <= 1e-12, "{name} {i}");
                assert_eq!(top.eigenvalues.len(), k);
                // J^T p comes from the reverse pass of the cotangent p in f32 here, in f64 there.
                for (a, w) in top.eigenvalues.iter().zip(&want) {
                    assert!(
                        (a - w).abs() <= 1e-5 * want[0],
                        "{name} {i} K = {k}: lambda {a} vs {w}"
                    );
                }
                // The same from the full J through the library's own path.
                let from_j = LocalGeometry::top_k_from_jacobian(logits.clone(), &j, n, k, false);
                for (a, w) in from_j.eigenvalues.iter().zip(&want) {
                    assert!((a - w).abs() <= 1e-9 * want[0], "{name} {i} K = {k}");
                }
                // v^T G_k v = |B v|^2 and P_leaf of G_k fixes its own class gradients.
                let mut rng = StdRng::seed_from_u64(i as u64);
                let v = gaussian(n, &mut rng);
                let q: f64 = b
                    .iter()
                    .map(|row| row.iter().zip(&v).map(|(r, x)| r * x).sum::<f64>().powi(2))
                    .sum();
                // Relative to lambda_1 |v|^2, as the eigenvalues: J^T p differs by f32 round-off.
                let bound = 1e-5 * want[0] * norm(&v).powi(2);
                assert!(
                    (top.quadratic_form(&v) - q).abs() <= bound,
                    "{name} {i}: {} vs {q}",
                    top.quadratic_form(&v)
                );
                for (row, g) in b.iter().zip(top.class_gradients()) {
                    if norm(row) == 0.0 {
                        continue;
                    }
                    let back = top.project_leaf(&g);
                    assert!(max_abs_diff(&back, &g) <= 1e-6 * norm(&g), "{name} {i} K = {k}");
                }
            }
        }
    }
}

/// From 512 rows the gram is summed from f32 column blocks; against the plain f64 product of a
/// random 600-class J its spectrum agrees to ~1e-6 lambda_1 and the null direction sqrt(p) of
/// B B^T stays out of the rank.
#[test]
fn gram_from_f32_blocks_matches_the_f64_product() {
    let (c, n) = (600, 1500);
    let mut rng = StdRng::seed_from_u64(3);
    let j: Vec<f32> = (0..c * n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let logits: Vec<f32> = (0..c).map(|_| rng.random_range(-3.0f32..3.0)).collect();
    let geo = LocalGeometry::from_jacobian_with(logits.clone(), j.clone(), n, false);
    let p = softmax(&logits);
    let mut mean = vec![0.0f64; n];
    for k in 0..c {
        for (m, &v) in mean.iter_mut().zip(&j[k * n..(k + 1) * n]) {
            *m += p[k] * v as f64;
        }
    }
    let b: Vec<f64> = (0..c * n)
        .map(|e| p[e / n].sqrt() * (j[e] as f64 - mean[e % n]))
        .collect();
    let mut gram = vec![0.0f64; c * c];
    dataleaf::model::matmul::matmul(
        &mut gram,
        dataleaf::model::matmul::View::rows(&b, c, n),
        dataleaf::model::matmul::View::transposed(&b, c, n),
        false,
        dataleaf::model::matmul::Threads::All,
    );
    let (want, _) = symmetric_eigen(&gram, c);
    let worst = geo
        .eigenvalues
        .iter()
        .zip(&want)
        .map(|(a, w)| (a - w.max(0.0)).abs())
        .fold(0.0, f64::max)
        / want[0];
    eprintln!("f32-block gram: largest eigenvalue error {worst:.2e} lambda_1");
    assert!(worst <= 1e-6, "{worst:e}");
    assert_eq!(
        geo.rank,
        c - 1,
        "the null direction sqrt(p) is not part of the rank"
    );
    // The projection still fixes the rows of B.
    let row = &b[5 * n..6 * n];
    let back = geo.project_leaf(row);
    assert!(max_abs_diff(&back, row) <= 1e-5 * norm(row));
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().expect("run dataleaf");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn commands_take_top_k_and_report_the_dropped_mass() {
    let (ok, out, _) = run(&["spectrum", "--index", "4185", "--json"]);
    assert!(ok);
    let exact: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(exact["top_k"], Value::Null);
    assert_eq!(exact["dropped_mass"], 0.0);
    let (ok, out, err) = run(&["spectrum", "--index", "4185", "--json", "--top-k", "3"]);
    assert!(ok, "{err}");
    let top: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(top["top_k"], 3);
    assert_eq!(top["eigenvalues"].as_array().unwrap().len(), 3);
    let mut p: Vec<f64> = exact["probs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    p.sort_by(|a, b| b.total_cmp(a));
    let dropped: f64 = p[3..].iter().sum();
    assert!((top["dropped_mass"].as_f64().unwrap() - dropped).abs() < 1e-12);
    let (ok, out, _) = run(&["spectrum", "--index", "4185", "--top-k", "3"]);
    assert!(
        ok && out.contains("G from the top 3 of 10 classes: dropped probability mass"),
        "{out}"
    );

    let (ok, out, err) = run(&[
        "walk",
        "--mode",
        "leaf",
        "--start",
        "4185",
        "--target",
        "5874",
        "--max-steps",
        "5",
        "--top-k",
        "2",
        "--json",
    ]);
    assert!(ok, "{err}");
    let walk: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(walk["top_k"], 2);
    assert_eq!(walk["dropped_masses"].as_array().unwrap().len(), 6);
    assert!(walk["dropped_mass"].as_f64().unwrap() >= 0.0);

    for args in [
        vec!["spectrum", "--index", "0", "--top-k", "0"],
        vec!["walk", "--mode", "kernel", "--start", "0", "--top-k", "0"],
        vec!["directions", "--index", "0", "--top-k", "0"],
        vec!["chart", "--index", "0", "--plane", "leaf", "--top-k", "0"],
        vec!["bench", "--runs", "1", "--top-k", "0"],
    ] {
        let (ok, out, err) = run(&args);
        assert!(!ok, "{args:?} accepted K = 0");
        assert!(out.is_empty());
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains("at least 1"),
            "{args:?}: {err}"
        );
    }
}
