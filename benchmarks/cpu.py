#!/usr/bin/env python3
"""CPU benchmark: the numba ``cpu`` kernels against the ``reference`` loops, and torch as an anchor.

For every shape (T, B, D), in float32:

* **layers**: one `RecurrentLayer(cell, D, D)`, forward + backward (input projection and the
  gradient of x included: what a training step pays per layer), once with
  MINIREC_KERNELS=reference and once with the cpu kernels, both in this process (the variable is
  read at every kernel lookup), and the speed-up;
* **kernels**: the recurrence kernels alone, forward and backward, reference vs cpu;
* **torch** (when importable): ``nn.LSTM`` / ``nn.GRU`` of the same size, forward + backward,
  ``torch.set_num_threads(--threads)``; the layer table compares each cell with nn.LSTM;
* **side by side** (the goals of issue 17), at (35,20,200) and (256,32,256): minirec's LSTM and
  GRU layers against torch's ``nn.LSTM``/``nn.GRU`` (goal: LSTM ≥ 1.2× torch), and the
  elementwise layers (SRU, LRN, minGRU, QRNN) against their BLAS floor, the three products of
  their input projection in NumPy (x W, xᵀ ∂y, ∂y Wᵀ; goal ≤ 1.2× at (256,32,256), ≤ 1.4× at
  (35,20,200)), each pair timed interleaved in this process so that both see the same load.

Each time is the best of --repeats timed calls after a warm-up call (numba compiles on first
use; the cache makes later runs start fast); the reference and cpu calls of one row are
interleaved, so that a passing load on the machine hits both alike. Tables are printed last.

    python benchmarks/cpu.py             # (35,20,200), (64,32,128), (256,32,256)
    python benchmarks/cpu.py --quick     # the two small shapes, fewer repeats
    python benchmarks/cpu.py --cells sru,lrn,mingru --no-kernels
    python benchmarks/cpu.py --side-only --repeats 15   # the side-by-side table alone
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

SHAPES = ((35, 20, 200), (64, 32, 128), (256, 32, 256))
QUICK_SHAPES = SHAPES[:2]
LAYERS = ("sru", "qrnn", "lrn", "glrn", "elrn", "olrn", "mingru", "minlstm", "fofe", "gru", "lstm", "mgu", "sgu",
          "atr")
KERNELS = ("sru", "qrnn", "lrn", "glrn", "elrn", "olrn", "mingru:parallel", "mingru:sequential", "minlstm:parallel",
           "linear_scan", "gru", "lstm", "mgu", "sgu", "atr")
TARGET_SHAPE = (256, 32, 256)
SIDE_SHAPES = ((35, 20, 200), (256, 32, 256))
SIDE_TORCH = ("lstm", "gru")  # against torch's nn.LSTM / nn.GRU
SIDE_FLOOR = ("sru", "lrn", "mingru", "qrnn")  # against their projection's products in NumPy
FLOOR_GOAL = {(35, 20, 200): 1.4, (256, 32, 256): 1.2}
LSTM_GOAL = 1.2


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="only the two small shapes, fewer repeats")
    p.add_argument("--shapes", default=None, help="comma-separated TxBxD (default: the three above)")
    p.add_argument("--cells", default=",".join(LAYERS), help="layers to time (default: all)")
    p.add_argument("--kernels", default=",".join(KERNELS), help="kernels to time alone (default: all)")
    p.add_argument("--no-layers", action="store_true")
    p.add_argument("--no-kernels", action="store_true")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per measurement (default 7, quick 3)")
    p.add_argument("--threads", type=int, default=2, help="threads for the cpu kernels and torch (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-side", action="store_true", help="skip the side-by-side table")
    p.add_argument("--side-only", action="store_true", help="only the side-by-side table")
    args = p.parse_args(argv)
    args.shapes_given = bool(args.shapes)
    if args.shapes:
        args.shapes = [tuple(int(n) for n in shape.lower().split("x")) for shape in args.shapes.split(",")]
    else:
        args.shapes = QUICK_SHAPES if args.quick else SHAPES
    args.repeats = args.repeats or (3 if args.quick else 7)
    args.cells = [c for c in args.cells.split(",") if c]
    args.kernels = [k for k in args.kernels.split(",") if k]
    return args


def best_ms(fn, repeats):
    """Best of ``repeats`` timed calls, after one warm-up call, in milliseconds."""
    return best_ms_each([fn], repeats)[0]


def best_ms_each(fns, repeats):
    """Best of ``repeats`` timed calls of each function, after a warm-up call of each; the calls
    are interleaved (a, b, a, b, …) so that a passing load on the machine hits all alike."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, spent in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - t0)
    return [min(spent) * 1e3 for spent in times]


