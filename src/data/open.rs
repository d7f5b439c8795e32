//! Opening a dataset from a spec: a built-in name, an IDX folder or images file, a CIFAR-10 binary
//! batch or a folder of them, or an image folder (one sub-folder per class).

use std::path::{Path, PathBuf};

use super::idx::{idx_images_from_bytes, idx_labels_from_bytes, read_idx_images, read_idx_labels, IdxImages};
use super::{cifar, folder, DataError, Dataset};

/// Datasets compiled into the binary; `Dataset::open` accepts these names anywhere.
pub const EMBEDDED: &[&str] = &["mnist", "fashion-mnist"];

/// Every name `Dataset::open` understands without a path: the embedded sets plus "mnist-train",
/// which is read at run time from the source tree's assets (too big to embed).
pub const BUILT_IN: &[&str] = &["mnist", "fashion-mnist", "mnist-train", "cifar10-samples"];

/// The spec `Dataset::default_mnist` opens.
pub const DEFAULT_DATASET: &str = "mnist";

const MNIST_TEST_IMAGES: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/data/mnist/t10k-images-idx3-ubyte.gz"
));
const MNIST_TEST_LABELS: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/data/mnist/t10k-labels-idx1-ubyte.gz"
));
const FASHION_TEST_IMAGES: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/data/fashion-mnist/t10k-images-idx3-ubyte.gz"
));
const FASHION_TEST_LABELS: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/data/fashion-mnist/t10k-labels-idx1-ubyte.gz"
));

/// Where "mnist-train" lives: the source tree this binary was built from.
/// The 20 CIFAR-10 test images that ship (a binary batch), for colour models.
const CIFAR_SAMPLES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/data/cifar10-samples");
const MNIST_TRAIN_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/data/mnist");

/// Fashion-MNIST's class names, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// The optional file of class names (one per line) looked for beside the IDX files.
pub const CLASSES_FILE: &str = "classes.txt";

const IMAGES_TAG: &str = "images-idx3";
const LABELS_TAG: &str = "labels-idx1";
const IDX3_SUFFIX: &str = "images-idx3-ubyte";
const IDX1_SUFFIX: &str = "labels-idx1-ubyte";

impl Dataset {
    /// Open a dataset from a spec: "mnist" (embedded MNIST test set), "fashion-mnist" (embedded
    /// Fashion-MNIST test set), "mnist-train" (MNIST training set from the source tree), a
    /// directory holding `t10k-images-idx3-ubyte[.gz]` or `train-images-idx3-ubyte[.gz]` and the
    /// matching labels, or the path of a `*images-idx3-ubyte[.gz]` file. Built-in names win over
    /// a directory of the same name; write `./mnist` for the directory.
    pub fn open(spec: &str) -> Result<Dataset, DataError> {
        match spec.trim().to_ascii_lowercase().as_str() {
            "mnist" => Dataset::embedded_mnist(),
            "fashion-mnist" => Dataset::embedded_fashion_mnist(),
            "mnist-train" => Dataset::mnist_train(),
            "cifar10-samples" => Dataset::open_path(Path::new(CIFAR_SAMPLES_DIR)),
            _ => Dataset::open_path(Path::new(spec.trim())),
        }
    }

    /// The embedded MNIST test set, the app's and CLI's default dataset.
    pub fn default_mnist() -> Result<Dataset, DataError> {
        Dataset::open(DEFAULT_DATASET)
    }

    /// Load an IDX images file and its labels file (each raw or gzipped), checking that the
    /// counts agree and that every label names one of `class_names`.
    pub fn from_idx_files(
        images: &Path,
        labels: &Path,
        class_names: Vec<String>,
        name: impl Into<String>,
    ) -> Result<Dataset, DataError> {
        let pixels = read_idx_images(images)?;
        let label_values = read_idx_labels(labels)?;
        let parts = Parts {
            images: pixels,
            labels: label_values,
            images_path: images,
            labels_path: labels,
        };
        parts.into_dataset(class_names, name.into())
    }

