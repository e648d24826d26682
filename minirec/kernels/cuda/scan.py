"""The linear recurrence ``h_t = a_t ⊙ h_{t−1} + b_t`` on the GPU: a block scan in shared memory.

This is `minirec.kernels.scan` (sequential loop, Blelloch tree, log-space scan, reverse scan for
the backward) written as Numba-CUDA kernels that read CuPy arrays in place (through
``__cuda_array_interface__``: no copy). (`minirec.kernels.cuda._common` holds the launch plumbing.)

The algorithm (one launch for the forward, one for the backward)
----------------------------------------------------------------
A thread block covers ``channels`` columns (consecutive (b, j) pairs: ``threadIdx.x``) and the
whole time axis, cut into ``lanes`` contiguous segments (``threadIdx.y``), ``lanes`` a power of
two. With S = ceil(T / lanes), lane y owns the steps [y·S, min((y+1)·S, T)) — for any T, the
last lanes may own fewer steps or none (they hold the identity).

1. **Segment totals.** Each thread composes the affine maps h ↦ a_t h + b_t of its segment into
   one map (A, B) — a loop over S steps, four loads issued before they are used.
2. **Blelloch across lanes** (shared memory, 2·log2(lanes) levels): the up-sweep leaves the total
   of the whole sequence at the last lane; it is replaced by the identity (1, 0); the down-sweep
   leaves at lane y the *exclusive* prefix, the composition of every segment before y. The
   operator, "x₁ then x₂", is (a₁, b₁) ∘ (a₂, b₂) = (a₁a₂, a₂b₁ + b₂): associative, not
   commutative (see scan.py for the tree drawn on an example).
3. **Second pass.** Each thread starts from its carry h_in = A_prefix·h₀ + B_prefix and runs its
   segment again, writing h_t (and the gate the cell's backward needs). a and b are read twice;
   the second read usually hits L2.

``lanes = 1`` skips 1 and 2: it is the plain loop over time, one thread per column — the
``"sequential"`` mode of minGRU/minLSTM. The backward is the same kernel run backwards in time:
g_t = ∂L/∂h_t (total) obeys g_t = ∂L/∂h_t(direct) + a_{t+1} g_{t+1}, a linear recurrence over
reversed time with gates shifted by one step; lanes are combined in reverse order, and then
∂L/∂b_t = g_t, ∂L/∂a_t = g_t h_{t−1}, ∂L/∂h₀ = a₁ g₁. The log-space variant (Heinsen 2023)
combines (log a, log b) pairs with (la₁, lb₁) ∘ (la₂, lb₂) = (la₁ + la₂, logaddexp(la₂ + lb₁,
lb₂)), identity (0, −∞).

Coefficients computed in the kernel
-----------------------------------
``kind`` says where (a_t, b_t) come from, so minGRU and minLSTM need no (T, B, H) temporaries:

* ``PLAIN``: two arrays a, b (`linear_scan_cuda`, FOFE);
* ``MINGRU``: a = σ(−k), b = σ(k)·v, v = g(x̃) or x̃ (`minirec.kernels.minrnn`);
* ``MINLSTM``: d = softplus(−k_i) − softplus(−k_f), a = σ(d), b = σ(−d)·v.

A mask (T, B) makes padded steps carry the state: a = 1, b = 0 (log a = 0, log b = −∞).

Launching, CuPy and the simulator
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import cuda

from minirec import backend
from minirec.kernels import register_kernel
from minirec.kernels.cuda._common import (
    MAX_BLOCK_THREADS,
    SPREAD_BLOCKS,
    clamp_step,
    column_blocks,
    g_act,
    g_prime,
    launch,
    log_g,
    logaddexp,
    or_stand_in,
    positive_strides,
    sigmoid,
    softplus,
)

__all__ = [
    "PLAIN", "MINGRU", "MINLSTM", "plan",
    "scan_forward", "scan_backward", "scan_log_forward",
    "linear_scan_cuda", "linear_scan_backward_cuda", "linear_scan_log_cuda",
]

# where the coefficients (a_t, b_t) come from (module docstring)
PLAIN, MINGRU, MINLSTM = 0, 1, 2

# Launch shape (tunable; the tests shrink them to exercise the tree at tiny sizes).
STEPS_PER_LANE = 8  # aim for about this many steps per thread before adding lanes
MAX_LANES = 32  # time segments per column (a power of two)
BLOCK_THREADS = 256  # threads per block (channels × lanes), at most MAX_THREADS
MAX_THREADS = MAX_BLOCK_THREADS  # the shared arrays' size: the most threads a block may have


def _next_pow2(n):
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def plan(T, columns, lanes=None):
    """(grid, block, lanes) for a block scan of ``columns`` columns over T steps.

    ``lanes=None`` picks a power of two giving each thread about `STEPS_PER_LANE` steps (at most
    `MAX_LANES`); ``lanes=1`` is the plain loop over time. A block is ``channels × lanes`` threads
    with ``channels × lanes ≤ BLOCK_THREADS`` (and ≥ 1 channel), fewer channels when that leaves
    under `SPREAD_BLOCKS` blocks.
    """
    if lanes is None:
        lanes = min(MAX_LANES, _next_pow2(-(-T // STEPS_PER_LANE)))
    lanes = max(1, int(lanes))
    if lanes & (lanes - 1):
        raise ValueError(f"lanes must be a power of two, got {lanes}")
    if lanes > MAX_THREADS:
        raise ValueError(f"lanes must be at most {MAX_THREADS} (a larger block would not launch on a GPU: "
                         f"minirec.kernels.cuda._common.MAX_BLOCK_THREADS), got {lanes}")
    channels = max(1, min(BLOCK_THREADS, MAX_THREADS) // lanes)
    # Few columns: smaller blocks spread over more SMs, down to a warp of columns (one lane) or
    # 8 columns (several lanes: 8 float32 = one 32-byte sector per lane and load).
    min_channels = 32 if lanes == 1 else 8
    while channels > min_channels and -(-columns // channels) < SPREAD_BLOCKS:
        channels //= 2
    channels = min(channels, max(1, columns))
    grid = -(-columns // channels)
    return grid, (channels, lanes), lanes


# ---- coefficient providers -----------------------------------------------------------------------
@cuda.jit(device=True)
def _coeffs(kind, src, mask, has_mask, applies_g, t, b, j, one):
    """(a_t, b_t, gate_t) of column (b, j); gate: z (minGRU), f′ (minLSTM), a (plain). ``src`` =
    (p1, p2, p3, offsets): p_i's column j is parent p_i's column offsets[i] + j (`column_blocks`)."""
    p1, p2, p3, offsets = src
    j1 = offsets[0] + j
    j2 = offsets[1] + j
    j3 = offsets[2] + j
    zero = one - one
    if kind == MINGRU:
        k = p1[t, b, j1]
        x = p2[t, b, j2]
        gate = sigmoid(k, one)
        a = sigmoid(-k, one)  # 1 − z, exact where z rounds to 1
        v = g_act(x, one) if applies_g else x
        bb = gate * v
    elif kind == MINLSTM:
        d = softplus(-p2[t, b, j2], one) - softplus(-p1[t, b, j1], one)  # log f − log i
        x = p3[t, b, j3]
        gate = sigmoid(d, one)
        a = gate
        v = g_act(x, one) if applies_g else x
        bb = sigmoid(-d, one) * v
    else:
        a = p1[t, b, j1]
        bb = p2[t, b, j2]
        gate = a
    if has_mask:
        if mask[t, b] == 0:
            a = one
            bb = zero
    return a, bb, gate


@cuda.jit(device=True)
def _log_coeffs(kind, src, mask, has_mask, t, b, j, one, neg_inf):
    """(log a_t, log b_t, gate_t) for the log-space scan (g always applies to the candidate)."""
    p1, p2, p3, offsets = src
    j1 = offsets[0] + j
    j2 = offsets[1] + j
    j3 = offsets[2] + j
    zero = one - one
    if kind == MINGRU:
        k = p1[t, b, j1]
        gate = sigmoid(k, one)
        la = -softplus(k, one)  # log(1 − z)
        lb = -softplus(-k, one) + log_g(p2[t, b, j2], one)  # log z + log g(x̃)
    elif kind == MINLSTM:
        d = softplus(-p2[t, b, j2], one) - softplus(-p1[t, b, j1], one)
        gate = sigmoid(d, one)
        la = -softplus(-d, one)  # log f′
        lb = -softplus(d, one) + log_g(p3[t, b, j3], one)  # log i′ + log g(x̃)
    else:
        la = p1[t, b, j1]
        lb = p2[t, b, j2]
        gate = la
    if has_mask:
        if mask[t, b] == 0:
            la = zero
            lb = neg_inf
    return la, lb, gate


@cuda.jit(device=True)
def _bwd_a(kind, q1, mask, has_mask, t, b, j, one):
    """ā_t, the coefficient of step t as the backward sees it (1 at a padded step)."""
    if has_mask:
        if mask[t, b] == 0:
            return one
    if kind == MINGRU:
        return one - q1[t, b, j]  # a = 1 − z, as the reference backward
    return q1[t, b, j]  # f′ (minLSTM) or a (plain)


@cuda.jit(device=True)
def _advance(coeffs, state, t, b, j, h, gate_out, has_gate):
    """One step of the forward recurrence from `_coeffs`' (a_t, b_t, gate_t): writes h_t (and the gate)."""
    a, bb, gate = coeffs
    state = a * state + bb
    h[t, b, j] = state
    if has_gate:
        gate_out[t, b, j] = gate
    return state


