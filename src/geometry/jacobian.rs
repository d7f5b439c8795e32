//! J = d logits / d pixels at one image: the fast hand-written reverse pass, and candle autograd
//! as the slow reference.

use candle_core::{Device, Tensor, Var};

use crate::model::{Classifier, Network};

/// Up to this many cotangent rows are pulled back in one pass: all of J for ordinary classifiers,
/// and top-k's K + 1 rows.
pub const ROWS_PER_PASS: usize = 64;

/// Beyond ROWS_PER_PASS rows, passes of this many. Measured (2 cores, loaded, CPU time a row):
/// the ImageNet-size ResNet 6-10 ms at 6 rows against 14.5-14.9 ms at 64, the 64x64 ResNet 7.3 ms
/// at 8 against 17 ms at 64 (a pass's buffers, rows x the largest activation, then fit in cache);
/// the VGGs and CIFAR-100 equal or slightly faster.
pub const ROWS_PER_LARGE_PASS: usize = 8;

/// From this many entries (64 MB) J's memory is touched before the reverse passes fill it.
const PREFAULT_MIN: usize = 1 << 24;

/// Rows per reverse pass for `total` cotangent rows.
pub fn rows_per_pass(total: usize) -> usize {
    if total <= ROWS_PER_PASS {
        total.max(1)
    } else {
        ROWS_PER_LARGE_PASS
    }
}

/// Logits (C) and J (C x n, row-major) at `x`: one forward pass recording the ReLU and pooling
/// masks, then reverse passes of the C rows of the identity through them (`rows_per_pass`).
pub fn logits_and_jacobian(network: &Network, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let c = network.num_classes();
    let n = network.input_len();
    let trace = network.forward(x, 1);
    let mut jacobian = if c * n >= PREFAULT_MIN {
        // A large J's fresh pages (calloc's, untouched) faulted in at once, on every core: faulted
        // one pass at a time inside the reverse passes they cost 0.3-1 s of a C = 1000 step.
        let mut j = vec![0.0f32; c * n];
        crate::model::team::for_each_chunk_mut(&mut j, 1 << 20, |_, part| part.fill(0.0));
        j.clear();
        j
    } else {
        Vec::with_capacity(c * n)
    };
    let per_pass = rows_per_pass(c);
    for first in (0..c).step_by(per_pass) {
        let rows = per_pass.min(c - first);
        let mut identity = vec![0.0f32; rows * c];
        for r in 0..rows {
            identity[r * c + first + r] = 1.0;
        }
        let part = network
            .backward(&trace, &identity, rows, true, None)
            .expect("input gradient requested");
        jacobian.extend_from_slice(&part);
    }
    (trace.logits().to_vec(), jacobian)
}

/// What one forward and one reverse pass of K + 1 cotangent rows give for top-k.
#[derive(Debug, Clone)]
pub struct TopRows {
    pub logits: Vec<f32>,
    /// softmax(logits) in f64, all C classes.
    pub probs: Vec<f64>,
    /// The K most probable classes, descending p.
    pub classes: Vec<usize>,
    /// J_i for those classes, K x n row-major.
    pub rows: Vec<f32>,
    /// J^T p over all C classes (n): the pull-back of the cotangent p.
    pub mean: Vec<f32>,
}

/// The rows of J of the `k` most probable classes and J^T p, from one forward pass and the
/// reverse pass of K + 1 cotangent rows: e_i for each kept class i, and p.
pub fn logits_and_top_rows(network: &Network, x: &[f32], k: usize) -> TopRows {
    let c = network.num_classes();
    let n = network.input_len();
    let trace = network.forward(x, 1);
    let logits = trace.logits().to_vec();
    let probs = super::softmax(&logits);
    let classes = super::top_classes(&probs, k.min(c));
    let mut cotangents: Vec<f32> = Vec::with_capacity((classes.len() + 1) * c);
    for &i in &classes {
        cotangents.extend((0..c).map(|j| if j == i { 1.0 } else { 0.0 }));
    }
    cotangents.extend(probs.iter().map(|&p| p as f32));
    let total = classes.len() + 1;
    let mut pulled = Vec::with_capacity(total * n);
    let per_pass = rows_per_pass(total);
    for first in (0..total).step_by(per_pass) {
        let rows = per_pass.min(total - first);
        let part = network
            .backward(
                &trace,
                &cotangents[first * c..(first + rows) * c],
                rows,
                true,
                None,
            )
            .expect("input gradient requested");
        pulled.extend_from_slice(&part);
    }
    let mean = pulled.split_off(classes.len() * n);
    TopRows {
        logits,
        probs,
        classes,
        rows: pulled,
        mean,
    }
}

/// J by candle autograd on a batch of C copies of x (row i of the result is d logit_i / dx).
pub fn jacobian_autograd(
    classifier: &Classifier,
    x: &[f32],
    shape: (usize, usize, usize),
) -> candle_core::Result<Vec<f32>> {
    let (ch, h, w) = shape;
    let one = Tensor::from_slice(x, (1, ch, h, w), &Device::Cpu)?;
    let logits0 = classifier.forward(&one)?;
    let c = logits0.dim(1)?;
    let batch = Var::from_tensor(&one.repeat((c, 1, 1, 1))?)?;
    let logits = classifier.forward(batch.as_tensor())?;
    let eye = Tensor::eye(c, candle_core::DType::F32, &Device::Cpu)?;
    // sum_i logits[i][i]: its gradient with respect to copy i is row i of J.
    let picked = (logits * eye)?.sum_all()?;
    let grads = picked.backward()?;
    let g = grads
        .get(batch.as_tensor())
        .ok_or_else(|| candle_core::Error::Msg("no gradient".into()))?;
    g.flatten_all()?.to_vec1()
}
