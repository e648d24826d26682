"""GRU recurrence loops (reference): the per-step work left after the input projection.

The cell (minirec/cells/gru.py) projects the whole sequence once, x_proj = x W + b, and these
loops do the rest. Column blocks, in x_proj, U and the saved gates alike: [z | r | h̃], H each.

    z_t, r_t = σ(x_proj[t, z|r] + h_{t−1} U_{z|r})
    h̃_t      = tanh(x_proj[t, h̃] + (r_t ⊙ h_{t−1}) U_h)
    h_t      = (1 − z_t) ⊙ h_{t−1} + z_t ⊙ h̃_t        (kept as h_{t−1} at a padded step)

Both loops are array-agnostic (NumPy or CuPy); faster kernels register beside them under the
same names and signatures.
"""

from __future__ import annotations

from minirec import backend
from minirec.kernels import register_kernel
from minirec.numerics import stable_sigmoid

__all__ = ["gru_forward", "gru_backward", "gru_reset_after_forward", "gru_reset_after_backward"]


@register_kernel("gru_forward", "reference")
def gru_forward(x_proj, U, h0, mask):
    """Run the GRU over time.

    Inputs: ``x_proj`` (T, B, 3H) the projected inputs x_t W + b; ``U`` (H, 3H) the recurrent
    weights; ``h0`` (B, H); ``mask`` (T, B) of 0/1 in x_proj's dtype, or None.
    Returns ``h`` (T, B, H), the state after every step (h_1 … h_T, padding rule applied), and
    ``gates`` (T, B, 3H) = [z | r | h̃] at every step: with h and h0, all the backward needs.
    """
    xp = backend.get_xp(x_proj, U, h0)
    T, B, H3 = x_proj.shape
    H = H3 // 3
    U_zr = xp.ascontiguousarray(U[:, : 2 * H])  # contiguous once, not a strided copy per step
    U_h = xp.ascontiguousarray(U[:, 2 * H :])
    h = xp.empty((T, B, H), dtype=x_proj.dtype)
    gates = xp.empty((T, B, 3 * H), dtype=x_proj.dtype)
    h_prev = h0
    for t in range(T):
        zr = stable_sigmoid(xp, x_proj[t, :, : 2 * H] + h_prev @ U_zr)
        z, r = zr[:, :H], zr[:, H:]
        h_tilde = xp.tanh(x_proj[t, :, 2 * H :] + (r * h_prev) @ U_h)
        h_new = (1 - z) * h_prev + z * h_tilde
        if mask is not None:
            m = mask[t][:, None]
            h_new = m * h_new + (1 - m) * h_prev
        gates[t, :, : 2 * H] = zr
        gates[t, :, 2 * H :] = h_tilde
        h[t] = h_new
        h_prev = h[t]
    return h, gates


@register_kernel("gru_backward", "reference")
def gru_backward(U, h0, mask, h, gates, grad_y, grad_h_last):
    """Backpropagation through time for `gru_forward`.

    Inputs: ``U``, ``h0``, ``mask`` as given to the forward; ``h``, ``gates`` as it returned;
    ``grad_y`` (T, B, H) the gradient of the outputs y_t = m_t·h_t; ``grad_h_last`` (B, H) the
    gradient of the last state.
    Returns ``grad_x_proj`` (T, B, 3H), ``grad_U`` (H, 3H), ``grad_h0`` (B, H).

    δ (B, H) holds ∂L/∂h_t; each step turns it into ∂L/∂h_{t−1}. The pre-activation gradients
    of step t are exactly the gradient of x_proj[t], so they are stored there, and dU is
    formed after the loop as one product over all steps: dU = Σ_t [h_{t−1} | r_t ⊙ h_{t−1}]ᵀ ∂a_t.
    """
    xp = backend.get_xp(U, h0, h, grad_y)
    T, B, H = h.shape
    U_zr_T = xp.ascontiguousarray(U[:, : 2 * H].T)
    U_h_T = xp.ascontiguousarray(U[:, 2 * H :].T)
    h_prev_all = xp.concatenate([h0[None], h[:-1]], axis=0)[:T]  # h_{t−1} for every t
    grad_x_proj = xp.empty((T, B, 3 * H), dtype=h.dtype)
    delta = grad_h_last.copy()
    for t in range(T - 1, -1, -1):
        h_prev = h_prev_all[t]
        z, r, h_tilde = gates[t, :, :H], gates[t, :, H : 2 * H], gates[t, :, 2 * H :]
        if mask is None:
            delta = delta + grad_y[t]
            dh = delta  # gradient reaching the new state
        else:
            m = mask[t][:, None]
            delta = delta + m * grad_y[t]
            dh = m * delta  # zero at a padded step: no parameter or input gradient there
        da_h = dh * z * (1 - h_tilde * h_tilde)
        d_rh = da_h @ U_h_T  # ∂L/∂(r ⊙ h_{t−1})
        da_z = dh * (h_tilde - h_prev) * z * (1 - z)
        da_r = d_rh * h_prev * r * (1 - r)
        grad_x_proj[t, :, :H] = da_z
        grad_x_proj[t, :, H : 2 * H] = da_r
        grad_x_proj[t, :, 2 * H :] = da_h
        through_step = dh * (1 - z) + d_rh * r + grad_x_proj[t, :, : 2 * H] @ U_zr_T
        delta = through_step if mask is None else through_step + (1 - m) * delta
    grad_U = xp.empty_like(U)
    flat = grad_x_proj.reshape(T * B, 3 * H)
    grad_U[:, : 2 * H] = h_prev_all.reshape(T * B, H).T @ flat[:, : 2 * H]
    rh = gates[:, :, H : 2 * H] * h_prev_all
    grad_U[:, 2 * H :] = rh.reshape(T * B, H).T @ flat[:, 2 * H :]
    return grad_x_proj, grad_U, delta


