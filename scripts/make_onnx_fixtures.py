#!/usr/bin/env python3
"""Generate the ONNX fixtures in tests/fixtures/onnx/ (and full-size benchmark models in target/onnx-bench/).

Run once from the repository root with a Python that has torch, torchvision, onnx, onnxscript (for the
dynamo=True variants) and numpy (onnxruntime optional: it cross-checks the exports):

    /opt/torchenv/bin/python scripts/make_onnx_fixtures.py [--no-full]

The committed outputs are read by the Rust tests; CI has no PyTorch. For each model X it writes

    X.onnx            torch.onnx.export(net.eval(), x, path, dynamo=False, opset_version=17,
                                        input_names=["input"], output_names=["logits"]), x 1x3x32x32
    X.json            sidecar: {"name", "normalize": {"mean", "std"}, "classes"} ("normalize" left out
                      when the graph normalises itself; no sidecar at all for every-op)
    X.expected.json   PyTorch float64 reference (net.double(), float64 inputs) on CIFAR-10 test images
                      0..3 of assets/data/cifar10-samples/test_batch.bin (pixels byte/255 in float32,
                      then float64; the sidecar normalisation applied inside, as dataleaf does):
                        logits, probs, eigenvalues [C, descending] of G = J^T (diag p - p p^T) J,
                        J = d logits / d pixels; and for the per-operator models "jacobian" [C*n,
                        row-major] at the first index only.
                      For models ending in Softmax / LogSoftmax the logits are the values before it.

Variants of the same networks (same expected values): X-bn (training=PRESERVE: BatchNorm unfolded),
X-dynamo (the default dynamo=True exporter), X-dynamo-extdata (its external-data layout), X-dynbatch
(dynamic batch), activations-fp16 (float16 initializers); and three error fixtures without a reference.

plus README.md and MANIFEST.json (operator kinds read back with the onnx package, parameter counts,
file sizes). Deterministic: every model is built after torch.manual_seed(SEED); BatchNorm affine
parameters are seeded random, running statistics come from one train-mode pass over the 20 CIFAR
images of the sample batch and are then moved off the batch's values (set_batchnorm), so that
folding errors show.
"""

import argparse
import copy
import json
import os
import warnings

import numpy as np
import onnx
import torch
import torch.nn.functional as F
import torchvision
from onnx import helper, numpy_helper
from torch import nn
from torchvision.models import efficientnet, mobilenetv3, regnet
from torchvision.models.densenet import DenseNet
from torchvision.models.resnet import BasicBlock, ResNet
from torchvision.models.shufflenetv2 import ShuffleNetV2

warnings.filterwarnings("ignore")  # the TorchScript exporter's deprecation notes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "onnx")
BENCH = os.path.join(ROOT, "target", "onnx-bench")
CIFAR_BIN = os.path.join(ROOT, "assets", "data", "cifar10-samples", "test_batch.bin")
DATASET = "assets/data/cifar10-samples"
INDICES = [0, 1, 2, 3]
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
MEAN = [0.4914, 0.4822, 0.4465]
STD = [0.2470, 0.2435, 0.2616]
SEED = 0
GENERATOR = "scripts/make_onnx_fixtures.py (torch %s, float64)" % torch.__version__


# --- Data ---------------------------------------------------------------------------------------------


def cifar():
    """All records of the sample batch: labels (N,), pixels (N, 3, 32, 32) float64 holding f32 values."""
    raw = open(CIFAR_BIN, "rb").read()
    assert len(raw) % 3073 == 0
    rec = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3073)
    px = (rec[:, 1:].astype(np.float32) / np.float32(255.0)).reshape(-1, 3, 32, 32)
    return rec[:, 0].astype(int), px.astype(np.float64)


def f32(values):
    """dataleaf reads the sidecar's mean/std as f32; the reference uses those values."""
    return [float(np.float32(v)) for v in values]


# --- Weights that are not the defaults ----------------------------------------------------------------


