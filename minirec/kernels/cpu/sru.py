"""SRU's elementwise recurrence (eqs. 1–4) on the CPU: numba kernels for `minirec.kernels.sru`.

Same signatures, outputs and padding rule as the reference loops, whose docstrings hold the
equations and the BPTT derivation. Forward: one pass over time computes f_t, c_t, r_t and h_t
together (the reference loops only for c and vectorises the rest over the whole sequence).
Backward: one reverse pass computes δ_t and every gradient of step t, and accumulates the
per-column sums behind ∂v_f, ∂v_r, ∂b_f, ∂b_r (summed over the batch afterwards).
"""

from __future__ import annotations

import numpy as np

from minirec.kernels import register_kernel
from minirec.kernels import sru as _reference  # noqa: F401 - registers the reference kernels first
from minirec.kernels.cpu._common import (
    check_args,
    columns,
    contiguous,
    dim,
    kernel_jit,
    optional,
    run_tiles,
    sigmoid,
    typed,
)

__all__ = ["sru_forward", "sru_backward"]


@kernel_jit
def _forward_tile(b0, b1, j0, j1, U, skip, skip_at, v_f, v_r, b_f, b_r, c0, mask, has_mask, drop, alpha,
                  h, c, f, r):
    T, H = U.shape[0], c0.shape[1]
    one, zero = typed(1, c0), typed(0, c0)
    lo, hi = np.uint64(j0), np.uint64(j1)  # unsigned channel indices (see _common)
    at_f, at_r, at_skip = np.uint64(H), np.uint64(2 * H), np.uint64(skip_at)
    c_prev = c0[b0:b1, j0:j1].copy()
    for t in range(T):
        for b in range(b0, b1):
            real = not has_mask or mask[t, b] != 0
            for j in range(lo, hi):
                cp = c_prev[b - b0, j - lo]
                f_t = sigmoid((U[t, b, at_f + j] + b_f[j]) + v_f[j] * cp)  # (1)
                r_t = sigmoid((U[t, b, at_r + j] + b_r[j]) + v_r[j] * cp)  # (3): r_t reads c_{t−1}
                f[t, b, j], r[t, b, j] = f_t, r_t
                if real:
                    c_t = f_t * cp + (one - f_t) * U[t, b, j]  # (2)
                    c[t, b, j] = c_prev[b - b0, j - lo] = c_t
                    h[t, b, j] = r_t * (c_t * drop[b, j]) + (one - r_t) * (alpha * skip[t, b, at_skip + j])  # (4)
                else:  # padded: carry the state, output 0
                    c[t, b, j], h[t, b, j] = cp, zero


@kernel_jit
def _backward_tile(b0, b1, j0, j1, grad_h, grad_c_last, U, skip, skip_at, v_f, v_r, c0, c, f, r, mask, has_mask,
                   drop, alpha, grad_U3, grad_skip, sums):
    T, H = U.shape[0], c0.shape[1]
    one, zero = typed(1, c0), typed(0, c0)
    lo, hi = np.uint64(j0), np.uint64(j1)  # unsigned channel indices (see _common)
    at_f, at_r, at_skip = np.uint64(H), np.uint64(2 * H), np.uint64(skip_at)
    carry = grad_c_last[b0:b1, j0:j1].copy()  # ∂L/∂c_t reaching step t from the later steps
    # Column sums Σ_t g_f c′, g_r c′, g_f, g_r, and the row's g_f, g_r before they go to their blocks
    # of grad_U3: one array each, filled by separate loops (a loop that writes one array at several
    # offsets does not vectorise; fewer arrays per loop also compile faster).
    shape = (b1 - b0, j1 - j0)
    sum_fc, sum_rc = np.zeros(shape, c0.dtype), np.zeros(shape, c0.dtype)
    sum_f, sum_r = np.zeros(shape, c0.dtype), np.zeros(shape, c0.dtype)
    row_f, row_r = np.empty(j1 - j0, c0.dtype), np.empty(j1 - j0, c0.dtype)
    for t in range(T - 1, -1, -1):
        for b in range(b0, b1):
            if has_mask and mask[t, b] == 0:  # padded: δ passes unchanged (J = 1), no gradient here
                row_f[:] = zero
                row_r[:] = zero
                for j in range(lo, hi):
                    grad_U3[t, b, j] = zero
                for j in range(lo, hi):
                    grad_skip[t, b, j] = zero
            else:
                c_prev = c[t - 1, b] if t > 0 else c0[b]
                i = b - b0
                for j in range(lo, hi):
                    f_t, r_t, cp, gh = f[t, b, j], r[t, b, j], c_prev[j], grad_h[t, b, j]
                    x_tilde = U[t, b, j]
                    g_r = gh * (c[t, b, j] * drop[b, j] - alpha * skip[t, b, at_skip + j]) * r_t * (one - r_t)
                    grad_skip[t, b, j] = gh * (one - r_t) * alpha
                    df = f_t * (one - f_t)
                    delta = gh * r_t * drop[b, j] + carry[i, j - lo]
                    carry[i, j - lo] = (f_t + (cp - x_tilde) * df * v_f[j]) * delta + g_r * v_r[j]
                    grad_U3[t, b, j] = delta * (one - f_t)
                    row_f[j - lo], row_r[j - lo] = delta * (cp - x_tilde) * df, g_r
                for j in range(lo, hi):
                    g_f = row_f[j - lo]
                    sum_fc[i, j - lo] += g_f * c_prev[j]
                    sum_f[i, j - lo] += g_f
                for j in range(lo, hi):
                    g_r = row_r[j - lo]
                    sum_rc[i, j - lo] += g_r * c_prev[j]
                    sum_r[i, j - lo] += g_r
            for j in range(lo, hi):
                grad_U3[t, b, at_f + j] = row_f[j - lo]
            for j in range(lo, hi):
                grad_U3[t, b, at_r + j] = row_r[j - lo]
    sums[0, b0:b1, j0:j1] = sum_fc
    sums[1, b0:b1, j0:j1] = sum_rc
    sums[2, b0:b1, j0:j1] = sum_f
    sums[3, b0:b1, j0:j1] = sum_r
    sums[4, b0:b1, j0:j1] = carry  # ∂L/∂c0


