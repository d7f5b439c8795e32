//! The architectures `dataleaf train` knows, in the model-file format.

use super::arch::{Architecture, Input, InputShape, Layer, Normalize, Task};
use super::graph::{self, Node, NodeOp};
use super::network::{Tensor32, Weights};

/// MNIST normalisation used by the papers (mean 0.1307, std 0.3081).
fn mnist_normalize() -> Option<Normalize> {
    Some(Normalize {
        mean: vec![0.1307],
        std: vec![0.3081],
    })
}

fn conv(name: &str, cin: usize, cout: usize, kernel: usize, padding: usize) -> Layer {
    Layer::Conv2d {
        name: name.into(),
        in_channels: cin,
        out_channels: cout,
        kernel,
        stride: 1,
        padding,
    }
}

fn linear(name: &str, nin: usize, nout: usize) -> Layer {
    Layer::Linear {
        name: name.into(),
        in_features: nin,
        out_features: nout,
    }
}

fn maxpool() -> Layer {
    Layer::Maxpool2d {
        kernel: 2,
        stride: None,
    }
}

/// The architectures by the names `dataleaf train --arch` takes.
pub const ARCHITECTURES: [&str; 3] = ["medium-cnn", "lenet", "mlp"];

/// An MNIST architecture by name; layer names are the indices of the equivalent `nn.Sequential`.
pub fn mnist_architecture(arch: &str) -> Option<Architecture> {
    use Layer::{Flatten, Relu};
    let layers = match arch {
        // The papers' medium CNN (shared/REFERENCE.md section 4).
        "medium-cnn" => vec![
            conv("0", 1, 32, 3, 0),
            Relu,
            conv("2", 32, 64, 3, 0),
            Relu,
            maxpool(),
            Flatten,
            linear("6", 9216, 128),
            Relu,
            linear("8", 128, 10),
        ],
        // LeNet-5 with ReLU and max-pooling, padded so the 28x28 input keeps its size.
        "lenet" => vec![
            conv("0", 1, 6, 5, 2),
            Relu,
            maxpool(),
            conv("3", 6, 16, 5, 0),
            Relu,
            maxpool(),
            Flatten,
            linear("7", 400, 120),
            Relu,
            linear("9", 120, 84),
            Relu,
            linear("11", 84, 10),
        ],
        "mlp" => vec![
            Flatten,
            linear("1", 784, 256),
            Relu,
            linear("3", 256, 128),
            Relu,
            linear("5", 128, 10),
        ],
        _ => return None,
    };
    Some(Architecture {
        name: format!("mnist-{arch}"),
        input: Input::Image(InputShape {
            channels: 1,
            height: 28,
            width: 28,
        }),
        task: Task::Classification,
        normalize: mnist_normalize(),
        classes: (0..10).map(|d| d.to_string()).collect(),
        layers,
        nodes: Vec::new(),
        training: None,
    })
}

/// The models `dataleaf bench --sizes` times, growing in input size n and class count C:
/// (name, input channels/height/width, classes).
pub const SCALING: [(&str, [usize; 3], usize); 4] = [
    ("cifar-vgg", [3, 32, 32], 10),
    ("cifar-vgg", [3, 32, 32], 100),
    ("tiny-imagenet-vgg", [3, 64, 64], 200),
    ("imagenet-vgg", [3, 224, 224], 1000),
];

