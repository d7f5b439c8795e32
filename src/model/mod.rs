//! Models: the architecture file, the weights, and the two implementations of one network —
//! `Classifier` on candle (the reference, with autograd) and `Network` on plain buffers (the fast
//! forward and reverse passes that geometry and training use).

pub mod arch;
pub mod classifier;
pub mod conv_forward;
pub mod files;
pub mod gather;
pub mod graph;
pub mod graph_kernels;
pub mod graph_net;
pub mod matmul;
pub mod mlp;
pub mod network;
pub mod onnx;
pub mod packed;
pub mod protobuf;
pub mod scratch;
pub mod sparse;
pub mod team;
pub mod train;
pub mod zoo;

use std::path::{Path, PathBuf};

pub use arch::{Architecture, Input, InputShape, Layer, Task};
pub use classifier::Classifier;
pub use files::ModelError;
pub use graph::{Node, NodeOp};
pub use network::{Network, Tensor32, Weights};

use crate::data::Dataset;

/// The model `dataleaf` opens when none is named.
pub const DEFAULT_MODEL: &str = "mnist-medium-cnn";

const EMBEDDED_JSON: &[u8] = include_bytes!("../../assets/models/mnist-medium-cnn.json");
const EMBEDDED_WEIGHTS: &[u8] = include_bytes!("../../assets/models/mnist-medium-cnn.safetensors");

/// The folder of shipped models in the source tree.
pub fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models")
}

/// A loaded model: its architecture and both implementations over the same weights.
pub struct Model {
    pub arch: Architecture,
    pub network: Network,
    pub classifier: Classifier,
    /// Where it was loaded from, for titles and messages.
    pub source: PathBuf,
}

impl Model {
    /// Build from an architecture and weights; `source` names the file in messages.
    pub fn from_parts(arch: Architecture, weights: &Weights, source: &Path) -> Result<Model, ModelError> {
        Model::build(arch, weights, source, &files::weights_path(source))
    }

    /// `wpath` names the weights in messages about them.
    fn build(
        arch: Architecture,
        weights: &Weights,
        source: &Path,
        wpath: &Path,
    ) -> Result<Model, ModelError> {
        arch.validate().map_err(|m| ModelError::new(source, m))?;
        // The image engines below take images only; features models open in the plane view.
        arch.image_input().map_err(|m| ModelError::new(source, m))?;
        // A graph's structure is checked with its weights; its messages name the graph's file.
        let wpath = if arch.is_graph() {
            source.to_path_buf()
        } else {
            wpath.to_path_buf()
        };
        let network = Network::new(&arch, weights).map_err(|m| ModelError::new(&wpath, m))?;
        let classifier =
            Classifier::new(&arch, weights).map_err(|e| ModelError::new(&wpath, e.to_string()))?;
        Ok(Model {
            arch,
            network,
            classifier,
            source: source.to_path_buf(),
        })
    }

    /// Load `NAME.onnx`, with `NAME.json` beside it (when there is one) for the normalisation and
    /// class names that ONNX does not carry.
    pub fn load_onnx(path: &Path) -> Result<Model, ModelError> {
        let bytes = files::read_model_bytes(path)?;
        Model::from_onnx_bytes(&bytes, path)
    }

    /// An ONNX model from its bytes; `path` names it in messages and locates its sidecar.
    pub fn from_onnx_bytes(bytes: &[u8], path: &Path) -> Result<Model, ModelError> {
        let lowered = onnx::lower(bytes, path.parent()).map_err(|m| ModelError::new(path, m))?;
        let sidecar_path = path.with_extension("json");
        let sidecar = if sidecar_path.is_file() {
            let text = files::read_json_text(&sidecar_path)?;
            serde_json::from_str::<Sidecar>(&text).map_err(|e| {
                ModelError::new(
                    &sidecar_path,
                    format!("not a valid sidecar for {}: {e}", path.display()),
                )
            })?
        } else {
            Sidecar::default()
        };
        let classes = match sidecar.classes {
            Some(c) if c.len() != lowered.outputs => {
                return Err(ModelError::new(
                    &sidecar_path,
                    format!(
                        "names {} classes, but the model {} outputs {}",
                        c.len(),
                        path.display(),
                        lowered.outputs
                    ),
                ))
            }
            Some(c) => c,
            None => (0..lowered.outputs).map(|k| k.to_string()).collect(),
        };
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let [channels, height, width] = lowered.input;
        let arch = Architecture {
            name: sidecar.name.unwrap_or(if lowered.name.is_empty() {
                stem
            } else {
                lowered.name
            }),
            input: Input::Image(InputShape {
                channels,
                height,
                width,
            }),
            task: Task::Classification,
            normalize: sidecar.normalize,
            classes,
            layers: Vec::new(),
            nodes: lowered.nodes,
            training: None,
        };
        if let Err(m) = arch.validate() {
            let at = if m.starts_with("normalize") {
                &sidecar_path
            } else {
                path
            };
            return Err(ModelError::new(at, m));
        }
        Model::build(arch, &lowered.weights, path, path)
    }

