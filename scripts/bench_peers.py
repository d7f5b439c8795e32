#!/usr/bin/env python3
"""dataleaf's leaf step next to its peers' steps, measured in the same minute (issue 15). Not used by the
tests or the Rust build (CI has neither PyTorch nor JAX). Run from the repository root:

    python3 scripts/bench_peers.py [--dataleaf target/release/dataleaf] [--runs 30] [--rounds 3]
                                   [--models mnist,resnet18,mobilenet_v2] [--json > report.json]
    python3 scripts/bench_peers.py --table report.json     # the table of a saved --json report

The driver needs only the standard library. It starts one worker process per peer, each under its own
interpreter (--torch-python, default /opt/torchenv/bin/python, with torch + torchvision + onnx;
--jax-python, default /opt/jaxenv/bin/python, made once by

    python3 -m venv /opt/jaxenv && /opt/jaxenv/bin/pip install jax numpy safetensors onnx

), so no peer's thread pool is alive and spinning while another is timed; a worker waits on its pipe
while the others run. Every measurement uses --threads (default 2) threads: dataleaf RAYON_NUM_THREADS,
torch.set_num_threads (and OMP_NUM_THREADS), and XLA's CPU client, whose intra-op Eigen pool is sized
by the schedulable cores (XLA_FLAGS="--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads=N"
is set as well; the report counts the pool's "tf_XLAEigen" threads in the JAX worker). The PyTorch worker
runs with OMP_WAIT_POLICY=PASSIVE (--omp-wait-policy): with libgomp's default spin-waiting, two threads
on a 2-core machine that other processes also use made torch's jacrev step 10-20x slower than one
thread (resnet18: 1.2 s against 72 ms a step, load average 10); passive waiting gave 96 ms.

The steps, all float32, one step at the model's start image (MNIST test image 4185 toward 5874 for the
medium CNN; CIFAR-10 sample 0 toward 1 for resnet18 / mobilenet_v2, as `dataleaf bench` picks them):

    dataleaf        `dataleaf bench --json --runs N` (a subprocess): leaf_step_ms, kernel_step_ms (medians
                    over N steps of a walk from the start, which also compute G's spectrum and the
                    off-leaf fraction) and floor_ms, its arithmetic floor on this machine.
    jax             jax.jit of the whole step, in normalised input space (x = (pixels - mean) / std):
                    J = jax.jacrev(log_softmax(model))(x) (C x n), columns j_i / max(|j_i|, 1e-12),
                    c = jnp.linalg.lstsq(J^T, target - x) (SVD, rcond eps * max(n, C)), v = J^T c,
                    u = v / |v|, x' = clip(x + 0.1 u, (0 - mean) / std, (1 - mean) / std). The model is
                    the shipped weights (safetensors) in jax.lax for the medium CNN, and the same ONNX
                    file dataleaf reads, interpreted op by op in jax.numpy, for resnet18 / mobilenet_v2.
                    Timed as step(x, target).block_until_ready() after 5 warm-up calls (compilation).
    torch_jacrev    the same step in PyTorch with torch.func.jacrev and torch.linalg.lstsq (driver gelsy,
                    QR with column pivoting), from scripts/bench_reference.py (steps(jac="jacrev")) and
                    scripts/bench_onnx_reference.py (leaf_step_of), which rebuilds the torchvision
                    networks exactly as scripts/make_onnx_fixtures.py exported them.
    torch_papers    (medium CNN only) the papers' code, scripts/bench_reference.py's leaf step:
                    torch.autograd.functional.jacobian (one backward per class), else as torch_jacrev.

Before timing, each worker returns its logits at the start and its step's result x', and the report
states max |logits_jax - logits_torch| and max |x'_jax - x'_torch| (the JAX model is checked against
PyTorch on the same weights, and the two steps against each other).

Measurements are interleaved: --rounds rounds, each running every tool once per model (N timed runs
each), in the order dataleaf, jax, torch... and reversed in the next round, so that load from other
processes on the machine hits all alike. Reported per tool: the median over rounds of the round
medians ("median") and the best round median ("best"), plus each round's figures. Ratios: peer step
over dataleaf's leaf step of the medians, of the best rounds, and within each round (the pair measured
seconds apart); dataleaf's steps over the lowest floor of the rounds (the floor divides the counted
arithmetic by gemm rates measured in the same run, which load only lowers), and the median of the rounds'
own step / floor ratios (`dataleaf bench` samples those rates between its timed steps, so a round's step
and floor come from the same minutes of a VM whose speed drifts). --json prints one JSON
object instead.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "scripts")
ETA = 0.1
MODELS = ("mnist", "resnet18", "mobilenet_v2")
CIFAR_BIN = os.path.join(ROOT, "assets", "data", "cifar10-samples", "test_batch.bin")
MNIST_MODEL = os.path.join(ROOT, "assets", "models", "mnist-medium-cnn")


# --- Workers: one process per peer, answering one JSON line per request on stdin --------------------


def serve(handlers):
    """Answer requests {"op": ..., ...} read line by line from stdin with one JSON line each on the
    original stdout; anything the libraries print goes to stderr."""
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for line in sys.stdin:
        req = json.loads(line)
        try:
            reply = handlers[req["op"]](req)
        except Exception as e:  # reported by the driver as one error line
            reply = {"error": "%s: %s" % (type(e).__name__, e)}
        out.write(json.dumps(reply) + "\n")
        out.flush()


def timed(f, runs, warmup):
    """Wall times in ms of `runs` calls of f after `warmup` untimed calls."""
    for _ in range(warmup):
        f()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        times.append((time.perf_counter() - t) * 1e3)
    return times


def cifar_pixels(index):
    """CIFAR-10 sample `index` of the shipped batch: bytes / 255 in float32, 3x32x32 (as make_onnx_fixtures.cifar)."""
    import numpy as np
    raw = open(CIFAR_BIN, "rb").read()
    rec = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3073)[index]
    return (rec[1:].astype(np.float32) / np.float32(255.0)).reshape(3, 32, 32)


def cifar_norm(name, onnx_dir):
    """The sidecar's mean and std (as dataleaf reads them), float32, shaped 3x1x1."""
    import numpy as np
    side = json.load(open(os.path.join(onnx_dir, name + ".json")))["normalize"]
    return (np.array(side["mean"], dtype=np.float32).reshape(3, 1, 1),
            np.array(side["std"], dtype=np.float32).reshape(3, 1, 1))