def set_batchnorm(net, images, floor=None):
    """Every BatchNorm gets seeded random weight U(0.5, 1.5) and bias N(0, 0.2), and running statistics
    that are not the defaults, so that folding errors show. They come from one train-mode pass over
    `images` (momentum None: the batch's own statistics), and then
      floor=k (the torchvision architectures): running_var += k * (mean over channels of the batch
          variance + mean over channels of the squared batch mean). A random network's deep 1x1 feature
          maps differ only a little between images; their bare batch variance would blow these
          differences up at every layer (Jacobians of norm ~1e3, lambda_1 ~1e6), while the defaults
          (or random statistics near them) let the logits collapse to the same values for every image.
          k is chosen per architecture so that lambda_1 lands at ~10..200 and the images' probabilities
          differ.
      floor=None (the small per-operator models, whose BNs see already-normalised inputs, so mean ~0
          and var ~1): the statistics are shifted by N(0, 0.3) standard deviations and scaled by
          U(0.5, 2)."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    with torch.no_grad():
        for m in bns:
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0.0, 0.2)
            m.reset_running_stats()
            m.momentum = None
        net.train()
        for m in net.modules():  # dropout / stochastic depth stay off while the statistics are taken
            if isinstance(m, (nn.Dropout, torchvision.ops.StochasticDepth)):
                m.eval()
        net(images)
        net.eval()
        for m in bns:
            m.momentum = 0.1
            if floor is not None:
                m.running_var.add_(floor * (m.running_var.mean() + m.running_mean.pow(2).mean()))
            else:
                m.running_mean.add_(torch.randn_like(m.running_mean) * 0.3 * m.running_var.sqrt())
                m.running_var.mul_(torch.empty_like(m.running_var).uniform_(0.5, 2.0))


def last_params(net):
    if hasattr(net, "head_params"):
        return net.head_params()
    lin = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
    return [lin.weight, lin.bias]


def spread_logits(net, xn, target_std=3.0):
    """Scale the last layer so that the logits of the fixture images spread over a few units
    (softmax neither uniform nor one-hot)."""
    net.eval()
    with torch.no_grad():
        z = net.logits(xn) if hasattr(net, "logits") else net(xn)
        s = target_std / z.std(dim=1).mean().item()
        for p in last_params(net):
            p.mul_(s)


# --- Width-reduced torchvision architectures -----------------------------------------------------------


class SmallResNet(ResNet):
    """torchvision's ResNet-18 (BasicBlock, [2, 2, 2, 2], its stem, _make_layer and forward) at other widths."""

    def __init__(self, widths=(16, 32, 64, 128), num_classes=10):
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = widths[0], 1, 1, 64
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(BasicBlock, widths[0], 2)
        self.layer2 = self._make_layer(BasicBlock, widths[1], 2, stride=2)
        self.layer3 = self._make_layer(BasicBlock, widths[2], 2, stride=2)
        self.layer4 = self._make_layer(BasicBlock, widths[3], 2, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def mobilenet_v3_small(width_mult):
    setting, last = mobilenetv3._mobilenet_v3_conf("mobilenet_v3_small", width_mult=width_mult)
    return mobilenetv3.MobileNetV3(setting, last, num_classes=10)


def efficientnet_b0(width_mult):
    setting, last = efficientnet._efficientnet_conf("efficientnet_b0", width_mult=width_mult, depth_mult=1.0)
    return efficientnet.EfficientNet(setting, dropout=0.2, num_classes=10, last_channel=last)


def regnet_x_400mf(w_0, w_a, group_width, stem):
    # torchvision's regnet_x_400mf: depth=22, w_0=24, w_a=24.48, w_m=2.54, group_width=16, stem 32
    params = regnet.BlockParams.from_init_params(depth=22, w_0=w_0, w_a=w_a, w_m=2.54, group_width=group_width)
    return regnet.RegNet(params, num_classes=10, stem_width=stem)


ARCHITECTURES = [
    # (file name, builder, what it is, BatchNorm variance floor k: see set_batchnorm)
    ("resnet18-w16", lambda: SmallResNet((16, 32, 64, 128)),
     "torchvision ResNet-18 (BasicBlock [2,2,2,2]) at quarter widths 16/32/64/128", 0.2),
    ("mobilenet_v2-w25", lambda: torchvision.models.mobilenet_v2(weights=None, num_classes=10, width_mult=0.25),
     "torchvision mobilenet_v2(width_mult=0.25)", 0.2),
    ("mobilenet_v3_small-w25", lambda: mobilenet_v3_small(0.25),
     "torchvision MobileNetV3 small, _mobilenet_v3_conf(width_mult=0.25)", 0.2),
    ("densenet121-g8", lambda: DenseNet(growth_rate=8, block_config=(6, 12, 24, 16), num_init_features=16,
                                         num_classes=10),
     "torchvision DenseNet-121 blocks (6,12,24,16) with growth_rate 8, 16 initial features", 0.2),
    ("efficientnet_b0-w25", lambda: efficientnet_b0(0.25),
     "torchvision EfficientNet-B0, _efficientnet_conf(width_mult=0.25, depth_mult=1.0)", 0.1),
    ("regnet_x_400mf-w8", lambda: regnet_x_400mf(8, 8.16, 8, 8),
     "torchvision RegNetX-400MF (depth 22, w_m 2.54) with w_0=8, w_a=8.16, group_width=8, stem 8", 0.2),
    ("shufflenet_v2_x0_5-w8", lambda: ShuffleNetV2([4, 8, 4], [8, 16, 32, 64, 256], num_classes=10),
     "torchvision ShuffleNetV2 stages [4,8,4] with stages_out_channels [8,16,32,64,256] (x0_5: 24..1024)", 0.2),
]

FULL_SIZE = [
    ("resnet18", lambda: torchvision.models.resnet18(weights=None, num_classes=10), 0.2),
    ("mobilenet_v2", lambda: torchvision.models.mobilenet_v2(weights=None, num_classes=10), 0.2),
    ("mobilenet_v3_small", lambda: torchvision.models.mobilenet_v3_small(weights=None, num_classes=10), 0.2),
    ("densenet121", lambda: torchvision.models.densenet121(weights=None, num_classes=10), 0.2),
    ("efficientnet_b0", lambda: torchvision.models.efficientnet_b0(weights=None, num_classes=10), 0.1),
    ("regnet_x_400mf", lambda: torchvision.models.regnet_x_400mf(weights=None, num_classes=10), 0.35),
    ("shufflenet_v2_x0_5", lambda: torchvision.models.shufflenet_v2_x0_5(weights=None, num_classes=10), 0.2),
]


# --- Per-operator graph models -------------------------------------------------------------------------


class Tail(nn.Module):
    """Base: `forward` = `logits` followed by an optional trailing Softmax / LogSoftmax (exported, and
    dropped by dataleaf); the reference differentiates `logits`."""

    tail = None

    def forward(self, x):
        z = self.logits(x)
        if self.tail == "softmax":
            return torch.softmax(z, dim=1)
        if self.tail == "logsoftmax":
            return torch.log_softmax(z, dim=1)
        return z


class EveryOp(Tail):
    """One graph with every operator of issue 12 item 1. Normalises inside ((x - mean) / std first),
    so it has no sidecar. After export, make_every_op_edits() adds an explicit asymmetric-pads Conv,
    a Dropout and an Identity node (the exporter removes both), which change no value."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(f32(MEAN)).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(f32(STD)).view(1, 3, 1, 1))
        self.bn_in = nn.BatchNorm2d(3)                                  # on the input: not foldable
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv_same = nn.Conv2d(16, 16, 4, padding="same")           # even kernel: pads 1 before, 2 after
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)            # depthwise
        self.grouped = nn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=4)
        self.se1 = nn.Conv2d(16, 4, 1)
        self.se2 = nn.Conv2d(4, 16, 1)
        self.pw_silu = nn.Conv2d(16, 16, 1)
        self.bn_cat = nn.BatchNorm2d(32)                                # after Concat: not foldable
        self.conv_half = nn.Conv2d(16, 16, 3, padding=1)
        self.avg_in = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=True)
        self.avg_ex = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.conv_s2 = nn.Conv2d(24, 16, 3, stride=2, padding=1)
        self.bn_add = nn.BatchNorm2d(16)                                # after Add: not foldable
        self.fc1 = nn.Linear(16 * 4 * 4 + 16, 32)                       # Gemm
        self.w2 = nn.Parameter(torch.randn(32, 10) / 32 ** 0.5)         # MatMul (x @ W), then Add
        self.b2 = nn.Parameter(torch.randn(10) * 0.1)
        self.drop = nn.Dropout(0.5)

    def head_params(self):
        return [self.w2, self.b2]

    def logits(self, x):
        x = (x - self.mean) / self.std                                  # Sub, Div by constants
        x = F.relu(self.conv1(self.bn_in(x)))                           # BatchNormalization, Conv, Relu
        x = torch.tanh(self.conv_same(x))                               # Conv (asymmetric pads), Tanh
        x = self.pool(x)                                                # MaxPool with pads; 16x16
        r = F.relu6(self.dw(x))                                         # Clip(0, 6)
        r = F.leaky_relu(self.grouped(r), 0.1)                          # LeakyRelu
        x = x + r                                                       # Add (residual)
        s = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)               # GlobalAveragePool, Flatten
        s = s.unsqueeze(2).unsqueeze(3)                                 # Unsqueeze
        s = F.hardsigmoid(self.se2(F.relu(self.se1(s))))                # HardSigmoid
        x = x * s                                                       # Mul (squeeze-excitation)
        a = F.hardswish(x)                                              # HardSwish
        b = F.silu(self.pw_silu(x))                                     # Sigmoid, Mul (SiLU)
        x = self.bn_cat(torch.cat([a, b], dim=1))                       # Concat, BatchNormalization
        n, c, h, w = x.size()                                           # channel shuffle, groups 2
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)  # Reshape, Transpose
        x1, x2 = x.chunk(2, dim=1)                                      # Slice (via Shape/Gather)
        x2 = torch.clamp(self.conv_half(x2), -0.5, 1.5)                 # Clip with other bounds
        x = torch.cat([x1[:, :8], x2], dim=1)                           # Slice, Concat: 24 channels
        x = self.avg_in(x) + self.avg_ex(x)                             # AveragePool both ways; 8x8
        x = F.gelu(self.conv_s2(x))                                     # Gelu (opset 17: Erf); 4x4
        x = self.bn_add(x + torch.sigmoid(x))                           # Sigmoid, Add, BatchNormalization
        f1 = x.view(x.size(0), -1)                                      # Reshape
        f2 = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)              # GlobalAveragePool, Flatten
        h = F.relu(self.fc1(torch.cat([f1, f2], dim=1)))                # Gemm
        h = self.drop(h)
        return torch.matmul(h, self.w2) + self.b2                       # MatMul, Add


class ConvVariants(Tail):
    """Conv attributes: auto_pad SAME_UPPER (padding='same', even kernel), per-axis pads, non-square
    kernel, per-axis strides and dilations, groups, depthwise, no bias; trailing Softmax."""

    tail = "softmax"

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 4, padding="same")
        self.c2 = nn.Conv2d(8, 12, (3, 5), stride=(2, 1), padding=(1, 4), dilation=(1, 2), groups=4)
        self.c3 = nn.Conv2d(12, 12, 3, stride=2, padding=1, groups=12, bias=False)
        self.c4 = nn.Conv2d(12, 16, 2, stride=2)
        self.fc = nn.Linear(16 * 4 * 8, 10)

    def logits(self, x):
        x = F.relu(self.c1(x))      # 32x32
        x = F.relu(self.c2(x))      # 16x32
        x = F.relu(self.c3(x))      # 8x16
        x = F.relu(self.c4(x))      # 4x8
        return self.fc(torch.flatten(x, 1))


class Pools(Tail):
    """MaxPool with and without pads, AveragePool with pads counted and not, global pool; trailing
    LogSoftmax."""

    tail = "logsoftmax"

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 16, 3, padding=1)
        self.c3 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 2 * 2 + 16, 10)

    def logits(self, x):
        x = F.max_pool2d(F.relu(self.c1(x)), 3, stride=2, padding=1)                         # 16
        x = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=True)                 # 16
        x = F.max_pool2d(F.relu(self.c2(x)), 2)                                             # 8
        x = F.avg_pool2d(F.relu(self.c3(x)), 3, stride=2, padding=1, count_include_pad=False)  # 4
        g = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        x = F.avg_pool2d(x, 2)                                                              # 2
        return self.fc(torch.cat([torch.flatten(x, 1), g], dim=1))


class Activations(Tail):
    """Every activation in turn between small convolutions (no BatchNorm, so that the float16 copy
    holds exactly these weights)."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(3 if i == 0 else 8, 8, 3, padding=1, stride=2 if i in (0, 3, 6) else 1)
                                    for i in range(10)])
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def logits(self, x):
        acts = [F.relu, F.relu6, lambda t: torch.clamp(t, -1.0, 2.0), lambda t: torch.clamp(t, min=-0.25),
                lambda t: F.leaky_relu(t, 0.2), F.hardswish, F.hardsigmoid, torch.sigmoid, torch.tanh, F.gelu]
        for conv, act in zip(self.convs, acts):
            x = act(conv(x))
        x = x * torch.sigmoid(x)    # SiLU written out
        return self.fc(x.view(x.size(0), -1))