    /// Load `NAME.json` and the `NAME.safetensors` beside it.
    pub fn load(json: &Path) -> Result<Model, ModelError> {
        let onnx_beside = json.with_extension("onnx");
        if onnx_beside.is_file() && is_sidecar(json) {
            return Model::load_onnx(&onnx_beside);
        }
        let arch = files::read_architecture(json)?;
        let wpath = files::weights_path(json);
        if !wpath.exists() {
            return Err(ModelError::new(
                &wpath,
                format!("weights file not found (expected beside {})", json.display()),
            ));
        }
        let weights = files::read_weights(&wpath)?;
        Model::from_parts(arch, &weights, json)
    }

    /// The default model, compiled into the binary so it runs anywhere.
    pub fn embedded_default() -> Result<Model, ModelError> {
        let source = Path::new("embedded:mnist-medium-cnn.json");
        let text = std::str::from_utf8(EMBEDDED_JSON).map_err(|_| ModelError::new(source, "not UTF-8"))?;
        let arch = Architecture::from_json(text).map_err(|m| ModelError::new(source, m))?;
        let weights = files::parse_weights(EMBEDDED_WEIGHTS, &files::weights_path(source))?;
        Model::from_parts(arch, &weights, source)
    }

    /// Open a model by path, or by the name of a shipped model (`mnist-medium-cnn`, ...).
    pub fn open(spec: &str) -> Result<Model, ModelError> {
        if spec == DEFAULT_MODEL {
            return Model::embedded_default();
        }
        let path = Path::new(spec);
        let shipped = models_dir().join(format!("{spec}.json"));
        if !path.exists() && !spec.contains(['/', '\\']) && shipped.exists() {
            return Model::load(&shipped);
        }
        if path.is_dir() {
            return Err(ModelError::new(path, "is a folder; name the model's .json file"));
        }
        if !path.exists() {
            return Err(ModelError::new(
                path,
                format!(
                    "no such file, and not a shipped model (those are in {})",
                    models_dir().display()
                ),
            ));
        }
        if path.extension().is_some_and(|e| e == "safetensors") {
            return Model::load(&path.with_extension("json"));
        }
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx")) {
            return Model::load_onnx(path);
        }
        Model::load(path)
    }

    pub fn name(&self) -> &str {
        &self.arch.name
    }

    pub fn num_classes(&self) -> usize {
        self.arch.num_classes()
    }

    /// The name of class `k`, or its number when the model names fewer classes.
    pub fn class_name(&self, k: usize) -> String {
        self.arch.classes.get(k).cloned().unwrap_or_else(|| k.to_string())
    }

    /// Whether images of this dataset can go through the model; the message says what differs.
    pub fn check_dataset(&self, data: &Dataset) -> Result<(), String> {
        let i = self.arch.image_input()?;
        if (data.channels, data.height, data.width) != (i.channels, i.height, i.width) {
            return Err(format!(
                "model {} takes {}x{}x{} images, dataset {} has {}x{}x{}",
                self.arch.name,
                i.channels,
                i.height,
                i.width,
                data.name,
                data.channels,
                data.height,
                data.width
            ));
        }
        if data.num_classes() > self.num_classes() {
            return Err(format!(
                "dataset {} has {} classes, model {} only {}",
                data.name,
                data.num_classes(),
                self.arch.name,
                self.num_classes()
            ));
        }
        Ok(())
    }

    /// Predicted class of every image (fast path, all cores).
    pub fn predict_all(&self, data: &Dataset) -> Vec<usize> {
        self.network.predict(&data.images)
    }

    /// Fraction of images classified as their label.
    pub fn accuracy(&self, data: &Dataset) -> f64 {
        accuracy(&self.network, data)
    }
}

/// What an ONNX model's JSON sidecar may say (the same keys as a JSON model file).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Sidecar {
    name: Option<String>,
    normalize: Option<arch::Normalize>,
    classes: Option<Vec<String>>,
}

/// Whether a JSON file beside an `.onnx` is its sidecar rather than a model of its own.
fn is_sidecar(json: &Path) -> bool {
    std::fs::read_to_string(json)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v.get("layers").is_none() && v.get("nodes").is_none())
}

/// Fraction of a dataset's images that the network classifies as their label.
pub fn accuracy(network: &Network, data: &Dataset) -> f64 {
    let hits = network
        .predict(&data.images)
        .iter()
        .zip(&data.labels)
        .filter(|(p, l)| p == l)
        .count();
    hits as f64 / data.len().max(1) as f64
}

/// Index of the largest value (the first on ties; NaN never wins).
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] || values[best].is_nan() {
            best = i;
        }
    }
    best
}
