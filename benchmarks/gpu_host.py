#!/usr/bin/env python3
"""What the CUDA kernels' Python costs the CPU per call, measured without a GPU.

Runs every CUDA kernel wrapper of ``minirec.kernels.cuda`` under Numba's CUDA simulator with the
launches stubbed out (no kernel runs), on tiny NumPy arrays, and prints per call:

* ``launches``: kernel launches (a matrix cell: per time step);
* ``arrays``: arrays converted for the launches (each costs ``cuda.as_cuda_array`` on a GPU, the
  conversion that `benchmarks/gpu_micro.py` times there: its "14-array no-op" rows);
* ``µs/call``: the wrapper's own Python (argument checks, strides, allocations, binding, the step
  loop with its NumPy products on tiny operands), median of ``--repeats`` rounds.

NumPy stands in for CuPy, so CuPy's own per-operation host cost (allocation, cuBLAS call) is not in
these numbers, and neither is Numba's per-launch dispatch: the GPU rows of gpu_micro.py measure those.

    NUMBA_ENABLE_CUDASIM=1 python benchmarks/gpu_host.py
    NUMBA_ENABLE_CUDASIM=1 PYTHONPATH=/path/to/other/checkout python benchmarks/gpu_host.py  # another version
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

if "PYTHONPATH" not in os.environ:  # the checkout's minirec unless PYTHONPATH names another
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

# (kernel, builder of its arguments): the forward, then the backward fed the forward's outputs
SHAPE = (64, 2, 8)  # T, B, H: tiny, so the NumPy work is small beside the wrapper's own Python


def _cases(rng, dtype=np.float32):
    T, B, H = SHAPE

    def r(*shape):
        return rng.standard_normal(shape).astype(dtype)

    mask = (rng.random((T, B)) > 0.2).astype(dtype)
    yield "sru", (r(T, B, 3 * H), r(T, B, H), r(H), r(H), r(H), r(H), r(B, H), None, None, 1.7), \
        lambda out, a: (r(T, B, H), r(B, H), a[0], a[1], a[2], a[3], a[6], out[1], out[2], out[3], None, None, 1.7)
    yield "sru+mask", (r(T, B, 3 * H), r(T, B, H), r(H), r(H), r(H), r(H), r(B, H), mask, None, 1.7), \
        lambda out, a: (r(T, B, H), r(B, H), a[0], a[1], a[2], a[3], a[6], out[1], out[2], out[3], mask, None, 1.7)
    yield "qrnn", (r(T, B, 3 * H), r(3 * H), r(B, H), None, None), \
        lambda out, a: (r(T, B, H), r(B, H), a[2], None, *out[1:], None)
    yield "lrn", (r(T, B, 3 * H), r(B, H), None), lambda out, a: (a[0], a[1], *out, None, r(T, B, H), r(B, H))
    u = r(T, B, 2 * H)  # k and x̃ as the cell passes them: column blocks of one projection
    yield "mingru", (u[..., :H], u[..., H:], np.abs(r(B, H)) + 0.1, None), \
        lambda out, a: (r(T, B, H), out[0], a[2], out[1], a[1], None)
    yield "lstm", (r(T, B, 4 * H), r(H, 4 * H), r(B, H), r(B, H), None), \
        lambda out, a: (a[1], a[2], a[3], None, *out, r(T, B, H), r(B, H), r(B, H))
    yield "gru", (r(T, B, 3 * H), r(H, 3 * H), r(B, H), None), \
        lambda out, a: (a[1], a[2], None, *out, r(T, B, H), r(B, H))
    yield "atr", (r(T, B, H), r(H, H), r(H), r(B, H), None), \
        lambda out, a: (a[0], a[1], a[3], *out, None, r(T, B, H), r(B, H))
    yield "gru_reset_after", (r(T, B, 3 * H), r(H, 3 * H), r(H), r(B, H), None), \
        lambda out, a: (a[1], a[3], None, *out, r(T, B, H), r(B, H))


class _Counter:
    """Stubs for the launch: counts launches and converted arrays, runs nothing."""

    def __init__(self):
        self.launches = self.arrays = 0

    def configure(self, kernel, grid, block):
        def run(*args):
            self.launches += 1
        return run

    def convert(self, array):
        if isinstance(array, np.ndarray) and array.ndim > 0:
            self.arrays += 1
        return array


def _install(counter):
    """Route every launch of the kernels through ``counter`` (in whichever module configures it)."""
    from minirec.kernels import cuda

    modules = [cuda._common, cuda.matrix, cuda.sru, cuda.qrnn, cuda.lrn, cuda.scan]
    for module in modules:
        if hasattr(module, "configure"):
            module.configure = counter.configure
    cuda._common._as_simulated = counter.convert


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--calls", type=int, default=20, help="calls per round (default 20)")
    args = p.parse_args(argv)
    from numba.core import config

    if not config.ENABLE_CUDASIM:
        print("run with NUMBA_ENABLE_CUDASIM=1 (the launches are stubbed in the simulator)", file=sys.stderr)
        return 2
    import minirec
    from minirec.kernels import cuda

    counter = _Counter()
    _install(counter)
    np.empty = np.zeros  # the stubbed launches write nothing: garbage (denormals, NaN) would slow the products
    rng = np.random.default_rng(0)
    rows = []
    for name, fwd_args, make_bwd in _cases(rng):
        prefix = name.split("+")[0]
        if not hasattr(cuda, f"{prefix}_forward"):  # an older checkout: no CUDA kernel of that name
            continue
        forward, backward = getattr(cuda, f"{prefix}_forward"), getattr(cuda, f"{prefix}_backward")
        out = forward(*fwd_args)  # warm-up: numba's simulator builds its wrappers on first use
        bwd_args = make_bwd(out, fwd_args)
        backward(*bwd_args)
        for part, fn, call_args in (("forward", forward, fwd_args), ("backward", backward, bwd_args)):
            counter.launches = counter.arrays = 0
            fn(*call_args)
            launches, arrays = counter.launches, counter.arrays
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                for _ in range(args.calls):
                    fn(*call_args)
                times.append((time.perf_counter() - start) / args.calls)
            rows.append((f"{name} {part}", launches, arrays, statistics.median(times) * 1e6))
    T, B, H = SHAPE
    print(f"CUDA kernel wrappers, launches stubbed: T={T} B={B} H={H} float32, NumPy standing in for CuPy")
    print(f"minirec at {Path(minirec.__file__).parent.parent}")
    print(f"{'kernel':<24} {'launches':>8} {'arrays':>7} {'µs/call':>9} {'µs/step':>8}")
    for name, launches, arrays, us in rows:
        print(f"{name:<24} {launches:>8} {arrays:>7} {us:>9.0f} {us / T:>8.1f}")
    print(f"median of {args.repeats} rounds × {args.calls} calls; load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
