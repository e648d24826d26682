"""What every CUDA kernel of minirec shares: the launch plumbing, scalar device math in the
arrays' dtype, and the host-side preparation of arguments.

Launching, CuPy and the simulator
---------------------------------
Every launch goes through `bind` (or `launch`, its one-shot form): it converts each distinct CuPy
array once with ``cuda.as_cuda_array(sync=False)`` (a zero-copy view; ``sync=False`` because the
kernel is queued on CuPy's current stream, so no host wait is needed) and launches on that
stream, as often as the caller needs with new scalars (a matrix cell: once per step). Fewer
arrays to convert: `or_stand_in` (an absent input's stand-in is an array passed anyway) and
`column_blocks` (blocks of one projection as their parent). Under ``NUMBA_ENABLE_CUDASIM=1`` (no
GPU, no CuPy: the CPU test suite) the same functions take NumPy arrays and the kernels run in
Numba's simulator. Nothing here imports CuPy or touches a GPU at import time.
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
from numba import cuda
from numba.core import config as _numba_config

from minirec import backend

SIMULATOR = bool(_numba_config.ENABLE_CUDASIM)

COLUMN_THREADS = 128  # threads per block of the one-thread-per-column kernels
SPREAD_BLOCKS = 264  # shrink blocks while fewer than this (~2 per SM of a 132-SM H100); untuned
# The most threads any block here has. A block always launches when its threads × registers fit
# the SM's register file: 65,536 registers / 255 (the most a thread can use) = 257 threads. The
# kernels use 40–100 registers, so a 1,024-thread block would fail to launch on real hardware
# ("too many resources requested") while the simulator, which has no registers, runs it.
MAX_BLOCK_THREADS = 256
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


# ---- launch plumbing -----------------------------------------------------------------------------
def _performance_warning_classes():
    """Numba's NumbaPerformanceWarning and numba-cuda's own class of that name (numba-cuda 0.30
    defines its own in numba.cuda.core.errors: a filter on numba's class alone misses it)."""
    from numba.core.errors import NumbaPerformanceWarning

    classes = [NumbaPerformanceWarning]
    try:
        from numba.cuda.core.errors import NumbaPerformanceWarning as CudaPerformanceWarning
    except ImportError:  # numba's built-in numba.cuda: only numba's class
        return classes
    if CudaPerformanceWarning is not NumbaPerformanceWarning:
        classes.append(CudaPerformanceWarning)
    return classes


def silence_grid_size_warnings():
    """Small batches give small grids on purpose (a per-step kernel over B·H columns); Numba's
    "Grid size N will likely result in GPU under-utilization" says nothing actionable then."""
    for category in _performance_warning_classes():
        warnings.filterwarnings("ignore", message="Grid size", category=category)


silence_grid_size_warnings()
_STREAMS: dict[int, object] = {}


def current_stream():
    """The stream to launch on: CuPy's current one (0, the legacy default stream, by default)."""
    if SIMULATOR:
        return 0
    cp = backend._cupy()
    ptr = cp.cuda.get_current_stream().ptr if cp is not None else 0
    if ptr == 0:
        return 0
    stream = _STREAMS.get(ptr)
    if stream is None:
        stream = _STREAMS[ptr] = cuda.external_stream(ptr)
    return stream


def _as_device(array):
    if hasattr(array, "__cuda_array_interface__"):
        return cuda.as_cuda_array(array, sync=False)  # a view: no copy, no host synchronisation
    return array  # scalars (and NumPy arrays, which Numba would copy to the GPU and back)


def _as_simulated(array):
    # The simulator would copy a NumPy argument in and back out (and refuses non-contiguous
    # views); wrapping it makes the kernel read and write the array itself, as on the GPU.
    if isinstance(array, np.ndarray) and array.ndim > 0:
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        return FakeCUDAArray(array)
    return array


def device_args(*args):
    """Kernel arguments: CuPy arrays as zero-copy Numba device views, the rest unchanged.

    Converting once and launching many times (the per-step kernels) saves the dispatcher's
    per-launch conversion (~95 µs → ~30 µs per launch, DESIGN.md). An array passed at several
    positions (a stand-in for an absent mask, a block passed for two operands) is converted once.
    In the simulator, NumPy arrays are wrapped without a copy.
    """
    convert = _as_simulated if SIMULATOR else _as_device
    views = {}  # id → converted; the arguments outlive this call, so no id is reused meanwhile
    return tuple(views[id(a)] if id(a) in views else views.setdefault(id(a), convert(a)) for a in args)


def configure(kernel, grid, block):
    """``kernel[grid, block, stream]`` on the current stream: call it with `device_args`."""
    if SIMULATOR:
        return kernel[grid, block]
    return kernel[grid, block, current_stream()]


def bind(kernel, grid, block, *args):
    """``kernel[grid, block]`` on the current stream with ``args`` converted once, as a function of
    the scalars that follow them: ``step = bind(k, g, b, x, h); step(t)`` launches ``k(x, h, t)``.

    A per-step kernel (the matrix cells) binds once per sequence and launches T times, so the
    stream lookup and the conversion of every array are paid once, not per step.
    """
    configured = configure(kernel, grid, block)
    converted = device_args(*args)

    def run(*scalars):
        configured(*converted, *scalars)

    return run


def launch(kernel, grid, block, *args):
    """Launch ``kernel[grid, block]`` on the current stream with ``args`` converted once."""
    bind(kernel, grid, block, *args)()


def or_stand_in(array, stand_in):
    """``array``, or ``stand_in`` where it is absent: a kernel built without that input (a closure
    constant) never reads it, but numba types every argument, so an array of the same rank and dtype
    is passed; `device_args` converts it once even when it is also passed as itself."""
    return stand_in if array is None else array


def positive_strides(xp, array):
    """``array``, or a contiguous copy when a stride is negative or zero (a reversed view, a
    broadcast): the kernels index with the strides they are given, and only positive ones are
    safe to hand over through the array interface."""
    if array is None:
        return None
    if any(s <= 0 for s, n in zip(array.strides, array.shape) if n > 1):
        return xp.ascontiguousarray(array)
    return array


def _address(array):
    """The address of the first element: an attribute of CuPy's MemoryPointer; NumPy's through ctypes
    (about 2 µs, which the NumPy stand-in measurements of benchmarks/gpu_host.py include)."""
    data = array.data
    return data.ptr if hasattr(data, "ptr") else array.ctypes.data


def column_blocks(*views):
    """(parents, offsets) with ``views[i][t, b, j] == parents[i][t, b, offsets[i] + j]``.

    The cells pass column blocks of one projection (minGRU's k and x̃ are u[..., :H] and u[..., H:]):
    two or more blocks of one C-contiguous (T, B, W) array get that array itself as parent, one
    object, which `device_args` converts once instead of once per block. Anything else (None
    included, and a block alone: no conversion to save) is its own parent at offset 0. The kernels
    then read column ``offsets[i] + j`` (as the CPU kernels do, `minirec.kernels.cpu._common.columns`).
    """
    bases = [getattr(view, "base", None) for view in views]
    shared = [base is not None and sum(other is base for other in bases) > 1 for base in bases]
    if not any(shared):  # nothing to gain: keep the views (the kernels read strided views as well)
        return list(views), (0,) * len(views)
    parents, offsets, shaped = [], [], {}
    for view, base, in_shared in zip(views, bases, shared):
        parent, offset = view, 0
        if (in_shared and getattr(base, "dtype", None) == view.dtype and view.ndim == 3 and view.size
                and base.flags.c_contiguous):
            T, B, H = view.shape
            item = view.itemsize
            W, rest = divmod(view.strides[1], item)
            if rest == 0 and view.strides == (B * W * item, W * item, item) and base.size == T * B * W:
                known = shaped.get(id(base))
                if known is None:  # one object per parent, so that the blocks share its conversion
                    whole = base if base.shape == (T, B, W) else base.reshape(T, B, W)
                    known = shaped[id(base)] = whole, _address(whole)
                whole, address = known
                start, rest = divmod(_address(view) - address, item)
                if rest == 0 and 0 <= start <= W - H:
                    parent, offset = whole, start
        parents.append(parent)
        offsets.append(offset)
    return parents, tuple(offsets)


def fast_path(*arrays):
    """True when the kernels apply: float32/float64 arrays with no empty axis (else the reference
    loop, array-agnostic, handles the corner case)."""
    for a in arrays:
        if a is None:
            continue
        if a.dtype not in _FLOATS or a.size == 0:
            return False
    return True


def column_grid(n):
    """(grid, block) for one thread per column, n columns: blocks of `COLUMN_THREADS`, halved
    (down to a warp) while that leaves fewer than `SPREAD_BLOCKS` blocks, so that few columns
    still spread over many SMs (a warp's occupancy is the same in a small block)."""
    block = COLUMN_THREADS
    while block > 32 and -(-n // block) < SPREAD_BLOCKS:
        block //= 2
    block = max(1, min(block, n))
    return -(-n // block), block


def prepare(xp, *arrays):
    return tuple(positive_strides(xp, a) for a in arrays)


@cuda.jit(device=True)
def column_of(B, H):
    """(active, b, j) of this thread's column."""
    n = cuda.grid(1)
    if n < B * H:
        b = n // H
        return True, b, n - b * H
    return False, 0, 0


# ---- scalar device functions ---------------------------------
# (No min/max builtins in device code: Numba's CUDA typing of them failed to compile here.)
@cuda.jit(device=True)
def sigmoid(x, one):
    """σ(x) without overflow (exp of −|x| only), as `minirec.numerics.stable_sigmoid`."""
    e = math.exp(-abs(x))
    if x >= 0:
        return one / (one + e)
    return e / (one + e)


# The fast sigmoid: 1 / (1 + e^−x) with the GPU's approximate exp (ex2.approx) and division
# (div.approx), in float32 only. In the dependent chain of SRU's and LRN's steps it replaces the
# IEEE division (div.rn, a subroutine with a slow path) and a branch: a kernel computing one
# sigmoid compiles to 33 PTX instructions instead of 52 in float32 (sm_90). It cannot overflow:
# e^−x = inf gives 0, e^−x = 0 gives 1. Error bounds (CUDA C Programming Guide, intrinsic
# functions): __expf 2 + ⌊1.173·|x|⌋ ulp, division 2 ulp, so about 6e-6 relative for |x| ≤ 40
# against the float32 tolerance of 3e-4 the kernel tests hold (tests/test_kernels_cuda.py). The
# simulator has no intrinsics: it computes exactly and then adds those worst-case errors, so its
# float32 tests run with the error budget of the real ones.
FAST_SIGMOID_VARIABLE = "MINIREC_CUDA_FAST_SIGMOID"  # "0": the exact sigmoid in float32 as well


def fast_sigmoid_for(dtype):
    """Whether kernels on ``dtype`` use `fast_sigmoid`: float32 unless MINIREC_CUDA_FAST_SIGMOID=0;
    never float64 (the gradient checks' precision, where results match the reference to rounding)."""
    return np.dtype(dtype) == np.float32 and os.environ.get(FAST_SIGMOID_VARIABLE, "1") != "0"


if SIMULATOR:
    _ULP32 = 2.0 ** -23

    @cuda.jit(device=True)
    def _approx_exp(x):
        if x > 88.73:  # float32's e^x overflows: inf, as ex2.approx
            return math.inf
        return math.exp(x) * (1.0 + (2 + math.floor(1.173 * abs(x))) * _ULP32)  # + __expf's worst case

    @cuda.jit(device=True)
    def _approx_div(a, b):
        return a / b * (1.0 + 2 * _ULP32)  # + div.approx's worst case
else:
    from numba.cuda import libdevice

    _approx_exp = libdevice.fast_expf
    _approx_div = libdevice.fast_fdividef


@cuda.jit(device=True)
def fast_sigmoid(x, one):
    """σ(x) = 1 / (1 + e^−x) with approximate exp and division: float32 only (see above)."""
    return _approx_div(one, one + _approx_exp(-x))


@cuda.jit(device=True)
def gate(x, one, fast):
    """σ(x): `fast_sigmoid` when ``fast`` (a kernel's compile-time flag), else the exact `sigmoid`."""
    if fast:
        return fast_sigmoid(x, one)
    return sigmoid(x, one)


@cuda.jit(device=True)
def clamp_step(t, last):
    """t clamped to [0, last]: a prefetch past either end of the sequence rereads its end (the value
    is never used), so no load leaves the arrays."""
    if t < 0:
        return 0
    return t if t < last else last


@cuda.jit(device=True)
def softplus(x, one):
    """log(1 + eˣ) = max(x, 0) + log1p(e^−|x|)."""
    zero = one - one
    return (x if x > zero else zero) + math.log1p(math.exp(-abs(x)))


@cuda.jit(device=True)
def g_act(x, one):
    """minGRU's positive activation g: x + ½ (x ≥ 0), σ(x) (x < 0)."""
    if x >= 0:
        return x + one / (one + one)
    return sigmoid(x, one)


@cuda.jit(device=True)
def g_prime(x, one):
    if x >= 0:
        return one
    s = sigmoid(x, one)
    return s * (one - s)


@cuda.jit(device=True)
def log_g(x, one):
    """log g(x): log(x + ½) (x ≥ 0), −softplus(−x) (x < 0)."""
    if x >= 0:
        return math.log(x + one / (one + one))
    return -softplus(-x, one)


@cuda.jit(device=True)
def logaddexp(x, y):
    """log(eˣ + eʸ), −∞ when both are −∞ (no inf − inf)."""
    m = x if x > y else y
    if m == -math.inf:
        return m
    return m + math.log1p(math.exp(-abs(x - y)))



# ---- numba's cache of these kernels --------------------------------------------------------------
def _drop_stale_cache_of_this_package():
    """numba keys a cached kernel on its own file only: the kernels of sru.py, scan.py, ... would
    keep the device functions of this file they were compiled with. Empty the package's cache
    when this file has changed (as ``kernels/cpu/_common.py`` does for the CPU kernels)."""
    if SIMULATOR:
        return  # the simulator compiles nothing
    from minirec.kernels.cpu._common import drop_stale_cache, numba_cache_directory

    @cuda.jit(cache=True)
    def _probe(x):  # any cached kernel of this file tells where the package's cache lives
        x[0] = 0

    directory = numba_cache_directory(_probe)
    if directory is not None:
        with open(__file__, "rb") as file:
            drop_stale_cache(directory, file.read())


_drop_stale_cache_of_this_package()  # before any kernel is called: numba loads its cache on the first call
