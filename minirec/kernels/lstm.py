"""LSTM recurrence loops (reference): the per-step work left after the input projection.

The cell (minirec/cells/lstm.py) projects the whole sequence once, x_proj = x W + b, and these
loops do the rest. Column blocks, in x_proj, U and the saved gates alike: [i | f | o | g], H each.

    i_t, f_t, o_t = σ(x_proj[t, i|f|o] + h_{t−1} U_{i|f|o}),   g_t = tanh(x_proj[t, g] + h_{t−1} U_g)
    c_t = f_t ⊙ c_{t−1} + i_t ⊙ g_t,   h_t = o_t ⊙ tanh(c_t)   (both kept at a padded step)

Both loops are array-agnostic (NumPy or CuPy); faster kernels register beside them under the
same names and signatures.
"""

from __future__ import annotations

from minirec import backend
from minirec.kernels import register_kernel
from minirec.numerics import stable_sigmoid

__all__ = ["lstm_forward", "lstm_backward"]


@register_kernel("lstm_forward", "reference")
def lstm_forward(x_proj, U, h0, c0, mask):
    """Run the LSTM over time.

    Inputs: ``x_proj`` (T, B, 4H) the projected inputs x_t W + b; ``U`` (H, 4H) the recurrent
    weights; ``h0``, ``c0`` (B, H); ``mask`` (T, B) of 0/1 in x_proj's dtype, or None.
    Returns ``h``, ``c`` (T, B, H), the states after every step (padding rule applied), and
    ``gates`` (T, B, 4H) = [i | f | o | g] at every step: with h0, c0, all the backward needs
    (it recomputes tanh(c_t) rather than storing it).
    """
    xp = backend.get_xp(x_proj, U, h0, c0)
    T, B, H4 = x_proj.shape
    H = H4 // 4
    h = xp.empty((T, B, H), dtype=x_proj.dtype)
    c = xp.empty((T, B, H), dtype=x_proj.dtype)
    gates = xp.empty((T, B, 4 * H), dtype=x_proj.dtype)
    h_prev, c_prev = h0, c0
    for t in range(T):
        a = x_proj[t] + h_prev @ U  # all four pre-activations in one product
        ifo = stable_sigmoid(xp, a[:, : 3 * H])
        i, f, o = ifo[:, :H], ifo[:, H : 2 * H], ifo[:, 2 * H :]
        g = xp.tanh(a[:, 3 * H :])
        c_new = f * c_prev + i * g
        h_new = o * xp.tanh(c_new)
        if mask is not None:
            m = mask[t][:, None]
            c_new = m * c_new + (1 - m) * c_prev
            h_new = m * h_new + (1 - m) * h_prev
        gates[t, :, : 3 * H] = ifo
        gates[t, :, 3 * H :] = g
        h[t], c[t] = h_new, c_new
        h_prev, c_prev = h[t], c[t]
    return h, c, gates


@register_kernel("lstm_backward", "reference")
def lstm_backward(U, h0, c0, mask, h, c, gates, grad_y, grad_h_last, grad_c_last):
    """Backpropagation through time for `lstm_forward`.

    Inputs: ``U``, ``h0``, ``c0``, ``mask`` as given to the forward; ``h``, ``c``, ``gates`` as it
    returned; ``grad_y`` (T, B, H) the gradient of the outputs y_t = m_t·h_t; ``grad_h_last``,
    ``grad_c_last`` (B, H) the gradients of the last state.
    Returns ``grad_x_proj`` (T, B, 4H), ``grad_U`` (H, 4H), ``grad_h0``, ``grad_c0`` (B, H).

    ``delta_h``, ``delta_c`` hold ∂L/∂h_t, ∂L/∂c_t; each step turns them into those of t − 1.
    The pre-activation gradients ∂a_t are the gradient of x_proj[t], and dU = Σ_t h_{t−1}ᵀ ∂a_t
    is one product over all steps after the loop.
    """
    xp = backend.get_xp(U, h0, c0, h, grad_y)
    T, B, H = h.shape
    U_T = U.T
    h_prev_all = xp.concatenate([h0[None], h[:-1]], axis=0)[:T]
    c_prev_all = xp.concatenate([c0[None], c[:-1]], axis=0)[:T]
    tanh_c = xp.tanh(c)  # = tanh(c_t) at every real step; padded steps get no gradient anyway
    grad_x_proj = xp.empty((T, B, 4 * H), dtype=h.dtype)
    delta_h, delta_c = grad_h_last.copy(), grad_c_last.copy()
    for t in range(T - 1, -1, -1):
        i, f = gates[t, :, :H], gates[t, :, H : 2 * H]
        o, g = gates[t, :, 2 * H : 3 * H], gates[t, :, 3 * H :]
        if mask is None:
            delta_h = delta_h + grad_y[t]
            dh, dc = delta_h, delta_c
        else:
            m = mask[t][:, None]
            delta_h = delta_h + m * grad_y[t]
            dh, dc = m * delta_h, m * delta_c  # zero at a padded step
        dc = dc + dh * o * (1 - tanh_c[t] * tanh_c[t])  # c_t also reaches L through h_t
        grad_x_proj[t, :, :H] = dc * g * i * (1 - i)
        grad_x_proj[t, :, H : 2 * H] = dc * c_prev_all[t] * f * (1 - f)
        grad_x_proj[t, :, 2 * H : 3 * H] = dh * tanh_c[t] * o * (1 - o)
        grad_x_proj[t, :, 3 * H :] = dc * i * (1 - g * g)
        through_h = grad_x_proj[t] @ U_T
        through_c = dc * f
        if mask is None:
            delta_h, delta_c = through_h, through_c
        else:
            delta_h = through_h + (1 - m) * delta_h
            delta_c = through_c + (1 - m) * delta_c
    grad_U = h_prev_all.reshape(T * B, H).T @ grad_x_proj.reshape(T * B, 4 * H)
    return grad_x_proj, grad_U, delta_h, delta_c
