"""The LRN family (LRN, gLRN, eLRN, oLRN) on the CPU: numba kernels for `minirec.kernels.lrn`.

Same signatures, outputs and padding rule as the reference loops (equations and derivation in
that module's docstring). One tile function per direction serves the four variants: the
column offset of each projection block in z (q, k, w) and the optional outputs (i, o, c) are
passed as ``None`` when the variant has no such block, and numba compiles one specialisation
per variant with the branches of the others removed at compile time.
"""

from __future__ import annotations

import numpy as np

from minirec.kernels import lrn as _reference
from minirec.kernels import register_kernel
from minirec.kernels.cpu._common import (
    check_args,
    contiguous,
    dim,
    kernel_jit,
    optional,
    run_tiles,
    sigmoid,
    tanh,
    typed,
)

__all__ = [
    "lrn_forward", "lrn_backward", "glrn_forward", "glrn_backward",
    "elrn_forward", "elrn_backward", "olrn_forward", "olrn_backward",
]


@kernel_jit
def _forward_tile(b0, b1, j0, j1, z, q_at, k_at, v_at, w_at, h0, mask, has_mask, use_tanh, h, i_out, f_out, o_out,
                  c_out):
    T = z.shape[0]
    one = typed(1, h0)
    lo, hi = np.uint64(j0), np.uint64(j1)  # unsigned channel indices (see _common)
    at_v = np.uint64(v_at)
    h_prev = h0[b0:b1, j0:j1].copy()
    for t in range(T):
        for b in range(b0, b1):
            real = not has_mask or mask[t, b] != 0
            for j in range(lo, hi):
                hp = h_prev[b - b0, j - lo]
                if q_at is None:  # eLRN (eq. 15)
                    f_t = sigmoid(-hp)
                else:  # eq. 3
                    f_t = sigmoid(z[t, b, np.uint64(q_at) + j] - hp)
                if k_at is None:  # gLRN, eLRN: coupled gates
                    i_t = one - f_t
                else:  # eq. 2
                    i_t = sigmoid(z[t, b, np.uint64(k_at) + j] + hp)
                    i_out[t, b, j] = i_t
                c_t = i_t * z[t, b, at_v + j] + f_t * hp
                if w_at is None:  # eq. 4
                    h_t = tanh(c_t) if use_tanh else c_t
                else:  # oLRN, eqs. 11–13
                    o_t = sigmoid(z[t, b, np.uint64(w_at) + j] - c_t)
                    h_t = o_t * c_t
                    o_out[t, b, j], c_out[t, b, j] = o_t, c_t
                f_out[t, b, j] = f_t
                if real:
                    h_prev[b - b0, j - lo] = h_t
                h[t, b, j] = h_prev[b - b0, j - lo]  # padded: the state is carried


@kernel_jit
def _backward_tile(b0, b1, j0, j1, z, q_at, k_at, v_at, w_at, h0, h, i_all, f_all, o_all, c_all, mask, has_mask,
                   use_tanh, grad_y, grad_h_last, grad_z, grad_h0):
    T = z.shape[0]
    one, zero = typed(1, h0), typed(0, h0)
    lo, hi = np.uint64(j0), np.uint64(j1)  # unsigned channel indices (see _common)
    at_v = np.uint64(v_at)
    d = grad_h_last[b0:b1, j0:j1].copy()  # ∂L/∂h_t through everything after step t
    # The row's ∂q, ∂k, ∂w before they go to their blocks of grad_z (a loop that writes one array
    # at several offsets does not vectorise); ∂v is written in place.
    row_q, row_k, row_w = np.zeros(j1 - j0, h0.dtype), np.zeros(j1 - j0, h0.dtype), np.zeros(j1 - j0, h0.dtype)
    for t in range(T - 1, -1, -1):
        for b in range(b0, b1):
            if has_mask and mask[t, b] == 0:  # padded: d passes unchanged, no projection gradient
                row_q[:] = zero
                row_k[:] = zero
                row_w[:] = zero
                for j in range(lo, hi):
                    grad_z[t, b, at_v + j] = zero
            else:
                h_prev = h[t - 1, b] if t > 0 else h0[b]
                i = b - b0
                for j in range(lo, hi):
                    e = grad_y[t, b, j] + d[i, j - lo]  # the gradient reaching ĥ_t
                    f_t = f_all[t, b, j]
                    if w_at is None:
                        grad_c = e * (one - h[t, b, j] * h[t, b, j]) if use_tanh else e  # g′(c) = 1 − tanh(c)²
                    else:
                        o_t, c_t = o_all[t, b, j], c_all[t, b, j]
                        grad_w = e * c_t * (o_t * (one - o_t))
                        row_w[j - lo] = grad_w
                        grad_c = e * o_t - grad_w
                    i_t = one - f_t if k_at is None else i_all[t, b, j]
                    grad_z[t, b, at_v + j] = grad_c * i_t
                    grad_i = grad_c * z[t, b, at_v + j]
                    grad_f = grad_c * h_prev[j]
                    d_prev = grad_c * f_t
                    if k_at is None:  # i = 1 − f: one pre-activation takes both gradients
                        grad_a_f = (grad_f - grad_i) * (f_t * (one - f_t))
                    else:
                        grad_k = grad_i * (i_t * (one - i_t))
                        row_k[j - lo] = grad_k
                        d_prev = d_prev + grad_k
                        grad_a_f = grad_f * (f_t * (one - f_t))
                    row_q[j - lo] = grad_a_f
                    d[i, j - lo] = d_prev - grad_a_f
            if q_at is not None:
                for j in range(lo, hi):
                    grad_z[t, b, np.uint64(q_at) + j] = row_q[j - lo]
            if k_at is not None:
                for j in range(lo, hi):
                    grad_z[t, b, np.uint64(k_at) + j] = row_k[j - lo]
            if w_at is not None:
                for j in range(lo, hi):
                    grad_z[t, b, np.uint64(w_at) + j] = row_w[j - lo]
    grad_h0[b0:b1, j0:j1] = d


