"""minGRU and minLSTM on the CPU: numba kernels for `minirec.kernels.minrnn`.

The reference computes the gates over the whole sequence with NumPy, then calls a linear-scan
solver; here the gate math and the scan h_t = a_t h_{t−1} + b_t are fused into one pass over
time (and the backward's gate chain rule into the reverse scan), so a, b and the reverse-scan
gradients are never stored. Same signatures, outputs and padding rule as the reference.

Every ``mode`` runs the same sequential loop in linear space: "parallel" (Blelloch) and "log"
(Heinsen) compute the same function with other arithmetic, and on one CPU thread per column
the plain loop is both the fastest and the most accurate. "log" keeps its meaning for the
candidate (g always applies) and for h0 (the cell checks h0 > 0): a = σ(−k) = exp(log a),
b = z·g(x̃) = exp(log b) exactly as in the log-space formulation.
"""

from __future__ import annotations

import numpy as np

from minirec.kernels import minrnn as _reference
from minirec.kernels import register_kernel
from minirec.kernels.cpu._common import (
    check_args,
    columns,
    contiguous,
    dim,
    exp,
    g,
    g_prime,
    kernel_jit,
    optional,
    run_tiles,
    sigmoid,
    typed,
)

__all__ = ["mingru_forward", "mingru_backward", "minlstm_forward", "minlstm_backward"]


# ---- minGRU ------------------------------------------------------------------------------------
@kernel_jit
def _mingru_forward_tile(b0, b1, j0, j1, K, k_at, X, x_at, h0, mask, has_mask, applies_g, h, z):
    T = h.shape[0]
    one = typed(1, h0)
    lo, hi = np.uint64(j0), np.uint64(j1)  # unsigned channel indices (see _common)
    at_k, at_x = np.uint64(k_at), np.uint64(x_at)
    h_prev = h0[b0:b1, j0:j1].copy()
    for t in range(T):
        for b in range(b0, b1):
            real = not has_mask or mask[t, b] != 0
            for j in range(lo, hi):
                k = K[t, b, at_k + j]
                e = exp(-abs(k))  # σ(k) and σ(−k) = 1 − z from one exponential, without 1 − z rounding
                z_t = (one if k >= 0 else e) / (one + e)
                a_t = (e if k >= 0 else one) / (one + e)
                x = X[t, b, at_x + j]
                v = g(x) if applies_g else x
                z[t, b, j] = z_t
                if real:
                    h_prev[b - b0, j - lo] = a_t * h_prev[b - b0, j - lo] + z_t * v
                h[t, b, j] = h_prev[b - b0, j - lo]  # padded: a = 1, b = 0


@kernel_jit
def _mingru_backward_tile(b0, b1, j0, j1, grad_h, h, h0, z, X, x_at, mask, has_mask, applies_g, grad_k, grad_x,
                          grad_h0):
    T = h.shape[0]
    one, zero = typed(1, h0), typed(0, h0)
    lo, hi = np.uint64(j0), np.uint64(j1)  # unsigned channel indices (see _common)
    at_x = np.uint64(x_at)
    carry = np.zeros((b1 - b0, j1 - j0), h0.dtype)  # ā_{t+1} δ_{t+1}: 0 after the last step
    for t in range(T - 1, -1, -1):
        for b in range(b0, b1):
            if has_mask and mask[t, b] == 0:  # padded: ā = 1, δ passes on, no gradient here
                for j in range(lo, hi):
                    carry[b - b0, j - lo] += grad_h[t, b, j]
                    grad_k[t, b, j] = grad_x[t, b, j] = zero
                continue
            h_prev = h[t - 1, b] if t > 0 else h0[b]
            for j in range(lo, hi):
                delta = grad_h[t, b, j] + carry[b - b0, j - lo]  # δ_t = ∂L/∂h_t, total
                z_t = z[t, b, j]
                a_t = one - z_t
                x = X[t, b, at_x + j]
                v = g(x) if applies_g else x
                grad_k[t, b, j] = z_t * a_t * (delta * v - delta * h_prev[j])  # z(1 − z)(∂b v − ∂a)
                grad_x[t, b, j] = delta * z_t * g_prime(x) if applies_g else delta * z_t
                carry[b - b0, j - lo] = a_t * delta
    grad_h0[b0:b1, j0:j1] = carry


