"""Recurrences through a matrix on the GPU (GRU, LSTM, MGU, SGU, ATR): per step, h_{t−1} U is a
CuPy (cuBLAS) matmul and everything elementwise around it one fused kernel (two for GRU and MGU,
whose reset gate sits between two products). The reference loops: minirec/kernels/<cell>.py; the
CPU kernels: minirec/kernels/cpu/matrix.py."""

from __future__ import annotations

import functools
import math

from numba import cuda

from minirec import backend
from minirec.kernels import atr as _ref_atr
from minirec.kernels import gru as _ref_gru
from minirec.kernels import lstm as _ref_lstm
from minirec.kernels import mgu as _ref_mgu
from minirec.kernels import register_kernel
from minirec.kernels import sgu as _ref_sgu
from minirec.kernels.cuda._common import MAX_BLOCK_THREADS as MAX_THREADS
from minirec.kernels.cuda._common import (
    bind,
    column_grid,
    column_of,
    fast_path,
    or_stand_in,
    prepare,
    sigmoid,
)

ROW_THREADS = 128  # threads per block (one block per sequence) of SGU's backward step (power of two)


# =================================================================================================
# Recurrences through a matrix: per step, cuBLAS for h_{t−1} U and fused kernels around it
# =================================================================================================
# Per step: one cuBLAS product and one kernel launch (two of each for GRU and MGU). Each kernel is
# bound once per sequence (`_common.bind`: arrays converted once, the step index the only argument
# that changes) and built per "mask or not" (a closure constant, as in sru.py: no runtime flag).
# The backward kernels read δ from `through` + `keep`, which start as (∂h_T, 0): no first-step flag.
def _h_prev(h0, h, t):
    return h0 if t == 0 else h[t - 1]


@cuda.jit(device=True)
def _prev(h0, h, t, b, j):
    return h0[b, j] if t == 0 else h[t - 1, b, j]


# ---- LSTM ---------------------------------------------------------------------------------------
@functools.cache
def lstm_step_kernel(has_mask):
    @cuda.jit(cache=True)
    def _lstm_step_kernel(x_proj, s, h0, c0, mask, h, c, gates, t):
        """a = x_proj[t] + h_{t−1} U (s); gates, c_t, h_t of step t."""
        B = h0.shape[0]
        H = h0.shape[1]
        active, b, j = column_of(B, H)
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

    return _lstm_step_kernel


@functools.cache
def lstm_back_kernel(has_mask):
    @cuda.jit(cache=True)
    def _lstm_back_kernel(c0, c, gates, mask, grad_y, through, keep_h, delta_c, grad_x_proj, t):
        """Step t of BPTT. δ_h = through (= ∂a_{t+1} Uᵀ) + keep_h; δ_c carried in place."""
        B = c0.shape[0]
        H = c0.shape[1]
        active, b, j = column_of(B, H)
        if not active:
            return
        one = c0.dtype.type(1.0)
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

    return _lstm_back_kernel


def _start_of_backward(xp, grad_h_last, B, H, dtype):
    """(through, keep) holding δ of the last step as `through + keep`: (∂h_T, 0)."""
    through = xp.empty((B, H), dtype=dtype)
    through[...] = grad_h_last
    return through, xp.zeros((B, H), dtype=dtype)


@register_kernel("lstm_forward", "cuda")
def lstm_forward(x_proj, U, h0, c0, mask):
    """`minirec.kernels.lstm.lstm_forward` on the GPU: returns (h, c, gates)."""
    if not fast_path(x_proj, U, h0, c0):
        return _ref_lstm.lstm_forward(x_proj, U, h0, c0, mask)
    xp = backend.get_xp(x_proj, U, h0, c0)
    x_proj, h0, c0, mask = prepare(xp, x_proj, h0, c0, mask)
    U = xp.ascontiguousarray(U)
    T, B, H4 = x_proj.shape
    H = H4 // 4
    dtype = x_proj.dtype
    h = xp.empty((T, B, H), dtype=dtype)
    c = xp.empty((T, B, H), dtype=dtype)
    gates = xp.empty((T, B, 4 * H), dtype=dtype)
    s = xp.empty((B, 4 * H), dtype=dtype)
    step = bind(lstm_step_kernel(mask is not None), *column_grid(B * H), x_proj, s, h0, c0, or_stand_in(mask, h0), h, c,
                gates)
    for t in range(T):
        xp.matmul(_h_prev(h0, h, t), U, out=s)
        step(t)
    return h, c, gates


