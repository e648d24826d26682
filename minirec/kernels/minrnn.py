"""Reference kernels for minGRU and minLSTM (Feng et al. 2024): gate math + a linear scan.

Both cells are h_t = a_t ⊙ h_{t−1} + b_t with a_t, b_t functions of x_t alone, so a kernel is
(1) element-wise gate math over the whole (T, B, H) block at once, then (2) one call to a
solver of `minirec.kernels.scan`. Nothing here loops over time itself: the time loop (or the
Blelloch tree, or the log-space cumulative sums) lives in scan.py.

Modes (the ``mode`` argument of every kernel):

* ``"sequential"``: `scan.linear_scan(..., method="sequential")`, the loop over time;
* ``"parallel"``:   `scan.linear_scan(..., method="blelloch")`, Blelloch's parallel scan;
* ``"log"``:        `scan.linear_scan_log` on (log a, log b, log h0) (Heinsen 2023), h = exp(log h).
  The log needs b > 0 and h0 > 0: the candidate goes through g (below) and h0 must be positive.

g keeps the candidate positive (the paper's log-space model):
    g(x) = x + 0.5 (x ≥ 0),  σ(x) (x < 0);   log g(x) = log(x + 0.5) (x ≥ 0),  −softplus(−x) (x < 0);
    g′(x) = 1 (x ≥ 0),  σ(x)(1 − σ(x)) (x < 0)   (g is continuous at 0; g′ jumps there).
``g_activation=True`` applies g in the sequential/parallel modes too (log mode always does), so
all three modes compute the same function.

Padding (mask m_t ∈ {0, 1} of shape (T, B)): a padded step carries the state, i.e. it uses
a = 1, b = 0 (log a = 0, log b = −∞); the gates of real steps are a, b as computed.

Backward (every mode): with the effective coefficients ā_t = m_t a_t + (1 − m_t), the total
gradient δ_t = ∂L/∂h_t obeys δ_t = ∂L/∂h_t(direct) + ā_{t+1} δ_{t+1}: `scan.linear_scan_backward`
(reverse scan with shifted gates) gives ∂L/∂ā_t = δ_t h_{t−1}, ∂L/∂b̄_t = δ_t, ∂L/∂h0 = ā_1 δ_1;
the real steps' ∂L/∂a_t = m_t ∂L/∂ā_t, ∂L/∂b_t = m_t ∂L/∂b̄_t, then the gate chain rule.
The log mode reuses it exactly: its forward solves the same recurrence with a = exp(log a),
b = exp(log b) (only the arithmetic differs), so it is the same function of the pre-activations
and has the same gradient. Written through logcumsumexp: ∂ log h_t / ∂ log b_s =
b_s Π_{s<r≤t} a_r / h_t (the softmax weight of term s), hence
∂L/∂ log b_s = Σ_t (∂L/∂h_t · h_t) · b_s Π_{s<r≤t} a_r / h_t = b_s δ_s = b_s ∂L/∂b_s, and likewise
∂L/∂ log a_s = a_s δ_s h_{s−1} = a_s ∂L/∂a_s: the chain rule through exp, nothing more.

Kernel signatures (raw arrays of one backend, one floating dtype; T may be 0):

``mingru_forward(k, x_tilde, h0, mask, mode, g_activation) -> (h, z)``
    k, x_tilde (T, B, H): pre-activations of the gate and of the candidate; h0 (B, H); mask (T, B)
    of the dtype of k, or None. Returns h (T, B, H) = h_1..h_T (carried at padded steps) and the
    gate z = σ(k) (T, B, H), which the backward needs.
``mingru_backward(grad_h, h, h0, z, x_tilde, mask, mode, g_activation) -> (grad_k, grad_x_tilde, grad_h0)``
    grad_h (T, B, H): ∂L/∂h_t from outside the recurrence (the outputs and the last state).
``minlstm_forward(k_f, k_i, x_tilde, h0, mask, mode, g_activation) -> (h, f_prime)``
    f_prime = f/(f + i) (T, B, H), computed as σ(log f − log i).
``minlstm_backward(grad_h, h, h0, f_prime, k_f, k_i, x_tilde, mask, mode, g_activation)
  -> (grad_k_f, grad_k_i, grad_x_tilde, grad_h0)``
In log mode ``g_activation`` is ignored (g always applies) and h0 must be > 0 (the cell checks).
"""

