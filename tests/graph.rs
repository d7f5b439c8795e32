//! Graph models (src/model/graph.rs): a JSON graph that uses every operator, whose Jacobian from the
//! fast engine must equal candle's autograd (the reference implementation follows the same graph)
//! and central differences; BatchNorm folded into its convolution must not change the function; a
//! sequential model written as a graph must give the sequential engine's logits and J exactly.

use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use dataleaf::geometry::jacobian::{jacobian_autograd, logits_and_jacobian};
use dataleaf::model::{Architecture, Model, Network, Tensor32, Weights};

/// Every operator of the graph format in one network: normalisation by constants, convolutions
/// (padded, strided, dilated, grouped, depthwise, asymmetric pads), BatchNorm folded and unfolded,
/// every activation, squeeze-excitation, a residual addition, concatenation, max and average
/// pooling with pads, a channel shuffle (reshape + transpose), a slice, reduce-mean, flatten and
/// linear layers.
const EVERY_OP: &str = r#"{
  "name": "every-op",
  "input": { "channels": 3, "height": 12, "width": 12 },
  "classes": ["a", "b", "c", "d", "e"],
  "nodes": [
    { "id": "mean", "type": "constant", "tensor": "mean" },
    { "id": "std", "type": "constant", "tensor": "std" },
    { "id": "centred", "type": "sub", "inputs": ["input", "mean"] },
    { "id": "x", "type": "div", "inputs": ["centred", "std"] },
    { "id": "c1", "type": "conv", "weight": "c1.w", "bias": "c1.b", "pads": [1, 1, 1, 1] },
    { "id": "bn1", "type": "batch_norm", "scale": "bn1.g", "bias": "bn1.b", "mean": "bn1.m", "var": "bn1.v" },
    { "id": "r1", "type": "relu" },
    { "id": "dw", "type": "conv", "weight": "dw.w", "groups": 8, "pads": [1, 0, 1, 2], "inputs": ["r1"] },
    { "id": "six", "type": "clip", "min": 0.0, "max": 6.0 },
    { "id": "g2", "type": "conv", "weight": "g2.w", "bias": "g2.b", "groups": 2, "dilation": [2, 2], "pads": [2, 2, 2, 2], "inputs": ["r1"] },
    { "id": "lr", "type": "leaky_relu", "alpha": 0.1 },
    { "id": "cat", "type": "concat", "axis": 1, "inputs": ["six", "lr"] },
    { "id": "bn2", "type": "batch_norm", "scale": "bn2.g", "bias": "bn2.b", "mean": "bn2.m", "var": "bn2.v", "epsilon": 0.001 },
    { "id": "hs", "type": "hard_swish" },
    { "id": "sq", "type": "global_avg_pool" },
    { "id": "sqf", "type": "flatten" },
    { "id": "fc1", "type": "linear", "weight": "fc1.w", "bias": "fc1.b" },
    { "id": "gate", "type": "hard_sigmoid", "alpha": 0.16666667, "beta": 0.5 },
    { "id": "gate4", "type": "reshape", "shape": [1, 16, 1, 1] },
    { "id": "se", "type": "mul", "inputs": ["hs", "gate4"] },
    { "id": "sig", "type": "sigmoid", "inputs": ["se"] },
    { "id": "silu", "type": "mul", "inputs": ["se", "sig"] },
    { "id": "res", "type": "add", "inputs": ["silu", "hs"] },
    { "id": "mp", "type": "max_pool", "kernel": [3, 3], "stride": [2, 2], "pads": [1, 1, 1, 1] },
    { "id": "ap", "type": "avg_pool", "kernel": [3, 3], "stride": [1, 1], "pads": [1, 1, 1, 1], "inputs": ["res"] },
    { "id": "ap2", "type": "avg_pool", "kernel": [2, 2], "stride": [2, 2], "count_include_pad": true, "pads": [0, 0, 1, 1] },
    { "id": "both", "type": "add", "inputs": ["mp", "ap2"] },
    { "id": "grp", "type": "reshape", "shape": [1, 2, 8, 6, 6] },
    { "id": "sh", "type": "transpose", "perm": [0, 2, 1, 3, 4] },
    { "id": "shuf", "type": "reshape", "shape": [1, 16, 6, 6] },
    { "id": "half", "type": "slice", "starts": [0], "ends": [12], "axes": [1] },
    { "id": "t", "type": "tanh" },
    { "id": "gl", "type": "gelu", "inputs": ["half"] },
    { "id": "sp", "type": "softplus", "inputs": ["t"] },
    { "id": "ef", "type": "erf", "inputs": ["gl"] },
    { "id": "mix", "type": "add", "inputs": ["sp", "ef"] },
    { "id": "rm", "type": "reduce_mean", "axes": [3], "keepdims": false },
    { "id": "flat", "type": "flatten" },
    { "id": "fc2", "type": "linear", "weight": "fc2.w", "bias": "fc2.b" },
    { "type": "identity" }
  ]
}"#;