@register_kernel("lstm_backward", "cuda")
def lstm_backward(U, h0, c0, mask, h, c, gates, grad_y, grad_h_last, grad_c_last):
    """`minirec.kernels.lstm.lstm_backward` on the GPU: returns (grad_x_proj, grad_U, grad_h0, grad_c0)."""
    if not fast_path(U, h0, c0, h, grad_y):
        return _ref_lstm.lstm_backward(U, h0, c0, mask, h, c, gates, grad_y, grad_h_last, grad_c_last)
    xp = backend.get_xp(U, h0, c0, h, grad_y)
    h0, c0, mask, h, c, gates, grad_y = prepare(xp, h0, c0, mask, h, c, gates, grad_y)
    T, B, H = h.shape
    dtype = h.dtype
    U_T = xp.ascontiguousarray(U.T)
    grad_x_proj = xp.empty((T, B, 4 * H), dtype=dtype)
    through, keep_h = _start_of_backward(xp, grad_h_last, B, H, dtype)
    delta_c = xp.empty((B, H), dtype=dtype)
    delta_c[...] = grad_c_last
    step = bind(lstm_back_kernel(mask is not None), *column_grid(B * H), c0, c, gates, or_stand_in(mask, h0), grad_y,
                through, keep_h, delta_c, grad_x_proj)
    for t in range(T - 1, -1, -1):
        step(t)
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
    active, b, j = column_of(B, H)
    if not active:
        return
    one = h0.dtype.type(1.0)
    h_prev = _prev(h0, h, t, b, j)
    z = sigmoid(x_proj[t, b, j] + s_zr[b, j], one)
    r = sigmoid(x_proj[t, b, H + j] + s_zr[b, H + j], one)
    gates[t, b, j] = z
    gates[t, b, H + j] = r
    rh[b, j] = r * h_prev


@functools.cache
def gru_state_kernel(has_mask):
    @cuda.jit(cache=True)
    def _gru_state_kernel(x_proj, s_h, h0, h, gates, mask, t):
        """h̃ and h_t of step t from s_h = (r ⊙ h_{t−1}) U_h."""
        B = h0.shape[0]
        H = h0.shape[1]
        active, b, j = column_of(B, H)
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

    return _gru_state_kernel


@functools.cache
def gru_back_a_kernel(has_mask):
    @cuda.jit(cache=True)
    def _gru_back_a_kernel(h, gates, mask, grad_y, through, acc, delta, grad_x_proj, t):
        """δ of step t (through + acc from step t+1), and ∂a_h̃ (needed for ∂(r ⊙ h_{t−1}))."""
        B = h.shape[1]
        H = h.shape[2]
        active, b, j = column_of(B, H)
        if not active:
            return
        one = h.dtype.type(1.0)
        dl = through[b, j] + acc[b, j]
        m = mask[t, b] if has_mask else one
        dl = dl + m * grad_y[t, b, j]
        dh = m * dl
        z = gates[t, b, j]
        h_tilde = gates[t, b, 2 * H + j]
        grad_x_proj[t, b, 2 * H + j] = dh * z * (one - h_tilde * h_tilde)
        delta[b, j] = dl

    return _gru_back_a_kernel


@functools.cache
def gru_back_b_kernel(has_mask):
    @cuda.jit(cache=True)
    def _gru_back_b_kernel(h0, h, gates, mask, d_rh, acc, delta, grad_x_proj, t):
        """∂a_z, ∂a_r of step t (d_rh = ∂a_h̃ U_hᵀ) and the part of δ_{t−1} not through U_zr."""
        B = h0.shape[0]
        H = h0.shape[1]
        active, b, j = column_of(B, H)
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

    return _gru_back_b_kernel