# ---- the kernels ---------------------------------------------------------------------------------
@cuda.jit(device=True)
def _column(h):
    """(active, b, j) of this thread's column in a (T, B, H) block scan."""
    B = h.shape[1]
    H = h.shape[2]
    n = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    if n < B * H:
        b = n // H
        return True, b, n - b * H
    return False, 0, 0


@cuda.jit(device=True)
def _segment(T, lanes):
    """[lo, hi) of this thread's lane."""
    S = (T + lanes - 1) // lanes
    lo = cuda.threadIdx.y * S
    hi = lo + S
    if hi > T:
        hi = T
    if lo > T:
        lo = T
    return lo, hi


@cuda.jit(device=True)
def _exclusive_scan(sA, sB, lanes, pos, one, neg_inf, log_space):
    """Blelloch's exclusive scan of the lanes' (A, B) maps, in place in shared memory.

    This thread handles tree position ``pos`` (its lane, or the reversed lane for the backward),
    stored at slot ``pos·channels + threadIdx.x``. Afterwards that slot holds the composition of
    positions 0..pos−1 (the identity at position 0). Every thread of the block must call it.
    """
    ch = cuda.blockDim.x
    idx = pos * ch + cuda.threadIdx.x
    zero = one - one
    cuda.syncthreads()
    # up-sweep: a right child becomes (left subtree total) ∘ (itself)
    offset = 1
    while offset < lanes:
        if (pos + 1) % (2 * offset) == 0:
            left = idx - offset * ch
            al = sA[left]
            bl = sB[left]
            ar = sA[idx]
            br = sB[idx]
            if log_space:
                sA[idx] = al + ar
                sB[idx] = logaddexp(ar + bl, br)
            else:
                sA[idx] = al * ar
                sB[idx] = ar * bl + br
        cuda.syncthreads()
        offset *= 2
    # clear: the root gets the identity, the empty prefix before the whole sequence
    if pos == lanes - 1:
        if log_space:
            sA[idx] = zero
            sB[idx] = neg_inf
        else:
            sA[idx] = one
            sB[idx] = zero
    cuda.syncthreads()
    # down-sweep: left child <- P (the parent's prefix), right child <- P ∘ L (L: left total)
    offset = lanes // 2
    while offset >= 1:
        if (pos + 1) % (2 * offset) == 0:
            left = idx - offset * ch
            pa = sA[idx]
            pb = sB[idx]
            la = sA[left]
            lb = sB[left]
            sA[left] = pa
            sB[left] = pb
            if log_space:
                sA[idx] = pa + la
                sB[idx] = logaddexp(la + pb, lb)
            else:
                sA[idx] = pa * la
                sB[idx] = la * pb + lb
        cuda.syncthreads()
        offset //= 2