# ---- the reset-after form (cuDNN, PyTorch, Keras): r multiplies h U_h + b_n, not h -------------
#
#     z_t, r_t = σ(x_proj[t, z|r] + h_{t−1} U_{z|r})
#     n_t      = h_{t−1} U_h + b_n                      (the recurrent part of the candidate)
#     h̃_t      = tanh(x_proj[t, h̃] + r_t ⊙ n_t)
#     h_t      = (1 − z_t) ⊙ h_{t−1} + z_t ⊙ h̃_t
#
# All three column blocks of U now multiply the same h_{t−1}: one product per step in the
# forward, and dU = Σ_t h_{t−1}ᵀ [∂a_z | ∂a_r | ∂n] after the loop in the backward.


@register_kernel("gru_reset_after_forward", "reference")
def gru_reset_after_forward(x_proj, U, b_n, h0, mask):
    """Run the reset-after GRU over time.

    Inputs: ``x_proj`` (T, B, 3H), ``U`` (H, 3H), ``b_n`` (H,) the recurrent candidate bias,
    ``h0`` (B, H), ``mask`` (T, B) or None. Returns ``h`` (T, B, H) and ``gates`` (T, B, 4H) =
    [z | r | h̃ | n] at every step.
    """
    xp = backend.get_xp(x_proj, U, b_n, h0)
    T, B, H3 = x_proj.shape
    H = H3 // 3
    h = xp.empty((T, B, H), dtype=x_proj.dtype)
    gates = xp.empty((T, B, 4 * H), dtype=x_proj.dtype)
    h_prev = h0
    for t in range(T):
        recurrent = h_prev @ U  # (B, 3H): [z | r | n] pre-activations from h_{t−1}
        zr = stable_sigmoid(xp, x_proj[t, :, : 2 * H] + recurrent[:, : 2 * H])
        z, r = zr[:, :H], zr[:, H:]
        n = recurrent[:, 2 * H :] + b_n
        h_tilde = xp.tanh(x_proj[t, :, 2 * H :] + r * n)
        h_new = (1 - z) * h_prev + z * h_tilde
        if mask is not None:
            m = mask[t][:, None]
            h_new = m * h_new + (1 - m) * h_prev
        gates[t, :, : 2 * H] = zr
        gates[t, :, 2 * H : 3 * H] = h_tilde
        gates[t, :, 3 * H :] = n
        h[t] = h_new
        h_prev = h[t]
    return h, gates


@register_kernel("gru_reset_after_backward", "reference")
def gru_reset_after_backward(U, h0, mask, h, gates, grad_y, grad_h_last):
    """Backpropagation through time for `gru_reset_after_forward`.

    Returns ``grad_x_proj`` (T, B, 3H), ``grad_U`` (H, 3H), ``grad_b_n`` (H,), ``grad_h0`` (B, H).
    Per step, with dh the gradient reaching h_t:
        ∂a_h = dh ⊙ z ⊙ (1 − h̃²),   ∂n = ∂a_h ⊙ r,   ∂a_r = ∂a_h ⊙ n ⊙ r(1 − r),
        ∂a_z = dh ⊙ (h̃ − h_{t−1}) ⊙ z(1 − z),
        δ_{t−1} = dh ⊙ (1 − z) + [∂a_z | ∂a_r | ∂n] Uᵀ   (+ (1 − m) δ_t at a padded step).
    """
    xp = backend.get_xp(U, h0, h, grad_y)
    T, B, H = h.shape
    U_T = xp.ascontiguousarray(U.T)
    h_prev_all = xp.concatenate([h0[None], h[:-1]], axis=0)[:T]
    grad_x_proj = xp.empty((T, B, 3 * H), dtype=h.dtype)
    grad_recurrent = xp.empty((T, B, 3 * H), dtype=h.dtype)  # [∂a_z | ∂a_r | ∂n] per step
    delta = grad_h_last.copy()
    for t in range(T - 1, -1, -1):
        h_prev = h_prev_all[t]
        z, r = gates[t, :, :H], gates[t, :, H : 2 * H]
        h_tilde, n = gates[t, :, 2 * H : 3 * H], gates[t, :, 3 * H :]
        if mask is None:
            delta = delta + grad_y[t]
            dh = delta
        else:
            m = mask[t][:, None]
            delta = delta + m * grad_y[t]
            dh = m * delta
        da_h = dh * z * (1 - h_tilde * h_tilde)
        grad_recurrent[t, :, :H] = dh * (h_tilde - h_prev) * z * (1 - z)
        grad_recurrent[t, :, H : 2 * H] = da_h * n * r * (1 - r)
        grad_recurrent[t, :, 2 * H :] = da_h * r
        grad_x_proj[t, :, : 2 * H] = grad_recurrent[t, :, : 2 * H]
        grad_x_proj[t, :, 2 * H :] = da_h
        through_step = dh * (1 - z) + grad_recurrent[t] @ U_T
        delta = through_step if mask is None else through_step + (1 - m) * delta
    flat = grad_recurrent.reshape(T * B, 3 * H)
    grad_U = h_prev_all.reshape(T * B, H).T @ flat
    grad_b_n = flat[:, 2 * H :].sum(axis=0)
    return grad_x_proj, grad_U, grad_b_n, delta
