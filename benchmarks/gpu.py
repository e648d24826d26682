#!/usr/bin/env python3
"""GPU benchmark: minirec's Numba-CUDA kernels and cell layers on CuPy, beside copy bandwidth and
optional anchors (cuDNN LSTM/GRU, the `sru` package, `accelerated_scan`, `minGRU_pytorch`).

For every shape (T, B, D) it measures

* **layers**: one `RecurrentLayer` (hidden size D), forward + backward, input projection included,
  on CuPy arrays — what a training step pays per layer;
* **kernels**: the registered ``cuda`` recurrence kernels alone (forward, backward), with the
  effective bandwidth (bytes of the arrays read and written, counted once) next to a CuPy copy
  of the same number of bytes;
* **anchors**, each only when importable and each in its own try/except.

Timing (DESIGN.md): CUDA events around many back-to-back calls after a warm-up (Numba compiles on
the first call), the GPU time per call from the events, and the CPU time per call (the host side:
Python, argument conversion, launches) beside it; when the CPU time is the larger, the launches,
not the GPU, set the speed. The results are printed as tables last.

    python benchmarks/gpu.py                       # every cell, the four shapes (needs a GPU + CuPy)
    python benchmarks/gpu.py --shapes 512x32x512 --cells sru,mingru --no-anchors
    python benchmarks/gpu.py --dry-run             # what would run (no GPU needed)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

SHAPES = ((512, 32, 512), (128, 64, 1024), (2048, 16, 512), (4096, 8, 256))
# cell specs "name[:mode]" for the layer table (modes of minGRU/minLSTM; gru:reset_after, cuDNN's form)
LAYERS = ("sru", "qrnn", "lrn", "glrn", "elrn", "olrn", "mingru", "mingru:sequential", "mingru:log",
          "minlstm", "fofe", "gru", "gru:reset_after", "lstm", "mgu", "sgu", "atr")
KERNELS = ("sru", "qrnn", "lrn", "glrn", "elrn", "olrn", "mingru:sequential", "mingru:parallel", "mingru:log",
           "minlstm:parallel", "scan:blelloch", "scan:sequential", "scan:log")
ANCHORS = ("torch-lstm", "torch-gru", "sru-package", "accelerated-scan", "minGRU-pytorch")


# ---- arguments and tables (no GPU needed) ------------------------------------------------------------
def parse_shape(text: str):
    parts = text.lower().replace("×", "x").split("x")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"a shape is TxBxD with positive integers, got {text!r}")
    return tuple(int(p) for p in parts)


def _names(text, known, what):
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {what}: {', '.join(unknown)}; known: {', '.join(known)}")
    return names


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Tables are printed last. Needs CuPy and a CUDA GPU except with --dry-run.")
    p.add_argument("--shapes", type=lambda s: [parse_shape(x) for x in s.split(",")], default=list(SHAPES),
                   help=f"comma-separated TxBxD (default: {','.join(map(shape_name, SHAPES))})")
    p.add_argument("--cells", type=lambda s: _names(s, LAYERS, "layer"), default=list(LAYERS),
                   help="layers to time, name[:mode] (default: all)")
    p.add_argument("--kernels", type=lambda s: _names(s, KERNELS, "kernel"), default=list(KERNELS),
                   help="kernels to time alone (default: all)")
    p.add_argument("--anchors", type=lambda s: _names(s, ANCHORS, "anchor"), default=list(ANCHORS),
                   help="anchors to try (default: all; each skipped when not importable)")
    p.add_argument("--no-layers", action="store_true", help="skip the layer table")
    p.add_argument("--no-kernels", action="store_true", help="skip the kernel table")
    p.add_argument("--no-anchors", action="store_true", help="skip the anchors")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--budget", type=float, default=0.5, help="seconds of timed calls per measurement (default 0.5)")
    p.add_argument("--max-iters", type=int, default=200, help="at most this many timed calls per measurement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dry-run", action="store_true", help="print what would be measured, run nothing")
    p.add_argument("--json", type=Path, default=None, metavar="PATH",
                   help="also write the tables as JSON (chapter 10 reads benchmarks/results/gpu.json)")
    return p.parse_args(argv)


def format_table(title, headers, rows):
    """A plain-text table; None cells print as '-'."""
    cells = [[("-" if v is None else v if isinstance(v, str) else f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}")
              for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join("-" * w for w in widths)
    out = [title, line, "  ".join(h.ljust(w) for h, w in zip(headers, widths)), line]
    out += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    out.append(line)
    return "\n".join(out)


def write_json(path, device, named, argv):
    """The tables as {"device", "command", "tables": {title: {"headers", "rows"}}}, written atomically."""
    import json
    import os

    command = "python benchmarks/gpu.py " + " ".join(argv if argv is not None else sys.argv[1:])
    data = {"device": device, "command": command,
            "tables": {title: {"headers": list(headers), "rows": [list(row) for row in rows]}
                       for title, (headers, rows) in named.items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def shape_name(shape):
    return "x".join(map(str, shape))


LAYER_HEADERS = ["layer fwd+bwd", "T x B x D", "GPU ms", "CPU ms/call", "calls", "note"]
KERNEL_HEADERS = ["kernel", "T x B x D", "fwd ms", "fwd GB/s", "bwd ms", "bwd GB/s", "copy GB/s",
                  "fwd CPU ms", "bwd CPU ms", "note"]
ANCHOR_HEADERS = ["anchor fwd+bwd", "T x B x D", "GPU ms", "CPU ms/call", "note"]


# ---- timing ------------------------------------------------------------------------------------------
class Timer:
    """Events around back-to-back calls: (GPU ms per call, CPU ms per call, calls)."""

    def __init__(self, budget, max_iters, events, synchronize):
        self.budget, self.max_iters = budget, max_iters
        self.events, self.synchronize = events, synchronize

    def __call__(self, fn):
        fn()  # warm-up: compilation, allocator pools
        self.synchronize()
        t0 = time.perf_counter()
        fn()
        self.synchronize()
        once = time.perf_counter() - t0
        n = max(3, min(self.max_iters, int(self.budget / max(once, 1e-6))))
        start, end, elapsed_ms = self.events()
        start.record()
        c0 = time.perf_counter()
        for _ in range(n):
            fn()
        c1 = time.perf_counter()
        end.record()
        end.synchronize()
        return elapsed_ms(start, end) / n, (c1 - c0) * 1e3 / n, n


def cupy_timer(cp, args):
    def events():
        return cp.cuda.Event(), cp.cuda.Event(), cp.cuda.get_elapsed_time
    return Timer(args.budget, args.max_iters, events, cp.cuda.Device().synchronize)


def torch_timer(torch, args):
    def events():
        return (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True),
                lambda s, e: s.elapsed_time(e))
    return Timer(args.budget, args.max_iters, events, torch.cuda.synchronize)


def nbytes(*arrays):
    """Bytes of the arrays' elements (a view counts its own elements)."""
    total = 0
    for a in arrays:
        if isinstance(a, (tuple, list)):
            total += nbytes(*a)
        elif hasattr(a, "size") and hasattr(a, "itemsize"):
            total += int(a.size) * int(a.itemsize)
    return total