    /// How many examples carry each label, indexed by class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes()];
        for &label in &self.labels {
            if let Some(c) = counts.get_mut(label) {
                *c += 1;
            }
        }
        counts
    }

    fn embedded_mnist() -> Result<Dataset, DataError> {
        let images_path = Path::new("embedded:mnist/t10k-images-idx3-ubyte.gz");
        let labels_path = Path::new("embedded:mnist/t10k-labels-idx1-ubyte.gz");
        let parts = Parts {
            images: idx_images_from_bytes(MNIST_TEST_IMAGES, images_path)?,
            labels: idx_labels_from_bytes(MNIST_TEST_LABELS, labels_path)?,
            images_path,
            labels_path,
        };
        parts.into_dataset(numbered_classes(10), "MNIST test".into())
    }

    fn embedded_fashion_mnist() -> Result<Dataset, DataError> {
        let images_path = Path::new("embedded:fashion-mnist/t10k-images-idx3-ubyte.gz");
        let labels_path = Path::new("embedded:fashion-mnist/t10k-labels-idx1-ubyte.gz");
        let parts = Parts {
            images: idx_images_from_bytes(FASHION_TEST_IMAGES, images_path)?,
            labels: idx_labels_from_bytes(FASHION_TEST_LABELS, labels_path)?,
            images_path,
            labels_path,
        };
        let names = FASHION_MNIST_CLASSES.iter().map(|s| s.to_string()).collect();
        parts.into_dataset(names, "Fashion-MNIST test".into())
    }

    fn mnist_train() -> Result<Dataset, DataError> {
        let dir = Path::new(MNIST_TRAIN_DIR);
        let images = dir.join("train-images-idx3-ubyte.gz");
        let labels = dir.join("train-labels-idx1-ubyte.gz");
        // Not embedded (too big), so it only exists where the source tree does.
        if !images.is_file() {
            return Err(DataError::invalid(
                &images,
                "no such file: \"mnist-train\" is read from the source tree this binary was built \
                 from; open the MNIST training files by path instead",
            ));
        }
        Dataset::from_idx_files(&images, &labels, numbered_classes(10), "MNIST train")
    }

    fn open_path(path: &Path) -> Result<Dataset, DataError> {
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => DataError::invalid(
                path,
                format!(
                    "no such file or directory (built-in datasets: {})",
                    BUILT_IN.join(", ")
                ),
            ),
            _ => DataError::io(path, e),
        })?;
        if meta.is_dir() {
            if let Some(batches) = cifar::batches_in(path) {
                return cifar::load_batches(&batches, display_name(path));
            }
            if folder::is_image_folder(path) {
                return folder::load_folder(path, display_name(path));
            }
        } else if cifar::is_cifar_batch(path) {
            return cifar::load_batches(&[path.to_path_buf()], display_name(path));
        }
        let (images, labels, name) = if meta.is_dir() {
            let (images, labels) = find_pair_in_dir(path)?;
            (images, labels, display_name(path))
        } else {
            let images = images_file_for(path)?;
            let labels = labels_file_for(&images)?;
            // Named after the images file even when the labels file was given.
            let name = display_name(&images);
            (images, labels, name)
        };
        let images_value = read_idx_images(&images)?;
        let labels_value = read_idx_labels(&labels)?;
        let class_names = match read_class_names(&images)? {
            Some(names) => names,
            None => numbered_classes(default_class_count(&labels_value)),
        };
        let parts = Parts {
            images: images_value,
            labels: labels_value,
            images_path: &images,
            labels_path: &labels,
        };
        parts.into_dataset(class_names, name)
    }
}

/// Images and labels read but not yet checked against each other.
struct Parts<'a> {
    images: IdxImages,
    labels: Vec<usize>,
    images_path: &'a Path,
    labels_path: &'a Path,
}

impl Parts<'_> {
    fn into_dataset(self, class_names: Vec<String>, name: String) -> Result<Dataset, DataError> {
        self.check_counts()?;
        check_labels(&self.labels, &class_names, self.labels_path)?;
        Ok(Dataset {
            name,
            channels: 1,
            height: self.images.rows,
            width: self.images.cols,
            images: self.images.pixels,
            labels: self.labels,
            class_names,
        })
    }

    fn check_counts(&self) -> Result<(), DataError> {
        if self.images.count == self.labels.len() {
            return Ok(());
        }
        Err(DataError::invalid(
            self.labels_path,
            format!(
                "image and label counts differ: {} holds {} images but {} holds {} labels",
                self.images_path.display(),
                self.images.count,
                self.labels_path.display(),
                self.labels.len()
            ),
        ))
    }
}

