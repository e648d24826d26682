"""The cells with an h-to-h matrix (GRU, LSTM, MGU, SGU, ATR) on the CPU.

Their recurrence needs h_{t−1} U at every step, a (B, H) × (H, k) product that stays a NumPy
matmul (BLAS) per step; everything else of a step (gate nonlinearities, state update, padding
rule; in the backward the pre-activation gradients and the carried δ) is fused into one numba
call per product. The reference does the same work as a dozen NumPy operations per step, each
allocating a temporary. The products over all steps that do not feed the recurrence (∂U after
the backward loop) are one large product each, as in the reference.

Same signatures, outputs and padding rule as the reference loops (`minirec.kernels.gru` etc.,
whose docstrings hold the equations and derivations). The step kernels are serial: one step is
B·H elements, too little to share between threads, and the products already use BLAS's.
"""

from __future__ import annotations

import numpy as np

from minirec.kernels import atr as _atr  # noqa: F401 - registers the reference kernels first
from minirec.kernels import gru as _gru  # noqa: F401
from minirec.kernels import lstm as _lstm  # noqa: F401
from minirec.kernels import mgu as _mgu  # noqa: F401
from minirec.kernels import register_kernel
from minirec.kernels import sgu as _sgu  # noqa: F401
from minirec.kernels.cpu._common import check_args, contiguous, dim, kernel_jit, optional, sigmoid, tanh, typed

__all__ = [
    "gru_forward", "gru_backward", "gru_reset_after_forward", "gru_reset_after_backward",
    "mgu_forward", "mgu_backward", "sgu_forward", "sgu_backward",
    "lstm_forward", "lstm_backward", "atr_forward", "atr_backward",
]


def _previous(h, h0, t):
    """h_{t−1}: h0 at the first step."""
    return h[t - 1] if t else h0


def _previous_all(h, h0):
    """h_0 … h_{T−1} as one (T, B, H) array."""
    return np.concatenate([h0[None], h[:-1]], axis=0)[: h.shape[0]]


@kernel_jit
def _carry(t, mask, has_mask, partial, product, state):
    """The carried gradient of a step: partial + product at real rows; kept at padded ones."""
    B, H = state.shape
    for b in range(B):
        if not has_mask or mask[t, b] != 0:
            for j in range(np.uint64(H)):
                state[b, j] = partial[b, j] + product[b, j]


# ---- GRU: columns [z | r | h̃] -----------------------------------------------------------------
@kernel_jit
def _gru_gates(t, x_proj, s, h_prev, gates, rh):
    """z, r = σ(x_proj[t, z|r] + h_{t−1} U_zr) into gates[t]; rh = r ⊙ h_{t−1}, the operand of
    the second product."""
    B, H = h_prev.shape
    at_r = np.uint64(H)
    for b in range(B):
        for j in range(np.uint64(2 * H)):
            gates[t, b, j] = sigmoid(x_proj[t, b, j] + s[b, j])
        for j in range(np.uint64(H)):
            rh[b, j] = gates[t, b, at_r + j] * h_prev[b, j]


@kernel_jit
def _gru_update(t, x_proj, s, h_prev, mask, has_mask, gates, h):
    """h̃ = tanh(x_proj[t, h̃] + (r ⊙ h_{t−1}) U_h); h_t = (1 − z) h_{t−1} + z h̃ (h_{t−1} if padded)."""
    B, H = h_prev.shape
    one = typed(1, h_prev)
    at_h = np.uint64(2 * H)
    for b in range(B):
        real = not has_mask or mask[t, b] != 0
        for j in range(np.uint64(H)):  # (a loop that writes an array it also reads does not vectorise)
            gates[t, b, at_h + j] = tanh(x_proj[t, b, at_h + j] + s[b, j])
        for j in range(np.uint64(H)):
            z = gates[t, b, j]
            h[t, b, j] = (one - z) * h_prev[b, j] + z * gates[t, b, at_h + j] if real else h_prev[b, j]


@register_kernel("gru_forward", "cpu")
def gru_forward(x_proj, U, h0, mask):
    """`minirec.kernels.gru.gru_forward` on the CPU: returns (h (T, B, H), gates (T, B, 3H))."""
    T, B, H = dim(x_proj, 0), dim(x_proj, 1), dim(h0, 1)
    dtype = check_args("gru_forward", x_proj=(x_proj, (T, B, 3 * H)), U=(U, (H, 3 * H)), h0=(h0, (B, H)),
                       mask=(mask, (T, B)))
    x_proj, h0 = contiguous(x_proj, dtype), contiguous(h0, dtype)
    mask, has_mask = optional(mask, dtype, 2)
    U_zr, U_h = contiguous(U[:, : 2 * H], dtype), contiguous(U[:, 2 * H :], dtype)
    h, gates = np.empty((T, B, H), dtype), np.empty((T, B, 3 * H), dtype)
    s_zr, s_h, rh = np.empty((B, 2 * H), dtype), np.empty((B, H), dtype), np.empty((B, H), dtype)
    for t in range(T):
        h_prev = _previous(h, h0, t)
        np.matmul(h_prev, U_zr, out=s_zr)
        _gru_gates(t, x_proj, s_zr, h_prev, gates, rh)
        np.matmul(rh, U_h, out=s_h)
        _gru_update(t, x_proj, s_h, h_prev, mask, has_mask, gates, h)
    return h, gates


