//! The architecture JSON of a model file (shared/DESIGN.md, "Model files"), and shape inference over it.

use serde::{Deserialize, Serialize};

use super::graph::Node;

/// Input image shape the network expects (NCHW without N).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl InputShape {
    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the network takes: an image (`{"channels", "height", "width"}`) or a vector of features
/// (`{"features": N}`, the 2-D plane models).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawInput", untagged)]
pub enum Input {
    Image(InputShape),
    Features { features: usize },
}

/// The `input` object as written, before it is known which kind it is (for one clear message).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    channels: Option<usize>,
    height: Option<usize>,
    width: Option<usize>,
    features: Option<usize>,
}

impl TryFrom<RawInput> for Input {
    type Error = String;
    fn try_from(r: RawInput) -> Result<Input, String> {
        match (r.channels, r.height, r.width, r.features) {
            (Some(channels), Some(height), Some(width), None) => Ok(Input::Image(InputShape {
                channels,
                height,
                width,
            })),
            (None, None, None, Some(features)) => Ok(Input::Features { features }),
            _ => Err(
                "input must be either {\"channels\", \"height\", \"width\"} (images) or {\"features\": N}"
                    .into(),
            ),
        }
    }
}

impl Input {
    /// The image shape, or None for a features input.
    pub fn image(&self) -> Option<InputShape> {
        match *self {
            Input::Image(s) => Some(s),
            Input::Features { .. } => None,
        }
    }
    /// Values per input.
    pub fn len(&self) -> usize {
        match *self {
            Input::Image(s) => s.len(),
            Input::Features { features } => features,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Values the normalisation has one mean and std for: channels, or features.
    fn normalized_values(&self) -> usize {
        match *self {
            Input::Image(s) => s.channels,
            Input::Features { features } => features,
        }
    }
    /// The shape of the activation the first layer takes.
    fn shape(&self) -> Shape {
        match *self {
            Input::Image(i) => Shape::Image(i.channels, i.height, i.width),
            Input::Features { features } => Shape::Flat(features),
        }
    }
}

/// What the outputs mean, and so which metric M the pullback G = J^T M J uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Logits of a softmax: M = diag p - p p^T (the local data matrix).
    #[default]
    Classification,
    /// Raw outputs: M = I, so G = J^T J, the pullback of the Euclidean metric.
    Regression,
}

impl Task {
    fn is_classification(&self) -> bool {
        *self == Task::Classification
    }
}

/// Per-channel normalisation the network applies to pixel inputs: (x - mean) / std.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalize {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// One layer. Layers with weights carry the PyTorch module name, so `<name>.weight` and `<name>.bias`
/// are the safetensors keys of an `nn.Sequential` state dict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Layer {
    Conv2d {
        name: String,
        #[serde(rename = "in")]
        in_channels: usize,
        #[serde(rename = "out")]
        out_channels: usize,
        kernel: usize,
        #[serde(default = "one")]
        stride: usize,
        #[serde(default)]
        padding: usize,
    },
    Linear {
        name: String,
        #[serde(rename = "in")]
        in_features: usize,
        #[serde(rename = "out")]
        out_features: usize,
    },
    Relu,
    Maxpool2d {
        kernel: usize,
        /// Defaults to the kernel size, as in PyTorch.
        #[serde(default)]
        stride: Option<usize>,
    },
    Avgpool2d {
        kernel: usize,
        #[serde(default)]
        stride: Option<usize>,
    },
    Flatten,
    /// Smooth activations (and leaky ReLU) beyond ReLU: the foliation theory assumes a piecewise
    /// linear network, so with sigmoid, tanh or GELU the distribution D_x need not be involutive.
    Sigmoid,
    Tanh,
    /// PyTorch's `nn.Softplus()`: log(1 + e^x), and x itself above the threshold 20.
    Softplus,
    /// The exact GELU, x Phi(x) (PyTorch's `nn.GELU()` default, not the tanh approximation).
    Gelu,
    LeakyRelu {
        #[serde(default = "leaky_slope")]
        negative_slope: f32,
    },
}

fn one() -> usize {
    1
}

/// PyTorch's default `nn.LeakyReLU` slope.
fn leaky_slope() -> f32 {
    0.01
}

