//! Training with plain SGD on softmax cross-entropy (the papers' recipe for the medium CNN: lr 0.01,
//! batch 60, no momentum), with a checkpoint after every epoch.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::arch::{Architecture, TrainingRecord};
use super::files::{write_model, ModelError};
use super::{accuracy, argmax, Network};
use crate::data::Dataset;

#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// One of `zoo::ARCHITECTURES`.
    pub arch: String,
    pub epochs: usize,
    pub learning_rate: f32,
    pub batch_size: usize,
    pub seed: u64,
    pub out_dir: PathBuf,
}

/// Progress reports for a caller's progress bar.
pub enum TrainEvent<'a> {
    Batch {
        epoch: usize,
        batch: usize,
        batches: usize,
        loss: f32,
        running_accuracy: f32,
    },
    Checkpoint {
        path: &'a Path,
        record: &'a TrainingRecord,
    },
}

/// Mean softmax cross-entropy of a batch, its gradient with respect to the logits, and the number of
/// correct predictions. d/ds_k of -log p_y = p_k - [k = y], averaged over the batch.
pub fn cross_entropy(logits: &[f32], labels: &[usize], classes: usize) -> (f32, Vec<f32>, usize) {
    let batch = labels.len();
    let mut grad = vec![0.0; logits.len()];
    let (mut loss, mut correct) = (0.0f64, 0);
    for ((row, g), &y) in logits.chunks(classes).zip(grad.chunks_mut(classes)).zip(labels) {
        let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = row.iter().map(|s| (s - max).exp()).sum();
        loss += ((sum.ln() + max) - row[y]) as f64;
        for (k, (gk, s)) in g.iter_mut().zip(row).enumerate() {
            let p = (s - max).exp() / sum;
            *gk = (p - if k == y { 1.0 } else { 0.0 }) / batch as f32;
        }
        correct += usize::from(argmax(row) == y);
    }
    ((loss / batch as f64) as f32, grad, correct)
}

/// Train from fresh weights; writes `<out>/<name>-eNN.{json,safetensors}` for epoch 0 (the
/// initial weights) and after every epoch. Returns the checkpoint paths and the trained network.
pub fn train(
    config: &TrainConfig,
    arch: Architecture,
    train_set: &Dataset,
    test_set: &Dataset,
    mut on_event: impl FnMut(TrainEvent),
) -> Result<(Vec<PathBuf>, Network), ModelError> {
    let weights = Network::initial_weights(&arch, config.seed);
    let mut net = Network::new(&arch, &weights).map_err(|m| ModelError::new(&config.out_dir, m))?;
    let classes = arch.num_classes();
    let n = train_set.image_len();
    let mut order: Vec<usize> = (0..train_set.len()).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed);
    let batches = train_set.len().div_ceil(config.batch_size);
    let mut paths = Vec::new();
    let mut batch_images = Vec::with_capacity(config.batch_size * n);
    for epoch in 0..=config.epochs {
        let started = Instant::now();
        if epoch > 0 {
            order.shuffle(&mut rng);
            let (mut seen, mut correct) = (0, 0);
            for (b, idx) in order.chunks(config.batch_size).enumerate() {
                batch_images.clear();
                for &i in idx {
                    batch_images.extend_from_slice(&train_set.images[i * n..(i + 1) * n]);
                }
                let labels: Vec<usize> = idx.iter().map(|&i| train_set.labels[i]).collect();
                let trace = net.forward(&batch_images, idx.len());
                let (loss, dlogits, hits) = cross_entropy(trace.logits(), &labels, classes);
                let mut grads = net.zero_gradients();
                net.backward(&trace, &dlogits, idx.len(), false, Some(&mut grads));
                net.sgd_step(&grads, config.learning_rate);
                seen += idx.len();
                correct += hits;
                on_event(TrainEvent::Batch {
                    epoch,
                    batch: b + 1,
                    batches,
                    loss,
                    running_accuracy: correct as f32 / seen as f32,
                });
            }
        }
        let epoch_seconds = started.elapsed().as_secs_f32();
        let mut checkpoint = arch.clone();
        checkpoint.training = Some(TrainingRecord {
            arch: config.arch.clone(),
            epoch,
            seed: config.seed,
            learning_rate: config.learning_rate,
            batch_size: config.batch_size,
            test_accuracy: accuracy(&net, test_set) as f32,
            epoch_seconds,
        });
        let path = config.out_dir.join(format!("{}-e{epoch:02}.json", arch.name));
        write_model(&path, &checkpoint, &net.weights())?;
        on_event(TrainEvent::Checkpoint {
            path: &path,
            record: checkpoint.training.as_ref().expect("just set"),
        });
        paths.push(path);
    }
    Ok((paths, net))
}