from __future__ import annotations

from minirec import backend
from minirec.kernels import register_kernel, scan
from minirec.numerics import stable_sigmoid, stable_softplus

__all__ = [
    "MODES", "g", "log_g", "g_prime",
    "mingru_forward", "mingru_backward", "minlstm_forward", "minlstm_backward",
]

MODES = ("sequential", "parallel", "log")
_SCAN_METHOD = {"sequential": "sequential", "parallel": "blelloch", "log": "blelloch"}


def check_mode(mode):
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


# ---- the positive activation g ------------------------------------------------------------------
def g(xp, x):
    """g(x) = x + 0.5 for x ≥ 0, σ(x) for x < 0: positive, continuous, increasing."""
    return xp.where(x >= 0, x + 0.5, stable_sigmoid(xp, x))


def log_g(xp, x):
    """log g(x) without log of a negative number in the branch not taken."""
    return xp.where(x >= 0, xp.log(xp.maximum(x, 0) + 0.5), -stable_softplus(xp, -x))


def g_prime(xp, x):
    s = stable_sigmoid(xp, x)
    return xp.where(x >= 0, xp.ones_like(x), s * (1 - s))


def _candidate(xp, x_tilde, applies_g):
    """v = g(x̃) or x̃, and dv/dx̃."""
    if applies_g:
        return g(xp, x_tilde), g_prime(xp, x_tilde)
    return x_tilde, None


# ---- the masked scan shared by both cells ---------------------------------------------------------
def _scan(xp, a, b, h0, mask, mode, log_a=None, log_b=None):
    """h_1..h_T of h_t = ā_t h_{t−1} + b̄_t with padded steps carried (ā = 1, b̄ = 0)."""
    if mode == "log":
        if mask is not None:
            m = mask[:, :, None]
            log_a = log_a * m  # log 1 = 0 at padded steps
            log_b = xp.where(m > 0, log_b, -xp.inf)  # log 0 = −∞
        return xp.exp(scan.linear_scan_log(log_a, log_b, xp.log(h0)))
    if mask is not None:
        m = mask[:, :, None]
        a = a * m + (1 - m)
        b = b * m
    return scan.linear_scan(a, b, h0, method=_SCAN_METHOD[mode])


def _scan_backward(xp, a, h, h0, grad_h, mask, mode):
    """(∂L/∂a, ∂L/∂b, ∂L/∂h0) for the real-step coefficients a, b (zero at padded steps)."""
    a_bar = a if mask is None else a * mask[:, :, None] + (1 - mask[:, :, None])
    grad_a, grad_b, grad_h0 = scan.linear_scan_backward(a_bar, h, h0, grad_h, method=_SCAN_METHOD[mode])
    if mask is not None:
        grad_a = grad_a * mask[:, :, None]
        grad_b = grad_b * mask[:, :, None]
    return grad_a, grad_b, grad_h0


# ---- minGRU ------------------------------------------------------------------------------------
@register_kernel("mingru_forward", "reference")
def mingru_forward(k, x_tilde, h0, mask=None, mode="sequential", g_activation=False):
    """a = 1 − z = σ(−k), b = z ⊙ v with z = σ(k), v = g(x̃) or x̃; returns (h, z)."""
    check_mode(mode)
    xp = backend.get_xp(k, x_tilde, h0)
    z = stable_sigmoid(xp, k)
    if mode == "log":
        # log(1 − z) = −softplus(k), log z = −softplus(−k): no 1 − z rounding, no log 0.
        log_a = -stable_softplus(xp, k)
        log_b = -stable_softplus(xp, -k) + log_g(xp, x_tilde)
        return _scan(xp, None, None, h0, mask, mode, log_a, log_b), z
    v, _ = _candidate(xp, x_tilde, g_activation)
    a = stable_sigmoid(xp, -k)  # 1 − z, exact even where z rounds to 1
    return _scan(xp, a, z * v, h0, mask, mode), z


