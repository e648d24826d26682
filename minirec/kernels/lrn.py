"""Reference loops for the LRN family: LRN, gLRN, eLRN, oLRN (Zhang & Sennrich, ACL 2019).

All four are elementwise recurrences on h (B, H) driven by a projection z = x W + b computed
outside for the whole sequence. One loop (`_forward`, `_backward`) serves the four; a
``variant`` string picks the gates. The registered kernels are thin wrappers with explicit
signatures, so a faster implementation can replace one variant without touching the others.

Notation (paper symbols; m_t is the (B, 1) mask column, 1 = real token):

    f_t = σ(q_t − h_{t−1})                      lrn, glrn, olrn  (eq. 3, 14)
    f_t = σ(−h_{t−1})                           elrn             (eq. 15)
    i_t = σ(k_t + h_{t−1})                      lrn, olrn        (eq. 2)
    i_t = 1 − f_t                               glrn, elrn       (eq. 14, 15)
    c_t = i_t ⊙ v_t + f_t ⊙ h_{t−1}
    ĥ_t = g(c_t)                                lrn, glrn, elrn  (eq. 4; g = tanh or identity)
    ĥ_t = o_t ⊙ c_t,  o_t = σ(w_t − c_t)        olrn             (eq. 11–13; w_t = W_o x_t)
    h_t = m_t ĥ_t + (1 − m_t) h_{t−1},   y_t = m_t ĥ_t            (padding carries the state)

Projection layout z (T, B, n·H), blocks of H columns in this order:
    lrn [q | k | v],   glrn [q | v],   elrn [v],   olrn [q | k | v | w].

Backward (BPTT). Let d_t = ∂L/∂h_t through everything after step t (d_T = grad of h_last).
At step t, the gradient reaching ĥ_t is e_t = m_t (ȳ_t + d_t); then
    ∂c:  tanh: e ⊙ (1 − ĥ²),  identity: e,  olrn: e ⊙ o − e ⊙ c ⊙ o(1 − o)  (and ∂w = e ⊙ c ⊙ o(1 − o))
    ∂v = ∂c ⊙ i,   ∂i = ∂c ⊙ v,   ∂f = ∂c ⊙ h_{t−1}
    separate gates: ∂k = ∂i ⊙ i(1 − i),  ∂q = ∂f ⊙ f(1 − f)
    coupled gates (i = 1 − f): ∂a_f = (∂f − ∂i) ⊙ f(1 − f) is the gradient of f's pre-activation (= ∂q)
    d_{t−1} = (1 − m_t) d_t + ∂c ⊙ f + ∂k − ∂a_f        (h_{t−1} enters k + h and q − h)
A padded step has e_t = 0: d passes through unchanged and no projection gradient is produced.
"""

from __future__ import annotations

from minirec import backend
from minirec.kernels import register_kernel
from minirec.numerics import stable_sigmoid

__all__ = [
    "VARIANTS", "ACTIVATIONS", "BLOCKS",
    "lrn_forward", "lrn_backward", "glrn_forward", "glrn_backward",
    "elrn_forward", "elrn_backward", "olrn_forward", "olrn_backward",
]

ACTIVATIONS = ("tanh", "identity")
# The projection blocks each variant reads, in the column order of z.
BLOCKS = {"lrn": ("q", "k", "v"), "glrn": ("q", "v"), "elrn": ("v",), "olrn": ("q", "k", "v", "w")}
VARIANTS = tuple(BLOCKS)


def _split(z, variant):
    """Views of z's blocks by name: {"q": (T, B, H), ...}."""
    names = BLOCKS[variant]
    H = z.shape[-1] // len(names)
    return {name: z[..., j * H:(j + 1) * H] for j, name in enumerate(names)}


def _check(z, h0, variant, activation):
    if variant not in BLOCKS:
        raise ValueError(f"unknown LRN variant {variant!r}; use one of {VARIANTS}")
    if variant == "olrn":
        if activation is not None:
            raise ValueError("olrn applies no activation g (eq. 13: h_t = o_t ⊙ c_t); pass activation=None")
    elif activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    n = len(BLOCKS[variant])
    if z.ndim != 3 or z.shape[-1] != n * h0.shape[-1] or z.shape[1] != h0.shape[0]:
        raise ValueError(f"{variant}: z must be (T, B, {n}·H) for h0 of shape (B, H); got z {z.shape}, h0 {h0.shape}")


def _forward(variant, z, h0, mask, activation):
    """The shared forward loop. Returns (h, i, f, o, c) with o, c None except for olrn and
    i None for the coupled-gate variants (i = 1 − f is not stored)."""
    _check(z, h0, variant, activation)
    xp = backend.get_xp(z, h0)
    blocks = _split(z, variant)
    q, k, v, w = (blocks.get(name) for name in ("q", "k", "v", "w"))
    T = z.shape[0]
    h = xp.empty_like(v)
    f_all = xp.empty_like(v)
    i_all = xp.empty_like(v) if k is not None else None
    o_all = xp.empty_like(v) if w is not None else None
    c_all = xp.empty_like(v) if w is not None else None
    m = None if mask is None else mask[:, :, None]
    h_prev = h0
    for t in range(T):
        f = stable_sigmoid(xp, q[t] - h_prev) if q is not None else stable_sigmoid(xp, -h_prev)
        i = stable_sigmoid(xp, k[t] + h_prev) if k is not None else 1 - f
        c = i * v[t] + f * h_prev
        if w is not None:
            o = stable_sigmoid(xp, w[t] - c)
            h_new = o * c
            o_all[t], c_all[t] = o, c
        else:
            h_new = xp.tanh(c) if activation == "tanh" else c
        if m is not None:
            h_new = h_new * m[t] + h_prev * (1 - m[t])
        h[t], f_all[t] = h_new, f
        if i_all is not None:
            i_all[t] = i
        h_prev = h[t]
    return h, i_all, f_all, o_all, c_all


