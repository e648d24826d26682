"""FOFE: fixed-size ordinally-forgetting encoding (Zhang et al. 2015; Wang & Jiang 2019 §3.2).

    h_0 = 0,   h_t = α·h_{t−1} + x_t,   0 < α < 1 a hyper-parameter (0.7–0.9 in the paper).

No trainable parameter: the "lowest" recurrent layer of "The lower the simpler". Unrolled,
h_t = Σ_{s≤t} α^{t−s} x_s: one product with the lower-triangular matrix L[t, s] = α^{t−s}
(`fofe_matrix`, `fofe_closed_form`). The hidden size equals the input size.

With a mask m_t ∈ {0, 1} (padding carries the state), the recurrence is the linear scan
h_t = a_t·h_{t−1} + b_t with a_t = m_t·α + (1 − m_t) and b_t = m_t·x_t, so the fused Function
is a call to `linear_scan` and its backward a reverse scan (chapter 2, chapter 6):
    δ_t = ∂L/∂h_t (total) = m_t·ȳ_t + a_{t+1}·δ_{t+1}  (+ the gradient of h_last at t = T),
    ∂L/∂x_t = m_t·δ_t,    ∂L/∂h_0 = a_1·δ_1.
"""

from __future__ import annotations

from minirec import backend
from minirec.autograd.function import Function, Tensor
from minirec.cells.base import Cell, mask_array, register
from minirec.kernels import get_kernel
from minirec.kernels import scan as _scan  # noqa: F401 - registers the linear-scan kernels

__all__ = ["FOFE", "FOFERecurrence", "fofe_matrix", "fofe_closed_form"]


def _check_alpha(alpha):
    if not 0 < alpha < 1:
        raise ValueError(f"FOFE alpha must lie in (0, 1), got {alpha}")


class FOFERecurrence(Function):
    """Fused FOFE over a whole sequence: (x, h0, mask) → (y, h_last)."""

    @staticmethod
    def forward(ctx, x, h0, mask, alpha):
        xp = backend.get_xp(x, h0)
        T = x.shape[0]
        if mask is None:
            a = xp.full(x.shape, alpha, dtype=x.dtype)
            b = x
        else:
            m = mask[:, :, None]
            a = xp.broadcast_to(m * alpha + (1 - m), x.shape)
            b = x * m
        h = get_kernel("linear_scan_forward", xp)(a, b, h0)
        y = h if mask is None else h * mask[:, :, None]
        h_last = h[T - 1] if T else h0.copy()
        ctx.save_for_backward(a, h, h0)
        ctx.mask = mask
        return y, h_last

    @staticmethod
    def backward(ctx, grad_y, grad_h_last):
        a, h, h0 = ctx.saved_arrays
        mask = ctx.mask
        grad_h = grad_y if mask is None else grad_y * mask[:, :, None]
        if grad_h.shape[0]:
            grad_h = grad_h.copy()
            grad_h[-1] += grad_h_last
            _, grad_b, grad_h0 = get_kernel("linear_scan_backward", backend.get_xp(h))(a, h, h0, grad_h)
        else:
            grad_b, grad_h0 = grad_h, grad_h_last
        grad_x = grad_b if mask is None else grad_b * mask[:, :, None]
        return grad_x, grad_h0, None


@register("fofe")
class FOFE(Cell):
    """FOFE layer: y_t = h_t; the state is h (B, D). ``hidden_size`` must equal ``input_size``."""

    def __init__(self, input_size: int, hidden_size: int | None = None, alpha: float = 0.8):
        hidden_size = input_size if hidden_size is None else hidden_size
        if hidden_size != input_size:
            raise ValueError(f"FOFE has no weights: hidden_size ({hidden_size}) must equal input_size ({input_size})")
        _check_alpha(alpha)
        super().__init__(input_size, hidden_size)
        self.alpha = float(alpha)

    @staticmethod
    def parameter_count(input_size: int, hidden_size: int, **options) -> int:
        """FOFE has no trainable parameter: 0."""
        return 0

    def run(self, x, h0, mask):
        return FOFERecurrence.apply(x, h0, mask_array(mask, x.data), alpha=self.alpha)

    def reference_step(self, x_t, h, t):
        h = h * self.alpha + x_t
        return h, h

    def extra_repr(self):
        return f"{self.input_size}, alpha={self.alpha}"


def fofe_matrix(T: int, alpha: float, xp=None, dtype=None):
    """L[t, s] = α^{t−s} for s ≤ t, else 0: h = L @ x over time (h_0 = 0)."""
    _check_alpha(alpha)
    xp = xp or backend.np
    dtype = dtype or backend.get_default_dtype()
    t = xp.arange(T)
    exponent = t[:, None] - t[None, :]
    return xp.where(exponent >= 0, alpha ** xp.maximum(exponent, 0).astype(dtype), 0).astype(dtype)


def fofe_closed_form(x: Tensor, alpha: float) -> Tensor:
    """All FOFE states at once, h = L x: one (T, T) @ (T, B·D) product (no mask, h_0 = 0)."""
    T, B, D = x.shape
    xp = backend.get_xp(x.data)
    L = Tensor(fofe_matrix(T, alpha, xp=xp, dtype=x.dtype))
    return (L @ x.reshape(T, B * D)).reshape(T, B, D)