@kernel_jit
def _gru_backward_a(t, gates, h_prev, mask, has_mask, grad_y, delta, dh, grad_x):
    """δ += m ȳ_t; dh = m δ; ∂a_h, ∂a_z into grad_x[t]."""
    B, H = h_prev.shape
    one, zero = typed(1, h_prev), typed(0, h_prev)
    at_h = np.uint64(2 * H)
    for b in range(B):
        real = not has_mask or mask[t, b] != 0
        for j in range(np.uint64(H)):
            if real:
                delta[b, j] += grad_y[t, b, j]
            d = delta[b, j] if real else zero  # no parameter or input gradient at a padded step
            dh[b, j] = d
            h_tilde = gates[t, b, at_h + j]
            grad_x[t, b, at_h + j] = d * gates[t, b, j] * (one - h_tilde * h_tilde)
        for j in range(np.uint64(H)):  # (one block of grad_x per loop: that is what vectorises)
            z = gates[t, b, j]
            grad_x[t, b, j] = dh[b, j] * (gates[t, b, at_h + j] - h_prev[b, j]) * z * (one - z)


@kernel_jit
def _gru_backward_b(t, gates, h_prev, d_rh, dh, grad_x, partial):
    """∂a_r = ∂(r ⊙ h) h_{t−1} r(1 − r) into grad_x[t]; partial = dh (1 − z) + ∂(r ⊙ h) r."""
    B, H = h_prev.shape
    one = typed(1, h_prev)
    at_r = np.uint64(H)
    for b in range(B):
        for j in range(np.uint64(H)):
            z, r = gates[t, b, j], gates[t, b, at_r + j]
            grad_x[t, b, at_r + j] = d_rh[b, j] * h_prev[b, j] * r * (one - r)
            partial[b, j] = dh[b, j] * (one - z) + d_rh[b, j] * r


@register_kernel("gru_backward", "cpu")
def gru_backward(U, h0, mask, h, gates, grad_y, grad_h_last):
    """`minirec.kernels.gru.gru_backward` on the CPU: returns (grad_x_proj, grad_U, grad_h0)."""
    T, B, H = dim(h, 0), dim(h, 1), dim(h, 2)
    dtype = check_args("gru_backward", U=(U, (H, 3 * H)), h0=(h0, (B, H)), mask=(mask, (T, B)), h=(h, (T, B, H)),
                       gates=(gates, (T, B, 3 * H)), grad_y=(grad_y, (T, B, H)), grad_h_last=(grad_h_last, (B, H)))
    h0, h, gates, grad_y = (contiguous(a, dtype) for a in (h0, h, gates, grad_y))
    mask, has_mask = optional(mask, dtype, 2)
    U_zr_T, U_h_T = contiguous(U[:, : 2 * H].T, dtype), contiguous(U[:, 2 * H :].T, dtype)
    grad_x = np.empty((T, B, 3 * H), dtype)
    delta = contiguous(grad_h_last, dtype).copy()
    dh, d_rh, partial, product = (np.empty((B, H), dtype) for _ in range(4))
    for t in range(T - 1, -1, -1):
        h_prev = _previous(h, h0, t)
        _gru_backward_a(t, gates, h_prev, mask, has_mask, grad_y, delta, dh, grad_x)
        np.matmul(grad_x[t, :, 2 * H :], U_h_T, out=d_rh)
        _gru_backward_b(t, gates, h_prev, d_rh, dh, grad_x, partial)
        np.matmul(grad_x[t, :, : 2 * H], U_zr_T, out=product)
        _carry(t, mask, has_mask, partial, product, delta)
    h_prev_all = _previous_all(h, h0).reshape(T * B, H)
    flat = grad_x.reshape(T * B, 3 * H)
    grad_U = np.empty((H, 3 * H), dtype)
    grad_U[:, : 2 * H] = h_prev_all.T @ flat[:, : 2 * H]
    rh = gates[:, :, H : 2 * H].reshape(T * B, H) * h_prev_all
    grad_U[:, 2 * H :] = rh.T @ flat[:, 2 * H :]
    return grad_x, grad_U, delta