fn random(rng: &mut StdRng, shape: &[usize], scale: f32) -> Tensor32 {
    let n = shape.iter().product();
    Tensor32 {
        shape: shape.to_vec(),
        data: (0..n).map(|_| rng.random_range(-scale..scale)).collect(),
    }
}

fn every_op_weights(seed: u64) -> Weights {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut w = Weights::new();
    let put = |w: &mut Weights, k: &str, t: Tensor32| {
        w.insert(k.into(), t);
    };
    put(
        &mut w,
        "mean",
        Tensor32 {
            shape: vec![1, 3, 1, 1],
            data: vec![0.49, 0.48, 0.45],
        },
    );
    put(
        &mut w,
        "std",
        Tensor32 {
            shape: vec![1, 3, 1, 1],
            data: vec![0.25, 0.24, 0.26],
        },
    );
    put(&mut w, "c1.w", random(&mut rng, &[8, 3, 3, 3], 0.4));
    put(&mut w, "c1.b", random(&mut rng, &[8], 0.1));
    put(&mut w, "dw.w", random(&mut rng, &[8, 1, 3, 3], 0.6));
    put(&mut w, "g2.w", random(&mut rng, &[8, 4, 3, 3], 0.4));
    put(&mut w, "g2.b", random(&mut rng, &[8], 0.1));
    for (bn, c) in [("bn1", 8), ("bn2", 16)] {
        put(
            &mut w,
            &format!("{bn}.g"),
            Tensor32 {
                shape: vec![c],
                data: (0..c).map(|_| rng.random_range(0.5..1.5)).collect(),
            },
        );
        put(&mut w, &format!("{bn}.b"), random(&mut rng, &[c], 0.3));
        put(&mut w, &format!("{bn}.m"), random(&mut rng, &[c], 0.3));
        put(
            &mut w,
            &format!("{bn}.v"),
            Tensor32 {
                shape: vec![c],
                data: (0..c).map(|_| rng.random_range(0.5..2.0)).collect(),
            },
        );
    }
    put(&mut w, "fc1.w", random(&mut rng, &[16, 16], 0.5));
    put(&mut w, "fc1.b", random(&mut rng, &[16], 0.5));
    put(&mut w, "fc2.w", random(&mut rng, &[5, 72], 0.5));
    put(&mut w, "fc2.b", random(&mut rng, &[5], 0.1));
    w
}

fn every_op_model() -> Model {
    let arch = Architecture::from_json(EVERY_OP).expect("the every-op graph parses");
    Model::from_parts(arch, &every_op_weights(7), Path::new("every-op.json"))
        .expect("the every-op graph builds")
}

fn image(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(0.0..1.0)).collect()
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0f32, |m, x| m.max(x.abs()))
}

#[test]
fn every_operator_jacobian_matches_candle_autograd() {
    let model = every_op_model();
    let n = model.network.input_len();
    for seed in 0..3 {
        let x = image(seed, n);
        let (logits, j) = logits_and_jacobian(&model.network, &x);
        let reference = model.classifier.logits(&x, 1).expect("candle forward");
        let scale = max_abs(&reference).max(1.0);
        for (a, b) in logits.iter().zip(&reference) {
            assert!((a - b).abs() <= 1e-4 * scale, "logits {a} vs candle {b}");
        }
        let auto = jacobian_autograd(&model.classifier, &x, (3, 12, 12)).expect("candle autograd");
        let jmax = max_abs(&auto);
        assert!(jmax > 1e-3, "J is not trivially zero");
        let err = j.iter().zip(&auto).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            err <= 1e-4 * jmax,
            "seed {seed}: |J - J_candle| = {err} of max |J| = {jmax}"
        );
    }
}

