//! Image sets the experiments compare MNIST against, all 1 x 28 x 28 in [0, 1]: the 20 shipped
//! CIFAR-10 test images in grey, uniform noise, and horizontally mirrored MNIST digits.

use image::imageops::FilterType;
use rand::{Rng, SeedableRng};

use crate::data::{Dataset, CIFAR10_CLASSES};
use crate::walk::mirror;

const SIDE: usize = 28;

macro_rules! cifar {
    ($($file:literal),* $(,)?) => {
        [$(($file, include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/data/cifar10-samples/", $file)) as &[u8])),*]
    };
}

/// The shipped CIFAR-10 test images (file name `cifar10_<index>_<label>.png`, 32 x 32 RGB).
const CIFAR10: [(&str, &[u8]); 20] = cifar!(
    "cifar10_00_3.png",
    "cifar10_01_8.png",
    "cifar10_02_8.png",
    "cifar10_03_0.png",
    "cifar10_04_6.png",
    "cifar10_05_6.png",
    "cifar10_06_1.png",
    "cifar10_07_6.png",
    "cifar10_08_3.png",
    "cifar10_09_1.png",
    "cifar10_10_0.png",
    "cifar10_11_9.png",
    "cifar10_12_5.png",
    "cifar10_13_7.png",
    "cifar10_14_9.png",
    "cifar10_15_8.png",
    "cifar10_16_5.png",
    "cifar10_17_7.png",
    "cifar10_18_8.png",
    "cifar10_19_6.png",
);

/// A set of 28 x 28 grey images without labels that matter.
fn grey_set(name: &str, images: Vec<f32>, labels: Vec<usize>, class_names: Vec<String>) -> Dataset {
    Dataset {
        name: name.into(),
        channels: 1,
        height: SIDE,
        width: SIDE,
        images,
        labels,
        class_names,
    }
}

/// The 20 CIFAR-10 images in grey at 28 x 28, as torchvision's `Grayscale` then `Resize(28)` make
/// them: luma 0.299 R + 0.587 G + 0.114 B (ITU-R 601-2, PIL's "L"), then a bilinear (triangle
/// filter) resize from 32 x 32.
pub fn cifar10_grey() -> Dataset {
    let mut images = Vec::with_capacity(CIFAR10.len() * SIDE * SIDE);
    let mut labels = Vec::new();
    for (file, bytes) in CIFAR10 {
        let rgb = image::load_from_memory(bytes)
            .expect("the shipped CIFAR-10 PNGs decode")
            .to_rgb8();
        let grey = image::ImageBuffer::from_fn(rgb.width(), rgb.height(), |x, y| {
            let p = rgb.get_pixel(x, y).0;
            let l = 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32;
            image::Luma([l / 255.0])
        });
        let small = image::imageops::resize(&grey, SIDE as u32, SIDE as u32, FilterType::Triangle);
        images.extend(small.pixels().map(|p| p.0[0].clamp(0.0, 1.0)));
        let label = file
            .trim_end_matches(".png")
            .rsplit('_')
            .next()
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        labels.push(label);
    }
    let classes = CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect();
    grey_set("CIFAR-10 grey", images, labels, classes)
}

/// `count` images of independent uniform pixels in [0, 1].
pub fn uniform_noise(count: usize, seed: u64) -> Dataset {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let images = (0..count * SIDE * SIDE).map(|_| rng.random::<f32>()).collect();
    grey_set("uniform noise", images, vec![0; count], vec!["noise".into()])
}

/// The images at `indices` of an MNIST-shaped set, each mirrored left to right (a "symbol" that is
/// not a digit for most classes), keeping their labels.
pub fn mirrored(data: &Dataset, indices: &[usize]) -> Dataset {
    let mut images = Vec::with_capacity(indices.len() * data.image_len());
    for &i in indices {
        images.extend(mirror(data.image(i).expect("index in range"), data.width));
    }
    let labels = indices.iter().map(|&i| data.labels[i]).collect();
    grey_set("mirrored MNIST", images, labels, data.class_names.clone())
}

/// The images at `indices` as a new set.
pub fn subset(data: &Dataset, indices: &[usize], name: &str) -> Dataset {
    let mut images = Vec::with_capacity(indices.len() * data.image_len());
    for &i in indices {
        images.extend_from_slice(data.image(i).expect("index in range"));
    }
    Dataset {
        name: name.into(),
        channels: data.channels,
        height: data.height,
        width: data.width,
        images,
        labels: indices.iter().map(|&i| data.labels[i]).collect(),
        class_names: data.class_names.clone(),
    }
}