# ---- GRU, reset after: gates [z | r | h̃ | n], one product h_{t−1} U per step -----------------------
@kernel_jit
def _gru_ra_step(t, x_proj, s, b_n, h_prev, mask, has_mask, gates, h):
    """z, r = σ(x_proj[t, z|r] + s[z|r]); n = s[n] + b_n; h̃ = tanh(x_proj[t, h̃] + r n); the update."""
    B, H = h_prev.shape
    one = typed(1, h_prev)
    at_r, at_h, at_n = np.uint64(H), np.uint64(2 * H), np.uint64(3 * H)
    for b in range(B):
        real = not has_mask or mask[t, b] != 0
        for j in range(np.uint64(2 * H)):
            gates[t, b, j] = sigmoid(x_proj[t, b, j] + s[b, j])
        for j in range(np.uint64(H)):
            n = s[b, at_h + j] + b_n[j]
            gates[t, b, at_n + j] = n
            gates[t, b, at_h + j] = tanh(x_proj[t, b, at_h + j] + gates[t, b, at_r + j] * n)
        for j in range(np.uint64(H)):
            z = gates[t, b, j]
            h[t, b, j] = (one - z) * h_prev[b, j] + z * gates[t, b, at_h + j] if real else h_prev[b, j]


@register_kernel("gru_reset_after_forward", "cpu")
def gru_reset_after_forward(x_proj, U, b_n, h0, mask):
    """`minirec.kernels.gru.gru_reset_after_forward` on the CPU: (h (T, B, H), gates (T, B, 4H))."""
    T, B, H = dim(x_proj, 0), dim(x_proj, 1), dim(h0, 1)
    dtype = check_args("gru_reset_after_forward", x_proj=(x_proj, (T, B, 3 * H)), U=(U, (H, 3 * H)),
                       b_n=(b_n, (H,)), h0=(h0, (B, H)), mask=(mask, (T, B)))
    x_proj, U, b_n, h0 = (contiguous(a, dtype) for a in (x_proj, U, b_n, h0))
    mask, has_mask = optional(mask, dtype, 2)
    h, gates, s = np.empty((T, B, H), dtype), np.empty((T, B, 4 * H), dtype), np.empty((B, 3 * H), dtype)
    for t in range(T):
        h_prev = _previous(h, h0, t)
        np.matmul(h_prev, U, out=s)
        _gru_ra_step(t, x_proj, s, b_n, h_prev, mask, has_mask, gates, h)
    return h, gates


@kernel_jit
def _gru_ra_backward_step(t, gates, h_prev, mask, has_mask, grad_y, delta, grad_x, grad_rec, partial):
    """δ += m ȳ_t; dh = m δ; ∂a_z, ∂a_r, ∂a_h into grad_x[t], [∂a_z | ∂a_r | ∂n] into grad_rec[t];
    partial = dh (1 − z)."""
    B, H = h_prev.shape
    one, zero = typed(1, h_prev), typed(0, h_prev)
    at_r, at_h, at_n = np.uint64(H), np.uint64(2 * H), np.uint64(3 * H)
    for b in range(B):
        real = not has_mask or mask[t, b] != 0
        for j in range(np.uint64(H)):
            if real:
                delta[b, j] += grad_y[t, b, j]
            dh = delta[b, j] if real else zero  # no parameter or input gradient at a padded step
            z, r = gates[t, b, j], gates[t, b, at_r + j]
            h_tilde, n = gates[t, b, at_h + j], gates[t, b, at_n + j]
            da_h = dh * z * (one - h_tilde * h_tilde)
            da_z = dh * (h_tilde - h_prev[b, j]) * z * (one - z)
            da_r = da_h * n * r * (one - r)
            grad_x[t, b, j], grad_x[t, b, at_r + j], grad_x[t, b, at_h + j] = da_z, da_r, da_h
            grad_rec[t, b, j], grad_rec[t, b, at_r + j], grad_rec[t, b, at_h + j] = da_z, da_r, da_h * r
            partial[b, j] = dh * (one - z)


@register_kernel("gru_reset_after_backward", "cpu")
def gru_reset_after_backward(U, h0, mask, h, gates, grad_y, grad_h_last):
    """`minirec.kernels.gru.gru_reset_after_backward` on the CPU: (grad_x_proj, grad_U, grad_b_n, grad_h0)."""
    T, B, H = dim(h, 0), dim(h, 1), dim(h, 2)
    dtype = check_args("gru_reset_after_backward", U=(U, (H, 3 * H)), h0=(h0, (B, H)), mask=(mask, (T, B)),
                       h=(h, (T, B, H)), gates=(gates, (T, B, 4 * H)), grad_y=(grad_y, (T, B, H)),
                       grad_h_last=(grad_h_last, (B, H)))
    h0, h, gates, grad_y = (contiguous(a, dtype) for a in (h0, h, gates, grad_y))
    mask, has_mask = optional(mask, dtype, 2)
    U_T = contiguous(U.T, dtype)
    grad_x, grad_rec = np.empty((T, B, 3 * H), dtype), np.empty((T, B, 3 * H), dtype)
    delta = contiguous(grad_h_last, dtype).copy()
    partial, product = np.empty((B, H), dtype), np.empty((B, H), dtype)
    for t in range(T - 1, -1, -1):
        h_prev = _previous(h, h0, t)
        _gru_ra_backward_step(t, gates, h_prev, mask, has_mask, grad_y, delta, grad_x, grad_rec, partial)
        np.matmul(grad_rec[t], U_T, out=product)
        _carry(t, mask, has_mask, partial, product, delta)
    flat = grad_rec.reshape(T * B, 3 * H)
    grad_U = _previous_all(h, h0).reshape(T * B, H).T @ flat
    return grad_x, grad_U, flat[:, 2 * H :].sum(axis=0), delta