# Each kernel is built by a factory per combination of its flags (kind, mask or not, g or not,
# h0 or not, ...), which the kernel reads as closure constants: numba compiles them as constants,
# so the branches that cannot run are compiled out and the registers are sized for the code that
# does run (with runtime flags every kernel carried the worst branch's registers: the review
# found occupancy capped at 50 % in float32 and 25 % in float64). numba's cache keys a closure on
# its constants too, so each variant is cached on its own.
@functools.cache
def forward_kernel(kind, has_mask, applies_g, has_h0, has_gate):
    """The forward block scan compiled for one combination of flags (closure constants: the comment above)."""

    @cuda.jit(cache=True)
    def _scan_forward_kernel(p1, p2, p3, offsets, mask, h0, lanes, h, gate_out):
        """h_t = a_t h_{t−1} + b_t for every column; writes h (T, B, H) and, if has_gate, the gate."""
        src = (p1, p2, p3, offsets)
        sA = cuda.shared.array(MAX_THREADS, h.dtype)
        sB = cuda.shared.array(MAX_THREADS, h.dtype)
        one = h.dtype.type(1.0)
        zero = one - one
        T = h.shape[0]
        active, b, j = _column(h)
        lo, hi = _segment(T, lanes)
        idx = cuda.threadIdx.y * cuda.blockDim.x + cuda.threadIdx.x
        if lanes > 1:
            # 1. the segment's map (A, B): h_hi = A h_lo + B
            A = one
            Bv = zero
            if active:
                t = lo
                while t + 4 <= hi:  # four steps' loads in flight before the dependent updates
                    a0, b0, _ = _coeffs(kind, src, mask, has_mask, applies_g, t, b, j, one)
                    a1, b1, _ = _coeffs(kind, src, mask, has_mask, applies_g, t + 1, b, j, one)
                    a2, b2, _ = _coeffs(kind, src, mask, has_mask, applies_g, t + 2, b, j, one)
                    a3, b3, _ = _coeffs(kind, src, mask, has_mask, applies_g, t + 3, b, j, one)
                    Bv = a3 * (a2 * (a1 * (a0 * Bv + b0) + b1) + b2) + b3
                    A = A * a0 * a1 * a2 * a3
                    t += 4
                while t < hi:
                    a0, b0, _ = _coeffs(kind, src, mask, has_mask, applies_g, t, b, j, one)
                    Bv = a0 * Bv + b0
                    A = A * a0
                    t += 1
            sA[idx] = A
            sB[idx] = Bv
            # 2. exclusive prefix over the lanes
            _exclusive_scan(sA, sB, lanes, cuda.threadIdx.y, one, zero, False)
        # 3. rerun the segment from its carry
        if active:
            state = h0[b, j] if has_h0 else zero
            if lanes > 1:
                state = sA[idx] * state + sB[idx]
            # software-pipelined as the column kernels (the comment above `sru.forward_kernel`)
            last = hi - 1
            C0 = _coeffs(kind, src, mask, has_mask, applies_g, clamp_step(lo, last), b, j, one)
            C1 = _coeffs(kind, src, mask, has_mask, applies_g, clamp_step(lo + 1, last), b, j, one)
            C2 = _coeffs(kind, src, mask, has_mask, applies_g, clamp_step(lo + 2, last), b, j, one)
            C3 = _coeffs(kind, src, mask, has_mask, applies_g, clamp_step(lo + 3, last), b, j, one)
            t = lo
            while t + 4 <= hi:
                N0 = _coeffs(kind, src, mask, has_mask, applies_g, clamp_step(t + 4, last), b, j, one)
                N1 = _coeffs(kind, src, mask, has_mask, applies_g, clamp_step(t + 5, last), b, j, one)
                N2 = _coeffs(kind, src, mask, has_mask, applies_g, clamp_step(t + 6, last), b, j, one)
                N3 = _coeffs(kind, src, mask, has_mask, applies_g, clamp_step(t + 7, last), b, j, one)
                state = _advance(C0, state, t, b, j, h, gate_out, has_gate)
                state = _advance(C1, state, t + 1, b, j, h, gate_out, has_gate)
                state = _advance(C2, state, t + 2, b, j, h, gate_out, has_gate)
                state = _advance(C3, state, t + 3, b, j, h, gate_out, has_gate)
                C0, C1, C2, C3 = N0, N1, N2, N3
                t += 4
            if t < hi:
                state = _advance(C0, state, t, b, j, h, gate_out, has_gate)
            if t + 1 < hi:
                state = _advance(C1, state, t + 1, b, j, h, gate_out, has_gate)
            if t + 2 < hi:
                state = _advance(C2, state, t + 2, b, j, h, gate_out, has_gate)

    return _scan_forward_kernel


