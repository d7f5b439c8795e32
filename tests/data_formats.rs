//! CIFAR-10 binary batches and image folders, built from the 20 real CIFAR-10 test images shipped
//! in assets/data/cifar10-samples.

use std::path::{Path, PathBuf};

use dataleaf::data::{Dataset, CIFAR10_CLASSES};

fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/data/cifar10-samples")
}

/// The shipped PNGs with the label in their names (cifar10_<index>_<label>.png), in name order.
fn sample_pngs() -> Vec<(PathBuf, usize)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(samples_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let stem = p.file_stem().unwrap().to_str().unwrap().to_string();
            let label = stem.rsplit('_').next().unwrap().parse().unwrap();
            (p, label)
        })
        .collect()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dataleaf-formats-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn cifar_batch_holds_the_real_test_images() {
    let data = Dataset::open(samples_dir().to_str().unwrap()).unwrap();
    assert_eq!(
        (data.len(), data.channels, data.height, data.width),
        (20, 3, 32, 32)
    );
    assert_eq!(data.class_names, CIFAR10_CLASSES.map(String::from).to_vec());
    let pngs = sample_pngs();
    assert_eq!(data.labels, pngs.iter().map(|(_, l)| *l).collect::<Vec<_>>());
    // Pixel for pixel the PNG, channel-major.
    let png = image::open(&pngs[0].0).unwrap().to_rgb8();
    let x = data.image(0).unwrap();
    for (i, p) in png.pixels().enumerate() {
        for c in 0..3 {
            assert_eq!(x[c * 1024 + i], p.0[c] as f32 / 255.0);
        }
    }
    // The batch file itself opens too.
    let one = Dataset::open(samples_dir().join("test_batch.bin").to_str().unwrap()).unwrap();
    assert_eq!(one.images, data.images);
}

#[test]
fn image_folder_loads_classes_from_sub_folders() {
    let dir = temp_dir("folder");
    for (path, label) in sample_pngs() {
        let class = dir.join(CIFAR10_CLASSES[label]);
        std::fs::create_dir_all(&class).unwrap();
        std::fs::copy(&path, class.join(path.file_name().unwrap())).unwrap();
    }
    let data = Dataset::open(dir.to_str().unwrap()).unwrap();
    assert_eq!(
        (data.len(), data.channels, data.height, data.width),
        (20, 3, 32, 32)
    );
    // Classes are the sub-folders present, in name order.
    let mut present: Vec<String> = sample_pngs()
        .iter()
        .map(|(_, l)| CIFAR10_CLASSES[*l].to_string())
        .collect();
    present.sort();
    present.dedup();
    assert_eq!(data.class_names, present);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn grey_folder_stays_one_channel() {
    let dir = temp_dir("grey");
    std::fs::create_dir_all(dir.join("a")).unwrap();
    let img = image::GrayImage::from_fn(28, 28, |x, y| image::Luma([(x * 9 + y) as u8]));
    img.save(dir.join("a/one.png")).unwrap();
    let data = Dataset::open(dir.to_str().unwrap()).unwrap();
    assert_eq!((data.channels, data.height, data.width), (1, 28, 28));
    assert_eq!(data.image(0).unwrap()[1], 9.0 / 255.0);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_folders_and_batches_get_clear_errors() {
    // Images of two sizes.
    let dir = temp_dir("sizes");
    std::fs::create_dir_all(dir.join("a")).unwrap();
    image::GrayImage::new(28, 28).save(dir.join("a/1.png")).unwrap();
    image::GrayImage::new(30, 28).save(dir.join("a/2.png")).unwrap();
    let e = Dataset::open(dir.to_str().unwrap()).unwrap_err().to_string();
    assert!(
        e.contains("2.png") && e.contains("30x28") && e.contains("one size"),
        "{e}"
    );
    // An unreadable image.
    std::fs::write(dir.join("a/2.png"), b"not a png at all").unwrap();
    let e = Dataset::open(dir.to_str().unwrap()).unwrap_err().to_string();
    assert!(e.contains("2.png") && e.contains("cannot read the image"), "{e}");
    // An empty folder.
    let empty = temp_dir("empty");
    let e = Dataset::open(empty.to_str().unwrap()).unwrap_err().to_string();
    assert!(e.contains(&empty.display().to_string()), "{e}");
    // A truncated batch.
    let bytes = std::fs::read(samples_dir().join("test_batch.bin")).unwrap();
    let cut = dir.join("cut.bin");
    std::fs::write(&cut, &bytes[..5000]).unwrap();
    let e = Dataset::open(cut.to_str().unwrap()).unwrap_err().to_string();
    assert!(e.contains("cut.bin") && e.contains("3073-byte records"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&empty).ok();
}
