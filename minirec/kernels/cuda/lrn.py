"""LRN and its gLRN/eLRN/oLRN variants on the GPU: one thread per column (the reference loop:
minirec/kernels/lrn.py; the CPU kernel: minirec/kernels/cpu/lrn.py)."""

from __future__ import annotations

import functools
import math

from numba import cuda

from minirec import backend
from minirec.kernels import lrn as _ref
from minirec.kernels import register_kernel
from minirec.kernels.cuda._common import (
    clamp_step,
    column_grid,
    column_of,
    fast_path,
    fast_sigmoid_for,
    gate,
    launch,
    or_stand_in,
    prepare,
)


# =================================================================================================
# The LRN family (Zhang & Sennrich 2019): f = σ(q − h) or σ(−h), i = σ(k + h) or 1 − f,
# c = i v + f h, h = g(c) or o c with o = σ(w − c) (kernels/lrn.py). Blocks of z located by
# column offsets (−1: absent): lrn [q|k|v], glrn [q|v], elrn [v], olrn [q|k|v|w].
# =================================================================================================
@cuda.jit(device=True)
def _lrn_load(z, mask, has_mask, t, b, j, q_off, k_off, v_off, w_off, has_q, has_k, has_w, one):
    zero = one - one
    m = mask[t, b] if has_mask else one
    q = z[t, b, q_off + j] if has_q else zero
    k = z[t, b, k_off + j] if has_k else zero
    w = z[t, b, w_off + j] if has_w else zero
    return q, k, z[t, b, v_off + j], w, m


@cuda.jit(device=True)
def _lrn_emit(L, t, b, j, h_prev, has_q, has_k, has_w, tanh_act, one, fast, out):
    q, k, v, w, m = L
    f = gate(q - h_prev, one, fast) if has_q else gate(-h_prev, one, fast)
    i = gate(k + h_prev, one, fast) if has_k else one - f
    c = i * v + f * h_prev
    if has_w:
        o = gate(w - c, one, fast)
        h_new = o * c
        out[3, t, b, j] = o
        out[4, t, b, j] = c
    elif tanh_act:
        h_new = math.tanh(c)
    else:
        h_new = c
    if m == 0:
        h_new = h_prev
    out[0, t, b, j] = h_new
    out[1, t, b, j] = f
    if has_k:
        out[2, t, b, j] = i
    return h_new