class kernels_mode:
    """``with kernels_mode("reference"):`` sets MINIREC_KERNELS for the block (None: unset, so
    `get_kernel` picks the cpu kernels)."""

    def __init__(self, kind):
        self.kind = kind

    def __enter__(self):
        self.previous = os.environ.get("MINIREC_KERNELS")
        os.environ.pop("MINIREC_KERNELS", None)
        if self.kind is not None:
            os.environ["MINIREC_KERNELS"] = self.kind

    def __exit__(self, *exc):
        if self.previous is None:
            os.environ.pop("MINIREC_KERNELS", None)
        else:
            os.environ["MINIREC_KERNELS"] = self.previous


def fmt(value):
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def table(title, headers, rows):
    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = "  ".join("-" * w for w in widths)
    out = [title, line, "  ".join(h.ljust(w) for h, w in zip(headers, widths)), line]
    out += ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    return "\n".join(out + [line])


def shape_name(shape):
    return "x".join(map(str, shape))


# ---- torch anchors -------------------------------------------------------------------------------------
def torch_times(args):
    """{(cell, shape): fwd+bwd ms} for nn.LSTM / nn.GRU, or {} without torch."""
    if args.no_torch:
        return {}, "skipped (--no-torch)"
    try:
        import torch
    except ImportError:
        return {}, "torch not importable"
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    times = {}
    for shape in args.shapes:
        T, B, D = shape
        for name, cls in (("lstm", torch.nn.LSTM), ("gru", torch.nn.GRU)):
            module = cls(D, D)
            x = torch.randn(T, B, D, requires_grad=True)
            grad = torch.randn(T, B, D)

            def step(module=module, x=x, grad=grad):
                module.zero_grad()
                x.grad = None
                y, _ = module(x)
                y.backward(grad)

            times[name, shape] = best_ms(step, args.repeats)
            print(f"  torch nn.{cls.__name__:5s} {shape_name(shape):12s} {times[name, shape]:8.2f} ms", flush=True)
    return times, f"torch {torch.__version__}, {torch.get_num_threads()} threads"


# ---- layers ----------------------------------------------------------------------------------------------
def layer_rows(args, torch_ms):
    import numpy as np

    from minirec import backend
    from minirec.autograd.function import Tensor
    from minirec.cells.base import RecurrentLayer

    rows = []
    for shape in args.shapes:
        T, B, D = shape
        for cell in args.cells:
            backend.manual_seed(args.seed)
            layer = RecurrentLayer(cell, D, D)
            rng = np.random.default_rng(args.seed)
            x = Tensor(rng.standard_normal((T, B, D)).astype(np.float32), requires_grad=True)
            grad = rng.standard_normal((T, B, layer.output_size)).astype(np.float32)

            def step(layer=layer, x=x, grad=grad):
                layer.zero_grad()
                x.grad = None
                y, _ = layer(x)
                y.backward(grad)

            def with_kernels(kind, step=step):
                with kernels_mode(kind):
                    step()

            ms = dict(zip(("reference", "cpu"), best_ms_each(
                [lambda: with_kernels("reference"), lambda: with_kernels(None)], args.repeats)))  # noqa: B023
            lstm = torch_ms.get(("lstm", shape))
            rows.append([cell, shape_name(shape), ms["reference"], ms["cpu"], ms["reference"] / ms["cpu"],
                         None if lstm is None else lstm / ms["cpu"]])
            print(f"  layer {cell:8s} {shape_name(shape):12s} reference {ms['reference']:8.2f} ms  "
                  f"cpu {ms['cpu']:8.2f} ms", flush=True)
    return rows


# ---- side by side: torch, and the BLAS floor ------------------------------------------------------------------
def _minirec_step(cell, shape, seed):
    """(layer, fwd+bwd function) of one RecurrentLayer(cell, D, D) on random float32 data."""
    import numpy as np

    from minirec import backend
    from minirec.autograd.function import Tensor
    from minirec.cells.base import RecurrentLayer

    T, B, D = shape
    backend.manual_seed(seed)
    layer = RecurrentLayer(cell, D, D)
    rng = np.random.default_rng(seed)
    x = Tensor(rng.standard_normal((T, B, D)).astype(np.float32), requires_grad=True)
    grad = rng.standard_normal((T, B, layer.output_size)).astype(np.float32)

    def step():
        layer.zero_grad()
        x.grad = None
        y, _ = layer(x)
        y.backward(grad)
    return layer, step


