//! The model as a candle-nn network: the reference implementation of the forward pass, and the
//! route to candle's autograd (used to check the hand-written reverse passes of `Network`).

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Linear};

use super::arch::{Architecture, Layer};
use super::network::Weights;

enum CandleLayer {
    Conv(Conv2d),
    Linear(Linear),
    Relu,
    MaxPool { kernel: usize, stride: usize },
    AvgPool { kernel: usize, stride: usize },
    Flatten,
    Sigmoid,
    Tanh,
    Softplus,
    Gelu,
    LeakyRelu(f64),
}

/// A sequential classifier on candle tensors; outputs logits.
pub struct Classifier {
    layers: Vec<CandleLayer>,
    mean: Tensor,
    std: Tensor,
    input_len: usize,
    channels: usize,
    height: usize,
    width: usize,
}

impl Classifier {
    /// Build from a validated architecture and weights whose names and shapes `Network::new` checked.
    pub fn new(arch: &Architecture, weights: &Weights) -> candle_core::Result<Classifier> {
        let dev = Device::Cpu;
        let tensor = |key: String| -> candle_core::Result<Tensor> {
            let t = weights
                .get(&key)
                .ok_or_else(|| candle_core::Error::Msg(format!("weight tensor {key:?} is missing")))?;
            Tensor::from_slice(&t.data, t.shape.as_slice(), &dev)
        };
        let mut layers = Vec::new();
        for layer in &arch.layers {
            layers.push(match layer {
                Layer::Conv2d {
                    name,
                    stride,
                    padding,
                    ..
                } => CandleLayer::Conv(Conv2d::new(
                    tensor(format!("{name}.weight"))?,
                    Some(tensor(format!("{name}.bias"))?),
                    Conv2dConfig {
                        padding: *padding,
                        stride: *stride,
                        ..Default::default()
                    },
                )),
                Layer::Linear { name, .. } => CandleLayer::Linear(Linear::new(
                    tensor(format!("{name}.weight"))?,
                    Some(tensor(format!("{name}.bias"))?),
                )),
                Layer::Relu => CandleLayer::Relu,
                Layer::Maxpool2d { kernel, stride } => CandleLayer::MaxPool {
                    kernel: *kernel,
                    stride: stride.unwrap_or(*kernel),
                },
                Layer::Avgpool2d { kernel, stride } => CandleLayer::AvgPool {
                    kernel: *kernel,
                    stride: stride.unwrap_or(*kernel),
                },
                Layer::Flatten => CandleLayer::Flatten,
                Layer::Sigmoid => CandleLayer::Sigmoid,
                Layer::Tanh => CandleLayer::Tanh,
                Layer::Softplus => CandleLayer::Softplus,
                Layer::Gelu => CandleLayer::Gelu,
                Layer::LeakyRelu { negative_slope } => CandleLayer::LeakyRelu(*negative_slope as f64),
            });
        }
        let input = arch.image_input().map_err(candle_core::Error::Msg)?;
        let c = input.channels;
        let (mean, std) = match &arch.normalize {
            Some(n) => (n.mean.clone(), n.std.clone()),
            None => (vec![0.0; c], vec![1.0; c]),
        };
        Ok(Classifier {
            layers,
            mean: Tensor::from_vec(mean, (1, c, 1, 1), &dev)?,
            std: Tensor::from_vec(std, (1, c, 1, 1), &dev)?,
            input_len: input.len(),
            channels: c,
            height: input.height,
            width: input.width,
        })
    }

    /// Logits for a batch of pixel-space images, shape (batch, channels, height, width).
    pub fn forward(&self, images: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = images.broadcast_sub(&self.mean)?.broadcast_div(&self.std)?;
        for layer in &self.layers {
            x = match layer {
                CandleLayer::Conv(c) => c.forward(&x)?,
                CandleLayer::Linear(l) => l.forward(&x)?,
                CandleLayer::Relu => x.relu()?,
                CandleLayer::MaxPool { kernel, stride } => max_pool(&x, *kernel, *stride)?,
                CandleLayer::AvgPool { kernel, stride } => x.avg_pool2d_with_stride(*kernel, *stride)?,
                CandleLayer::Flatten => x.flatten_from(1)?,
                CandleLayer::Sigmoid => candle_nn::ops::sigmoid(&x)?,
                CandleLayer::Tanh => x.tanh()?,
                CandleLayer::Softplus => softplus(&x)?,
                CandleLayer::Gelu => x.gelu_erf()?,
                CandleLayer::LeakyRelu(slope) => candle_nn::ops::leaky_relu(&x, *slope)?,
            };
        }
        Ok(x)
    }

    /// Logits for `batch` flat images (batch x input_len), row-major batch x classes.
    pub fn logits(&self, images: &[f32], batch: usize) -> candle_core::Result<Vec<f32>> {
        if images.len() != batch * self.input_len {
            candle_core::bail!(
                "{} values do not make {batch} images of {}",
                images.len(),
                self.input_len
            );
        }
        let x = Tensor::from_slice(
            images,
            (batch, self.channels, self.height, self.width),
            &Device::Cpu,
        )?;
        self.forward(&x)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1()
    }
}

/// PyTorch's softplus: log(1 + e^x), and x where x > 20 (where the exp would lose it anyway).
fn softplus(x: &Tensor) -> candle_core::Result<Tensor> {
    let threshold = crate::model::network::SOFTPLUS_THRESHOLD;
    // exp of the clamped input, so the unused branch never overflows to inf (its gradient would be NaN).
    let smooth = (x.minimum(threshold)?.exp()? + 1.0)?.log()?;
    x.gt(threshold)?.where_cond(x, &smooth)
}

/// Max-pooling whose gradient is right: candle 0.11's max_pool2d backward scales each window's
/// gradient by (number of maxima) / k^2 instead of passing it to the maximum. When windows tile the
/// input, pool as two reductions over reshaped axes instead, whose backward is exact (without ties).
fn max_pool(x: &Tensor, kernel: usize, stride: usize) -> candle_core::Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    if kernel == stride && h % kernel == 0 && w % kernel == 0 {
        x.reshape((b, c, h / kernel, kernel, w / kernel, kernel))?
            .max(5)?
            .max(3)
    } else {
        x.max_pool2d_with_stride(kernel, stride)
    }
}
