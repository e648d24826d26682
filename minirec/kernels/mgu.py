"""MGU recurrence loops (reference): the per-step work left after the input projection.

The cell (minirec/cells/mgu.py) projects the whole sequence once, x_proj = x W + b, and these
loops do the rest. Column blocks, in x_proj, U and the saved gates alike: [f | h̃], H each.

    f_t = σ(x_proj[t, f] + h_{t−1} U_f)
    h̃_t = tanh(x_proj[t, h̃] + (f_t ⊙ h_{t−1}) U_h)
    h_t = (1 − f_t) ⊙ h_{t−1} + f_t ⊙ h̃_t        (kept as h_{t−1} at a padded step)

Both loops are array-agnostic (NumPy or CuPy); faster kernels register beside them under the
same names and signatures.
"""

from __future__ import annotations

from minirec import backend
from minirec.kernels import register_kernel
from minirec.numerics import stable_sigmoid

__all__ = ["mgu_forward", "mgu_backward"]


@register_kernel("mgu_forward", "reference")
def mgu_forward(x_proj, U, h0, mask):
    """Run the MGU over time.

    Inputs: ``x_proj`` (T, B, 2H) the projected inputs x_t W + b; ``U`` (H, 2H) the recurrent
    weights; ``h0`` (B, H); ``mask`` (T, B) of 0/1 in x_proj's dtype, or None.
    Returns ``h`` (T, B, H), the state after every step (padding rule applied), and
    ``gates`` (T, B, 2H) = [f | h̃] at every step: with h and h0, all the backward needs.
    """
    xp = backend.get_xp(x_proj, U, h0)
    T, B, H2 = x_proj.shape
    H = H2 // 2
    U_f = xp.ascontiguousarray(U[:, :H])  # contiguous once, not a strided copy per step
    U_h = xp.ascontiguousarray(U[:, H:])
    h = xp.empty((T, B, H), dtype=x_proj.dtype)
    gates = xp.empty((T, B, 2 * H), dtype=x_proj.dtype)
    h_prev = h0
    for t in range(T):
        f = stable_sigmoid(xp, x_proj[t, :, :H] + h_prev @ U_f)
        h_tilde = xp.tanh(x_proj[t, :, H:] + (f * h_prev) @ U_h)
        h_new = (1 - f) * h_prev + f * h_tilde
        if mask is not None:
            m = mask[t][:, None]
            h_new = m * h_new + (1 - m) * h_prev
        gates[t, :, :H] = f
        gates[t, :, H:] = h_tilde
        h[t] = h_new
        h_prev = h[t]
    return h, gates


@register_kernel("mgu_backward", "reference")
def mgu_backward(U, h0, mask, h, gates, grad_y, grad_h_last):
    """Backpropagation through time for `mgu_forward`.

    Inputs: ``U``, ``h0``, ``mask`` as given to the forward; ``h``, ``gates`` as it returned;
    ``grad_y`` (T, B, H) the gradient of the outputs y_t = m_t·h_t; ``grad_h_last`` (B, H).
    Returns ``grad_x_proj`` (T, B, 2H), ``grad_U`` (H, 2H), ``grad_h0`` (B, H).

    δ (B, H) holds ∂L/∂h_t; each step turns it into ∂L/∂h_{t−1}. The pre-activation gradients
    are the gradient of x_proj[t]; dU = Σ_t [h_{t−1} | f_t ⊙ h_{t−1}]ᵀ ∂a_t after the loop.
    """
    xp = backend.get_xp(U, h0, h, grad_y)
    T, B, H = h.shape
    U_f_T = xp.ascontiguousarray(U[:, :H].T)
    U_h_T = xp.ascontiguousarray(U[:, H:].T)
    h_prev_all = xp.concatenate([h0[None], h[:-1]], axis=0)[:T]
    grad_x_proj = xp.empty((T, B, 2 * H), dtype=h.dtype)
    delta = grad_h_last.copy()
    for t in range(T - 1, -1, -1):
        h_prev = h_prev_all[t]
        f, h_tilde = gates[t, :, :H], gates[t, :, H:]
        if mask is None:
            delta = delta + grad_y[t]
            dh = delta
        else:
            m = mask[t][:, None]
            delta = delta + m * grad_y[t]
            dh = m * delta  # zero at a padded step
        da_h = dh * f * (1 - h_tilde * h_tilde)
        d_fh = da_h @ U_h_T  # ∂L/∂(f ⊙ h_{t−1})
        df = dh * (h_tilde - h_prev) + d_fh * h_prev  # f acts twice: as update gate and as reset
        da_f = df * f * (1 - f)
        grad_x_proj[t, :, :H] = da_f
        grad_x_proj[t, :, H:] = da_h
        through_step = dh * (1 - f) + d_fh * f + da_f @ U_f_T
        delta = through_step if mask is None else through_step + (1 - m) * delta
    grad_U = xp.empty_like(U)
    flat = grad_x_proj.reshape(T * B, 2 * H)
    grad_U[:, :H] = h_prev_all.reshape(T * B, H).T @ flat[:, :H]
    fh = gates[:, :, :H] * h_prev_all
    grad_U[:, H:] = fh.reshape(T * B, H).T @ flat[:, H:]
    return grad_x_proj, grad_U, delta