/// A VGG-style ReLU network for an image shape and class count: blocks of padded 3x3 convolutions
/// and a 2x2 max-pool, then a linear classifier. CIFAR and Tiny-ImageNet sizes use two
/// convolutions per block and a hidden layer; the ImageNet size one convolution per block, after a
/// stride-2 first convolution, so a step stays within seconds on a laptop.
pub fn scaling_architecture(name: &str, input: [usize; 3], classes: usize) -> Architecture {
    use Layer::{Flatten, Relu};
    let [channels, height, width] = input;
    let mut layers = Vec::new();
    let mut index = 0;
    let mut next_name = || {
        index += 1;
        (index - 1).to_string()
    };
    let (widths, convs_per_block, hidden): (&[usize], usize, Option<usize>) = if height >= 128 {
        (&[16, 32, 64, 128, 128], 1, None)
    } else {
        (&[32, 64, 128], 2, Some(256))
    };
    let (mut c, mut h, mut w) = (channels, height, width);
    if height >= 128 {
        layers.push(Layer::Conv2d {
            name: next_name(),
            in_channels: c,
            out_channels: widths[0],
            kernel: 3,
            stride: 2,
            padding: 1,
        });
        layers.push(Relu);
        next_name();
        c = widths[0];
        (h, w) = (h.div_ceil(2), w.div_ceil(2));
    }
    for &out in widths {
        for _ in 0..convs_per_block {
            layers.push(conv(&next_name(), c, out, 3, 1));
            layers.push(Relu);
            next_name();
            c = out;
        }
        layers.push(maxpool());
        next_name();
        (h, w) = (h / 2, w / 2);
    }
    layers.push(Flatten);
    next_name();
    let mut features = c * h * w;
    if let Some(hidden) = hidden {
        layers.push(linear(&next_name(), features, hidden));
        layers.push(Relu);
        next_name();
        features = hidden;
    }
    layers.push(linear(&next_name(), features, classes));
    Architecture {
        name: format!("{name}-c{classes}"),
        input: Input::Image(InputShape {
            channels,
            height,
            width,
        }),
        task: Task::Classification,
        normalize: None,
        classes: (0..classes).map(|k| k.to_string()).collect(),
        layers,
        nodes: Vec::new(),
        training: None,
    }
}

/// The ResNet-style graphs `dataleaf bench --sizes` times beside the VGG-style ones.
pub const SCALING_RESNETS: [(&str, [usize; 3], usize); 3] = [
    ("cifar-resnet", [3, 32, 32], 10),
    ("tiny-imagenet-resnet", [3, 64, 64], 200),
    ("imagenet-resnet", [3, 224, 224], 1000),
];

