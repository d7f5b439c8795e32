//! The local data matrix G = J^T (diag p - p p^T) J (shared/REFERENCE.md sections 1-2), checked
//! against independent computations: PyTorch's float64 Jacobians and spectra (committed fixtures),
//! candle autograd, finite differences, and a dense n x n eigen-decomposition of G on a small model.
//! Then the facts the app relies on: G is PSD of rank <= C - 1, the second-order KL, the projections,
//! the behaviour of steps along ker G and along D_x, and the degenerate inputs.

use std::path::{Path, PathBuf};

use dataleaf::data::Dataset;
use dataleaf::geometry::eigen::symmetric_eigen;
use dataleaf::geometry::jacobian::{jacobian_autograd, logits_and_jacobian};
use dataleaf::geometry::{softmax, LocalGeometry, RANK_RTOL};
use dataleaf::model::{Architecture, Model, Network, Weights};
use dataleaf::walk::{Mode, Walk, WalkConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Tolerances
// ---------------------------------------------------------------------------------------------

/// J (f32 reverse pass) vs PyTorch's float64 J, relative to max |J|: f32 round-off through a few
/// layers is ~1e-7 relative (measured); 1e-4 leaves room without hiding a wrong mask or transpose.
const JACOBIAN_VS_TORCH_RTOL: f64 = 1e-4;
/// Fast J vs candle autograd, both f32 with different summation orders: same budget as above.
const JACOBIAN_VS_CANDLE_RTOL: f64 = 1e-4;
/// Central-difference step in pixel units: large against f32 logit round-off (~2e-6 here), small
/// enough that few ReLU / max-pool kinks fall inside +-eps.
const FD_EPS: f32 = 1e-3;
/// A pixel's column counts as kink-free when every logit's second difference s(x+e) - 2 s(x) + s(x-e)
/// is below this (absolute logit units, ~10x the measured f32 round-off); a kink left below it
/// biases the central difference by at most FD_KINK / (2 eps) = 1e-2.
const FD_KINK: f64 = 2e-5;
/// Central differences vs J on kink-free columns and along random directions, relative to max |J|
/// (bounded by FD_KINK / (2 eps) plus round-off / eps; measured <= 2e-3).
const FD_RTOL: f64 = 1e-2;
/// Every eigenvalue vs PyTorch, relative to the top one (the small ones are not resolved by f32 J).
const EIGEN_VS_TORCH_RTOL: f64 = 1e-3;
/// The top eigenvalue vs PyTorch, relative to itself.
const TOP_EIGEN_VS_TORCH_RTOL: f64 = 1e-4;
/// Small C x C problem vs dense n x n Jacobi in f64 on the same f32 J: both are f64 from identical
/// data, so they agree to round-off relative to the top eigenvalue.
const DENSE_RTOL: f64 = 1e-9;
/// Identities that hold exactly in exact arithmetic and are computed in f64 (quadratic form,
/// trace, projections): round-off relative to the natural scale.
const F64_RTOL: f64 = 1e-9;
/// KL(p(x+dx) || p(x)) / (1/2 dx^T G dx) for one sign of dx: the cubic term of the expansion
/// (a few % at the step sizes used) plus kinks crossed on the way.
const KL_RATIO_TOL: f64 = 0.05;
/// The same ratio averaged over +dx and -dx, where the cubic term cancels.
const KL_SYMMETRIC_TOL: f64 = 0.025;
/// Projections and the leaf basis are f64 sums of n ~ 1e3 products of unit-scale numbers:
/// round-off ~1e-15 relative, so 1e-12 relative to |v|.
const PROJECTION_RTOL: f64 = 1e-12;
/// |p(x + 2h u) - p(x)| / |p(x + h u) - p(x)| along u_1 (h = 5e-3): 2 for a linear change, with
/// room for the softmax curvature and kinks (measured 2.00-2.03).
const LEAF_RATIO: std::ops::Range<f64> = 1.6..2.5;
/// The same ratio along ker G, averaged over 16 directions: above 2 means no first-order term
/// (measured 2.4-3.1; the kink-crossing mechanism gives between 2^1.5 and 4).
const KERNEL_RATIO_MIN: f64 = 2.2;
/// Kernel change / leaf change at h = 1e-2 (measured ~3e-3) and at h = 1e-3 (measured ~5e-4).
const KERNEL_VS_LEAF_1E2: f64 = 1e-2;
const KERNEL_VS_LEAF_1E3: f64 = 2e-3;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch")
}

fn load_fixture(name: &str) -> Model {
    let path = fixtures().join(format!("{name}.json"));
    Model::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn expected(name: &str) -> Value {
    let path = fixtures().join(format!("{name}.expected.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn rows(v: &Value, field: &str) -> Vec<Vec<f64>> {
    v[field]
        .as_array()
        .unwrap_or_else(|| panic!("expected.json: no {field:?} array"))
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap_or_else(|| panic!("expected.json: {field:?} has a non-array row"))
                .iter()
                .map(|x| x.as_f64().expect("a number"))
                .collect()
        })
        .collect()
}

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

fn mnist() -> Dataset {
    Dataset::open("mnist").expect("embedded MNIST test set")
}

/// A real MNIST test image plus small Gaussian noise (std `sigma`), so that no pre-activation sits
/// exactly at a ReLU kink (where candle's ReLU'(0) = 1 and the fast engine's 0 differ).
fn noisy_mnist(data: &Dataset, index: usize, sigma: f32, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    data.image(index)
        .expect("image index")
        .iter()
        .map(|&v| {
            let z: f32 = StandardNormal.sample(&mut rng);
            v + sigma * z
        })
        .collect()
}

fn uniform_image(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(0.0f32..1.0)).collect()
}

