#!/usr/bin/env python3
"""PyTorch reference timings for the full-size torchvision models of issue 12 (resnet18, mobilenet_v2 at
3x32x32, 10 classes), for side-by-side comparison with `dataleaf bench --model target/onnx-bench/X.onnx`.
Not used by the tests (CI has no PyTorch). Run from the repository root:

    /opt/torchenv/bin/python scripts/bench_onnx_reference.py [--runs 30] [--threads 2]

The networks are built exactly as scripts/make_onnx_fixtures.py builds the ones it writes to
target/onnx-bench/ (same seed, BatchNorm statistics and logit scaling), so the weights are the same.
At CIFAR-10 test image 0 (assets/data/cifar10-samples/test_batch.bin), medians of --runs after warm-up:

    forward_ms      net(normalise(x)) under no_grad, float32
    jacobian_ms     torch.func.jacrev of the logits w.r.t. the pixels (normalisation inside), float32
    jacobian_autograd_ms  the same by torch.autograd.functional.jacobian (one backward per class)
    leaf_step_ms    as scripts/bench_reference.py: jacrev of the log-softmax model in normalised input
                    space, gradient columns normalised, torch.linalg.lstsq projection of (target - x)
                    onto their span (target: image 1), the displacement normalised, x + 0.1 u clamped
                    to the normalised image box

Prints one JSON line: each figure as the median (X_ms) and the fastest run (X_min_ms). The two
threads' OpenMP barriers make the medians very sensitive to other processes on a 2-core machine; compare
with dataleaf measured in the same minute.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.functional import jacobian

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_onnx_fixtures as fx  # noqa: E402


def median_ms(runs, f, warmup=5):
    for _ in range(warmup):
        f()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), min(times)


def leaf_step_of(net, x, target, driver="gelsy"):
    """The leaf step of the papers' code, in normalised input space (as scripts/bench_reference.py):
    torch.func.jacrev of the log-softmax model, gradient columns normalised, torch.linalg.lstsq
    projection of (target - x) onto their span, the displacement normalised, x + 0.1 u clamped to the
    normalised image box. `x`, `target`: pixels in [0, 1], 3x32x32. Returns (leaf_step, normalised x)."""
    mean = torch.tensor(fx.f32(fx.MEAN)).view(1, 3, 1, 1)
    std = torch.tensor(fx.f32(fx.STD)).view(1, 3, 1, 1)
    model = nn.Sequential(net, nn.LogSoftmax(dim=1))
    xn, tn = ((x.unsqueeze(0) - mean) / std).squeeze(0), ((target.unsqueeze(0) - mean) / std).squeeze(0)
    lo, hi = (0 - mean) / std, (1 - mean) / std
    jac_ls = torch.func.jacrev(lambda xi: model(xi.unsqueeze(0)).squeeze(0))

    def leaf_step(xi):
        j = jac_ls(xi)
        j = F.normalize(j.reshape(j.shape[0], -1).T, dim=0)
        d = (tn - xi).flatten()
        coeff = torch.linalg.lstsq(j, d.unsqueeze(1), driver=driver).solution[:, 0]
        u = F.normalize(j @ coeff, dim=-1).reshape(xi.shape)
        return torch.max(torch.min(xi + 0.1 * u, hi[0]), lo[0])

    return leaf_step, xn


def bench(name, builder, floor, images, px, runs, driver):
    net = fx.prepared(builder, images, floor, normalize=True)
    mean = torch.tensor(fx.f32(fx.MEAN)).view(1, 3, 1, 1)
    std = torch.tensor(fx.f32(fx.STD)).view(1, 3, 1, 1)
    x = torch.tensor(px[0], dtype=torch.float32)          # pixels in [0, 1], 3x32x32
    target = torch.tensor(px[1], dtype=torch.float32)

    def logits(xi):
        return net((xi.unsqueeze(0) - mean) / std).squeeze(0)

    with torch.no_grad():
        forward = median_ms(runs, lambda: logits(x))
    jac = torch.func.jacrev(logits)
    jacobian_ = median_ms(runs, lambda: jac(x))
    jacobian_autograd = median_ms(runs, lambda: jacobian(logits, x))

    leaf_step, xn = leaf_step_of(net, x, target, driver)
    leaf = median_ms(runs, lambda: leaf_step(xn))
    out = {"parameters": sum(p.numel() for p in net.parameters())}
    for key, (med, best) in (("forward", forward), ("jacobian", jacobian_), ("jacobian_autograd", jacobian_autograd),
                             ("leaf_step", leaf)):
        out[key + "_ms"] = round(med, 3)      # median of --runs
        out[key + "_min_ms"] = round(best, 3)  # fastest run: less sensitive to other processes on the machine
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--driver", default="gelsy", choices=["gels", "gelsy", "gelsd", "gelss"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    _, px = fx.cifar()
    images = torch.tensor(px, dtype=torch.float32)
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "runs": args.runs,
           "driver": args.driver, "input": "cifar10 test_batch.bin image 0 (leaf-step target: image 1)"}
    full = {name: (builder, floor) for name, builder, floor in fx.FULL_SIZE}
    for name in ("resnet18", "mobilenet_v2"):
        out[name] = bench(name, *full[name], images, px, args.runs, args.driver)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
