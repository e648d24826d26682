"""Solvers for the linear recurrence ``h_t = a_t * h_{t-1} + b_t``.

Every array is *time-major*: axis 0 is time and the remaining axes (usually
``(B, D)``, but any trailing shape works) are independent "columns" that are
solved in parallel.  The initial state ``h0`` has shape ``a.shape[1:]``;
``None`` means zeros.  All forward solvers return ``h`` with the same shape as
``a`` -- the states ``h_1 .. h_T`` (``h0`` is *not* included) -- in the dtype of
the inputs.

The module is array-agnostic: the array namespace is picked with
:func:`get_array_module`, so the same code runs on NumPy and on CuPy.  Only the
numba kernels (:func:`linear_scan_cpu`, :func:`linear_scan_backward_cpu`) are
NumPy-only (they are the registered kernels of `minirec.kernels.cpu.scan`), and numba is
imported lazily, so this module imports without it.

Public API
----------
``linear_scan_sequential(a, b, h0=None)``
    the readable loop over time; the reference truth.
``linear_scan_blelloch(a, b, h0=None)``
    Blelloch's work-efficient parallel scan (up-sweep, clear, down-sweep).
``blelloch_trace(values_a, values_b)``
    the intermediate arrays of every Blelloch level on a 1-D example.
``linear_scan_log(log_a, log_b, log_h0=None)``
    Heinsen's (2023) log-space scan for positive states; returns ``log h``.
``logcumsumexp(x)``
    stable ``log(cumsum(exp(x)))`` along axis 0.
``linear_scan_backward(a, h, h0, grad_h, method="sequential")``
    the backward pass, itself a reverse linear scan.
``linear_scan(a, b, h0=None, method="sequential")``
    dispatcher over the forward methods.
``linear_scan_cpu(a, b, h0=None)`` / ``linear_scan_backward_cpu(a, h, h0, grad_h)``
    numba-parallel CPU kernels (float32 / float64).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "METHODS",
    "blelloch_trace",
    "get_array_module",
    "linear_scan",
    "linear_scan_backward",
    "linear_scan_backward_cpu",
    "linear_scan_blelloch",
    "linear_scan_cpu",
    "linear_scan_log",
    "linear_scan_sequential",
    "logcumsumexp",
]

METHODS = ("sequential", "blelloch")

# ---------------------------------------------------------------------------
# Array namespace and input checks
# ---------------------------------------------------------------------------

_CUPY = None  # the cupy module, False when it is not importable, None = not tried


def get_array_module(*arrays):
    """Return ``cupy`` if any of ``arrays`` is a CuPy array, else ``numpy``.

    ``None`` entries are ignored.  CuPy is optional: when it cannot be
    imported, the answer is always ``numpy``.
    """
    global _CUPY
    if _CUPY is None:
        try:
            import cupy  # noqa: PLC0415  (optional dependency)
        except Exception:  # ImportError, or a broken CUDA install
            _CUPY = False
        else:
            _CUPY = cupy
    if _CUPY is False:
        return np
    return _CUPY.get_array_module(*[x for x in arrays if x is not None])


def _validate(xp, named, init_name, init):
    """Convert to arrays and check shapes/dtypes.

    ``named`` maps names to arrays that must all share one shape (with a
    leading time axis) and one dtype; ``init`` (may be ``None``) must have
    shape ``shape[1:]`` and the same dtype.  Returns the arrays, then ``init``.
    """
    names = list(named)
    arrays = [xp.asarray(v) for v in named.values()]
    first, n0 = arrays[0], names[0]
    if first.ndim < 1:
        raise ValueError(
            f"{n0} must have a leading time axis (ndim >= 1), got shape {first.shape}"
        )
    for name, x in zip(names[1:], arrays[1:]):
        if x.shape != first.shape:
            raise ValueError(
                f"{n0} and {name} must have the same shape, got "
                f"{n0}.shape={first.shape} and {name}.shape={x.shape}"
            )
        if x.dtype != first.dtype:
            raise ValueError(
                f"{n0} and {name} must have the same dtype, got "
                f"{n0}.dtype={first.dtype} and {name}.dtype={x.dtype}"
            )
    if init is not None:
        init = xp.asarray(init)
        if init.shape != first.shape[1:]:
            raise ValueError(
                f"{init_name} must have shape {n0}.shape[1:]={first.shape[1:]}, "
                f"got {init_name}.shape={init.shape} ({n0}.shape={first.shape})"
            )
        if init.dtype != first.dtype:
            raise ValueError(
                f"{init_name} must have the dtype of {n0}, got "
                f"{init_name}.dtype={init.dtype} and {n0}.dtype={first.dtype}"
            )
    return (*arrays, init)


def _check_method(method):
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")


# ---------------------------------------------------------------------------
# 1. Sequential reference
# ---------------------------------------------------------------------------


def linear_scan_sequential(a, b, h0=None):
    """Solve ``h_t = a_t * h_{t-1} + b_t`` with a plain loop over time.

    ``a``, ``b``: shape ``(T, ...)``; ``h0``: shape ``a.shape[1:]`` or ``None``
    (zeros).  Returns ``h_1 .. h_T`` with shape ``(T, ...)``.  O(T) steps, each
    vectorised over the trailing axes; this is the reference every other
    solver is tested against.
    """
    xp = get_array_module(a, b, h0)
    a, b, h0 = _validate(xp, {"a": a, "b": b}, "h0", h0)
    h = xp.empty(a.shape, dtype=a.dtype)
    prev = xp.zeros(a.shape[1:], dtype=a.dtype) if h0 is None else h0
    for t in range(a.shape[0]):
        prev = a[t] * prev + b[t]
        h[t] = prev
    return h


# ---------------------------------------------------------------------------
# 2. Blelloch (work-efficient) parallel scan
# ---------------------------------------------------------------------------
#
# The recurrence step ``h -> a*h + b`` is an affine map, written as the pair
# (a, b).  Doing step 1 *then* step 2 is again an affine map:
#
#     (a1, b1) o (a2, b2) = (a1*a2, a2*b1 + b2)       # h -> a2*(a1*h + b1) + b2
#
# This operator is associative (but not commutative) with identity (1, 0), so
# the inclusive prefix "products" (A_t, B_t) = x_1 o x_2 o ... o x_t can be
# computed by any parallel scan; then h_t = A_t * h0 + B_t.
#
# Blelloch (1990) computes the *exclusive* scan in 2*log2(n) levels with O(n)
# total work, on a balanced binary tree laid out in place in the array:
#   * up-sweep (reduce): at level d every right child at index
#     k*2^(d+1) + 2^(d+1) - 1 becomes (left subtree total) o (itself), so at the
#     end the root (last slot) holds the total x_1 o ... o x_n;
#   * clear: the root is set to the identity (1, 0);
#   * down-sweep: from the root down, every node passes its prefix P to its
#     left child and P o (left subtree total) to its right child.  After the
#     last level, slot t holds x_1 o ... o x_{t-1} (the exclusive scan).
# The inclusive scan is then exclusive_t o x_t.


def _next_pow2(n):
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def _record(trace, phase, level, A, B):
    if trace is not None:
        trace.append((phase, level, A.copy(), B.copy()))


def _blelloch_inclusive(xp, a, b, trace=None):
    """Inclusive Blelloch scan of the pairs (a_t, b_t) along axis 0.

    Returns ``(A, B)`` of shape ``a.shape`` with ``(A_t, B_t) = x_1 o ... o x_t``.
    If ``trace`` is a list, ``(phase, level, A_copy, B_copy)`` is appended after
    every phase/level (see :func:`blelloch_trace`).
    """
    T = a.shape[0]
    n = _next_pow2(T)
    levels = n.bit_length() - 1  # log2(n)

    # Leaves: the input, padded up to a power of two with the identity (1, 0)
    # (appending identities does not change any prefix of the real elements).
    A = xp.ones((n,) + a.shape[1:], dtype=a.dtype)
    B = xp.zeros((n,) + a.shape[1:], dtype=a.dtype)
    A[:T] = a
    B[:T] = b
    _record(trace, "input", 0, A, B)

    # Phase 1 -- up-sweep (reduce).  Level d pairs nodes 2^d apart; the strided
    # views below are every left child and every right child of that level.
    for d in range(levels):
        half, stride = 1 << d, 2 << d
        Al, Bl = A[half - 1 :: stride], B[half - 1 :: stride]  # left subtree totals
        Ar, Br = A[stride - 1 :: stride], B[stride - 1 :: stride]  # right ones -> parent
        # parent = left o right = (Al*Ar, Ar*Bl + Br); B first, it reads the old Ar.
        Br[...] = Ar * Bl + Br
        Ar[...] = Al * Ar
        _record(trace, "up-sweep", d, A, B)

    # Phase 2 -- clear: the root now holds the total reduction; replace it by the
    # identity, the (empty) prefix that comes before the whole sequence.
    A[n - 1] = 1
    B[n - 1] = 0
    _record(trace, "clear", levels, A, B)

    # Phase 3 -- down-sweep.  Each parent slot holds the prefix P of everything
    # before its subtree; the left slot still holds the left subtree total L.
    #   left child  <- P
    #   right child <- P o L = (Pa*La, La*Pb + Lb)
    for d in reversed(range(levels)):
        half, stride = 1 << d, 2 << d
        Al, Bl = A[half - 1 :: stride], B[half - 1 :: stride]
        Ar, Br = A[stride - 1 :: stride], B[stride - 1 :: stride]
        Pa, Pb = Ar.copy(), Br.copy()
        Br[...] = Al * Pb + Bl
        Ar[...] = Pa * Al
        Al[...] = Pa
        Bl[...] = Pb
        _record(trace, "down-sweep", d, A, B)

    # (A, B) now hold the exclusive scan.  Inclusive: exclusive_t o x_t.
    A_inc = A[:T] * a
    B_inc = a * B[:T] + b
    _record(trace, "inclusive", 0, A_inc, B_inc)
    return A_inc, B_inc


def linear_scan_blelloch(a, b, h0=None):
    """Solve ``h_t = a_t * h_{t-1} + b_t`` with Blelloch's parallel scan.

    Same contract as :func:`linear_scan_sequential`.  The scan runs over the
    time axis in ``2*ceil(log2 T)`` levels, each one vectorised over all the
    other axes with strided views.  ``h0`` is folded in at the end with
    ``h_t = A_t * h0 + B_t``.  It multiplies runs of ``a`` together, so it
    assumes ``|a| <= 1`` (true of every gate here): with larger coefficients a
    product can overflow and turn into NaN where the loop stays finite.
    """
    xp = get_array_module(a, b, h0)
    a, b, h0 = _validate(xp, {"a": a, "b": b}, "h0", h0)
    if a.shape[0] == 0:
        return xp.empty(a.shape, dtype=a.dtype)
    A, B = _blelloch_inclusive(xp, a, b)
    if h0 is None:
        return B
    return A * h0 + B


def blelloch_trace(values_a, values_b):
    """Record every level of the Blelloch scan on a 1-D example (for drawing).

    ``values_a``, ``values_b``: 1-D arrays of the same length (8 makes a tree
    of ``log2(8) = 3`` levels; other lengths are padded with the identity
    ``(1, 0)`` up to a power of two ``n``).  Returns a list of
    ``(phase, level, a_copy, b_copy)`` in execution order:

    * ``("input", 0, ...)``      the padded leaves;
    * ``("up-sweep", d, ...)``   for ``d = 0 .. log2(n) - 1``, after combining
      nodes ``2**d`` apart (the last one holds the total at index ``n-1``);
    * ``("clear", log2(n), ...)`` after setting the root to the identity;
    * ``("down-sweep", d, ...)`` for ``d = log2(n) - 1 .. 0``; the arrays of the
      last one (``d == 0``) are the *exclusive* scan
      ``x_1 o ... o x_{t-1}`` (the identity ``(1, 0)`` at t = 1);
    * ``("inclusive", 0, ...)``  the *inclusive* scan ``x_1 o ... o x_t``
      (length T, unpadded), whose ``b`` part is ``h`` for ``h0 = 0``.
    """
    xp = get_array_module(values_a, values_b)
    a, b, _ = _validate(xp, {"values_a": values_a, "values_b": values_b}, "", None)
    if a.ndim != 1 or a.shape[0] == 0:
        raise ValueError(f"blelloch_trace expects non-empty 1-D arrays, got shape {a.shape}")
    trace = []
    _blelloch_inclusive(xp, a, b, trace=trace)
    return trace


# ---------------------------------------------------------------------------
# 3. Log-space scan (Heinsen, 2023)
# ---------------------------------------------------------------------------


def _logaddexp(xp, x, y):
    """``log(exp(x) + exp(y))`` by max-subtraction, safe with +-inf."""
    m = xp.maximum(x, y)  # the running max
    lo = xp.minimum(x, y)
    finite = xp.isfinite(m)
    # d = lo - m <= 0, so exp(d) <= 1 cannot overflow.  If m is +-inf the
    # answer is m itself (add nothing); avoid inf - inf = nan there.
    d = xp.where(finite, lo - xp.where(finite, m, 0), -xp.inf)
    return m + xp.log1p(xp.exp(d))


def _logcumsumexp_generic(x, xp=None):
    """Stable ``logcumsumexp`` along axis 0 for any array namespace.

    A Hillis-Steele doubling scan: after the step with offset ``k`` slot ``t``
    holds the log-sum-exp of ``x[max(0, t-2k+1) .. t]``, so ``ceil(log2 T)``
    vectorised steps suffice.  Each pairwise combination subtracts the running
    maximum before exponentiating (see :func:`_logaddexp`), so nothing
    overflows and small terms are not lost to the scale of the largest one.
    """
    xp = get_array_module(x) if xp is None else xp
    out = xp.array(x, copy=True)
    T = out.shape[0]
    k = 1
    while k < T:
        out[k:] = _logaddexp(xp, out[k:], out[:-k])  # right side is evaluated first
        k *= 2
    return out


def logcumsumexp(x):
    """``log(cumsum(exp(x), axis=0))`` computed stably along axis 0."""
    xp = get_array_module(x)
    x = xp.asarray(x)
    if xp is np:
        if x.shape[0] == 0:
            return x.copy()
        return np.logaddexp.accumulate(x, axis=0)
    return _logcumsumexp_generic(x, xp)


def linear_scan_log(log_a, log_b, log_h0=None):
    """Heinsen's log-space scan: return ``log h`` for positive ``a``, ``b``, ``h0``.

    With ``a*_t = sum_{s<=t} log a_s`` (a cumulative sum),

        h_t = exp(a*_t) * sum_{s<=t} b_s / exp(a*_s)
        log h_t = a*_t + logcumsumexp_t(log b_t - a*_t).

    ``log_h0`` is folded in by prepending it to ``log_b`` with a zero
    log-coefficient (``a_0 = 1``) and dropping that first output.  Shapes and
    dtype as in :func:`linear_scan_sequential`; ``-inf`` in ``log_b`` (b = 0)
    is allowed, ``-inf`` in ``log_a`` (a = 0) is not: ``a*`` is then ``-inf``
    from there on and ``-inf + inf`` is NaN.  The price of the method: ``log h``
    is the difference of two numbers of size ``|a*_t|``, so its error grows
    like ``|a*_t|·u`` (u the unit round-off): with log a ≈ −2 per step, about
    1e-4 relative in float32 after 4,000 steps, where the loop keeps 1e-7.
    """
    xp = get_array_module(log_a, log_b, log_h0)
    log_a, log_b, log_h0 = _validate(xp, {"log_a": log_a, "log_b": log_b}, "log_h0", log_h0)
    if log_a.shape[0] == 0:
        return xp.empty(log_a.shape, dtype=log_a.dtype)
    if log_h0 is not None:
        log_a = xp.concatenate([xp.zeros_like(log_h0)[None], log_a], axis=0)
        log_b = xp.concatenate([log_h0[None], log_b], axis=0)
    a_star = xp.cumsum(log_a, axis=0)
    log_h = a_star + logcumsumexp(log_b - a_star)
    if log_h0 is not None:
        log_h = log_h[1:]
    return log_h.astype(log_a.dtype, copy=False)


# ---------------------------------------------------------------------------
# 4. Backward pass
# ---------------------------------------------------------------------------
#
# Forward: h_t = a_t h_{t-1} + b_t.  Given dL/dh_t = grad_h_t, the total
# gradient g_t = dL/dh_t (through every later step) obeys
#     g_T = grad_h_T,      g_t = grad_h_t + a_{t+1} g_{t+1},
# i.e. the same linear recurrence run backwards in time with the gates shifted
# by one step.  Then dL/db_t = g_t, dL/da_t = g_t h_{t-1}, dL/dh0 = a_1 g_1.


def linear_scan_backward(a, h, h0, grad_h, method="sequential"):
    """Gradients of the recurrence: returns ``(grad_a, grad_b, grad_h0)``.

    ``a``: the forward gates; ``h``: the forward output (``h_1 .. h_T``);
    ``h0``: the initial state or ``None`` (zeros); ``grad_h``: ``dL/dh`` of
    shape ``a.shape``.  ``grad_h0`` (shape ``a.shape[1:]``) is returned even
    when ``h0`` is ``None`` -- it is then the gradient at the zero state.
    ``method`` picks the reverse scan: ``"sequential"`` or ``"blelloch"``.
    """
    _check_method(method)
    xp = get_array_module(a, h, h0, grad_h)
    a, h, grad_h, h0 = _validate(xp, {"a": a, "h": h, "grad_h": grad_h}, "h0", h0)
    T = a.shape[0]
    if T == 0:
        return (xp.empty(a.shape, a.dtype), xp.empty(a.shape, a.dtype),
                xp.zeros(a.shape[1:], a.dtype))
    # Shifted gates: a_next[t] = a[t+1]; the last step has nothing after it.
    a_next = xp.concatenate([a[1:], xp.zeros_like(a[:1])], axis=0)
    # Reverse scan = forward scan on time-flipped arrays, flipped back.
    scan = linear_scan_sequential if method == "sequential" else linear_scan_blelloch
    g = scan(a_next[::-1], grad_h[::-1])[::-1]
    zeros = xp.zeros(a.shape[1:], dtype=a.dtype)
    h_prev = xp.concatenate([(zeros if h0 is None else h0)[None], h[:-1]], axis=0)
    grad_a = g * h_prev
    grad_b = xp.ascontiguousarray(g)
    grad_h0 = a[0] * g[0]
    return grad_a, grad_b, xp.asarray(grad_h0)


# ---------------------------------------------------------------------------
# 5. Dispatcher
# ---------------------------------------------------------------------------


def linear_scan(a, b, h0=None, method="sequential"):
    """Solve ``h_t = a_t * h_{t-1} + b_t`` with ``method`` in :data:`METHODS`."""
    _check_method(method)
    if method == "sequential":
        return linear_scan_sequential(a, b, h0)
    return linear_scan_blelloch(a, b, h0)


# ---------------------------------------------------------------------------
# 6. Numba CPU kernels (optional dependency, compiled on first use)
# ---------------------------------------------------------------------------
def linear_scan_cpu(a, b, h0=None):
    """The numba CPU kernel of the forward scan (`minirec.kernels.cpu.scan`, the one `get_kernel`
    picks for NumPy arrays); same contract as :func:`linear_scan_sequential`, float32/float64."""
    from minirec.kernels.cpu import scan as cpu_scan  # numba compiles on first use

    return cpu_scan.linear_scan_forward(a, b, h0)


def linear_scan_backward_cpu(a, h, h0, grad_h):
    """The numba CPU kernel of the backward scan; same contract as :func:`linear_scan_backward`."""
    from minirec.kernels.cpu import scan as cpu_scan

    return cpu_scan.linear_scan_backward(a, h, h0, grad_h)


# ---------------------------------------------------------------------------
# Registered kernels: cells (FOFE) reach the scan through `get_kernel`, so the
# CPU (numba) and CUDA implementations plug in behind the same signature.
# ---------------------------------------------------------------------------
def _register():
    from minirec.kernels import register_kernel

    @register_kernel("linear_scan_forward", "reference")
    def linear_scan_forward(a, b, h0=None):
        """h_1..h_T of h_t = a_t h_{t−1} + b_t (the readable loop)."""
        return linear_scan_sequential(a, b, h0)

    @register_kernel("linear_scan_backward", "reference")
    def linear_scan_backward_reference(a, h, h0, grad_h):
        """(grad_a, grad_b, grad_h0): the reverse scan with shifted gates."""
        return linear_scan_backward(a, h, h0, grad_h)


_register()