# Each kernel is built per variant (which blocks of z exist, the activation, a mask or not), the
# flags read as closure constants: numba compiles the other variants' branches out, so registers
# are sized for the variant that runs (as the scan kernels in scan.py). The block offsets, which
# depend on H, stay arguments.
@functools.cache
def forward_kernel(has_q, has_k, has_w, tanh_act, has_mask, fast=False):
    """The LRN-family forward for one variant, with the exact or the fast sigmoid (closure
    constants: the comment above)."""

    @cuda.jit(cache=True)
    def _lrn_forward_kernel(z, h0, mask, q_off, k_off, v_off, w_off, out):
        """``out`` holds h, f, then i (with k), o and c (with w): one array to convert."""
        B = h0.shape[0]
        H = h0.shape[1]
        T = z.shape[0]
        active, b, j = column_of(B, H)
        if not active:
            return
        one = h0.dtype.type(1.0)
        state = h0[b, j]
        last = T - 1
        L0 = _lrn_load(z, mask, has_mask, 0, b, j, q_off, k_off, v_off, w_off, has_q, has_k, has_w, one)
        L1 = _lrn_load(z, mask, has_mask, clamp_step(1, last), b, j, q_off, k_off, v_off, w_off,
                       has_q, has_k, has_w, one)
        L2 = _lrn_load(z, mask, has_mask, clamp_step(2, last), b, j, q_off, k_off, v_off, w_off,
                       has_q, has_k, has_w, one)
        L3 = _lrn_load(z, mask, has_mask, clamp_step(3, last), b, j, q_off, k_off, v_off, w_off,
                       has_q, has_k, has_w, one)
        t = 0
        while t + 4 <= T:  # software-pipelined: the comment above `sru.forward_kernel`
            N0 = _lrn_load(z, mask, has_mask, clamp_step(t + 4, last), b, j, q_off, k_off, v_off, w_off,
                           has_q, has_k, has_w, one)
            N1 = _lrn_load(z, mask, has_mask, clamp_step(t + 5, last), b, j, q_off, k_off, v_off, w_off,
                           has_q, has_k, has_w, one)
            N2 = _lrn_load(z, mask, has_mask, clamp_step(t + 6, last), b, j, q_off, k_off, v_off, w_off,
                           has_q, has_k, has_w, one)
            N3 = _lrn_load(z, mask, has_mask, clamp_step(t + 7, last), b, j, q_off, k_off, v_off, w_off,
                           has_q, has_k, has_w, one)
            state = _lrn_emit(L0, t, b, j, state, has_q, has_k, has_w, tanh_act, one, fast, out)
            state = _lrn_emit(L1, t + 1, b, j, state, has_q, has_k, has_w, tanh_act, one, fast, out)
            state = _lrn_emit(L2, t + 2, b, j, state, has_q, has_k, has_w, tanh_act, one, fast, out)
            state = _lrn_emit(L3, t + 3, b, j, state, has_q, has_k, has_w, tanh_act, one, fast, out)
            L0, L1, L2, L3 = N0, N1, N2, N3
            t += 4
        if t < T:
            state = _lrn_emit(L0, t, b, j, state, has_q, has_k, has_w, tanh_act, one, fast, out)
        if t + 1 < T:
            state = _lrn_emit(L1, t + 1, b, j, state, has_q, has_k, has_w, tanh_act, one, fast, out)
        if t + 2 < T:
            state = _lrn_emit(L2, t + 2, b, j, state, has_q, has_k, has_w, tanh_act, one, fast, out)

    return _lrn_forward_kernel


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
def _lrn_bemit(L, t, b, j, d, q_off, k_off, v_off, w_off, has_q, has_k, has_w, tanh_act, one, grad_z):
    gy, m, h_t, h_prev, f, i, o, c, v = L
    e = gy * m + d * m  # the gradient reaching ĥ_t (0 at a padded step)
    if has_w:
        grad_w = e * c * (o * (one - o))
        grad_z[t, b, w_off + j] = grad_w
        grad_c = e * o - grad_w
    elif tanh_act:
        grad_c = e * (one - h_t * h_t)
    else:
        grad_c = e
    if not has_k:
        i = one - f
    grad_z[t, b, v_off + j] = grad_c * i
    grad_i = grad_c * v
    grad_f = grad_c * h_prev
    d_prev = grad_c * f
    if has_k:
        grad_k = grad_i * (i * (one - i))
        grad_z[t, b, k_off + j] = grad_k
        d_prev = d_prev + grad_k
        grad_a_f = grad_f * (f * (one - f))
    else:
        grad_a_f = (grad_f - grad_i) * (f * (one - f))
    if has_q:
        grad_z[t, b, q_off + j] = grad_a_f
    d_prev = d_prev - grad_a_f
    if m == 0:
        return d  # a padded step passes d through unchanged
    return d_prev