def torch_worker(threads, onnx_dir):
    import torch
    torch.set_num_threads(threads)
    sys.path.insert(0, SCRIPTS)
    import bench_reference as ref
    steps = {}  # (model, variant) -> (step, x)
    logits = {}

    def load(req):
        name = req["model"]
        if name == "mnist":
            _, _, model = ref.load(MNIST_MODEL)
            mean, std = 0.1307, 0.3081
            start = (ref.mnist(4185) - mean) / std
            target = (ref.mnist(5874) - mean) / std
            lo, hi = (0 - mean) / std, (1 - mean) / std
            direction = torch.randn(start.numel(), generator=torch.Generator().manual_seed(0))
            for variant, jac in (("torch_jacrev", "jacrev"), ("torch_papers", "autograd")):
                steps[(name, variant)] = (ref.steps(model, target, lo, hi, direction, "gelsy", jac)[1], start)
            with torch.no_grad():
                logits[name] = model[0](start.unsqueeze(0))[0]
        else:
            import bench_onnx_reference as oref
            fx = oref.fx
            full = {n: (b, floor) for n, b, floor in fx.FULL_SIZE}
            _, px = fx.cifar()
            builder, floor = full[name]
            net = fx.prepared(builder, torch.tensor(px, dtype=torch.float32), floor, normalize=True)
            x = torch.tensor(px[0], dtype=torch.float32)
            target = torch.tensor(px[1], dtype=torch.float32)
            step, start = oref.leaf_step_of(net, x, target, "gelsy")
            steps[(name, "torch_jacrev")] = (step, start)
            with torch.no_grad():
                logits[name] = net(start.unsqueeze(0))[0]
        out = {"version": torch.__version__, "threads": torch.get_num_threads(),
               "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
               "logits": logits[name].tolist(), "steps": {}}
        for (m, variant), (step, x) in steps.items():
            if m == name:
                out["steps"][variant] = step(x).flatten().tolist()
        return out

    def run(req):
        step, x = steps[(req["model"], req["step"])]
        return {"times_ms": timed(lambda: step(x), req["runs"], req["warmup"])}

    serve({"load": load, "time": run})


