//! The architectures `dataleaf train` knows, in the model-file format.

use super::arch::{Architecture, Input, InputShape, Layer, Normalize, Task};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_architectures_are_valid() {
        for (name, input, classes) in SCALING {
            let arch = scaling_architecture(name, input, classes);
            arch.validate().unwrap_or_else(|e| panic!("{}: {e}", arch.name));
        }
    }
}