# ---- layers --------------------------------------------------------------------------------------------
def _cell_options(spec):
    name, _, mode = spec.partition(":")
    if mode == "reset_after":
        return name, {"reset_after": True}
    return name, ({"mode": mode} if mode else {})


def layer_rows(cp, args, timer):
    import numpy as np

    from minirec import backend
    from minirec.autograd.function import Tensor
    from minirec.cells import RecurrentLayer

    rows = []
    for shape in args.shapes:
        T, B, D = shape
        for spec in args.cells:
            name, options = _cell_options(spec)
            try:
                backend.manual_seed(args.seed)
                layer = RecurrentLayer(name, D, D, **options).to("gpu")
                rng = np.random.default_rng(args.seed)
                x = Tensor(cp.asarray(rng.standard_normal((T, B, D)).astype(args.dtype)), requires_grad=True)
                grad = cp.asarray(rng.standard_normal((T, B, layer.output_size)).astype(args.dtype))

                def step(layer=layer, x=x, grad=grad):
                    layer.zero_grad()
                    x.grad = None
                    y, _ = layer(x)
                    y.backward(grad)

                gpu_ms, cpu_ms, n = timer(step)
                rows.append([spec, shape_name(shape), gpu_ms, cpu_ms, str(n), ""])
            except Exception as error:  # one failing cell does not stop the table
                rows.append([spec, shape_name(shape), None, None, None, f"{type(error).__name__}: {error}"[:80]])
            print(f"  layer {spec:18s} {shape_name(shape):14s} {rows[-1][2:]}", flush=True)
    return rows