def _offsets(variant, H):
    """Column offsets of the blocks q, k, v, w in z (None for a block the variant lacks)."""
    names = _reference.BLOCKS[variant]
    return [names.index(name) * H if name in names else None for name in ("q", "k", "v", "w")]


def _run_forward(variant, z, h0, mask, activation):
    T, B, H = dim(z, 0), dim(z, 1), dim(h0, 1)
    dtype = check_args(f"{variant}_forward", z=(z, (T, B, len(_reference.BLOCKS[variant]) * H)), h0=(h0, (B, H)),
                       mask=(mask, (T, B)))
    _reference._check(z, h0, variant, activation)
    z, h0 = contiguous(z, dtype), contiguous(h0, dtype)
    mask, has_mask = optional(mask, dtype, 2)
    q_at, k_at, v_at, w_at = _offsets(variant, H)
    new = lambda present: np.empty((T, B, H), dtype) if present else None
    h, i, f, o, c = new(True), new(k_at is not None), new(True), new(w_at is not None), new(w_at is not None)
    run_tiles(_forward_tile, T, B, H, z, q_at, k_at, v_at, w_at, h0, mask, has_mask, activation == "tanh",
              h, i, f, o, c, ns_per_element=6)
    return h, i, f, o, c


def _run_backward(variant, z, h0, h, i, f, o, c, mask, grad_y, grad_h_last, activation):
    """The variant's arrays are checked (i with separate gates, o and c for oLRN), the others
    are None."""
    blocks = _reference.BLOCKS[variant]
    T, B, H = dim(z, 0), dim(z, 1), dim(h0, 1)
    state = (T, B, H)
    args = {"z": (z, (T, B, len(blocks) * H)), "h0": (h0, (B, H)), "h": (h, state)}
    args.update({"i": (i, state)} if "k" in blocks else {})
    args["f"] = (f, state)
    args.update({"o": (o, state), "c": (c, state)} if "w" in blocks else {})
    dtype = check_args(f"{variant}_backward", **args, mask=(mask, (T, B)), grad_y=(grad_y, state),
                       grad_h_last=(grad_h_last, (B, H)))
    z, h0, h, f, grad_y, grad_h_last = (contiguous(a, dtype) for a in (z, h0, h, f, grad_y, grad_h_last))
    i, o, c = (None if a is None else contiguous(a, dtype) for a in (i, o, c))
    mask, has_mask = optional(mask, dtype, 2)
    grad_z = np.empty_like(z)
    grad_h0 = np.empty((B, H), dtype)
    run_tiles(_backward_tile, T, B, H, z, *_offsets(variant, H), h0, h, i, f, o, c, mask, has_mask,
              activation == "tanh", grad_y, grad_h_last, grad_z, grad_h0, ns_per_element=3)
    return grad_z, grad_h0


# ---- the registered kernels: the reference signatures ------------------------------------------
@register_kernel("lrn_forward", "cpu")
def lrn_forward(z, h0, mask, activation="tanh"):
    """LRN forward: (h, i, f). See `minirec.kernels.lrn.lrn_forward`."""
    h, i, f, _, _ = _run_forward("lrn", z, h0, mask, activation)
    return h, i, f


@register_kernel("lrn_backward", "cpu")
def lrn_backward(z, h0, h, i, f, mask, grad_y, grad_h_last, activation="tanh"):
    """LRN backward: (grad_z, grad_h0)."""
    return _run_backward("lrn", z, h0, h, i, f, None, None, mask, grad_y, grad_h_last, activation)


@register_kernel("glrn_forward", "cpu")
def glrn_forward(z, h0, mask, activation="tanh"):
    """gLRN forward: (h, f)."""
    h, _, f, _, _ = _run_forward("glrn", z, h0, mask, activation)
    return h, f


@register_kernel("glrn_backward", "cpu")
def glrn_backward(z, h0, h, f, mask, grad_y, grad_h_last, activation="tanh"):
    """gLRN backward: (grad_z, grad_h0)."""
    return _run_backward("glrn", z, h0, h, None, f, None, None, mask, grad_y, grad_h_last, activation)


@register_kernel("elrn_forward", "cpu")
def elrn_forward(z, h0, mask, activation="tanh"):
    """eLRN forward: (h, f)."""
    h, _, f, _, _ = _run_forward("elrn", z, h0, mask, activation)
    return h, f


@register_kernel("elrn_backward", "cpu")
def elrn_backward(z, h0, h, f, mask, grad_y, grad_h_last, activation="tanh"):
    """eLRN backward: (grad_z, grad_h0)."""
    return _run_backward("elrn", z, h0, h, None, f, None, None, mask, grad_y, grad_h_last, activation)


@register_kernel("olrn_forward", "cpu")
def olrn_forward(z, h0, mask):
    """oLRN forward: (h, i, f, o, c)."""
    return _run_forward("olrn", z, h0, mask, None)


@register_kernel("olrn_backward", "cpu")
def olrn_backward(z, h0, h, i, f, o, c, mask, grad_y, grad_h_last):
    """oLRN backward: (grad_z, grad_h0)."""
    return _run_backward("olrn", z, h0, h, i, f, o, c, mask, grad_y, grad_h_last, None)