def blas_floor_step(layer, shape, seed):
    """The products of ``layer``'s input projection alone, in NumPy: for each input weight W (D, n),
    x W (forward), xᵀ ∂y (∂W) and ∂y Wᵀ (∂x) over all T·B rows. A layer whose recurrence is
    elementwise cannot cost less than these (its recurrence adds a pass over (T, B, n) arrays)."""
    import numpy as np

    T, B, D = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T * B, D)).astype(np.float32)
    weights = [np.asarray(p.data) for name, p in layer.named_parameters()
               if p.ndim == 2 and p.shape[0] == D and "recurrent" not in name]
    grads = [rng.standard_normal((T * B, w.shape[1])).astype(np.float32) for w in weights]

    def step():
        for w, g in zip(weights, grads):
            np.matmul(x, w)
            np.matmul(x.T, g)
            np.matmul(g, w.T)
    return step


def side_rows(args):
    """[what, shape, minirec ms, peer ms, peer, ratio, goal] for the side-by-side table."""
    torch = None
    if not args.no_torch:
        try:
            import torch

            torch.set_num_threads(args.threads)
        except ImportError:
            torch = None
    shapes = args.shapes if args.shapes_given else SIDE_SHAPES
    rows = []
    for shape in shapes:
        T, B, D = shape
        for cell in SIDE_TORCH:
            if torch is None:
                continue
            _, mine = _minirec_step(cell, shape, args.seed)
            torch.manual_seed(args.seed)
            module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](D, D)
            x, grad = torch.randn(T, B, D, requires_grad=True), torch.randn(T, B, D)

            def peer(module=module, x=x, grad=grad):
                module.zero_grad()
                x.grad = None
                y, _ = module(x)
                y.backward(grad)

            ms, peer_ms = best_ms_each([mine, peer], args.repeats)
            goal = f">= {LSTM_GOAL}" if cell == "lstm" else ""
            rows.append([cell, shape_name(shape), ms, peer_ms, f"torch nn.{cell.upper()}", peer_ms / ms, goal])
            print(f"  side {cell:7s} {shape_name(shape):12s} minirec {ms:8.2f} ms  torch {peer_ms:8.2f} ms", flush=True)
        for cell in SIDE_FLOOR:
            layer, mine = _minirec_step(cell, shape, args.seed)
            ms, floor_ms = best_ms_each([mine, blas_floor_step(layer, shape, args.seed)], args.repeats)
            goal = FLOOR_GOAL.get(shape)
            rows.append([cell, shape_name(shape), ms, floor_ms, "BLAS floor", ms / floor_ms,
                         f"<= {goal}" if goal else ""])
            print(f"  side {cell:7s} {shape_name(shape):12s} minirec {ms:8.2f} ms  floor {floor_ms:8.2f} ms",
                  flush=True)
    return rows


# ---- kernels alone ------------------------------------------------------------------------------------------
def kernel_case(spec, T, B, H, seed):
    """(name, forward args, forward kwargs, backward args from the forward's outputs) on random inputs."""
    import numpy as np

    rng = np.random.default_rng(seed)
    r = lambda *shape: rng.standard_normal(shape).astype(np.float32)
    name, _, mode = spec.partition(":")
    h0 = r(B, H) * np.float32(0.5)
    if name == "sru":
        U, skip, v = r(T, B, 3 * H), r(T, B, H), [r(H) for _ in range(4)]
        return name, (U, skip, *v, h0, None, None, 1.7), {}, lambda out: (
            r(T, B, H), r(B, H), U, skip, v[0], v[1], h0, *out[1:], None, None, 1.7)
    if name == "qrnn":
        U, b = r(T, B, 3 * H), r(3 * H)
        return name, (U, b, h0, None, None), {}, lambda out: (r(T, B, H), r(B, H), h0, None, *out[1:], None)
    if name in ("lrn", "glrn", "elrn", "olrn"):
        z = r(T, B, {"lrn": 3, "glrn": 2, "elrn": 1, "olrn": 4}[name] * H)
        options = {} if name == "olrn" else {"activation": "tanh"}
        return name, (z, h0, None), options, lambda out: (z, h0, *out, None, r(T, B, H), r(B, H))
    if name in ("mingru", "minlstm"):
        n = 2 if name == "mingru" else 3
        u = r(T, B, n * H)
        gates = [u[:, :, j * H:(j + 1) * H] for j in range(n)]
        h0 = np.abs(h0)
        if name == "mingru":
            return name, (*gates, h0, None, mode), {}, lambda out: (
                r(T, B, H), out[0], h0, out[1], gates[1], None, mode)
        return name, (*gates, h0, None, mode), {}, lambda out: (r(T, B, H), out[0], h0, out[1], *gates, None, mode)
    if name == "linear_scan":  # as FOFE calls it
        a, x = np.full((T, B, H), 0.7, np.float32), r(T, B, H)
        return name, (a, x, h0), {}, lambda out: (a, out, h0, r(T, B, H))
    width = {"gru": 3 * H, "mgu": 2 * H, "sgu": H + 2, "lstm": 4 * H, "atr": H}[name]
    x_proj, U = r(T, B, width), r(H, width) / np.float32(np.sqrt(H))
    if name == "lstm":
        return name, (x_proj, U, h0, h0, None), {}, lambda out: (U, h0, h0, None, *out, r(T, B, H), r(B, H), r(B, H))
    if name == "atr":
        return name, (x_proj, U, r(H), h0, None), {}, lambda out: (x_proj, U, h0, *out, None, r(T, B, H), r(B, H))
    return name, (x_proj, U, h0, None), {}, lambda out: (U, h0, None, *out, r(T, B, H), r(B, H))