# ---- MGU: columns [f | h̃] ------------------------------------------------------------------------
@kernel_jit
def _mgu_gates(t, x_proj, s, h_prev, gates, fh):
    """f = σ(x_proj[t, f] + h_{t−1} U_f) into gates[t]; fh = f ⊙ h_{t−1}."""
    B, H = h_prev.shape
    for b in range(B):
        for j in range(np.uint64(H)):
            f = sigmoid(x_proj[t, b, j] + s[b, j])
            gates[t, b, j] = f
            fh[b, j] = f * h_prev[b, j]


@kernel_jit
def _mgu_update(t, x_proj, s, h_prev, mask, has_mask, gates, h):
    """h̃ = tanh(x_proj[t, h̃] + (f ⊙ h_{t−1}) U_h); h_t = (1 − f) h_{t−1} + f h̃ (h_{t−1} if padded)."""
    B, H = h_prev.shape
    one = typed(1, h_prev)
    at_h = np.uint64(H)
    for b in range(B):
        real = not has_mask or mask[t, b] != 0
        for j in range(np.uint64(H)):  # (a loop that writes an array it also reads does not vectorise)
            gates[t, b, at_h + j] = tanh(x_proj[t, b, at_h + j] + s[b, j])
        for j in range(np.uint64(H)):
            f = gates[t, b, j]
            h[t, b, j] = (one - f) * h_prev[b, j] + f * gates[t, b, at_h + j] if real else h_prev[b, j]


@register_kernel("mgu_forward", "cpu")
def mgu_forward(x_proj, U, h0, mask):
    """`minirec.kernels.mgu.mgu_forward` on the CPU: returns (h (T, B, H), gates (T, B, 2H))."""
    T, B, H = dim(x_proj, 0), dim(x_proj, 1), dim(h0, 1)
    dtype = check_args("mgu_forward", x_proj=(x_proj, (T, B, 2 * H)), U=(U, (H, 2 * H)), h0=(h0, (B, H)),
                       mask=(mask, (T, B)))
    x_proj, h0 = contiguous(x_proj, dtype), contiguous(h0, dtype)
    mask, has_mask = optional(mask, dtype, 2)
    U_f, U_h = contiguous(U[:, :H], dtype), contiguous(U[:, H:], dtype)
    h, gates = np.empty((T, B, H), dtype), np.empty((T, B, 2 * H), dtype)
    s_f, s_h, fh = (np.empty((B, H), dtype) for _ in range(3))
    for t in range(T):
        h_prev = _previous(h, h0, t)
        np.matmul(h_prev, U_f, out=s_f)
        _mgu_gates(t, x_proj, s_f, h_prev, gates, fh)
        np.matmul(fh, U_h, out=s_h)
        _mgu_update(t, x_proj, s_h, h_prev, mask, has_mask, gates, h)
    return h, gates


@kernel_jit
def _mgu_backward_a(t, gates, h_prev, mask, has_mask, grad_y, delta, dh, grad_x):
    """δ += m ȳ_t; dh = m δ; ∂a_h into grad_x[t]."""
    B, H = h_prev.shape
    one, zero = typed(1, h_prev), typed(0, h_prev)
    at_h = np.uint64(H)
    for b in range(B):
        real = not has_mask or mask[t, b] != 0
        for j in range(np.uint64(H)):
            if real:
                delta[b, j] += grad_y[t, b, j]
            d = delta[b, j] if real else zero  # no parameter or input gradient at a padded step
            dh[b, j] = d
            h_tilde = gates[t, b, at_h + j]
            grad_x[t, b, at_h + j] = d * gates[t, b, j] * (one - h_tilde * h_tilde)


