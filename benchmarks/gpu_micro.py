#!/usr/bin/env python3
"""Micro-timings of single launches on a GPU: what one call costs the CPU (Python, argument
conversion, the launch) and the GPU, side by side.

Rows (each printed as soon as it is measured, so a run cut short keeps what it did):

* ``RawKernel no-op``: CuPy's cheapest launch, the floor for any kernel;
* ``numba no-op``: a Numba kernel with one array argument through minirec's `launch` (what the
  dispatcher and the argument conversion add to that floor); ``numba 14-array no-op``: the same
  with the 14 arrays of SRU's forward; each also ``converted once`` (the arguments converted
  before the timing, as the matrix cells' per-step launches do): the difference is the
  per-launch conversion that issue 17's item 2 would remove;
* ``scan fwd``: the block linear scan (`minirec.kernels.cuda.scan.linear_scan_cuda`);
* ``SRU fwd``, ``SRU bwd``: the fused SRU kernels (14 and 19 array arguments);
* ``CuPy copy``: a device-to-device copy, for the memory bandwidth (GB/s in the note).

When the CPU µs of a row exceed its GPU µs, the launches, not the GPU, set the speed. Timing as
`benchmarks/gpu.py`: a warm-up call (Numba compiles then), then CUDA events around back-to-back
calls.

    python benchmarks/gpu_micro.py                 # needs CuPy and a usable GPU
    python benchmarks/gpu_micro.py --dry-run       # the plan, no GPU needed
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/gpu.py: the timer and tables
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # minirec from the checkout

from gpu import Timer, format_table  # noqa: E402

ROWS = ("RawKernel no-op", "numba no-op", "numba no-op, converted once", "numba 14-array no-op",
        "numba 14-array no-op, converted once", "scan fwd", "SRU fwd", "SRU bwd", "CuPy copy")
HEADERS = ["launch", "shape", "CPU µs/call", "GPU µs/call", "calls", "note"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="512x32x512", help="T x B x H of the scan and SRU rows (default 512x32x512)")
    p.add_argument("--budget", type=float, default=0.3, help="seconds of timed calls per row (default 0.3)")
    p.add_argument("--max-iters", type=int, default=500)
    p.add_argument("--dry-run", action="store_true", help="print the rows that would be measured")
    args = p.parse_args(argv)
    try:
        args.shape = tuple(int(n) for n in args.shape.lower().split("x"))
        assert len(args.shape) == 3 and min(args.shape) > 0
    except (ValueError, AssertionError):
        p.error(f"--shape is TxBxH with positive integers, got {args.shape!r}")
    return args


def cases(cp, shape):
    """(name, shape text, fn, bytes moved or None) for each row, built lazily on the GPU."""
    from numba import cuda

    from minirec.kernels import cuda as K
    from minirec.kernels.cuda._common import configure, device_args, launch
    from minirec.kernels.cuda.scan import linear_scan_cuda

    T, B, H = shape
    text = "x".join(map(str, shape))
    rs = cp.random.RandomState(0)

    def r(*dims):
        return rs.standard_normal(dims).astype(cp.float32)

    raw = cp.RawKernel(r'extern "C" __global__ void noop() {}', "noop")

    @cuda.jit
    def numba_noop(x):
        pass

    @cuda.jit
    def numba_noop14(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13):
        pass

    one = cp.zeros(1, cp.float32)
    fourteen = [cp.zeros((T, B, H) if n % 2 else H, cp.float32) for n in range(14)]
    noop, noop14 = configure(numba_noop, 1, 1), configure(numba_noop14, 1, 1)
    one_converted, fourteen_converted = device_args(one), device_args(*fourteen)
    a, b = cp.abs(r(T, B, H)) / 2, r(T, B, H)
    sru_args = (r(T, B, 3 * H), r(T, B, H), r(H), r(H), r(H), r(H), r(B, H), None, None, 3 ** 0.5)
    h, c, f, rr = K.sru_forward(*sru_args)
    U, x_skip, v_f, v_r, _, _, c0, _, _, alpha = sru_args
    sru_back = (r(T, B, H), r(B, H), U, x_skip, v_f, v_r, c0, c, f, rr, None, None, alpha)
    src = r(T, B, 4 * H)
    dst = cp.empty_like(src)
    yield "RawKernel no-op", "1 thread", lambda: raw((1,), (1,), ()), None
    yield "numba no-op", "1 thread", lambda: launch(numba_noop, 1, 1, one), None
    yield "numba no-op, converted once", "1 thread", lambda: noop(*one_converted), None
    yield "numba 14-array no-op", "1 thread", lambda: launch(numba_noop14, 1, 1, *fourteen), None
    yield "numba 14-array no-op, converted once", "1 thread", lambda: noop14(*fourteen_converted), None
    yield "scan fwd", text, lambda: linear_scan_cuda(a, b), None
    yield "SRU fwd", text, lambda: K.sru_forward(*sru_args), None
    yield "SRU bwd", text, lambda: K.sru_backward(*sru_back), None
    yield "CuPy copy", f"{src.nbytes / 2 ** 20:.0f} MiB", lambda: cp.copyto(dst, src), 2 * src.nbytes


def main(argv=None):
    args = parse_args(argv)
    if args.dry_run:
        print("\n".join(f"planned: {name}" for name in ROWS))
        return 0
    from minirec import backend

    if not backend.cuda_available():
        from minirec.kernels.preflight import describe

        print("benchmarks/gpu_micro.py needs a usable CUDA GPU:\n" + describe(), file=sys.stderr)
        return 2
    cp = backend._cupy()
    timer = Timer(args.budget, args.max_iters, lambda: (cp.cuda.Event(), cp.cuda.Event(), cp.cuda.get_elapsed_time),
                  cp.cuda.Device().synchronize)
    rows = []
    for name, shape, fn, moved in cases(cp, args.shape):
        try:
            gpu_ms, cpu_ms, calls = timer(fn)
            note = f"{moved / (gpu_ms * 1e-3) / 1e9:.0f} GB/s" if moved else ""
            rows.append([name, shape, f"{cpu_ms * 1e3:.1f}", f"{gpu_ms * 1e3:.1f}", str(calls), note])
        except Exception as error:  # one failing row must not lose the others
            rows.append([name, shape, "-", "-", "0", f"{type(error).__name__}: {error}"[:80]])
        print("  " + "  ".join(rows[-1]), flush=True)
    print()
    print(format_table("Single launches: CPU and GPU time per call", HEADERS, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
