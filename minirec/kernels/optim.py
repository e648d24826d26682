"""The optimiser's whole-parameter passes on raw arrays: the Adam update (Kingma & Ba 2015,
Algorithm 1), in place, and the sum of squares behind gradient-norm clipping.

``adam_update`` is the ``reference`` kernel: NumPy/CuPy whole-array operations, the truth the
fused ``cpu`` kernel (`minirec.kernels.cpu.optim`) is tested against, bit for bit. The update is
memory-bound (a 16,000 × 300 embedding table is 19 MB per array, four arrays read and three
written): the reference makes about ten passes over the table, the fused kernel one.
"""

from __future__ import annotations

from minirec import backend
from minirec.kernels import register_kernel

__all__ = ["adam_update", "sum_of_squares"]


@register_kernel("adam_update")
def adam_update(param, grad, m, v, *, lr, beta1, beta2, eps, weight_decay, step):
    """One Adam step on ``param`` in place, with the moments ``m`` and ``v`` updated in place.

    g ← grad + weight_decay · param;  m ← β₁ m + (1 − β₁) g;  v ← β₂ v + (1 − β₂) g²;
    param ← param − lr · m̂ / (√v̂ + eps), with m̂ = m / (1 − β₁ᵗ), v̂ = v / (1 − β₂ᵗ), t = ``step``.
    Scalars enter the arithmetic in the arrays' dtype (NumPy's rule for Python scalars).
    """
    xp = backend.get_xp(param)
    g = grad + weight_decay * param if weight_decay else grad
    # In place, with one scratch array instead of eight temporaries.
    m *= beta1
    m += (1 - beta1) * g
    scratch = g * g
    scratch *= 1 - beta2
    v *= beta2
    v += scratch
    m_hat_scale = 1 / (1 - beta1**step)
    v_hat_scale = 1 / (1 - beta2**step)
    denominator = xp.multiply(v, v_hat_scale, out=scratch)  # √v̂ + eps
    xp.sqrt(denominator, out=denominator)
    denominator += eps
    update = m * (lr * m_hat_scale)
    update /= denominator
    param -= update


@register_kernel("sum_of_squares")
def sum_of_squares(x):
    """Σ x², each square in ``x``'s dtype (so a float32 square can overflow to inf, as the norm
    should say), summed in float64; a 0-d array on ``x``'s device (no host transfer)."""
    return (x * x).sum(dtype="float64")
