"""MGU: minimal gated unit (Zhou et al. 2016), a GRU whose one gate f plays both z and r.

    f_t = σ(W_f [h_{t−1}, x_t] + b_f)                         (1) forget gate
    ĥ_t = tanh(W_h [f_t ⊙ h_{t−1}, x_t] + b_h)                (2) candidate
    h_t = (1 − f_t) ⊙ h_{t−1} + f_t ⊙ ĥ_t                     (3)
    y_t = h_t

(Equation numbers are local to this docstring.) Each W_k [h, x] is split into a recurrent and an
input part, W_k [h, x] = h U_k + x W_x,k, stored as (in, out) matrices like `Linear`:

* ``input_weight`` (D, 2H) = [W_x,f | W_x,h], applied to the whole sequence in one product with
  autograd, outside the recurrence: x_proj = x W_x + b;
* ``recurrent_weight`` (H, 2H) = [U_f | U_h], used inside the fused `MGURecurrence`;
* ``bias`` (2H,) = [b_f | b_h].

Parameter count: 2·(H·(H + D) + H) = 2H(H + D + 1), two thirds of a GRU's.
Init: every parameter U(±1/√H), the common practice for GRU-like cells.

Backward (hand-derived, `minirec.kernels.mgu.mgu_backward`). With δ_t = ∂L/∂h_t (total) and m_t
the mask (1 = real token), going from t = T down to 1:
    δ_t  += m_t ȳ_t,            dh = m_t δ_t
    ∂a_h  = dh ⊙ f_t ⊙ (1 − ĥ_t²),          ∂(f ⊙ h) = ∂a_h U_hᵀ
    ∂a_f  = [dh ⊙ (ĥ_t − h_{t−1}) + ∂(f ⊙ h) ⊙ h_{t−1}] ⊙ f_t(1 − f_t)     (f's two roles add up)
    δ_{t−1} = (1 − m_t) δ_t + dh ⊙ (1 − f_t) + ∂(f ⊙ h) ⊙ f_t + ∂a_f U_fᵀ
    ∂x_proj_t = [∂a_f, ∂a_h],   ∂U_f = Σ_t h_{t−1}ᵀ ∂a_f,   ∂U_h = Σ_t (f_t ⊙ h_{t−1})ᵀ ∂a_h,   ∂h_0 = δ_0.
Autograd carries ∂x_proj through x W_x + b. A padded step passes δ through unchanged.
"""

from __future__ import annotations

import math

from minirec.autograd import ops
from minirec.cells.base import Cell, HiddenMatrixRecurrence, mask_array, project_inputs, register
from minirec.kernels import mgu as _mgu_kernels  # noqa: F401 - registers the reference loops
from minirec.nn.layers import uniform_parameter

__all__ = ["MGU", "MGURecurrence"]


class MGURecurrence(HiddenMatrixRecurrence):
    """Fused MGU over a whole sequence: (x_proj, U, h0, mask) → (y, h_last)."""

    kernel = "mgu"


@register("mgu")
class MGU(Cell):
    """MGU layer (one direction): y_t = h_t, the state is h (B, H)."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__(input_size, hidden_size)
        D, H = self.input_size, self.hidden_size
        bound = 1 / math.sqrt(H)
        self.input_weight = uniform_parameter((D, 2 * H), bound)
        self.recurrent_weight = uniform_parameter((H, 2 * H), bound)
        self.bias = uniform_parameter((2 * H,), bound)

    @staticmethod
    def parameter_count(input_size: int, hidden_size: int, **options) -> int:
        """2·(H·(H + D) + H): two gates, each an (H + D) × H matrix and a bias of size H."""
        D, H = input_size, hidden_size
        return 2 * (H * (H + D) + H)

    def run(self, x, h0, mask):
        x_proj = project_inputs(x, self.input_weight, self.bias)
        return MGURecurrence.apply(x_proj, self.recurrent_weight, h0, mask_array(mask, x.data))

    def reference_step(self, x_t, h, t):
        H = self.hidden_size
        W, U, b = self.input_weight, self.recurrent_weight, self.bias
        f = ops.sigmoid(x_t @ W[:, :H] + h @ U[:, :H] + b[:H])
        h_tilde = ops.tanh(x_t @ W[:, H:] + (f * h) @ U[:, H:] + b[H:])
        h = (1 - f) * h + f * h_tilde
        return h, h