/// What training produced this checkpoint; written by `dataleaf train`, optional for imported models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingRecord {
    pub arch: String,
    pub epoch: usize,
    pub seed: u64,
    pub learning_rate: f32,
    pub batch_size: usize,
    /// Accuracy on the full MNIST test set, in [0, 1].
    pub test_accuracy: f32,
    /// Wall time of this epoch's training, seconds.
    #[serde(default)]
    pub epoch_seconds: f32,
}

/// A model's architecture file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Architecture {
    pub name: String,
    pub input: Input,
    /// Absent means classification, so image model files read and write unchanged.
    #[serde(default, skip_serializing_if = "Task::is_classification")]
    pub task: Task,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<Normalize>,
    /// Class names (classification), or output names (regression, where they may be omitted).
    #[serde(default)]
    pub classes: Vec<String>,
    /// A sequential network: each layer takes the one before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<Layer>,
    /// A graph network (src/model/graph.rs): nodes with their inputs by name. A model has either
    /// `layers` or `nodes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<Node>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<TrainingRecord>,
}

/// Largest activation (values per image) a model may have: 2^28 f32 values, 1 GiB. An ImageNet
/// VGG's largest is 3.2 million.
pub const MAX_ACTIVATION: usize = 1 << 28;

/// The shape of the activation between layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// channels, height, width
    Image(usize, usize, usize),
    Flat(usize),
}

impl Shape {
    /// Values in the activation, or None when there are more than `MAX_ACTIVATION` (a nonsense
    /// architecture, or one whose activations would exhaust memory).
    pub fn checked_len(&self) -> Option<usize> {
        let n = match *self {
            Shape::Image(c, h, w) => c.checked_mul(h)?.checked_mul(w)?,
            Shape::Flat(n) => n,
        };
        (n <= MAX_ACTIVATION).then_some(n)
    }
    pub fn len(&self) -> usize {
        match *self {
            Shape::Image(c, h, w) => c * h * w,
            Shape::Flat(n) => n,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shape::Image(c, h, w) => write!(f, "{c}x{h}x{w}"),
            Shape::Flat(n) => write!(f, "{n}"),
        }
    }
}

impl Layer {
    /// Output shape for an input shape, or why the layer cannot take it.
    pub fn output_shape(&self, input: Shape) -> Result<Shape, String> {
        match (self, input) {
            (
                Layer::Conv2d {
                    in_channels,
                    out_channels,
                    kernel,
                    stride,
                    padding,
                    ..
                },
                Shape::Image(c, h, w),
            ) => {
                if *in_channels != c {
                    return Err(format!("expects {in_channels} input channels, gets {c}"));
                }
                if *kernel == 0 || *stride == 0 {
                    return Err("kernel and stride must be positive".into());
                }
                let padded = |n: usize| padding.checked_mul(2).and_then(|p| p.checked_add(n));
                let (Some(hp), Some(wp)) = (padded(h), padded(w)) else {
                    return Err(format!("padding {padding} is too large"));
                };
                if hp < *kernel || wp < *kernel {
                    return Err(format!("kernel {kernel} is larger than its {h}x{w} input"));
                }
                Ok(Shape::Image(
                    *out_channels,
                    (hp - kernel) / stride + 1,
                    (wp - kernel) / stride + 1,
                ))
            }
            (
                Layer::Linear {
                    in_features,
                    out_features,
                    ..
                },
                Shape::Flat(n),
            ) => {
                if *in_features != n {
                    return Err(format!("expects {in_features} inputs, gets {n}"));
                }
                Ok(Shape::Flat(*out_features))
            }
            (Layer::Relu, s) => Ok(s),
            (Layer::Sigmoid | Layer::Tanh | Layer::Softplus | Layer::Gelu | Layer::LeakyRelu { .. }, s) => {
                Ok(s)
            }
            (
                Layer::Maxpool2d { kernel, stride } | Layer::Avgpool2d { kernel, stride },
                Shape::Image(c, h, w),
            ) => {
                let s = stride.unwrap_or(*kernel);
                if *kernel == 0 || s == 0 {
                    return Err("kernel and stride must be positive".into());
                }
                if h < *kernel || w < *kernel {
                    return Err(format!("kernel {kernel} is larger than its {h}x{w} input"));
                }
                Ok(Shape::Image(c, (h - kernel) / s + 1, (w - kernel) / s + 1))
            }
            (Layer::Flatten, s) => Ok(Shape::Flat(s.len())),
            (Layer::Conv2d { .. } | Layer::Maxpool2d { .. } | Layer::Avgpool2d { .. }, Shape::Flat(n)) => {
                Err(format!(
                    "needs an image input but gets a flat vector of {n} (flatten comes too early?)"
                ))
            }
            (Layer::Linear { .. }, s @ Shape::Image(..)) => Err(format!(
                "needs a flat input but gets an image {s} (add a flatten layer before it)"
            )),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Layer::Conv2d { .. } => "conv2d",
            Layer::Linear { .. } => "linear",
            Layer::Relu => "relu",
            Layer::Maxpool2d { .. } => "maxpool2d",
            Layer::Avgpool2d { .. } => "avgpool2d",
            Layer::Flatten => "flatten",
            Layer::Sigmoid => "sigmoid",
            Layer::Tanh => "tanh",
            Layer::Softplus => "softplus",
            Layer::Gelu => "gelu",
            Layer::LeakyRelu { .. } => "leaky_relu",
        }
    }