def kernel_rows(args):
    import numpy as np

    from minirec.kernels import get_kernel

    rows = []
    for shape in args.shapes:
        T, B, H = shape
        for spec in args.kernels:
            name, fwd_args, kwargs, bwd_args = kernel_case(spec, T, B, H, args.seed)
            calls = {}
            for kind in ("reference", "cpu"):
                forward = get_kernel(f"{name}_forward", np, kind=kind)
                backward = get_kernel(f"{name}_backward", np, kind=kind)
                b_args = bwd_args(forward(*fwd_args, **kwargs))
                calls[kind, "fwd"] = lambda f=forward: f(*fwd_args, **kwargs)  # noqa: B023
                calls[kind, "bwd"] = lambda b=backward, a=b_args: b(*a, **kwargs)  # noqa: B023
            ms = dict(zip(calls, best_ms_each(list(calls.values()), args.repeats)))
            rows.append([spec, shape_name(shape), ms["reference", "fwd"], ms["cpu", "fwd"],
                         ms["reference", "fwd"] / ms["cpu", "fwd"], ms["reference", "bwd"], ms["cpu", "bwd"],
                         ms["reference", "bwd"] / ms["cpu", "bwd"]])
            print(f"  kernel {spec:18s} {shape_name(shape):12s} fwd {ms['reference', 'fwd']:8.2f} -> "
                  f"{ms['cpu', 'fwd']:7.2f} ms  bwd {ms['reference', 'bwd']:8.2f} -> {ms['cpu', 'bwd']:7.2f} ms",
                  flush=True)
    return rows


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numba
    import numpy as np

    return (f"{cpu}, {os.cpu_count()} logical CPUs; Python {platform.python_version()}, NumPy {np.__version__}, "
            f"numba {numba.__version__}")


def main(argv=None):
    args = parse_args(argv)
    from minirec import backend
    from minirec.kernels.cpu import _common

    backend.set_default_dtype("float32")
    _common.set_num_threads(args.threads)
    print(f"machine: {machine()}", flush=True)
    side = [] if args.no_side else side_rows(args)
    if args.side_only:
        args.no_layers = args.no_kernels = args.no_torch = True
    torch_ms, torch_note = torch_times(args)
    layers = [] if args.no_layers else layer_rows(args, torch_ms)
    kernels = [] if args.no_kernels else kernel_rows(args)

    print()
    print(f"command: python benchmarks/cpu.py {' '.join(sys.argv[1:] if argv is None else argv)}".rstrip())
    print(f"machine: {machine()}; cpu kernels on {args.threads} threads; {torch_note}")
    print(f"times: best of {args.repeats} calls after a warm-up, float32, ms")
    if layers:
        print()
        print(table("Layers, forward + backward (RecurrentLayer(cell, D, D), input projection and ∂x included)",
                    ["layer", "T x B x D", "reference ms", "cpu ms", "speed-up", "torch LSTM / cpu"], layers))
    if kernels:
        print()
        print(table("Recurrence kernels alone (the matrix cells' include their per-step h @ U products)",
                    ["kernel", "T x B x H", "ref fwd ms", "cpu fwd ms", "fwd x", "ref bwd ms", "cpu bwd ms", "bwd x"],
                    kernels))
    if side:
        print()
        print(table("Side by side, forward + backward of one layer, each pair interleaved (ratio: torch / minirec, "
                    "or minirec / its BLAS floor)",
                    ["layer", "T x B x D", "minirec ms", "peer ms", "peer", "ratio", "goal"], side))
    if torch_ms:
        print()
        print(table("torch anchors, forward + backward", ["module", "T x B x D", "ms"],
                    [[f"nn.{name.upper()}", shape_name(shape), ms] for (name, shape), ms in torch_ms.items()]))


if __name__ == "__main__":
    main()
