"""What every numba CPU kernel shares: the jit flavours, scalar math in the input dtype, and the
Python-side preparation of arguments (contiguous arrays, masks, column blocks).

Layout of a kernel. The Python wrapper (registered under the reference's name and signature)
prepares the arrays and hands a serial *tile function* to `run_tiles`, which cuts the
(batch × channel) columns into one tile per thread (rows b0..b1, channels j0..j1) and runs the
tiles in parallel threads; the tile functions are compiled with ``nogil=True``. Inside, the loop
over time is outermost and, within a step, the loop over a row's channels innermost: those
channels are independent and contiguous in memory, so that loop vectorises (SIMD) and the
processor overlaps their dependency chains instead of waiting on one column's.

Why threads and not ``numba.njit(parallel=True)`` with a ``prange`` over the tiles: it computes
the same thing at the same speed (one call per sequence, a few tasks), but a parallel driver
re-optimises the tile function it calls inside numba's gufunc machinery, which tripled compile
time (measured on the SRU backward: 2 s for the tile alone, 6.4 s more for a prange driver
around it, 1.3 s of which for the prange itself). Compile time is paid on every cold start
(CI, a fresh checkout); ``cache=True`` removes it afterwards. (numba's cache is keyed on the file
of the cached function only, so the kernels of the other modules would keep the helpers of this
one they were compiled with: at import, `drop_stale_cache` empties the package's cache when this
file has changed.)

Speed depends on five details:

* ``error_model="numpy"``: with numba's default (Python) error model every division checks for
  a zero divisor and raising ZeroDivisionError blocks vectorisation; with NumPy's, x/0 = inf.
* `exp` below instead of ``np.exp``: a call to libm cannot be vectorised, plain arithmetic can.
  σ and tanh are built on it.
* channel indices are unsigned (``lo = np.uint64(j0)``, ``for j in range(lo, hi)``, block
  offsets as ``np.uint64``): numba wraps negative signed indices around (``x[-1]``), and that
  index arithmetic hides from LLVM that consecutive j touch consecutive memory, which is what
  vectorisation needs. (Mixing them with signed ints or int literals gives float64 in numba:
  every offset added to j is made unsigned first.)
* a loop writes each array at one place only and does not read an array it writes elsewhere:
  LLVM runs the SIMD version of a loop only after run-time checks that the memory it writes
  does not overlap what it reads; two blocks of one output (grad_z[q], grad_z[k]), or reading
  the gates while writing another gate block, fail that check and the loop runs scalar (3 to 6
  times slower, measured). Multi-block outputs are written block by block, from row buffers.
* arithmetic stays in the input dtype: constants are made with `typed` (a bare ``1.0`` in numba
  is a float64 and would silently promote float32 arithmetic to float64).
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic, overload

_OPTIONS = {"fastmath": False, "cache": True, "error_model": "numpy"}
kernel_jit = numba.njit(nogil=True, **_OPTIONS)  # what the kernels are compiled with
serial_jit = numba.njit(**_OPTIONS)  # scalar helpers (compiled into the kernels)

FLOATS = (np.float32, np.float64)


# ---- scalar helpers (compiled into the kernels) -----------------------------------------------
def typed(value, like):
    """``value`` as a scalar of ``like``'s float type (``like``: an array or a float scalar)."""
    raise NotImplementedError("typed is only callable inside numba-compiled code")


@overload(typed, jit_options=_OPTIONS)
def _typed(value, like):
    dtype = like.dtype if isinstance(like, types.Array) else like

    def impl(value, like):
        return dtype(value)

    return impl