@kernel_jit
def _mgu_backward_b(t, gates, h_prev, d_fh, dh, grad_x, partial):
    """∂a_f (f acts as update gate and as reset) into grad_x[t]; partial = dh (1 − f) + ∂(f ⊙ h) f."""
    B, H = h_prev.shape
    one = typed(1, h_prev)
    at_h = np.uint64(H)
    for b in range(B):
        for j in range(np.uint64(H)):
            f, h_tilde, hp = gates[t, b, j], gates[t, b, at_h + j], h_prev[b, j]
            df = dh[b, j] * (h_tilde - hp) + d_fh[b, j] * hp
            grad_x[t, b, j] = df * f * (one - f)
            partial[b, j] = dh[b, j] * (one - f) + d_fh[b, j] * f


@register_kernel("mgu_backward", "cpu")
def mgu_backward(U, h0, mask, h, gates, grad_y, grad_h_last):
    """`minirec.kernels.mgu.mgu_backward` on the CPU: returns (grad_x_proj, grad_U, grad_h0)."""
    T, B, H = dim(h, 0), dim(h, 1), dim(h, 2)
    dtype = check_args("mgu_backward", U=(U, (H, 2 * H)), h0=(h0, (B, H)), mask=(mask, (T, B)), h=(h, (T, B, H)),
                       gates=(gates, (T, B, 2 * H)), grad_y=(grad_y, (T, B, H)), grad_h_last=(grad_h_last, (B, H)))
    h0, h, gates, grad_y = (contiguous(a, dtype) for a in (h0, h, gates, grad_y))
    mask, has_mask = optional(mask, dtype, 2)
    U_f_T, U_h_T = contiguous(U[:, :H].T, dtype), contiguous(U[:, H:].T, dtype)
    grad_x = np.empty((T, B, 2 * H), dtype)
    delta = contiguous(grad_h_last, dtype).copy()
    dh, d_fh, partial, product = (np.empty((B, H), dtype) for _ in range(4))
    for t in range(T - 1, -1, -1):
        h_prev = _previous(h, h0, t)
        _mgu_backward_a(t, gates, h_prev, mask, has_mask, grad_y, delta, dh, grad_x)
        np.matmul(grad_x[t, :, H:], U_h_T, out=d_fh)
        _mgu_backward_b(t, gates, h_prev, d_fh, dh, grad_x, partial)
        np.matmul(grad_x[t, :, :H], U_f_T, out=product)
        _carry(t, mask, has_mask, partial, product, delta)
    h_prev_all = _previous_all(h, h0).reshape(T * B, H)
    flat = grad_x.reshape(T * B, 2 * H)
    grad_U = np.empty((H, 2 * H), dtype)
    grad_U[:, :H] = h_prev_all.T @ flat[:, :H]
    fh = gates[:, :, :H].reshape(T * B, H) * h_prev_all
    grad_U[:, H:] = fh.T @ flat[:, H:]
    return grad_x, grad_U, delta


# ---- SGU: columns [z | r | h̃] of widths 1, 1, H -----------------------------------------------
@kernel_jit
def _sgu_step(t, x_proj, s, h_prev, mask, has_mask, gates, h):
    """z, r = σ(x_proj[t, z|r] + s[z|r]) (one per row); h̃ = tanh(x_proj[t, h̃] + r s[h̃]);
    h_t = (1 − z) h_{t−1} + z h̃ (h_{t−1} if padded)."""
    B, H = h_prev.shape
    one, two = typed(1, h_prev), np.uint64(2)
    for b in range(B):
        z = sigmoid(x_proj[t, b, 0] + s[b, 0])
        r = sigmoid(x_proj[t, b, 1] + s[b, 1])
        gates[t, b, 0], gates[t, b, 1] = z, r
        real = not has_mask or mask[t, b] != 0
        for j in range(np.uint64(H)):
            h_tilde = tanh(x_proj[t, b, two + j] + r * s[b, two + j])
            gates[t, b, two + j] = h_tilde
            h[t, b, j] = (one - z) * h_prev[b, j] + z * h_tilde if real else h_prev[b, j]


@register_kernel("sgu_forward", "cpu")
def sgu_forward(x_proj, U, h0, mask):
    """`minirec.kernels.sgu.sgu_forward` on the CPU: returns (h (T, B, H), gates (T, B, H + 2))."""
    T, B, H = dim(x_proj, 0), dim(x_proj, 1), dim(h0, 1)
    dtype = check_args("sgu_forward", x_proj=(x_proj, (T, B, H + 2)), U=(U, (H, H + 2)), h0=(h0, (B, H)),
                       mask=(mask, (T, B)))
    x_proj, U, h0 = contiguous(x_proj, dtype), contiguous(U, dtype), contiguous(h0, dtype)
    mask, has_mask = optional(mask, dtype, 2)
    h, gates = np.empty((T, B, H), dtype), np.empty((T, B, H + 2), dtype)
    s = np.empty((B, H + 2), dtype)
    for t in range(T):
        h_prev = _previous(h, h0, t)
        np.matmul(h_prev, U, out=s)
        _sgu_step(t, x_proj, s, h_prev, mask, has_mask, gates, h)
    return h, gates