class ShuffleSplit(Tail):
    """Shape-only operators that are constant for the fixed input shape: channel shuffle (Reshape,
    Transpose), chunk (Slice through Shape/Gather), narrow slices, unsqueeze/squeeze, view(n, -1)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 12, 3, stride=2, padding=1)
        self.c2 = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.c3 = nn.Conv2d(12, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8 * 8 * 8 // 2, 10)

    def logits(self, x):
        x = F.relu(self.c1(x))                                       # 12 x 16 x 16
        n, c, h, w = x.size()
        x = x.view(n, 3, c // 3, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        a, b = x.chunk(2, dim=1)
        x = torch.cat([self.c2(b), a], dim=1)
        x = F.relu(self.c3(x))                                       # 8 x 8 x 8
        x = x[:, :, 1:5, :].unsqueeze(1).flatten(1, 2)                # Slice on H, Unsqueeze, Reshape
        x = x.permute(0, 1, 3, 2)                                    # Transpose
        return self.fc(x.reshape(x.size(0), -1))


class GraphNormalize(Tail):
    """Normalisation written into the graph ((x - mean) / std by constants), BN on the input, and a
    MatMul head without Gemm. Sidecar with classes only."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(f32(MEAN)).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(f32(STD)).view(1, 3, 1, 1))
        self.bn = nn.BatchNorm2d(3)
        self.c1 = nn.Conv2d(3, 8, 5, stride=2, padding=2)
        self.c2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.w = nn.Parameter(torch.randn(16 * 8 * 8, 10) / 32.0)
        self.b = nn.Parameter(torch.randn(10) * 0.1)

    def head_params(self):
        return [self.w, self.b]

    def logits(self, x):
        x = self.bn((x - self.mean) / self.std)
        x = F.relu(self.c1(x))
        x = self.bn2(torch.cat([F.max_pool2d(x, 2), F.relu(self.c2(x))], dim=1))  # BN after Concat
        return torch.matmul(x.flatten(1), self.w) + self.b