@intrinsic
def _pow2(typingctx, n, like):
    """2ⁿ in ``like``'s float type for an integral float n in the normal exponent range: the
    exponent bits written directly (what C's ldexp does, but inline, so loops vectorise)."""

    def codegen(context, builder, signature, args):
        single = like == types.float32
        int_type = ir.IntType(32 if single else 64)
        bias, shift = (127, 23) if single else (1023, 52)
        exponent = builder.add(builder.fptosi(args[0], int_type), ir.Constant(int_type, bias))
        bits = builder.shl(exponent, ir.Constant(int_type, shift))
        return builder.bitcast(bits, ir.FloatType() if single else ir.DoubleType())

    return like(n, like), codegen


def exp(x):
    """eˣ for x ≤ 0 (what the kernels need: exp(−|a|)), within 2 ulp of np.exp; 0 below e^−87
    (float32) or e^−708 (float64), where e^x is subnormal or zero anyway.

    Cephes' expf/exp (S. L. Moshier): x = n·ln 2 + r with |r| ≤ ln 2 / 2, e^r by a polynomial
    (float32) or a Padé form (float64), times 2ⁿ. Plain arithmetic, unlike a call to libm, so
    the loops around it vectorise.
    """
    raise NotImplementedError("exp is only callable inside numba-compiled code")