@kernel_jit
def _sgu_backward_step(t, gates, h_prev, s_h, mask, has_mask, grad_y, delta, grad_x, grad_s, partial):
    """δ += m ȳ_t; the step's ∂x_proj, ∂s (a scalar gate gathers the gradient of its whole row)
    and partial = dh (1 − z)."""
    B, H = h_prev.shape
    one, zero, two = typed(1, h_prev), typed(0, h_prev), np.uint64(2)
    for b in range(B):
        real = not has_mask or mask[t, b] != 0
        z, r = gates[t, b, 0], gates[t, b, 1]
        sum_z, sum_r = zero, zero
        for j in range(np.uint64(H)):
            if real:
                delta[b, j] += grad_y[t, b, j]
            dh = delta[b, j] if real else zero  # no parameter or input gradient at a padded step
            h_tilde = gates[t, b, two + j]
            da_h = dh * z * (one - h_tilde * h_tilde)
            sum_z += dh * (h_tilde - h_prev[b, j])
            sum_r += da_h * s_h[t, b, j]
            grad_x[t, b, two + j] = da_h
            grad_s[t, b, two + j] = r * da_h
            partial[b, j] = dh * (one - z)
        grad_x[t, b, 0] = grad_s[t, b, 0] = sum_z * z * (one - z)
        grad_x[t, b, 1] = grad_s[t, b, 1] = sum_r * r * (one - r)


@register_kernel("sgu_backward", "cpu")
def sgu_backward(U, h0, mask, h, gates, grad_y, grad_h_last):
    """`minirec.kernels.sgu.sgu_backward` on the CPU: returns (grad_x_proj, grad_U, grad_h0)."""
    T, B, H = dim(h, 0), dim(h, 1), dim(h, 2)
    dtype = check_args("sgu_backward", U=(U, (H, H + 2)), h0=(h0, (B, H)), mask=(mask, (T, B)), h=(h, (T, B, H)),
                       gates=(gates, (T, B, H + 2)), grad_y=(grad_y, (T, B, H)), grad_h_last=(grad_h_last, (B, H)))
    h0, h, gates, grad_y = (contiguous(a, dtype) for a in (h0, h, gates, grad_y))
    mask, has_mask = optional(mask, dtype, 2)
    U = contiguous(U, dtype)
    U_T = contiguous(U.T, dtype)
    h_prev_all = _previous_all(h, h0)
    s_h = (h_prev_all.reshape(T * B, H) @ U[:, 2:]).reshape(T, B, H)  # h_{t−1} U_h for all t at once
    grad_x, grad_s = np.empty((T, B, H + 2), dtype), np.empty((T, B, H + 2), dtype)
    delta = contiguous(grad_h_last, dtype).copy()
    partial, product = np.empty((B, H), dtype), np.empty((B, H), dtype)
    for t in range(T - 1, -1, -1):
        _sgu_backward_step(t, gates, _previous(h, h0, t), s_h, mask, has_mask, grad_y, delta, grad_x, grad_s,
                           partial)
        np.matmul(grad_s[t], U_T, out=product)
        _carry(t, mask, has_mask, partial, product, delta)
    grad_U = h_prev_all.reshape(T * B, H).T @ grad_s.reshape(T * B, H + 2)
    return grad_x, grad_U, delta


# ---- LSTM: columns [i | f | o | g] --------------------------------------------------------------------
@kernel_jit
def _lstm_step(t, x_proj, s, h_prev, c_prev, mask, has_mask, gates, h, c):
    """i, f, o = σ(·), g = tanh(·) of x_proj[t] + h_{t−1} U; c_t = f c_{t−1} + i g; h_t = o tanh(c_t)
    (both carried at a padded step)."""
    B, H = h_prev.shape
    Hu = np.uint64(H)
    at_f, at_o, at_g = Hu, np.uint64(2 * H), np.uint64(3 * H)
    for b in range(B):
        real = not has_mask or mask[t, b] != 0
        for j in range(np.uint64(3 * H)):
            gates[t, b, j] = sigmoid(x_proj[t, b, j] + s[b, j])
        for j in range(Hu):
            gates[t, b, at_g + j] = tanh(x_proj[t, b, at_g + j] + s[b, at_g + j])
        for j in range(Hu):  # (reads gates only: a loop that also wrote them would not vectorise)
            c_t = gates[t, b, at_f + j] * c_prev[b, j] + gates[t, b, j] * gates[t, b, at_g + j]
            if real:
                c[t, b, j], h[t, b, j] = c_t, gates[t, b, at_o + j] * tanh(c_t)
            else:
                c[t, b, j], h[t, b, j] = c_prev[b, j], h_prev[b, j]


