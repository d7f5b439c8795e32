//! Image sets the experiments compare a dataset against, in [0, 1]: the 20 shipped CIFAR-10 test
//! images (in grey at 28 x 28 for MNIST-shaped models), uniform noise, horizontally mirrored images,
//! and any set brought to another model's shape (`fitted`: grey to colour, colour to grey, resized),
//! so that a colour model's comparison sets are colour too.

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

/// `count` images of independent uniform pixels in [0, 1], 1 x 28 x 28.
pub fn uniform_noise(count: usize, seed: u64) -> Dataset {
    uniform_noise_shaped(count, seed, (1, SIDE, SIDE))
}

/// `count` images of independent uniform pixels in [0, 1] of shape (channels, height, width).
pub fn uniform_noise_shaped(count: usize, seed: u64, shape: (usize, usize, usize)) -> Dataset {
    let (channels, height, width) = shape;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let images = (0..count * channels * height * width)
        .map(|_| rng.random::<f32>())
        .collect();
    Dataset {
        name: "uniform noise".into(),
        channels,
        height,
        width,
        images,
        labels: vec![0; count],
        class_names: vec!["noise".into()],
    }
}

/// The images at `indices`, each mirrored left to right (for digits, a "symbol" that is not a digit
/// for most classes), keeping their labels; named "mirrored MNIST" for the MNIST test set.
pub fn mirrored(data: &Dataset, indices: &[usize]) -> Dataset {
    let mut images = Vec::with_capacity(indices.len() * data.image_len());
    for &i in indices {
        images.extend(mirror(data.image(i).expect("index in range"), data.width));
    }
    let mut set = subset(data, &[], &format!("mirrored {}", short_name(&data.name)));
    set.images = images;
    set.labels = indices.iter().map(|&i| data.labels[i]).collect();
    set
}

/// A dataset's name without its split ("MNIST test" -> "MNIST").
pub fn short_name(name: &str) -> &str {
    name.trim_end_matches(" test").trim_end_matches(" train")
}

/// The reference family a dataset belongs to, by its name: "MNIST", "Fashion-MNIST", "CIFAR-10".
pub fn family(name: &str) -> Option<&'static str> {
    let n = name.to_ascii_lowercase();
    if n.contains("fashion") {
        Some("Fashion-MNIST")
    } else if n.contains("cifar") {
        Some("CIFAR-10")
    } else if n.contains("mnist") {
        Some("MNIST")
    } else {
        None
    }
}

/// The 20 shipped CIFAR-10 test images, 3 x 32 x 32.
pub fn cifar10_rgb() -> Dataset {
    let mut images = Vec::with_capacity(CIFAR10.len() * 3 * 32 * 32);
    let mut labels = Vec::new();
    for (file, bytes) in CIFAR10 {
        let rgb = image::load_from_memory(bytes)
            .expect("the shipped CIFAR-10 PNGs decode")
            .to_rgb8();
        for c in 0..3 {
            images.extend(rgb.pixels().map(|p| p.0[c] as f32 / 255.0));
        }
        labels.push(label_of(file));
    }
    Dataset {
        name: "CIFAR-10".into(),
        channels: 3,
        height: 32,
        width: 32,
        images,
        labels,
        class_names: CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
    }
}

fn label_of(file: &str) -> usize {
    file.trim_end_matches(".png")
        .rsplit('_')
        .next()
        .and_then(|l| l.parse().ok())
        .unwrap_or(0)
}

/// The images at `indices` brought to `shape` (channels, height, width): grey to colour by
/// repeating the channel, colour to grey by luma 0.299 R + 0.587 G + 0.114 B (ITU-R 601-2, PIL's
/// "L"), then each channel resized bilinearly (triangle filter, as torchvision's Resize). The name
/// says what changed: "MNIST RGB", "CIFAR-10 grey", "MNIST 32x32".
pub fn fitted(data: &Dataset, indices: &[usize], shape: (usize, usize, usize)) -> Dataset {
    let (channels, height, width) = shape;
    let plane = data.height * data.width;
    let mut images = Vec::with_capacity(indices.len() * channels * height * width);
    for &i in indices {
        let x = data.image(i).expect("index in range");
        let planes: Vec<Vec<f32>> = match (data.channels, channels) {
            (a, b) if a == b => x.chunks(plane).map(<[f32]>::to_vec).collect(),
            (3, 1) => vec![(0..plane)
                .map(|p| 0.299 * x[p] + 0.587 * x[plane + p] + 0.114 * x[2 * plane + p])
                .collect()],
            _ => vec![x[..plane].to_vec(); channels],
        };
        for p in planes {
            if (data.height, data.width) == (height, width) {
                images.extend(p);
                continue;
            }
            let buffer: image::ImageBuffer<image::Luma<f32>, Vec<f32>> =
                image::ImageBuffer::from_raw(data.width as u32, data.height as u32, p).expect("sized");
            let small = image::imageops::resize(&buffer, width as u32, height as u32, FilterType::Triangle);
            images.extend(small.pixels().map(|v| v.0[0].clamp(0.0, 1.0)));
        }
    }
    let base = short_name(&data.name);
    let name = if data.channels != channels {
        format!("{base} {}", if channels == 1 { "grey" } else { "RGB" })
    } else if (data.height, data.width) != (height, width) {
        format!("{base} {height}x{width}")
    } else {
        base.to_string()
    };
    Dataset {
        name,
        channels,
        height,
        width,
        images,
        labels: indices.iter().map(|&i| data.labels[i]).collect(),
        class_names: data.class_names.clone(),
    }
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