@functools.cache
def log_forward_kernel(kind, has_mask, has_h0, out_exp, has_gate):
    """The log-space forward scan compiled for one combination of flags (closure constants: the comment above)."""

    @cuda.jit(cache=True)
    def _scan_log_forward_kernel(p1, p2, p3, offsets, mask, h0, lanes, out, gate_out):
        """The log-space scan: log h_t = logaddexp(log a_t + log h_{t−1}, log b_t).

        ``has_h0``: h0 holds log h0 (plain) or h0 itself (minGRU/minLSTM, > 0); without it log h0 =
        −∞. Writes log h to ``out``, or h = exp(log h) if ``out_exp``.
        """
        src = (p1, p2, p3, offsets)
        sA = cuda.shared.array(MAX_THREADS, out.dtype)
        sB = cuda.shared.array(MAX_THREADS, out.dtype)
        one = out.dtype.type(1.0)
        zero = one - one
        neg_inf = out.dtype.type(-math.inf)
        T = out.shape[0]
        active, b, j = _column(out)
        lo, hi = _segment(T, lanes)
        idx = cuda.threadIdx.y * cuda.blockDim.x + cuda.threadIdx.x
        if lanes > 1:
            LA = zero
            LB = neg_inf
            if active:
                for t in range(lo, hi):
                    la, lb, _ = _log_coeffs(kind, src, mask, has_mask, t, b, j, one, neg_inf)
                    LB = logaddexp(la + LB, lb)
                    LA = LA + la
            sA[idx] = LA
            sB[idx] = LB
            _exclusive_scan(sA, sB, lanes, cuda.threadIdx.y, one, neg_inf, True)
        if active:
            state = neg_inf
            if has_h0:
                state = h0[b, j] if kind == PLAIN else math.log(h0[b, j])
            if lanes > 1:
                state = logaddexp(sA[idx] + state, sB[idx])
            for t in range(lo, hi):
                la, lb, gate = _log_coeffs(kind, src, mask, has_mask, t, b, j, one, neg_inf)
                state = logaddexp(la + state, lb)
                out[t, b, j] = math.exp(state) if out_exp else state
                if has_gate:
                    gate_out[t, b, j] = gate

    return _scan_log_forward_kernel