@register_kernel("lstm_forward", "cpu")
def lstm_forward(x_proj, U, h0, c0, mask):
    """`minirec.kernels.lstm.lstm_forward` on the CPU: returns (h, c (T, B, H), gates (T, B, 4H))."""
    T, B, H = dim(x_proj, 0), dim(x_proj, 1), dim(h0, 1)
    dtype = check_args("lstm_forward", x_proj=(x_proj, (T, B, 4 * H)), U=(U, (H, 4 * H)), h0=(h0, (B, H)),
                       c0=(c0, (B, H)), mask=(mask, (T, B)))
    x_proj, U, h0, c0 = (contiguous(a, dtype) for a in (x_proj, U, h0, c0))
    mask, has_mask = optional(mask, dtype, 2)
    h, c, gates = np.empty((T, B, H), dtype), np.empty((T, B, H), dtype), np.empty((T, B, 4 * H), dtype)
    s = np.empty((B, 4 * H), dtype)
    for t in range(T):
        h_prev = _previous(h, h0, t)
        np.matmul(h_prev, U, out=s)
        _lstm_step(t, x_proj, s, h_prev, _previous(c, c0, t), mask, has_mask, gates, h, c)
    return h, c, gates


@kernel_jit
def _lstm_backward_step(t, gates, c, c_prev, mask, has_mask, grad_y, delta_h, delta_c, grad_x, dh, dc, tanh_c):
    """δ_h += m ȳ_t; the four pre-activation gradients into grad_x[t]; δ_c ← dc f (kept if padded).
    dh, dc, tanh_c (B, H) are scratch: one block of grad_x per loop is what vectorises."""
    B, H = c_prev.shape
    one, zero = typed(1, c_prev), typed(0, c_prev)
    at_f, at_o, at_g = np.uint64(H), np.uint64(2 * H), np.uint64(3 * H)
    for b in range(B):
        real = not has_mask or mask[t, b] != 0
        for j in range(np.uint64(H)):
            if real:
                delta_h[b, j] += grad_y[t, b, j]
            dh_j = delta_h[b, j] if real else zero  # no parameter or input gradient at a padded step
            tc = tanh(c[t, b, j])
            o = gates[t, b, at_o + j]
            dc_j = (delta_c[b, j] if real else zero) + dh_j * o * (one - tc * tc)  # c_t also reaches L via h_t
            dh[b, j], dc[b, j], tanh_c[b, j] = dh_j, dc_j, tc
            if real:
                delta_c[b, j] = dc_j * gates[t, b, at_f + j]
        for j in range(np.uint64(H)):
            i = gates[t, b, j]
            grad_x[t, b, j] = dc[b, j] * gates[t, b, at_g + j] * i * (one - i)
        for j in range(np.uint64(H)):
            f = gates[t, b, at_f + j]
            grad_x[t, b, at_f + j] = dc[b, j] * c_prev[b, j] * f * (one - f)
        for j in range(np.uint64(H)):
            o = gates[t, b, at_o + j]
            grad_x[t, b, at_o + j] = dh[b, j] * tanh_c[b, j] * o * (one - o)
        for j in range(np.uint64(H)):
            g = gates[t, b, at_g + j]
            grad_x[t, b, at_g + j] = dc[b, j] * gates[t, b, j] * (one - g * g)


@register_kernel("lstm_backward", "cpu")
def lstm_backward(U, h0, c0, mask, h, c, gates, grad_y, grad_h_last, grad_c_last):
    """`minirec.kernels.lstm.lstm_backward` on the CPU: returns (grad_x_proj, grad_U, grad_h0, grad_c0)."""
    T, B, H = dim(h, 0), dim(h, 1), dim(h, 2)
    dtype = check_args("lstm_backward", U=(U, (H, 4 * H)), h0=(h0, (B, H)), c0=(c0, (B, H)), mask=(mask, (T, B)),
                       h=(h, (T, B, H)), c=(c, (T, B, H)), gates=(gates, (T, B, 4 * H)), grad_y=(grad_y, (T, B, H)),
                       grad_h_last=(grad_h_last, (B, H)), grad_c_last=(grad_c_last, (B, H)))
    h0, c0, h, c, gates, grad_y = (contiguous(a, dtype) for a in (h0, c0, h, c, gates, grad_y))
    mask, has_mask = optional(mask, dtype, 2)
    U_T = contiguous(U.T, dtype)
    grad_x = np.empty((T, B, 4 * H), dtype)
    delta_h, delta_c = contiguous(grad_h_last, dtype).copy(), contiguous(grad_c_last, dtype).copy()
    zeros, product = np.zeros((B, H), dtype), np.empty((B, H), dtype)
    scratch = [np.empty((B, H), dtype) for _ in range(3)]
    for t in range(T - 1, -1, -1):
        _lstm_backward_step(t, gates, c, _previous(c, c0, t), mask, has_mask, grad_y, delta_h, delta_c, grad_x,
                            *scratch)
        np.matmul(grad_x[t], U_T, out=product)
        _carry(t, mask, has_mask, zeros, product, delta_h)
    grad_U = _previous_all(h, h0).reshape(T * B, H).T @ grad_x.reshape(T * B, 4 * H)
    return grad_x, grad_U, delta_h, delta_c