def _two_product_forward(x_proj, U, h0, mask, split, gate_kernel, state_kernel):
    """The forward driver of GRU and MGU: two h-to-h products per step, a kernel after each.

    Step t: s = h_{t−1} U[:, :split] (the gate pre-activations), then ``gate_kernel`` makes the
    gates and the gated state (r⊙h_{t−1} for GRU, f⊙h_{t−1} for MGU); s_h = gated U[:, split:],
    then ``state_kernel(has_mask)`` makes h̃ and h_t.
    """
    xp = backend.get_xp(x_proj, U, h0)
    x_proj, h0, mask = prepare(xp, x_proj, h0, mask)
    T, B, _ = x_proj.shape
    H = h0.shape[1]
    dtype = x_proj.dtype
    U_gate = xp.ascontiguousarray(U[:, :split])
    U_h = xp.ascontiguousarray(U[:, split:])
    h = xp.empty((T, B, H), dtype=dtype)
    gates = xp.empty((T, B, split + H), dtype=dtype)
    s_gate = xp.empty((B, split), dtype=dtype)
    gated, s_h = (xp.empty((B, H), dtype=dtype) for _ in range(2))
    grid, block = column_grid(B * H)
    gate_step = bind(gate_kernel, grid, block, x_proj, s_gate, h0, h, gates, gated)
    state_step = bind(state_kernel(mask is not None), grid, block, x_proj, s_h, h0, h, gates, or_stand_in(mask, h0))
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
    h0, mask, h, gates, grad_y = prepare(xp, h0, mask, h, gates, grad_y)
    T, B, H = h.shape
    dtype = h.dtype
    U_gate_T = xp.ascontiguousarray(U[:, :split].T)
    U_h_T = xp.ascontiguousarray(U[:, split:].T)
    grad_x_proj = xp.empty((T, B, split + H), dtype=dtype)
    through, acc = _start_of_backward(xp, grad_h_last, B, H, dtype)
    delta, d_gated = (xp.empty((B, H), dtype=dtype) for _ in range(2))
    m_arg = or_stand_in(mask, h0)
    grid, block = column_grid(B * H)
    step_a = bind(back_a(mask is not None), grid, block, h, gates, m_arg, grad_y, through, acc, delta, grad_x_proj)
    step_b = bind(back_b(mask is not None), grid, block, h0, h, gates, m_arg, d_gated, acc, delta, grad_x_proj)
    for t in range(T - 1, -1, -1):
        step_a(t)
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
    if not fast_path(x_proj, U, h0):
        return _ref_gru.gru_forward(x_proj, U, h0, mask)
    H = h0.shape[1]
    return _two_product_forward(x_proj, U, h0, mask, 2 * H, _gru_gates_kernel, gru_state_kernel)


@register_kernel("gru_backward", "cuda")
def gru_backward(U, h0, mask, h, gates, grad_y, grad_h_last):
    """`minirec.kernels.gru.gru_backward` on the GPU: returns (grad_x_proj, grad_U, grad_h0)."""
    if not fast_path(U, h0, h, grad_y):
        return _ref_gru.gru_backward(U, h0, mask, h, gates, grad_y, grad_h_last)
    H = h0.shape[1]
    return _two_product_backward(U, h0, mask, h, gates, grad_y, grad_h_last, 2 * H, slice(H, 2 * H),
                                 gru_back_a_kernel, gru_back_b_kernel)


