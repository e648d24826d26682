"""LSTM: long short-term memory (Hochreiter & Schmidhuber 1997), the common form with a forget gate.

    i_t = σ(W_i x_t + U_i h_{t−1} + b_i)          (1) input gate
    f_t = σ(W_f x_t + U_f h_{t−1} + b_f)          (2) forget gate
    o_t = σ(W_o x_t + U_o h_{t−1} + b_o)          (3) output gate
    g_t = tanh(W_g x_t + U_g h_{t−1} + b_g)       (4) candidate
    c_t = f_t ⊙ c_{t−1} + i_t ⊙ g_t               (5)
    h_t = o_t ⊙ tanh(c_t),   y_t = h_t             (6)

The state is the pair (h, c); the output is h. Parameters, stored as (in, out) matrices like
`Linear`, gate blocks in the order [i | f | o | g]:

* ``input_weight`` (D, 4H) = [W_i | W_f | W_o | W_g], applied to the whole sequence in one
  product with autograd, outside the recurrence: x_proj = x W + b;
* ``recurrent_weight`` (H, 4H) = [U_i | U_f | U_o | U_g], used inside the fused `LSTMRecurrence`
  (one h_{t−1} U product per step gives all four pre-activations);
* ``bias`` (4H,) = [b_i | b_f | b_o | b_g]: one bias per gate (no second "recurrent" bias as in
  cuDNN/PyTorch, which would only duplicate it).

Parameter count: 4·(H·(H + D) + H) = 4H(H + D + 1).
Init: every parameter U(±1/√H), the common practice (PyTorch's nn.LSTM default); then
``forget_bias`` (default 1.0) is *added* to b_f, so the forget gate starts mostly open
(Gers et al. 2000; Jozefowicz et al. 2015). It is an init choice only: b_f trains like any bias.

Backward (hand-derived, `minirec.kernels.lstm.lstm_backward`). With δh_t, δc_t = ∂L/∂h_t, ∂L/∂c_t
(total) and m_t the mask (1 = real token), going from t = T down to 1:
    δh_t += m_t ȳ_t,     dh = m_t δh_t,     dc = m_t δc_t + dh ⊙ o_t ⊙ (1 − tanh²c_t)
    ∂a_i = dc ⊙ g_t ⊙ i_t(1 − i_t),        ∂a_f = dc ⊙ c_{t−1} ⊙ f_t(1 − f_t)
    ∂a_o = dh ⊙ tanh c_t ⊙ o_t(1 − o_t),   ∂a_g = dc ⊙ i_t ⊙ (1 − g_t²)
    δh_{t−1} = (1 − m_t) δh_t + ∂a_t Uᵀ,    δc_{t−1} = (1 − m_t) δc_t + dc ⊙ f_t
    ∂x_proj_t = ∂a_t,   ∂U = Σ_t h_{t−1}ᵀ ∂a_t,   ∂h_0 = δh_0,   ∂c_0 = δc_0.
Autograd carries ∂x_proj through x W + b. A padded step passes δh, δc through unchanged.
"""

from __future__ import annotations

import math

from minirec import backend
from minirec.autograd import ops
from minirec.autograd.function import Function, Tensor
from minirec.cells.base import Cell, mask_array, project_inputs, register
from minirec.kernels import get_kernel
from minirec.kernels import lstm as _lstm_kernels  # noqa: F401 - registers the reference loops
from minirec.nn.layers import uniform_parameter

__all__ = ["LSTM", "LSTMRecurrence"]


class LSTMRecurrence(Function):
    """Fused LSTM over a whole sequence: (x_proj, U, h0, c0, mask) → (y, h_last, c_last)."""

    @staticmethod
    def forward(ctx, x_proj, U, h0, c0, mask):
        xp = backend.get_xp(x_proj, U, h0, c0)
        h, c, gates = get_kernel("lstm_forward", xp)(x_proj, U, h0, c0, mask)
        y = h if mask is None else h * mask[:, :, None]
        if h.shape[0]:
            h_last, c_last = h[-1], c[-1]
        else:
            h_last, c_last = h0.copy(), c0.copy()
        ctx.save_for_backward(U, h0, c0, h, c, gates)
        ctx.mask = mask
        return y, h_last, c_last

    @staticmethod
    def backward(ctx, grad_y, grad_h_last, grad_c_last):
        U, h0, c0, h, c, gates = ctx.saved_arrays
        xp = backend.get_xp(U, h0, grad_y)
        grad_x_proj, grad_U, grad_h0, grad_c0 = get_kernel("lstm_backward", xp)(
            U, h0, c0, ctx.mask, h, c, gates, grad_y, grad_h_last, grad_c_last
        )
        return grad_x_proj, grad_U, grad_h0, grad_c0, None


@register("lstm")
class LSTM(Cell):
    """LSTM layer (one direction): y_t = h_t, the state is the tuple (h, c), each (B, H)."""

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float = 1.0):
        super().__init__(input_size, hidden_size)
        forget_bias = float(forget_bias)
        if not math.isfinite(forget_bias):
            raise ValueError(f"lstm: forget_bias must be a finite number, got {forget_bias}")
        self.forget_bias = forget_bias
        D, H = self.input_size, self.hidden_size
        bound = 1 / math.sqrt(H)
        self.input_weight = uniform_parameter((D, 4 * H), bound)
        self.recurrent_weight = uniform_parameter((H, 4 * H), bound)
        self.bias = uniform_parameter((4 * H,), bound)
        self.bias.data[H : 2 * H] += forget_bias

    @staticmethod
    def parameter_count(input_size: int, hidden_size: int, **options) -> int:
        """4·(H·(H + D) + H): four gates, each an (H + D) × H matrix and a bias of size H."""
        D, H = input_size, hidden_size
        return 4 * (H * (H + D) + H)

    def init_state(self, batch: int, xp, dtype):
        zeros = lambda: Tensor(xp.zeros((batch, self.hidden_size), dtype=dtype))
        return zeros(), zeros()

    def run(self, x, h0, mask):
        x_proj = project_inputs(x, self.input_weight, self.bias)
        h, c = h0
        y, h_last, c_last = LSTMRecurrence.apply(x_proj, self.recurrent_weight, h, c, mask_array(mask, x.data))
        return y, (h_last, c_last)

    def reference_step(self, x_t, state, t):
        H = self.hidden_size
        h, c = state
        a = x_t @ self.input_weight + h @ self.recurrent_weight + self.bias
        i = ops.sigmoid(a[:, :H])
        f = ops.sigmoid(a[:, H : 2 * H])
        o = ops.sigmoid(a[:, 2 * H : 3 * H])
        g = ops.tanh(a[:, 3 * H :])
        c = f * c + i * g
        h = o * ops.tanh(c)
        return h, (h, c)

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}, forget_bias={self.forget_bias}"
