//! An image folder: one sub-folder per class (its name is the class name), holding PNG or JPEG
//! images of one size. Grey images stay one channel; if any image has colour, all become RGB.

use std::path::{Path, PathBuf};

use image::{DynamicImage, GenericImageView, ImageReader, Limits};

use super::{DataError, Dataset};

/// Folders with more images than this are refused rather than read into memory.
const MAX_IMAGES: usize = 200_000;
/// Images larger than this on a side are refused (the decoder is told before it allocates).
const MAX_SIDE: u32 = 4096;

fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["png", "jpg", "jpeg"].contains(&e.to_ascii_lowercase().as_str()))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    Ok(entries)
}

/// Whether `dir` looks like an image folder: some sub-folder holds a PNG or JPEG.
pub fn is_image_folder(dir: &Path) -> bool {
    sorted_entries(dir).is_ok_and(|entries| {
        entries
            .iter()
            .filter(|p| p.is_dir())
            .any(|sub| sorted_entries(sub).is_ok_and(|files| files.iter().any(|f| is_image_file(f))))
    })
}

fn decode(path: &Path) -> Result<DynamicImage, DataError> {
    let mut reader = ImageReader::open(path)
        .map_err(|e| DataError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    reader.limits(limits);
    reader
        .decode()
        .map_err(|e| DataError::invalid(path, format!("cannot read the image: {e}")))
}

/// Load every image of every class sub-folder, in name order.
pub fn load_folder(dir: &Path, name: String) -> Result<Dataset, DataError> {
    let classes: Vec<PathBuf> = sorted_entries(dir)?.into_iter().filter(|p| p.is_dir()).collect();
    let mut files: Vec<(PathBuf, usize)> = Vec::new();
    let mut class_names = Vec::new();
    for (label, class_dir) in classes.iter().enumerate() {
        class_names.push(
            class_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        for file in sorted_entries(class_dir)?
            .into_iter()
            .filter(|f| is_image_file(f))
        {
            files.push((file, label));
        }
        if files.len() > MAX_IMAGES {
            return Err(DataError::invalid(
                dir,
                format!("more than {MAX_IMAGES} images; dataleaf reads fewer"),
            ));
        }
    }
    if files.is_empty() {
        return Err(DataError::invalid(
            dir,
            "no images found: an image folder holds one sub-folder per class with PNG or JPEG files",
        ));
    }
    let decoded: Vec<DynamicImage> = files.iter().map(|(f, _)| decode(f)).collect::<Result<_, _>>()?;
    let (width, height) = decoded[0].dimensions();
    if let Some(k) = decoded.iter().position(|im| im.dimensions() != (width, height)) {
        let (w, h) = decoded[k].dimensions();
        return Err(DataError::invalid(
            &files[k].0,
            format!(
                "is {w}x{h}, but {} is {width}x{height}; all images of a folder must have one size",
                files[0].0.display()
            ),
        ));
    }
    let colour = decoded.iter().any(|im| im.color().has_color());
    let channels = if colour { 3 } else { 1 };
    let plane = (width * height) as usize;
    let mut images = Vec::with_capacity(decoded.len() * channels * plane);
    for im in &decoded {
        if colour {
            let rgb = im.to_rgb8();
            // Interleaved RGB to channel planes (NCHW).
            for c in 0..3 {
                images.extend(rgb.pixels().map(|p| p.0[c] as f32 / 255.0));
            }
        } else {
            images.extend(im.to_luma8().pixels().map(|p| p.0[0] as f32 / 255.0));
        }
    }
    Ok(Dataset {
        name,
        channels,
        height: height as usize,
        width: width as usize,
        images,
        labels: files.iter().map(|(_, l)| *l).collect(),
        class_names,
    })
}
