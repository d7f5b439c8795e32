//! IDX files (the MNIST format), raw or gzipped, from a path or from bytes in memory.
//!
//! Images: magic 0x00000803 (u8 data, 3 dimensions: count, rows, cols); labels: magic 0x00000801
//! (u8 data, 1 dimension: count). All integers are big-endian. Gzip is detected by its magic bytes
//! 1f 8b, never by the file name.

use std::fs::File;
use std::io::{Cursor, ErrorKind, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;

use super::DataError;

/// Magic number of an IDX file of u8 images (count x rows x cols).
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of u8 labels (count).
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;
/// Largest payload a header may declare; checked before anything is allocated.
pub const MAX_IDX_BYTES: u64 = 1 << 30;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Images read from an IDX file: `count` images of `rows x cols`, pixels scaled to [0, 1],
/// stored image after image, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxImages {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<f32>,
}

/// Read an IDX image file (raw or gzipped).
pub fn read_idx_images(path: impl AsRef<Path>) -> Result<IdxImages, DataError> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    read_images_from(file, path)
}

/// Read an IDX label file (raw or gzipped). Labels are returned as class indices.
pub fn read_idx_labels(path: impl AsRef<Path>) -> Result<Vec<usize>, DataError> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    read_labels_from(file, path)
}

/// Parse an IDX image file held in memory; `name` is only used in error messages.
pub fn idx_images_from_bytes(bytes: &[u8], name: impl AsRef<Path>) -> Result<IdxImages, DataError> {
    read_images_from(bytes, name.as_ref())
}

/// Parse an IDX label file held in memory; `name` is only used in error messages.
pub fn idx_labels_from_bytes(bytes: &[u8], name: impl AsRef<Path>) -> Result<Vec<usize>, DataError> {
    read_labels_from(bytes, name.as_ref())
}

fn read_images_from(source: impl Read, name: &Path) -> Result<IdxImages, DataError> {
    let mut stream = IdxStream::new(source, name)?;
    stream.expect_magic(IDX_IMAGES_MAGIC, "image")?;
    let dims = stream.read_dims(3, "image")?;
    let (count, rows, cols) = (dims[0], dims[1], dims[2]);
    if count == 0 {
        return Err(stream.invalid("empty: the header declares 0 images"));
    }
    if rows == 0 || cols == 0 {
        return Err(stream.invalid(format!("the header declares images of {rows}x{cols} pixels")));
    }
    let what = format!("{count} images of {rows}x{cols}");
    // Three u32 factors can overflow u64; an overflow is certainly over the cap.
    let declared = count
        .checked_mul(rows)
        .and_then(|n| n.checked_mul(cols))
        .unwrap_or(u64::MAX);
    let bytes = stream.read_payload(declared, &what, "image data")?;
    let pixels = bytes.iter().map(|&b| f32::from(b) / 255.0).collect();
    Ok(IdxImages {
        count: count as usize,
        rows: rows as usize,
        cols: cols as usize,
        pixels,
    })
}

fn read_labels_from(source: impl Read, name: &Path) -> Result<Vec<usize>, DataError> {
    let mut stream = IdxStream::new(source, name)?;
    stream.expect_magic(IDX_LABELS_MAGIC, "label")?;
    let count = stream.read_dims(1, "label")?[0];
    if count == 0 {
        return Err(stream.invalid("empty: the header declares 0 labels"));
    }
    let what = format!("{count} labels");
    let bytes = stream.read_payload(count, &what, "label data")?;
    Ok(bytes.into_iter().map(usize::from).collect())
}

/// A byte stream over an IDX file that transparently un-gzips, and turns read errors into
/// `DataError`s naming the file.
struct IdxStream<'a> {
    reader: Box<dyn Read + 'a>,
    name: &'a Path,
    gzip: bool,
    /// Bytes of the (decompressed) file consumed so far, for "truncated" messages.
    consumed: u64,
}