fn check_labels(labels: &[usize], class_names: &[String], labels_path: &Path) -> Result<(), DataError> {
    if class_names.is_empty() {
        return Err(DataError::invalid(labels_path, "no class names given"));
    }
    let bad = labels.iter().enumerate().find(|(_, &l)| l >= class_names.len());
    match bad {
        None => Ok(()),
        Some((index, label)) => Err(DataError::invalid(
            labels_path,
            format!(
                "label {label} at index {index} is out of range for {} classes",
                class_names.len()
            ),
        )),
    }
}

/// "0", "1", ... as class names.
fn numbered_classes(n: usize) -> Vec<String> {
    (0..n).map(|i| i.to_string()).collect()
}

/// Without a classes.txt: the ten MNIST digits, or more numbers if the labels need them.
fn default_class_count(labels: &[usize]) -> usize {
    let needed = labels.iter().max().map_or(0, |&m| m + 1);
    needed.max(10)
}

/// The file or directory name, for `Dataset::name`.
fn display_name(path: &Path) -> String {
    // "." and ".." have no file name of their own; use the directory they stand for.
    let resolved = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let name = resolved.file_name().or_else(|| path.file_name());
    match name {
        Some(n) => n.to_string_lossy().into_owned(),
        None => path.display().to_string(),
    }
}

/// In a directory: the test split if present, else the training split, else a lone
/// `*images-idx3-ubyte[.gz]` file.
fn find_pair_in_dir(dir: &Path) -> Result<(PathBuf, PathBuf), DataError> {
    for split in ["t10k", "train"] {
        if let Some(images) = existing_with_or_without_gz(&dir.join(format!("{split}-{IDX3_SUFFIX}"))) {
            let labels = labels_file_for(&images)?;
            return Ok((images, labels));
        }
    }
    let candidates = images_files_in(dir)?;
    match candidates.as_slice() {
        [only] => {
            let labels = labels_file_for(only)?;
            Ok((only.clone(), labels))
        }
        [] => Err(DataError::invalid(
            dir,
            format!(
                "no IDX dataset here: looked for t10k-{IDX3_SUFFIX}[.gz], then \
                 train-{IDX3_SUFFIX}[.gz], then any *{IDX3_SUFFIX}[.gz] (each with the matching \
                 *{IDX1_SUFFIX}[.gz])"
            ),
        )),
        many => Err(DataError::invalid(
            dir,
            format!(
                "several IDX image files here ({}); open one of them by path",
                file_names(many).join(", ")
            ),
        )),
    }
}

/// Files in `dir` named `*images-idx3-ubyte[.gz]`, sorted.
fn images_files_in(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut found = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| DataError::io(dir, e))?.path();
        if path.is_file() && is_images_name(&path) {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

fn is_images_name(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.ends_with(IDX3_SUFFIX) || name.ends_with(&format!("{IDX3_SUFFIX}.gz"))
}

fn file_names(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .map(|p| {
            p.file_name()
                .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned())
        })
        .collect()
}

/// The images file a file path stands for: itself, or the images companion of a labels file.
fn images_file_for(path: &Path) -> Result<PathBuf, DataError> {
    if is_images_name(path) {
        return Ok(path.to_path_buf());
    }
    // Accept the labels file too: the pair is the same either way.
    if let Some(images) = companion(path, LABELS_TAG, IMAGES_TAG) {
        if let Some(found) = existing_with_or_without_gz(&images) {
            return Ok(found);
        }
    }
    Err(DataError::invalid(
        path,
        format!(
            "not a dataset: expected a directory or an IDX images file named \
             *{IDX3_SUFFIX}[.gz] (built-in datasets: {})",
            BUILT_IN.join(", ")
        ),
    ))
}