@register_kernel("mingru_forward", "cpu")
def mingru_forward(k, x_tilde, h0, mask=None, mode="sequential", g_activation=False):
    """`minirec.kernels.minrnn.mingru_forward` on the CPU: returns (h, z), each (T, B, H)."""
    _reference.check_mode(mode)
    T, B, H = dim(k, 0), dim(k, 1), dim(k, 2)
    dtype = check_args("mingru_forward", k=(k, (T, B, H)), x_tilde=(x_tilde, (T, B, H)), h0=(h0, (B, H)),
                       mask=(mask, (T, B)))
    (K, k_at), (X, x_at) = columns(k, dtype), columns(x_tilde, dtype)
    h0 = contiguous(h0, dtype)
    mask, has_mask = optional(mask, dtype, 2)
    h, z = np.empty((T, B, H), dtype), np.empty((T, B, H), dtype)
    run_tiles(_mingru_forward_tile, T, B, H, K, k_at, X, x_at, h0, mask, has_mask,
              bool(g_activation) or mode == "log", h, z, ns_per_element=2)
    return h, z


@register_kernel("mingru_backward", "cpu")
def mingru_backward(grad_h, h, h0, z, x_tilde, mask=None, mode="sequential", g_activation=False):
    """`minirec.kernels.minrnn.mingru_backward` on the CPU: returns (grad_k, grad_x_tilde, grad_h0)."""
    _reference.check_mode(mode)
    T, B, H = dim(h, 0), dim(h, 1), dim(h, 2)
    dtype = check_args("mingru_backward", grad_h=(grad_h, (T, B, H)), h=(h, (T, B, H)), h0=(h0, (B, H)),
                       z=(z, (T, B, H)), x_tilde=(x_tilde, (T, B, H)), mask=(mask, (T, B)))
    grad_h, h, h0, z = (contiguous(a, dtype) for a in (grad_h, h, h0, z))
    X, x_at = columns(x_tilde, dtype)
    mask, has_mask = optional(mask, dtype, 2)
    grad_k, grad_x, grad_h0 = np.empty((T, B, H), dtype), np.empty((T, B, H), dtype), np.empty((B, H), dtype)
    run_tiles(_mingru_backward_tile, T, B, H, grad_h, h, h0, z, X, x_at, mask, has_mask,
              bool(g_activation) or mode == "log", grad_k, grad_x, grad_h0, ns_per_element=2)
    return grad_k, grad_x, grad_h0


# ---- minLSTM -----------------------------------------------------------------------------------
@kernel_jit
def _minlstm_forward_tile(b0, b1, j0, j1, KF, kf_at, KI, ki_at, X, x_at, h0, mask, has_mask, applies_g, h, f_prime):
    T = h.shape[0]
    zero = typed(0, h0)
    lo, hi = np.uint64(j0), np.uint64(j1)  # unsigned channel indices (see _common)
    at_f, at_i, at_x = np.uint64(kf_at), np.uint64(ki_at), np.uint64(x_at)
    h_prev = h0[b0:b1, j0:j1].copy()
    for t in range(T):
        for b in range(b0, b1):
            real = not has_mask or mask[t, b] != 0
            for j in range(lo, hi):
                # f′ = f/(f + i) = (1 + e^−k_i) / ((1 + e^−k_i) + (1 + e^−k_f)), every term scaled
                # by e^−m, m = max(0, −k_f, −k_i), so no exponential overflows and the largest is 1
                # (the reference's σ(log f − log i), without logarithms: this loop vectorises).
                k_f, k_i = KF[t, b, at_f + j], KI[t, b, at_i + j]
                m = max(zero, max(-k_f, -k_i))
                e_m = exp(-m)
                num_f = e_m + exp(-k_i - m)
                num_i = e_m + exp(-k_f - m)
                f_t = num_f / (num_f + num_i)
                i_t = num_i / (num_f + num_i)
                x = X[t, b, at_x + j]
                v = g(x) if applies_g else x
                f_prime[t, b, j] = f_t
                if real:
                    h_prev[b - b0, j - lo] = f_t * h_prev[b - b0, j - lo] + i_t * v
                h[t, b, j] = h_prev[b - b0, j - lo]  # padded: a = 1, b = 0