# ---- GRU, reset after (cuDNN's and torch's form): gates [z | r | h̃ | n], one product per step ------
# n = h_{t−1} U_h + b_n is gated after the product, so all three column blocks of U multiply the
# same h_{t−1}: one cuBLAS product and one fused kernel per step, forward and backward.
@functools.cache
def gru_ra_step_kernel(has_mask):
    @cuda.jit(cache=True)
    def _gru_ra_step_kernel(x_proj, s, b_n, h0, mask, h, gates, t):
        """z, r, n = s[n] + b_n, h̃ = tanh(x_proj[t, h̃] + r n) and h_t of step t, s = h_{t−1} U."""
        B = h0.shape[0]
        H = h0.shape[1]
        active, b, j = column_of(B, H)
        if not active:
            return
        one = h0.dtype.type(1.0)
        h_prev = _prev(h0, h, t, b, j)
        z = sigmoid(x_proj[t, b, j] + s[b, j], one)
        r = sigmoid(x_proj[t, b, H + j] + s[b, H + j], one)
        n = s[b, 2 * H + j] + b_n[j]
        h_tilde = math.tanh(x_proj[t, b, 2 * H + j] + r * n)
        h_new = (one - z) * h_prev + z * h_tilde
        if has_mask:
            if mask[t, b] == 0:
                h_new = h_prev
        gates[t, b, j] = z
        gates[t, b, H + j] = r
        gates[t, b, 2 * H + j] = h_tilde
        gates[t, b, 3 * H + j] = n
        h[t, b, j] = h_new

    return _gru_ra_step_kernel


@functools.cache
def gru_ra_back_kernel(has_mask):
    @cuda.jit(cache=True)
    def _gru_ra_back_kernel(h0, h, gates, mask, grad_y, through, keep, grad_x_proj, grad_rec, t):
        """Step t of BPTT: δ = through (= [∂a_z | ∂a_r | ∂n]_{t+1} Uᵀ) + keep; writes ∂x_proj[t],
        [∂a_z | ∂a_r | ∂n] into grad_rec[t] for the next product, and keep = δ's part not through U."""
        B = h0.shape[0]
        H = h0.shape[1]
        active, b, j = column_of(B, H)
        if not active:
            return
        one = h0.dtype.type(1.0)
        dl = through[b, j] + keep[b, j]
        m = mask[t, b] if has_mask else one
        dl = dl + m * grad_y[t, b, j]
        dh = m * dl
        z = gates[t, b, j]
        r = gates[t, b, H + j]
        h_tilde = gates[t, b, 2 * H + j]
        n = gates[t, b, 3 * H + j]
        da_h = dh * z * (one - h_tilde * h_tilde)
        da_z = dh * (h_tilde - _prev(h0, h, t, b, j)) * z * (one - z)
        da_r = da_h * n * r * (one - r)
        grad_x_proj[t, b, j] = da_z
        grad_x_proj[t, b, H + j] = da_r
        grad_x_proj[t, b, 2 * H + j] = da_h
        grad_rec[t, b, j] = da_z
        grad_rec[t, b, H + j] = da_r
        grad_rec[t, b, 2 * H + j] = da_h * r
        keep[b, j] = dh * (one - z) + (one - m) * dl

    return _gru_ra_back_kernel


@register_kernel("gru_reset_after_forward", "cuda")
def gru_reset_after_forward(x_proj, U, b_n, h0, mask):
    """`minirec.kernels.gru.gru_reset_after_forward` on the GPU: returns (h, gates)."""
    if not fast_path(x_proj, U, b_n, h0):
        return _ref_gru.gru_reset_after_forward(x_proj, U, b_n, h0, mask)
    xp = backend.get_xp(x_proj, U, b_n, h0)
    x_proj, b_n, h0, mask = prepare(xp, x_proj, b_n, h0, mask)
    U = xp.ascontiguousarray(U)
    T, B, H3 = x_proj.shape
    H = H3 // 3
    dtype = x_proj.dtype
    h = xp.empty((T, B, H), dtype=dtype)
    gates = xp.empty((T, B, 4 * H), dtype=dtype)
    s = xp.empty((B, 3 * H), dtype=dtype)
    step = bind(gru_ra_step_kernel(mask is not None), *column_grid(B * H), x_proj, s, b_n, h0, or_stand_in(mask, h0),
                h, gates)
    for t in range(T):
        xp.matmul(_h_prev(h0, h, t), U, out=s)
        step(t)
    return h, gates