#[test]
fn every_operator_jacobian_matches_central_differences() {
    let model = every_op_model();
    let n = model.network.input_len();
    let c = model.num_classes();
    let x = image(11, n);
    let (_, j) = logits_and_jacobian(&model.network, &x);
    let jmax = max_abs(&j);
    let eps = 1e-3f32;
    let mut errors = Vec::with_capacity(n * c);
    for i in 0..n {
        let (mut up, mut down) = (x.clone(), x.clone());
        up[i] += eps;
        down[i] -= eps;
        let (lu, ld) = (model.network.logits(&up, 1), model.network.logits(&down, 1));
        for k in 0..c {
            let fd = (lu[k] - ld[k]) / (2.0 * eps);
            errors.push((fd - j[k * n + i]).abs() / jmax);
        }
    }
    errors.sort_by(f32::total_cmp);
    // Off the kinks of ReLU, clip and max-pool the two agree to f32 rounding; a few entries may
    // straddle a kink.
    let p99 = errors[errors.len() * 99 / 100];
    let median = errors[errors.len() / 2];
    assert!(
        median < 1e-3 && p99 < 1e-2,
        "median {median}, 99th percentile {p99} of max |J|"
    );
}

#[test]
fn folded_batch_norm_gives_the_same_function() {
    // bn1 follows a conv that feeds nothing else (folded); bn2 follows a concat (affine map).
    let model = every_op_model();
    let labels: Vec<String> = dataleaf::model::graph::resolve_ids(&model.arch.nodes)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert!(labels.contains(&"bn1".to_string()));
    // The reference applies both as written; the engine's logits above already match it. Check the
    // fold happened: the engine has one step fewer than the graph has nodes.
    let fast = &model.network;
    assert!(fast.is_graph());
    let x = image(3, fast.input_len());
    let a = fast.logits(&x, 1);
    let b = model.classifier.logits(&x, 1).expect("candle");
    for (p, q) in a.iter().zip(&b) {
        assert!((p - q).abs() < 1e-4, "{p} vs {q}");
    }
}

#[test]
fn sequential_model_as_a_graph_is_the_same_network() {
    let seq = r#"{"name": "s", "input": {"channels": 1, "height": 10, "width": 10},
      "normalize": {"mean": [0.1307], "std": [0.3081]},
      "classes": ["0","1","2","3"],
      "layers": [
        {"type": "conv2d", "name": "0", "in": 1, "out": 8, "kernel": 3},
        {"type": "relu"}, {"type": "maxpool2d", "kernel": 2}, {"type": "flatten"},
        {"type": "linear", "name": "4", "in": 128, "out": 4}]}"#;
    let graph = r#"{"name": "g", "input": {"channels": 1, "height": 10, "width": 10},
      "normalize": {"mean": [0.1307], "std": [0.3081]},
      "classes": ["0","1","2","3"],
      "nodes": [
        {"type": "conv", "weight": "0.weight", "bias": "0.bias"},
        {"type": "relu"}, {"type": "max_pool", "kernel": [2, 2], "stride": [2, 2]}, {"type": "flatten"},
        {"type": "linear", "weight": "4.weight", "bias": "4.bias"}]}"#;
    let sa = Architecture::from_json(seq).expect("sequential parses");
    let weights = Network::initial_weights(&sa, 5);
    let s = Model::from_parts(sa, &weights, Path::new("s.json")).expect("sequential builds");
    let ga = Architecture::from_json(graph).expect("graph parses");
    let g = Model::from_parts(ga, &weights, Path::new("g.json")).expect("graph builds");
    for seed in 0..4 {
        let x = image(seed, 100);
        let (ls, js) = logits_and_jacobian(&s.network, &x);
        let (lg, jg) = logits_and_jacobian(&g.network, &x);
        for (a, b) in ls.iter().zip(&lg) {
            assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "logits {a} vs {b}");
        }
        let jmax = max_abs(&js);
        let err = js.iter().zip(&jg).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(err <= 1e-5 * jmax, "J differs by {err} of {jmax}");
    }
}

#[test]
fn graph_errors_name_the_node() {
    let bad_input = EVERY_OP.replace(
        r#""inputs": ["r1"] },
    { "id": "six""#,
        r#""inputs": ["nowhere"] },
    { "id": "six""#,
    );
    let arch = Architecture::from_json(&bad_input).expect("parses");
    let err = Model::from_parts(arch, &every_op_weights(7), Path::new("bad.json"))
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("bad.json") && msg.contains("\"dw\"") && msg.contains("nowhere"),
        "{msg}"
    );
    let mut weights = every_op_weights(7);
    weights.remove("g2.w");
    let arch = Architecture::from_json(EVERY_OP).expect("parses");
    let msg = Model::from_parts(arch, &weights, Path::new("bad.json"))
        .err()
        .expect("refused")
        .to_string();
    assert!(msg.contains("g2.w") && msg.contains("missing"), "{msg}");
}