@kernel_jit
def _minlstm_backward_tile(b0, b1, j0, j1, grad_h, h, h0, f_prime, KF, kf_at, KI, ki_at, X, x_at, mask, has_mask,
                           applies_g, grad_kf, grad_ki, grad_x, grad_h0):
    T = h.shape[0]
    one, zero = typed(1, h0), typed(0, h0)
    lo, hi = np.uint64(j0), np.uint64(j1)  # unsigned channel indices (see _common)
    at_f, at_i, at_x = np.uint64(kf_at), np.uint64(ki_at), np.uint64(x_at)
    carry = np.zeros((b1 - b0, j1 - j0), h0.dtype)  # ā_{t+1} δ_{t+1}: 0 after the last step
    for t in range(T - 1, -1, -1):
        for b in range(b0, b1):
            if has_mask and mask[t, b] == 0:  # padded: ā = 1, δ passes on, no gradient here
                for j in range(lo, hi):
                    carry[b - b0, j - lo] += grad_h[t, b, j]
                    grad_kf[t, b, j] = grad_ki[t, b, j] = grad_x[t, b, j] = zero
                continue
            h_prev = h[t - 1, b] if t > 0 else h0[b]
            for j in range(lo, hi):
                delta = grad_h[t, b, j] + carry[b - b0, j - lo]  # δ_t = ∂L/∂h_t, total
                f_t = f_prime[t, b, j]
                i_t = one - f_t
                x = X[t, b, at_x + j]
                v = g(x) if applies_g else x
                grad_d = f_t * i_t * (delta * h_prev[j] - delta * v)  # f′ i′ (∂a − ∂b v)
                grad_kf[t, b, j] = grad_d * sigmoid(-KF[t, b, at_f + j])  # ∂(−softplus(−k))/∂k = σ(−k)
                grad_ki[t, b, j] = -grad_d * sigmoid(-KI[t, b, at_i + j])
                grad_x[t, b, j] = delta * i_t * g_prime(x) if applies_g else delta * i_t
                carry[b - b0, j - lo] = f_t * delta
    grad_h0[b0:b1, j0:j1] = carry


@register_kernel("minlstm_forward", "cpu")
def minlstm_forward(k_f, k_i, x_tilde, h0, mask=None, mode="sequential", g_activation=False):
    """`minirec.kernels.minrnn.minlstm_forward` on the CPU: returns (h, f_prime), each (T, B, H)."""
    _reference.check_mode(mode)
    T, B, H = dim(k_f, 0), dim(k_f, 1), dim(k_f, 2)
    dtype = check_args("minlstm_forward", k_f=(k_f, (T, B, H)), k_i=(k_i, (T, B, H)), x_tilde=(x_tilde, (T, B, H)),
                       h0=(h0, (B, H)), mask=(mask, (T, B)))
    (KF, kf_at), (KI, ki_at), (X, x_at) = (columns(a, dtype) for a in (k_f, k_i, x_tilde))
    h0 = contiguous(h0, dtype)
    mask, has_mask = optional(mask, dtype, 2)
    h, f_prime = np.empty((T, B, H), dtype), np.empty((T, B, H), dtype)
    run_tiles(_minlstm_forward_tile, T, B, H, KF, kf_at, KI, ki_at, X, x_at, h0, mask, has_mask,
              bool(g_activation) or mode == "log", h, f_prime, ns_per_element=5)
    return h, f_prime


@register_kernel("minlstm_backward", "cpu")
def minlstm_backward(grad_h, h, h0, f_prime, k_f, k_i, x_tilde, mask=None, mode="sequential", g_activation=False):
    """`minirec.kernels.minrnn.minlstm_backward` on the CPU: returns (grad_k_f, grad_k_i,
    grad_x_tilde, grad_h0)."""
    _reference.check_mode(mode)
    T, B, H = dim(h, 0), dim(h, 1), dim(h, 2)
    dtype = check_args("minlstm_backward", grad_h=(grad_h, (T, B, H)), h=(h, (T, B, H)), h0=(h0, (B, H)),
                       f_prime=(f_prime, (T, B, H)), k_f=(k_f, (T, B, H)), k_i=(k_i, (T, B, H)),
                       x_tilde=(x_tilde, (T, B, H)), mask=(mask, (T, B)))
    grad_h, h, h0, f_prime = (contiguous(a, dtype) for a in (grad_h, h, h0, f_prime))
    (KF, kf_at), (KI, ki_at), (X, x_at) = (columns(a, dtype) for a in (k_f, k_i, x_tilde))
    mask, has_mask = optional(mask, dtype, 2)
    grads = [np.empty((T, B, H), dtype) for _ in range(3)]
    grad_h0 = np.empty((B, H), dtype)
    run_tiles(_minlstm_backward_tile, T, B, H, grad_h, h, h0, f_prime, KF, kf_at, KI, ki_at, X, x_at, mask, has_mask,
              bool(g_activation) or mode == "log", *grads, grad_h0, ns_per_element=5)
    return (*grads, grad_h0)