    /// The PyTorch module name of a layer with weights.
    pub fn param_name(&self) -> Option<&str> {
        match self {
            Layer::Conv2d { name, .. } | Layer::Linear { name, .. } => Some(name),
            _ => None,
        }
    }

    /// Expected (weight, bias) shapes of a layer with weights, in PyTorch layout.
    pub fn param_shapes(&self) -> Option<(Vec<usize>, Vec<usize>)> {
        match *self {
            Layer::Conv2d {
                in_channels,
                out_channels,
                kernel,
                ..
            } => Some((
                vec![out_channels, in_channels, kernel, kernel],
                vec![out_channels],
            )),
            Layer::Linear {
                in_features,
                out_features,
                ..
            } => Some((vec![out_features, in_features], vec![out_features])),
            _ => None,
        }
    }
}

impl Architecture {
    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    /// The image shape, or a message saying this is a features model and where it opens.
    pub fn image_input(&self) -> Result<InputShape, String> {
        self.input.image().ok_or_else(|| {
            format!(
                "model {:?} takes {} input features, not images: open it in the plane view \
                 (dataleaf --plane --plane-model FILE) or walk it with `dataleaf simec`",
                self.name,
                self.input.len()
            )
        })
    }

    /// Number of outputs of the last layer (0 when the layers do not chain); a graph's, the classes.
    pub fn num_outputs(&self) -> usize {
        if self.is_graph() {
            return self.classes.len();
        }
        self.shapes()
            .ok()
            .and_then(|s| s.last().map(Shape::len))
            .unwrap_or(0)
    }

    /// The name of output `k`: the class name, else "output" (one output) or "output k".
    pub fn output_name(&self, k: usize) -> String {
        match self.classes.get(k) {
            Some(name) => name.clone(),
            None if self.num_outputs() == 1 => "output".into(),
            None => format!("output {k}"),
        }
    }

    /// Whether the network is a graph of nodes rather than a list of layers.
    pub fn is_graph(&self) -> bool {
        !self.nodes.is_empty()
    }

    /// Parse and check an architecture JSON text. `origin` names the file in messages.
    pub fn from_json(text: &str) -> Result<Architecture, String> {
        let arch: Architecture =
            serde_json::from_str(text).map_err(|e| format!("not a valid model architecture: {e}"))?;
        arch.validate()?;
        Ok(arch)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("architecture serialises")
    }

    /// Shapes after each layer, starting with the input: `layers.len() + 1` entries.
    pub fn shapes(&self) -> Result<Vec<Shape>, String> {
        let input = self.input.shape();
        if input.checked_len().is_none() {
            return Err(format!("input shape {input} is too large"));
        }
        let mut shapes = vec![input];
        for (k, layer) in self.layers.iter().enumerate() {
            let next = layer
                .output_shape(shapes[k])
                .map_err(|e| format!("layer {k} ({}): {e}", layer.kind()))?;
            if next.checked_len().is_none() {
                return Err(format!(
                    "layer {k} ({}): output {next} is too large",
                    layer.kind()
                ));
            }
            shapes.push(next);
        }
        Ok(shapes)
    }