def _drop(drop, shape, dtype):
    """The dropout mask, or ones: c·1 = c exactly, so one compiled loop serves both."""
    return np.ones(shape, dtype) if drop is None else contiguous(drop, dtype)


@register_kernel("sru_forward", "cpu")
def sru_forward(U, x_skip, v_f, v_r, b_f, b_r, c0, mask, drop, alpha):
    """`minirec.kernels.sru.sru_forward` on the CPU: returns (h, c, f, r), each (T, B, H)."""
    T, B, H = dim(U, 0), dim(U, 1), dim(c0, 1)
    dtype = check_args("sru_forward", ("mask", "drop"), U=(U, (T, B, (3 * H, 4 * H))), x_skip=(x_skip, (T, B, H)),
                       v_f=(v_f, (H,)), v_r=(v_r, (H,)), b_f=(b_f, (H,)), b_r=(b_r, (H,)), c0=(c0, (B, H)),
                       mask=(mask, (T, B)), drop=(drop, (B, H)))
    U, c0 = contiguous(U, dtype), contiguous(c0, dtype)
    skip, skip_at = columns(x_skip, dtype)
    vectors = [contiguous(v, dtype) for v in (v_f, v_r, b_f, b_r)]
    mask, has_mask = optional(mask, dtype, 2)
    h, c, f, r = (np.empty((T, B, H), dtype) for _ in range(4))
    run_tiles(_forward_tile, T, B, H, U, skip, skip_at, *vectors, c0, mask, has_mask, _drop(drop, (B, H), dtype),
              dtype.type(alpha), h, c, f, r, ns_per_element=4)
    return h, c, f, r


@register_kernel("sru_backward", "cpu")
def sru_backward(grad_h, grad_c_last, U, x_skip, v_f, v_r, c0, c, f, r, mask, drop, alpha):
    """`minirec.kernels.sru.sru_backward` on the CPU: returns (grad_U3, grad_x_skip, grad_v_f,
    grad_v_r, grad_b_f, grad_b_r, grad_c0)."""
    T, B, H = dim(U, 0), dim(U, 1), dim(c0, 1)
    dtype = check_args("sru_backward", ("mask", "drop"), grad_h=(grad_h, (T, B, H)),
                       grad_c_last=(grad_c_last, (B, H)), U=(U, (T, B, (3 * H, 4 * H))), x_skip=(x_skip, (T, B, H)),
                       v_f=(v_f, (H,)), v_r=(v_r, (H,)), c0=(c0, (B, H)), c=(c, (T, B, H)), f=(f, (T, B, H)),
                       r=(r, (T, B, H)), mask=(mask, (T, B)), drop=(drop, (B, H)))
    grad_h, grad_c_last, U, v_f, v_r, c0, c, f, r = (
        contiguous(a, dtype) for a in (grad_h, grad_c_last, U, v_f, v_r, c0, c, f, r))
    skip, skip_at = columns(x_skip, dtype)
    mask, has_mask = optional(mask, dtype, 2)
    grad_U3 = np.empty((T, B, 3 * H), dtype)
    grad_skip = np.empty((T, B, H), dtype)
    sums = np.empty((5, B, H), dtype)  # per column: Σ g_f c′, Σ g_r c′, Σ g_f, Σ g_r; then ∂L/∂c0
    run_tiles(_backward_tile, T, B, H, grad_h, grad_c_last, U, skip, skip_at, v_f, v_r, c0, c, f, r, mask, has_mask,
              _drop(drop, (B, H), dtype), dtype.type(alpha), grad_U3, grad_skip, sums, ns_per_element=4)
    grad_v_f, grad_v_r, grad_b_f, grad_b_r = sums[:4].sum(axis=1)
    return grad_U3, grad_skip, grad_v_f, grad_v_r, grad_b_f, grad_b_r, sums[4].copy()