@cuda.jit(device=True)
def _bwd_load(kind, src, mask, has_mask, h, h0, has_h0, grad_h, t, b, j, one):
    """What step t of the backward reads: (ā_t, real step?, ∂L/∂h_t direct, h_{t−1}, q2, q3, q4).
    ``src`` = (q1, q2, q3, q4, offsets): q2..q4 are column blocks of their parents (`column_blocks`)."""
    q1, q2, q3, q4, offsets = src
    zero = one - one
    real = True
    if has_mask:
        real = mask[t, b] != 0
    gate = q1[t, b, j]
    if kind == MINGRU:
        a = one - gate  # a = 1 − z, as the reference backward
    else:
        a = gate  # f′ (minLSTM) or a (plain)
    if not real:
        a = one
    if t > 0:
        h_prev = h[t - 1, b, j]
    elif has_h0:
        h_prev = h0[b, j]
    else:
        h_prev = zero
    x2 = zero
    x3 = zero
    x4 = zero
    if kind == MINGRU:
        x2 = q2[t, b, offsets[0] + j]
    elif kind == MINLSTM:
        x2 = q2[t, b, offsets[0] + j]
        x3 = q3[t, b, offsets[1] + j]
        x4 = q4[t, b, offsets[2] + j]
    return a, real, gate, grad_h[t, b, j], h_prev, x2, x3, x4


@cuda.jit(device=True)
def _bwd_step(kind, L, g, a_next, t, b, j, applies_g, one, o1, o2, o3):
    """g_t = ā_{t+1} g_{t+1} + ∂L/∂h_t, then the gradients of step t; returns (g_t, ā_t)."""
    a, real, gate, direct, h_prev, x2, x3, x4 = L
    zero = one - one
    g = a_next * g + direct
    grad_b = g
    grad_a = g * h_prev
    if not real:
        grad_b = zero
        grad_a = zero
    if kind == MINGRU:
        z = gate
        v = g_act(x2, one) if applies_g else x2
        o1[t, b, j] = z * (one - z) * (grad_b * v - grad_a)
        o2[t, b, j] = grad_b * z * g_prime(x2, one) if applies_g else grad_b * z
    elif kind == MINLSTM:
        fp = gate
        ip = one - fp
        v = g_act(x4, one) if applies_g else x4
        grad_d = fp * ip * (grad_a - grad_b * v)
        o1[t, b, j] = grad_d * sigmoid(-x2, one)
        o2[t, b, j] = -grad_d * sigmoid(-x3, one)
        o3[t, b, j] = grad_b * ip * g_prime(x4, one) if applies_g else grad_b * ip
    else:
        o1[t, b, j] = grad_a
        o2[t, b, j] = grad_b
    return g, a