# ---- kernels alone -------------------------------------------------------------------------------------
def kernel_cases(cp, spec, T, B, H, dtype, seed):
    """(forward(), backward(), forward bytes, backward bytes) for one kernel on random inputs."""
    from minirec.kernels import cuda as K
    from minirec.kernels import gpu_scan

    rs = cp.random.RandomState(seed)

    def r(*shape, scale=1.0):
        return (rs.standard_normal(shape) * scale).astype(dtype)

    name, _, mode = spec.partition(":")
    grad_h, grad_last = r(T, B, H), r(B, H)
    if name == "sru":
        args = (r(T, B, 3 * H), r(T, B, H), r(H), r(H), r(H), r(H), r(B, H), None, None, 3 ** 0.5)
        out = K.sru_forward(*args)
        U, x_skip, v_f, v_r, _, _, c0, _, _, alpha = args
        bargs = (grad_h, grad_last, U, x_skip, v_f, v_r, c0, *out[1:], None, None, alpha)
        fwd, bwd = (lambda: K.sru_forward(*args)), (lambda: K.sru_backward(*bargs))
    elif name == "qrnn":
        args = (r(T, B, 3 * H), r(3 * H), r(B, H), None, None)
        out = K.qrnn_forward(*args)
        bargs = (grad_h, grad_last, args[2], None, *out[1:], None)
        fwd, bwd = (lambda: K.qrnn_forward(*args)), (lambda: K.qrnn_backward(*bargs))
    elif name in ("lrn", "glrn", "elrn", "olrn"):
        blocks = {"lrn": 3, "glrn": 2, "elrn": 1, "olrn": 4}[name]
        z, h0 = r(T, B, blocks * H), r(B, H, scale=0.5)
        f_fwd, f_bwd = getattr(K, f"{name}_forward"), getattr(K, f"{name}_backward")
        extra = {} if name == "olrn" else {"activation": "tanh"}
        out = f_fwd(z, h0, None, **extra)
        bargs = (z, h0, *out, None, grad_h, grad_last)
        fwd, bwd = (lambda: f_fwd(z, h0, None, **extra)), (lambda: f_bwd(*bargs, **extra))
        args = (z, h0)
    elif name in ("mingru", "minlstm"):
        n = 2 if name == "mingru" else 3
        u = r(T, B, n * H, scale=1.5)
        views = tuple(u[..., i * H:(i + 1) * H] for i in range(n))
        h0 = cp.full((B, H), 0.5, dtype=dtype)
        f_fwd, f_bwd = getattr(K, f"{name}_forward"), getattr(K, f"{name}_backward")
        args = (*views, h0, None, mode, mode == "log")
        h, gate = f_fwd(*args)
        if name == "mingru":
            bargs = (grad_h, h, h0, gate, views[1], None, mode, mode == "log")
        else:
            bargs = (grad_h, h, h0, gate, *views, None, mode, mode == "log")
        fwd, bwd = (lambda: f_fwd(*args)), (lambda: f_bwd(*bargs))
        out = (h, gate)
    elif name == "scan":
        a = cp.asarray(rs.uniform(0.5, 1.0, (T, B, H)), dtype=dtype)
        b, h0 = r(T, B, H), r(B, H)
        lanes = 1 if mode == "sequential" else None
        if mode == "log":
            log_b = cp.log(cp.abs(b))
            args = (cp.log(a), log_b, cp.log(cp.abs(h0)))
            fwd = lambda: gpu_scan.linear_scan_log_cuda(*args)  # noqa: E731
            out = fwd()
            bwd, bargs = None, ()
        else:
            args = (a, b, h0)
            fwd = lambda: gpu_scan.linear_scan_cuda(a, b, h0, lanes=lanes)  # noqa: E731
            out = fwd()
            bargs = (a, out, h0, grad_h)
            bwd = lambda: gpu_scan.linear_scan_backward_cuda(*bargs, lanes=lanes)  # noqa: E731
    else:
        raise ValueError(f"unknown kernel {spec!r}")
    fwd_bytes = nbytes(args) + nbytes(out)
    bwd_bytes = nbytes(bargs) + nbytes(bwd()) if bwd is not None else 0
    return fwd, bwd, fwd_bytes, bwd_bytes


