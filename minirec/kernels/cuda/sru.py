"""SRU (Lei et al. 2018) on the GPU: one thread per column, forward and backward one launch each
(the reference loop: minirec/kernels/sru.py; the CPU kernel: minirec/kernels/cpu/sru.py)."""

from __future__ import annotations

import functools

from numba import cuda

from minirec import backend
from minirec.kernels import register_kernel
from minirec.kernels import sru as _ref
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
# SRU (Lei et al. 2018): c_t = f_t c_{t−1} + (1 − f_t) x̃_t, f_t = σ(W_f x + v_f c_{t−1} + b_f),
# r_t = σ(W_r x + v_r c_{t−1} + b_r), h_t = r_t c_t d + (1 − r_t) α s_t (kernels/sru.py)
# =================================================================================================
@cuda.jit(device=True)
def _sru_load(U, x_skip, mask, has_mask, t, b, j, H, one):
    m = mask[t, b] if has_mask else one
    return U[t, b, j], U[t, b, H + j], U[t, b, 2 * H + j], x_skip[t, b, j], m


@cuda.jit(device=True)
def _sru_emit(L, t, b, j, c_prev, vf, vr, bf, br, d, alpha, one, fast, out):
    x_t, u_f, u_r, s, m = L
    f_t = gate(u_f + bf + vf * c_prev, one, fast)  # (1)
    c_t = f_t * c_prev + (one - f_t) * x_t  # (2)
    if m == 0:
        c_t = c_prev  # padded: carry the state
    r_t = gate(u_r + br + vr * c_prev, one, fast)  # (3)
    out[0, t, b, j] = (r_t * (c_t * d) + (one - r_t) * (alpha * s)) * m  # (4), 0 at padding: h
    out[1, t, b, j] = c_t
    out[2, t, b, j] = f_t
    out[3, t, b, j] = r_t
    return c_t


# The loops over time run in groups of four steps, software-pipelined: the next group's loads are
# issued before this group's arithmetic, which depends step to step on the state, so they are in
# flight while it computes instead of the thread stopping for them at each group (the compiler
# cannot move the loads above the stores of the outputs itself: it cannot prove they do not alias). Loads past the
# end reread the last step (`clamp_step`) and are dropped; the last < 4 steps use the loads at hand.
@functools.cache
def forward_kernel(has_mask, has_drop, fast=False):
    """The SRU forward with or without mask and dropout mask, with the exact or the fast sigmoid,
    compiled as constants (no unused branch)."""

    @cuda.jit(cache=True)
    def _sru_forward_kernel(U, x_skip, v_f, v_r, b_f, b_r, c0, mask, drop, alpha, out):
        """``out`` (4, T, B, H) holds h, c, f, r: one array to convert instead of four."""
        B = c0.shape[0]
        H = c0.shape[1]
        T = U.shape[0]
        active, b, j = column_of(B, H)
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
        last = T - 1
        L0 = _sru_load(U, x_skip, mask, has_mask, 0, b, j, H, one)
        L1 = _sru_load(U, x_skip, mask, has_mask, clamp_step(1, last), b, j, H, one)
        L2 = _sru_load(U, x_skip, mask, has_mask, clamp_step(2, last), b, j, H, one)
        L3 = _sru_load(U, x_skip, mask, has_mask, clamp_step(3, last), b, j, H, one)
        t = 0
        while t + 4 <= T:
            N0 = _sru_load(U, x_skip, mask, has_mask, clamp_step(t + 4, last), b, j, H, one)
            N1 = _sru_load(U, x_skip, mask, has_mask, clamp_step(t + 5, last), b, j, H, one)
            N2 = _sru_load(U, x_skip, mask, has_mask, clamp_step(t + 6, last), b, j, H, one)
            N3 = _sru_load(U, x_skip, mask, has_mask, clamp_step(t + 7, last), b, j, H, one)
            state = _sru_emit(L0, t, b, j, state, vf, vr, bf, br, d, al, one, fast, out)
            state = _sru_emit(L1, t + 1, b, j, state, vf, vr, bf, br, d, al, one, fast, out)
            state = _sru_emit(L2, t + 2, b, j, state, vf, vr, bf, br, d, al, one, fast, out)
            state = _sru_emit(L3, t + 3, b, j, state, vf, vr, bf, br, d, al, one, fast, out)
            L0, L1, L2, L3 = N0, N1, N2, N3
            t += 4
        if t < T:
            state = _sru_emit(L0, t, b, j, state, vf, vr, bf, br, d, al, one, fast, out)
        if t + 1 < T:
            state = _sru_emit(L1, t + 1, b, j, state, vf, vr, bf, br, d, al, one, fast, out)
        if t + 2 < T:
            state = _sru_emit(L2, t + 2, b, j, state, vf, vr, bf, br, d, al, one, fast, out)

    return _sru_forward_kernel


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


