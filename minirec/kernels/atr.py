"""Reference loops for ATR, the addition-subtraction twin-gated recurrent unit (Zhang et al. 2018).

With p_t = x_t W + b_p computed outside for the whole sequence, each step is

    q_t = h_{t−1} U + b_q
    i_t = σ(p_t + q_t),   f_t = σ(p_t − q_t)
    ĥ_t = i_t ⊙ p_t + f_t ⊙ h_{t−1}
    h_t = m_t ĥ_t + (1 − m_t) h_{t−1},   y_t = m_t ĥ_t        (m_t: mask column, 1 = real token)

Backward (BPTT): d_t = ∂L/∂h_t through every later step (d_T = grad of h_last), e_t = m_t (ȳ_t + d_t):
    ∂a_i = e ⊙ p ⊙ i(1 − i),   ∂a_f = e ⊙ h_{t−1} ⊙ f(1 − f)       (a_i = p + q, a_f = p − q)
    ∂p_t = e ⊙ i + ∂a_i + ∂a_f,   ∂q_t = ∂a_i − ∂a_f
    d_{t−1} = (1 − m_t) d_t + e ⊙ f + ∂q_t Uᵀ
    ∂U = Σ_t h_{t−1}ᵀ ∂q_t,   ∂b_q = Σ_t Σ_batch ∂q_t
The loop only carries d and stores ∂q_t; ∂U is then one (H, T·B) @ (T·B, H) product.
"""

from __future__ import annotations

from minirec import backend
from minirec.kernels import register_kernel
from minirec.numerics import stable_sigmoid

__all__ = ["atr_forward", "atr_backward"]


@register_kernel("atr_forward", "reference")
def atr_forward(p, U, b_q, h0, mask):
    """ATR forward.

    p: (T, B, H) input projection; U: (H, H) recurrent weight (q = h U); b_q: (H,) recurrent
    bias; h0: (B, H); mask: (T, B) 0/1 of p's dtype, or None.
    Returns (h, i, f), each (T, B, H): the carried states h_1..h_T and the two gates, which is
    all the backward needs besides p, U and h0.
    """
    xp = backend.get_xp(p, U, b_q, h0)
    T = p.shape[0]
    h = xp.empty_like(p)
    i_all = xp.empty_like(p)
    f_all = xp.empty_like(p)
    m = None if mask is None else mask[:, :, None]
    h_prev = h0
    for t in range(T):
        q = h_prev @ U + b_q
        i = stable_sigmoid(xp, p[t] + q)
        f = stable_sigmoid(xp, p[t] - q)
        h_new = i * p[t] + f * h_prev
        if m is not None:
            h_new = h_new * m[t] + h_prev * (1 - m[t])
        h[t], i_all[t], f_all[t] = h_new, i, f
        h_prev = h[t]
    return h, i_all, f_all


@register_kernel("atr_backward", "reference")
def atr_backward(p, U, h0, h, i, f, mask, grad_y, grad_h_last):
    """ATR backward. grad_y: (T, B, H) gradient of y; grad_h_last: (B, H).

    Returns (grad_p (T, B, H), grad_U (H, H), grad_b_q (H,), grad_h0 (B, H)).
    """
    xp = backend.get_xp(p, U, h0, h, grad_y)
    T = p.shape[0]
    h_prev_all = xp.concatenate([h0[None], h[:-1]], axis=0)[:T]  # h_0..h_{T−1} ([:T]: T = 0)
    # What does not depend on d_t, for the whole sequence at once.
    i_prime = i * (1 - i)
    f_prime = f * (1 - f)
    e_all = grad_y if mask is None else grad_y * mask[:, :, None]
    m = None if mask is None else mask[:, :, None]
    grad_p = xp.empty_like(p)
    grad_q = xp.empty_like(p)
    U_T = U.T
    d = grad_h_last
    for t in range(T - 1, -1, -1):
        e = e_all[t] + d if m is None else e_all[t] + d * m[t]
        grad_a_i = e * p[t] * i_prime[t]
        grad_a_f = e * h_prev_all[t] * f_prime[t]
        grad_p[t] = e * i[t] + grad_a_i + grad_a_f
        grad_q[t] = grad_a_i - grad_a_f
        d_prev = e * f[t] + grad_q[t] @ U_T
        d = d_prev if m is None else d_prev + d * (1 - m[t])
    H = U.shape[0]
    grad_U = h_prev_all.reshape(-1, H).T @ grad_q.reshape(-1, H)
    grad_b_q = grad_q.reshape(-1, H).sum(axis=0)
    return grad_p, grad_U, grad_b_q, d
