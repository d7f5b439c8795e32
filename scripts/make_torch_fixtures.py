#!/usr/bin/env python3
"""Generate the PyTorch reference fixtures in tests/fixtures/torch/.

Run once from the repository root with a Python that has torch, numpy, safetensors and pillow:

    python scripts/make_torch_fixtures.py

The outputs are committed; CI has no PyTorch and only reads them (tests/torch_fixtures.rs).
For each model NAME it writes

    NAME.json             architecture (shared/DESIGN.md, "Model files")
    NAME.safetensors      float32 weights, exactly `save_file(net.state_dict(), ...)`
    NAME.expected.json    PyTorch float64 reference on real images:
                            inputs      [[flat CHW pixels in [0,1]] per image]
                            logits      [[C] per image]
                            jacobians   [[C x n, row-major] per image] d logits / d pixels
                                        (normalisation included); see "jacobian_count"
                            eigenvalues [[C, descending] per image] of G = J^T (diag p - p p^T) J
                            sources     where each input came from

Both files are written with the export recipe printed at the end (RECIPE below), which is executed
verbatim here, so the Rust test that loads them proves the recipe works.

Deterministic: torch.manual_seed(0), float64 reference, the same output on every run.
"""

import gzip
import json
import os
import sys

import numpy as np
import torch
from torch import nn

try:
    from PIL import Image
except ImportError:  # pragma: no cover
    sys.exit("needs pillow: pip install pillow")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "torch")
MNIST_TEST_IMAGES = os.path.join(ROOT, "assets", "data", "mnist", "t10k-images-idx3-ubyte.gz")
CIFAR_DIR = os.path.join(ROOT, "assets", "data", "cifar10-samples")
CIFAR_FILES = ["cifar10_00_3.png", "cifar10_01_8.png", "cifar10_03_0.png", "cifar10_06_1.png"]
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# The CIFAR Jacobians are 10 x 3072 per image; four of them would make a 2 MB file. Keep the first
# CIFAR_JACOBIANS only (logits and eigenvalues are given for every input).
CIFAR_JACOBIANS = 1


# --- The export recipe (printed at the end, and exactly what writes the fixtures) -------------------


def layers_of(net):
    """The "layers" list of the architecture JSON for an nn.Sequential."""
    layers = []
    for name, m in net.named_children():
        if isinstance(m, nn.Conv2d):
            layers.append(dict(type="conv2d", name=name, kernel=m.kernel_size[0], stride=m.stride[0],
                               padding=m.padding[0], **{"in": m.in_channels, "out": m.out_channels}))
        elif isinstance(m, nn.Linear):
            layers.append(dict(type="linear", name=name, **{"in": m.in_features, "out": m.out_features}))
        elif isinstance(m, nn.ReLU):
            layers.append(dict(type="relu"))
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            k, s = m.kernel_size, m.stride
            k, s = (k if isinstance(k, int) else k[0]), (s if isinstance(s, int) else s[0])
            layers.append(dict(type="maxpool2d" if isinstance(m, nn.MaxPool2d) else "avgpool2d", kernel=k, stride=s))
        elif isinstance(m, nn.Flatten):
            layers.append(dict(type="flatten"))
        else:
            raise ValueError(f"layer {name}: {type(m).__name__} has no dataleaf equivalent")
    return layers


RECIPE = """\
from safetensors.torch import save_file
save_file(net.state_dict(), path + ".safetensors")
arch = {"name": name, "input": {"channels": c, "height": h, "width": w},
        "normalize": {"mean": mean, "std": std}, "classes": classes, "layers": layers_of(net)}
with open(path + ".json", "w") as f: json.dump(arch, f, indent=1)
"""


def export(net, path, name, c, h, w, mean, std, classes):
    exec(RECIPE, {"json": json, "layers_of": layers_of}, dict(
        net=net, path=path, name=name, c=c, h=h, w=w, mean=mean, std=std, classes=classes))


# --- Data ---------------------------------------------------------------------------------------------


def mnist_first(n):
    with gzip.open(MNIST_TEST_IMAGES, "rb") as f:
        raw = f.read()
    magic, count, rows, cols = np.frombuffer(raw[:16], dtype=">u4")
    assert magic == 0x803 and rows == 28 and cols == 28 and count >= n
    px = np.frombuffer(raw[16:16 + n * 784], dtype=np.uint8).reshape(n, 1, 28, 28)
    return px, [f"mnist t10k image {i}" for i in range(n)]


def cifar_images():
    ims = []
    for name in CIFAR_FILES:
        im = np.asarray(Image.open(os.path.join(CIFAR_DIR, name)).convert("RGB"), dtype=np.uint8)
        assert im.shape == (32, 32, 3)
        ims.append(im.transpose(2, 0, 1))  # HWC -> CHW
    return np.stack(ims), [f"assets/data/cifar10-samples/{n}" for n in CIFAR_FILES]


def pixels_f32(u8):
    """u8 / 255 rounded to f32, as dataleaf holds pixels; the reference runs on exactly these values."""
    return (u8.astype(np.float32) / np.float32(255.0)).astype(np.float64)


# --- Reference ----------------------------------------------------------------------------------------


def round9(x):
    """Round to 9 significant digits (f32 values round-trip exactly at 9 digits)."""
    return float(f"{float(x):.9g}")


def rounded(a):
    return [round9(v) for v in np.asarray(a, dtype=np.float64).ravel()]


