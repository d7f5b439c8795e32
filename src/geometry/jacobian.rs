//! J = d logits / d pixels at one image: the fast hand-written reverse pass, and candle autograd
//! as the slow reference.

use candle_core::{Device, Tensor, Var};

use crate::model::{Classifier, Network};

/// Cotangent rows pulled back together: all of J for ordinary classifiers; at C = 1000 the
/// reverse pass's buffers (rows x the largest activation) stay bounded.
pub const ROWS_PER_PASS: usize = 64;

/// Logits (C) and J (C x n, row-major) at `x`: one forward pass recording the ReLU and pooling
/// masks, then reverse passes of the C rows of the identity through them.
pub fn logits_and_jacobian(network: &Network, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let c = network.num_classes();
    let n = network.input_len();
    let trace = network.forward(x, 1);
    let mut jacobian = Vec::with_capacity(c * n);
    for first in (0..c).step_by(ROWS_PER_PASS) {
        let rows = ROWS_PER_PASS.min(c - first);
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
