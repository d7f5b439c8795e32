//! CIFAR-10 binary batches (`data_batch_*.bin`, `test_batch.bin`): records of one label byte and
//! 3072 pixel bytes (1024 red, 1024 green, 1024 blue, each 32 x 32 row-major), which is NCHW already.
//! Class names come from `batches.meta.txt` beside the batches when it is there.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{DataError, Dataset};

pub const CIFAR_SIDE: usize = 32;
const RECORD: usize = 1 + 3 * CIFAR_SIDE * CIFAR_SIDE;
/// Batches larger than this are refused before they are read (the real ones are 30 MB).
const MAX_BATCH_BYTES: u64 = 1 << 30;

pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Whether a file name looks like a CIFAR-10 binary batch.
pub fn is_cifar_batch(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("bin"))
}

/// Parse one batch's bytes into (pixels in [0, 1], labels), checking the size and every label.
pub fn parse_batch(bytes: &[u8], classes: usize, path: &Path) -> Result<(Vec<f32>, Vec<usize>), DataError> {
    if bytes.is_empty() {
        return Err(DataError::invalid(path, "empty file, not a CIFAR-10 batch"));
    }
    if !bytes.len().is_multiple_of(RECORD) {
        return Err(DataError::invalid(
            path,
            format!(
                "not a CIFAR-10 binary batch: {} bytes is not a whole number of {RECORD}-byte records \
                 (truncated, or another format)",
                bytes.len()
            ),
        ));
    }
    let count = bytes.len() / RECORD;
    let mut pixels = Vec::with_capacity(count * (RECORD - 1));
    let mut labels = Vec::with_capacity(count);
    for (i, record) in bytes.chunks_exact(RECORD).enumerate() {
        let label = record[0] as usize;
        if label >= classes {
            return Err(DataError::invalid(
                path,
                format!("record {i} has label {label}, out of range for {classes} classes"),
            ));
        }
        labels.push(label);
        pixels.extend(record[1..].iter().map(|&b| b as f32 / 255.0));
    }
    Ok((pixels, labels))
}

fn read_batch(path: &Path) -> Result<Vec<u8>, DataError> {
    let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
    if meta.len() > MAX_BATCH_BYTES {
        return Err(DataError::invalid(
            path,
            format!("{} bytes is more than dataleaf reads", meta.len()),
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| DataError::io(path, e))?;
    Ok(bytes)
}

/// The class names in `batches.meta.txt` beside `batch`, or CIFAR-10's.
fn class_names_beside(batch: &Path) -> Result<Vec<String>, DataError> {
    let meta = batch.with_file_name("batches.meta.txt");
    match std::fs::read_to_string(&meta) {
        Ok(text) => {
            let names: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect();
            if names.len() < 2 {
                return Err(DataError::invalid(
                    &meta,
                    "needs at least two class names, one per line",
                ));
            }
            Ok(names)
        }
        Err(_) => Ok(CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect()),
    }
}

/// Load batches (in the given order) as one dataset.
pub fn load_batches(paths: &[PathBuf], name: String) -> Result<Dataset, DataError> {
    let first = paths.first().expect("at least one batch");
    let class_names = class_names_beside(first)?;
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    for path in paths {
        let (p, l) = parse_batch(&read_batch(path)?, class_names.len(), path)?;
        images.extend(p);
        labels.extend(l);
    }
    Ok(Dataset {
        name,
        channels: 3,
        height: CIFAR_SIDE,
        width: CIFAR_SIDE,
        images,
        labels,
        class_names,
    })
}

/// The batches in a folder: `test_batch.bin` if present (the test set, as for MNIST), else every
/// `data_batch_*.bin` in name order; None when the folder holds neither.
pub fn batches_in(dir: &Path) -> Option<Vec<PathBuf>> {
    let test = dir.join("test_batch.bin");
    if test.is_file() {
        return Some(vec![test]);
    }
    let mut train: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("data_batch_") && n.ends_with(".bin"))
        })
        .collect();
    train.sort();
    (!train.is_empty()).then_some(train)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(label: u8, value: u8) -> Vec<u8> {
        let mut r = vec![label];
        r.extend(std::iter::repeat_n(value, RECORD - 1));
        r
    }

    #[test]
    fn parses_records_into_nchw_planes() {
        let mut bytes = record(3, 255);
        bytes.extend(record(9, 0));
        let (pixels, labels) = parse_batch(&bytes, 10, Path::new("b.bin")).unwrap();
        assert_eq!(labels, vec![3, 9]);
        assert_eq!(pixels.len(), 2 * 3072);
        assert_eq!(pixels[0], 1.0);
        assert_eq!(pixels[3072], 0.0);
    }

    #[test]
    fn rejects_truncated_empty_and_out_of_range() {
        let bytes = record(1, 7);
        let e = parse_batch(&bytes[..100], 10, Path::new("t.bin"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.bin") && e.contains("3073-byte records"), "{e}");
        let e = parse_batch(&[], 10, Path::new("e.bin")).unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        let e = parse_batch(&record(12, 0), 10, Path::new("l.bin"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("label 12"), "{e}");
    }
}
