//! Reading and writing model files: `NAME.json` (architecture) beside `NAME.safetensors` (weights).

use std::path::{Path, PathBuf};

use safetensors::{tensor::TensorView, Dtype, SafeTensors};

use super::arch::Architecture;
use super::network::{Tensor32, Weights};

/// Why a model could not be loaded or saved. Every message names the file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ModelError {
    pub path: PathBuf,
    pub message: String,
}

impl ModelError {
    pub fn new(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        ModelError {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }
}

/// Weights files larger than this are refused rather than read into memory.
const MAX_WEIGHTS_BYTES: u64 = 2 << 30;
const MAX_JSON_BYTES: u64 = 16 << 20;

fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>, ModelError> {
    let meta = std::fs::metadata(path).map_err(|e| ModelError::new(path, e.to_string()))?;
    if !meta.is_file() {
        return Err(ModelError::new(path, "not a file"));
    }
    if meta.len() > cap {
        return Err(ModelError::new(
            path,
            format!("file is {} bytes, more than the {cap} dataleaf reads", meta.len()),
        ));
    }
    std::fs::read(path).map_err(|e| ModelError::new(path, e.to_string()))
}

/// The weights file that goes with an architecture file: same stem, `.safetensors`.
pub fn weights_path(json: &Path) -> PathBuf {
    json.with_extension("safetensors")
}

pub fn read_architecture(path: &Path) -> Result<Architecture, ModelError> {
    let bytes = read_capped(path, MAX_JSON_BYTES)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| ModelError::new(path, "not UTF-8 text"))?;
    Architecture::from_json(text).map_err(|m| ModelError::new(path, m))
}

/// Parse safetensors bytes into f32 tensors (F32 as is, F64 narrowed; other dtypes refused).
pub fn parse_weights(bytes: &[u8], path: &Path) -> Result<Weights, ModelError> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| ModelError::new(path, format!("not a valid safetensors file: {e}")))?;
    let mut weights = Weights::new();
    for (name, view) in st.tensors() {
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F64 => raw
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
                .collect(),
            // Half precisions widen exactly.
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|b| super::protobuf::f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|b| super::protobuf::bf16_to_f32(u16::from_le_bytes([b[0], b[1]])))
                .collect(),
            other => {
                return Err(ModelError::new(
                    path,
                    format!(
                        "tensor {name:?} has dtype {other:?}; dataleaf reads F32, F64, F16 or BF16 (save with .float())"
                    ),
                ))
            }
        };
        weights.insert(
            name,
            Tensor32 {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok(weights)
}

/// Read a file of at most `MAX_WEIGHTS_BYTES` (an ONNX model holds its weights).
pub fn read_model_bytes(path: &Path) -> Result<Vec<u8>, ModelError> {
    read_capped(path, MAX_WEIGHTS_BYTES)
}

/// Read a small JSON file (an architecture, an ONNX model's sidecar) as text.
pub fn read_json_text(path: &Path) -> Result<String, ModelError> {
    let bytes = read_capped(path, MAX_JSON_BYTES)?;
    String::from_utf8(bytes).map_err(|_| ModelError::new(path, "not UTF-8 text"))
}

pub fn read_weights(path: &Path) -> Result<Weights, ModelError> {
    parse_weights(&read_capped(path, MAX_WEIGHTS_BYTES)?, path)
}

/// Write `NAME.json` and `NAME.safetensors` (F32, PyTorch names and layouts).
pub fn write_model(json: &Path, arch: &Architecture, weights: &Weights) -> Result<(), ModelError> {
    if let Some(dir) = json.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::new(dir, e.to_string()))?;
    }
    std::fs::write(json, arch.to_json() + "\n").map_err(|e| ModelError::new(json, e.to_string()))?;
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = weights
        .iter()
        .map(|(k, t)| {
            (
                k.clone(),
                t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                t.shape.clone(),
            )
        })
        .collect();
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(k, b, s)| Ok((k.clone(), TensorView::new(Dtype::F32, s.clone(), b)?)))
        .collect::<Result<_, safetensors::SafeTensorError>>()
        .map_err(|e| ModelError::new(json, e.to_string()))?;
    let out = weights_path(json);
    safetensors::serialize_to_file(views, None, &out).map_err(|e| ModelError::new(&out, e.to_string()))
}