def jax_worker(threads, onnx_dir):
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax import lax
    jax.config.update("jax_platforms", "cpu")
    steps = {}

    def conv(x, w, b, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1):
        y = lax.conv_general_dilated(x, w, stride, [(pads[0], pads[2]), (pads[1], pads[3])],
                                     rhs_dilation=dilation, dimension_numbers=("NCHW", "OIHW", "NCHW"),
                                     feature_group_count=groups)
        return y if b is None else y + b[None, :, None, None]

    def maxpool(x, k, s, pads=(0, 0, 0, 0)):
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, 1) + tuple(k), (1, 1) + tuple(s),
                                 [(0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])])

    def sequential_model(path):
        """The medium CNN of a dataleaf .json architecture + .safetensors weights, on NCHW arrays."""
        from safetensors.numpy import load_file
        arch = json.load(open(path + ".json"))
        w = {k: jnp.asarray(v) for k, v in load_file(path + ".safetensors").items()}

        def net(x):
            for spec in arch["layers"]:
                t = spec["type"]
                if t == "conv2d":
                    s, p = spec.get("stride", 1), spec.get("padding", 0)
                    x = conv(x, w[spec["name"] + ".weight"], w[spec["name"] + ".bias"], (s, s), (p,) * 4)
                elif t == "linear":
                    x = x @ w[spec["name"] + ".weight"].T + w[spec["name"] + ".bias"]
                elif t == "relu":
                    x = jnp.maximum(x, 0)
                elif t == "maxpool2d":
                    k = spec["kernel"]
                    s = spec.get("stride") or k
                    x = maxpool(x, (k, k), (s, s))
                elif t == "flatten":
                    x = x.reshape(x.shape[0], -1)
                else:
                    raise ValueError("layer %s not in the JAX model" % t)
            return x
        return net

    def onnx_model(path):
        """An ONNX graph of Conv, Relu, Clip, Add, MaxPool, GlobalAveragePool, Flatten, Gemm and
        Constant nodes, evaluated node by node in jax.numpy (the graph takes the normalised input)."""
        import onnx
        from onnx import numpy_helper
        g = onnx.load(path).graph
        consts = {t.name: np.asarray(numpy_helper.to_array(t)) for t in g.initializer}
        nodes = []
        for n in g.node:
            a = {at.name: onnx.helper.get_attribute_value(at) for at in n.attribute}
            if n.op_type == "Constant":
                consts[n.output[0]] = np.asarray(numpy_helper.to_array(a["value"]))
            else:
                nodes.append((n.op_type, list(n.input), n.output[0], a))
        params = {k: jnp.asarray(v) for k, v in consts.items()}
        source, sink = g.input[0].name, g.output[0].name

        def net(x):
            v = dict(params)
            v[source] = x
            for op, ins, out, a in nodes:
                i = [v[k] if k else None for k in ins]
                if op == "Conv":
                    y = conv(i[0], i[1], i[2] if len(i) > 2 else None, tuple(a.get("strides", (1, 1))),
                             tuple(a.get("pads", (0, 0, 0, 0))), tuple(a.get("dilations", (1, 1))),
                             a.get("group", 1))
                elif op == "Relu":
                    y = jnp.maximum(i[0], 0)
                elif op == "Clip":
                    y = jnp.clip(i[0], i[1], i[2])
                elif op == "Add":
                    y = i[0] + i[1]
                elif op == "MaxPool":
                    assert not a.get("ceil_mode", 0) and tuple(a.get("dilations", (1, 1))) == (1, 1)
                    y = maxpool(i[0], a["kernel_shape"], a.get("strides", (1, 1)), a.get("pads", (0, 0, 0, 0)))
                elif op == "GlobalAveragePool":
                    y = jnp.mean(i[0], axis=(2, 3), keepdims=True)
                elif op == "Flatten":
                    axis = a.get("axis", 1)
                    y = i[0].reshape(int(np.prod(i[0].shape[:axis])), -1)
                elif op == "Gemm":
                    aa = i[0].T if a.get("transA", 0) else i[0]
                    bb = i[1].T if a.get("transB", 0) else i[1]
                    y = a.get("alpha", 1.0) * (aa @ bb)
                    if len(i) > 2 and i[2] is not None:
                        y = y + a.get("beta", 1.0) * i[2]
                else:
                    raise ValueError("%s: ONNX operator %s not in the JAX interpreter" % (path, op))
                v[out] = y
            return v[sink]
        return net

    def leaf_step_of(net, lo, hi):
        """jax.jit of the whole leaf step (see the module docstring)."""
        def log_probs(x):
            return jax.nn.log_softmax(net(x[None]), axis=-1)[0]

        @jax.jit
        def step(x, target):
            j = jax.jacrev(log_probs)(x)                   # C x (x.shape)
            j = j.reshape(j.shape[0], -1).T                # n x C
            j = j / jnp.maximum(jnp.linalg.norm(j, axis=0), 1e-12)
            d = (target - x).reshape(-1)
            coeff = jnp.linalg.lstsq(j, d)[0]
            v = j @ coeff
            u = (v / jnp.maximum(jnp.linalg.norm(v), 1e-12)).reshape(x.shape)
            return jnp.clip(x + ETA * u, lo, hi)
        return step

    def eigen_threads():
        names = []
        for t in os.listdir("/proc/self/task"):
            try:
                names.append(open("/proc/self/task/%s/comm" % t).read().strip())
            except OSError:
                pass
        return sum(1 for n in names if "Eigen" in n)

    def load(req):
        name = req["model"]
        if name == "mnist":
            import gzip
            raw = gzip.open(os.path.join(ROOT, "assets", "data", "mnist", "t10k-images-idx3-ubyte.gz")).read()

            def image(i):  # as bench_reference.mnist: bytes / 255 in float64, then float32
                px = np.frombuffer(raw[16 + i * 784:16 + (i + 1) * 784], dtype=np.uint8)
                return (px.reshape(1, 28, 28) / 255.0).astype(np.float32)
            mean, std = np.float32(0.1307), np.float32(0.3081)
            net = sequential_model(MNIST_MODEL)
            start, target = (image(4185) - mean) / std, (image(5874) - mean) / std
        else:
            mean, std = cifar_norm(name, onnx_dir)
            net = onnx_model(os.path.join(onnx_dir, name + ".onnx"))
            start, target = (cifar_pixels(0) - mean) / std, (cifar_pixels(1) - mean) / std
        lo, hi = (0 - mean) / std, (1 - mean) / std
        step = leaf_step_of(net, jnp.asarray(lo), jnp.asarray(hi))
        x, t = jnp.asarray(start), jnp.asarray(target)
        steps[name] = (step, x, t)
        moved = step(x, t).block_until_ready()
        return {"version": jax.__version__, "backend": jax.default_backend(),
                "xla_flags": os.environ.get("XLA_FLAGS", ""), "eigen_threads": eigen_threads(),
                "logits": np.asarray(jax.jit(net)(x[None])[0]).tolist(),
                "steps": {"jax": np.asarray(moved).flatten().tolist()}}

    def run(req):
        step, x, t = steps[req["model"]]
        times = timed(lambda: step(x, t).block_until_ready(), req["runs"], req["warmup"])
        return {"times_ms": times, "eigen_threads": eigen_threads()}

    serve({"load": load, "time": run})