@functools.cache
def backward_kernel(kind, has_mask, applies_g, has_h0):
    """The backward block scan compiled for one combination of flags (closure constants: the comment above)."""

    @cuda.jit(cache=True)
    def _scan_backward_kernel(q1, q2, q3, q4, offsets, mask, h, h0, grad_h, lanes, o1, o2, o3, grad_h0):
        """Reverse scan g_t = grad_h_t + ā_{t+1} g_{t+1}, then the gradients of every step.

        Lanes are combined last-to-first: lane y sits at slot (lanes − 1 − y) of the tree.
        """
        sA = cuda.shared.array(MAX_THREADS, h.dtype)
        sB = cuda.shared.array(MAX_THREADS, h.dtype)
        one = h.dtype.type(1.0)
        zero = one - one
        T = h.shape[0]
        active, b, j = _column(h)
        lo, hi = _segment(T, lanes)
        y = cuda.threadIdx.y
        ch = cuda.blockDim.x
        slot = (lanes - 1 - y) * ch + cuda.threadIdx.x
        # ā just after the segment (its first step in reverse time): none after the last step
        a_after = zero
        if active and hi < T:
            a_after = _bwd_a(kind, q1, mask, has_mask, hi, b, j, one)
        if lanes > 1:
            # 1. the segment's map on the incoming g_hi: g_lo = A g_hi + B
            A = one
            Bv = zero
            if active:
                a_next = a_after
                t = hi - 1
                while t - 3 >= lo:
                    a0 = _bwd_a(kind, q1, mask, has_mask, t, b, j, one)
                    a1 = _bwd_a(kind, q1, mask, has_mask, t - 1, b, j, one)
                    a2 = _bwd_a(kind, q1, mask, has_mask, t - 2, b, j, one)
                    a3 = _bwd_a(kind, q1, mask, has_mask, t - 3, b, j, one)
                    d0 = grad_h[t, b, j]
                    d1 = grad_h[t - 1, b, j]
                    d2 = grad_h[t - 2, b, j]
                    d3 = grad_h[t - 3, b, j]
                    Bv = a2 * (a1 * (a0 * (a_next * Bv + d0) + d1) + d2) + d3
                    A = A * a_next * a0 * a1 * a2
                    a_next = a3
                    t -= 4
                while t >= lo:
                    a0 = _bwd_a(kind, q1, mask, has_mask, t, b, j, one)
                    Bv = a_next * Bv + grad_h[t, b, j]
                    A = A * a_next
                    a_next = a0
                    t -= 1
            sA[slot] = A
            sB[slot] = Bv
            _exclusive_scan(sA, sB, lanes, lanes - 1 - y, one, zero, False)  # last lane first
        # 2. rerun the segment backwards from its incoming g (0 after the last step)
        if active:
            g = zero
            if lanes > 1:
                g = sB[slot]  # A_prefix · 0 + B_prefix
            # software-pipelined backwards in time (the comment above `sru.forward_kernel`)
            src = (q1, q2, q3, q4, offsets)
            a_next = a_after
            last = hi - 1
            t = last
            L0 = _bwd_load(kind, src, mask, has_mask, h, h0, has_h0, grad_h, clamp_step(t, last), b, j, one)
            L1 = _bwd_load(kind, src, mask, has_mask, h, h0, has_h0, grad_h, clamp_step(t - 1, last), b, j, one)
            L2 = _bwd_load(kind, src, mask, has_mask, h, h0, has_h0, grad_h, clamp_step(t - 2, last), b, j, one)
            L3 = _bwd_load(kind, src, mask, has_mask, h, h0, has_h0, grad_h, clamp_step(t - 3, last), b, j, one)
            while t - 3 >= lo:
                N0 = _bwd_load(kind, src, mask, has_mask, h, h0, has_h0, grad_h, clamp_step(t - 4, last), b, j, one)
                N1 = _bwd_load(kind, src, mask, has_mask, h, h0, has_h0, grad_h, clamp_step(t - 5, last), b, j, one)
                N2 = _bwd_load(kind, src, mask, has_mask, h, h0, has_h0, grad_h, clamp_step(t - 6, last), b, j, one)
                N3 = _bwd_load(kind, src, mask, has_mask, h, h0, has_h0, grad_h, clamp_step(t - 7, last), b, j, one)
                g, a_next = _bwd_step(kind, L0, g, a_next, t, b, j, applies_g, one, o1, o2, o3)
                g, a_next = _bwd_step(kind, L1, g, a_next, t - 1, b, j, applies_g, one, o1, o2, o3)
                g, a_next = _bwd_step(kind, L2, g, a_next, t - 2, b, j, applies_g, one, o1, o2, o3)
                g, a_next = _bwd_step(kind, L3, g, a_next, t - 3, b, j, applies_g, one, o1, o2, o3)
                L0, L1, L2, L3 = N0, N1, N2, N3
                t -= 4
            if t >= lo:
                g, a_next = _bwd_step(kind, L0, g, a_next, t, b, j, applies_g, one, o1, o2, o3)
            if t - 1 >= lo:
                g, a_next = _bwd_step(kind, L1, g, a_next, t - 1, b, j, applies_g, one, o1, o2, o3)
            if t - 2 >= lo:
                g, a_next = _bwd_step(kind, L2, g, a_next, t - 2, b, j, applies_g, one, o1, o2, o3)
            if lo == 0:
                grad_h0[b, j] = a_next * g  # ā_1 g_1

    return _scan_backward_kernel