PER_OPERATOR = [
    # (file name, class, sidecar normalise?, sidecar at all?, what it is)
    ("every-op", EveryOp, False, False, "every operator of issue 12 item 1 in one graph; normalises inside; no sidecar"),
    ("conv-variants", ConvVariants, True, True, "Conv attributes (auto_pad SAME_UPPER, per-axis pads/strides/dilations, groups, depthwise); trailing Softmax"),
    ("pools", Pools, True, True, "MaxPool / AveragePool with pads, count_include_pad both ways, GlobalAveragePool; trailing LogSoftmax"),
    ("activations", Activations, True, True, "Relu, Clip (ReLU6, clamp(-1,2), clamp(min)), LeakyRelu, HardSwish, HardSigmoid, Sigmoid, Tanh, Gelu, SiLU"),
    ("shuffle-split", ShuffleSplit, True, True, "channel shuffle, chunk, slices, unsqueeze, permute, reshape: shape-only operators constant for the fixed input"),
    ("graph-normalize", GraphNormalize, False, True, "(x - mean) / std in the graph, BN on the input and after Concat, MatMul head; sidecar without normalize"),
]


# --- Export and graph edits ----------------------------------------------------------------------------


def export(net, path, **kw):
    args = dict(dynamo=False, opset_version=17, input_names=["input"], output_names=["logits"])
    args.update(kw)
    torch.onnx.export(net.eval(), torch.zeros(1, 3, 32, 32), path, **args)


DYNAMO = ("resnet18-w16", "mobilenet_v3_small-w25", "shufflenet_v2_x0_5-w8")


def export_dynamo(net, path, external_data=False):
    """What `torch.onnx.export(net, (x,), path)` writes by default since torch 2.9 (needs onnxscript)."""
    torch.onnx.export(net.eval(), (torch.zeros(1, 3, 32, 32),), path, dynamo=True, external_data=external_data,
                      input_names=["input"], output_names=["logits"])


def make_every_op_edits(path):
    """Explicit asymmetric pads instead of auto_pad SAME_UPPER on the even-kernel conv, and a Dropout
    (inference: identity) then an Identity node in front of the MatMul. Values are unchanged."""
    m = onnx.load(path)
    g = m.graph
    for n in g.node:
        if n.op_type == "Conv" and any(a.name == "auto_pad" for a in n.attribute):
            ks = [list(a.ints) for a in n.attribute if a.name == "kernel_shape"][0]
            assert ks == [4, 4]
            keep = [a for a in n.attribute if a.name != "auto_pad"]
            del n.attribute[:]
            n.attribute.extend(keep)
            n.attribute.append(helper.make_attribute("pads", [1, 1, 2, 2]))  # SAME_UPPER for k=4, s=1
            break
    else:
        raise SystemExit("every-op: no auto_pad conv found")
    for i, n in enumerate(g.node):
        if n.op_type == "MatMul":
            src = n.input[0]
            n.input[0] = "/head/identity_out"
            g.node.insert(i, helper.make_node("Identity", ["/head/dropout_out"], ["/head/identity_out"], name="/head/Identity"))
            g.node.insert(i, helper.make_node("Dropout", [src], ["/head/dropout_out"], name="/head/Dropout"))
            break
    else:
        raise SystemExit("every-op: no MatMul found")
    onnx.checker.check_model(m)
    onnx.save(m, path)


def to_float16_initializers(src, dst):
    """Copy of an ONNX file with every float32 initializer stored as float16, each followed by one
    Cast(to=FLOAT) node so that every operator still computes in float32. Asserts the weights were
    already float16-representable (the reference uses exactly these)."""
    m = onnx.load(src)
    g = m.graph
    casts, inits = [], []
    for init in g.initializer:
        if init.data_type != onnx.TensorProto.FLOAT:
            inits.append(init)
            continue
        a = numpy_helper.to_array(init)
        h = a.astype(np.float16)
        assert np.array_equal(h.astype(np.float32), a), init.name
        inits.append(numpy_helper.from_array(h, init.name + "_fp16"))
        casts.append(helper.make_node("Cast", [init.name + "_fp16"], [init.name], to=onnx.TensorProto.FLOAT,
                                      name="/cast/" + init.name))
    del g.initializer[:]
    g.initializer.extend(inits)
    nodes = casts + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    onnx.checker.check_model(m)
    onnx.save(m, dst)


# --- Reference -----------------------------------------------------------------------------------------


def round9(x):
    return float(f"{float(x):.9g}")


def rounded(a):
    return [round9(v) for v in np.asarray(a, dtype=np.float64).ravel()]


def reference(net, x, normalize, jacobian):
    """float64 logits, probs, spectra of G (and the first image's Jacobian) for pixels x (N,3,32,32)."""
    net64 = copy.deepcopy(net).double().eval()
    if hasattr(net64, "tail"):
        net64.tail = None
    fwd = net64.logits if hasattr(net64, "logits") else net64
    if normalize:
        mean = torch.tensor(f32(MEAN), dtype=torch.float64).view(1, 3, 1, 1)
        std = torch.tensor(f32(STD), dtype=torch.float64).view(1, 3, 1, 1)
        f = lambda xi: fwd((xi.unsqueeze(0) - mean) / std).squeeze(0)
    else:
        f = lambda xi: fwd(xi.unsqueeze(0)).squeeze(0)
    x = torch.tensor(x, dtype=torch.float64)
    out = {"logits": [], "probs": [], "eigenvalues": []}
    for i in range(x.shape[0]):
        with torch.no_grad():
            z = f(x[i]).numpy()
        J = torch.autograd.functional.jacobian(f, x[i]).reshape(len(z), -1).numpy()
        p = np.exp(z - z.max())
        p /= p.sum()
        C = len(p)
        B = np.sqrt(p)[:, None] * ((np.eye(C) - np.outer(np.ones(C), p)) @ J)
        ev = np.sort(np.linalg.eigvalsh(B @ B.T))[::-1]
        G_trace = np.einsum("ij,ik,kj->", J, np.diag(p) - np.outer(p, p), J)
        assert np.isclose(G_trace, ev.sum(), rtol=1e-9, atol=1e-12)
        out["logits"].append(rounded(z))
        out["probs"].append(rounded(p))
        out["eigenvalues"].append(rounded(ev))
        if jacobian and i == 0:
            out["jacobian"] = rounded(J)
    return out