# --- Driver ---------------------------------------------------------------------------------------------


class Worker:
    def __init__(self, python, kind, args):
        env = dict(os.environ)
        n = str(args.threads)
        env.update(OMP_NUM_THREADS=n, MKL_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n,
                   XLA_FLAGS="--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads=" + n,
                   JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
        if kind == "torch" and args.omp_wait_policy != "default":
            env["OMP_WAIT_POLICY"] = args.omp_wait_policy
        cmd = [python, os.path.abspath(__file__), "--worker", kind, "--threads", n, "--onnx-dir", args.onnx_dir]
        self.kind = kind
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL if not args.verbose else None, text=True)

    def ask(self, **req):
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit("error: the %s worker exited (run with --verbose to see why)" % self.kind)
        reply = json.loads(line)
        if "error" in reply:
            raise SystemExit("error: %s worker, %s: %s" % (self.kind, req.get("model"), reply["error"]))
        return reply

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def dataleaf_bench(args, model):
    cmd = [args.dataleaf, "bench", "--json", "--runs", str(args.runs)]
    if model != "mnist":
        cmd += ["--model", os.path.join(args.onnx_dir, model + ".onnx"),
                "--dataset", os.path.join(ROOT, "assets", "data", "cifar10-samples")]
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit("error: %s: %s" % (" ".join(cmd), (p.stderr.strip() or "exit %d" % p.returncode)))
    return json.loads(p.stdout.strip().splitlines()[-1])


