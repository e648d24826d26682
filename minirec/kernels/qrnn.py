"""QRNN's fo-pooling (Bradbury et al. 2017, window 1): the reference loops.

The projection U = x @ W (no bias) is done before these kernels; they add the bias, apply the
gate nonlinearities for every step at once, and run the only sequential part, the pooling
c_t = f_t ⊙ c_{t−1} + (1 − f_t) ⊙ z_t, a linear recurrence in c (`minirec.kernels.scan` solves
the same one; this loop keeps the kernel self-contained so faster ones can fuse everything).

Inputs (raw arrays of one backend, one float dtype; T steps, B sequences, H units):

* ``U`` (T, B, k·H), k = 3 or 4, block layout ``[W_z x | W_f x | W_o x (| W' x)]``; the first
  three blocks are read here.
* ``b`` (3H,) = [b_z | b_f | b_o]; ``c0`` (B, H).
* ``x_skip`` (T, B, H) the highway input (x or W' x), or None without the highway option.
* ``mask`` (T, B) of 0/1 in the dtype of U, or None: at a padded step c is carried and h is 0.
"""

from __future__ import annotations

from minirec import backend
from minirec.kernels import register_kernel
from minirec.numerics import stable_sigmoid

__all__ = ["qrnn_forward", "qrnn_backward"]


@register_kernel("qrnn_forward", "reference")
def qrnn_forward(U, b, c0, x_skip, mask):
    """Returns ``h`` (T, B, H) (0 at padded steps), ``c`` (T, B, H) every state (carried at
    padded steps; c_last = c[T−1]) and the gates ``z``, ``f``, ``o`` (T, B, H), which with c
    are what the backward needs."""
    xp = backend.get_xp(U, c0)
    T, H = U.shape[0], c0.shape[1]
    z = xp.tanh(U[:, :, :H] + b[:H])
    f = stable_sigmoid(xp, U[:, :, H : 2 * H] + b[H : 2 * H])
    o = stable_sigmoid(xp, U[:, :, 2 * H : 3 * H] + b[2 * H :])
    # With padding the pooling is c_t = a_t c_{t−1} + u_t, a_t = m f + 1 − m, u_t = m (1 − f) z.
    if mask is None:
        a, u = f, (1 - f) * z
    else:
        m = mask[:, :, None]
        a, u = m * f + (1 - m), m * (1 - f) * z
    c = xp.empty_like(z)
    c_prev = c0
    for t in range(T):
        c[t] = c_prev = a[t] * c_prev + u[t]
    h = o * c if x_skip is None else o * c + (1 - o) * x_skip
    if mask is not None:
        h = h * mask[:, :, None]
    return h, c, z, f, o


@register_kernel("qrnn_backward", "reference")
def qrnn_backward(grad_h, grad_c_last, c0, x_skip, c, z, f, o, mask):
    """BPTT through `qrnn_forward`, given ``grad_h`` (T, B, H) and ``grad_c_last`` (B, H).

    Returns ``grad_U3`` (T, B, 3H) (pre-activation gradients [g_z | g_f | g_o]), ``grad_b``
    (3H,), ``grad_x_skip`` (T, B, H) or None, and ``grad_c0`` (B, H). With ḣ_t = m_t ∂L/∂h_t:

        δ_t = ∂L/∂c_t = ḣ_t o_t + a_t+1 δ_t+1,   a_t = m_t f_t + 1 − m_t   (δ_T gets grad_c_last)
        g_z = m δ (1 − f)(1 − z²),   g_f = m δ (c_{t−1} − z) f (1 − f),
        g_o = ḣ (c − s) o (1 − o)   (c instead of c − s without highway),   ∂L/∂s = ḣ (1 − o)
    """
    xp = backend.get_xp(c, c0)
    T = c.shape[0]
    m = None if mask is None else mask[:, :, None]
    grad_h = grad_h if m is None else grad_h * m
    if x_skip is None:
        g_o, grad_x_skip = grad_h * c * o * (1 - o), None
    else:
        g_o, grad_x_skip = grad_h * (c - x_skip) * o * (1 - o), grad_h * (1 - o)
    delta_from_h = grad_h * o
    a = f if m is None else m * f + (1 - m)
    delta = xp.empty_like(c)
    carry = grad_c_last  # ∂L/∂c_t reaching step t from later steps
    for t in range(T - 1, -1, -1):
        delta[t] = delta_from_h[t] + carry
        carry = a[t] * delta[t]
    grad_c0 = carry
    delta_real = delta if m is None else delta * m  # no parameter gradient at padded steps
    c_prev = xp.concatenate([c0[None], c[:-1]], axis=0) if T else c
    g_z = delta_real * (1 - f) * (1 - z * z)
    g_f = delta_real * (c_prev - z) * f * (1 - f)
    grad_U3 = xp.concatenate([g_z, g_f, g_o], axis=-1)
    return grad_U3, grad_U3.sum(axis=(0, 1)), grad_x_skip, grad_c0