FLOAT32_CHECK = {}  # name -> how far PyTorch's own float32 Jacobian is from the float64 reference


def float32_check(net, x, normalize, ref):
    """PyTorch float32 (the same network, torch.func.jacrev): the largest |lambda_i(f32) - lambda_i(f64)|
    / lambda_1 and |p(f32) - p(f64)| over the images: what a float32 engine can be expected to reach
    (a ReLU or max-pool decision that flips in float32 shows here as well)."""
    net32 = copy.deepcopy(net).float().eval()
    if hasattr(net32, "tail"):
        net32.tail = None
    fwd = net32.logits if hasattr(net32, "logits") else net32
    mean = torch.tensor(f32(MEAN)).view(1, 3, 1, 1) if normalize else 0.0
    std = torch.tensor(f32(STD)).view(1, 3, 1, 1) if normalize else 1.0
    f = lambda xi: fwd((xi.unsqueeze(0) - mean) / std).squeeze(0)
    eig_err, prob_err = 0.0, 0.0
    for i in range(x.shape[0]):
        xi = torch.tensor(x[i], dtype=torch.float32)
        with torch.no_grad():
            p = torch.softmax(f(xi).double(), 0).numpy()
        J = torch.func.jacrev(f)(xi).reshape(len(p), -1).detach().double().numpy()
        C = len(p)
        B = np.sqrt(p)[:, None] * ((np.eye(C) - np.outer(np.ones(C), p)) @ J)
        ev = np.sort(np.linalg.eigvalsh(B @ B.T))[::-1]
        want = np.array(ref["eigenvalues"][i])
        eig_err = max(eig_err, float(np.abs(ev - want).max() / want[0]))
        prob_err = max(prob_err, float(np.abs(p - np.array(ref["probs"][i])).max()))
    return {"eigenvalues_max_err_over_lambda1": eig_err, "probs_max_abs_err": prob_err}


def write_json(path, obj, compact=True):
    with open(path, "w") as fh:
        if compact:
            json.dump(obj, fh, separators=(",", ":"))
        else:
            json.dump(obj, fh, indent=2)
        fh.write("\n")


def sidecar(name, normalize):
    s = {"name": name}
    if normalize:
        s["normalize"] = {"mean": MEAN, "std": STD}
    s["classes"] = CLASSES
    return s


def summary(name, ref):
    z = np.array(ref["logits"])
    p = np.array(ref["probs"])
    ev = np.array(ref["eigenvalues"])
    print(f"{name}: logits [{z.min():.2f}, {z.max():.2f}], max prob {np.round(p.max(1), 3).tolist()}, "
          f"lambda_1 {np.round(ev[:, 0], 4).tolist()}", flush=True)


def make(folder, name, net, x, normalize, with_sidecar, jacobian, export_kw=None, note=None, exporter=None):
    path = os.path.join(folder, name + ".onnx")
    if exporter:
        exporter(net, path)
    else:
        export(net, path, **(export_kw or {}))
    if with_sidecar:
        write_json(os.path.join(folder, name + ".json"), sidecar(name, normalize), compact=False)
    ref = reference(net, x, normalize, jacobian)
    exp = {"model": name + ".onnx", "generator": GENERATOR, "dataset": DATASET, "indices": INDICES}
    if note:
        exp["note"] = note
    exp.update(ref)
    write_json(os.path.join(folder, name + ".expected.json"), exp)
    summary(name, ref)
    FLOAT32_CHECK[name] = float32_check(net, x, normalize, ref)
    print(f"  torch float32 vs float64: {FLOAT32_CHECK[name]}", flush=True)
    return path


def prepared(builder, images, floor, normalize, reinit=False):
    torch.manual_seed(SEED)
    net = builder()
    if reinit:  # He-normal weights keep the signal alive through the small models' stacks
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                    if m.bias is not None:
                        nn.init.uniform_(m.bias, -0.1, 0.1)
    xn = (images - torch.tensor(f32(MEAN)).view(1, 3, 1, 1)) / torch.tensor(f32(STD)).view(1, 3, 1, 1) \
        if normalize else images
    set_batchnorm(net, xn, floor)
    spread_logits(net, xn[: len(INDICES)])
    return net.eval()


# --- Malformed-but-valid ONNX for the error tests ------------------------------------------------------


class Unsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.fc = nn.Linear(4 * 32 * 32, 10)

    def forward(self, x):
        x = F.interpolate(F.relu(self.c(x)), scale_factor=2, mode="nearest")   # Resize
        return self.fc(torch.flatten(x, 1))


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, 10)

    def forward(self, a, b):
        return self.fc(torch.flatten(a + b, 1))


class AnySize(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(F.relu(self.c(x)), 1), 1))


def make_bad():
    torch.manual_seed(SEED)
    export(Unsupported(), os.path.join(OUT, "unsupported-op.onnx"))
    torch.manual_seed(SEED)
    z = torch.zeros(1, 3, 32, 32)
    torch.onnx.export(TwoInputs().eval(), (z, z), os.path.join(OUT, "two-inputs.onnx"), dynamo=False,
                      opset_version=17, input_names=["input", "input2"], output_names=["logits"])
    torch.manual_seed(SEED)
    export(AnySize(), os.path.join(OUT, "dynamic-dims.onnx"),
           dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}})


# --- Manifest, README, cross-check ----------------------------------------------------------------------