def make_interesting(net, x, mean, std, target_std=3.0):
    """Kaiming-normal weights, small biases, and the last layer scaled so that the logits of the
    fixture inputs spread over a few units (softmax neither uniform nor one-hot)."""
    with torch.no_grad():
        for m in net:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.uniform_(m.bias, -0.1, 0.1)
        z = net(((x - mean) / std).float())
        last = [m for m in net if isinstance(m, nn.Linear)][-1]
        s = target_std / z.std(dim=1).mean().item()
        last.weight.mul_(s)
        last.bias.mul_(s)


@torch.no_grad()
def maxpool_gaps(net64, xn):
    """Over every max-pool window: how many windows have an exact tie for the max (with a positive max),
    and the smallest nonzero gap between the max and the runner-up. A near tie can pick a different
    argmax in f32, and so a different (equally valid) Jacobian."""
    ties, gap = 0, float("inf")
    h = xn.detach()
    for m in net64:
        if isinstance(m, nn.MaxPool2d):
            k = m.kernel_size
            win = h.unfold(2, k, k).unfold(3, k, k).reshape(*h.shape[:2], -1, k * k)
            top2 = win.topk(2, dim=-1).values
            d = top2[..., 0] - top2[..., 1]
            ties += int(((d == 0) & (top2[..., 0] > 0)).sum())
            nz = d[d > 0]
            if nz.numel():
                gap = min(gap, float(nz.min()))
        h = m(h)
    return ties, gap


def reference(net, x, mean, std, jac_count):
    """float64 logits, Jacobians (w.r.t. pixels) and spectra of G for pixel inputs x (N, C, H, W)."""
    net64 = net.double()
    mean = torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
    x = torch.tensor(x, dtype=torch.float64)
    with torch.no_grad():
        logits = net64((x - mean) / std)
    jacobians, eigenvalues = [], []
    for i in range(x.shape[0]):
        f = lambda xi: net64(((xi.unsqueeze(0) - mean) / std)).squeeze(0)
        J = torch.autograd.functional.jacobian(f, x[i]).reshape(logits.shape[1], -1).numpy()
        z = logits[i].numpy()
        p = np.exp(z - z.max())
        p /= p.sum()
        C = len(p)
        B = np.sqrt(p)[:, None] * ((np.eye(C) - np.outer(np.ones(C), p)) @ J)
        ev = np.sort(np.linalg.eigvalsh(B @ B.T))[::-1]
        # Check against the definition once per image (the n x n matrix is small enough here).
        G = J.T @ (np.diag(p) - np.outer(p, p)) @ J
        assert np.allclose(np.trace(G), ev.sum(), rtol=1e-9, atol=1e-12)
        if i < jac_count:
            jacobians.append(rounded(J))
        eigenvalues.append(rounded(ev))
    ties, gap = maxpool_gaps(net64, (x - mean) / std)
    return logits.numpy(), jacobians, eigenvalues, ties, gap


def build(name, net, u8, sources, mean, std, classes, jac_count):
    torch.manual_seed(0)
    x = pixels_f32(u8)
    n, c, h, w = x.shape
    # dataleaf reads mean/std as f32; use those values in the reference too.
    mean32 = [float(np.float32(v)) for v in mean]
    std32 = [float(np.float32(v)) for v in std]
    m_t = torch.tensor(mean32, dtype=torch.float64).view(1, -1, 1, 1)
    s_t = torch.tensor(std32, dtype=torch.float64).view(1, -1, 1, 1)
    make_interesting(net, torch.tensor(x), m_t, s_t)
    net.eval()

    path = os.path.join(OUT, name)
    export(net, path, name, c, h, w, mean, std, classes)  # float32 weights, before .double()

    logits, jacobians, eigenvalues, ties, gap = reference(net, x, mean32, std32, jac_count)
    expected = {
        "model": name,
        "generator": "scripts/make_torch_fixtures.py (torch %s, float64)" % torch.__version__,
        "sources": sources,
        "inputs": [rounded(xi) for xi in x],
        "logits": [rounded(z) for z in logits],
        "eigenvalues": eigenvalues,
        "jacobian_count": len(jacobians),
        "maxpool_exact_ties": ties,
        "maxpool_min_gap": round9(gap),
        "jacobians": jacobians,
    }
    with open(path + ".expected.json", "w") as f:
        json.dump(expected, f, separators=(",", ":"))
        f.write("\n")

    p = torch.softmax(torch.tensor(logits), dim=1).numpy()
    print(f"{name}: logits range [{logits.min():.3f}, {logits.max():.3f}], "
          f"max prob per image {np.round(p.max(axis=1), 3).tolist()}, "
          f"argmax {logits.argmax(axis=1).tolist()}, max-pool exact ties {ties}, min gap {gap:.3g}")
    for ext in (".json", ".safetensors", ".expected.json"):
        print(f"  {name}{ext}: {os.path.getsize(path + ext)} bytes")


def main():
    os.makedirs(OUT, exist_ok=True)

    torch.manual_seed(0)
    mnist = nn.Sequential(
        nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(16 * 7 * 7, 32), nn.ReLU(),
        nn.Linear(32, 10),
    )
    u8, src = mnist_first(4)
    build("mnist-small", mnist, u8, src, [0.1307], [0.3081], [str(d) for d in range(10)], jac_count=4)

    torch.manual_seed(0)
    cifar = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(8, 16, 3, stride=1, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(16 * 8 * 8, 10),
    )
    u8, src = cifar_images()
    build("cifar-small", cifar, u8, src, [0.4914, 0.4822, 0.4465], [0.247, 0.243, 0.261], CIFAR_CLASSES,
          jac_count=CIFAR_JACOBIANS)

    print("\nREADME recipe (export an nn.Sequential for dataleaf; layers_of is in this script):\n")
    print(RECIPE)


if __name__ == "__main__":
    main()
