"""SRU: the Simple Recurrent Unit (Lei, Zhang, Wang, Dai & Artzi, EMNLP 2018, §3).

    f_t = σ(W_f x_t + v_f ⊙ c_{t−1} + b_f)                      (1)
    c_t = f_t ⊙ c_{t−1} + (1 − f_t) ⊙ (W x_t)                    (2)
    r_t = σ(W_r x_t + v_r ⊙ c_{t−1} + b_r)                      (3)
    h_t = r_t ⊙ c_t + (1 − r_t) ⊙ x_t · α                        (4)

The state is c (B, H) (``h0`` is c_0); the output is y_t = h_t. No matrix touches c, so the
three products W x_t, W_f x_t, W_r x_t for every step are ONE matrix product done before the
recurrence (§3.1): U = x @ W_all, and what is left (`SRURecurrence`) is elementwise.

Weight layout (stated because implementations differ). ``weight`` is (D, k·H) in plain BLOCK
layout: ``[W | W_f | W_r]`` (k = 3), or ``[W | W_f | W_r | W']`` (k = 4) when input_size ≠
hidden_size, where the highway term uses the projection W' x_t (no bias) in place of x_t. The
official implementation (asappresearch/sru) interleaves the k blocks per unit instead: column
j·k + i holds block i of unit j (ours: column i·H + j). Converting: ``official = ours.reshape(D,
k, H).transpose(0, 2, 1).reshape(D, H * k)`` and back ``ours = official.reshape(D, H, k)
.transpose(0, 2, 1).reshape(D, k * H)`` (`to_official_layout`, `from_official_layout`). The
official ``weight_c`` (2H) is [v_f; v_r] and its ``bias`` (2H) is [b_f; b_r]; here they are four
separate (H,) parameters.

Initialisation (§3.2). W_all ~ U(±√(3/d)), d = input_size (variance 1/d, every block); v_f, v_r ~
U(±√1.5) (variance 0.5, the official code's choice); b_f = 0; b_r = ``highway_bias`` (default 0;
−3 is common for language modelling). With ``rescale=True`` (default) the highway term is scaled
by the constant α = √(1 + 2·e^b), b = highway_bias (√3 at b = 0), chosen so that Var[h] ≈ Var[x]
at initialisation; with ``rescale=False`` α = 1 and the variance shrinks layer after layer
(measured at init, D = H = 256, x ~ N(0, 1): Var[h]/Var[x] ≈ 1.03 with α, 0.43 without, b = 0).
α is applied to x or to W' x alike (the official code instead folds α into W' at init when k = 4;
it also scales W_f, W_r by √0.5, W by √(1 − dropout), and all of W_all by 0.1 under layer norm —
none of which is done here).

Options.
* ``dropout`` p: in training mode, an inverted-dropout mask d (B, H), one per call and fixed
  over time (variational), on the c-branch of (4): h_t = r_t ⊙ (c_t ⊙ d) + (1 − r_t) ⊙ x_t · α.
  (The official kernel drops (c_t − x_t) instead, i.e. a dropped unit outputs the skip term.)
* ``layer_norm``: LayerNorm (minirec.nn.LayerNorm, autograd) of the input x before the
  projection, U = LN(x) @ W_all; the highway term keeps the raw x (the official "pre-norm"
  choice). Adds 2·input_size parameters.

Padding (mask m_t ∈ {0, 1}): at a padded step c_t = c_{t−1} and h_t = 0.

Backward (hand-derived, `minirec.kernels.sru.sru_backward`). With s_t the highway input, ḣ_t =
m_t ∂L/∂h_t and c'_t = c_{t−1}:
    g_r,t = ḣ_t ⊙ (d ⊙ c_t − α s_t) ⊙ r_t(1 − r_t),        ∂L/∂s_t = ḣ_t ⊙ (1 − r_t) α
    J_t = ∂c_t/∂c_{t−1} = m_t (f_t + (c'_t − x̃_t) ⊙ f_t(1 − f_t) ⊙ v_f) + (1 − m_t)
    δ_t = ∂L/∂c_t = ḣ_t ⊙ r_t ⊙ d + g_r,t+1 ⊙ v_r + J_t+1 ⊙ δ_t+1,   δ_T also gets ∂L/∂c_last
    g_f,t = m_t δ_t ⊙ (c'_t − x̃_t) ⊙ f_t(1 − f_t),       ∂L/∂x̃_t = m_t δ_t ⊙ (1 − f_t)
    ∂L/∂v_f = Σ_t g_f,t ⊙ c'_t,  ∂L/∂v_r = Σ_t g_r,t ⊙ c'_t,  ∂L/∂b_f = Σ g_f,  ∂L/∂b_r = Σ g_r,
    ∂L/∂c_0 = J_1 ⊙ δ_1 + g_r,1 ⊙ v_r;   ∂L/∂U = [∂L/∂x̃ | g_f | g_r (| ∂L/∂s)].
(sums over t and the batch). The gradient of W_all and x then follows from U = x @ W_all by autograd.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from minirec import backend
from minirec.autograd import ops
from minirec.autograd.function import Function, Tensor
from minirec.cells.base import Cell, mask_array, register
from minirec.kernels import get_kernel
from minirec.kernels import sru as _sru_kernels  # noqa: F401 - registers the reference kernels
from minirec.nn.layers import LayerNorm, uniform_parameter
from minirec.nn.module import Parameter

__all__ = ["SRU", "SRURecurrence", "scaling_correction", "to_official_layout", "from_official_layout"]


def scaling_correction(highway_bias: float) -> float:
    """α = √(1 + 2·exp(b)) (§3.2): √3 for b = 0."""
    return math.sqrt(1 + 2 * math.exp(highway_bias))


def to_official_layout(weight, hidden_size: int):
    """Our block layout (D, k·H) → the official per-unit interleaving (column j·k + i = block i, unit j)."""
    D, width = weight.shape
    k = width // hidden_size
    return weight.reshape(D, k, hidden_size).transpose(0, 2, 1).reshape(D, width)


def from_official_layout(weight, hidden_size: int):
    """The official per-unit interleaving (D, H·k) → our block layout [W | W_f | W_r (| W')]."""
    D, width = weight.shape
    k = width // hidden_size
    return weight.reshape(D, hidden_size, k).transpose(0, 2, 1).reshape(D, width)


class SRURecurrence(Function):
    """Fused SRU over a whole sequence: (U, x_skip, v_f, v_r, b_f, b_r, c0, mask, drop) → (h, c_last).

    ``U`` (T, B, k·H) is the projected input in block layout; ``x_skip`` (T, B, H) is the highway
    input x, or None when U has a 4th block W' x to use instead (read as a view, and its
    gradient returned as the 4th block of ∂L/∂U). ``mask`` (T, B) and ``drop`` (B, H) are arrays
    or None; ``alpha`` the highway scale. Gradients: U, x_skip, v_f, v_r, b_f, b_r, c0.
    """

    @staticmethod
    def forward(ctx, U, x_skip, v_f, v_r, b_f, b_r, c0, mask, drop, alpha=1.0):
        xp = backend.get_xp(U, c0)
        T, H = U.shape[0], c0.shape[1]
        k = U.shape[-1] // H
        if U.shape[-1] != k * H or k not in (3, 4) or (k == 4) != (x_skip is None):
            raise ValueError(
                f"SRURecurrence: U has {U.shape[-1]} features for H={H}: need 3H with x_skip, or 4H without"
            )
        skip = U[:, :, 3 * H :] if x_skip is None else x_skip
        h, c, f, r = get_kernel("sru_forward", xp)(U, skip, v_f, v_r, b_f, b_r, c0, mask, drop, alpha)
        ctx.save_for_backward(U, skip, v_f, v_r, c0, c, f, r)
        ctx.mask, ctx.drop, ctx.alpha, ctx.skip_from_U = mask, drop, alpha, x_skip is None
        c_last = c[T - 1] if T else c0.copy()
        return h, c_last

    @staticmethod
    def backward(ctx, grad_h, grad_c_last):
        U, skip, v_f, v_r, c0, c, f, r = ctx.saved_arrays
        xp = backend.get_xp(U, c0)
        grad_U3, grad_skip, grad_v_f, grad_v_r, grad_b_f, grad_b_r, grad_c0 = get_kernel("sru_backward", xp)(
            grad_h, grad_c_last, U, skip, v_f, v_r, c0, c, f, r, ctx.mask, ctx.drop, ctx.alpha
        )
        if ctx.skip_from_U:
            grad_U, grad_skip = xp.concatenate([grad_U3, grad_skip], axis=-1), None
        else:
            grad_U = grad_U3
        return grad_U, grad_skip, grad_v_f, grad_v_r, grad_b_f, grad_b_r, grad_c0, None, None


def _check_options(highway_bias, rescale, dropout, layer_norm):
    if not isinstance(highway_bias, numbers.Real) or isinstance(highway_bias, bool) or not math.isfinite(highway_bias):
        raise ValueError(f"sru: highway_bias must be a finite number, got {highway_bias!r}")
    for name, value in (("rescale", rescale), ("layer_norm", layer_norm)):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"sru: {name} must be True or False, got {value!r}")
    if not isinstance(dropout, numbers.Real) or isinstance(dropout, bool) or not 0 <= dropout < 1:
        raise ValueError(f"sru: dropout must be a probability in [0, 1), got {dropout!r}")


@register("sru")
class SRU(Cell):
    """SRU layer (one direction). Parameters: ``weight`` (D, k·H) = [W | W_f | W_r (| W')],
    ``v_f``, ``v_r``, ``b_f``, ``b_r`` (H,), and ``norm`` (LayerNorm(D)) with ``layer_norm=True``."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        highway_bias: float = 0.0,
        rescale: bool = True,
        dropout: float = 0.0,
        layer_norm: bool = False,
    ):
        super().__init__(input_size, hidden_size)
        _check_options(highway_bias, rescale, dropout, layer_norm)
        D, H = self.input_size, self.hidden_size
        self.k = 3 if D == H else 4
        self.highway_bias, self.rescale = float(highway_bias), bool(rescale)
        self.dropout, self.layer_norm = float(dropout), bool(layer_norm)
        self.alpha = scaling_correction(self.highway_bias) if self.rescale else 1.0
        dtype = backend.get_default_dtype()
        self.weight = uniform_parameter((D, self.k * H), math.sqrt(3 / D))  # variance 1/d (§3.2)
        self.v_f = uniform_parameter((H,), math.sqrt(1.5))  # variance 0.5
        self.v_r = uniform_parameter((H,), math.sqrt(1.5))
        self.b_f = Parameter(np.zeros(H, dtype=dtype))
        self.b_r = Parameter(np.full(H, self.highway_bias, dtype=dtype))
        self.norm = LayerNorm(D) if self.layer_norm else None

    @staticmethod
    def parameter_count(input_size: int, hidden_size: int, layer_norm: bool = False, **options) -> int:
        """k·D·H + 4H (+ 2D with layer_norm), k = 3 if D == H else 4."""
        D, H = input_size, hidden_size
        k = 3 if D == H else 4
        return k * D * H + 4 * H + (2 * D if layer_norm else 0)

    # ---- shared by both paths -----------------------------------------------------------------
    def _project(self, x: Tensor) -> Tensor:
        """U = (LN(x) or x) @ W_all for every step: one (T·B, D) @ (D, k·H) product."""
        T, B, D = x.shape
        inputs = self.norm(x) if self.norm is not None else x
        return (inputs.reshape(T * B, D) @ self.weight).reshape(T, B, self.k * self.hidden_size)

    def _dropout_mask(self, batch: int, xp, dtype):
        """Inverted-dropout mask (B, H) on the c-branch, fixed over time; None when inactive."""
        if not self.training or self.dropout == 0:
            return None
        keep = backend.rng(xp).random((batch, self.hidden_size), dtype=np.float32) >= self.dropout
        return (keep / (1 - self.dropout)).astype(dtype)

    # ---- fast path -------------------------------------------------------------------------------
    def run(self, x, h0, mask):
        xp = backend.get_xp(x.data)
        U = self._project(x)
        drop = self._dropout_mask(x.shape[1], xp, x.dtype)
        x_skip = x if self.k == 3 else None
        return SRURecurrence.apply(
            U, x_skip, self.v_f, self.v_r, self.b_f, self.b_r, h0, mask_array(mask, x.data), drop, alpha=self.alpha
        )

    # ---- oracle ----------------------------------------------------------------------------------
    def prepare_reference(self, x):
        H = self.hidden_size
        self._ref_U = self._project(x)
        self._ref_skip = x if self.k == 3 else self._ref_U[:, :, 3 * H :]
        drop = self._dropout_mask(x.shape[1], backend.get_xp(x.data), x.dtype)
        self._ref_drop = None if drop is None else Tensor(drop)

    def reference_step(self, x_t, c, t):
        H = self.hidden_size
        U_t = self._ref_U[t]
        x_tilde = U_t[:, :H]
        f = ops.sigmoid(U_t[:, H : 2 * H] + self.v_f * c + self.b_f)  # (1)
        c_new = f * c + (1 - f) * x_tilde  # (2)
        r = ops.sigmoid(U_t[:, 2 * H : 3 * H] + self.v_r * c + self.b_r)  # (3)
        c_out = c_new if self._ref_drop is None else c_new * self._ref_drop
        h = r * c_out + (1 - r) * (self._ref_skip[t] * self.alpha)  # (4)
        return h, c_new

    def extra_repr(self):
        return (
            f"{self.input_size}, {self.hidden_size}, highway_bias={self.highway_bias}, rescale={self.rescale}, "
            f"dropout={self.dropout}, layer_norm={self.layer_norm}"
        )