/// The labels file beside an images file: `images-idx3` replaced by `labels-idx1`, with or
/// without `.gz` (the two files need not be compressed alike).
fn labels_file_for(images: &Path) -> Result<PathBuf, DataError> {
    let Some(labels) = companion(images, IMAGES_TAG, LABELS_TAG) else {
        return Err(DataError::invalid(
            images,
            format!("cannot name the labels file: the images file name lacks \"{IMAGES_TAG}\""),
        ));
    };
    existing_with_or_without_gz(&labels).ok_or_else(|| {
        DataError::invalid(
            &labels,
            format!(
                "labels file not found (expected beside the images file {}, raw or .gz)",
                images.display()
            ),
        )
    })
}

/// `path` with the last `from` in its file name replaced by `to`.
fn companion(path: &Path, from: &str, to: &str) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let at = name.rfind(from)?;
    let new_name = format!("{}{}{}", &name[..at], to, &name[at + from.len()..]);
    Some(path.with_file_name(new_name))
}

/// `path` if it exists, else the same name with `.gz` added or removed.
fn existing_with_or_without_gz(path: &Path) -> Option<PathBuf> {
    if path.is_file() {
        return Some(path.to_path_buf());
    }
    let text = path.to_string_lossy();
    let other = match text.strip_suffix(".gz") {
        Some(raw) => PathBuf::from(raw),
        None => PathBuf::from(format!("{text}.gz")),
    };
    other.is_file().then_some(other)
}

/// Class names from `classes.txt` beside the images file, if there is one.
fn read_class_names(images: &Path) -> Result<Option<Vec<String>>, DataError> {
    let path = images.with_file_name(CLASSES_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| DataError::io(&path, e))?;
    parse_class_names(&text, &path).map(Some)
}

/// One name per line; trailing blank lines are ignored, blank lines between names are not.
fn parse_class_names(text: &str, path: &Path) -> Result<Vec<String>, DataError> {
    let mut names: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    while names.last().is_some_and(|n| n.is_empty()) {
        names.pop();
    }
    if names.is_empty() {
        return Err(DataError::invalid(path, "no class names (expected one per line)"));
    }
    if let Some(i) = names.iter().position(|n| n.is_empty()) {
        return Err(DataError::invalid(
            path,
            format!("line {} is blank (expected one class name per line)", i + 1),
        ));
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn companion_names() {
        let p = Path::new("/d/t10k-images-idx3-ubyte.gz");
        assert_eq!(
            companion(p, IMAGES_TAG, LABELS_TAG).unwrap(),
            Path::new("/d/t10k-labels-idx1-ubyte.gz")
        );
        assert!(companion(Path::new("/d/foo.bin"), IMAGES_TAG, LABELS_TAG).is_none());
    }

    #[test]
    fn class_names_file_parsing() {
        let p = Path::new("x/classes.txt");
        assert_eq!(parse_class_names("a\r\nb\n\n\n", p).unwrap(), vec!["a", "b"]);
        let e = parse_class_names("a\n\nb\n", p).unwrap_err().to_string();
        assert!(
            e.contains("x/classes.txt") && e.contains("line 2 is blank"),
            "{e}"
        );
        let e = parse_class_names("\n\n", p).unwrap_err().to_string();
        assert!(e.contains("no class names"), "{e}");
    }

    #[test]
    fn default_class_count_grows_with_labels() {
        assert_eq!(default_class_count(&[0, 3, 9]), 10);
        assert_eq!(default_class_count(&[0, 25]), 26);
    }

    #[test]
    fn unknown_path_lists_built_ins() {
        let e = Dataset::open("/definitely/not/here").unwrap_err().to_string();
        assert!(e.contains("/definitely/not/here"), "{e}");
        assert!(e.contains("no such file or directory"), "{e}");
        assert!(e.contains("mnist, fashion-mnist, mnist-train"), "{e}");
    }

    #[test]
    fn embedded_sets_open() {
        for name in EMBEDDED {
            let d = Dataset::open(name).unwrap();
            assert_eq!(d.len(), 10000, "{name}");
            assert_eq!(d.num_classes(), 10, "{name}");
        }
    }
}
