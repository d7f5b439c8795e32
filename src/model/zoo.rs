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
        training: None,
    })
}
