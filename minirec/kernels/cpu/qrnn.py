"""QRNN's fo-pooling on the CPU: numba kernels for `minirec.kernels.qrnn`.

Same signatures, outputs and padding rule as the reference loops (equations and derivation in
that module). Forward: one pass over time applies the gate nonlinearities, the pooling
c_t = f_t c_{t−1} + (1 − f_t) z_t and the output h_t together. Backward: one reverse pass
computes δ_t and every gradient of step t, and accumulates the column sums behind ∂b (summed
over the batch afterwards).
"""

from __future__ import annotations

import numpy as np

from minirec.kernels import qrnn as _reference  # noqa: F401 - registers the reference kernels first
from minirec.kernels import register_kernel
from minirec.kernels.cpu._common import (
    check_args,
    columns,
    contiguous,
    dim,
    kernel_jit,
    optional,
    run_tiles,
    sigmoid,
    tanh,
    typed,
)

__all__ = ["qrnn_forward", "qrnn_backward"]


@kernel_jit
def _forward_tile(b0, b1, j0, j1, U, bias, c0, skip, skip_at, has_skip, mask, has_mask, h, c, z, f, o):
    T, H = U.shape[0], c0.shape[1]
    one, zero = typed(1, c0), typed(0, c0)
    lo, hi = np.uint64(j0), np.uint64(j1)  # unsigned channel indices (see _common)
    at_f, at_o, at_skip = np.uint64(H), np.uint64(2 * H), np.uint64(skip_at)
    c_prev = c0[b0:b1, j0:j1].copy()
    for t in range(T):
        for b in range(b0, b1):
            real = not has_mask or mask[t, b] != 0
            for j in range(lo, hi):
                z_t = tanh(U[t, b, j] + bias[j])
                f_t = sigmoid(U[t, b, at_f + j] + bias[at_f + j])
                o_t = sigmoid(U[t, b, at_o + j] + bias[at_o + j])
                z[t, b, j], f[t, b, j], o[t, b, j] = z_t, f_t, o_t
                if real:
                    c_t = f_t * c_prev[b - b0, j - lo] + (one - f_t) * z_t
                    c[t, b, j] = c_prev[b - b0, j - lo] = c_t
                    h[t, b, j] = o_t * c_t + (one - o_t) * skip[t, b, at_skip + j] if has_skip else o_t * c_t
                else:  # padded: carry the state, output 0
                    c[t, b, j], h[t, b, j] = c_prev[b - b0, j - lo], zero


@kernel_jit
def _backward_tile(b0, b1, j0, j1, grad_h, grad_c_last, c0, skip, skip_at, has_skip, c, z, f, o, mask, has_mask,
                   grad_U3, grad_skip, sums):
    T, H = c.shape[0], c0.shape[1]
    one, zero = typed(1, c0), typed(0, c0)
    lo, hi = np.uint64(j0), np.uint64(j1)  # unsigned channel indices (see _common)
    at_f, at_o, at_skip = np.uint64(H), np.uint64(2 * H), np.uint64(skip_at)
    carry = grad_c_last[b0:b1, j0:j1].copy()  # ∂L/∂c_t reaching step t from the later steps
    # Column sums of g_z, g_f, g_o, and the row's g_f, g_o before they go to their blocks of
    # grad_U3: one array each (a loop that writes one array at several offsets does not vectorise).
    shape = (b1 - b0, j1 - j0)
    sum_z, sum_f, sum_o = np.zeros(shape, c0.dtype), np.zeros(shape, c0.dtype), np.zeros(shape, c0.dtype)
    row_f, row_o = np.empty(j1 - j0, c0.dtype), np.empty(j1 - j0, c0.dtype)
    for t in range(T - 1, -1, -1):
        for b in range(b0, b1):
            if has_mask and mask[t, b] == 0:  # padded: a = 1, δ passes unchanged, no gradient here
                row_f[:] = zero
                row_o[:] = zero
                for j in range(lo, hi):
                    grad_U3[t, b, j] = zero
                if has_skip:
                    for j in range(lo, hi):
                        grad_skip[t, b, j] = zero
            else:
                c_prev = c[t - 1, b] if t > 0 else c0[b]
                i = b - b0
                for j in range(lo, hi):
                    gh, c_t, z_t, f_t, o_t = grad_h[t, b, j], c[t, b, j], z[t, b, j], f[t, b, j], o[t, b, j]
                    if has_skip:
                        g_o = gh * (c_t - skip[t, b, at_skip + j]) * o_t * (one - o_t)
                        grad_skip[t, b, j] = gh * (one - o_t)
                    else:
                        g_o = gh * c_t * o_t * (one - o_t)
                    delta = gh * o_t + carry[i, j - lo]
                    carry[i, j - lo] = f_t * delta
                    g_z = delta * (one - f_t) * (one - z_t * z_t)
                    g_f = delta * (c_prev[j] - z_t) * f_t * (one - f_t)
                    grad_U3[t, b, j] = g_z
                    row_f[j - lo], row_o[j - lo] = g_f, g_o
                    sum_z[i, j - lo] += g_z
                    sum_f[i, j - lo] += g_f
                    sum_o[i, j - lo] += g_o
            for j in range(lo, hi):
                grad_U3[t, b, at_f + j] = row_f[j - lo]
            for j in range(lo, hi):
                grad_U3[t, b, at_o + j] = row_o[j - lo]
    sums[0, b0:b1, j0:j1] = sum_z
    sums[1, b0:b1, j0:j1] = sum_f
    sums[2, b0:b1, j0:j1] = sum_o
    sums[3, b0:b1, j0:j1] = carry  # ∂L/∂c0