fn gaussian(n: usize, rng: &mut StdRng) -> Vec<f64> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

fn unit(a: &[f64]) -> Vec<f64> {
    let n = norm(a);
    a.iter().map(|x| x / n).collect()
}

fn max_abs<T: Copy + Into<f64>>(a: &[T]) -> f64 {
    a.iter().fold(0.0f64, |m, &x| m.max(x.into().abs()))
}

fn max_abs_diff<A: Copy + Into<f64>, B: Copy + Into<f64>>(a: &[A], b: &[B]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (&x, &y)| m.max((x.into() - y.into()).abs()))
}

/// x + h u, computed in f64 and rounded once to f32.
fn shifted(x: &[f32], u: &[f64], h: f64) -> Vec<f32> {
    x.iter()
        .zip(u)
        .map(|(&a, &b)| (a as f64 + h * b) as f32)
        .collect()
}

fn probs_at(network: &Network, x: &[f32]) -> Vec<f64> {
    softmax(&network.logits(x, 1))
}

/// The architecture JSON of the small test model: 1x6x6 input, conv 1->3 k3, ReLU, flatten,
/// linear 48->4 (n = 36, C = 4), no input normalisation.
const TINY_ARCH: &str = r#"{
  "name": "tiny",
  "input": {"channels": 1, "height": 6, "width": 6},
  "classes": ["a", "b", "c", "d"],
  "layers": [
    {"type": "conv2d", "name": "0", "kernel": 3, "in": 1, "out": 3},
    {"type": "relu"},
    {"type": "flatten"},
    {"type": "linear", "name": "3", "in": 48, "out": 4}
  ]
}"#;

fn tiny_arch() -> Architecture {
    Architecture::from_json(TINY_ARCH).expect("tiny architecture parses")
}

fn model_from(arch: Architecture, weights: &Weights) -> Model {
    Model::from_parts(arch, weights, Path::new("in-test.json")).expect("model builds")
}

/// A fixture's architecture with fresh random weights.
fn random_model(name: &str, seed: u64) -> Model {
    let text = std::fs::read_to_string(fixtures().join(format!("{name}.json"))).expect("arch file");
    let arch = Architecture::from_json(&text).expect("arch parses");
    let weights = Network::initial_weights(&arch, seed);
    model_from(arch, &weights)
}

/// G = J^T (diag p - p p^T) J formed explicitly in f64 (n x n, row-major).
fn dense_g(jacobian: &[f32], probs: &[f64], n: usize) -> Vec<f64> {
    let c = probs.len();
    let j = |k: usize, i: usize| jacobian[k * n + i] as f64;
    let mut m = vec![0.0f64; c * c]; // diag p - p p^T
    for a in 0..c {
        for b in 0..c {
            m[a * c + b] = if a == b { probs[a] } else { 0.0 } - probs[a] * probs[b];
        }
    }
    let mut g = vec![0.0f64; n * n];
    for r in 0..n {
        for s in 0..n {
            let mut v = 0.0;
            for a in 0..c {
                for b in 0..c {
                    v += j(a, r) * m[a * c + b] * j(b, s);
                }
            }
            g[r * n + s] = v;
        }
    }
    g
}

fn mat_vec(m: &[f64], v: &[f64]) -> Vec<f64> {
    let n = v.len();
    (0..n).map(|r| dot(&m[r * n..(r + 1) * n], v)).collect()
}

/// grad_x log p_i = J_i - sum_k p_k J_k, for every class i (C rows of length n).
fn grad_log_p(geo: &LocalGeometry) -> Vec<Vec<f64>> {
    let (c, n) = (geo.num_classes(), geo.n);
    let mut mean = vec![0.0f64; n];
    for k in 0..c {
        let row = &geo.jacobian[k * n..(k + 1) * n];
        mean.iter_mut()
            .zip(row)
            .for_each(|(m, &j)| *m += geo.probs[k] * j as f64);
    }
    (0..c)
        .map(|k| (0..n).map(|i| geo.jacobian[k * n + i] as f64 - mean[i]).collect())
        .collect()
}

/// KL(p || q) in f64.
fn kl(p: &[f64], q: &[f64]) -> f64 {
    p.iter()
        .zip(q)
        .filter(|(&a, _)| a > 0.0)
        .map(|(&a, &b)| a * (a / b).ln())
        .sum()
}

// ---------------------------------------------------------------------------------------------
// 1. The Jacobian
// ---------------------------------------------------------------------------------------------