def max_abs(a, b):
    return max(abs(x - y) for x, y in zip(a, b))


def summary(values):
    return {"median": statistics.median(values), "best": min(values)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataleaf", default=os.path.join(ROOT, "target", "release", "dataleaf"))
    ap.add_argument("--runs", type=int, default=30, help="timed steps per tool per round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (order reversed each round)")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--onnx-dir", default=os.path.join(ROOT, "target", "onnx-bench"),
                    help="resnet18.onnx, mobilenet_v2.onnx and their sidecars (scripts/make_onnx_fixtures.py)")
    ap.add_argument("--torch-python", default="/opt/torchenv/bin/python")
    ap.add_argument("--jax-python", default="/opt/jaxenv/bin/python")
    ap.add_argument("--omp-wait-policy", default="PASSIVE", choices=["PASSIVE", "ACTIVE", "default"],
                    help="OMP_WAIT_POLICY of the PyTorch worker ('default': left unset, libgomp spins)")
    ap.add_argument("--no-jax", action="store_true", help="leave out the JAX peer")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument("--table", metavar="FILE", help="print the table of a report saved with --json, and stop")
    ap.add_argument("--verbose", action="store_true", help="show the workers' stderr")
    ap.add_argument("--worker", choices=["torch", "jax"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.onnx_dir = os.path.abspath(args.onnx_dir)
    if args.worker:
        (torch_worker if args.worker == "torch" else jax_worker)(args.threads, args.onnx_dir)
        return
    if args.table:
        try:
            print_report(json.load(open(args.table)))
        except (OSError, ValueError, KeyError) as e:
            raise SystemExit("error: %s: not a report of bench_peers.py --json (%s)" % (args.table, e))
        return
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in models:
        if m not in MODELS:
            raise SystemExit("error: --models: unknown model %r (choose from %s)" % (m, ", ".join(MODELS)))
        if m != "mnist" and not os.path.exists(os.path.join(args.onnx_dir, m + ".onnx")):
            raise SystemExit("error: %s: missing (make it with scripts/make_onnx_fixtures.py)"
                             % os.path.join(args.onnx_dir, m + ".onnx"))
    if not os.access(args.dataleaf, os.X_OK):
        raise SystemExit("error: %s: no dataleaf binary there (cargo build --release, or --dataleaf PATH)" % args.dataleaf)
    for python in [args.torch_python] + ([] if args.no_jax else [args.jax_python]):
        if not os.access(python, os.X_OK):
            raise SystemExit("error: %s: no such interpreter (see the docstring for the JAX venv, or --no-jax)" % python)

    workers = {"torch": Worker(args.torch_python, "torch", args)}
    if not args.no_jax:
        workers["jax"] = Worker(args.jax_python, "jax", args)
    report = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "runs": args.runs,
              "rounds": args.rounds, "threads": args.threads, "load_average_start": os.getloadavg(),
              "dataleaf": args.dataleaf, "models": {}}
    try:
        for m in models:
            report["models"][m] = bench_model(m, workers, args)
    finally:
        for w in workers.values():
            w.close()
    report["load_average_end"] = os.getloadavg()
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report)