def _backward(variant, z, h0, h, i_all, f_all, o_all, c_all, mask, grad_y, grad_h_last, activation):
    """The shared BPTT loop (module docstring). Returns (grad_z, grad_h0)."""
    xp = backend.get_xp(z, h0, h, grad_y)
    blocks = _split(z, variant)
    v = blocks["v"]
    grad_z = xp.zeros_like(z)
    grads = _split(grad_z, variant)  # views: writing grads["q"][t] fills grad_z
    T = z.shape[0]
    # Everything that does not depend on d_t, for the whole sequence at once.
    f_prime = f_all * (1 - f_all)
    separate = i_all is not None
    i_all = i_all if separate else 1 - f_all
    i_prime = i_all * (1 - i_all) if separate else None
    if variant == "olrn":
        o_prime = o_all * (1 - o_all)
    elif activation == "tanh":
        # g'(c) = 1 − tanh(c)² = 1 − h_t² at real steps; at padded steps e_t = 0 anyway.
        g_prime = 1 - h * h
    e_all = grad_y if mask is None else grad_y * mask[:, :, None]
    m = None if mask is None else mask[:, :, None]
    d = grad_h_last
    for t in range(T - 1, -1, -1):
        h_prev = h[t - 1] if t > 0 else h0
        e = e_all[t] + d if m is None else e_all[t] + d * m[t]
        if variant == "olrn":
            grad_w = e * c_all[t] * o_prime[t]
            grads["w"][t] = grad_w
            grad_c = e * o_all[t] - grad_w
        elif activation == "tanh":
            grad_c = e * g_prime[t]
        else:
            grad_c = e
        grads["v"][t] = grad_c * i_all[t]
        grad_i = grad_c * v[t]
        grad_f = grad_c * h_prev
        d_prev = grad_c * f_all[t]
        if separate:
            grad_k = grad_i * i_prime[t]
            grads["k"][t] = grad_k
            d_prev = d_prev + grad_k
            grad_a_f = grad_f * f_prime[t]
        else:
            grad_a_f = (grad_f - grad_i) * f_prime[t]
        if "q" in grads:
            grads["q"][t] = grad_a_f
        d_prev = d_prev - grad_a_f
        d = d_prev if m is None else d_prev + d * (1 - m[t])
    return grad_z, d


# ---- the registered kernels: one signature per variant -----------------------------------------
@register_kernel("lrn_forward", "reference")
def lrn_forward(z, h0, mask, activation="tanh"):
    """LRN forward (eqs. 1–4).

    z: (T, B, 3H) projection, blocks [q | k | v]; h0: (B, H); mask: (T, B) 0/1 of z's dtype or
    None; activation: "tanh" or "identity". Returns (h, i, f), each (T, B, H): h the carried
    states h_1..h_T, i and f the gates — all the backward needs besides z and h0.
    """
    h, i, f, _, _ = _forward("lrn", z, h0, mask, activation)
    return h, i, f


@register_kernel("lrn_backward", "reference")
def lrn_backward(z, h0, h, i, f, mask, grad_y, grad_h_last, activation="tanh"):
    """LRN backward. grad_y: (T, B, H) gradient of y; grad_h_last: (B, H).
    Returns (grad_z (T, B, 3H), grad_h0 (B, H))."""
    return _backward("lrn", z, h0, h, i, f, None, None, mask, grad_y, grad_h_last, activation)


@register_kernel("glrn_forward", "reference")
def glrn_forward(z, h0, mask, activation="tanh"):
    """gLRN forward (eq. 14: i = 1 − f). z: (T, B, 2H), blocks [q | v]. Returns (h, f)."""
    h, _, f, _, _ = _forward("glrn", z, h0, mask, activation)
    return h, f


@register_kernel("glrn_backward", "reference")
def glrn_backward(z, h0, h, f, mask, grad_y, grad_h_last, activation="tanh"):
    """gLRN backward. Returns (grad_z (T, B, 2H), grad_h0)."""
    return _backward("glrn", z, h0, h, None, f, None, None, mask, grad_y, grad_h_last, activation)


@register_kernel("elrn_forward", "reference")
def elrn_forward(z, h0, mask, activation="tanh"):
    """eLRN forward (eq. 15: f = σ(−h_{t−1}), i = 1 − f). z: (T, B, H), the block [v].
    Returns (h, f)."""
    h, _, f, _, _ = _forward("elrn", z, h0, mask, activation)
    return h, f


@register_kernel("elrn_backward", "reference")
def elrn_backward(z, h0, h, f, mask, grad_y, grad_h_last, activation="tanh"):
    """eLRN backward. Returns (grad_z (T, B, H), grad_h0)."""
    return _backward("elrn", z, h0, h, None, f, None, None, mask, grad_y, grad_h_last, activation)


@register_kernel("olrn_forward", "reference")
def olrn_forward(z, h0, mask):
    """oLRN forward (eqs. 11–13, no g). z: (T, B, 4H), blocks [q | k | v | w] with w = W_o x.
    Returns (h, i, f, o, c), each (T, B, H)."""
    return _forward("olrn", z, h0, mask, None)


@register_kernel("olrn_backward", "reference")
def olrn_backward(z, h0, h, i, f, o, c, mask, grad_y, grad_h_last):
    """oLRN backward. Returns (grad_z (T, B, 4H), grad_h0)."""
    return _backward("olrn", z, h0, h, i, f, o, c, mask, grad_y, grad_h_last, None)