@register_kernel("gru_reset_after_backward", "cuda")
def gru_reset_after_backward(U, h0, mask, h, gates, grad_y, grad_h_last):
    """`minirec.kernels.gru.gru_reset_after_backward` on the GPU: returns (grad_x_proj, grad_U,
    grad_b_n, grad_h0)."""
    if not fast_path(U, h0, h, grad_y):
        return _ref_gru.gru_reset_after_backward(U, h0, mask, h, gates, grad_y, grad_h_last)
    xp = backend.get_xp(U, h0, h, grad_y)
    h0, mask, h, gates, grad_y = prepare(xp, h0, mask, h, gates, grad_y)
    T, B, H = h.shape
    dtype = h.dtype
    U_T = xp.ascontiguousarray(U.T)
    grad_x_proj = xp.empty((T, B, 3 * H), dtype=dtype)
    grad_rec = xp.empty((T, B, 3 * H), dtype=dtype)
    through, keep = _start_of_backward(xp, grad_h_last, B, H, dtype)
    step = bind(gru_ra_back_kernel(mask is not None), *column_grid(B * H), h0, h, gates, or_stand_in(mask, h0),
                grad_y, through, keep, grad_x_proj, grad_rec)
    for t in range(T - 1, -1, -1):
        step(t)
        xp.matmul(grad_rec[t], U_T, out=through)
    flat = grad_rec.reshape(T * B, 3 * H)
    h_prev_all = xp.concatenate([h0[None], h[:-1]], axis=0)
    grad_U = h_prev_all.reshape(T * B, H).T @ flat
    return grad_x_proj, grad_U, flat[:, 2 * H:].sum(axis=0), through + keep


# ---- MGU ----------------------------------------------------------------------------------------
@cuda.jit(cache=True)
def _mgu_gate_kernel(x_proj, s_f, h0, h, gates, fh, t):
    B = h0.shape[0]
    H = h0.shape[1]
    active, b, j = column_of(B, H)
    if not active:
        return
    one = h0.dtype.type(1.0)
    f = sigmoid(x_proj[t, b, j] + s_f[b, j], one)
    gates[t, b, j] = f
    fh[b, j] = f * _prev(h0, h, t, b, j)


@functools.cache
def mgu_state_kernel(has_mask):
    @cuda.jit(cache=True)
    def _mgu_state_kernel(x_proj, s_h, h0, h, gates, mask, t):
        B = h0.shape[0]
        H = h0.shape[1]
        active, b, j = column_of(B, H)
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

    return _mgu_state_kernel


@functools.cache
def mgu_back_a_kernel(has_mask):
    @cuda.jit(cache=True)
    def _mgu_back_a_kernel(h, gates, mask, grad_y, through, acc, delta, grad_x_proj, t):
        B = h.shape[1]
        H = h.shape[2]
        active, b, j = column_of(B, H)
        if not active:
            return
        one = h.dtype.type(1.0)
        dl = through[b, j] + acc[b, j]
        m = mask[t, b] if has_mask else one
        dl = dl + m * grad_y[t, b, j]
        dh = m * dl
        f = gates[t, b, j]
        h_tilde = gates[t, b, H + j]
        grad_x_proj[t, b, H + j] = dh * f * (one - h_tilde * h_tilde)
        delta[b, j] = dl

    return _mgu_back_a_kernel


@functools.cache
def mgu_back_b_kernel(has_mask):
    @cuda.jit(cache=True)
    def _mgu_back_b_kernel(h0, h, gates, mask, d_fh, acc, delta, grad_x_proj, t):
        B = h0.shape[0]
        H = h0.shape[1]
        active, b, j = column_of(B, H)
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

    return _mgu_back_b_kernel


@register_kernel("mgu_forward", "cuda")
def mgu_forward(x_proj, U, h0, mask):
    """`minirec.kernels.mgu.mgu_forward` on the GPU: returns (h, gates)."""
    if not fast_path(x_proj, U, h0):
        return _ref_mgu.mgu_forward(x_proj, U, h0, mask)
    return _two_product_forward(x_proj, U, h0, mask, h0.shape[1], _mgu_gate_kernel, mgu_state_kernel)


