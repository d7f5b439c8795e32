//! Datasets: images in pixel space [0, 1], NCHW f32, with labels and class names, and their loaders.

mod cifar;
mod folder;
mod idx;
mod open;
pub mod toy;

pub use cifar::{parse_batch as parse_cifar_batch, CIFAR10_CLASSES};
pub use idx::{
    idx_images_from_bytes, idx_labels_from_bytes, read_idx_images, read_idx_labels, IdxImages,
    IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, MAX_IDX_BYTES,
};
pub use open::{BUILT_IN, CLASSES_FILE, DEFAULT_DATASET, EMBEDDED, FASHION_MNIST_CLASSES};

use std::path::{Path, PathBuf};

/// Why a dataset could not be loaded. Every variant names the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl DataError {
    pub fn invalid(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        DataError::Invalid {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
}

/// A labelled image set. Images are stored one after another, each `channels * height * width`
/// f32 values in [0, 1], channel-major (NCHW), so `image(i)` is a plain slice.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Short human name ("MNIST test", or the file name it came from).
    pub name: String,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub images: Vec<f32>,
    pub labels: Vec<usize>,
    pub class_names: Vec<String>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per image: channels * height * width.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Image `i` as a flat NCHW slice, or None when out of range.
    pub fn image(&self, i: usize) -> Option<&[f32]> {
        if i >= self.len() {
            return None;
        }
        let n = self.image_len();
        self.images.get(i * n..(i + 1) * n)
    }

    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }
}
