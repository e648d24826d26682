"""ATR: the addition-subtraction twin-gated recurrent unit (Zhang, Xiong, Su, Lin & Zhang, EMNLP 2018),
the baseline that LRN (Zhang & Sennrich, ACL 2019) removes the matrix product from.

    p_t = x_t W + b_p                    (input projection, outside the recurrence)
    q_t = h_{t−1} U + b_q                (the one matrix product left inside the loop)
    i_t = σ(p_t + q_t)                   (input gate: addition)
    f_t = σ(p_t − q_t)                   (forget gate: subtraction — the "twin" gates share p, q)
    h_t = i_t ⊙ p_t + f_t ⊙ h_{t−1}

Choices where the paper is silent:
* **Biases.** The paper writes p = W x, q = U h without biases. We keep both, zero-initialised, as
  in the PyTorch ATRCell published with the LRN experiments (a TensorFlow version has only b_q).
  They are not redundant: b_p shifts the candidate and both gates, b_q trades the input gate
  against the forget gate (+b_q in i, −b_q in f).
* **No output activation.** That PyTorch cell applies a tanh to h_t; the paper's equations do not,
  and we follow the equations: h_t is a gated sum of p's, bounded only by the gates.
* **Init.** Glorot uniform (xavier_uniform, as that PyTorch cell): W ~ U(±√(6/(D + H))),
  U ~ U(±√(6/(2H))); biases 0.

Parameters: input_weight W (D, H), bias b_p (H,), recurrent_weight U (H, H), recurrent_bias b_q (H,):
    count = D·H + H·H + 2H = H·(D + H + 2).

Backward (hand-written, `minirec.kernels.atr`): with d_t = ∂L/∂h_t from later steps and
e_t = m_t (ȳ_t + d_t) the gradient reaching step t's new state,
    ∂a_i = e ⊙ p ⊙ i(1 − i),  ∂a_f = e ⊙ h_{t−1} ⊙ f(1 − f),
    ∂p_t = e ⊙ i + ∂a_i + ∂a_f,   ∂q_t = ∂a_i − ∂a_f,
    d_{t−1} = (1 − m_t) d_t + e ⊙ f_t + ∂q_t Uᵀ,
    ∂U = Σ_t h_{t−1}ᵀ ∂q_t,  ∂b_q = Σ_{t,b} ∂q_t,  ∂h_0 = d_0;
∂W and ∂b_p follow from ∂p by autograd through the projection.
"""

from __future__ import annotations

import math

from minirec import backend
from minirec.autograd import ops
from minirec.autograd.function import Function
from minirec.cells.base import Cell, mask_array, project_inputs, register
from minirec.kernels import atr as _atr_kernels  # noqa: F401 - registers the reference kernels
from minirec.kernels import get_kernel
from minirec.nn.layers import uniform_parameter

__all__ = ["ATR", "ATRRecurrence"]


class ATRRecurrence(Function):
    """Fused ATR over a sequence: (p, U, b_q, h0, mask) → (y, h_last); p = x W + b_p precomputed."""

    @staticmethod
    def forward(ctx, p, U, b_q, h0, mask):
        xp = backend.get_xp(p, U, b_q, h0)
        h, i, f = get_kernel("atr_forward", xp)(p, U, b_q, h0, mask)
        y = h if mask is None else h * mask[:, :, None]
        h_last = h[-1].copy() if p.shape[0] else h0.copy()
        ctx.save_for_backward(p, U, h0, h, i, f)
        ctx.mask = mask
        return y, h_last

    @staticmethod
    def backward(ctx, grad_y, grad_h_last):
        p, U, h0, h, i, f = ctx.saved_arrays
        xp = backend.get_xp(p, U, h0)
        grad_p, grad_U, grad_b_q, grad_h0 = get_kernel("atr_backward", xp)(
            p, U, h0, h, i, f, ctx.mask, grad_y, grad_h_last
        )
        return grad_p, grad_U, grad_b_q, grad_h0, None


@register("atr")
class ATR(Cell):
    """ATR layer (one direction): y_t = h_t; the state is h (B, H)."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__(input_size, hidden_size)
        D, H = self.input_size, self.hidden_size
        self.input_weight = uniform_parameter((D, H), math.sqrt(6 / (D + H)))
        self.bias = uniform_parameter((H,), 0.0)  # U(0, 0): zeros, as in the official code
        self.recurrent_weight = uniform_parameter((H, H), math.sqrt(6 / (2 * H)))
        self.recurrent_bias = uniform_parameter((H,), 0.0)

    @staticmethod
    def parameter_count(input_size: int, hidden_size: int, **options) -> int:
        """H·(D + H + 2): W (D, H), U (H, H), b_p and b_q (H each)."""
        return hidden_size * (input_size + hidden_size + 2)

    def _project(self, x):
        return project_inputs(x, self.input_weight, self.bias)

    def run(self, x, h0, mask):
        p = self._project(x)
        return ATRRecurrence.apply(p, self.recurrent_weight, self.recurrent_bias, h0, mask_array(mask, x.data))

    def prepare_reference(self, x):
        self._reference_p = self._project(x)

    def reference_step(self, x_t, h, t):
        p = self._reference_p[t]
        q = h @ self.recurrent_weight + self.recurrent_bias
        i = ops.sigmoid(p + q)
        f = ops.sigmoid(p - q)
        h = i * p + f * h
        return h, h
