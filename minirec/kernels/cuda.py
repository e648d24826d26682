"""Numba-CUDA implementations of the recurrence kernels (kind ``"cuda"``).

Every function here is registered under the name and signature of its ``reference`` loop
(minirec/kernels/<cell>.py: the contract) and receives and returns CuPy arrays, read and written
in place through ``__cuda_array_interface__`` (no copies). `minirec.kernels.get_kernel` imports
this module on first use with CuPy arrays. Under ``NUMBA_ENABLE_CUDASIM=1`` the same functions
take NumPy arrays and run in Numba's CUDA simulator (how the CPU test suite checks them).

Three shapes of kernel
----------------------
* **Elementwise recurrences, fused** (SRU, QRNN, LRN/gLRN/eLRN/oLRN): one thread per column
  (b, j), looping over time with the state in a register; gate math, recurrence and every
  output in one kernel, so a layer costs one launch forward and one backward. The loop is
  unrolled by four with the four steps' loads issued before the dependent arithmetic, so several
  loads are in flight per thread. Sums over (T, B) (∂v, ∂b of SRU, ∂b of QRNN) are per-thread
  partial sums over time, reduced over the batch by one CuPy sum.
* **Linear recurrences with gates from x alone** (minGRU, minLSTM, FOFE, the linear scan): the
  block scan of `minirec.kernels.gpu_scan` with the gate math computed inside it — one launch
  forward and one backward. ``mode="sequential"`` uses one lane (the loop over time),
  ``"parallel"`` splits time into lanes joined by a Blelloch scan in shared memory, ``"log"``
  runs the log-space scan forward (its gradient is the linear one, see kernels/minrnn.py).
* **Recurrences through a matrix** (GRU, LSTM, MGU, SGU, ATR): h_{t−1} U is a CuPy (cuBLAS)
  matmul per step; everything elementwise around it is one fused kernel per step (two for GRU
  and MGU, whose reset gate sits between two products). The arrays are converted once per call
  and the configured kernels relaunched with the step index, which keeps the per-launch cost
  to the dispatcher's minimum.

Numerics: constants take the arrays' dtype (``x.dtype.type(1.0)``), so float32 kernels do no
float64 arithmetic; sigmoid and softplus are the overflow-free forms of `ops.stable_sigmoid`;
the operation order follows the reference loops, so float64 results agree to rounding.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from minirec import backend
from minirec.kernels import atr as _ref_atr
from minirec.kernels import gru as _ref_gru
from minirec.kernels import lrn as _ref_lrn
from minirec.kernels import lstm as _ref_lstm
from minirec.kernels import mgu as _ref_mgu
from minirec.kernels import minrnn as _ref_minrnn
from minirec.kernels import qrnn as _ref_qrnn
from minirec.kernels import register_kernel
from minirec.kernels import sgu as _ref_sgu
from minirec.kernels import sru as _ref_sru
from minirec.kernels.gpu_scan import (
    MAX_THREADS,
    MINGRU,
    MINLSTM,
    SIMULATOR,
    SPREAD_BLOCKS,
    configure,
    device_args,
    launch,
    linear_scan_backward_cuda,
    linear_scan_cuda,
    positive_strides,
    scan_backward,
    scan_forward,
    scan_log_forward,
    sigmoid,
)

__all__ = ["SIMULATOR", "COLUMN_THREADS", "ROW_THREADS"]

COLUMN_THREADS = 128  # threads per block of the one-thread-per-column kernels
ROW_THREADS = 128  # threads per block (one block per sequence) of SGU's backward step (power of two)

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _fast(*arrays):
    """True when the kernels apply: float32/float64 arrays with no empty axis (else the reference
    loop, array-agnostic, handles the corner case)."""
    for a in arrays:
        if a is None:
            continue
        if a.dtype not in _FLOATS or a.size == 0:
            return False
    return True


def _columns(n):
    """(grid, block) for one thread per column, n columns: blocks of `COLUMN_THREADS`, halved
    (down to a warp) while that leaves fewer than `SPREAD_BLOCKS` blocks, so that few columns
    still spread over many SMs (a warp's occupancy is the same in a small block)."""
    block = COLUMN_THREADS
    while block > 32 and -(-n // block) < SPREAD_BLOCKS:
        block //= 2
    block = max(1, min(block, n))
    return -(-n // block), block


def _prep(xp, *arrays):
    return tuple(positive_strides(xp, a) for a in arrays)


@cuda.jit(device=True)
def _column(B, H):
    """(active, b, j) of this thread's column."""
    n = cuda.grid(1)
    if n < B * H:
        b = n // H
        return True, b, n - b * H
    return False, 0, 0


# =================================================================================================
# SRU (Lei et al. 2018): c_t = f_t c_{t−1} + (1 − f_t) x̃_t, f_t = σ(W_f x + v_f c_{t−1} + b_f),
# r_t = σ(W_r x + v_r c_{t−1} + b_r), h_t = r_t c_t d + (1 − r_t) α s_t (kernels/sru.py)
# =================================================================================================
@cuda.jit(device=True)
def _sru_load(U, x_skip, mask, has_mask, t, b, j, H, one):
    m = mask[t, b] if has_mask else one
    return U[t, b, j], U[t, b, H + j], U[t, b, 2 * H + j], x_skip[t, b, j], m


@cuda.jit(device=True)
def _sru_emit(L, t, b, j, c_prev, vf, vr, bf, br, d, alpha, one, h, c, f, r):
    x_t, u_f, u_r, s, m = L
    f_t = sigmoid(u_f + bf + vf * c_prev, one)  # (1)
    c_t = f_t * c_prev + (one - f_t) * x_t  # (2)
    if m == 0:
        c_t = c_prev  # padded: carry the state
    r_t = sigmoid(u_r + br + vr * c_prev, one)  # (3)
    h[t, b, j] = (r_t * (c_t * d) + (one - r_t) * (alpha * s)) * m  # (4), 0 at padding
    c[t, b, j] = c_t
    f[t, b, j] = f_t
    r[t, b, j] = r_t
    return c_t


@cuda.jit(cache=True)
def _sru_forward_kernel(U, x_skip, v_f, v_r, b_f, b_r, c0, mask, has_mask, drop, has_drop, alpha, h, c, f, r):
    B = c0.shape[0]
    H = c0.shape[1]
    T = U.shape[0]
    active, b, j = _column(B, H)
    if not active:
        return
    one = c0.dtype.type(1.0)
    al = c0.dtype.type(alpha)
    vf = v_f[j]
    vr = v_r[j]
    bf = b_f[j]
    br = b_r[j]
    d = drop[b, j] if has_drop else one
    state = c0[b, j]
    t = 0
    while t + 4 <= T:
        L0 = _sru_load(U, x_skip, mask, has_mask, t, b, j, H, one)
        L1 = _sru_load(U, x_skip, mask, has_mask, t + 1, b, j, H, one)
        L2 = _sru_load(U, x_skip, mask, has_mask, t + 2, b, j, H, one)
        L3 = _sru_load(U, x_skip, mask, has_mask, t + 3, b, j, H, one)
        state = _sru_emit(L0, t, b, j, state, vf, vr, bf, br, d, al, one, h, c, f, r)
        state = _sru_emit(L1, t + 1, b, j, state, vf, vr, bf, br, d, al, one, h, c, f, r)
        state = _sru_emit(L2, t + 2, b, j, state, vf, vr, bf, br, d, al, one, h, c, f, r)
        state = _sru_emit(L3, t + 3, b, j, state, vf, vr, bf, br, d, al, one, h, c, f, r)
        t += 4
    while t < T:
        L0 = _sru_load(U, x_skip, mask, has_mask, t, b, j, H, one)
        state = _sru_emit(L0, t, b, j, state, vf, vr, bf, br, d, al, one, h, c, f, r)
        t += 1


@cuda.jit(device=True)
def _sru_bload(grad_h, U, x_skip, c0, c, f, r, mask, has_mask, t, b, j, one):
    m = mask[t, b] if has_mask else one
    c_prev = c[t - 1, b, j] if t > 0 else c0[b, j]
    return grad_h[t, b, j], m, c[t, b, j], c_prev, f[t, b, j], r[t, b, j], U[t, b, j], x_skip[t, b, j]


@cuda.jit(device=True)
def _sru_bemit(L, t, b, j, H, carry, sums, vf, vr, d, alpha, one, grad_U3, grad_x_skip):
    gh, m, c_t, c_prev, f_t, r_t, x_t, s = L
    svf, svr, sbf, sbr = sums
    gh = gh * m
    g_r = gh * (c_t * d - alpha * s) * r_t * (one - r_t)
    grad_x_skip[t, b, j] = gh * (one - r_t) * alpha
    df = f_t * (one - f_t)
    jac = f_t + (c_prev - x_t) * df * vf  # ∂c_t/∂c_{t−1}
    if m == 0:
        jac = one
    delta = gh * r_t * d + carry
    carry = jac * delta + g_r * vr  # r_t also reads c_{t−1} (eq. 3)
    delta = delta * m  # no parameter gradient at padded steps
    g_f = delta * (c_prev - x_t) * df
    grad_U3[t, b, j] = delta * (one - f_t)
    grad_U3[t, b, H + j] = g_f
    grad_U3[t, b, 2 * H + j] = g_r
    return carry, (svf + g_f * c_prev, svr + g_r * c_prev, sbf + g_f, sbr + g_r)


@cuda.jit(cache=True)
def _sru_backward_kernel(grad_h, grad_c_last, U, x_skip, v_f, v_r, c0, c, f, r, mask, has_mask, drop, has_drop,
                         alpha, grad_U3, grad_x_skip, partial, grad_c0):
    B = c0.shape[0]
    H = c0.shape[1]
    T = U.shape[0]
    active, b, j = _column(B, H)
    if not active:
        return
    one = c0.dtype.type(1.0)
    zero = one - one
    al = c0.dtype.type(alpha)
    vf = v_f[j]
    vr = v_r[j]
    d = drop[b, j] if has_drop else one
    carry = grad_c_last[b, j]
    sums = (zero, zero, zero, zero)
    t = T - 1
    while t - 3 >= 0:
        L0 = _sru_bload(grad_h, U, x_skip, c0, c, f, r, mask, has_mask, t, b, j, one)
        L1 = _sru_bload(grad_h, U, x_skip, c0, c, f, r, mask, has_mask, t - 1, b, j, one)
        L2 = _sru_bload(grad_h, U, x_skip, c0, c, f, r, mask, has_mask, t - 2, b, j, one)
        L3 = _sru_bload(grad_h, U, x_skip, c0, c, f, r, mask, has_mask, t - 3, b, j, one)
        carry, sums = _sru_bemit(L0, t, b, j, H, carry, sums, vf, vr, d, al, one, grad_U3, grad_x_skip)
        carry, sums = _sru_bemit(L1, t - 1, b, j, H, carry, sums, vf, vr, d, al, one, grad_U3, grad_x_skip)
        carry, sums = _sru_bemit(L2, t - 2, b, j, H, carry, sums, vf, vr, d, al, one, grad_U3, grad_x_skip)
        carry, sums = _sru_bemit(L3, t - 3, b, j, H, carry, sums, vf, vr, d, al, one, grad_U3, grad_x_skip)
        t -= 4
    while t >= 0:
        L0 = _sru_bload(grad_h, U, x_skip, c0, c, f, r, mask, has_mask, t, b, j, one)
        carry, sums = _sru_bemit(L0, t, b, j, H, carry, sums, vf, vr, d, al, one, grad_U3, grad_x_skip)
        t -= 1
    grad_c0[b, j] = carry
    partial[b, j] = sums[0]
    partial[b, H + j] = sums[1]
    partial[b, 2 * H + j] = sums[2]
    partial[b, 3 * H + j] = sums[3]


@register_kernel("sru_forward", "cuda")
def sru_forward(U, x_skip, v_f, v_r, b_f, b_r, c0, mask, drop, alpha):
    """`minirec.kernels.sru.sru_forward` on the GPU: returns (h, c, f, r)."""
    if not _fast(U, x_skip, c0):
        return _ref_sru.sru_forward(U, x_skip, v_f, v_r, b_f, b_r, c0, mask, drop, alpha)
    xp = backend.get_xp(U, c0)
    U, x_skip, v_f, v_r, b_f, b_r, c0, mask, drop = _prep(xp, U, x_skip, v_f, v_r, b_f, b_r, c0, mask, drop)
    T, (B, H) = U.shape[0], c0.shape
    h, c, f, r = (xp.empty((T, B, H), dtype=U.dtype) for _ in range(4))
    grid, block = _columns(B * H)
    launch(_sru_forward_kernel, grid, block, U, x_skip, v_f, v_r, b_f, b_r, c0,
           mask if mask is not None else c0, mask is not None, drop if drop is not None else c0, drop is not None,
           float(alpha), h, c, f, r)
    return h, c, f, r


@register_kernel("sru_backward", "cuda")
def sru_backward(grad_h, grad_c_last, U, x_skip, v_f, v_r, c0, c, f, r, mask, drop, alpha):
    """`minirec.kernels.sru.sru_backward` on the GPU: returns (grad_U3, grad_x_skip, grad_v_f,
    grad_v_r, grad_b_f, grad_b_r, grad_c0)."""
    if not _fast(U, x_skip, c0, grad_h):
        return _ref_sru.sru_backward(grad_h, grad_c_last, U, x_skip, v_f, v_r, c0, c, f, r, mask, drop, alpha)
    xp = backend.get_xp(U, c0, grad_h)
    grad_h, grad_c_last, U, x_skip, v_f, v_r, c0, c, f, r, mask, drop = _prep(
        xp, grad_h, grad_c_last, U, x_skip, v_f, v_r, c0, c, f, r, mask, drop)
    T, (B, H) = U.shape[0], c0.shape
    dtype = U.dtype
    grad_U3 = xp.empty((T, B, 3 * H), dtype=dtype)
    grad_x_skip = xp.empty((T, B, H), dtype=dtype)
    partial = xp.empty((B, 4 * H), dtype=dtype)  # per-sequence sums over time of g_f c', g_r c', g_f, g_r
    grad_c0 = xp.empty((B, H), dtype=dtype)
    grid, block = _columns(B * H)
    launch(_sru_backward_kernel, grid, block, grad_h, grad_c_last, U, x_skip, v_f, v_r, c0, c, f, r,
           mask if mask is not None else c0, mask is not None, drop if drop is not None else c0, drop is not None,
           float(alpha), grad_U3, grad_x_skip, partial, grad_c0)
    sums = partial.sum(axis=0)
    return grad_U3, grad_x_skip, sums[:H], sums[H:2 * H], sums[2 * H:3 * H], sums[3 * H:], grad_c0


# =================================================================================================
# QRNN fo-pooling (Bradbury et al. 2017): c_t = f_t c_{t−1} + (1 − f_t) z_t, h_t = o_t c_t
# (+ (1 − o_t) s_t with the highway) (kernels/qrnn.py)
# =================================================================================================
@cuda.jit(device=True)
def _qrnn_load(U, x_skip, has_skip, mask, has_mask, t, b, j, H, one):
    m = mask[t, b] if has_mask else one
    s = x_skip[t, b, j] if has_skip else one - one
    return U[t, b, j], U[t, b, H + j], U[t, b, 2 * H + j], s, m


@cuda.jit(device=True)
def _qrnn_emit(L, t, b, j, c_prev, bz, bf, bo, has_skip, one, h, c, z, f, o):
    u_z, u_f, u_o, s, m = L
    z_t = math.tanh(u_z + bz)
    f_t = sigmoid(u_f + bf, one)
    o_t = sigmoid(u_o + bo, one)
    c_t = f_t * c_prev + (one - f_t) * z_t
    if m == 0:
        c_t = c_prev
    h_t = o_t * c_t
    if has_skip:
        h_t = h_t + (one - o_t) * s
    h[t, b, j] = h_t * m
    c[t, b, j] = c_t
    z[t, b, j] = z_t
    f[t, b, j] = f_t
    o[t, b, j] = o_t
    return c_t


@cuda.jit(cache=True)
def _qrnn_forward_kernel(U, bias, c0, x_skip, has_skip, mask, has_mask, h, c, z, f, o):
    B = c0.shape[0]
    H = c0.shape[1]
    T = U.shape[0]
    active, b, j = _column(B, H)
    if not active:
        return
    one = c0.dtype.type(1.0)
    bz = bias[j]
    bf = bias[H + j]
    bo = bias[2 * H + j]
    state = c0[b, j]
    t = 0
    while t + 4 <= T:
        L0 = _qrnn_load(U, x_skip, has_skip, mask, has_mask, t, b, j, H, one)
        L1 = _qrnn_load(U, x_skip, has_skip, mask, has_mask, t + 1, b, j, H, one)
        L2 = _qrnn_load(U, x_skip, has_skip, mask, has_mask, t + 2, b, j, H, one)
        L3 = _qrnn_load(U, x_skip, has_skip, mask, has_mask, t + 3, b, j, H, one)
        state = _qrnn_emit(L0, t, b, j, state, bz, bf, bo, has_skip, one, h, c, z, f, o)
        state = _qrnn_emit(L1, t + 1, b, j, state, bz, bf, bo, has_skip, one, h, c, z, f, o)
        state = _qrnn_emit(L2, t + 2, b, j, state, bz, bf, bo, has_skip, one, h, c, z, f, o)
        state = _qrnn_emit(L3, t + 3, b, j, state, bz, bf, bo, has_skip, one, h, c, z, f, o)
        t += 4
    while t < T:
        L0 = _qrnn_load(U, x_skip, has_skip, mask, has_mask, t, b, j, H, one)
        state = _qrnn_emit(L0, t, b, j, state, bz, bf, bo, has_skip, one, h, c, z, f, o)
        t += 1


@cuda.jit(device=True)
def _qrnn_bload(grad_h, c0, x_skip, has_skip, c, z, f, o, mask, has_mask, t, b, j, one):
    m = mask[t, b] if has_mask else one
    s = x_skip[t, b, j] if has_skip else one - one
    c_prev = c[t - 1, b, j] if t > 0 else c0[b, j]
    return grad_h[t, b, j], m, c[t, b, j], c_prev, z[t, b, j], f[t, b, j], o[t, b, j], s


@cuda.jit(device=True)
def _qrnn_bemit(L, t, b, j, H, carry, sums, has_skip, one, grad_U3, grad_x_skip):
    gh, m, c_t, c_prev, z_t, f_t, o_t, s = L
    sz, sf, so = sums
    gh = gh * m
    if has_skip:
        g_o = gh * (c_t - s) * o_t * (one - o_t)
        grad_x_skip[t, b, j] = gh * (one - o_t)
    else:
        g_o = gh * c_t * o_t * (one - o_t)
    a = f_t if m != 0 else one
    delta = gh * o_t + carry
    carry = a * delta
    delta = delta * m
    g_z = delta * (one - f_t) * (one - z_t * z_t)
    g_f = delta * (c_prev - z_t) * f_t * (one - f_t)
    grad_U3[t, b, j] = g_z
    grad_U3[t, b, H + j] = g_f
    grad_U3[t, b, 2 * H + j] = g_o
    return carry, (sz + g_z, sf + g_f, so + g_o)


@cuda.jit(cache=True)
def _qrnn_backward_kernel(grad_h, grad_c_last, c0, x_skip, has_skip, c, z, f, o, mask, has_mask,
                          grad_U3, grad_x_skip, partial, grad_c0):
    B = c0.shape[0]
    H = c0.shape[1]
    T = c.shape[0]
    active, b, j = _column(B, H)
    if not active:
        return
    one = c0.dtype.type(1.0)
    zero = one - one
    carry = grad_c_last[b, j]
    sums = (zero, zero, zero)
    t = T - 1
    while t - 3 >= 0:
        L0 = _qrnn_bload(grad_h, c0, x_skip, has_skip, c, z, f, o, mask, has_mask, t, b, j, one)
        L1 = _qrnn_bload(grad_h, c0, x_skip, has_skip, c, z, f, o, mask, has_mask, t - 1, b, j, one)
        L2 = _qrnn_bload(grad_h, c0, x_skip, has_skip, c, z, f, o, mask, has_mask, t - 2, b, j, one)
        L3 = _qrnn_bload(grad_h, c0, x_skip, has_skip, c, z, f, o, mask, has_mask, t - 3, b, j, one)
        carry, sums = _qrnn_bemit(L0, t, b, j, H, carry, sums, has_skip, one, grad_U3, grad_x_skip)
        carry, sums = _qrnn_bemit(L1, t - 1, b, j, H, carry, sums, has_skip, one, grad_U3, grad_x_skip)
        carry, sums = _qrnn_bemit(L2, t - 2, b, j, H, carry, sums, has_skip, one, grad_U3, grad_x_skip)
        carry, sums = _qrnn_bemit(L3, t - 3, b, j, H, carry, sums, has_skip, one, grad_U3, grad_x_skip)
        t -= 4
    while t >= 0:
        L0 = _qrnn_bload(grad_h, c0, x_skip, has_skip, c, z, f, o, mask, has_mask, t, b, j, one)
        carry, sums = _qrnn_bemit(L0, t, b, j, H, carry, sums, has_skip, one, grad_U3, grad_x_skip)
        t -= 1
    grad_c0[b, j] = carry
    partial[b, j] = sums[0]
    partial[b, H + j] = sums[1]
    partial[b, 2 * H + j] = sums[2]


@register_kernel("qrnn_forward", "cuda")
def qrnn_forward(U, b, c0, x_skip, mask):
    """`minirec.kernels.qrnn.qrnn_forward` on the GPU: returns (h, c, z, f, o)."""
    if not _fast(U, c0, x_skip):
        return _ref_qrnn.qrnn_forward(U, b, c0, x_skip, mask)
    xp = backend.get_xp(U, c0)
    U, b, c0, x_skip, mask = _prep(xp, U, b, c0, x_skip, mask)
    T, (B, H) = U.shape[0], c0.shape
    h, c, z, f, o = (xp.empty((T, B, H), dtype=U.dtype) for _ in range(5))
    grid, block = _columns(B * H)
    launch(_qrnn_forward_kernel, grid, block, U, b, c0, x_skip if x_skip is not None else h, x_skip is not None,
           mask if mask is not None else c0, mask is not None, h, c, z, f, o)
    return h, c, z, f, o


@register_kernel("qrnn_backward", "cuda")
def qrnn_backward(grad_h, grad_c_last, c0, x_skip, c, z, f, o, mask):
    """`minirec.kernels.qrnn.qrnn_backward` on the GPU: returns (grad_U3, grad_b, grad_x_skip or
    None, grad_c0)."""
    if not _fast(c, c0, grad_h, x_skip):
        return _ref_qrnn.qrnn_backward(grad_h, grad_c_last, c0, x_skip, c, z, f, o, mask)
    xp = backend.get_xp(c, c0, grad_h)
    grad_h, grad_c_last, c0, x_skip, c, z, f, o, mask = _prep(xp, grad_h, grad_c_last, c0, x_skip, c, z, f, o, mask)
    T, (B, H) = c.shape[0], c0.shape
    dtype = c.dtype
    grad_U3 = xp.empty((T, B, 3 * H), dtype=dtype)
    grad_x_skip = xp.empty((T, B, H), dtype=dtype) if x_skip is not None else None
    partial = xp.empty((B, 3 * H), dtype=dtype)
    grad_c0 = xp.empty((B, H), dtype=dtype)
    grid, block = _columns(B * H)
    launch(_qrnn_backward_kernel, grid, block, grad_h, grad_c_last, c0,
           x_skip if x_skip is not None else c, x_skip is not None, c, z, f, o,
           mask if mask is not None else c0, mask is not None,
           grad_U3, grad_x_skip if grad_x_skip is not None else c, partial, grad_c0)
    return grad_U3, partial.sum(axis=0), grad_x_skip, grad_c0


# =================================================================================================
# The LRN family (Zhang & Sennrich 2019): f = σ(q − h) or σ(−h), i = σ(k + h) or 1 − f,
# c = i v + f h, h = g(c) or o c with o = σ(w − c) (kernels/lrn.py). Blocks of z located by
# column offsets (−1: absent): lrn [q|k|v], glrn [q|v], elrn [v], olrn [q|k|v|w].
# =================================================================================================
@cuda.jit(device=True)
def _lrn_load(z, mask, has_mask, t, b, j, q_off, k_off, v_off, w_off, one):
    zero = one - one
    m = mask[t, b] if has_mask else one
    q = z[t, b, q_off + j] if q_off >= 0 else zero
    k = z[t, b, k_off + j] if k_off >= 0 else zero
    w = z[t, b, w_off + j] if w_off >= 0 else zero
    return q, k, z[t, b, v_off + j], w, m


@cuda.jit(device=True)
def _lrn_emit(L, t, b, j, h_prev, has_q, has_k, has_w, tanh_act, one, h, f_out, i_out, o_out, c_out):
    q, k, v, w, m = L
    f = sigmoid(q - h_prev, one) if has_q else sigmoid(-h_prev, one)
    i = sigmoid(k + h_prev, one) if has_k else one - f
    c = i * v + f * h_prev
    if has_w:
        o = sigmoid(w - c, one)
        h_new = o * c
        o_out[t, b, j] = o
        c_out[t, b, j] = c
    elif tanh_act:
        h_new = math.tanh(c)
    else:
        h_new = c
    if m == 0:
        h_new = h_prev
    h[t, b, j] = h_new
    f_out[t, b, j] = f
    if has_k:
        i_out[t, b, j] = i
    return h_new


@cuda.jit(cache=True)
def _lrn_forward_kernel(z, h0, mask, has_mask, q_off, k_off, v_off, w_off, tanh_act, h, f_out, i_out, o_out, c_out):
    B = h0.shape[0]
    H = h0.shape[1]
    T = z.shape[0]
    active, b, j = _column(B, H)
    if not active:
        return
    one = h0.dtype.type(1.0)
    has_q = q_off >= 0
    has_k = k_off >= 0
    has_w = w_off >= 0
    state = h0[b, j]
    t = 0
    while t + 4 <= T:
        L0 = _lrn_load(z, mask, has_mask, t, b, j, q_off, k_off, v_off, w_off, one)
        L1 = _lrn_load(z, mask, has_mask, t + 1, b, j, q_off, k_off, v_off, w_off, one)
        L2 = _lrn_load(z, mask, has_mask, t + 2, b, j, q_off, k_off, v_off, w_off, one)
        L3 = _lrn_load(z, mask, has_mask, t + 3, b, j, q_off, k_off, v_off, w_off, one)
        state = _lrn_emit(L0, t, b, j, state, has_q, has_k, has_w, tanh_act, one, h, f_out, i_out, o_out, c_out)
        state = _lrn_emit(L1, t + 1, b, j, state, has_q, has_k, has_w, tanh_act, one, h, f_out, i_out, o_out, c_out)
        state = _lrn_emit(L2, t + 2, b, j, state, has_q, has_k, has_w, tanh_act, one, h, f_out, i_out, o_out, c_out)
        state = _lrn_emit(L3, t + 3, b, j, state, has_q, has_k, has_w, tanh_act, one, h, f_out, i_out, o_out, c_out)
        t += 4
    while t < T:
        L0 = _lrn_load(z, mask, has_mask, t, b, j, q_off, k_off, v_off, w_off, one)
        state = _lrn_emit(L0, t, b, j, state, has_q, has_k, has_w, tanh_act, one, h, f_out, i_out, o_out, c_out)
        t += 1


@cuda.jit(device=True)
def _lrn_bload(z, h0, h, i_in, f_in, o_in, c_in, mask, has_mask, grad_y, t, b, j, v_off, has_k, has_w, one):
    zero = one - one
    m = mask[t, b] if has_mask else one
    h_prev = h[t - 1, b, j] if t > 0 else h0[b, j]
    i = i_in[t, b, j] if has_k else zero
    o = o_in[t, b, j] if has_w else zero
    c = c_in[t, b, j] if has_w else zero
    return grad_y[t, b, j], m, h[t, b, j], h_prev, f_in[t, b, j], i, o, c, z[t, b, v_off + j]


@cuda.jit(device=True)
def _lrn_bemit(L, t, b, j, d, q_off, k_off, v_off, w_off, tanh_act, one, grad_z):
    gy, m, h_t, h_prev, f, i, o, c, v = L
    e = gy * m + d * m  # the gradient reaching ĥ_t (0 at a padded step)
    if w_off >= 0:
        grad_w = e * c * (o * (one - o))
        grad_z[t, b, w_off + j] = grad_w
        grad_c = e * o - grad_w
    elif tanh_act:
        grad_c = e * (one - h_t * h_t)
    else:
        grad_c = e
    if k_off < 0:
        i = one - f
    grad_z[t, b, v_off + j] = grad_c * i
    grad_i = grad_c * v
    grad_f = grad_c * h_prev
    d_prev = grad_c * f
    if k_off >= 0:
        grad_k = grad_i * (i * (one - i))
        grad_z[t, b, k_off + j] = grad_k
        d_prev = d_prev + grad_k
        grad_a_f = grad_f * (f * (one - f))
    else:
        grad_a_f = (grad_f - grad_i) * (f * (one - f))
    if q_off >= 0:
        grad_z[t, b, q_off + j] = grad_a_f
    d_prev = d_prev - grad_a_f
    if m == 0:
        return d  # a padded step passes d through unchanged
    return d_prev


@cuda.jit(cache=True)
def _lrn_backward_kernel(z, h0, h, i_in, f_in, o_in, c_in, mask, has_mask, grad_y, grad_h_last,
                         q_off, k_off, v_off, w_off, tanh_act, grad_z, grad_h0):
    B = h0.shape[0]
    H = h0.shape[1]
    T = z.shape[0]
    active, b, j = _column(B, H)
    if not active:
        return
    one = h0.dtype.type(1.0)
    has_k = k_off >= 0
    has_w = w_off >= 0
    d = grad_h_last[b, j]
    t = T - 1
    while t - 3 >= 0:
        L0 = _lrn_bload(z, h0, h, i_in, f_in, o_in, c_in, mask, has_mask, grad_y, t, b, j, v_off, has_k, has_w, one)
        L1 = _lrn_bload(z, h0, h, i_in, f_in, o_in, c_in, mask, has_mask, grad_y, t - 1, b, j, v_off, has_k, has_w,
                        one)
        L2 = _lrn_bload(z, h0, h, i_in, f_in, o_in, c_in, mask, has_mask, grad_y, t - 2, b, j, v_off, has_k, has_w,
                        one)
        L3 = _lrn_bload(z, h0, h, i_in, f_in, o_in, c_in, mask, has_mask, grad_y, t - 3, b, j, v_off, has_k, has_w,
                        one)
        d = _lrn_bemit(L0, t, b, j, d, q_off, k_off, v_off, w_off, tanh_act, one, grad_z)
        d = _lrn_bemit(L1, t - 1, b, j, d, q_off, k_off, v_off, w_off, tanh_act, one, grad_z)
        d = _lrn_bemit(L2, t - 2, b, j, d, q_off, k_off, v_off, w_off, tanh_act, one, grad_z)
        d = _lrn_bemit(L3, t - 3, b, j, d, q_off, k_off, v_off, w_off, tanh_act, one, grad_z)
        t -= 4
    while t >= 0:
        L0 = _lrn_bload(z, h0, h, i_in, f_in, o_in, c_in, mask, has_mask, grad_y, t, b, j, v_off, has_k, has_w, one)
        d = _lrn_bemit(L0, t, b, j, d, q_off, k_off, v_off, w_off, tanh_act, one, grad_z)
        t -= 1
    grad_h0[b, j] = d


def _lrn_offsets(variant, H):
    names = _ref_lrn.BLOCKS[variant]
    return tuple(names.index(name) * H if name in names else -1 for name in ("q", "k", "v", "w"))


def _lrn_forward(variant, z, h0, mask, activation):
    _ref_lrn._check(z, h0, variant, activation)
    xp = backend.get_xp(z, h0)
    z, h0, mask = _prep(xp, z, h0, mask)
    T, (B, H) = z.shape[0], h0.shape
    dtype = z.dtype
    q_off, k_off, v_off, w_off = _lrn_offsets(variant, H)
    h = xp.empty((T, B, H), dtype=dtype)
    f = xp.empty((T, B, H), dtype=dtype)
    i = xp.empty((T, B, H), dtype=dtype) if k_off >= 0 else None
    o = xp.empty((T, B, H), dtype=dtype) if w_off >= 0 else None
    c = xp.empty((T, B, H), dtype=dtype) if w_off >= 0 else None
    grid, block = _columns(B * H)
    launch(_lrn_forward_kernel, grid, block, z, h0, mask if mask is not None else h0, mask is not None,
           q_off, k_off, v_off, w_off, activation == "tanh",
           h, f, i if i is not None else f, o if o is not None else f, c if c is not None else f)
    return h, i, f, o, c


def _lrn_backward(variant, z, h0, h, i, f, o, c, mask, grad_y, grad_h_last, activation):
    xp = backend.get_xp(z, h0, h, grad_y)
    z, h0, h, i, f, o, c, mask, grad_y, grad_h_last = _prep(xp, z, h0, h, i, f, o, c, mask, grad_y, grad_h_last)
    B, H = h0.shape
    q_off, k_off, v_off, w_off = _lrn_offsets(variant, H)
    grad_z = xp.empty(z.shape, dtype=z.dtype)
    grad_h0 = xp.empty((B, H), dtype=z.dtype)
    grid, block = _columns(B * H)
    launch(_lrn_backward_kernel, grid, block, z, h0, h, i if i is not None else f, f,
           o if o is not None else f, c if c is not None else f, mask if mask is not None else h0, mask is not None,
           grad_y, grad_h_last, q_off, k_off, v_off, w_off, activation == "tanh", grad_z, grad_h0)
    return grad_z, grad_h0


@register_kernel("lrn_forward", "cuda")
def lrn_forward(z, h0, mask, activation="tanh"):
    if not _fast(z, h0):
        return _ref_lrn.lrn_forward(z, h0, mask, activation)
    h, i, f, _, _ = _lrn_forward("lrn", z, h0, mask, activation)
    return h, i, f


@register_kernel("lrn_backward", "cuda")
def lrn_backward(z, h0, h, i, f, mask, grad_y, grad_h_last, activation="tanh"):
    if not _fast(z, h0, grad_y):
        return _ref_lrn.lrn_backward(z, h0, h, i, f, mask, grad_y, grad_h_last, activation)
    return _lrn_backward("lrn", z, h0, h, i, f, None, None, mask, grad_y, grad_h_last, activation)


@register_kernel("glrn_forward", "cuda")
def glrn_forward(z, h0, mask, activation="tanh"):
    if not _fast(z, h0):
        return _ref_lrn.glrn_forward(z, h0, mask, activation)
    h, _, f, _, _ = _lrn_forward("glrn", z, h0, mask, activation)
    return h, f


@register_kernel("glrn_backward", "cuda")
def glrn_backward(z, h0, h, f, mask, grad_y, grad_h_last, activation="tanh"):
    if not _fast(z, h0, grad_y):
        return _ref_lrn.glrn_backward(z, h0, h, f, mask, grad_y, grad_h_last, activation)
    return _lrn_backward("glrn", z, h0, h, None, f, None, None, mask, grad_y, grad_h_last, activation)


@register_kernel("elrn_forward", "cuda")
def elrn_forward(z, h0, mask, activation="tanh"):
    if not _fast(z, h0):
        return _ref_lrn.elrn_forward(z, h0, mask, activation)
    h, _, f, _, _ = _lrn_forward("elrn", z, h0, mask, activation)
    return h, f


@register_kernel("elrn_backward", "cuda")
def elrn_backward(z, h0, h, f, mask, grad_y, grad_h_last, activation="tanh"):
    if not _fast(z, h0, grad_y):
        return _ref_lrn.elrn_backward(z, h0, h, f, mask, grad_y, grad_h_last, activation)
    return _lrn_backward("elrn", z, h0, h, None, f, None, None, mask, grad_y, grad_h_last, activation)


@register_kernel("olrn_forward", "cuda")
def olrn_forward(z, h0, mask):
    if not _fast(z, h0):
        return _ref_lrn.olrn_forward(z, h0, mask)
    return _lrn_forward("olrn", z, h0, mask, None)


@register_kernel("olrn_backward", "cuda")
def olrn_backward(z, h0, h, i, f, o, c, mask, grad_y, grad_h_last):
    if not _fast(z, h0, grad_y):
        return _ref_lrn.olrn_backward(z, h0, h, i, f, o, c, mask, grad_y, grad_h_last)
    return _lrn_backward("olrn", z, h0, h, i, f, o, c, mask, grad_y, grad_h_last, None)


# =================================================================================================
# minGRU / minLSTM (Feng et al. 2024) and the plain linear scan: the block scan of gpu_scan with
# the gate math inside it (kernels/minrnn.py, kernels/scan.py)
# =================================================================================================
def _lanes(mode):
    return 1 if mode == "sequential" else None  # one lane: the loop over time; else a Blelloch tree


@register_kernel("mingru_forward", "cuda")
def mingru_forward(k, x_tilde, h0, mask=None, mode="sequential", g_activation=False):
    """`minirec.kernels.minrnn.mingru_forward` on the GPU: returns (h, z)."""
    _ref_minrnn.check_mode(mode)
    if not _fast(k, x_tilde, h0):
        return _ref_minrnn.mingru_forward(k, x_tilde, h0, mask, mode, g_activation)
    if mode == "log":
        return scan_log_forward(MINGRU, k, x_tilde, None, h0, mask)
    return scan_forward(MINGRU, k, x_tilde, None, h0, mask, applies_g=g_activation, lanes=_lanes(mode))


@register_kernel("mingru_backward", "cuda")
def mingru_backward(grad_h, h, h0, z, x_tilde, mask=None, mode="sequential", g_activation=False):
    """`minirec.kernels.minrnn.mingru_backward` on the GPU: returns (grad_k, grad_x_tilde, grad_h0)."""
    _ref_minrnn.check_mode(mode)
    if not _fast(grad_h, h, h0):
        return _ref_minrnn.mingru_backward(grad_h, h, h0, z, x_tilde, mask, mode, g_activation)
    grad_k, grad_x_tilde, _, grad_h0 = scan_backward(
        MINGRU, z, x_tilde, None, None, h, h0, grad_h, mask,
        applies_g=g_activation or mode == "log", lanes=_lanes(mode))
    return grad_k, grad_x_tilde, grad_h0


@register_kernel("minlstm_forward", "cuda")
def minlstm_forward(k_f, k_i, x_tilde, h0, mask=None, mode="sequential", g_activation=False):
    """`minirec.kernels.minrnn.minlstm_forward` on the GPU: returns (h, f_prime)."""
    _ref_minrnn.check_mode(mode)
    if not _fast(k_f, k_i, x_tilde, h0):
        return _ref_minrnn.minlstm_forward(k_f, k_i, x_tilde, h0, mask, mode, g_activation)
    if mode == "log":
        return scan_log_forward(MINLSTM, k_f, k_i, x_tilde, h0, mask)
    return scan_forward(MINLSTM, k_f, k_i, x_tilde, h0, mask, applies_g=g_activation, lanes=_lanes(mode))


@register_kernel("minlstm_backward", "cuda")
def minlstm_backward(grad_h, h, h0, f_prime, k_f, k_i, x_tilde, mask=None, mode="sequential", g_activation=False):
    """`minirec.kernels.minrnn.minlstm_backward` on the GPU: returns (grad_k_f, grad_k_i,
    grad_x_tilde, grad_h0)."""
    _ref_minrnn.check_mode(mode)
    if not _fast(grad_h, h, h0):
        return _ref_minrnn.minlstm_backward(grad_h, h, h0, f_prime, k_f, k_i, x_tilde, mask, mode, g_activation)
    return scan_backward(MINLSTM, f_prime, k_f, k_i, x_tilde, h, h0, grad_h, mask,
                         applies_g=g_activation or mode == "log", lanes=_lanes(mode))


# The linear scan itself, under the names a `reference` registration in scan.py would use
# (scan.linear_scan_sequential and scan.linear_scan_backward's contracts).
@register_kernel("linear_scan_forward", "cuda")
def linear_scan_forward(a, b, h0=None):
    return linear_scan_cuda(a, b, h0)


@register_kernel("linear_scan_backward", "cuda")
def linear_scan_backward(a, h, h0, grad_h):
    return linear_scan_backward_cuda(a, h, h0, grad_h)


# =================================================================================================
# Recurrences through a matrix: per step, cuBLAS for h_{t−1} U and fused kernels around it
# =================================================================================================
class _Steps:
    """The kernels of one call, configured once, their array arguments converted once."""

    def __init__(self, xp, grid, block):
        self.xp, self.grid, self.block = xp, grid, block

    def bind(self, kernel, *arrays):
        configured = configure(kernel, self.grid, self.block)
        converted = device_args(*arrays)
        return lambda *scalars: configured(*converted, *scalars)


def _h_prev(h0, h, t):
    return h0 if t == 0 else h[t - 1]


@cuda.jit(device=True)
def _prev(h0, h, t, b, j):
    return h0[b, j] if t == 0 else h[t - 1, b, j]


# ---- LSTM ---------------------------------------------------------------------------------------
@cuda.jit(cache=True)
def _lstm_step_kernel(x_proj, s, h0, c0, h, c, gates, mask, has_mask, t):
    """a = x_proj[t] + h_{t−1} U (s); gates, c_t, h_t of step t."""
    B = h0.shape[0]
    H = h0.shape[1]
    active, b, j = _column(B, H)
    if not active:
        return
    one = h0.dtype.type(1.0)
    h_prev = _prev(h0, h, t, b, j)
    c_prev = _prev(c0, c, t, b, j)
    i = sigmoid(x_proj[t, b, j] + s[b, j], one)
    f = sigmoid(x_proj[t, b, H + j] + s[b, H + j], one)
    o = sigmoid(x_proj[t, b, 2 * H + j] + s[b, 2 * H + j], one)
    g = math.tanh(x_proj[t, b, 3 * H + j] + s[b, 3 * H + j])
    c_new = f * c_prev + i * g
    h_new = o * math.tanh(c_new)
    if has_mask:
        if mask[t, b] == 0:
            c_new = c_prev
            h_new = h_prev
    gates[t, b, j] = i
    gates[t, b, H + j] = f
    gates[t, b, 2 * H + j] = o
    gates[t, b, 3 * H + j] = g
    h[t, b, j] = h_new
    c[t, b, j] = c_new


@cuda.jit(cache=True)
def _lstm_back_kernel(c0, h, c, gates, mask, has_mask, grad_y, grad_h_last, grad_c_last, through, keep_h, delta_c,
                      grad_x_proj, t, first):
    """Step t of BPTT. δ_h = through (= ∂a_{t+1} Uᵀ) + keep_h; δ_c carried in place."""
    B = c0.shape[0]
    H = c0.shape[1]
    active, b, j = _column(B, H)
    if not active:
        return
    one = c0.dtype.type(1.0)
    if first:
        dl_h = grad_h_last[b, j]
        dl_c = grad_c_last[b, j]
    else:
        dl_h = through[b, j] + keep_h[b, j]
        dl_c = delta_c[b, j]
    m = mask[t, b] if has_mask else one
    dl_h = dl_h + m * grad_y[t, b, j]
    dh = m * dl_h
    dc = m * dl_c
    i = gates[t, b, j]
    f = gates[t, b, H + j]
    o = gates[t, b, 2 * H + j]
    g = gates[t, b, 3 * H + j]
    tanh_c = math.tanh(c[t, b, j])
    dc = dc + dh * o * (one - tanh_c * tanh_c)
    c_prev = _prev(c0, c, t, b, j)
    grad_x_proj[t, b, j] = dc * g * i * (one - i)
    grad_x_proj[t, b, H + j] = dc * c_prev * f * (one - f)
    grad_x_proj[t, b, 2 * H + j] = dh * tanh_c * o * (one - o)
    grad_x_proj[t, b, 3 * H + j] = dc * i * (one - g * g)
    delta_c[b, j] = dc * f + (one - m) * dl_c
    keep_h[b, j] = (one - m) * dl_h


@register_kernel("lstm_forward", "cuda")
def lstm_forward(x_proj, U, h0, c0, mask):
    """`minirec.kernels.lstm.lstm_forward` on the GPU: returns (h, c, gates)."""
    if not _fast(x_proj, U, h0, c0):
        return _ref_lstm.lstm_forward(x_proj, U, h0, c0, mask)
    xp = backend.get_xp(x_proj, U, h0, c0)
    x_proj, h0, c0, mask = _prep(xp, x_proj, h0, c0, mask)
    U = xp.ascontiguousarray(U)
    T, B, H4 = x_proj.shape
    H = H4 // 4
    dtype = x_proj.dtype
    h = xp.empty((T, B, H), dtype=dtype)
    c = xp.empty((T, B, H), dtype=dtype)
    gates = xp.empty((T, B, 4 * H), dtype=dtype)
    s = xp.empty((B, 4 * H), dtype=dtype)
    steps = _Steps(xp, *_columns(B * H))
    step = steps.bind(_lstm_step_kernel, x_proj, s, h0, c0, h, c, gates,
                      mask if mask is not None else h0, mask is not None)
    for t in range(T):
        xp.matmul(_h_prev(h0, h, t), U, out=s)
        step(t)
    return h, c, gates


@register_kernel("lstm_backward", "cuda")
def lstm_backward(U, h0, c0, mask, h, c, gates, grad_y, grad_h_last, grad_c_last):
    """`minirec.kernels.lstm.lstm_backward` on the GPU: returns (grad_x_proj, grad_U, grad_h0, grad_c0)."""
    if not _fast(U, h0, c0, h, grad_y):
        return _ref_lstm.lstm_backward(U, h0, c0, mask, h, c, gates, grad_y, grad_h_last, grad_c_last)
    xp = backend.get_xp(U, h0, c0, h, grad_y)
    h0, c0, mask, h, c, gates, grad_y, grad_h_last, grad_c_last = _prep(
        xp, h0, c0, mask, h, c, gates, grad_y, grad_h_last, grad_c_last)
    T, B, H = h.shape
    dtype = h.dtype
    U_T = xp.ascontiguousarray(U.T)
    grad_x_proj = xp.empty((T, B, 4 * H), dtype=dtype)
    through = xp.empty((B, H), dtype=dtype)
    keep_h = xp.empty((B, H), dtype=dtype)
    delta_c = xp.empty((B, H), dtype=dtype)
    steps = _Steps(xp, *_columns(B * H))
    step = steps.bind(_lstm_back_kernel, c0, h, c, gates, mask if mask is not None else h0, mask is not None,
                      grad_y, grad_h_last, grad_c_last, through, keep_h, delta_c, grad_x_proj)
    for t in range(T - 1, -1, -1):
        step(t, t == T - 1)
        xp.matmul(grad_x_proj[t], U_T, out=through)
    h_prev_all = xp.concatenate([h0[None], h[:-1]], axis=0)
    grad_U = h_prev_all.reshape(T * B, H).T @ grad_x_proj.reshape(T * B, 4 * H)
    return grad_x_proj, grad_U, through + keep_h, delta_c


# ---- GRU ----------------------------------------------------------------------------------------
@cuda.jit(cache=True)
def _gru_gates_kernel(x_proj, s_zr, h0, h, gates, rh, t):
    """z, r of step t from s_zr = h_{t−1} U_zr; rh = r ⊙ h_{t−1} for the candidate's product."""
    B = h0.shape[0]
    H = h0.shape[1]
    active, b, j = _column(B, H)
    if not active:
        return
    one = h0.dtype.type(1.0)
    h_prev = _prev(h0, h, t, b, j)
    z = sigmoid(x_proj[t, b, j] + s_zr[b, j], one)
    r = sigmoid(x_proj[t, b, H + j] + s_zr[b, H + j], one)
    gates[t, b, j] = z
    gates[t, b, H + j] = r
    rh[b, j] = r * h_prev


@cuda.jit(cache=True)
def _gru_state_kernel(x_proj, s_h, h0, h, gates, mask, has_mask, t):
    """h̃ and h_t of step t from s_h = (r ⊙ h_{t−1}) U_h."""
    B = h0.shape[0]
    H = h0.shape[1]
    active, b, j = _column(B, H)
    if not active:
        return
    one = h0.dtype.type(1.0)
    h_prev = _prev(h0, h, t, b, j)
    h_tilde = math.tanh(x_proj[t, b, 2 * H + j] + s_h[b, j])
    z = gates[t, b, j]
    h_new = (one - z) * h_prev + z * h_tilde
    if has_mask:
        if mask[t, b] == 0:
            h_new = h_prev
    gates[t, b, 2 * H + j] = h_tilde
    h[t, b, j] = h_new


@cuda.jit(cache=True)
def _gru_back_a_kernel(h, gates, mask, has_mask, grad_y, grad_h_last, through, acc, delta, grad_x_proj, t, first):
    """δ of step t (through + acc from step t+1), and ∂a_h̃ (needed for ∂(r ⊙ h_{t−1}))."""
    B = h.shape[1]
    H = h.shape[2]
    active, b, j = _column(B, H)
    if not active:
        return
    one = h.dtype.type(1.0)
    dl = grad_h_last[b, j] if first else through[b, j] + acc[b, j]
    m = mask[t, b] if has_mask else one
    dl = dl + m * grad_y[t, b, j]
    dh = m * dl
    z = gates[t, b, j]
    h_tilde = gates[t, b, 2 * H + j]
    grad_x_proj[t, b, 2 * H + j] = dh * z * (one - h_tilde * h_tilde)
    delta[b, j] = dl


@cuda.jit(cache=True)
def _gru_back_b_kernel(h0, h, gates, mask, has_mask, d_rh, acc, delta, grad_x_proj, t):
    """∂a_z, ∂a_r of step t (d_rh = ∂a_h̃ U_hᵀ) and the part of δ_{t−1} not through U_zr."""
    B = h0.shape[0]
    H = h0.shape[1]
    active, b, j = _column(B, H)
    if not active:
        return
    one = h0.dtype.type(1.0)
    dl = delta[b, j]
    m = mask[t, b] if has_mask else one
    dh = m * dl
    h_prev = _prev(h0, h, t, b, j)
    z = gates[t, b, j]
    r = gates[t, b, H + j]
    h_tilde = gates[t, b, 2 * H + j]
    g = d_rh[b, j]
    grad_x_proj[t, b, j] = dh * (h_tilde - h_prev) * z * (one - z)
    grad_x_proj[t, b, H + j] = g * h_prev * r * (one - r)
    acc[b, j] = dh * (one - z) + g * r + (one - m) * dl


def _two_product_forward(x_proj, U, h0, mask, split, gate_kernel, state_kernel):
    """The forward driver of GRU and MGU: two h-to-h products per step, a kernel after each.

    Step t: s = h_{t−1} U[:, :split] (the gate pre-activations), then ``gate_kernel`` makes the
    gates and the gated state (r⊙h_{t−1} for GRU, f⊙h_{t−1} for MGU); s_h = gated U[:, split:],
    then ``state_kernel`` makes h̃ and h_t.
    """
    xp = backend.get_xp(x_proj, U, h0)
    x_proj, h0, mask = _prep(xp, x_proj, h0, mask)
    T, B, _ = x_proj.shape
    H = h0.shape[1]
    dtype = x_proj.dtype
    U_gate = xp.ascontiguousarray(U[:, :split])
    U_h = xp.ascontiguousarray(U[:, split:])
    h = xp.empty((T, B, H), dtype=dtype)
    gates = xp.empty((T, B, split + H), dtype=dtype)
    s_gate = xp.empty((B, split), dtype=dtype)
    gated, s_h = (xp.empty((B, H), dtype=dtype) for _ in range(2))
    steps = _Steps(xp, *_columns(B * H))
    gate_step = steps.bind(gate_kernel, x_proj, s_gate, h0, h, gates, gated)
    state_step = steps.bind(state_kernel, x_proj, s_h, h0, h, gates,
                            mask if mask is not None else h0, mask is not None)
    for t in range(T):
        xp.matmul(_h_prev(h0, h, t), U_gate, out=s_gate)
        gate_step(t)
        xp.matmul(gated, U_h, out=s_h)
        state_step(t)
    return h, gates


def _two_product_backward(U, h0, mask, h, gates, grad_y, grad_h_last, split, gating, back_a, back_b):
    """The backward driver of GRU and MGU, the reverse of `_two_product_forward`.

    ``gating`` is the slice of ``gates`` that multiplies h_{t−1} before the second product
    (r for GRU, f for MGU): ∂U[:, split:] = (gating ⊙ h_{t−1})ᵀ ∂s_h.
    """
    xp = backend.get_xp(U, h0, h, grad_y)
    h0, mask, h, gates, grad_y, grad_h_last = _prep(xp, h0, mask, h, gates, grad_y, grad_h_last)
    T, B, H = h.shape
    dtype = h.dtype
    U_gate_T = xp.ascontiguousarray(U[:, :split].T)
    U_h_T = xp.ascontiguousarray(U[:, split:].T)
    grad_x_proj = xp.empty((T, B, split + H), dtype=dtype)
    through, acc, delta, d_gated = (xp.empty((B, H), dtype=dtype) for _ in range(4))
    m_arg = mask if mask is not None else h0
    steps = _Steps(xp, *_columns(B * H))
    step_a = steps.bind(back_a, h, gates, m_arg, mask is not None, grad_y, grad_h_last,
                        through, acc, delta, grad_x_proj)
    step_b = steps.bind(back_b, h0, h, gates, m_arg, mask is not None, d_gated, acc, delta, grad_x_proj)
    for t in range(T - 1, -1, -1):
        step_a(t, t == T - 1)
        xp.matmul(grad_x_proj[t, :, split:], U_h_T, out=d_gated)
        step_b(t)
        xp.matmul(grad_x_proj[t, :, :split], U_gate_T, out=through)
    h_prev_all = xp.concatenate([h0[None], h[:-1]], axis=0)
    grad_U = xp.empty_like(U)
    flat = grad_x_proj.reshape(T * B, split + H)
    grad_U[:, :split] = h_prev_all.reshape(T * B, H).T @ flat[:, :split]
    gated = gates[:, :, gating] * h_prev_all
    grad_U[:, split:] = gated.reshape(T * B, H).T @ flat[:, split:]
    return grad_x_proj, grad_U, through + acc


@register_kernel("gru_forward", "cuda")
def gru_forward(x_proj, U, h0, mask):
    """`minirec.kernels.gru.gru_forward` on the GPU: returns (h, gates)."""
    if not _fast(x_proj, U, h0):
        return _ref_gru.gru_forward(x_proj, U, h0, mask)
    H = h0.shape[1]
    return _two_product_forward(x_proj, U, h0, mask, 2 * H, _gru_gates_kernel, _gru_state_kernel)


@register_kernel("gru_backward", "cuda")
def gru_backward(U, h0, mask, h, gates, grad_y, grad_h_last):
    """`minirec.kernels.gru.gru_backward` on the GPU: returns (grad_x_proj, grad_U, grad_h0)."""
    if not _fast(U, h0, h, grad_y):
        return _ref_gru.gru_backward(U, h0, mask, h, gates, grad_y, grad_h_last)
    H = h0.shape[1]
    return _two_product_backward(U, h0, mask, h, gates, grad_y, grad_h_last, 2 * H, slice(H, 2 * H),
                                 _gru_back_a_kernel, _gru_back_b_kernel)


# ---- MGU ----------------------------------------------------------------------------------------
@cuda.jit(cache=True)
def _mgu_gate_kernel(x_proj, s_f, h0, h, gates, fh, t):
    B = h0.shape[0]
    H = h0.shape[1]
    active, b, j = _column(B, H)
    if not active:
        return
    one = h0.dtype.type(1.0)
    f = sigmoid(x_proj[t, b, j] + s_f[b, j], one)
    gates[t, b, j] = f
    fh[b, j] = f * _prev(h0, h, t, b, j)


@cuda.jit(cache=True)
def _mgu_state_kernel(x_proj, s_h, h0, h, gates, mask, has_mask, t):
    B = h0.shape[0]
    H = h0.shape[1]
    active, b, j = _column(B, H)
    if not active:
        return
    one = h0.dtype.type(1.0)
    h_prev = _prev(h0, h, t, b, j)
    h_tilde = math.tanh(x_proj[t, b, H + j] + s_h[b, j])
    f = gates[t, b, j]
    h_new = (one - f) * h_prev + f * h_tilde
    if has_mask:
        if mask[t, b] == 0:
            h_new = h_prev
    gates[t, b, H + j] = h_tilde
    h[t, b, j] = h_new


@cuda.jit(cache=True)
def _mgu_back_a_kernel(h, gates, mask, has_mask, grad_y, grad_h_last, through, acc, delta, grad_x_proj, t, first):
    B = h.shape[1]
    H = h.shape[2]
    active, b, j = _column(B, H)
    if not active:
        return
    one = h.dtype.type(1.0)
    dl = grad_h_last[b, j] if first else through[b, j] + acc[b, j]
    m = mask[t, b] if has_mask else one
    dl = dl + m * grad_y[t, b, j]
    dh = m * dl
    f = gates[t, b, j]
    h_tilde = gates[t, b, H + j]
    grad_x_proj[t, b, H + j] = dh * f * (one - h_tilde * h_tilde)
    delta[b, j] = dl


@cuda.jit(cache=True)
def _mgu_back_b_kernel(h0, h, gates, mask, has_mask, d_fh, acc, delta, grad_x_proj, t):
    B = h0.shape[0]
    H = h0.shape[1]
    active, b, j = _column(B, H)
    if not active:
        return
    one = h0.dtype.type(1.0)
    dl = delta[b, j]
    m = mask[t, b] if has_mask else one
    dh = m * dl
    h_prev = _prev(h0, h, t, b, j)
    f = gates[t, b, j]
    h_tilde = gates[t, b, H + j]
    g = d_fh[b, j]
    df = dh * (h_tilde - h_prev) + g * h_prev  # f acts twice: as update gate and as reset
    grad_x_proj[t, b, j] = df * f * (one - f)
    acc[b, j] = dh * (one - f) + g * f + (one - m) * dl


@register_kernel("mgu_forward", "cuda")
def mgu_forward(x_proj, U, h0, mask):
    """`minirec.kernels.mgu.mgu_forward` on the GPU: returns (h, gates)."""
    if not _fast(x_proj, U, h0):
        return _ref_mgu.mgu_forward(x_proj, U, h0, mask)
    return _two_product_forward(x_proj, U, h0, mask, h0.shape[1], _mgu_gate_kernel, _mgu_state_kernel)


@register_kernel("mgu_backward", "cuda")
def mgu_backward(U, h0, mask, h, gates, grad_y, grad_h_last):
    """`minirec.kernels.mgu.mgu_backward` on the GPU: returns (grad_x_proj, grad_U, grad_h0)."""
    if not _fast(U, h0, h, grad_y):
        return _ref_mgu.mgu_backward(U, h0, mask, h, gates, grad_y, grad_h_last)
    H = h0.shape[1]
    return _two_product_backward(U, h0, mask, h, gates, grad_y, grad_h_last, H, slice(0, H),
                                 _mgu_back_a_kernel, _mgu_back_b_kernel)


# ---- SGU: scalar gates per sequence -------------------------------------------------------------
@cuda.jit(cache=True)
def _sgu_step_kernel(x_proj, s, h0, h, gates, mask, has_mask, t):
    """z, r (scalars per sequence: every thread of a row computes them), h̃ and h_t of step t."""
    B = h0.shape[0]
    H = h0.shape[1]
    active, b, j = _column(B, H)
    if not active:
        return
    one = h0.dtype.type(1.0)
    z = sigmoid(x_proj[t, b, 0] + s[b, 0], one)
    r = sigmoid(x_proj[t, b, 1] + s[b, 1], one)
    h_prev = _prev(h0, h, t, b, j)
    h_tilde = math.tanh(x_proj[t, b, 2 + j] + r * s[b, 2 + j])
    h_new = (one - z) * h_prev + z * h_tilde
    if has_mask:
        if mask[t, b] == 0:
            h_new = h_prev
    if j == 0:
        gates[t, b, 0] = z
        gates[t, b, 1] = r
    gates[t, b, 2 + j] = h_tilde
    h[t, b, j] = h_new


@cuda.jit(cache=True)
def _sgu_back_kernel(h0, h, gates, s_h, mask, has_mask, grad_y, grad_h_last, through, keep, grad_x_proj, grad_s,
                     t, first):
    """Step t of BPTT, one block per sequence: the scalar gates' gradients sum over its H units."""
    sum_z = cuda.shared.array(MAX_THREADS, h.dtype)
    sum_r = cuda.shared.array(MAX_THREADS, h.dtype)
    H = h.shape[2]
    b = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    nthreads = cuda.blockDim.x
    one = h.dtype.type(1.0)
    zero = one - one
    m = mask[t, b] if has_mask else one
    z = gates[t, b, 0]
    r = gates[t, b, 1]
    part_z = zero
    part_r = zero
    for j in range(tid, H, nthreads):
        dl = grad_h_last[b, j] if first else through[b, j] + keep[b, j]
        dl = dl + m * grad_y[t, b, j]
        dh = m * dl
        h_tilde = gates[t, b, 2 + j]
        h_prev = _prev(h0, h, t, b, j)
        da_h = dh * z * (one - h_tilde * h_tilde)
        part_z += dh * (h_tilde - h_prev)
        part_r += da_h * s_h[t, b, j]
        grad_x_proj[t, b, 2 + j] = da_h
        grad_s[t, b, 2 + j] = r * da_h
        keep[b, j] = dh * (one - z) + (one - m) * dl
    sum_z[tid] = part_z
    sum_r[tid] = part_r
    cuda.syncthreads()
    step = nthreads // 2
    while step >= 1:
        if tid < step:
            sum_z[tid] += sum_z[tid + step]
            sum_r[tid] += sum_r[tid + step]
        cuda.syncthreads()
        step //= 2
    if tid == 0:
        da_z = sum_z[0] * z * (one - z)
        da_r = sum_r[0] * r * (one - r)
        grad_x_proj[t, b, 0] = da_z
        grad_x_proj[t, b, 1] = da_r
        grad_s[t, b, 0] = da_z
        grad_s[t, b, 1] = da_r


@register_kernel("sgu_forward", "cuda")
def sgu_forward(x_proj, U, h0, mask):
    """`minirec.kernels.sgu.sgu_forward` on the GPU: returns (h, gates)."""
    if not _fast(x_proj, U, h0):
        return _ref_sgu.sgu_forward(x_proj, U, h0, mask)
    xp = backend.get_xp(x_proj, U, h0)
    x_proj, h0, mask = _prep(xp, x_proj, h0, mask)
    U = xp.ascontiguousarray(U)
    T, B, H2 = x_proj.shape
    H = H2 - 2
    dtype = x_proj.dtype
    h = xp.empty((T, B, H), dtype=dtype)
    gates = xp.empty((T, B, H + 2), dtype=dtype)
    s = xp.empty((B, H + 2), dtype=dtype)
    steps = _Steps(xp, *_columns(B * H))
    step = steps.bind(_sgu_step_kernel, x_proj, s, h0, h, gates, mask if mask is not None else h0, mask is not None)
    for t in range(T):
        xp.matmul(_h_prev(h0, h, t), U, out=s)
        step(t)
    return h, gates


def _row_threads(H):
    n = 1
    while n < min(H, ROW_THREADS, MAX_THREADS):
        n *= 2
    return n


@register_kernel("sgu_backward", "cuda")
def sgu_backward(U, h0, mask, h, gates, grad_y, grad_h_last):
    """`minirec.kernels.sgu.sgu_backward` on the GPU: returns (grad_x_proj, grad_U, grad_h0)."""
    if not _fast(U, h0, h, grad_y):
        return _ref_sgu.sgu_backward(U, h0, mask, h, gates, grad_y, grad_h_last)
    xp = backend.get_xp(U, h0, h, grad_y)
    h0, mask, h, gates, grad_y, grad_h_last = _prep(xp, h0, mask, h, gates, grad_y, grad_h_last)
    T, B, H = h.shape
    dtype = h.dtype
    U_T = xp.ascontiguousarray(U.T)
    h_prev_all = xp.concatenate([h0[None], h[:-1]], axis=0)
    s_h = (h_prev_all.reshape(T * B, H) @ U[:, 2:]).reshape(T, B, H)  # s_t[h̃] for every t at once
    grad_x_proj = xp.empty((T, B, H + 2), dtype=dtype)
    grad_s = xp.empty((T, B, H + 2), dtype=dtype)
    through = xp.empty((B, H), dtype=dtype)
    keep = xp.empty((B, H), dtype=dtype)
    steps = _Steps(xp, B, _row_threads(H))
    step = steps.bind(_sgu_back_kernel, h0, h, gates, s_h, mask if mask is not None else h0, mask is not None,
                      grad_y, grad_h_last, through, keep, grad_x_proj, grad_s)
    for t in range(T - 1, -1, -1):
        step(t, t == T - 1)
        xp.matmul(grad_s[t], U_T, out=through)
    grad_U = h_prev_all.reshape(T * B, H).T @ grad_s.reshape(T * B, H + 2)
    return grad_x_proj, grad_U, through + keep


# ---- ATR ----------------------------------------------------------------------------------------
@cuda.jit(cache=True)
def _atr_step_kernel(p, s, b_q, h0, h, i_out, f_out, mask, has_mask, t):
    B = h0.shape[0]
    H = h0.shape[1]
    active, b, j = _column(B, H)
    if not active:
        return
    one = h0.dtype.type(1.0)
    h_prev = _prev(h0, h, t, b, j)
    q = s[b, j] + b_q[j]
    p_t = p[t, b, j]
    i = sigmoid(p_t + q, one)
    f = sigmoid(p_t - q, one)
    h_new = i * p_t + f * h_prev
    if has_mask:
        if mask[t, b] == 0:
            h_new = h_prev
    h[t, b, j] = h_new
    i_out[t, b, j] = i
    f_out[t, b, j] = f


@cuda.jit(cache=True)
def _atr_back_kernel(p, h0, h, i_in, f_in, mask, has_mask, grad_y, grad_h_last, through, keep, grad_p, grad_q,
                     t, first):
    B = h0.shape[0]
    H = h0.shape[1]
    active, b, j = _column(B, H)
    if not active:
        return
    one = h0.dtype.type(1.0)
    d = grad_h_last[b, j] if first else through[b, j] + keep[b, j]
    m = mask[t, b] if has_mask else one
    e = grad_y[t, b, j] * m + d * m
    i = i_in[t, b, j]
    f = f_in[t, b, j]
    grad_a_i = e * p[t, b, j] * (i * (one - i))
    grad_a_f = e * _prev(h0, h, t, b, j) * (f * (one - f))
    grad_p[t, b, j] = e * i + grad_a_i + grad_a_f
    grad_q[t, b, j] = grad_a_i - grad_a_f
    keep[b, j] = e * f + d * (one - m)


@register_kernel("atr_forward", "cuda")
def atr_forward(p, U, b_q, h0, mask):
    """`minirec.kernels.atr.atr_forward` on the GPU: returns (h, i, f)."""
    if not _fast(p, U, h0):
        return _ref_atr.atr_forward(p, U, b_q, h0, mask)
    xp = backend.get_xp(p, U, b_q, h0)
    p, b_q, h0, mask = _prep(xp, p, b_q, h0, mask)
    U = xp.ascontiguousarray(U)
    T, B, H = p.shape
    h, i, f = (xp.empty((T, B, H), dtype=p.dtype) for _ in range(3))
    s = xp.empty((B, H), dtype=p.dtype)
    steps = _Steps(xp, *_columns(B * H))
    step = steps.bind(_atr_step_kernel, p, s, b_q, h0, h, i, f, mask if mask is not None else h0, mask is not None)
    for t in range(T):
        xp.matmul(_h_prev(h0, h, t), U, out=s)
        step(t)
    return h, i, f


@register_kernel("atr_backward", "cuda")
def atr_backward(p, U, h0, h, i, f, mask, grad_y, grad_h_last):
    """`minirec.kernels.atr.atr_backward` on the GPU: returns (grad_p, grad_U, grad_b_q, grad_h0)."""
    if not _fast(p, U, h0, h, grad_y):
        return _ref_atr.atr_backward(p, U, h0, h, i, f, mask, grad_y, grad_h_last)
    xp = backend.get_xp(p, U, h0, h, grad_y)
    p, h0, h, i, f, mask, grad_y, grad_h_last = _prep(xp, p, h0, h, i, f, mask, grad_y, grad_h_last)
    T, B, H = p.shape
    U_T = xp.ascontiguousarray(U.T)
    grad_p = xp.empty((T, B, H), dtype=p.dtype)
    grad_q = xp.empty((T, B, H), dtype=p.dtype)
    through = xp.empty((B, H), dtype=p.dtype)
    keep = xp.empty((B, H), dtype=p.dtype)
    steps = _Steps(xp, *_columns(B * H))
    step = steps.bind(_atr_back_kernel, p, h0, h, i, f, mask if mask is not None else h0, mask is not None,
                      grad_y, grad_h_last, through, keep, grad_p, grad_q)
    for t in range(T - 1, -1, -1):
        step(t, t == T - 1)
        xp.matmul(grad_q[t], U_T, out=through)
    h_prev_all = xp.concatenate([h0[None], h[:-1]], axis=0)
    grad_U = h_prev_all.reshape(-1, H).T @ grad_q.reshape(-1, H)
    grad_b_q = grad_q.reshape(-1, H).sum(axis=0)
    return grad_p, grad_U, grad_b_q, through + keep