@functools.cache
def backward_kernel(has_mask, has_drop):
    """The SRU backward with or without mask and dropout mask, compiled as constants; software-
    pipelined backwards in time as the forward (the comment above `forward_kernel`)."""

    @cuda.jit(cache=True)
    def _sru_backward_kernel(grad_h, grad_c_last, U, x_skip, v_f, v_r, c0, c, f, r, mask, drop, alpha, grad_U3,
                             grad_x_skip, partial, grad_c0):
        B = c0.shape[0]
        H = c0.shape[1]
        T = U.shape[0]
        active, b, j = column_of(B, H)
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
        last = T - 1
        t = last
        L0 = _sru_bload(grad_h, U, x_skip, c0, c, f, r, mask, has_mask, t, b, j, one)
        L1 = _sru_bload(grad_h, U, x_skip, c0, c, f, r, mask, has_mask, clamp_step(t - 1, last), b, j, one)
        L2 = _sru_bload(grad_h, U, x_skip, c0, c, f, r, mask, has_mask, clamp_step(t - 2, last), b, j, one)
        L3 = _sru_bload(grad_h, U, x_skip, c0, c, f, r, mask, has_mask, clamp_step(t - 3, last), b, j, one)
        while t - 3 >= 0:
            N0 = _sru_bload(grad_h, U, x_skip, c0, c, f, r, mask, has_mask, clamp_step(t - 4, last), b, j, one)
            N1 = _sru_bload(grad_h, U, x_skip, c0, c, f, r, mask, has_mask, clamp_step(t - 5, last), b, j, one)
            N2 = _sru_bload(grad_h, U, x_skip, c0, c, f, r, mask, has_mask, clamp_step(t - 6, last), b, j, one)
            N3 = _sru_bload(grad_h, U, x_skip, c0, c, f, r, mask, has_mask, clamp_step(t - 7, last), b, j, one)
            carry, sums = _sru_bemit(L0, t, b, j, H, carry, sums, vf, vr, d, al, one, grad_U3, grad_x_skip)
            carry, sums = _sru_bemit(L1, t - 1, b, j, H, carry, sums, vf, vr, d, al, one, grad_U3, grad_x_skip)
            carry, sums = _sru_bemit(L2, t - 2, b, j, H, carry, sums, vf, vr, d, al, one, grad_U3, grad_x_skip)
            carry, sums = _sru_bemit(L3, t - 3, b, j, H, carry, sums, vf, vr, d, al, one, grad_U3, grad_x_skip)
            L0, L1, L2, L3 = N0, N1, N2, N3
            t -= 4
        if t >= 0:
            carry, sums = _sru_bemit(L0, t, b, j, H, carry, sums, vf, vr, d, al, one, grad_U3, grad_x_skip)
        if t - 1 >= 0:
            carry, sums = _sru_bemit(L1, t - 1, b, j, H, carry, sums, vf, vr, d, al, one, grad_U3, grad_x_skip)
        if t - 2 >= 0:
            carry, sums = _sru_bemit(L2, t - 2, b, j, H, carry, sums, vf, vr, d, al, one, grad_U3, grad_x_skip)
        grad_c0[b, j] = carry
        partial[b, j] = sums[0]
        partial[b, H + j] = sums[1]
        partial[b, 2 * H + j] = sums[2]
        partial[b, 3 * H + j] = sums[3]

    return _sru_backward_kernel


@register_kernel("sru_forward", "cuda")
def sru_forward(U, x_skip, v_f, v_r, b_f, b_r, c0, mask, drop, alpha):
    """`minirec.kernels.sru.sru_forward` on the GPU: returns (h, c, f, r)."""
    if not fast_path(U, x_skip, c0):
        return _ref.sru_forward(U, x_skip, v_f, v_r, b_f, b_r, c0, mask, drop, alpha)
    xp = backend.get_xp(U, c0)
    U, x_skip, v_f, v_r, b_f, b_r, c0, mask, drop = prepare(xp, U, x_skip, v_f, v_r, b_f, b_r, c0, mask, drop)
    T, (B, H) = U.shape[0], c0.shape
    out = xp.empty((4, T, B, H), dtype=U.dtype)
    grid, block = column_grid(B * H)
    kernel = forward_kernel(mask is not None, drop is not None, fast_sigmoid_for(U.dtype))
    launch(kernel, grid, block, U, x_skip, v_f, v_r, b_f, b_r, c0,
           or_stand_in(mask, c0), or_stand_in(drop, c0), float(alpha), out)
    h, c, f, r = out
    return h, c, f, r


@register_kernel("sru_backward", "cuda")
def sru_backward(grad_h, grad_c_last, U, x_skip, v_f, v_r, c0, c, f, r, mask, drop, alpha):
    """`minirec.kernels.sru.sru_backward` on the GPU: returns (grad_U3, grad_x_skip, grad_v_f,
    grad_v_r, grad_b_f, grad_b_r, grad_c0)."""
    if not fast_path(U, x_skip, c0, grad_h):
        return _ref.sru_backward(grad_h, grad_c_last, U, x_skip, v_f, v_r, c0, c, f, r, mask, drop, alpha)
    xp = backend.get_xp(U, c0, grad_h)
    grad_h, grad_c_last, U, x_skip, v_f, v_r, c0, c, f, r, mask, drop = prepare(
        xp, grad_h, grad_c_last, U, x_skip, v_f, v_r, c0, c, f, r, mask, drop)
    T, (B, H) = U.shape[0], c0.shape
    dtype = U.dtype
    grad_U3 = xp.empty((T, B, 3 * H), dtype=dtype)
    grad_x_skip = xp.empty((T, B, H), dtype=dtype)
    partial = xp.empty((B, 4 * H), dtype=dtype)  # per-sequence sums over time of g_f c', g_r c', g_f, g_r
    grad_c0 = xp.empty((B, H), dtype=dtype)
    grid, block = column_grid(B * H)
    launch(backward_kernel(mask is not None, drop is not None), grid, block, grad_h, grad_c_last, U, x_skip, v_f,
           v_r, c0, c, f, r, or_stand_in(mask, c0), or_stand_in(drop, c0), float(alpha), grad_U3, grad_x_skip,
           partial, grad_c0)
    sums = partial.sum(axis=0)
    return grad_U3, grad_x_skip, sums[:H], sums[H:2 * H], sums[2 * H:3 * H], sums[3 * H:], grad_c0