#[test]
fn fast_jacobian_matches_pytorch_float64() {
    for name in ["mnist-small", "cifar-small"] {
        let model = load_fixture(name);
        let exp = expected(name);
        let inputs = rows(&exp, "inputs");
        let jacobians = rows(&exp, "jacobians");
        let count = exp["jacobian_count"].as_u64().expect("jacobian_count") as usize;
        assert_eq!(jacobians.len(), count, "{name}: jacobian_count");
        assert!(count >= 1, "{name}: no reference Jacobian");
        for (i, want) in jacobians.iter().enumerate() {
            let x = to_f32(&inputs[i]);
            let (_, got) = logits_and_jacobian(&model.network, &x);
            assert_eq!(got.len(), want.len(), "{name} image {i}: J size");
            let scale = max_abs(want);
            assert!(scale > 0.0, "{name} image {i}: PyTorch J is zero");
            let rel = max_abs_diff(&got, want) / scale;
            eprintln!("{name} image {i}: fast J vs PyTorch f64: max err / max|J| = {rel:.2e}");
            assert!(
                rel < JACOBIAN_VS_TORCH_RTOL,
                "{name} image {i}: J relative error {rel:.2e}"
            );
        }
    }
}

fn check_against_candle(what: &str, model: &Model, x: &[f32]) -> f64 {
    let i = model.arch.input.image().unwrap();
    let (_, fast) = logits_and_jacobian(&model.network, x);
    let slow = jacobian_autograd(&model.classifier, x, (i.channels, i.height, i.width))
        .unwrap_or_else(|e| panic!("{what}: candle autograd: {e}"));
    let scale = max_abs(&slow);
    assert!(scale > 0.0, "{what}: candle J is zero");
    let rel = max_abs_diff(&fast, &slow) / scale;
    eprintln!("{what}: fast J vs candle autograd: max err / max|J| = {rel:.2e}");
    assert!(rel < JACOBIAN_VS_CANDLE_RTOL, "{what}: relative error {rel:.2e}");
    rel
}

/// A fixture's architecture with every max-pool replaced by an average pool of the same size
/// (same shapes, so the fixture's weights still fit).
fn avgpool_variant(name: &str) -> Architecture {
    let text = std::fs::read_to_string(fixtures().join(format!("{name}.json"))).expect("arch file");
    let mut v: Value = serde_json::from_str(&text).expect("arch json");
    for layer in v["layers"].as_array_mut().expect("layers") {
        if layer["type"] == "maxpool2d" {
            layer["type"] = Value::from("avgpool2d");
        }
    }
    Architecture::from_json(&v.to_string()).expect("avgpool variant parses")
}

/// candle 0.11.1's max-pool backward scales the gradient of each window by (#maxima / k^2)
/// instead of 1 / #maxima (backprop.rs, Op::MaxPool2D: `grad * avg_pool(mask)`), so through a
/// max-pool its J is 1/4 of the true one for 2x2 windows (measured: candle J == fast J / 4 to
/// 1e-7 on mnist-small). PyTorch's Jacobians check the fast max-pool reverse pass instead; these
/// checks cover everything else (conv with stride and padding, linear, ReLU, average pooling).
#[test]
fn fast_jacobian_matches_candle_autograd() {
    let data = mnist();
    for name in ["mnist-small", "cifar-small"] {
        let arch = avgpool_variant(name);
        let inputs = rows(&expected(name), "inputs");
        // The fixture's trained weights, on the fixture's exact images.
        let weights = load_fixture(name).network.weights();
        let model = model_from(arch.clone(), &weights);
        check_against_candle(
            &format!("{name} (avg-pool variant) fixture image 0"),
            &model,
            &to_f32(&inputs[0]),
        );
        // Random weights.
        let model = model_from(arch.clone(), &Network::initial_weights(&arch, 11));
        let x = if name == "mnist-small" {
            noisy_mnist(&data, 7, 0.01, 1)
        } else {
            uniform_image(arch.input.len(), 2)
        };
        check_against_candle(&format!("{name} (avg-pool variant) random weights"), &model, &x);
    }
    let model = model_from(tiny_arch(), &Network::initial_weights(&tiny_arch(), 13));
    check_against_candle("tiny random weights", &model, &uniform_image(36, 3));
}

/// The same comparison through max-pool layers (the Classifier pools by reshaped reductions, because
/// candle 0.11.1's max_pool2d backward scales gradients by #maxima / k^2).
#[test]
fn fast_jacobian_matches_candle_autograd_through_maxpool() {
    let data = mnist();
    let model = load_fixture("mnist-small");
    check_against_candle("mnist-small", &model, &noisy_mnist(&data, 7, 0.01, 1));
}

