"""QRNN fo-pooling (Bradbury et al. 2017) on the GPU: one thread per column (the reference loop:
minirec/kernels/qrnn.py; the CPU kernel: minirec/kernels/cpu/qrnn.py)."""

from __future__ import annotations

import functools
import math

from numba import cuda

from minirec import backend
from minirec.kernels import qrnn as _ref
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
# QRNN fo-pooling (Bradbury et al. 2017): c_t = f_t c_{t−1} + (1 − f_t) z_t, h_t = o_t c_t
# (+ (1 − o_t) s_t with the highway) (kernels/qrnn.py)
# =================================================================================================
@cuda.jit(device=True)
def _qrnn_load(U, x_skip, has_skip, mask, has_mask, t, b, j, H, one):
    m = mask[t, b] if has_mask else one
    s = x_skip[t, b, j] if has_skip else one - one
    return U[t, b, j], U[t, b, H + j], U[t, b, 2 * H + j], s, m


@cuda.jit(device=True)
def _qrnn_emit(L, t, b, j, c_prev, bz, bf, bo, has_skip, one, fast, out):
    u_z, u_f, u_o, s, m = L
    z_t = math.tanh(u_z + bz)
    f_t = gate(u_f + bf, one, fast)
    o_t = gate(u_o + bo, one, fast)
    c_t = f_t * c_prev + (one - f_t) * z_t
    if m == 0:
        c_t = c_prev
    h_t = o_t * c_t
    if has_skip:
        h_t = h_t + (one - o_t) * s
    out[0, t, b, j] = h_t * m
    out[1, t, b, j] = c_t
    out[2, t, b, j] = z_t
    out[3, t, b, j] = f_t
    out[4, t, b, j] = o_t
    return c_t


@functools.cache
def forward_kernel(has_skip, has_mask, fast=False):
    """fo-pooling with or without highway and mask, with the exact or the fast sigmoid, compiled as
    constants (no unused branch)."""

    @cuda.jit(cache=True)
    def _qrnn_forward_kernel(U, bias, c0, x_skip, mask, out):
        """``out`` (5, T, B, H) holds h, c, z, f, o: one array to convert instead of five."""
        B = c0.shape[0]
        H = c0.shape[1]
        T = U.shape[0]
        active, b, j = column_of(B, H)
        if not active:
            return
        one = c0.dtype.type(1.0)
        bz = bias[j]
        bf = bias[H + j]
        bo = bias[2 * H + j]
        state = c0[b, j]
        last = T - 1
        L0 = _qrnn_load(U, x_skip, has_skip, mask, has_mask, 0, b, j, H, one)
        L1 = _qrnn_load(U, x_skip, has_skip, mask, has_mask, clamp_step(1, last), b, j, H, one)
        L2 = _qrnn_load(U, x_skip, has_skip, mask, has_mask, clamp_step(2, last), b, j, H, one)
        L3 = _qrnn_load(U, x_skip, has_skip, mask, has_mask, clamp_step(3, last), b, j, H, one)
        t = 0
        while t + 4 <= T:  # software-pipelined: the comment above `sru.forward_kernel`
            N0 = _qrnn_load(U, x_skip, has_skip, mask, has_mask, clamp_step(t + 4, last), b, j, H, one)
            N1 = _qrnn_load(U, x_skip, has_skip, mask, has_mask, clamp_step(t + 5, last), b, j, H, one)
            N2 = _qrnn_load(U, x_skip, has_skip, mask, has_mask, clamp_step(t + 6, last), b, j, H, one)
            N3 = _qrnn_load(U, x_skip, has_skip, mask, has_mask, clamp_step(t + 7, last), b, j, H, one)
            state = _qrnn_emit(L0, t, b, j, state, bz, bf, bo, has_skip, one, fast, out)
            state = _qrnn_emit(L1, t + 1, b, j, state, bz, bf, bo, has_skip, one, fast, out)
            state = _qrnn_emit(L2, t + 2, b, j, state, bz, bf, bo, has_skip, one, fast, out)
            state = _qrnn_emit(L3, t + 3, b, j, state, bz, bf, bo, has_skip, one, fast, out)
            L0, L1, L2, L3 = N0, N1, N2, N3
            t += 4
        if t < T:
            state = _qrnn_emit(L0, t, b, j, state, bz, bf, bo, has_skip, one, fast, out)
        if t + 1 < T:
            state = _qrnn_emit(L1, t + 1, b, j, state, bz, bf, bo, has_skip, one, fast, out)
        if t + 2 < T:
            state = _qrnn_emit(L2, t + 2, b, j, state, bz, bf, bo, has_skip, one, fast, out)

    return _qrnn_forward_kernel


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