@register_kernel("mgu_backward", "cuda")
def mgu_backward(U, h0, mask, h, gates, grad_y, grad_h_last):
    """`minirec.kernels.mgu.mgu_backward` on the GPU: returns (grad_x_proj, grad_U, grad_h0)."""
    if not fast_path(U, h0, h, grad_y):
        return _ref_mgu.mgu_backward(U, h0, mask, h, gates, grad_y, grad_h_last)
    H = h0.shape[1]
    return _two_product_backward(U, h0, mask, h, gates, grad_y, grad_h_last, H, slice(0, H),
                                 mgu_back_a_kernel, mgu_back_b_kernel)


# ---- SGU: scalar gates per sequence -------------------------------------------------------------
@functools.cache
def sgu_step_kernel(has_mask):
    @cuda.jit(cache=True)
    def _sgu_step_kernel(x_proj, s, h0, h, gates, mask, t):
        """z, r (scalars per sequence: every thread of a row computes them), h̃ and h_t of step t."""
        B = h0.shape[0]
        H = h0.shape[1]
        active, b, j = column_of(B, H)
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

    return _sgu_step_kernel


@functools.cache
def sgu_back_kernel(has_mask):
    @cuda.jit(cache=True)
    def _sgu_back_kernel(h0, h, gates, s_h, mask, grad_y, through, keep, grad_x_proj, grad_s, t):
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
            dl = through[b, j] + keep[b, j]
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

    return _sgu_back_kernel


@register_kernel("sgu_forward", "cuda")
def sgu_forward(x_proj, U, h0, mask):
    """`minirec.kernels.sgu.sgu_forward` on the GPU: returns (h, gates)."""
    if not fast_path(x_proj, U, h0):
        return _ref_sgu.sgu_forward(x_proj, U, h0, mask)
    xp = backend.get_xp(x_proj, U, h0)
    x_proj, h0, mask = prepare(xp, x_proj, h0, mask)
    U = xp.ascontiguousarray(U)
    T, B, H2 = x_proj.shape
    H = H2 - 2
    dtype = x_proj.dtype
    h = xp.empty((T, B, H), dtype=dtype)
    gates = xp.empty((T, B, H + 2), dtype=dtype)
    s = xp.empty((B, H + 2), dtype=dtype)
    step = bind(sgu_step_kernel(mask is not None), *column_grid(B * H), x_proj, s, h0, h, gates, or_stand_in(mask, h0))
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
    if not fast_path(U, h0, h, grad_y):
        return _ref_sgu.sgu_backward(U, h0, mask, h, gates, grad_y, grad_h_last)
    xp = backend.get_xp(U, h0, h, grad_y)
    h0, mask, h, gates, grad_y = prepare(xp, h0, mask, h, gates, grad_y)
    T, B, H = h.shape
    dtype = h.dtype
    U_T = xp.ascontiguousarray(U.T)
    h_prev_all = xp.concatenate([h0[None], h[:-1]], axis=0)
    s_h = (h_prev_all.reshape(T * B, H) @ U[:, 2:]).reshape(T, B, H)  # s_t[h̃] for every t at once
    grad_x_proj = xp.empty((T, B, H + 2), dtype=dtype)
    grad_s = xp.empty((T, B, H + 2), dtype=dtype)
    through, keep = _start_of_backward(xp, grad_h_last, B, H, dtype)
    step = bind(sgu_back_kernel(mask is not None), B, _row_threads(H), h0, h, gates, s_h, or_stand_in(mask, h0),
                grad_y, through, keep, grad_x_proj, grad_s)
    for t in range(T - 1, -1, -1):
        step(t)
        xp.matmul(grad_s[t], U_T, out=through)
    grad_U = h_prev_all.reshape(T * B, H).T @ grad_s.reshape(T * B, H + 2)
    return grad_x_proj, grad_U, through + keep