/// On a real MNIST image plus noise (a clean image has a constant background whose equal
/// activations tie inside max-pool windows: the network has a kink at x itself there).
#[test]
fn fast_jacobian_matches_central_differences() {
    let data = mnist();
    let model = load_fixture("mnist-small");
    let net = &model.network;
    let x = noisy_mnist(&data, 4, 0.01, 5);
    let n = x.len();
    let c = net.num_classes();
    let (logits0, jac) = logits_and_jacobian(net, &x);
    let scale = max_abs(&jac);
    // All 2n perturbed images in one batch: x +- eps e_i.
    let mut batch = Vec::with_capacity(2 * n * n);
    for i in 0..n {
        for sign in [1.0f32, -1.0] {
            let mut y = x.clone();
            y[i] += sign * FD_EPS;
            batch.extend_from_slice(&y);
        }
    }
    let logits = net.logits(&batch, 2 * n);
    let (mut kinks, mut worst, mut errors) = (0usize, 0.0f64, Vec::with_capacity(n));
    for i in 0..n {
        // The step actually taken in f32.
        let h = ((x[i] + FD_EPS) - (x[i] - FD_EPS)) as f64;
        let (mut err, mut second) = (0.0f64, 0.0f64);
        for k in 0..c {
            let plus = logits[(2 * i) * c + k] as f64;
            let minus = logits[(2 * i + 1) * c + k] as f64;
            let mid = logits0[k] as f64;
            err = err.max(((plus - minus) / h - jac[k * n + i] as f64).abs() / scale);
            second = second.max((plus - 2.0 * mid + minus).abs());
        }
        errors.push(err);
        if second > FD_KINK {
            kinks += 1; // a ReLU or max-pool switch inside +-eps: J is one of the two slopes
        } else {
            worst = worst.max(err);
        }
    }
    errors.sort_by(f64::total_cmp);
    let median = errors[n / 2];
    eprintln!(
        "mnist-small, MNIST 4 + noise: central differences (eps {FD_EPS}) vs fast J: {kinks} of {n} \
         columns cross a kink; kink-free columns max err / max|J| = {worst:.2e}; median over all \
         {median:.2e}"
    );
    assert!(
        kinks * 10 <= n,
        "{kinks} of {n} columns cross a kink: not a smooth-ish point"
    );
    assert!(
        worst < FD_RTOL,
        "J vs finite differences: relative error {worst:.2e}"
    );
    assert!(median < 0.1 * FD_RTOL, "median relative error {median:.2e}");

    // Directional derivatives along random unit directions: more signal per difference.
    let mut rng = StdRng::seed_from_u64(6);
    for _ in 0..4 {
        let u = unit(&gaussian(n, &mut rng));
        let eps = FD_EPS as f64;
        let sp = net.logits(&shifted(&x, &u, eps), 1);
        let sm = net.logits(&shifted(&x, &u, -eps), 1);
        let ju: Vec<f64> = (0..c)
            .map(|k| (0..n).map(|i| jac[k * n + i] as f64 * u[i]).sum())
            .collect();
        let fdu: Vec<f64> = (0..c)
            .map(|k| (sp[k] as f64 - sm[k] as f64) / (2.0 * eps))
            .collect();
        let rel = max_abs_diff(&ju, &fdu) / max_abs(&ju);
        eprintln!("  along a random direction: max err / max|Ju| = {rel:.2e}");
        assert!(
            rel < FD_RTOL,
            "J u vs finite differences: relative error {rel:.2e}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. The spectrum
// ---------------------------------------------------------------------------------------------

#[test]
fn eigenvalues_match_pytorch_float64() {
    for name in ["mnist-small", "cifar-small"] {
        let model = load_fixture(name);
        let exp = expected(name);
        let inputs = rows(&exp, "inputs");
        let eigen = rows(&exp, "eigenvalues");
        for (i, want) in eigen.iter().enumerate() {
            let geo = LocalGeometry::at(&model.network, &to_f32(&inputs[i]));
            assert_eq!(geo.eigenvalues.len(), want.len(), "{name} image {i}: C");
            let top = want[0];
            assert!(top > 0.0, "{name} image {i}: PyTorch top eigenvalue {top}");
            let top_rel = (geo.eigenvalues[0] - top).abs() / top;
            let worst = max_abs_diff(&geo.eigenvalues, want) / top;
            eprintln!(
                "{name} image {i}: lambda_1 {:.4e} (PyTorch {top:.4e}) rel err {top_rel:.2e}; \
                 max |lambda_k err| / lambda_1 = {worst:.2e}; rank {}",
                geo.eigenvalues[0], geo.rank
            );
            assert!(
                top_rel < TOP_EIGEN_VS_TORCH_RTOL,
                "{name} image {i}: top eigenvalue"
            );
            assert!(
                worst < EIGEN_VS_TORCH_RTOL,
                "{name} image {i}: eigenvalues {:?} vs {want:?}",
                geo.eigenvalues
            );
        }
    }
}

#[test]
fn small_problem_matches_dense_eigendecomposition() {
    let arch = tiny_arch();
    for seed in [21u64, 22, 23] {
        let model = model_from(arch.clone(), &Network::initial_weights(&arch, seed));
        let x = uniform_image(36, seed + 100);
        let geo = LocalGeometry::at(&model.network, &x);
        let (n, c) = (geo.n, geo.num_classes());
        assert_eq!((n, c), (36, 4));
        let g = dense_g(&geo.jacobian, &geo.probs, n);
        // Symmetric (to the round-off of the different summation orders of the two halves).
        let asym = (0..n * n).fold(0.0f64, |m, k| m.max((g[k] - g[(k % n) * n + k / n]).abs()));
        assert!(
            asym <= DENSE_RTOL * max_abs(&g),
            "dense G not symmetric: {asym:e}"
        );
        let (values, _) = symmetric_eigen(&g, n);
        let top = values[0];
        assert!(top > 0.0, "seed {seed}: dense G is zero");
        // The C values of the small problem are the top C of the dense spectrum.
        let head = max_abs_diff(&geo.eigenvalues, &values[..c]) / top;
        // Everything past C - 1 is zero (rank <= C - 1).
        let tail = max_abs(&values[c - 1..]) / top;
        eprintln!(
            "tiny seed {seed}: eigenvalues {:?}; small vs dense max err / lambda_1 = {head:.2e}; \
             dense tail max / lambda_1 = {tail:.2e}",
            geo.eigenvalues
        );
        assert!(
            head < DENSE_RTOL,
            "seed {seed}: {:?} vs {:?}",
            geo.eigenvalues,
            &values[..c]
        );
        assert!(
            tail < DENSE_RTOL,
            "seed {seed}: dense tail {:?}",
            &values[c - 1..]
        );
        assert_eq!(geo.rank, c - 1, "seed {seed}: a generic point has rank C - 1");
        // The leaf basis holds eigenvectors of the dense G: G u = lambda u.
        for (k, u) in geo.leaf_basis.iter().enumerate() {
            let gu = mat_vec(&g, u);
            let err = max_abs_diff(&gu, &u.iter().map(|v| v * geo.eigenvalues[k]).collect::<Vec<_>>());
            assert!(
                err < DENSE_RTOL * top,
                "seed {seed}: G u_{k} != lambda_{k} u_{k} ({err:.2e})"
            );
        }
        // And the dense quadratic form is the one the geometry computes without G.
        let mut rng = StdRng::seed_from_u64(seed);
        let v = gaussian(n, &mut rng);
        let dense = dot(&v, &mat_vec(&g, &v));
        let fast = geo.quadratic_form(&v);
        assert!(
            (dense - fast).abs() <= F64_RTOL * top * dot(&v, &v),
            "{dense} vs {fast}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 3. G is symmetric PSD, rank <= C - 1, trace identities
// ---------------------------------------------------------------------------------------------

#[test]
fn g_is_psd_with_rank_and_trace_identities() {
    let data = mnist();
    let model = load_fixture("mnist-small");
    let random = random_model("mnist-small", 31);
    let mut rng = StdRng::seed_from_u64(32);
    for (what, net, index) in [
        ("fixture", &model.network, 0usize),
        ("fixture", &model.network, 4185),
        ("random", &random.network, 1),
    ] {
        let geo = LocalGeometry::at(net, data.image(index).unwrap());
        let c = geo.num_classes();
        let top = geo.eigenvalues[0];
        assert!(top > 0.0, "{what} {index}: G = 0");
        assert!(geo.rank >= 1 && geo.rank < c, "{what} {index}: rank {}", geo.rank);
        assert_eq!(geo.leaf_basis.len(), geo.rank);
        for w in geo.eigenvalues.windows(2) {
            assert!(w[0] >= w[1], "eigenvalues not descending: {:?}", geo.eigenvalues);
        }
        assert!(geo.eigenvalues.iter().all(|&l| l >= 0.0));
        // The C-th eigenvalue of B B^T is the null direction sqrt(p): zero to round-off.
        assert!(geo.eigenvalues[c - 1] <= RANK_RTOL * top, "{:?}", geo.eigenvalues);

        // trace = sum of eigenvalues = sum_i p_i |grad log p_i|^2, computed straight from J.
        let sum: f64 = geo.eigenvalues.iter().sum();
        let grads = grad_log_p(&geo);
        let direct: f64 = grads.iter().zip(&geo.probs).map(|(g, p)| p * dot(g, g)).sum();
        eprintln!(
            "{what} image {index}: trace {:.6e}, sum lambda {sum:.6e}, direct {direct:.6e}, rank {}",
            geo.trace, geo.rank
        );
        assert!((geo.trace - sum).abs() <= F64_RTOL * geo.trace);
        assert!((geo.trace - direct).abs() <= F64_RTOL * geo.trace);
        // sum_i p_i grad log p_i = 0: the reason rank <= C - 1.
        let mut weighted = vec![0.0f64; geo.n];
        for (g, p) in grads.iter().zip(&geo.probs) {
            weighted.iter_mut().zip(g).for_each(|(w, x)| *w += p * x);
        }
        let scale = grads.iter().map(|g| norm(g)).fold(0.0, f64::max);
        assert!(norm(&weighted) <= F64_RTOL * scale);

        for _ in 0..8 {
            let v = gaussian(geo.n, &mut rng);
            let q = geo.quadratic_form(&v);
            assert!(q >= 0.0, "v^T G v = {q} < 0");
            let spectral: f64 = geo
                .leaf_basis
                .iter()
                .zip(&geo.eigenvalues)
                .map(|(u, l)| l * dot(u, &v).powi(2))
                .sum();
            // Eigenvalues below RANK_RTOL * top have no basis vector; they may contribute that much.
            let tol = (F64_RTOL + c as f64 * RANK_RTOL) * top * dot(&v, &v);
            assert!(
                (q - spectral).abs() <= tol,
                "v^T G v {q:.6e} vs sum lambda (u.v)^2 {spectral:.6e}"
            );
            // v^T G v = sum_i p_i (grad log p_i . v)^2.
            let direct: f64 = grads
                .iter()
                .zip(&geo.probs)
                .map(|(g, p)| p * dot(g, &v).powi(2))
                .sum();
            assert!((q - direct).abs() <= F64_RTOL * top * dot(&v, &v));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Second-order KL
// ---------------------------------------------------------------------------------------------

/// Along the top eigenvector u_1, dx = h u_1 with |dx| = 1e-2, or less where lambda_1 is so large that
/// the logits would move by more than ~0.15 (the trained fixture: lambda_1 ~ 60), keeping the cubic
/// term at a few %. Noisy images: a clean one sits on max-pool ties, where J is one-sided.
#[test]
fn kl_is_half_the_quadratic_form() {
    let data = mnist();
    let model = load_fixture("mnist-small");
    let random = random_model("mnist-small", 41);
    for (what, net, index) in [
        ("fixture", &model.network, 0usize),
        ("fixture", &model.network, 4185),
        ("random", &random.network, 3),
    ] {
        let x = noisy_mnist(&data, index, 0.01, 5);
        let geo = LocalGeometry::at(net, &x);
        let p = &geo.probs;
        let u = &geo.leaf_basis[0];
        let lambda = geo.eigenvalues[0];
        let h = 1e-2f64.min(0.02 / lambda.sqrt());
        let mut ratios = Vec::new();
        for dh in [h, -h] {
            let dx: Vec<f64> = u.iter().map(|v| v * dh).collect();
            let q = probs_at(net, &shifted(&x, u, dh));
            let divergence = kl(&q, p);
            let predicted = 0.5 * geo.quadratic_form(&dx);
            assert!((predicted - 0.5 * lambda * dh * dh).abs() <= F64_RTOL * predicted);
            assert!(
                predicted > 1e-8,
                "{what}: signal {predicted:e} too small for f32 logits"
            );
            let ratio = divergence / predicted;
            eprintln!(
                "{what} image {index} + noise, lambda_1 {lambda:.3e}, dx = {dh:+.1e} u_1: KL {divergence:.4e}, \
                 1/2 dx^T G dx {predicted:.4e}, ratio {ratio:.4}"
            );
            assert!((ratio - 1.0).abs() < KL_RATIO_TOL, "{what}: KL ratio {ratio}");
            ratios.push(ratio);
        }
        let mean = 0.5 * (ratios[0] + ratios[1]);
        assert!(
            (mean - 1.0).abs() < KL_SYMMETRIC_TOL,
            "{what}: symmetric KL ratio {mean}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Projections
// ---------------------------------------------------------------------------------------------

#[test]
fn projections_are_complementary_orthogonal_idempotent() {
    let data = mnist();
    let model = load_fixture("mnist-small");
    let geo = LocalGeometry::at(&model.network, data.image(11).unwrap());
    let n = geo.n;
    let top = geo.eigenvalues[0];
    // The leaf basis is orthonormal.
    for (a, ua) in geo.leaf_basis.iter().enumerate() {
        assert_eq!(ua.len(), n);
        for (b, ub) in geo.leaf_basis.iter().enumerate() {
            let want = if a == b { 1.0 } else { 0.0 };
            let d = dot(ua, ub);
            assert!((d - want).abs() < PROJECTION_RTOL, "u_{a} . u_{b} = {d}");
        }
    }
    let mut rng = StdRng::seed_from_u64(51);
    for _ in 0..5 {
        let v = gaussian(n, &mut rng);
        let w = gaussian(n, &mut rng);
        let vn = norm(&v);
        let leaf = geo.project_leaf(&v);
        let kernel = geo.project_kernel(&v);
        // Complementary: P_leaf + P_kernel = I.
        let sum: Vec<f64> = leaf.iter().zip(&kernel).map(|(a, b)| a + b).collect();
        assert!(max_abs_diff(&sum, &v) <= PROJECTION_RTOL * vn);
        // Idempotent.
        assert!(max_abs_diff(&geo.project_leaf(&leaf), &leaf) <= PROJECTION_RTOL * vn);
        assert!(max_abs_diff(&geo.project_kernel(&kernel), &kernel) <= PROJECTION_RTOL * vn);
        // Each kills the other's range.
        assert!(max_abs(&geo.project_leaf(&kernel)) <= PROJECTION_RTOL * vn);
        assert!(max_abs(&geo.project_kernel(&leaf)) <= PROJECTION_RTOL * vn);
        // Orthogonal: P_leaf v . P_kernel w = 0.
        let cross = dot(&leaf, &geo.project_kernel(&w));
        assert!(
            cross.abs() <= PROJECTION_RTOL * vn * norm(&w),
            "P_leaf v . P_kernel w = {cross}"
        );
        // The kernel part is in ker G, the leaf part carries all of v^T G v.
        let qk = geo.quadratic_form(&kernel);
        assert!(
            qk <= (F64_RTOL + geo.num_classes() as f64 * RANK_RTOL) * top * vn * vn,
            "{qk}"
        );
        let (q, ql) = (geo.quadratic_form(&v), geo.quadratic_form(&leaf));
        assert!((q - ql).abs() <= F64_RTOL * top * vn * vn);
        // f32 and f64 inputs project the same.
        let v32: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        let v32_as_64: Vec<f64> = v32.iter().map(|&x| x as f64).collect();
        assert!(max_abs_diff(&geo.project_leaf(&v32), &geo.project_leaf(&v32_as_64)) == 0.0);
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Steps along ker G and along D_x
// ---------------------------------------------------------------------------------------------

/// Every layer is piecewise linear, so inside one linear region a step along ker G shifts all logits
/// by the same amount and leaves p exactly unchanged: what p change a kernel step makes comes from
/// the ReLU / max-pool kinks it crosses, a number of crossings ~ h each worth ~ h. The observable
/// law is therefore "no first-order term": averaged over directions, the kernel change grows faster
/// than linearly (between h^1.5 and h^2; measured ratios 2.4-3.1 for a halved step) and is orders of
/// magnitude below the leaf change, which is linear.
#[test]
fn kernel_steps_keep_p_leaf_steps_move_it() {
    let data = mnist();
    let model = load_fixture("mnist-small");
    let random = random_model("mnist-small", 41);
    for (what, net, index) in [
        ("fixture", &model.network, 0usize),
        ("fixture", &model.network, 4185),
        ("random", &random.network, 3),
    ] {
        let x = noisy_mnist(&data, index, 0.01, 5);
        let geo = LocalGeometry::at(net, &x);
        let p = geo.probs.clone();
        let change = |u: &[f64], h: f64| -> f64 {
            let q = probs_at(net, &shifted(&x, u, h));
            norm(&q.iter().zip(&p).map(|(a, b)| a - b).collect::<Vec<_>>())
        };
        let leaf = &geo.leaf_basis[0];
        let mut rng = StdRng::seed_from_u64(62);
        let kernels: Vec<Vec<f64>> = (0..16)
            .map(|_| unit(&geo.project_kernel(&gaussian(geo.n, &mut rng))))
            .collect();
        let kernel_change = |h: f64| kernels.iter().map(|u| change(u, h)).sum::<f64>() / kernels.len() as f64;
        let (l1, l2, l3) = (change(leaf, 1e-2), change(leaf, 5e-3), change(leaf, 1e-3));
        let (k1, k2, k3) = (kernel_change(1e-2), kernel_change(5e-3), kernel_change(1e-3));
        eprintln!(
            "{what} image {index} + noise: |dp| along u_1 {l1:.3e} (h 1e-2) {l2:.3e} (5e-3) ratio {:.3}; \
             along ker G (mean of 16) {k1:.3e} {k2:.3e} ratio {:.3}; at h 1e-3 kernel/leaf {:.1e}",
            l1 / l2,
            k1 / k2,
            k3 / l3
        );
        assert!(
            LEAF_RATIO.contains(&(l1 / l2)),
            "{what}: leaf step not first order: {}",
            l1 / l2
        );
        assert!(
            k1 / k2 > KERNEL_RATIO_MIN,
            "{what}: kernel change has a first-order part: ratio {}",
            k1 / k2
        );
        assert!(
            k1 < KERNEL_VS_LEAF_1E2 * l1,
            "{what}: kernel step moved p by {k1:.3e} (leaf step {l1:.3e})"
        );
        assert!(
            k3 < KERNEL_VS_LEAF_1E3 * l3,
            "{what}: at h 1e-3 kernel {k3:.3e} vs leaf {l3:.3e}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Degenerate inputs
// ---------------------------------------------------------------------------------------------

#[test]
fn saturated_softmax_gives_zero_geometry_and_finite_walks() {
    let arch = tiny_arch();
    let mut weights = Network::initial_weights(&arch, 71);
    let x = uniform_image(36, 72);
    let base = model_from(arch.clone(), &weights).network.logits(&x, 1);
    let mut sorted = base.clone();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let gap = (sorted[0] - sorted[1]) as f64;
    assert!(gap > 0.0);
    // Scale the last layer so the logits differ by more than 2000: exp(-2000) = 0 in f64.
    let scale = (2000.0 / gap) as f32;
    for key in ["3.weight", "3.bias"] {
        weights
            .get_mut(key)
            .unwrap()
            .data
            .iter_mut()
            .for_each(|w| *w *= scale);
    }
    let model = model_from(arch, &weights);
    let geo = LocalGeometry::at(&model.network, &x);
    eprintln!("saturated logits {:?}, probs {:?}", geo.logits, geo.probs);
    assert!(
        geo.probs.iter().all(|&p| p == 0.0 || p == 1.0),
        "p not one-hot: {:?}",
        geo.probs
    );
    assert_eq!(geo.rank, 0);
    assert_eq!(geo.trace, 0.0);
    assert!(geo.eigenvalues.iter().all(|&l| l == 0.0), "{:?}", geo.eigenvalues);
    assert!(geo.leaf_basis.is_empty());
    let v = uniform_image(36, 73);
    assert!(geo.project_leaf(&v).iter().all(|&a| a == 0.0));
    assert_eq!(
        geo.project_kernel(&v),
        v.iter().map(|&a| a as f64).collect::<Vec<_>>()
    );
    assert_eq!(geo.quadratic_form(&geo.project_kernel(&v)), 0.0);

    // A strict leaf walk (no transverse part) toward another image cannot move (D_x = {0}) and
    // must not produce NaN.
    let target = uniform_image(36, 74);
    let strict = WalkConfig {
        max_steps: 3,
        transverse: Some(0.0),
        ..WalkConfig::defaults(Mode::Leaf)
    };
    let steps: Vec<_> = Walk::new(&model.network, strict, x.clone(), Some(target.clone()))
        .expect("walk")
        .collect();
    assert_eq!(steps.len(), 4);
    for s in &steps {
        assert!(
            s.x.iter().all(|v| v.is_finite()),
            "step {}: non-finite x",
            s.index
        );
        assert_eq!(s.x, x, "step {}: the strict leaf walk moved", s.index);
        assert!(s.probs.iter().all(|p| p.is_finite()));
        assert!(s.eigenvalues.iter().all(|l| l.is_finite()));
        assert_eq!(s.rank, 0);
        assert_eq!(s.off_leaf, 0.0);
    }
    // The default leaf walk adds a transverse part w P_kernel d; with D_x = {0} that is all it has:
    // finite steps of the configured length toward the target, entirely off the leaf.
    let config = WalkConfig {
        max_steps: 3,
        ..WalkConfig::defaults(Mode::Leaf)
    };
    let steps: Vec<_> = Walk::new(&model.network, config, x.clone(), Some(target))
        .expect("walk")
        .collect();
    assert_eq!(steps.len(), 4);
    for pair in steps.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(b.x.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v)));
        assert!(b.probs.iter().all(|p| p.is_finite()));
        let moved = dataleaf::walk::l2(&a.x, &b.x);
        // 1e-4: f32 rounding of x.
        assert!(
            moved <= config.step * (1.0 + 1e-4),
            "step {}: moved {moved}",
            b.index
        );
        assert!(b.distance < a.distance, "step {}: not toward the target", b.index);
        assert!(
            moved == 0.0 || (b.off_leaf - 1.0).abs() < 1e-6,
            "off_leaf {}",
            b.off_leaf
        );
    }
}

/// A NaN pixel must give the degenerate geometry (rank 0), as in PyTorch, where relu(NaN) = NaN
/// makes every logit NaN. Fails while the fast engine's ReLU is `v.max(0.0)`, which maps NaN to 0
/// (f32::max returns the non-NaN operand): the NaN pixel is then silently read as "this
/// pre-activation is off" and the geometry comes out finite with rank 9.
#[test]
fn nan_pixel_gives_a_defined_result() {
    let data = mnist();
    let model = load_fixture("mnist-small");
    let mut x = data.image(0).unwrap().to_vec();
    x[14 * 28 + 14] = f32::NAN;
    let geo = LocalGeometry::at(&model.network, &x);
    eprintln!("NaN pixel: logits {:?}, rank {}", geo.logits, geo.rank);
    assert!(
        geo.logits.iter().all(|s| s.is_nan()),
        "a NaN pixel gave finite logits {:?} (ReLU drops NaN)",
        geo.logits
    );
    assert_eq!(geo.rank, 0, "a NaN input must give rank 0");
    assert!(geo.leaf_basis.is_empty());
    assert_eq!(geo.trace, 0.0);
    assert_eq!(geo.eigenvalues, vec![0.0; 10]);
    let v = vec![1.0f64; geo.n];
    assert!(geo.project_leaf(&v).iter().all(|&a| a == 0.0));
    assert_eq!(geo.project_kernel(&v), v);
}

/// The geometry's own contract for non-finite data: NaN logits or a NaN in J give rank 0.
#[test]
fn non_finite_logits_or_jacobian_give_rank_zero() {
    let (c, n) = (10, 784);
    let data = mnist();
    let model = load_fixture("mnist-small");
    let (logits, jac) = logits_and_jacobian(&model.network, data.image(0).unwrap());
    let mut nan_logits = logits.clone();
    nan_logits[3] = f32::NAN;
    let mut nan_jac = jac.clone();
    nan_jac[5 * n + 400] = f32::NAN;
    let mut inf_logits = logits.clone();
    inf_logits[0] = f32::INFINITY;
    for (what, l, j) in [
        ("NaN logit", nan_logits, jac.clone()),
        ("NaN in J", logits.clone(), nan_jac),
        ("infinite logit", inf_logits, jac.clone()),
    ] {
        let geo = LocalGeometry::from_jacobian(l, j, n);
        assert_eq!(geo.rank, 0, "{what}");
        assert_eq!(geo.trace, 0.0, "{what}");
        assert_eq!(geo.eigenvalues, vec![0.0; c], "{what}");
        assert!(geo.leaf_basis.is_empty(), "{what}");
    }
}

#[test]
fn zero_jacobian_gives_rank_zero() {
    let (c, n) = (10, 784);
    let logits: Vec<f32> = (0..c).map(|k| k as f32 * 0.3).collect();
    let geo = LocalGeometry::from_jacobian(logits, vec![0.0; c * n], n);
    assert_eq!(geo.rank, 0);
    assert_eq!(geo.trace, 0.0);
    assert!(geo.eigenvalues.iter().all(|&l| l == 0.0));
    assert!(geo.leaf_basis.is_empty());
    assert!((geo.probs.iter().sum::<f64>() - 1.0).abs() < 1e-15);
    assert_eq!(geo.argmax(), c - 1);
}

// ---------------------------------------------------------------------------------------------
// 8. The shipped medium CNN
// ---------------------------------------------------------------------------------------------

#[test]
fn medium_cnn_has_full_rank_on_a_test_image() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/mnist-medium-cnn.json");
    if !path.exists() || !path.with_extension("safetensors").exists() {
        eprintln!(
            "note: {} not there yet; skipping the medium-CNN check",
            path.display()
        );
        return;
    }
    let model = Model::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let data = mnist();
    let geo = LocalGeometry::at(&model.network, data.image(4185).unwrap());
    eprintln!(
        "mnist-medium-cnn, test image 4185: rank {}, eigenvalues {:?}, trace {:.3e}",
        geo.rank, geo.eigenvalues, geo.trace
    );
    assert_eq!(geo.rank, 9);
    assert!(geo.eigenvalues.iter().all(|&l| l >= 0.0));
    for w in geo.eigenvalues.windows(2) {
        assert!(w[0] >= w[1], "not descending: {:?}", geo.eigenvalues);
    }
}