def bench_model(m, workers, args):
    loaded = {kind: w.ask(op="load", model=m) for kind, w in workers.items()}
    tools = ["dataleaf"] + (["jax"] if "jax" in workers else []) + ["torch_jacrev"]
    if m == "mnist":
        tools.append("torch_papers")
    out = {"versions": {k: v["version"] for k, v in loaded.items()},
           "torch_threads": loaded["torch"]["threads"], "torch_omp_wait_policy": loaded["torch"]["omp_wait_policy"]}
    if "jax" in loaded:
        j, t = loaded["jax"], loaded["torch"]
        out["xla"] = {"backend": j["backend"], "eigen_threads": j["eigen_threads"], "xla_flags": j["xla_flags"]}
        # The JAX model against PyTorch on the same weights, and the JAX step against the PyTorch step.
        out["check"] = {
            "logits_max_abs_diff": max_abs(j["logits"], t["logits"]),
            "logits_max_abs": max(abs(v) for v in t["logits"]),
            "step_max_abs_diff_jax_torch_jacrev": max_abs(j["steps"]["jax"], t["steps"]["torch_jacrev"]),
        }
        if "torch_papers" in t["steps"]:
            out["check"]["step_max_abs_diff_jacrev_papers"] = max_abs(t["steps"]["torch_jacrev"],
                                                                      t["steps"]["torch_papers"])
    rounds = []
    for r in range(args.rounds):
        order = tools if r % 2 == 0 else tools[::-1]
        row = {"time": time.strftime("%H:%M:%S", time.gmtime()), "load_average_1min": os.getloadavg()[0]}
        for tool in order:
            if tool == "dataleaf":
                d = dataleaf_bench(args, m)
                row["dataleaf"] = {k: d[k] for k in ("leaf_step_ms", "kernel_step_ms", "floor_ms", "jacobian_ms",
                                                     "spectrum_ms", "threads")}
            else:
                w = workers["jax" if tool == "jax" else "torch"]
                reply = w.ask(op="time", model=m, step=tool, runs=args.runs, warmup=5)
                times = reply["times_ms"]
                row[tool] = {"median_ms": statistics.median(times), "min_ms": min(times)}
                if "eigen_threads" in reply:
                    out.setdefault("xla", {})["eigen_threads_while_timed"] = reply["eigen_threads"]
        rounds.append(row)
    out["rounds"] = rounds
    leaf = [r["dataleaf"]["leaf_step_ms"] for r in rounds]
    res = {"dataleaf_leaf_step_ms": summary(leaf),
           "dataleaf_kernel_step_ms": summary([r["dataleaf"]["kernel_step_ms"] for r in rounds]),
           "dataleaf_floor_ms": summary([r["dataleaf"]["floor_ms"] for r in rounds])}
    for tool in tools[1:]:
        res[tool + "_step_ms"] = summary([r[tool]["median_ms"] for r in rounds])
        res[tool + "_fastest_run_ms"] = min(r[tool]["min_ms"] for r in rounds)
    out["results"] = res
    med = {k: v["median"] for k, v in res.items() if isinstance(v, dict)}
    best = {k: v["best"] for k, v in res.items() if isinstance(v, dict)}
    # The floor is the step's arithmetic over the gemm rates each run measures: load only ever raises
    # it, so the lowest floor of the rounds is the machine's, and the ratios use it.
    floor = best["dataleaf_floor_ms"]
    ratios = {"leaf_over_floor": med["dataleaf_leaf_step_ms"] / floor,
              "kernel_over_floor": med["dataleaf_kernel_step_ms"] / floor,
              "leaf_over_floor_per_round": [r["dataleaf"]["leaf_step_ms"] / r["dataleaf"]["floor_ms"] for r in rounds],
              "kernel_over_floor_per_round": [r["dataleaf"]["kernel_step_ms"] / r["dataleaf"]["floor_ms"] for r in rounds]}
    # Each round's floor divides by gemm rates sampled between that round's own steps: the median of
    # the rounds' ratios compares step and floor measured in the same minutes.
    ratios["leaf_over_floor_median_of_rounds"] = statistics.median(ratios["leaf_over_floor_per_round"])
    ratios["kernel_over_floor_median_of_rounds"] = statistics.median(ratios["kernel_over_floor_per_round"])
    for tool in tools[1:]:
        ratios[tool + "_over_leaf"] = med[tool + "_step_ms"] / med["dataleaf_leaf_step_ms"]
        ratios[tool + "_over_leaf_best"] = best[tool + "_step_ms"] / best["dataleaf_leaf_step_ms"]
        # The same ratio within each round: the pairs measured seconds apart.
        ratios[tool + "_over_leaf_per_round"] = [r[tool]["median_ms"] / r["dataleaf"]["leaf_step_ms"] for r in rounds]
    out["ratios"] = ratios
    return out