# ---- ATR ----------------------------------------------------------------------------------------
@functools.cache
def atr_step_kernel(has_mask):
    @cuda.jit(cache=True)
    def _atr_step_kernel(p, s, b_q, h0, mask, h, i_out, f_out, t):
        B = h0.shape[0]
        H = h0.shape[1]
        active, b, j = column_of(B, H)
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

    return _atr_step_kernel


@functools.cache
def atr_back_kernel(has_mask):
    @cuda.jit(cache=True)
    def _atr_back_kernel(p, h0, h, i_in, f_in, mask, grad_y, through, keep, grad_p, grad_q, t):
        B = h0.shape[0]
        H = h0.shape[1]
        active, b, j = column_of(B, H)
        if not active:
            return
        one = h0.dtype.type(1.0)
        d = through[b, j] + keep[b, j]
        m = mask[t, b] if has_mask else one
        e = grad_y[t, b, j] * m + d * m
        i = i_in[t, b, j]
        f = f_in[t, b, j]
        grad_a_i = e * p[t, b, j] * (i * (one - i))
        grad_a_f = e * _prev(h0, h, t, b, j) * (f * (one - f))
        grad_p[t, b, j] = e * i + grad_a_i + grad_a_f
        grad_q[t, b, j] = grad_a_i - grad_a_f
        keep[b, j] = e * f + d * (one - m)

    return _atr_back_kernel


@register_kernel("atr_forward", "cuda")
def atr_forward(p, U, b_q, h0, mask):
    """`minirec.kernels.atr.atr_forward` on the GPU: returns (h, i, f)."""
    if not fast_path(p, U, h0):
        return _ref_atr.atr_forward(p, U, b_q, h0, mask)
    xp = backend.get_xp(p, U, b_q, h0)
    p, b_q, h0, mask = prepare(xp, p, b_q, h0, mask)
    U = xp.ascontiguousarray(U)
    T, B, H = p.shape
    h, i, f = (xp.empty((T, B, H), dtype=p.dtype) for _ in range(3))
    s = xp.empty((B, H), dtype=p.dtype)
    step = bind(atr_step_kernel(mask is not None), *column_grid(B * H), p, s, b_q, h0, or_stand_in(mask, h0), h, i, f)
    for t in range(T):
        xp.matmul(_h_prev(h0, h, t), U, out=s)
        step(t)
    return h, i, f


@register_kernel("atr_backward", "cuda")
def atr_backward(p, U, h0, h, i, f, mask, grad_y, grad_h_last):
    """`minirec.kernels.atr.atr_backward` on the GPU: returns (grad_p, grad_U, grad_b_q, grad_h0)."""
    if not fast_path(p, U, h0, h, grad_y):
        return _ref_atr.atr_backward(p, U, h0, h, i, f, mask, grad_y, grad_h_last)
    xp = backend.get_xp(p, U, h0, h, grad_y)
    p, h0, h, i, f, mask, grad_y = prepare(xp, p, h0, h, i, f, mask, grad_y)
    T, B, H = p.shape
    U_T = xp.ascontiguousarray(U.T)
    grad_p = xp.empty((T, B, H), dtype=p.dtype)
    grad_q = xp.empty((T, B, H), dtype=p.dtype)
    through, keep = _start_of_backward(xp, grad_h_last, B, H, p.dtype)
    step = bind(atr_back_kernel(mask is not None), *column_grid(B * H), p, h0, h, i, f, or_stand_in(mask, h0), grad_y,
                through, keep, grad_p, grad_q)
    for t in range(T - 1, -1, -1):
        step(t)
        xp.matmul(grad_q[t], U_T, out=through)
    h_prev_all = xp.concatenate([h0[None], h[:-1]], axis=0)
    grad_U = h_prev_all.reshape(-1, H).T @ grad_q.reshape(-1, H)
    grad_b_q = grad_q.reshape(-1, H).sum(axis=0)
    return grad_p, grad_U, grad_b_q, through + keep