# ---- ATR ---------------------------------------------------------------------------------------------
@kernel_jit
def _atr_step(t, p, s, b_q, h_prev, mask, has_mask, h, i_all, f_all):
    """q = h_{t−1} U + b_q; i = σ(p + q), f = σ(p − q); h_t = i p + f h_{t−1} (h_{t−1} if padded)."""
    B, H = h_prev.shape
    for b in range(B):
        real = not has_mask or mask[t, b] != 0
        for j in range(np.uint64(H)):
            q = s[b, j] + b_q[j]
            p_t = p[t, b, j]
            i = sigmoid(p_t + q)
            f = sigmoid(p_t - q)
            i_all[t, b, j], f_all[t, b, j] = i, f
            h[t, b, j] = i * p_t + f * h_prev[b, j] if real else h_prev[b, j]


@register_kernel("atr_forward", "cpu")
def atr_forward(p, U, b_q, h0, mask):
    """`minirec.kernels.atr.atr_forward` on the CPU: returns (h, i, f), each (T, B, H)."""
    T, B, H = dim(p, 0), dim(p, 1), dim(p, 2)
    dtype = check_args("atr_forward", p=(p, (T, B, H)), U=(U, (H, H)), b_q=(b_q, (H,)), h0=(h0, (B, H)),
                       mask=(mask, (T, B)))
    p, U, b_q, h0 = (contiguous(a, dtype) for a in (p, U, b_q, h0))
    mask, has_mask = optional(mask, dtype, 2)
    h, i, f = (np.empty((T, B, H), dtype) for _ in range(3))
    s = np.empty((B, H), dtype)
    for t in range(T):
        h_prev = _previous(h, h0, t)
        np.matmul(h_prev, U, out=s)
        _atr_step(t, p, s, b_q, h_prev, mask, has_mask, h, i, f)
    return h, i, f


@kernel_jit
def _atr_backward_step(t, p, h_prev, i_all, f_all, mask, has_mask, grad_y, d, grad_p, grad_q, partial):
    """e = m (ȳ_t + d); ∂p_t, ∂q_t; partial = e f."""
    B, H = h_prev.shape
    one, zero = typed(1, h_prev), typed(0, h_prev)
    for b in range(B):
        real = not has_mask or mask[t, b] != 0
        for j in range(np.uint64(H)):
            e = grad_y[t, b, j] + d[b, j] if real else zero
            i, f = i_all[t, b, j], f_all[t, b, j]
            grad_a_i = e * p[t, b, j] * (i * (one - i))
            grad_a_f = e * h_prev[b, j] * (f * (one - f))
            grad_p[t, b, j] = e * i + grad_a_i + grad_a_f
            grad_q[t, b, j] = grad_a_i - grad_a_f
            partial[b, j] = e * f


@register_kernel("atr_backward", "cpu")
def atr_backward(p, U, h0, h, i, f, mask, grad_y, grad_h_last):
    """`minirec.kernels.atr.atr_backward` on the CPU: returns (grad_p, grad_U, grad_b_q, grad_h0)."""
    T, B, H = dim(p, 0), dim(p, 1), dim(p, 2)
    dtype = check_args("atr_backward", p=(p, (T, B, H)), U=(U, (H, H)), h0=(h0, (B, H)), h=(h, (T, B, H)),
                       i=(i, (T, B, H)), f=(f, (T, B, H)), mask=(mask, (T, B)), grad_y=(grad_y, (T, B, H)),
                       grad_h_last=(grad_h_last, (B, H)))
    p, h0, h, i, f, grad_y = (contiguous(a, dtype) for a in (p, h0, h, i, f, grad_y))
    mask, has_mask = optional(mask, dtype, 2)
    U_T = contiguous(U.T, dtype)
    grad_p, grad_q = np.empty((T, B, H), dtype), np.empty((T, B, H), dtype)
    d = contiguous(grad_h_last, dtype).copy()
    partial, product = np.empty((B, H), dtype), np.empty((B, H), dtype)
    for t in range(T - 1, -1, -1):
        _atr_backward_step(t, p, _previous(h, h0, t), i, f, mask, has_mask, grad_y, d, grad_p, grad_q, partial)
        np.matmul(grad_q[t], U_T, out=product)
        _carry(t, mask, has_mask, partial, product, d)
    flat_q = grad_q.reshape(T * B, H)
    grad_U = _previous_all(h, h0).reshape(T * B, H).T @ flat_q
    return grad_p, grad_U, flat_q.sum(axis=0), d