def describe(path):
    m = onnx.load(path)
    onnx.checker.check_model(path)  # by path: follows external data
    ops = {}
    for n in m.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    params = sum(int(np.prod(i.dims)) for i in m.graph.initializer
                 if i.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16))
    consts = sum(int(np.prod(n.attribute[0].t.dims)) for n in m.graph.node
                 if n.op_type == "Constant" and n.attribute and n.attribute[0].t.data_type in (1, 10))
    dims = [[d.dim_value if d.HasField("dim_value") else d.dim_param for d in i.type.tensor_type.shape.dim]
            for i in m.graph.input]
    attrs = {}
    for n in m.graph.node:
        for a in n.attribute:
            if n.op_type in ("MaxPool", "AveragePool", "Conv") and a.name in ("ceil_mode", "auto_pad", "count_include_pad"):
                v = helper.get_attribute_value(a)
                v = v.decode() if isinstance(v, bytes) else v
                attrs.setdefault(f"{n.op_type}.{a.name}", set()).add(v)
            if n.op_type in ("Conv", "MaxPool", "AveragePool") and a.name == "pads":
                p = list(a.ints)
                if p[: len(p) // 2] != p[len(p) // 2:]:
                    attrs.setdefault(f"{n.op_type}.asymmetric_pads", set()).add(str(p))
    external = sorted({e.value for i in onnx.load(path, load_external_data=False).graph.initializer
                       for e in i.external_data if e.key == "location"})
    return {"ops": dict(sorted(ops.items())), "nodes": len(m.graph.node), "parameters": params,
            "external_data": external,
            "constant_node_floats": consts, "inputs": dims, "opset": m.opset_import[0].version,
            "attributes": {k: sorted(v, key=str) for k, v in sorted(attrs.items())}}


def onnxruntime_check(folder, name, normalize, tail):
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    exp = json.load(open(os.path.join(folder, name + ".expected.json")))
    _, px = cifar()
    x = px[exp["indices"]].astype(np.float32)
    if normalize:
        x = (x - np.array(f32(MEAN), np.float32).reshape(1, 3, 1, 1)) / np.array(f32(STD), np.float32).reshape(1, 3, 1, 1)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(os.path.join(folder, name + ".onnx"), so, providers=["CPUExecutionProvider"])
    got = np.concatenate([sess.run(None, {"input": x[i: i + 1].astype(np.float32)})[0] for i in range(len(x))])
    z = np.array(exp["logits"])
    if tail == "softmax":
        want = np.exp(z - z.max(1, keepdims=True)); want /= want.sum(1, keepdims=True)
    elif tail == "logsoftmax":
        want = z - z.max(1, keepdims=True); want -= np.log(np.exp(want).sum(1, keepdims=True))
    else:
        want = z
    return float(np.abs(got - want).max())


def onnx_float64_check(folder, name):
    """Independent of PyTorch: the ONNX file itself, converted to float64 and run by the onnx package's
    reference evaluator (a trailing Softmax / LogSoftmax cut off), against the expected logits of the
    first image and against the expected Jacobian along 3 random unit directions (central differences,
    h = 1e-7). The residue, ~1e-7, is the float32 rounding of attribute and Constant values (HardSigmoid
    alpha, Gelu's sqrt 2) that PyTorch's float64 reference does not have."""
    import math
    from onnx.reference import ReferenceEvaluator
    from onnx.reference.ops import op_erf
    # The evaluator's Erf rounds to float32 (np.vectorize(erf, otypes=["f"])); use the float64 one.
    op_erf.Erf._run = lambda self, v: (np.vectorize(math.erf, otypes=[np.float64])(v).astype(v.dtype),)
    m = onnx.load(os.path.join(folder, name + ".onnx"))
    g = m.graph
    last = g.node[-1]
    if last.op_type in ("Softmax", "LogSoftmax"):
        g.output[0].name = last.input[0]
        g.node.remove(last)
    for init in g.initializer:
        if init.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float64), init.name))
    for n in g.node:
        for a in n.attribute:
            if a.name == "value" and a.t.data_type == onnx.TensorProto.FLOAT:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float64), a.t.name))
            if n.op_type == "Cast" and a.name == "to" and a.i == onnx.TensorProto.FLOAT:
                a.i = onnx.TensorProto.DOUBLE
    for v in list(g.input) + list(g.output):
        v.type.tensor_type.elem_type = onnx.TensorProto.DOUBLE
    del g.value_info[:]
    sess = ReferenceEvaluator(m)
    exp = json.load(open(os.path.join(folder, name + ".expected.json")))
    side_path = os.path.join(folder, name + ".json")
    side = json.load(open(side_path)) if os.path.exists(side_path) else {}
    _, px = cifar()
    x = px[exp["indices"][0]]
    if "normalize" in side:
        mean = np.array(f32(side["normalize"]["mean"])).reshape(3, 1, 1)
        std = np.array(f32(side["normalize"]["std"])).reshape(3, 1, 1)
    else:
        mean, std = 0.0, 1.0
    f = lambda v: sess.run(None, {"input": ((v - mean) / std)[None]})[0][0]
    logit_diff = float(np.abs(f(x) - np.array(exp["logits"][0])).max())
    J = np.array(exp["jacobian"]).reshape(len(exp["logits"][0]), -1)
    rng = np.random.default_rng(0)
    errs = []
    for _ in range(3):
        v = rng.standard_normal(x.shape)
        v /= np.linalg.norm(v)
        h = 1e-7
        want = J @ v.ravel()
        errs.append(float(np.abs((f(x + h * v) - f(x - h * v)) / (2 * h) - want).max() / np.abs(want).max()))
    return {"max_abs_logit_diff": logit_diff, "jacobian_direction_max_rel_err": max(errs)}


README_HEAD = """\
# ONNX fixtures

Made by `scripts/make_onnx_fixtures.py` (run once from the repository root with PyTorch and torchvision:
`/opt/torchenv/bin/python scripts/make_onnx_fixtures.py`; {torch}, torchvision {tv}, onnx {onnx}). Every
`.onnx` is exactly what

    torch.onnx.export(net.eval(), x, path, dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"])

writes for a 1x3x32x32 input and 10 classes (exceptions: every-op.onnx, activations-fp16.onnx, the
`-bn`, `-dynamo`, `-dynamo-extdata` and `-dynbatch` variants and the three error fixtures; see below). Weights are random (seed {seed}, nothing downloaded); every
BatchNorm has seeded random weight/bias and running statistics from one train-mode pass over the 20
images of assets/data/cifar10-samples/test_batch.bin, then (architectures) the variance raised by a
floor k times the layer's mean second moment, k = 0.1..0.35 per architecture so that lambda_1 is
~10..200 rather than ~1e6 or ~0, or (per-operator models) shifted and scaled at random; see
`set_batchnorm` in the script. The last layer is scaled so that the fixture images' logits spread over
a few units. The TorchScript exporter folds every BatchNorm that follows a Conv into the
Conv (eval mode), so BatchNormalization nodes remain only where they cannot be folded (on the input,
after Concat/Add, DenseNet's pre-activation).

Beside each model X.onnx:

- `X.json`: the sidecar, same keys as the JSON models: `name`, `normalize` {{mean, std}} (the CIFAR-10
  statistics), `classes` (CIFAR-10 names). Models that normalise inside the graph have no `normalize`;
  `every-op.onnx` has no sidecar at all (dataleaf: no normalisation, classes "0".."9").
- `X.expected.json`: the PyTorch float64 reference (`net.double()`, float64 inputs) on CIFAR-10 test
  images `indices` (0..3) of `dataset`: pixels byte/255 in float32 then float64, the sidecar's
  normalisation (as f32 values) applied inside. `logits`, `probs` (softmax of logits), `eigenvalues`
  (C, descending) of G = J^T (diag p - p p^T) J with J = d logits / d pixels, computed as the
  eigenvalues of B B^T, B = diag(sqrt p)(I - 1 p^T) J; the per-operator models also give `jacobian`
  (C x 3072, row-major, first index only). For a model ending in Softmax / LogSoftmax, `logits` are the
  values before it (dataleaf drops the trailing softmax). Values rounded to 9 significant digits.

`MANIFEST.json` lists every `.onnx` with its operator kinds and counts (read back with the onnx
package), parameter count, file size, input shape, notable attributes, the onnxruntime cross-check
(max |onnxruntime float32 output - float64 reference| over the four images), `torch_float32`
(PyTorch's own float32 Jacobian against the float64 reference: max |lambda_i - lambda_i ref| /
lambda_1 and max |p - p ref| over the four images: what a float32 engine can reach) and, for the
per-operator models, `onnx_reference_float64`: the file converted to float64 and run by the onnx
package's reference evaluator, against the first image's logits and the expected Jacobian along three
random directions by central differences (relative error; ~1e-7, the float32 rounding of attributes
such as HardSigmoid's alpha).

| file | what | size | parameters |
|---|---|---|---|
"""