/// A ResNet-18-style graph at a quarter of its widths (16, 32, 64, 128), with random weights and
/// random BatchNorm statistics: a stem convolution (stride 2 and a 3x3 max-pool from 128 pixels
/// up), four stages of two basic blocks (conv-BN-ReLU-conv-BN plus the identity, or a strided 1x1
/// projection), global average pooling and a linear classifier.
pub fn scaling_resnet(name: &str, input: [usize; 3], classes: usize, seed: u64) -> (Architecture, Weights) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut weights = Weights::new();
    let mut nodes: Vec<Node> = Vec::new();
    let mut tensor = |weights: &mut Weights, key: &str, shape: Vec<usize>, lo: f32, hi: f32| {
        let n = shape.iter().product();
        let data = (0..n).map(|_| rng.random_range(lo..hi)).collect();
        weights.insert(key.to_string(), Tensor32 { shape, data });
    };
    let node = |id: &str, inputs: &[&str], op: NodeOp| Node {
        id: id.into(),
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        origin: String::new(),
        op,
    };
    // conv + BatchNorm; returns the id of the BatchNorm's output.
    let mut conv_bn = |nodes: &mut Vec<Node>,
                       weights: &mut Weights,
                       id: &str,
                       from: &str,
                       cin: usize,
                       cout: usize,
                       k: usize,
                       stride: usize|
     -> String {
        let bound = (6.0 / (cin * k * k) as f32).sqrt();
        tensor(
            weights,
            &format!("{id}.weight"),
            vec![cout, cin, k, k],
            -bound,
            bound,
        );
        nodes.push(node(
            id,
            &[from],
            NodeOp::Conv {
                weight: format!("{id}.weight"),
                bias: None,
                stride: [stride, stride],
                pads: [k / 2; 4],
                dilation: [1, 1],
                groups: 1,
            },
        ));
        for (part, lo, hi) in [
            ("g", 0.5, 1.5),
            ("b", -0.2, 0.2),
            ("m", -0.2, 0.2),
            ("v", 0.5, 2.0),
        ] {
            tensor(weights, &format!("{id}.bn.{part}"), vec![cout], lo, hi);
        }
        let bn = format!("{id}.bn");
        nodes.push(node(
            &bn,
            &[id],
            NodeOp::BatchNorm {
                scale: format!("{bn}.g"),
                bias: format!("{bn}.b"),
                mean: format!("{bn}.m"),
                var: format!("{bn}.v"),
                epsilon: 1e-5,
            },
        ));
        bn
    };
    let [channels, height, width] = input;
    let big = height >= 128;
    let stem = conv_bn(
        &mut nodes,
        &mut weights,
        "stem",
        graph::INPUT,
        channels,
        16,
        3,
        if big { 2 } else { 1 },
    );
    nodes.push(node("stem.relu", &[&stem], NodeOp::Relu));
    let mut x = "stem.relu".to_string();
    if big {
        nodes.push(node(
            "stem.pool",
            &[&x],
            NodeOp::MaxPool {
                kernel: [3, 3],
                stride: [2, 2],
                pads: [1; 4],
                dilation: [1, 1],
                ceil_mode: false,
            },
        ));
        x = "stem.pool".into();
    }
    let mut c = 16;
    for (stage, out) in [16usize, 32, 64, 128].into_iter().enumerate() {
        for block in 0..2 {
            let id = format!("s{stage}b{block}");
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            let a = conv_bn(
                &mut nodes,
                &mut weights,
                &format!("{id}.c1"),
                &x,
                c,
                out,
                3,
                stride,
            );
            nodes.push(node(&format!("{id}.r1"), &[&a], NodeOp::Relu));
            let b = conv_bn(
                &mut nodes,
                &mut weights,
                &format!("{id}.c2"),
                &format!("{id}.r1"),
                out,
                out,
                3,
                1,
            );
            let shortcut = if stride != 1 || c != out {
                conv_bn(
                    &mut nodes,
                    &mut weights,
                    &format!("{id}.down"),
                    &x,
                    c,
                    out,
                    1,
                    stride,
                )
            } else {
                x.clone()
            };
            nodes.push(node(&format!("{id}.sum"), &[&b, &shortcut], NodeOp::Add));
            nodes.push(node(&format!("{id}.out"), &[&format!("{id}.sum")], NodeOp::Relu));
            x = format!("{id}.out");
            c = out;
        }
    }
    nodes.push(node("pool", &[&x], NodeOp::GlobalAvgPool));
    nodes.push(node("flat", &["pool"], NodeOp::Flatten { axis: 1 }));
    let bound = 1.0 / (c as f32).sqrt();
    tensor(&mut weights, "fc.weight", vec![classes, c], -bound, bound);
    tensor(&mut weights, "fc.bias", vec![classes], -bound, bound);
    nodes.push(node(
        "fc",
        &["flat"],
        NodeOp::Linear {
            weight: "fc.weight".into(),
            bias: Some("fc.bias".into()),
        },
    ));
    let arch = Architecture {
        name: format!("{name}-c{classes}"),
        input: Input::Image(InputShape {
            channels,
            height,
            width,
        }),
        task: Task::Classification,
        normalize: None,
        classes: (0..classes).map(|k| k.to_string()).collect(),
        layers: Vec::new(),
        nodes,
        training: None,
    };
    (arch, weights)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Network;

    #[test]
    fn scaling_architectures_are_valid() {
        for (name, input, classes) in SCALING {
            let arch = scaling_architecture(name, input, classes);
            arch.validate().unwrap_or_else(|e| panic!("{}: {e}", arch.name));
        }
        for (name, input, classes) in SCALING_RESNETS {
            let (arch, weights) = scaling_resnet(name, input, classes, 0);
            let net = Network::new(&arch, &weights).unwrap_or_else(|e| panic!("{}: {e}", arch.name));
            assert_eq!(net.num_classes(), classes);
        }
    }
}