@functools.cache
def backward_kernel(has_q, has_k, has_w, tanh_act, has_mask):
    """The LRN-family backward for one variant (closure constants: the comment above `forward_kernel`)."""

    @cuda.jit(cache=True)
    def _lrn_backward_kernel(z, h0, h, i_in, f_in, o_in, c_in, mask, grad_y, grad_h_last, q_off, k_off, v_off, w_off,
                             grad_z, grad_h0):
        B = h0.shape[0]
        H = h0.shape[1]
        T = z.shape[0]
        active, b, j = column_of(B, H)
        if not active:
            return
        one = h0.dtype.type(1.0)
        d = grad_h_last[b, j]
        last = T - 1
        t = last
        L0 = _lrn_bload(z, h0, h, i_in, f_in, o_in, c_in, mask, has_mask, grad_y, t,
                        b, j, v_off, has_k, has_w, one)
        L1 = _lrn_bload(z, h0, h, i_in, f_in, o_in, c_in, mask, has_mask, grad_y, clamp_step(t - 1, last),
                        b, j, v_off, has_k, has_w, one)
        L2 = _lrn_bload(z, h0, h, i_in, f_in, o_in, c_in, mask, has_mask, grad_y, clamp_step(t - 2, last),
                        b, j, v_off, has_k, has_w, one)
        L3 = _lrn_bload(z, h0, h, i_in, f_in, o_in, c_in, mask, has_mask, grad_y, clamp_step(t - 3, last),
                        b, j, v_off, has_k, has_w, one)
        while t - 3 >= 0:
            N0 = _lrn_bload(z, h0, h, i_in, f_in, o_in, c_in, mask, has_mask, grad_y, clamp_step(t - 4, last),
                            b, j, v_off, has_k, has_w, one)
            N1 = _lrn_bload(z, h0, h, i_in, f_in, o_in, c_in, mask, has_mask, grad_y, clamp_step(t - 5, last),
                            b, j, v_off, has_k, has_w, one)
            N2 = _lrn_bload(z, h0, h, i_in, f_in, o_in, c_in, mask, has_mask, grad_y, clamp_step(t - 6, last),
                            b, j, v_off, has_k, has_w, one)
            N3 = _lrn_bload(z, h0, h, i_in, f_in, o_in, c_in, mask, has_mask, grad_y, clamp_step(t - 7, last),
                            b, j, v_off, has_k, has_w, one)
            d = _lrn_bemit(L0, t, b, j, d, q_off, k_off, v_off, w_off, has_q, has_k, has_w, tanh_act, one, grad_z)
            d = _lrn_bemit(L1, t - 1, b, j, d, q_off, k_off, v_off, w_off, has_q, has_k, has_w, tanh_act, one, grad_z)
            d = _lrn_bemit(L2, t - 2, b, j, d, q_off, k_off, v_off, w_off, has_q, has_k, has_w, tanh_act, one, grad_z)
            d = _lrn_bemit(L3, t - 3, b, j, d, q_off, k_off, v_off, w_off, has_q, has_k, has_w, tanh_act, one, grad_z)
            L0, L1, L2, L3 = N0, N1, N2, N3
            t -= 4
        if t >= 0:
            d = _lrn_bemit(L0, t, b, j, d, q_off, k_off, v_off, w_off, has_q, has_k, has_w, tanh_act, one, grad_z)
        if t - 1 >= 0:
            d = _lrn_bemit(L1, t - 1, b, j, d, q_off, k_off, v_off, w_off, has_q, has_k, has_w, tanh_act, one, grad_z)
        if t - 2 >= 0:
            d = _lrn_bemit(L2, t - 2, b, j, d, q_off, k_off, v_off, w_off, has_q, has_k, has_w, tanh_act, one, grad_z)
        grad_h0[b, j] = d

    return _lrn_backward_kernel


def _lrn_offsets(variant, H):
    names = _ref.BLOCKS[variant]
    return tuple(names.index(name) * H if name in names else -1 for name in ("q", "k", "v", "w"))


def _lrn_forward(variant, z, h0, mask, activation):
    _ref._check(z, h0, variant, activation)
    xp = backend.get_xp(z, h0)
    z, h0, mask = prepare(xp, z, h0, mask)
    T, (B, H) = z.shape[0], h0.shape
    dtype = z.dtype
    q_off, k_off, v_off, w_off = _lrn_offsets(variant, H)
    out = xp.empty((2 + (k_off >= 0) + 2 * (w_off >= 0), T, B, H), dtype=dtype)  # h, f[, i[, o, c]]
    grid, block = column_grid(B * H)
    kernel = forward_kernel(q_off >= 0, k_off >= 0, w_off >= 0, activation == "tanh", mask is not None,
                            fast_sigmoid_for(dtype))
    launch(kernel, grid, block, z, h0, or_stand_in(mask, h0), q_off, k_off, v_off, w_off, out)
    h, f, i, o, c = (*out, None, None, None)[:5]
    return h, i, f, o, c