README_TAIL = """
## Notes on the exports

- Opset 17 has no Gelu: `F.gelu` is exported as `Div(x, 1.414..) -> Erf -> Add(1) -> Mul(x) -> Mul(0.5)`;
  SiLU as `Sigmoid -> Mul`. `torch.clamp` / ReLU6 are `Clip` with the bounds as `Constant` node inputs;
  `clamp(min=..)` alone is a `Clip` with an empty third input.
- `padding="same"` with an even kernel exports `auto_pad="SAME_UPPER"` (conv-variants.onnx); every-op.onnx
  holds the same conv with explicit asymmetric `pads=[1,1,2,2]` (edited in after export).
- `x.chunk(2, dim=1)` exports as `Shape -> Gather -> Add -> Div -> Mul -> Slice` on int64 tensors (no
  Split; the Slice takes starts/ends/axes as inputs); `x.view(n, -1)` and channel shuffles fold to `Reshape` with a `Constant` shape for the fixed
  input shape; the full-size ShuffleNet's `x.mean([2, 3])` is a `ReduceMean` (keepdims 0).
- every-op.onnx: the exporter removes Dropout and Identity in eval mode, so a `Dropout` (no ratio, no
  training_mode: inference) and an `Identity` were inserted before the MatMul with the onnx package.
- activations-fp16.onnx: activations.onnx with weights rounded to float16 before export; every float
  initializer is stored as FLOAT16 and read through one `Cast(to=FLOAT)` node each, so all operators
  still compute in float32. Its reference uses the float16-rounded weights in float64.
- mobilenet_v3_small-w25-bn.onnx: the same network as mobilenet_v3_small-w25.onnx (same expected
  values) exported with `training=torch.onnx.TrainingMode.PRESERVE`, which keeps every Conv ->
  BatchNormalization pair unfolded (BN inputs: scale, bias, mean, var initializers; epsilon 1e-3, as
  torchvision's MobileNetV3 sets it).
- Both exports of MobileNetV3 and EfficientNet hold `Identity` nodes whose input is an initializer: the
  exporter stores equal-valued initializers (the zero-initialised SE biases) once and aliases the
  others through `Identity`.
- `X-dynamo.onnx` (resnet18-w16, mobilenet_v3_small-w25, shufflenet_v2_x0_5-w8): the same networks
  (same expected values) written by `torch.onnx.export(net, (x,), path, dynamo=True,
  external_data=False, input_names=["input"], output_names=["logits"])`. `dynamo=True` is
  torch.onnx.export's default since torch 2.9, so this is what a user who leaves it out gets. Opset 20;
  BatchNorm folded; global pooling is `ReduceMean` with the axes as an int64 initializer input
  ([-1, -2], keepdims 1, then `Reshape` [1, C] with allowzero=1) instead of GlobalAveragePool +
  Flatten; `chunk` is a `Split` (num_outputs 2, no split input); a Gemm may have no bias input
  (mobilenet_v3's first classifier layer); MaxPool/Conv carry explicit `auto_pad="NOTSET"`.
- `mobilenet_v3_small-w25-dynamo-extdata.onnx` + `.onnx.data`: the same, with the dynamo exporter's
  default `external_data=True`: most initializers have data_location EXTERNAL with location
  `mobilenet_v3_small-w25-dynamo-extdata.onnx.data`, offset and length (the file beside it).
- `shufflenet_v2_x0_5-w8-dynbatch.onnx`: exported with `dynamic_axes={"input": {0: "batch"},
  "logits": {0: "batch"}}` (what most tutorials do): input shape ["batch", 3, 32, 32], and the channel
  shuffle's shapes become real `Shape -> Gather(scalar index) -> Unsqueeze -> Concat -> Reshape`
  chains, with `Div` and `Cast(to=INT64)` on the int64 scalars (channels // groups).
- Error fixtures (no sidecar, no expected file): `unsupported-op.onnx` (a `Resize` from
  `F.interpolate`), `two-inputs.onnx` (graph inputs `input` and `input2`), `dynamic-dims.onnx`
  (`dynamic_axes` on batch, height and width).
- Full-size torchvision models (resnet18, mobilenet_v2, ... at 3x32x32, 10 classes, same recipe) are
  written to `target/onnx-bench/` for benchmarks and are not committed.
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-full", action="store_true", help="skip the full-size models in target/onnx-bench")
    ap.add_argument("--only", default="", help="comma-separated model names (for quick partial runs)")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    os.makedirs(OUT, exist_ok=True)
    labels, px = cifar()
    images = torch.tensor(px, dtype=torch.float32)
    x = px[INDICES]
    table = {}  # name -> (description, normalize, tail)
    torch.set_num_threads(2)

    for name, builder, what, floor in ARCHITECTURES:
        if only and name not in only:
            continue
        net = prepared(builder, images, floor, normalize=True)
        make(OUT, name, net, x, True, True, jacobian=False)
        table[name] = (what, True, None)
        if name in DYNAMO:
            # torch.onnx.export's default since torch 2.9 (dynamo=True): opset 20 and other operators.
            make(OUT, name + "-dynamo", net, x, True, True, jacobian=False, exporter=export_dynamo)
            table[name + "-dynamo"] = (what + ", exported by the default dynamo=True exporter (opset 20), one file",
                                       True, None)
        if name == "mobilenet_v3_small-w25":
            # The dynamo exporter's default external_data=True: weights in X.onnx.data beside X.onnx.
            ext = name + "-dynamo-extdata"
            for f in (ext + ".onnx", ext + ".onnx.data"):
                if os.path.exists(os.path.join(OUT, f)):
                    os.remove(os.path.join(OUT, f))
            make(OUT, ext, net, x, True, True, jacobian=False,
                 exporter=lambda n, pth: export_dynamo(n, pth, external_data=True))
            table[ext] = (what + ", dynamo=True exporter with its default external_data=True: weights in "
                          + ext + ".onnx.data", True, None)
        if name == "shufflenet_v2_x0_5-w8":
            # A dynamic batch dimension, as most tutorials export: the shape chains then depend on Shape.
            make(OUT, name + "-dynbatch", net, x, True, True, jacobian=False,
                 export_kw={"dynamic_axes": {"input": {0: "batch"}, "logits": {0: "batch"}}})
            table[name + "-dynbatch"] = (what + ", dynamic_axes on the batch dimension", True, None)
        if name == "mobilenet_v3_small-w25":
            # The same network exported with training=PRESERVE: the exporter then leaves every
            # BatchNormalization after its Conv (as other exporters do) instead of folding it.
            make(OUT, name + "-bn", net, x, True, True, jacobian=False,
                 export_kw={"training": torch.onnx.TrainingMode.PRESERVE})
            table[name + "-bn"] = (what + ", exported with training=PRESERVE: Conv -> BatchNormalization unfolded",
                                   True, None)

    for name, cls, normalize, with_sidecar, what in PER_OPERATOR:
        if only and name not in only:
            continue
        net = prepared(cls, images, None, normalize=normalize, reinit=True)
        make(OUT, name, net, x, normalize, with_sidecar, jacobian=True)
        table[name] = (what, normalize, cls.tail)
        if name == "every-op":
            make_every_op_edits(os.path.join(OUT, name + ".onnx"))
        if name == "activations":
            net16 = copy.deepcopy(net)
            with torch.no_grad():
                for t in list(net16.parameters()) + list(net16.buffers()):
                    if t.is_floating_point():
                        t.copy_(t.half().float())
            fp16 = name + "-fp16"
            tmp = os.path.join(OUT, fp16 + ".tmp.onnx")
            export(net16, tmp)
            ref = reference(net16, x, normalize, jacobian=True)
            to_float16_initializers(tmp, os.path.join(OUT, fp16 + ".onnx"))
            os.remove(tmp)
            write_json(os.path.join(OUT, fp16 + ".json"), sidecar(fp16, normalize), compact=False)
            exp = {"model": fp16 + ".onnx", "generator": GENERATOR, "dataset": DATASET, "indices": INDICES,
                   "note": "weights rounded to float16, reference in float64"}
            exp.update(ref)
            write_json(os.path.join(OUT, fp16 + ".expected.json"), exp)
            summary(fp16, ref)
            FLOAT32_CHECK[fp16] = float32_check(net16, x, normalize, ref)
            table[fp16] = ("activations.onnx with float16 initializers (each read through a Cast to float)",
                           normalize, None)

    if not only:
        make_bad()
        table["unsupported-op"] = ("error fixture: a Resize node (F.interpolate)", None, None)
        table["two-inputs"] = ("error fixture: two graph inputs", None, None)
        table["dynamic-dims"] = ("error fixture: dynamic batch, height and width", None, None)

    if not args.no_full and not only:
        os.makedirs(BENCH, exist_ok=True)
        for name, builder, floor in FULL_SIZE:
            net = prepared(builder, images, floor, normalize=True)
            make(BENCH, name, net, x, True, True, jacobian=False)
            print(f"  {BENCH}/{name}.onnx: {os.path.getsize(os.path.join(BENCH, name + '.onnx'))} bytes, "
                  f"onnxruntime max diff {onnxruntime_check(BENCH, name, True, None)}")

    # Manifest and README over everything in the folder (a partial run keeps the others' entries).
    manifest_path = os.path.join(OUT, "MANIFEST.json")
    old = {e["file"]: e for e in json.load(open(manifest_path))} if os.path.exists(manifest_path) else {}
    entries = []
    for f in sorted(os.listdir(OUT)):
        if not f.endswith(".onnx"):
            continue
        name = f[:-5]
        p = os.path.join(OUT, f)
        if name in table:
            what, normalize, tail = table[name]
            e = {"file": f, "what": what, "bytes": os.path.getsize(p)}
            e.update(describe(p))
            e["sidecar"] = os.path.exists(os.path.join(OUT, name + ".json"))
            e["expected"] = os.path.exists(os.path.join(OUT, name + ".expected.json"))
            e["trailing"] = {"softmax": "Softmax", "logsoftmax": "LogSoftmax"}.get(tail)
            if e["expected"]:
                e["onnxruntime_max_abs_diff"] = onnxruntime_check(OUT, name, normalize, tail)
                e["torch_float32"] = FLOAT32_CHECK.get(name)
                if "jacobian" in json.load(open(os.path.join(OUT, name + ".expected.json"))):
                    e["onnx_reference_float64"] = onnx_float64_check(OUT, name)
            entries.append(e)
        elif f in old:
            entries.append(old[f])
    write_json(manifest_path, entries, compact=False)
    with open(os.path.join(OUT, "README.md"), "w") as fh:
        import torchvision as tv
        fh.write(README_HEAD.format(torch="torch " + torch.__version__, tv=tv.__version__, onnx=onnx.__version__,
                                    seed=SEED))
        for e in entries:
            fh.write(f"| `{e['file']}` | {e['what']} | {e['bytes'] / 1024:.0f} KB | {e['parameters']} |\n")
        fh.write(README_TAIL)
    for e in entries:
        print(f"{e['file']}: {e['bytes']} bytes, {e['parameters']} params, ort {e.get('onnxruntime_max_abs_diff')}, "
              f"onnx float64 {e.get('onnx_reference_float64')}, "
              f"ops {' '.join(e['ops'])}")


if __name__ == "__main__":
    main()
