"""SGU recurrence loops (reference): the per-step work left after the input projection.

The cell (minirec/cells/sgu.py) projects the whole sequence once, x_proj = x W + b, and these
loops do the rest. Column blocks, in x_proj, U and the saved gates alike: [z | r | h̃] of widths
1, 1 and H: the two gates are *scalars* per example.

    s_t      = h_{t−1} U                                   (B, H + 2): one product per step
    z_t, r_t = σ(x_proj[t, z|r] + s_t[z|r])                 (B, 1) each
    h̃_t      = tanh(x_proj[t, h̃] + r_t · s_t[h̃])            since (r_t h_{t−1}) U_h = r_t (h_{t−1} U_h)
    h_t      = (1 − z_t) · h_{t−1} + z_t · h̃_t              (kept as h_{t−1} at a padded step)

Because r_t is a scalar it can be applied after the product, so a step needs a single
h_{t−1} U instead of the GRU's two. Both loops are array-agnostic (NumPy or CuPy); faster
kernels register beside them under the same names and signatures.
"""

from __future__ import annotations

from minirec import backend
from minirec.kernels import register_kernel
from minirec.numerics import stable_sigmoid

__all__ = ["sgu_forward", "sgu_backward"]


@register_kernel("sgu_forward", "reference")
def sgu_forward(x_proj, U, h0, mask):
    """Run the SGU over time.

    Inputs: ``x_proj`` (T, B, H + 2) the projected inputs x_t W + b; ``U`` (H, H + 2) the
    recurrent weights; ``h0`` (B, H); ``mask`` (T, B) of 0/1 in x_proj's dtype, or None.
    Returns ``h`` (T, B, H), the state after every step (padding rule applied), and
    ``gates`` (T, B, H + 2) = [z | r | h̃] at every step: with h and h0, all the backward needs.
    """
    xp = backend.get_xp(x_proj, U, h0)
    T, B, H2 = x_proj.shape
    H = H2 - 2
    h = xp.empty((T, B, H), dtype=x_proj.dtype)
    gates = xp.empty((T, B, H + 2), dtype=x_proj.dtype)
    h_prev = h0
    for t in range(T):
        s = h_prev @ U
        zr = stable_sigmoid(xp, x_proj[t, :, :2] + s[:, :2])
        z, r = zr[:, 0:1], zr[:, 1:2]
        h_tilde = xp.tanh(x_proj[t, :, 2:] + r * s[:, 2:])
        h_new = (1 - z) * h_prev + z * h_tilde
        if mask is not None:
            m = mask[t][:, None]
            h_new = m * h_new + (1 - m) * h_prev
        gates[t, :, :2] = zr
        gates[t, :, 2:] = h_tilde
        h[t] = h_new
        h_prev = h[t]
    return h, gates


@register_kernel("sgu_backward", "reference")
def sgu_backward(U, h0, mask, h, gates, grad_y, grad_h_last):
    """Backpropagation through time for `sgu_forward`.

    Inputs: ``U``, ``h0``, ``mask`` as given to the forward; ``h``, ``gates`` as it returned;
    ``grad_y`` (T, B, H) the gradient of the outputs y_t = m_t·h_t; ``grad_h_last`` (B, H).
    Returns ``grad_x_proj`` (T, B, H + 2), ``grad_U`` (H, H + 2), ``grad_h0`` (B, H).

    δ (B, H) holds ∂L/∂h_t. ``grad_s`` (T, B, H + 2) holds ∂L/∂s_t: equal to ∂x_proj_t on the
    gate columns and r_t ∂a_h on the candidate block, so dU = Σ_t h_{t−1}ᵀ ∂s_t is one product
    after the loop. s_t[h̃] = h_{t−1} U_h, needed for ∂r, is recomputed for all t in one product
    rather than stored by the forward.
    """
    xp = backend.get_xp(U, h0, h, grad_y)
    T, B, H = h.shape
    U_T = U.T
    h_prev_all = xp.concatenate([h0[None], h[:-1]], axis=0)[:T]
    s_h_all = (h_prev_all.reshape(T * B, H) @ U[:, 2:]).reshape(T, B, H)
    grad_x_proj = xp.empty((T, B, H + 2), dtype=h.dtype)
    grad_s = xp.empty((T, B, H + 2), dtype=h.dtype)
    delta = grad_h_last.copy()
    for t in range(T - 1, -1, -1):
        h_prev = h_prev_all[t]
        z, r, h_tilde = gates[t, :, 0:1], gates[t, :, 1:2], gates[t, :, 2:]
        if mask is None:
            delta = delta + grad_y[t]
            dh = delta
        else:
            m = mask[t][:, None]
            delta = delta + m * grad_y[t]
            dh = m * delta  # zero at a padded step
        da_h = dh * z * (1 - h_tilde * h_tilde)
        # A scalar gate gathers the gradient of all H units it multiplies: a sum over features.
        da_z = (dh * (h_tilde - h_prev)).sum(axis=1, keepdims=True) * z * (1 - z)
        da_r = (da_h * s_h_all[t]).sum(axis=1, keepdims=True) * r * (1 - r)
        grad_x_proj[t, :, 0:1] = da_z
        grad_x_proj[t, :, 1:2] = da_r
        grad_x_proj[t, :, 2:] = da_h
        grad_s[t, :, :2] = grad_x_proj[t, :, :2]
        grad_s[t, :, 2:] = r * da_h
        through_step = dh * (1 - z) + grad_s[t] @ U_T
        delta = through_step if mask is None else through_step + (1 - m) * delta
    grad_U = h_prev_all.reshape(T * B, H).T @ grad_s.reshape(T * B, H + 2)
    return grad_x_proj, grad_U, delta
