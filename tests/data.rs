//! Dataset loading on the real shipped data, and the cross-file checks on small temp files.

use std::path::{Path, PathBuf};

use dataleaf::data::{Dataset, BUILT_IN, EMBEDDED};

fn assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/data")
}

fn assert_pixels_in_unit_range(d: &Dataset) {
    assert_eq!(d.images.len(), d.len() * d.image_len());
    assert!(
        d.images.iter().all(|&p| (0.0..=1.0).contains(&p)),
        "{}: pixel outside [0, 1]",
        d.name
    );
    // Real data uses the whole range, not just 0.
    let max = d.images.iter().cloned().fold(0.0f32, f32::max);
    assert_eq!(max, 1.0, "{}", d.name);
}

fn assert_mnist_shape(d: &Dataset, n: usize) {
    assert_eq!(d.len(), n);
    assert_eq!((d.channels, d.height, d.width), (1, 28, 28));
    assert_eq!(d.image_len(), 784);
    assert!(d.image(n - 1).is_some());
    assert!(d.image(n).is_none());
}

const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

#[test]
fn mnist_test_set() {
    let d = Dataset::open("mnist").unwrap();
    assert_eq!(d.name, "MNIST test");
    assert_mnist_shape(&d, 10000);
    assert_eq!(d.class_names, DIGITS);
    assert_eq!(
        d.class_counts(),
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    assert_eq!(d.labels[0], 7);
    assert_pixels_in_unit_range(&d);
}

#[test]
fn default_is_mnist_test() {
    let d = Dataset::default_mnist().unwrap();
    assert_eq!(d.name, "MNIST test");
    assert_eq!(d.len(), 10000);
    assert!(EMBEDDED.contains(&"mnist") && EMBEDDED.contains(&"fashion-mnist"));
    assert!(BUILT_IN.contains(&"mnist-train"));
}

#[test]
fn mnist_train_set() {
    let d = Dataset::open("mnist-train").unwrap();
    assert_eq!(d.name, "MNIST train");
    assert_mnist_shape(&d, 60000);
    assert_eq!(
        d.class_counts(),
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    assert_pixels_in_unit_range(&d);
}

#[test]
fn fashion_mnist_test_set() {
    let d = Dataset::open("fashion-mnist").unwrap();
    assert_eq!(d.name, "Fashion-MNIST test");
    assert_mnist_shape(&d, 10000);
    assert_eq!(d.class_counts(), [1000; 10]);
    assert_eq!(d.class_names[0], "T-shirt/top");
    assert_eq!(d.class_names[9], "Ankle boot");
    assert_pixels_in_unit_range(&d);
}

#[test]
fn directory_and_images_file_match_the_embedded_set() {
    let embedded = Dataset::open("mnist").unwrap();
    let dir = assets().join("mnist");
    let from_dir = Dataset::open(dir.to_str().unwrap()).unwrap();
    assert_eq!(from_dir.name, "mnist");
    // The directory holds both splits; the test split is preferred.
    assert_eq!(from_dir.labels, embedded.labels);
    assert_eq!(from_dir.images, embedded.images);
    assert_eq!(from_dir.class_names, DIGITS);

    let file = dir.join("t10k-images-idx3-ubyte.gz");
    let from_file = Dataset::open(file.to_str().unwrap()).unwrap();
    assert_eq!(from_file.name, "t10k-images-idx3-ubyte.gz");
    assert_eq!(from_file.labels, embedded.labels);
    assert_eq!(from_file.images, embedded.images);
}

#[test]
fn from_idx_files_on_real_files() {
    let dir = assets().join("fashion-mnist");
    let names: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
    let d = Dataset::from_idx_files(
        &dir.join("t10k-images-idx3-ubyte.gz"),
        &dir.join("t10k-labels-idx1-ubyte.gz"),
        names.clone(),
        "fashion",
    )
    .unwrap();
    assert_eq!(d.name, "fashion");
    assert_eq!(d.class_names, names);
    assert_eq!(d.len(), 10000);
}

#[test]
fn missing_path_names_it_and_lists_built_ins() {
    let missing = temp_dir("missing").join("nothing-here");
    let e = Dataset::open(missing.to_str().unwrap()).unwrap_err().to_string();
    assert!(e.contains(&missing.display().to_string()), "{e}");
    assert!(e.contains("no such file or directory"), "{e}");
    assert!(e.contains("mnist, fashion-mnist"), "{e}");
}

// ---- small crafted files ----

/// A fresh directory under the system temp dir, unique to this process and tag.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dataleaf-test-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_images(path: &Path, count: u32) {
    let mut v = Vec::new();
    for word in [0x0803u32, count, 2, 2] {
        v.extend_from_slice(&word.to_be_bytes());
    }
    v.extend((0..count * 4).map(|i| (i % 256) as u8));
    std::fs::write(path, v).unwrap();
}

fn write_labels(path: &Path, labels: &[u8]) {
    let mut v = Vec::new();
    v.extend_from_slice(&0x0801u32.to_be_bytes());
    v.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    v.extend_from_slice(labels);
    std::fs::write(path, v).unwrap();
}

#[test]
fn label_count_mismatch_names_both_files_and_counts() {
    let dir = temp_dir("mismatch");
    let images = dir.join("t10k-images-idx3-ubyte");
    let labels = dir.join("t10k-labels-idx1-ubyte");
    write_images(&images, 3);
    write_labels(&labels, &[1, 2]);
    let e = Dataset::from_idx_files(&images, &labels, vec!["a".into(); 10], "x")
        .unwrap_err()
        .to_string();
    let opened = Dataset::open(dir.to_str().unwrap()).unwrap_err().to_string();
    let _ = std::fs::remove_dir_all(&dir);
    for message in [&e, &opened] {
        assert!(message.contains(&images.display().to_string()), "{message}");
        assert!(message.contains(&labels.display().to_string()), "{message}");
        assert!(
            message.contains("3 images") && message.contains("2 labels"),
            "{message}"
        );
    }
}

#[test]
fn label_out_of_range_is_reported_with_its_index() {
    let dir = temp_dir("range");
    let images = dir.join("x-images-idx3-ubyte");
    let labels = dir.join("x-labels-idx1-ubyte");
    write_images(&images, 4);
    write_labels(&labels, &[0, 1, 2, 3]);
    let names = vec!["a".to_string(), "b".to_string(), "c".to_string()];
    let e = Dataset::from_idx_files(&images, &labels, names, "x")
        .unwrap_err()
        .to_string();
    // classes.txt beside the files is used by open(), and so checked too.
    std::fs::write(dir.join("classes.txt"), "zero\none\n").unwrap();
    let opened = Dataset::open(images.to_str().unwrap()).unwrap_err().to_string();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(e.contains(&labels.display().to_string()), "{e}");
    assert!(
        e.contains("label 3 at index 3 is out of range for 3 classes"),
        "{e}"
    );
    assert!(
        opened.contains("label 2 at index 2 is out of range for 2 classes"),
        "{opened}"
    );
}

#[test]
fn classes_file_and_lone_images_file_in_a_directory() {
    let dir = temp_dir("classes");
    write_images(&dir.join("toy-images-idx3-ubyte"), 2);
    write_labels(&dir.join("toy-labels-idx1-ubyte"), &[1, 0]);
    std::fs::write(dir.join("classes.txt"), "cat\ndog\n").unwrap();
    let d = Dataset::open(dir.to_str().unwrap());
    let _ = std::fs::remove_dir_all(&dir);
    let d = d.unwrap();
    assert_eq!(d.class_names, ["cat", "dog"]);
    assert_eq!(d.labels, [1, 0]);
    assert_eq!((d.channels, d.height, d.width), (1, 2, 2));
    assert_eq!(d.image(1).unwrap()[0], 4.0 / 255.0);
}

#[test]
fn missing_labels_file_is_named() {
    let dir = temp_dir("nolabels");
    let images = dir.join("t10k-images-idx3-ubyte");
    write_images(&images, 1);
    let by_file = Dataset::open(images.to_str().unwrap()).unwrap_err().to_string();
    let by_dir = Dataset::open(dir.to_str().unwrap()).unwrap_err().to_string();
    let _ = std::fs::remove_dir_all(&dir);
    let expected = dir.join("t10k-labels-idx1-ubyte").display().to_string();
    for message in [by_file, by_dir] {
        assert!(message.contains(&expected), "{message}");
        assert!(message.contains("labels file not found"), "{message}");
    }
}

#[test]
fn empty_directory_says_what_was_looked_for() {
    let dir = temp_dir("empty");
    let e = Dataset::open(dir.to_str().unwrap()).unwrap_err().to_string();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(e.contains(&dir.display().to_string()), "{e}");
    assert!(e.contains("t10k-images-idx3-ubyte[.gz]"), "{e}");
    assert!(e.contains("train-images-idx3-ubyte[.gz]"), "{e}");
}

#[test]
fn file_with_a_foreign_name_is_refused() {
    let dir = temp_dir("foreign");
    let path = dir.join("pictures.dat");
    write_images(&path, 1);
    let e = Dataset::open(path.to_str().unwrap()).unwrap_err().to_string();
    assert!(e.contains("pictures.dat"), "{e}");
    assert!(e.contains("images-idx3-ubyte[.gz]"), "{e}");
    // A .bin file is taken for a CIFAR-10 batch, and an IDX file is not one.
    let bin = dir.join("pictures.bin");
    write_images(&bin, 1);
    let e = Dataset::open(bin.to_str().unwrap()).unwrap_err().to_string();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        e.contains("pictures.bin") && e.contains("not a CIFAR-10 binary batch"),
        "{e}"
    );
}