@overload(exp, jit_options=_OPTIONS)
def _exp(x):
    if x == types.float32:

        def exp32(x):
            n = np.floor(x * np.float32(1.44269504088896341) + np.float32(0.5))
            r = x - n * np.float32(0.693359375) - n * np.float32(-2.12194440e-4)
            p = np.float32(1.9875691500e-4)
            p = p * r + np.float32(1.3981999507e-3)
            p = p * r + np.float32(8.3334519073e-3)
            p = p * r + np.float32(4.1665795894e-2)
            p = p * r + np.float32(1.6666665459e-1)
            p = p * r + np.float32(5.0000001201e-1)
            p = p * r * r + r + np.float32(1)
            in_range = x >= np.float32(-87.0)
            value = p * _pow2(n if in_range else np.float32(0), x)  # (NaN stays NaN through p)
            return np.float32(0) if x < np.float32(-87.0) else value

        return exp32
    if x == types.float64:

        def exp64(x):
            n = np.floor(x * 1.4426950408889634073599 + 0.5)
            r = x - n * 6.93145751953125e-1 - n * 1.42860682030941723212e-6
            rr = r * r
            p = r * ((1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr + 9.99999999999999999910e-1)
            q = ((3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr
                 + 2.27265548208155028766e-1) * rr + 2.00000000000000000009e0
            e_r = 1.0 + 2.0 * (p / (q - p))
            in_range = x >= -708.0
            value = e_r * _pow2(n if in_range else 0.0, x)
            return 0.0 if x < -708.0 else value

        return exp64
    return None


@serial_jit
def sigmoid(a):
    """σ(a) without overflow, as `minirec.numerics.stable_sigmoid`: exp only of −|a|."""
    one = typed(1, a)
    e = exp(-abs(a))
    return (one if a >= 0 else e) / (one + e)  # one division: the select goes on the numerator


def tanh(x):
    """tanh(x) within a few ulp of np.tanh, relative error too (Cephes' tanhf/tanh, S. L. Moshier):
    |x| < 0.625: the odd form x + x·x²·P(x²) (float32: a polynomial; float64: a rational P/Q), which
    keeps small |x| exact to the last bits; else ±(1 − e)/(1 + e), e = exp(−2|x|), where 1 − e no
    longer cancels (e ≤ e^−1.25). Both are computed on |x| and one is selected, then x's sign is
    copied (tanh(−0) = −0): no branch, so the loops around it vectorise."""
    raise NotImplementedError("tanh is only callable inside numba-compiled code")


@overload(tanh, jit_options=_OPTIONS)
def _tanh(x):
    if x == types.float32:

        def tanh32(x):
            one, size = np.float32(1), abs(x)
            z = size * size
            p = np.float32(-5.70498872745e-3)
            p = p * z + np.float32(2.06390887954e-2)
            p = p * z + np.float32(-5.37397155531e-2)
            p = p * z + np.float32(1.33314422036e-1)
            p = p * z + np.float32(-3.33332819422e-1)
            small = size + size * z * p
            e = exp(-(size + size))
            large = (one - e) / (one + e)
            return math.copysign(small if size < np.float32(0.625) else large, x)

        return tanh32
    if x == types.float64:

        def tanh64(x):
            size = abs(x)
            z = size * size
            p = (-9.64399179425052238628e-1 * z - 9.92877231001918586564e1) * z - 1.61468768441708447952e3
            q = ((z + 1.12811678491632931402e2) * z + 2.23548839060100448583e3) * z + 4.84406305325125486048e3
            small = size + size * z * (p / q)
            e = exp(-(size + size))
            large = (1.0 - e) / (1.0 + e)
            return math.copysign(small if size < 0.625 else large, x)

        return tanh64
    return None


@serial_jit
def g(x):
    """minGRU/minLSTM's positive candidate: x + 0.5 (x ≥ 0), σ(x) (x < 0)."""
    return x + typed(0.5, x) if x >= 0 else sigmoid(x)


@serial_jit
def g_prime(x):
    """g′(x): 1 (x ≥ 0), σ(x)(1 − σ(x)) (x < 0)."""
    one = typed(1, x)
    s = sigmoid(x)
    return one if x >= 0 else s * (one - s)


# ---- running tiles in threads --------------------------------------------------------------------
# A hand-off to a sleeping thread costs 0.05–0.3 ms on a virtual machine (measured here), so a
# call is split only when it has work for several tiles of at least MIN_TILE_NS, and the caller
# never waits for a helper that has not started: the tiles are taken from a queue, and the call
# returns when every tile is done, whoever did it.
MIN_TILE_NS = 200_000
TILES_PER_THREAD = 4
THREADS = {"count": numba.config.NUMBA_NUM_THREADS}  # NUMBA_NUM_THREADS, default: the CPU count
_POOL: list = [None, 0, 0]  # the ThreadPoolExecutor, its number of workers, its process; made on first use


def num_threads() -> int:
    """Threads the kernels use (default NUMBA_NUM_THREADS); `set_num_threads` changes it."""
    return THREADS["count"]


def set_num_threads(count: int) -> None:
    if count < 1:
        raise ValueError(f"need at least one thread, got {count}")
    THREADS["count"] = int(count)


def tiles(B: int, H: int, count: int) -> list[tuple[int, int, int, int]]:
    """About ``count`` tiles (b0, b1, j0, j1): contiguous groups of whole rows when the batch has
    enough rows, else each row cut into channel ranges of at least 32 (fewer when H is small)."""
    if B == 0:
        return []
    if B >= count:
        return [(B * k // count, B * (k + 1) // count, 0, H) for k in range(count)]
    pieces = max(1, min(-(-count // B), H // 32))
    return [(b, b + 1, H * k // pieces, H * (k + 1) // pieces) for b in range(B) for k in range(pieces)]


class _Job:
    """Tiles to run, shared by the calling thread and the helpers that get to it in time."""

    def __init__(self, tile, parts, args):
        self.tile, self.args = tile, args
        self.queue = iter(parts)  # next() on a list iterator is atomic under the GIL
        self.left = len(parts)
        self.lock, self.finished, self.error = threading.Lock(), threading.Event(), None

    def work(self):
        for part in self.queue:
            try:
                self.tile(*part, *self.args)
            except BaseException as error:  # re-raised in the calling thread
                self.error = error
            with self.lock:
                self.left -= 1
                if self.left == 0:
                    self.finished.set()

    def wait(self):
        self.finished.wait()
        if self.error is not None:
            raise self.error


def run_tiles(tile, T: int, B: int, H: int, *args, ns_per_element: float = 4.0) -> None:
    """``tile(b0, b1, j0, j1, *args)`` over a partition of the (B, H) columns, on up to
    `num_threads` threads. ``ns_per_element``: the kernel's rough cost per (t, b, j) element on
    one thread, which decides how many tiles the call is worth."""
    threads = num_threads()
    count = min(TILES_PER_THREAD * threads, int(T * B * H * ns_per_element) // MIN_TILE_NS)
    if threads == 1 or count < 2:
        for part in tiles(B, H, 1):
            tile(*part, *args)
        return
    parts = tiles(B, H, count)
    helpers = min(threads, len(parts)) - 1
    if helpers < 1:  # one tile (a single row narrower than two channel blocks): no thread to hand off to
        for part in parts:
            tile(*part, *args)
        return
    if _POOL[1] < helpers or _POOL[2] != os.getpid():  # (a forked child has no worker threads)
        _POOL[:] = [ThreadPoolExecutor(helpers, thread_name_prefix="minirec-cpu"), helpers, os.getpid()]
    job = _Job(tile, parts, args)
    for _ in range(helpers):
        _POOL[0].submit(job.work)
    job.work()  # this thread works too
    job.wait()


# ---- Python-side argument preparation ---------------------------------------------------------------
def check_dtype(array, name="input"):
    if array.dtype not in FLOATS:
        raise TypeError(f"cpu kernels support float32 and float64, got {name} of dtype {array.dtype}")
    return array.dtype


def dim(array, axis):
    """``array.shape[axis]``, the size a wrapper takes T, B or H from; NaN (an unknown size, which
    `check_args` matches with anything) where the array is None or lacks that axis. NaN stays NaN
    through 3·H or H + 2, and the array itself is then reported for its number of axes."""
    shape = () if array is None else np.shape(array)
    return shape[axis] if axis < len(shape) else math.nan


def _allowed(size):
    """The sizes an expected size allows, or None for any (NaN: unknown)."""
    sizes = size if isinstance(size, tuple) else (size,)
    return None if any(n != n for n in sizes) else sizes


def _fits(actual, expected):
    return len(actual) == len(expected) and all(
        _allowed(size) is None or n in _allowed(size) for n, size in zip(actual, expected))


def _format_shape(shape):
    sizes = ["?" if _allowed(size) is None else " or ".join(map(str, _allowed(size))) for size in shape]
    return f"({sizes[0]},)" if len(sizes) == 1 else f"({', '.join(sizes)})"


def check_args(kernel, may_be_none=("mask",), **arrays):
    """What every wrapper checks before any numba call, which runs without bounds checks: the
    shapes, and one float dtype. Returns that dtype.

    ``arrays`` maps each array argument's name to (the array or None, its expected shape), in
    the order of the signature; a size in the expected shape is an int, a tuple of the sizes
    allowed, or NaN (unknown: see `dim`). The arguments named in ``may_be_none`` may be None
    (left out), the others not. Raises ValueError listing every argument missing or of another
    shape; then TypeError unless every argument but ``mask`` (0/1 of any numeric dtype, cast by
    the wrapper) has the dtype of the first one, float32 or float64.
    """
    wrong = []
    for name, (array, shape) in arrays.items():
        if array is None and name in may_be_none:
            continue
        if array is None or not _fits(np.shape(array), shape):
            found = None if array is None else tuple(np.shape(array))
            wrong.append(f"{name} {found} (expected {_format_shape(shape)})")
    if wrong:
        raise ValueError(f"{kernel}: {'; '.join(wrong)}")
    first = None
    for name, (array, _) in arrays.items():
        if array is None or name == "mask":
            continue
        dtype = np.asarray(array).dtype
        if first is None:
            first = name, dtype
            if dtype not in FLOATS:
                raise TypeError(f"{kernel}: cpu kernels support float32 and float64, got {name} of dtype {dtype}")
        elif dtype != first[1]:
            raise TypeError(f"{kernel}: {name} has dtype {dtype} but {first[0]} has {first[1]}: the arrays must "
                            "share one float dtype")
    return first[1]


def contiguous(array, dtype):
    """A C-contiguous, writeable array of ``dtype`` (no copy when it already is one). Read-only
    arrays (``np.broadcast_to``, memory maps) are copied: numba compiles another specialisation
    for them, which costs more than the copy."""
    array = np.ascontiguousarray(array, dtype=dtype)
    return array if array.flags.writeable else array.copy()


def optional(array, dtype, ndim):
    """(C-contiguous array, True), or (an empty placeholder of the same type, False) for None:
    one compiled specialisation serves both cases."""
    if array is None:
        return np.empty((0,) * ndim, dtype=dtype), False
    return contiguous(array, dtype), True


def columns(view, dtype):
    """(parent, offset) such that ``view[t, b, j] == parent[t, b, offset + j]``, parent C-contiguous.

    The cells pass column blocks of one projection (``u[..., :H]``, ``u[..., H:]``): read them in
    place from their parent instead of copying each into a contiguous array. Anything else is
    made contiguous (offset 0).
    """
    if view.dtype == dtype and view.flags.c_contiguous and view.flags.writeable:
        return view, 0
    base = view.base
    if (view.ndim == 3 and view.size and isinstance(base, np.ndarray) and base.dtype == dtype
            and base.flags.c_contiguous and base.flags.writeable):
        T, B, H = view.shape
        item = view.itemsize
        W, rest = divmod(view.strides[1], item)
        if rest == 0 and view.strides == (B * W * item, W * item, item) and base.size == T * B * W:
            parent = base.reshape(T, B, W)
            offset, rest = divmod(view.ctypes.data - parent.ctypes.data, item)
            if rest == 0 and 0 <= offset <= W - H:
                return parent, offset
    return contiguous(view, dtype), 0


# ---- numba's cache and this module --------------------------------------------------------------
# numba keys a cached function on its own file only, and the kernels of the other modules of this
# package inline the helpers above: after this file changes (an edit, a git pull), their cached
# machine code would keep the old helpers. So the cache directory holds a stamp, the hash of this
# file's source, and at import the package's cache files are dropped when it differs.
STAMP_NAME = "_common.py.sha256"


def numba_cache_directory(dispatcher):
    """Where numba caches ``dispatcher`` and every kernel of this package (one directory per source
    directory: cpu/__pycache__, or under NUMBA_CACHE_DIR or the user's cache directory when that is
    not writable); None when it does not cache."""
    return getattr(getattr(dispatcher, "_cache", None), "cache_path", None)


def drop_stale_cache(directory, source: bytes) -> bool:
    """Delete numba's cache files (*.nbi, *.nbc) in ``directory`` unless its stamp holds the hash
    of ``source``, then write that stamp. Returns whether it deleted them. Quietly does nothing
    where the directory cannot be read or written (numba cannot cache there either)."""
    digest = hashlib.sha256(source).hexdigest()
    stamp = os.path.join(directory, STAMP_NAME)
    try:
        with open(stamp, encoding="ascii") as file:
            if file.read().strip() == digest:
                return False
    except (OSError, ValueError):
        pass  # no stamp yet (a fresh cache, or one from before stamps): drop what is there
    try:
        for name in os.listdir(directory):
            if name.endswith((".nbi", ".nbc")):
                try:
                    os.remove(os.path.join(directory, name))
                except FileNotFoundError:  # another process got there first
                    pass
        temporary = f"{stamp}.{os.getpid()}.tmp"
        with open(temporary, "w", encoding="ascii") as file:
            file.write(digest + "\n")
        os.replace(temporary, stamp)  # never a half-written stamp for another process to read
    except OSError:
        return False
    return True


def _drop_stale_cache_of_this_package():
    directory = numba_cache_directory(sigmoid)
    if directory is not None:
        with open(__file__, "rb") as file:
            drop_stale_cache(directory, file.read())


_drop_stale_cache_of_this_package()  # before any kernel is called: numba loads its cache on the first call