def _lrn_backward(variant, z, h0, h, i, f, o, c, mask, grad_y, grad_h_last, activation):
    xp = backend.get_xp(z, h0, h, grad_y)
    z, h0, h, i, f, o, c, mask, grad_y, grad_h_last = prepare(xp, z, h0, h, i, f, o, c, mask, grad_y, grad_h_last)
    B, H = h0.shape
    q_off, k_off, v_off, w_off = _lrn_offsets(variant, H)
    grad_z = xp.empty(z.shape, dtype=z.dtype)
    grad_h0 = xp.empty((B, H), dtype=z.dtype)
    grid, block = column_grid(B * H)
    kernel = backward_kernel(q_off >= 0, k_off >= 0, w_off >= 0, activation == "tanh", mask is not None)
    launch(kernel, grid, block, z, h0, h, or_stand_in(i, f), f, or_stand_in(o, f), or_stand_in(c, f),
           or_stand_in(mask, h0), grad_y, grad_h_last, q_off, k_off, v_off, w_off, grad_z, grad_h0)
    return grad_z, grad_h0


@register_kernel("lrn_forward", "cuda")
def lrn_forward(z, h0, mask, activation="tanh"):
    if not fast_path(z, h0):
        return _ref.lrn_forward(z, h0, mask, activation)
    h, i, f, _, _ = _lrn_forward("lrn", z, h0, mask, activation)
    return h, i, f


@register_kernel("lrn_backward", "cuda")
def lrn_backward(z, h0, h, i, f, mask, grad_y, grad_h_last, activation="tanh"):
    if not fast_path(z, h0, grad_y):
        return _ref.lrn_backward(z, h0, h, i, f, mask, grad_y, grad_h_last, activation)
    return _lrn_backward("lrn", z, h0, h, i, f, None, None, mask, grad_y, grad_h_last, activation)


@register_kernel("glrn_forward", "cuda")
def glrn_forward(z, h0, mask, activation="tanh"):
    if not fast_path(z, h0):
        return _ref.glrn_forward(z, h0, mask, activation)
    h, _, f, _, _ = _lrn_forward("glrn", z, h0, mask, activation)
    return h, f


@register_kernel("glrn_backward", "cuda")
def glrn_backward(z, h0, h, f, mask, grad_y, grad_h_last, activation="tanh"):
    if not fast_path(z, h0, grad_y):
        return _ref.glrn_backward(z, h0, h, f, mask, grad_y, grad_h_last, activation)
    return _lrn_backward("glrn", z, h0, h, None, f, None, None, mask, grad_y, grad_h_last, activation)


@register_kernel("elrn_forward", "cuda")
def elrn_forward(z, h0, mask, activation="tanh"):
    if not fast_path(z, h0):
        return _ref.elrn_forward(z, h0, mask, activation)
    h, _, f, _, _ = _lrn_forward("elrn", z, h0, mask, activation)
    return h, f


@register_kernel("elrn_backward", "cuda")
def elrn_backward(z, h0, h, f, mask, grad_y, grad_h_last, activation="tanh"):
    if not fast_path(z, h0, grad_y):
        return _ref.elrn_backward(z, h0, h, f, mask, grad_y, grad_h_last, activation)
    return _lrn_backward("elrn", z, h0, h, None, f, None, None, mask, grad_y, grad_h_last, activation)


@register_kernel("olrn_forward", "cuda")
def olrn_forward(z, h0, mask):
    if not fast_path(z, h0):
        return _ref.olrn_forward(z, h0, mask)
    return _lrn_forward("olrn", z, h0, mask, None)


@register_kernel("olrn_backward", "cuda")
def olrn_backward(z, h0, h, i, f, o, c, mask, grad_y, grad_h_last):
    if not fast_path(z, h0, grad_y):
        return _ref.olrn_backward(z, h0, h, i, f, o, c, mask, grad_y, grad_h_last)
    return _lrn_backward("olrn", z, h0, h, i, f, o, c, mask, grad_y, grad_h_last, None)