def _skip(x_skip, dtype):
    """(array, column offset, present?) for the optional highway input."""
    if x_skip is None:
        return np.empty((0, 0, 0), dtype), 0, False
    return (*columns(x_skip, dtype), True)


@register_kernel("qrnn_forward", "cpu")
def qrnn_forward(U, b, c0, x_skip, mask):
    """`minirec.kernels.qrnn.qrnn_forward` on the CPU: returns (h, c, z, f, o), each (T, B, H)."""
    T, B, H = dim(U, 0), dim(U, 1), dim(c0, 1)
    dtype = check_args("qrnn_forward", ("x_skip", "mask"), U=(U, (T, B, (3 * H, 4 * H))), b=(b, (3 * H,)),
                       c0=(c0, (B, H)), x_skip=(x_skip, (T, B, H)), mask=(mask, (T, B)))
    U, bias, c0 = contiguous(U, dtype), contiguous(b, dtype), contiguous(c0, dtype)
    mask, has_mask = optional(mask, dtype, 2)
    h, c, z, f, o = (np.empty((T, B, H), dtype) for _ in range(5))
    run_tiles(_forward_tile, T, B, H, U, bias, c0, *_skip(x_skip, dtype), mask, has_mask, h, c, z, f, o,
              ns_per_element=5)
    return h, c, z, f, o


@register_kernel("qrnn_backward", "cpu")
def qrnn_backward(grad_h, grad_c_last, c0, x_skip, c, z, f, o, mask):
    """`minirec.kernels.qrnn.qrnn_backward` on the CPU: returns (grad_U3, grad_b, grad_x_skip or
    None, grad_c0)."""
    T, B, H = dim(c, 0), dim(c, 1), dim(c, 2)
    dtype = check_args("qrnn_backward", ("x_skip", "mask"), grad_h=(grad_h, (T, B, H)),
                       grad_c_last=(grad_c_last, (B, H)), c0=(c0, (B, H)), x_skip=(x_skip, (T, B, H)),
                       c=(c, (T, B, H)), z=(z, (T, B, H)), f=(f, (T, B, H)), o=(o, (T, B, H)), mask=(mask, (T, B)))
    grad_h, grad_c_last, c0, c, z, f, o = (contiguous(a, dtype) for a in (grad_h, grad_c_last, c0, c, z, f, o))
    skip, skip_at, has_skip = _skip(x_skip, dtype)
    mask, has_mask = optional(mask, dtype, 2)
    grad_U3 = np.empty((T, B, 3 * H), dtype)
    grad_skip = np.empty((T, B, H) if has_skip else (0, 0, 0), dtype)
    sums = np.empty((4, B, H), dtype)  # per column: Σ g_z, Σ g_f, Σ g_o; then ∂L/∂c0
    run_tiles(_backward_tile, T, B, H, grad_h, grad_c_last, c0, skip, skip_at, has_skip, c, z, f, o, mask, has_mask,
              grad_U3, grad_skip, sums, ns_per_element=3)
    grad_b = sums[:3].sum(axis=1).reshape(3 * H)
    return grad_U3, grad_b, grad_skip if has_skip else None, sums[3].copy()