impl<'a> IdxStream<'a> {
    fn new(source: impl Read + 'a, name: &'a Path) -> Result<Self, DataError> {
        let mut source = source;
        // Peek at two bytes to recognise gzip, then put them back in front of the stream.
        let mut prefix = [0u8; 2];
        let got = read_up_to(&mut source, &mut prefix).map_err(|e| DataError::io(name, e))?;
        let head = Cursor::new(prefix[..got].to_vec()).chain(source);
        let gzip = got == 2 && prefix == GZIP_MAGIC;
        // MultiGzDecoder: concatenated gzip members are valid gzip, and garbage after the
        // stream is reported instead of silently ignored.
        let reader: Box<dyn Read + 'a> = if gzip {
            Box::new(MultiGzDecoder::new(head))
        } else {
            Box::new(head)
        };
        Ok(IdxStream {
            reader,
            name,
            gzip,
            consumed: 0,
        })
    }

    fn invalid(&self, message: impl Into<String>) -> DataError {
        DataError::invalid(self.name, message)
    }

    fn read_error(&self, e: std::io::Error) -> DataError {
        // flate2 reports bad headers, bad deflate data, CRC mismatches and early ends with
        // these kinds; anything else is a genuine I/O failure of the underlying file.
        let corrupt = matches!(
            e.kind(),
            ErrorKind::InvalidInput | ErrorKind::InvalidData | ErrorKind::UnexpectedEof
        );
        if self.gzip && corrupt {
            self.invalid(format!("corrupt or truncated gzip stream ({e})"))
        } else {
            DataError::io(self.name, e)
        }
    }

    /// Fill `buf` completely, or say the header is truncated.
    fn read_header_bytes(&mut self, buf: &mut [u8], kind: &str, header_len: usize) -> Result<(), DataError> {
        let got = read_up_to(&mut self.reader, buf).map_err(|e| self.read_error(e))?;
        self.consumed += got as u64;
        if got < buf.len() {
            let total = self.consumed;
            let suffix = if self.gzip { " after decompression" } else { "" };
            return Err(self.invalid(format!(
                "truncated header: an IDX {kind} file starts with a {header_len}-byte header \
                 but this one holds only {total} bytes{suffix}"
            )));
        }
        Ok(())
    }

    fn expect_magic(&mut self, expected: u32, kind: &str) -> Result<(), DataError> {
        let mut buf = [0u8; 4];
        let header_len = if expected == IDX_IMAGES_MAGIC { 16 } else { 8 };
        self.read_header_bytes(&mut buf, kind, header_len)?;
        let magic = u32::from_be_bytes(buf);
        if magic == expected {
            return Ok(());
        }
        Err(self.invalid(format!(
            "not an IDX {kind} file: magic 0x{magic:08x}, expected 0x{expected:08x}{}",
            describe_magic(magic, self.gzip)
        )))
    }

    /// Read `n` big-endian u32 dimensions after the magic.
    fn read_dims(&mut self, n: usize, kind: &str) -> Result<Vec<u64>, DataError> {
        let header_len = 4 + 4 * n;
        let mut dims = Vec::with_capacity(n);
        for _ in 0..n {
            let mut buf = [0u8; 4];
            self.read_header_bytes(&mut buf, kind, header_len)?;
            dims.push(u64::from(u32::from_be_bytes(buf)));
        }
        Ok(dims)
    }

    /// Read exactly `declared` bytes of payload and check nothing follows them.
    fn read_payload(&mut self, declared: u64, what: &str, payload: &str) -> Result<Vec<u8>, DataError> {
        if declared > MAX_IDX_BYTES {
            return Err(self.invalid(format!(
                "the header declares {what} ({}), more than the {} limit; refusing to load it",
                bytes_text(declared),
                bytes_text(MAX_IDX_BYTES)
            )));
        }
        // take(declared + 1): one extra byte is enough to detect trailing data, and a gzip bomb
        // cannot make us decompress (or allocate) more than that.
        let mut bytes = Vec::new();
        (&mut self.reader)
            .take(declared + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.read_error(e))?;
        let got = bytes.len() as u64;
        let suffix = if self.gzip { " after decompression" } else { "" };
        if got < declared {
            return Err(self.invalid(format!(
                "truncated: the header declares {what} ({declared} bytes) but the file holds \
                 only {got} bytes of {payload}{suffix}"
            )));
        }
        if got > declared {
            return Err(self.invalid(format!(
                "trailing data: the file holds more than the {declared} bytes of {payload} its \
                 header declares ({what}){suffix}"
            )));
        }
        Ok(bytes)
    }
}