def copy_bandwidth(cp, total_bytes, timer, cache):
    """GB/s of a CuPy copy reading total/2 and writing total/2 bytes."""
    n = max(1, total_bytes // 8)  # float32 elements per side
    if n not in cache:
        src = cp.ones(n, dtype=cp.float32)
        dst = cp.empty_like(src)
        gpu_ms, _, _ = timer(lambda: cp.copyto(dst, src))
        cache[n] = 2 * n * 4 / (gpu_ms * 1e-3) / 1e9
    return cache[n]


def kernel_rows(cp, args, timer):
    rows, copies = [], {}
    for shape in args.shapes:
        T, B, D = shape
        for spec in args.kernels:
            try:
                fwd, bwd, fb, bb = kernel_cases(cp, spec, T, B, D, args.dtype, args.seed)
                f_ms, f_cpu, _ = timer(fwd)
                b_ms, b_cpu = (timer(bwd)[:2] if bwd is not None else (None, None))
                rows.append([spec, shape_name(shape), f_ms, fb / (f_ms * 1e6), b_ms,
                             bb / (b_ms * 1e6) if b_ms else None, copy_bandwidth(cp, fb, timer, copies),
                             f_cpu, b_cpu, ""])
            except Exception as error:
                rows.append([spec, shape_name(shape)] + [None] * 7 + [f"{type(error).__name__}: {error}"[:80]])
            print(f"  kernel {spec:18s} {shape_name(shape):14s} {rows[-1][2:]}", flush=True)
    return rows


# ---- anchors -------------------------------------------------------------------------------------------
def anchor_rows(args):
    rows = []
    try:
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("torch sees no GPU")
    except Exception as error:
        return [[a, "", None, None, f"torch unavailable: {type(error).__name__}: {error}"[:80]] for a in args.anchors]
    timer = torch_timer(torch, args)
    dtype = getattr(torch, args.dtype)
    dev = torch.device("cuda")
    for shape in args.shapes:
        T, B, D = shape
        for anchor in args.anchors:
            try:
                torch.manual_seed(args.seed)
                if anchor in ("torch-lstm", "torch-gru"):
                    cls = torch.nn.LSTM if anchor == "torch-lstm" else torch.nn.GRU
                    module = cls(D, D).to(dev, dtype)  # cuDNN when available
                    x = torch.randn(T, B, D, device=dev, dtype=dtype, requires_grad=True)
                    run = lambda m=module, x=x: m(x)[0]  # noqa: E731
                elif anchor == "sru-package":
                    from sru import SRU

                    module = SRU(D, D, num_layers=1).to(dev, dtype)
                    x = torch.randn(T, B, D, device=dev, dtype=dtype, requires_grad=True)
                    run = lambda m=module, x=x: m(x)[0]  # noqa: E731
                elif anchor == "accelerated-scan":
                    from accelerated_scan.warp import scan

                    gates = torch.rand(B, D, T, device=dev, dtype=dtype).mul_(0.5).add_(0.5).requires_grad_()
                    tokens = torch.randn(B, D, T, device=dev, dtype=dtype, requires_grad=True)
                    run = lambda g=gates, t=tokens: scan(g, t)  # noqa: E731
                elif anchor == "minGRU-pytorch":
                    from minGRU_pytorch import minGRU

                    module = minGRU(D).to(dev, dtype)
                    x = torch.randn(B, T, D, device=dev, dtype=dtype, requires_grad=True)
                    run = lambda m=module, x=x: m(x)  # noqa: E731
                else:
                    raise ValueError(anchor)
                grad = torch.randn_like(run())

                def step(run=run, grad=grad):
                    run().backward(grad)

                gpu_ms, cpu_ms, _ = timer(step)
                rows.append([anchor, shape_name(shape), gpu_ms, cpu_ms, ""])
            except Exception as error:
                rows.append([anchor, shape_name(shape), None, None, f"{type(error).__name__}: {error}"[:80]])
            print(f"  anchor {anchor:18s} {shape_name(shape):14s} {rows[-1][2:]}", flush=True)
    return rows


# ---- main ----------------------------------------------------------------------------------------------
def dry_run(args):
    tables = []
    if not args.no_layers:
        tables.append(format_table("Layers (dry run)", LAYER_HEADERS,
                                   [[c, shape_name(s), None, None, None, "planned"]
                                    for s in args.shapes for c in args.cells]))
    if not args.no_kernels:
        tables.append(format_table("Kernels (dry run)", KERNEL_HEADERS,
                                   [[k, shape_name(s)] + [None] * 7 + ["planned"]
                                    for s in args.shapes for k in args.kernels]))
    if not args.no_anchors:
        tables.append(format_table("Anchors (dry run)", ANCHOR_HEADERS,
                                   [[a, shape_name(s), None, None, "planned"]
                                    for s in args.shapes for a in args.anchors]))
    print("\n\n".join(tables))
    return 0


def main(argv=None):
    args = parse_args(argv)
    if args.dry_run:
        return dry_run(args)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout
    from minirec import backend

    if not backend.cuda_available():
        print("benchmarks/gpu.py needs CuPy and a usable CUDA GPU (see --dry-run for the plan)", file=sys.stderr)
        return 2
    cp = backend._cupy()
    if args.dtype == "float64":
        backend.set_default_dtype("float64")
    timer = cupy_timer(cp, args)
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    device = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    print(f"device: {device}; dtype {args.dtype}; budget {args.budget} s per measurement", flush=True)
    layers = layer_rows(cp, args, timer) if not args.no_layers else []
    kernels = kernel_rows(cp, args, timer) if not args.no_kernels else []
    anchors = anchor_rows(args) if not args.no_anchors else []
    named = {}
    if layers:
        named[f"Layers: one RecurrentLayer (hidden = D), forward + backward, projection included ({device}, "
              f"{args.dtype})"] = (LAYER_HEADERS, layers)
    if kernels:
        named[f"Kernels alone: GB/s = bytes of inputs and outputs (each once) / time; copy = CuPy copy of the "
              f"forward's bytes ({device})"] = (KERNEL_HEADERS, kernels)
    if anchors:
        named[f"Anchors: forward + backward ({device})"] = (ANCHOR_HEADERS, anchors)
    if args.json is not None:
        write_json(args.json, device, named, argv)
    print()
    print("\n\n".join(format_table(title, headers, rows) for title, (headers, rows) in named.items()))
    failed = [r for r in layers + kernels if r[2] is None]
    return 1 if failed and len(failed) == len(layers + kernels) else 0


if __name__ == "__main__":
    sys.exit(main())

