#!/usr/bin/env python3
"""PyTorch reference of the authors' walk step, on dataleaf's shipped weights, for side-by-side timing
with `dataleaf bench`. Not used by the tests (CI has no PyTorch). Run from the repository root:

    python scripts/bench_reference.py [--model assets/models/mnist-medium-cnn] [--runs 30]

A step, as in the papers' code: the Jacobian of the log-softmax model by torch.autograd.functional.jacobian,
gradient columns normalised to unit length, then either the least-squares projection of the direction onto
them (leaf step) or a complete QR of the n x C matrix and the projection onto the last n - C + 1 columns
of Q (kernel step), the displacement normalised, x <- clamp(x + eta u). Normalised input space, eta 0.1.
"""
import argparse
import gzip
import json
import statistics
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.autograd.functional import jacobian


def build(arch):
    layers = []
    for spec in arch["layers"]:
        t = spec["type"]
        if t == "conv2d":
            layers.append(nn.Conv2d(spec["in"], spec["out"], spec["kernel"], spec.get("stride", 1), spec.get("padding", 0)))
        elif t == "linear":
            layers.append(nn.Linear(spec["in"], spec["out"]))
        elif t == "relu":
            layers.append(nn.ReLU())
        elif t == "maxpool2d":
            layers.append(nn.MaxPool2d(spec["kernel"], spec.get("stride") or spec["kernel"]))
        elif t == "avgpool2d":
            layers.append(nn.AvgPool2d(spec["kernel"], spec.get("stride") or spec["kernel"]))
        elif t == "flatten":
            layers.append(nn.Flatten())
    return nn.Sequential(*layers)


def load(path):
    """The shipped model at `path` (.json + .safetensors): (arch, net, net followed by LogSoftmax)."""
    arch = json.load(open(path + ".json"))
    net = build(arch)
    net.load_state_dict(load_file(path + ".safetensors"))
    net.eval()
    return arch, net, nn.Sequential(net, nn.LogSoftmax(dim=1))


def steps(model, target, lo, hi, direction, driver="gelsy", jac="autograd"):
    """(columns, leaf_step, kernel_step) of the log-softmax `model` in normalised input space.

    jac="autograd": torch.autograd.functional.jacobian (one backward per class, the papers' code);
    jac="jacrev": torch.func.jacrev (vmapped backward)."""
    if jac == "jacrev":
        rev = torch.func.jacrev(lambda xi: model(xi.unsqueeze(0)).squeeze(0))
    else:
        def rev(xi):
            return jacobian(model, xi.unsqueeze(0)).squeeze(0)

    def columns(x):
        j = rev(x)
        return F.normalize(j.reshape(j.shape[0], -1).T, dim=0)

    def leaf_step(x):
        j = columns(x)
        d = (target - x).flatten()
        coeff = torch.linalg.lstsq(j, d.unsqueeze(1), driver=driver).solution[:, 0]
        u = F.normalize(j @ coeff, dim=-1).reshape(x.shape)
        return torch.clamp(x + 0.1 * u, lo, hi)

    def kernel_step(x):
        j = columns(x)
        q = torch.linalg.qr(j, mode="complete").Q[:, j.shape[1] - 1:]
        coeff = torch.linalg.lstsq(q, direction.unsqueeze(1)).solution[:, 0]
        u = F.normalize(q @ coeff, dim=-1).reshape(x.shape)
        return torch.clamp(x + 0.1 * u, lo, hi)

    return columns, leaf_step, kernel_step


def mnist(index):
    with gzip.open("assets/data/mnist/t10k-images-idx3-ubyte.gz", "rb") as f:
        raw = f.read()
    px = np.frombuffer(raw[16 + index * 784:16 + (index + 1) * 784], dtype=np.uint8)
    return torch.tensor(px.reshape(1, 28, 28) / 255.0, dtype=torch.float32)


def median_ms(runs, f):
    for _ in range(3):
        f()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="assets/models/mnist-medium-cnn")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=0)
    # The papers' code used torch.lstsq (LAPACK gels: no rank detection); its successor
    # torch.linalg.lstsq defaults to gelsy, which detects that the C columns span only C - 1 dimensions.
    ap.add_argument("--driver", default="gelsy", choices=["gels", "gelsy", "gelsd", "gelss"])
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    arch, net, model = load(args.model)
    mean, std = 0.1307, 0.3081
    start = (mnist(4185) - mean) / std
    target = (mnist(5874) - mean) / std
    lo, hi = (0 - mean) / std, (1 - mean) / std
    direction = torch.randn(start.numel(), generator=torch.Generator().manual_seed(0))
    columns, leaf_step, kernel_step = steps(model, target, lo, hi, direction, args.driver)

    with torch.no_grad():
        forward_ms = median_ms(args.runs, lambda: model(start.unsqueeze(0)))
    jacobian_ms = median_ms(args.runs, lambda: columns(start))
    leaf_ms = median_ms(args.runs, lambda: leaf_step(start))
    kernel_ms = median_ms(max(5, args.runs // 3), lambda: kernel_step(start))

    model64 = nn.Sequential(build(arch), nn.LogSoftmax(dim=1)).double()
    model64[0].load_state_dict(net.state_dict())

    def off_leaf(x, moved):
        # Fraction of a displacement outside D_x = span{grad log p_i}, in float64: the gradients span
        # C - 1 dimensions (sum_i p_i grad log p_i = 0), so the leaf basis is the top C - 1 left
        # singular vectors.
        j = jacobian(model64, x.double().unsqueeze(0)).squeeze(0)
        j = j.reshape(j.shape[0], -1).T
        u = torch.linalg.svd(j, full_matrices=False).U[:, : j.shape[1] - 1]
        d = moved.double().flatten()
        inside = u @ (u.T @ d)
        return float(torch.norm(d - inside) / torch.norm(d))

    # A whole leaf walk 4185 -> 5874 as the papers run it (stop at distance 1.0, at most 10000 steps);
    # every 10th step's drift off the leaf is measured outside the timed part.
    x, steps, walk_s, drift = start.clone(), 0, 0.0, []
    while torch.norm(target - x) > 1.0 and steps < 10000:
        t0 = time.perf_counter()
        x_next = leaf_step(x)
        walk_s += time.perf_counter() - t0
        if steps % 10 == 0:
            drift.append(off_leaf(x, x_next - x))
        x = x_next
        steps += 1
    print(json.dumps({
        "torch": torch.__version__, "threads": torch.get_num_threads(), "driver": args.driver,
        "forward_ms": forward_ms, "jacobian_ms": jacobian_ms,
        "leaf_step_ms": leaf_ms, "kernel_step_ms": kernel_ms,
        "walk_4185_5874": {"steps": steps, "reached": bool(torch.norm(target - x) <= 1.0),
                           "final_distance_pixels": float(torch.norm(target - x)) * std, "seconds": walk_s,
                           "mean_off_leaf_fraction": statistics.mean(drift)},
    }))


if __name__ == "__main__":
    main()