/// Read until `buf` is full or the stream ends; returns how many bytes were read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A hint about what a wrong magic number most likely means.
fn describe_magic(magic: u32, gzip: bool) -> String {
    match magic {
        IDX_IMAGES_MAGIC => " (this is an IDX image file)".to_string(),
        IDX_LABELS_MAGIC => " (this is an IDX label file)".to_string(),
        // IDX magics are 00 00 <type> <ndims>; anything else is not IDX at all.
        m if m >> 16 == 0 => " (an IDX file of another type or shape; only u8 data is supported)".to_string(),
        _ if gzip => " (the gzip content is not an IDX file)".to_string(),
        _ => " (neither a gzip nor a raw IDX file)".to_string(),
    }
}

/// "1.0 GiB", "7.5 MiB", "123 bytes".
fn bytes_text(n: u64) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    const MIB: f64 = (1u64 << 20) as f64;
    let x = n as f64;
    if x >= GIB {
        format!("{:.1} GiB", x / GIB)
    } else if x >= MIB {
        format!("{:.1} MiB", x / MIB)
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use flate2::Compression;
    use std::io::Write;
    use std::path::PathBuf;

    fn images_file(count: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for word in [IDX_IMAGES_MAGIC, count, rows, cols] {
            v.extend_from_slice(&word.to_be_bytes());
        }
        v.extend_from_slice(pixels);
        v
    }

    fn labels_file(labels: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&IDX_LABELS_MAGIC.to_be_bytes());
        v.extend_from_slice(&(labels.len() as u32).to_be_bytes());
        v.extend_from_slice(labels);
        v
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn image_err(bytes: &[u8]) -> String {
        idx_images_from_bytes(bytes, "some/images.idx")
            .unwrap_err()
            .to_string()
    }

    fn label_err(bytes: &[u8]) -> String {
        idx_labels_from_bytes(bytes, "some/labels.idx")
            .unwrap_err()
            .to_string()
    }

    fn assert_contains(message: &str, parts: &[&str]) {
        for part in parts {
            assert!(message.contains(part), "{message:?} should contain {part:?}");
        }
    }

    fn temp_path(tag: &str) -> PathBuf {
        let unique = format!("dataleaf-idx-{}-{tag}", std::process::id());
        std::env::temp_dir().join(unique)
    }

    #[test]
    fn raw_round_trip() {
        let pixels: Vec<u8> = (0..12).map(|i| (i * 20) as u8).collect();
        let got = idx_images_from_bytes(&images_file(3, 2, 2, &pixels), "x").unwrap();
        assert_eq!((got.count, got.rows, got.cols), (3, 2, 2));
        assert_eq!(got.pixels.len(), 12);
        assert_eq!(got.pixels[0], 0.0);
        assert_eq!(got.pixels[1], 20.0 / 255.0);
        let labels = idx_labels_from_bytes(&labels_file(&[7, 0, 9]), "y").unwrap();
        assert_eq!(labels, vec![7, 0, 9]);
    }

    #[test]
    fn gzip_round_trip_and_full_scale() {
        let pixels = [0u8, 255, 128, 1];
        let got = idx_images_from_bytes(&gzip(&images_file(1, 2, 2, &pixels)), "x.gz").unwrap();
        assert_eq!(got.pixels, vec![0.0, 1.0, 128.0 / 255.0, 1.0 / 255.0]);
        let labels = idx_labels_from_bytes(&gzip(&labels_file(&[3, 4])), "y.gz").unwrap();
        assert_eq!(labels, vec![3, 4]);
    }

    #[test]
    fn round_trip_through_files_detects_gzip_by_content() {
        // A gzipped file without .gz and a raw file with .gz both load.
        let raw_named_gz = temp_path("raw.gz");
        let gz_named_raw = temp_path("gz-raw");
        let bytes = images_file(2, 1, 3, &[1, 2, 3, 4, 5, 6]);
        std::fs::write(&raw_named_gz, &bytes).unwrap();
        std::fs::write(&gz_named_raw, gzip(&bytes)).unwrap();
        let a = read_idx_images(&raw_named_gz);
        let b = read_idx_images(&gz_named_raw);
        let _ = std::fs::remove_file(&raw_named_gz);
        let _ = std::fs::remove_file(&gz_named_raw);
        assert_eq!(a.unwrap(), b.unwrap());
    }

    #[test]
    fn missing_file_names_the_path() {
        let path = temp_path("does-not-exist-images");
        let e = read_idx_images(&path).unwrap_err().to_string();
        assert_contains(&e, &[&path.display().to_string(), "No such file"]);
        let e = read_idx_labels(&path).unwrap_err().to_string();
        assert_contains(&e, &[&path.display().to_string(), "No such file"]);
    }

    #[test]
    fn garbage_that_is_not_gzip() {
        let e = image_err(b"<html>hello, this is not an IDX file</html>");
        assert_contains(
            &e,
            &[
                "some/images.idx",
                "not an IDX image file",
                "magic 0x3c68746d",
                "expected 0x00000803",
                "neither a gzip nor a raw IDX",
            ],
        );
    }

    #[test]
    fn corrupt_gzip() {
        let mut bytes = gzip(&images_file(1, 2, 2, &[1, 2, 3, 4]));
        // Break the deflate data right after the 10-byte gzip header.
        for b in &mut bytes[10..16] {
            *b ^= 0xff;
        }
        let e = image_err(&bytes);
        assert_contains(&e, &["some/images.idx", "corrupt or truncated gzip stream"]);
    }

    #[test]
    fn gzip_with_bad_header() {
        let e = label_err(&[0x1f, 0x8b, 0xff, 0xff, 0, 0]);
        assert_contains(&e, &["some/labels.idx", "gzip stream"]);
    }

    #[test]
    fn truncated_gzip() {
        let bytes = gzip(&images_file(4, 8, 8, &[7; 256]));
        let e = image_err(&bytes[..bytes.len() / 2]);
        assert_contains(&e, &["some/images.idx", "corrupt or truncated gzip stream"]);
    }

    #[test]
    fn gzip_with_bad_crc() {
        let mut bytes = gzip(&labels_file(&[1, 2, 3]));
        let n = bytes.len();
        // The CRC32 sits in the 8-byte trailer; the deflate data stays valid.
        bytes[n - 8] ^= 0xff;
        let e = label_err(&bytes);
        assert_contains(&e, &["some/labels.idx", "corrupt or truncated gzip stream"]);
    }

    #[test]
    fn wrong_magic_both_ways() {
        let e = image_err(&labels_file(&[1, 2]));
        assert_contains(
            &e,
            &[
                "some/images.idx",
                "not an IDX image file: magic 0x00000801, expected 0x00000803",
                "label file",
            ],
        );
        let e = label_err(&images_file(1, 1, 1, &[0]));
        assert_contains(
            &e,
            &[
                "some/labels.idx",
                "not an IDX label file: magic 0x00000803, expected 0x00000801",
                "image file",
            ],
        );
        // A float IDX file: right family, unsupported type.
        let e = image_err(&[0, 0, 0x0d, 3, 0, 0, 0, 1]);
        assert_contains(&e, &["magic 0x00000d03", "only u8"]);
        // Gzipped garbage.
        let e = image_err(&gzip(b"PK\x03\x04 a zip file"));
        assert_contains(
            &e,
            &[
                "some/images.idx",
                "not an IDX image file",
                "gzip content is not an IDX file",
            ],
        );
    }

    #[test]
    fn truncated_header() {
        let full = images_file(1, 1, 1, &[0]);
        let e = image_err(&full[..10]);
        assert_contains(
            &e,
            &[
                "some/images.idx",
                "truncated header",
                "16-byte header",
                "only 10 bytes",
            ],
        );
        let e = image_err(&[]);
        assert_contains(&e, &["some/images.idx", "truncated header", "only 0 bytes"]);
        let e = label_err(&labels_file(&[1])[..6]);
        assert_contains(
            &e,
            &[
                "some/labels.idx",
                "truncated header",
                "8-byte header",
                "only 6 bytes",
            ],
        );
        let e = image_err(&gzip(&full[..7]));
        assert_contains(&e, &["truncated header", "only 7 bytes after decompression"]);
    }

    #[test]
    fn truncated_data() {
        let mut bytes = images_file(10000, 28, 28, &[]);
        bytes.extend_from_slice(&[0; 123]);
        let e = image_err(&bytes);
        assert_contains(
            &e,
            &["some/images.idx", "truncated: the header declares 10000 images of 28x28 (7840000 bytes) but the file holds only 123 bytes of image data"],
        );
        let mut bytes = labels_file(&[1, 2, 3]);
        bytes.truncate(bytes.len() - 1);
        let e = label_err(&gzip(&bytes));
        assert_contains(
            &e,
            &[
                "some/labels.idx",
                "3 labels (3 bytes)",
                "only 2 bytes of label data after decompression",
            ],
        );
    }

    #[test]
    fn trailing_bytes() {
        let mut bytes = images_file(1, 2, 2, &[1, 2, 3, 4]);
        bytes.push(0);
        let e = image_err(&bytes);
        assert_contains(
            &e,
            &[
                "some/images.idx",
                "trailing data",
                "4 bytes of image data",
                "1 images of 2x2",
            ],
        );
        let mut bytes = labels_file(&[1, 2]);
        bytes.extend_from_slice(b"junk");
        let e = label_err(&gzip(&bytes));
        assert_contains(&e, &["some/labels.idx", "trailing data", "2 bytes of label data"]);
    }

    #[test]
    fn garbage_after_gzip_stream() {
        let mut bytes = gzip(&labels_file(&[1, 2]));
        bytes.extend_from_slice(b"garbage after the gzip member");
        let e = label_err(&bytes);
        assert_contains(&e, &["some/labels.idx", "gzip stream"]);
    }

    #[test]
    fn declared_size_over_the_cap_is_refused_before_reading() {
        // 65536 * 65536 * 65536 bytes declared, nothing behind it.
        let e = image_err(&images_file(65536, 65536, 65536, &[]));
        assert_contains(
            &e,
            &[
                "some/images.idx",
                "65536 images of 65536x65536",
                "more than the 1.0 GiB limit",
            ],
        );
        // Just over the cap, declared as labels.
        let mut bytes = IDX_LABELS_MAGIC.to_be_bytes().to_vec();
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        let e = label_err(&bytes);
        assert_contains(&e, &["some/labels.idx", "4294967295 labels", "limit"]);
    }

    #[test]
    fn gzip_bomb_stops_after_the_declared_size() {
        // 1 label declared, 10 MiB of zeros behind it: rejected as trailing data after reading
        // at most 2 bytes of it.
        let mut bytes = labels_file(&[1]);
        bytes.extend(std::iter::repeat_n(0u8, 10 << 20));
        let e = label_err(&gzip(&bytes));
        assert_contains(&e, &["trailing data", "1 bytes of label data"]);
    }

    #[test]
    fn zero_sizes() {
        let e = image_err(&images_file(0, 28, 28, &[]));
        assert_contains(&e, &["some/images.idx", "empty", "0 images"]);
        let e = image_err(&images_file(5, 0, 28, &[]));
        assert_contains(&e, &["some/images.idx", "0x28 pixels"]);
        let e = label_err(&labels_file(&[]));
        assert_contains(&e, &["some/labels.idx", "empty", "0 labels"]);
    }
}