@functools.cache
def backward_kernel(has_skip, has_mask):
    """The backward with or without highway and mask, compiled as constants."""

    @cuda.jit(cache=True)
    def _qrnn_backward_kernel(grad_h, grad_c_last, c0, x_skip, c, z, f, o, mask, grad_U3, grad_x_skip, partial,
                              grad_c0):
        B = c0.shape[0]
        H = c0.shape[1]
        T = c.shape[0]
        active, b, j = column_of(B, H)
        if not active:
            return
        one = c0.dtype.type(1.0)
        zero = one - one
        carry = grad_c_last[b, j]
        sums = (zero, zero, zero)
        last = T - 1
        t = last
        L0 = _qrnn_bload(grad_h, c0, x_skip, has_skip, c, z, f, o, mask, has_mask, t, b, j, one)
        L1 = _qrnn_bload(grad_h, c0, x_skip, has_skip, c, z, f, o, mask, has_mask, clamp_step(t - 1, last), b, j, one)
        L2 = _qrnn_bload(grad_h, c0, x_skip, has_skip, c, z, f, o, mask, has_mask, clamp_step(t - 2, last), b, j, one)
        L3 = _qrnn_bload(grad_h, c0, x_skip, has_skip, c, z, f, o, mask, has_mask, clamp_step(t - 3, last), b, j, one)
        while t - 3 >= 0:
            N0 = _qrnn_bload(grad_h, c0, x_skip, has_skip, c, z, f, o, mask, has_mask, clamp_step(t - 4, last),
                             b, j, one)
            N1 = _qrnn_bload(grad_h, c0, x_skip, has_skip, c, z, f, o, mask, has_mask, clamp_step(t - 5, last),
                             b, j, one)
            N2 = _qrnn_bload(grad_h, c0, x_skip, has_skip, c, z, f, o, mask, has_mask, clamp_step(t - 6, last),
                             b, j, one)
            N3 = _qrnn_bload(grad_h, c0, x_skip, has_skip, c, z, f, o, mask, has_mask, clamp_step(t - 7, last),
                             b, j, one)
            carry, sums = _qrnn_bemit(L0, t, b, j, H, carry, sums, has_skip, one, grad_U3, grad_x_skip)
            carry, sums = _qrnn_bemit(L1, t - 1, b, j, H, carry, sums, has_skip, one, grad_U3, grad_x_skip)
            carry, sums = _qrnn_bemit(L2, t - 2, b, j, H, carry, sums, has_skip, one, grad_U3, grad_x_skip)
            carry, sums = _qrnn_bemit(L3, t - 3, b, j, H, carry, sums, has_skip, one, grad_U3, grad_x_skip)
            L0, L1, L2, L3 = N0, N1, N2, N3
            t -= 4
        if t >= 0:
            carry, sums = _qrnn_bemit(L0, t, b, j, H, carry, sums, has_skip, one, grad_U3, grad_x_skip)
        if t - 1 >= 0:
            carry, sums = _qrnn_bemit(L1, t - 1, b, j, H, carry, sums, has_skip, one, grad_U3, grad_x_skip)
        if t - 2 >= 0:
            carry, sums = _qrnn_bemit(L2, t - 2, b, j, H, carry, sums, has_skip, one, grad_U3, grad_x_skip)
        grad_c0[b, j] = carry
        partial[b, j] = sums[0]
        partial[b, H + j] = sums[1]
        partial[b, 2 * H + j] = sums[2]

    return _qrnn_backward_kernel


@register_kernel("qrnn_forward", "cuda")
def qrnn_forward(U, b, c0, x_skip, mask):
    """`minirec.kernels.qrnn.qrnn_forward` on the GPU: returns (h, c, z, f, o)."""
    if not fast_path(U, c0, x_skip):
        return _ref.qrnn_forward(U, b, c0, x_skip, mask)
    xp = backend.get_xp(U, c0)
    U, b, c0, x_skip, mask = prepare(xp, U, b, c0, x_skip, mask)
    T, (B, H) = U.shape[0], c0.shape
    out = xp.empty((5, T, B, H), dtype=U.dtype)
    grid, block = column_grid(B * H)
    kernel = forward_kernel(x_skip is not None, mask is not None, fast_sigmoid_for(U.dtype))
    launch(kernel, grid, block, U, b, c0, or_stand_in(x_skip, U), or_stand_in(mask, c0), out)
    h, c, z, f, o = out
    return h, c, z, f, o


@register_kernel("qrnn_backward", "cuda")
def qrnn_backward(grad_h, grad_c_last, c0, x_skip, c, z, f, o, mask):
    """`minirec.kernels.qrnn.qrnn_backward` on the GPU: returns (grad_U3, grad_b, grad_x_skip or
    None, grad_c0)."""
    if not fast_path(c, c0, grad_h, x_skip):
        return _ref.qrnn_backward(grad_h, grad_c_last, c0, x_skip, c, z, f, o, mask)
    xp = backend.get_xp(c, c0, grad_h)
    grad_h, grad_c_last, c0, x_skip, c, z, f, o, mask = prepare(xp, grad_h, grad_c_last, c0, x_skip, c, z, f, o, mask)
    T, (B, H) = c.shape[0], c0.shape
    dtype = c.dtype
    grad_U3 = xp.empty((T, B, 3 * H), dtype=dtype)
    grad_x_skip = xp.empty((T, B, H), dtype=dtype) if x_skip is not None else None
    partial = xp.empty((B, 3 * H), dtype=dtype)
    grad_c0 = xp.empty((B, H), dtype=dtype)
    grid, block = column_grid(B * H)
    launch(backward_kernel(x_skip is not None, mask is not None), grid, block, grad_h, grad_c_last, c0,
           or_stand_in(x_skip, c), c, z, f, o, or_stand_in(mask, c0), grad_U3, or_stand_in(grad_x_skip, c), partial,
           grad_c0)
    return grad_U3, partial.sum(axis=0), grad_x_skip, grad_c0