# ---- host-side launchers ---------------------------------------------------------------------------
def _as3d(x, T):
    """A (T, B, H) view for the kernels: 3-D arrays as they are, others as (T, 1, N)."""
    if x is None or x.ndim == 3:
        return x
    return x.reshape(T, 1, -1)


def scan_forward(kind, p1, p2, p3, h0, mask, applies_g=False, lanes=None, with_gate=True):
    """Launch the forward block scan; returns (h, gate) with gate None for ``PLAIN`` or
    ``with_gate=False``. p1..p3, h0, mask as in `_coeffs`; all (T, B, H) / (B, H) / (T, B)."""
    xp = backend.get_xp(p1, p2, p3, h0, mask)
    p1, p2, p3, h0, mask = (positive_strides(xp, x) for x in (p1, p2, p3, h0, mask))
    T, B, H = p1.shape
    dtype = p1.dtype
    h = xp.empty((T, B, H), dtype=dtype)
    has_gate = with_gate and kind != PLAIN
    gate = xp.empty((T, B, H), dtype=dtype) if has_gate else None
    if T == 0 or B * H == 0:
        return h, gate
    grid, block, lanes = plan(T, B * H, lanes)
    kernel = forward_kernel(kind, mask is not None, bool(applies_g), h0 is not None, has_gate)
    h0 = or_stand_in(h0, h[0])  # also the (never read) stand-in for an absent mask: one conversion
    (p1, p2, p3), offsets = column_blocks(p1, p2, p3)
    launch(kernel, grid, block, p1, or_stand_in(p2, p1), or_stand_in(p3, p1), offsets, or_stand_in(mask, h0), h0,
           lanes, h, or_stand_in(gate, h))
    return h, gate


def scan_log_forward(kind, p1, p2, p3, h0, mask, lanes=None, with_gate=True, exp_out=True):
    """Launch the log-space block scan; returns (h or log h, gate)."""
    xp = backend.get_xp(p1, p2, p3, h0, mask)
    p1, p2, p3, h0, mask = (positive_strides(xp, x) for x in (p1, p2, p3, h0, mask))
    T, B, H = p1.shape
    out = xp.empty((T, B, H), dtype=p1.dtype)
    has_gate = with_gate and kind != PLAIN
    gate = xp.empty((T, B, H), dtype=p1.dtype) if has_gate else None
    if T == 0 or B * H == 0:
        return out, gate
    grid, block, lanes = plan(T, B * H, lanes)
    kernel = log_forward_kernel(kind, mask is not None, h0 is not None, bool(exp_out), has_gate)
    h0 = or_stand_in(h0, out[0])
    (p1, p2, p3), offsets = column_blocks(p1, p2, p3)
    launch(kernel, grid, block, p1, or_stand_in(p2, p1), or_stand_in(p3, p1), offsets, or_stand_in(mask, h0), h0,
           lanes, out, or_stand_in(gate, out))
    return out, gate


def scan_backward(kind, q1, q2, q3, q4, h, h0, grad_h, mask, applies_g=False, lanes=None):
    """Launch the backward block scan. Returns (o1, o2, o3, grad_h0): for ``PLAIN`` (grad_a,
    grad_b, None, grad_h0); ``MINGRU`` (grad_k, grad_x̃, None, grad_h0); ``MINLSTM`` (grad_k_f,
    grad_k_i, grad_x̃, grad_h0). Inputs as `_bwd_a` / `_bwd_outputs` read them."""
    xp = backend.get_xp(q1, q2, q3, q4, h, h0, grad_h, mask)
    q1, q2, q3, q4, h, h0, grad_h, mask = (
        positive_strides(xp, x) for x in (q1, q2, q3, q4, h, h0, grad_h, mask))
    T, B, H = h.shape
    dtype = h.dtype
    o1 = xp.empty((T, B, H), dtype=dtype)
    o2 = xp.empty((T, B, H), dtype=dtype)
    o3 = xp.empty((T, B, H), dtype=dtype) if kind == MINLSTM else None
    grad_h0 = xp.zeros((B, H), dtype=dtype)
    if T == 0 or B * H == 0:
        return o1, o2, o3, grad_h0
    grid, block, lanes = plan(T, B * H, lanes)
    kernel = backward_kernel(kind, mask is not None, bool(applies_g), h0 is not None)
    h0 = or_stand_in(h0, grad_h0)
    (q2, q3, q4), offsets = column_blocks(q2, q3, q4)  # q1 is a gate the forward wrote: contiguous
    launch(kernel, grid, block, q1, or_stand_in(q2, q1), or_stand_in(q3, q1), or_stand_in(q4, q1), offsets,
           or_stand_in(mask, h0), h, h0, grad_h, lanes, o1, o2, or_stand_in(o3, o2), grad_h0)
    return o1, o2, o3, grad_h0