def print_report(rep):
    print("dataleaf and its peers, %d thread(s) each, %d rounds x %d runs, interleaved; started %s,"
          " load average %.2f at the start, %.2f at the end"
          % (rep["threads"], rep["rounds"], rep["runs"], rep["started"], rep["load_average_start"][0],
             rep["load_average_end"][0]))
    print("dataleaf: %s" % rep["dataleaf"])
    for m, o in rep["models"].items():
        print("\n## %s  (versions: %s)" % (m, ", ".join("%s %s" % kv for kv in o["versions"].items())))
        print("PyTorch: %d threads, OMP_WAIT_POLICY %s" % (o["torch_threads"], o["torch_omp_wait_policy"]))
        if "xla" in o:
            x = o["xla"]
            print("XLA %s backend, intra-op Eigen pool: %s threads (while timed: %s); XLA_FLAGS=%r"
                  % (x["backend"], x["eigen_threads"], x.get("eigen_threads_while_timed"), x["xla_flags"]))
        if "check" in o:
            c = o["check"]
            line = ("check: max |logits jax - torch| %.2e (logits up to %.1f); max |x' jax - x' torch_jacrev| %.2e"
                    % (c["logits_max_abs_diff"], c["logits_max_abs"], c["step_max_abs_diff_jax_torch_jacrev"]))
            if "step_max_abs_diff_jacrev_papers" in c:
                line += "; torch_jacrev vs torch_papers %.2e" % c["step_max_abs_diff_jacrev_papers"]
            print(line + " (step length %.1f)" % ETA)
        tools = [k[:-len("_step_ms")] for k in o["results"] if k.endswith("_step_ms") and not k.startswith("dataleaf")]
        head = ["round", "time", "load"] + ["dataleaf leaf", "kernel", "floor"] + tools
        print("\n| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for i, r in enumerate(o["rounds"]):
            d = r["dataleaf"]
            cells = [str(i + 1), r["time"], "%.2f" % r["load_average_1min"],
                     "%.3f" % d["leaf_step_ms"], "%.3f" % d["kernel_step_ms"], "%.3f" % d["floor_ms"]]
            cells += ["%.3f (min %.3f)" % (r[t]["median_ms"], r[t]["min_ms"]) for t in tools]
            print("| " + " | ".join(cells) + " |")
        res = o["results"]
        for stat in ("median", "best"):
            cells = [stat, "", ""] + ["%.3f" % res["dataleaf_%s_ms" % k][stat] for k in ("leaf_step", "kernel_step", "floor")]
            cells += ["%.3f" % res[t + "_step_ms"][stat] for t in tools]
            print("| " + " | ".join(cells) + " |")
        ra = o["ratios"]
        print("\nms per step (dataleaf: medians of its runs; peers: median (fastest run) of theirs);"
              " 'median' = median of the round figures, 'best' = the best round")
        print("dataleaf leaf step / floor %.2fx, kernel step / floor %.2fx (median step over the lowest floor;"
              " leaf / floor per round %s)" % (ra["leaf_over_floor"], ra["kernel_over_floor"],
                                              ", ".join("%.2f" % v for v in ra["leaf_over_floor_per_round"])))
        if "leaf_over_floor_median_of_rounds" in ra:
            print("dataleaf leaf step / floor %.2fx, kernel step / floor %.2fx (median of the rounds' own ratios;"
                  " kernel / floor per round %s)" % (ra["leaf_over_floor_median_of_rounds"],
                                                     ra["kernel_over_floor_median_of_rounds"],
                                                     ", ".join("%.2f" % v for v in ra["kernel_over_floor_per_round"])))
        for t in tools:
            print("%s step / dataleaf leaf step: %.2fx (best rounds %.2fx; per round %s)"
                  % (t, ra[t + "_over_leaf"], ra[t + "_over_leaf_best"],
                     ", ".join("%.2f" % v for v in ra[t + "_over_leaf_per_round"])))


if __name__ == "__main__":
    main()