@register_kernel("mingru_backward", "reference")
def mingru_backward(grad_h, h, h0, z, x_tilde, mask=None, mode="sequential", g_activation=False):
    """∂a/∂k = −z(1 − z), ∂b/∂k = v z(1 − z), ∂b/∂x̃ = z v′:
    grad_k = z(1 − z)(grad_b v − grad_a), grad_x̃ = grad_b z v′."""
    check_mode(mode)
    xp = backend.get_xp(grad_h, h, h0)
    a = 1 - z
    grad_a, grad_b, grad_h0 = _scan_backward(xp, a, h, h0, grad_h, mask, mode)
    v, dv = _candidate(xp, x_tilde, g_activation or mode == "log")
    grad_k = z * a * (grad_b * v - grad_a)
    grad_x_tilde = grad_b * z if dv is None else grad_b * z * dv
    return grad_k, grad_x_tilde, grad_h0


# ---- minLSTM -----------------------------------------------------------------------------------
def _log_ratio(xp, k_f, k_i):
    """d = log f − log i = softplus(−k_i) − softplus(−k_f), so f′ = σ(d), i′ = σ(−d)."""
    return stable_softplus(xp, -k_i) - stable_softplus(xp, -k_f)


@register_kernel("minlstm_forward", "reference")
def minlstm_forward(k_f, k_i, x_tilde, h0, mask=None, mode="sequential", g_activation=False):
    """a = f′ = f/(f + i) = σ(d), b = i′ ⊙ v = (1 − f′) ⊙ v; returns (h, f′)."""
    check_mode(mode)
    xp = backend.get_xp(k_f, k_i, x_tilde, h0)
    d = _log_ratio(xp, k_f, k_i)
    f_prime = stable_sigmoid(xp, d)
    if mode == "log":
        # log f′ = log f − log(f + i) = −softplus(log i − log f) = −softplus(−d); log i′ = −softplus(d).
        log_a = -stable_softplus(xp, -d)
        log_b = -stable_softplus(xp, d) + log_g(xp, x_tilde)
        return _scan(xp, None, None, h0, mask, mode, log_a, log_b), f_prime
    v, _ = _candidate(xp, x_tilde, g_activation)
    i_prime = stable_sigmoid(xp, -d)  # 1 − f′ without rounding
    return _scan(xp, f_prime, i_prime * v, h0, mask, mode), f_prime


@register_kernel("minlstm_backward", "reference")
def minlstm_backward(grad_h, h, h0, f_prime, k_f, k_i, x_tilde, mask=None, mode="sequential", g_activation=False):
    """a = σ(d), b = (1 − σ(d)) v, d = softplus(−k_i) − softplus(−k_f):
    grad_d = f′ i′ (grad_a − grad_b v), grad_k_f = grad_d (1 − f), grad_k_i = −grad_d (1 − i),
    grad_x̃ = grad_b i′ v′ (1 − f = σ(−k_f), 1 − i = σ(−k_i): the derivatives of −softplus(−k))."""
    check_mode(mode)
    xp = backend.get_xp(grad_h, h, h0)
    grad_a, grad_b, grad_h0 = _scan_backward(xp, f_prime, h, h0, grad_h, mask, mode)
    v, dv = _candidate(xp, x_tilde, g_activation or mode == "log")
    i_prime = 1 - f_prime
    grad_d = f_prime * i_prime * (grad_a - grad_b * v)
    grad_k_f = grad_d * stable_sigmoid(xp, -k_f)
    grad_k_i = -grad_d * stable_sigmoid(xp, -k_i)
    grad_x_tilde = grad_b * i_prime if dv is None else grad_b * i_prime * dv
    return grad_k_f, grad_k_i, grad_x_tilde, grad_h0