# ---- the public linear scans (same contracts as minirec.kernels.scan) ----------------------------
def _check_pair(a, b, init, names):
    if a.shape != b.shape or a.dtype != b.dtype:
        raise ValueError(f"{names[0]} and {names[1]} must share shape and dtype, got "
                         f"{a.shape} {a.dtype} and {b.shape} {b.dtype}")
    if a.ndim < 1:
        raise ValueError(f"{names[0]} must have a leading time axis, got shape {a.shape}")
    if a.dtype not in (np.float32, np.float64):
        raise TypeError(f"the GPU scan supports float32 and float64, got {a.dtype}")
    if init is not None and (init.shape != a.shape[1:] or init.dtype != a.dtype):
        raise ValueError(f"{names[2]} must have shape {a.shape[1:]} and dtype {a.dtype}, "
                         f"got {init.shape} {init.dtype}")


def linear_scan_cuda(a, b, h0=None, lanes=None):
    """h_t = a_t ⊙ h_{t−1} + b_t on the GPU (`scan.linear_scan_sequential`'s contract).

    ``lanes``: time segments per column (a power of two; None picks one, 1 = the plain loop).
    """
    _check_pair(a, b, h0, ("a", "b", "h0"))
    T = a.shape[0]
    h, _ = scan_forward(PLAIN, _as3d(a, T), _as3d(b, T), None,
                        None if h0 is None else h0.reshape(_as3d(a, T).shape[1:]), None, lanes=lanes)
    return h.reshape(a.shape)


def linear_scan_backward_cuda(a, h, h0, grad_h, lanes=None):
    """(grad_a, grad_b, grad_h0) of the recurrence (`scan.linear_scan_backward`'s contract)."""
    _check_pair(a, h, h0, ("a", "h", "h0"))
    _check_pair(a, grad_h, None, ("a", "grad_h", ""))
    T = a.shape[0]
    a3 = _as3d(a, T)
    o1, o2, _, grad_h0 = scan_backward(
        PLAIN, a3, None, None, None, _as3d(h, T), None if h0 is None else h0.reshape(a3.shape[1:]),
        _as3d(grad_h, T), None, lanes=lanes)
    return o1.reshape(a.shape), o2.reshape(a.shape), grad_h0.reshape(a.shape[1:])


def linear_scan_log_cuda(log_a, log_b, log_h0=None, lanes=None):
    """log h of the log-space scan (`scan.linear_scan_log`'s contract): a, b, h0 > 0 as logs."""
    _check_pair(log_a, log_b, log_h0, ("log_a", "log_b", "log_h0"))
    T = log_a.shape[0]
    la3 = _as3d(log_a, T)
    out, _ = scan_log_forward(PLAIN, la3, _as3d(log_b, T), None,
                              None if log_h0 is None else log_h0.reshape(la3.shape[1:]), None,
                              lanes=lanes, exp_out=False)
    return out.reshape(log_a.shape)


# The linear scan under the names a `reference` registration in kernels/scan.py would use
# (scan.linear_scan_sequential and scan.linear_scan_backward's contracts).
@register_kernel("linear_scan_forward", "cuda")
def linear_scan_forward(a, b, h0=None):
    return linear_scan_cuda(a, b, h0)


@register_kernel("linear_scan_backward", "cuda")
def linear_scan_backward(a, h, h0, grad_h):
    return linear_scan_backward_cuda(a, h, h0, grad_h)


# The kernel as chapter 10 shows it (one variant; the source is the same for all).
_scan_forward_kernel = forward_kernel(MINGRU, True, True, True, True)
