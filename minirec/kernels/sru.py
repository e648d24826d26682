"""SRU's elementwise recurrence (Lei et al. 2018, eqs. 1–4): the reference loops.

The matrix products are done before these kernels are called (U = x @ W_all, one product for
the whole sequence, §3.1); what remains is elementwise. Shapes: T steps, B sequences, H units.

Inputs shared by both kernels (raw arrays of one backend, one float dtype):

* ``U`` (T, B, k·H), k = 3 or 4, block layout ``[x_tilde | W_f x | W_r x (| W' x)]``; only the
  first three blocks are read here (the 4th, when present, is passed as ``x_skip``).
* ``x_skip`` (T, B, H): the highway input, x itself or W' x.
* ``v_f, v_r, b_f, b_r`` (H,); ``c0`` (B, H).
* ``mask`` (T, B) of 0/1 in the dtype of U, or None (no padding): at a padded step c is carried
  and h is 0.
* ``drop`` (B, H) inverted-dropout mask on the c-branch of h (0 or 1/(1 − p)), or None.
* ``alpha``: the highway scaling constant (a Python float).

Only the c recurrence needs a loop: once every c_t is known, r_t (which reads c_{t−1}) and
h_t are computed for all steps at once. Likewise the backward loop is a single reverse linear
scan δ_{t−1} ← J_t·δ_t + (terms known before the loop), J_t = ∂c_t/∂c_{t−1}.
"""

from __future__ import annotations

from minirec import backend
from minirec.kernels import register_kernel
from minirec.numerics import stable_sigmoid

__all__ = ["sru_forward", "sru_backward"]


def _previous(c, c0):
    """c_{t−1} for every t: (c0, c_1, …, c_{T−1})."""
    xp = backend.get_xp(c, c0)
    return xp.concatenate([c0[None], c[:-1]], axis=0) if c.shape[0] else c


@register_kernel("sru_forward", "reference")
def sru_forward(U, x_skip, v_f, v_r, b_f, b_r, c0, mask, drop, alpha):
    """Run eqs. (1)–(4) over the sequence.

    Returns ``h`` (T, B, H) (0 at padded steps), ``c`` (T, B, H) every state (carried at padded
    steps; c_last = c[T−1]), and the gates ``f``, ``r`` (T, B, H). The backward needs c, f and r.
    """
    xp = backend.get_xp(U, c0)
    T, H = U.shape[0], c0.shape[1]
    x_tilde = U[:, :, :H]
    u_f = U[:, :, H : 2 * H] + b_f  # the parts of the gate pre-activations known before the loop
    f = xp.empty_like(x_tilde)
    c = xp.empty_like(x_tilde)
    c_prev = c0
    for t in range(T):
        f[t] = stable_sigmoid(xp, u_f[t] + v_f * c_prev)  # (1)
        c_t = f[t] * c_prev + (1 - f[t]) * x_tilde[t]  # (2)
        if mask is not None:
            m = mask[t][:, None]
            c_t = m * c_t + (1 - m) * c_prev  # padded: carry the state
        c[t] = c_prev = c_t
    # (3) and (4) for all steps at once: nothing in them feeds the recurrence.
    r = stable_sigmoid(xp, U[:, :, 2 * H : 3 * H] + b_r + v_r * _previous(c, c0))
    c_out = c if drop is None else c * drop
    h = r * c_out + (1 - r) * (alpha * x_skip)
    if mask is not None:
        h = h * mask[:, :, None]
    return h, c, f, r


@register_kernel("sru_backward", "reference")
def sru_backward(grad_h, grad_c_last, U, x_skip, v_f, v_r, c0, c, f, r, mask, drop, alpha):
    """BPTT through `sru_forward`, given ``grad_h`` (T, B, H) and ``grad_c_last`` (B, H).

    Returns ``grad_U3`` (T, B, 3H) (gradients of the first three blocks of U),
    ``grad_x_skip`` (T, B, H), ``grad_v_f``, ``grad_v_r``, ``grad_b_f``, ``grad_b_r`` (H,) and
    ``grad_c0`` (B, H). With m_t the mask, d the dropout mask, c'_t = c_{t−1}:

        ḣ_t = m_t ∂L/∂h_t
        g_r,t = ḣ_t (d c_t − α s_t) r_t (1 − r_t)        (pre-activation of r_t)
        δ_t = ∂L/∂c_t = ḣ_t r_t d + g_r,t+1 v_r + J_t+1 δ_t+1     (δ_T gets grad_c_last)
        J_t = m_t (f_t + (c'_t − x̃_t) f_t (1 − f_t) v_f) + 1 − m_t
        g_f,t = m_t δ_t (c'_t − x̃_t) f_t (1 − f_t),   ∂L/∂x̃_t = m_t δ_t (1 − f_t)
        ∂L/∂s_t = ḣ_t (1 − r_t) α,   ∂L/∂v_f = Σ g_f c',  ∂L/∂v_r = Σ g_r c',  ∂L/∂b = Σ g
    """
    xp = backend.get_xp(U, c0)
    T, H = U.shape[0], c0.shape[1]
    x_tilde = U[:, :, :H]
    c_prev = _previous(c, c0)
    m = None if mask is None else mask[:, :, None]
    grad_h = grad_h if m is None else grad_h * m
    c_out = c if drop is None else c * drop
    # Everything that comes from h_t (eq. 4) is known before the loop.
    g_r = grad_h * (c_out - alpha * x_skip) * r * (1 - r)
    grad_x_skip = grad_h * (1 - r) * alpha
    delta_from_h = grad_h * r if drop is None else grad_h * r * drop
    # ∂c_t/∂c_{t−1} (diagonal) through both f_t and the blend in (2).
    df = f * (1 - f)
    jac = f + (c_prev - x_tilde) * df * v_f
    if m is not None:
        jac = m * jac + (1 - m)
    delta = xp.empty_like(c)
    carry = grad_c_last  # ∂L/∂c_t reaching step t from later steps
    for t in range(T - 1, -1, -1):
        delta[t] = delta_from_h[t] + carry
        carry = jac[t] * delta[t] + g_r[t] * v_r  # r_t also reads c_{t−1} (eq. 3)
    grad_c0 = carry
    delta_real = delta if m is None else delta * m  # no parameter gradient at padded steps
    g_f = delta_real * (c_prev - x_tilde) * df
    grad_x_tilde = delta_real * (1 - f)
    grad_U3 = xp.concatenate([grad_x_tilde, g_f, g_r], axis=-1)
    grad_v_f = (g_f * c_prev).sum(axis=(0, 1))
    grad_v_r = (g_r * c_prev).sum(axis=(0, 1))
    return grad_U3, grad_x_skip, grad_v_f, grad_v_r, g_f.sum(axis=(0, 1)), g_r.sum(axis=(0, 1)), grad_c0