    /// Check the architecture is self-consistent: shapes chain, the output has one logit per class
    /// (or, for regression, at least one output and a name per output if any are named),
    /// normalisation has one mean/std per channel or feature, weight names are unique.
    pub fn validate(&self) -> Result<(), String> {
        let input = self.input.shape();
        if input.checked_len().is_none() {
            return Err(format!("input shape {input} is too large"));
        }
        if self.input.is_empty() {
            return Err(match self.input {
                Input::Features { .. } => "input has 0 features; it needs at least 1".into(),
                Input::Image(_) => "input shape has a zero dimension".into(),
            });
        }
        if self.task == Task::Classification && self.classes.len() < 2 {
            return Err(format!("needs at least 2 classes, has {}", self.classes.len()));
        }
        if let Some(n) = &self.normalize {
            let c = self.input.normalized_values();
            let per = if self.input.image().is_some() {
                "channel"
            } else {
                "feature"
            };
            if n.mean.len() != c || n.std.len() != c {
                return Err(format!(
                    "normalize needs {c} mean and std values (one per {per}), has {} and {}",
                    n.mean.len(),
                    n.std.len()
                ));
            }
            if n.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) || n.mean.iter().any(|m| !m.is_finite()) {
                return Err("normalize std must be positive and finite, mean finite".into());
            }
        }
        if self.is_graph() {
            // A graph's shapes need its weights (a conv's come from its weight tensor): they are
            // checked when the network is built.
            if !self.layers.is_empty() {
                return Err("a model has either \"layers\" or \"nodes\", not both".into());
            }
            if self.input.image().is_none() {
                return Err("a graph model takes an image input".into());
            }
            return Ok(());
        }
        if self.layers.is_empty() {
            return Err("the model has no layers (or graph nodes)".into());
        }
        let shapes = self.shapes()?;
        let out = shapes[shapes.len() - 1];
        if self.task == Task::Regression {
            match out {
                Shape::Flat(0) => return Err("a regression network needs at least 1 output, has 0".into()),
                Shape::Flat(n) if self.classes.is_empty() || self.classes.len() == n => {}
                Shape::Flat(n) => {
                    return Err(format!(
                        "the network outputs {n} values but {} output names are given",
                        self.classes.len()
                    ))
                }
                s @ Shape::Image(..) => {
                    return Err(format!("the network outputs an image {s}; add a flatten layer"))
                }
            }
        } else if out != Shape::Flat(self.classes.len()) {
            return Err(format!(
                "the network outputs {out} values but there are {} classes",
                self.classes.len()
            ));
        }
        let mut names: Vec<&str> = self.layers.iter().filter_map(Layer::param_name).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("two layers are both named {:?}", w[0]));
        }
        Ok(())
    }

    /// Whether every nonlinearity is piecewise linear (ReLU, leaky ReLU, max-pool), as the foliation
    /// theory assumes.
    pub fn is_piecewise_linear(&self) -> bool {
        !self
            .layers
            .iter()
            .any(|l| matches!(l, Layer::Sigmoid | Layer::Tanh | Layer::Softplus | Layer::Gelu))
            && !self.graph_is_smooth()
    }

    /// A graph with a smooth operator, or a product of two values neither of which is a constant.
    fn graph_is_smooth(&self) -> bool {
        use super::graph::NodeOp;
        let ids = super::graph::resolve_ids(&self.nodes);
        let constants: Vec<&str> = self
            .nodes
            .iter()
            .zip(&ids)
            .filter(|(n, _)| matches!(n.op, NodeOp::Constant { .. }))
            .map(|(_, (id, _))| id.as_str())
            .collect();
        self.nodes.iter().zip(&ids).any(|(n, (_, inputs))| {
            n.op.is_smooth()
                || (matches!(n.op, NodeOp::Mul | NodeOp::Div)
                    && inputs.iter().all(|i| !constants.contains(&i.as_str())))
        })
    }
}
