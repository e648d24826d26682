"""`RNN`: a stack of recurrent layers of any registered cell.

    rnn = nn.RNN(cell="sru", input_size=128, hidden_size=256, num_layers=2, dropout=0.2)
    y, h_last = rnn(x, h0=None, mask=None)     # x: (T, B, D) time-major

``h0`` and ``h_last`` are lists with one entry per layer, each in that layer's state format
(a (B, H) Tensor; (2, B, H) when bidirectional; a tuple of them for LSTM's (h, c)).

    y_t, state = rnn.step(x_t, state=None)     # one time step: x_t (B, D), y_t (B, H)

`step` is the stateful form, for generating one token at a time: O(1) work per token, the same
numbers as `forward` over the whole sequence (tests/test_step.py).
Dropout is applied between layers (not after the last), as in Zaremba et al. (2014): with one
layer it does nothing, and a warning says so. (``dropout`` here is the stack's; SRU's own
variational ``dropout`` option is a cell option: build an `RecurrentLayer` per layer to set it.)
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np

from minirec.autograd import ops
from minirec.autograd.function import Tensor
from minirec.cells.base import RecurrentLayer, get_cell
from minirec.nn.module import Module

__all__ = ["RNN"]


class RNN(Module):
    def __init__(
        self,
        cell: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        **cell_options,
    ):
        get_cell(cell)  # an unknown name fails here, listing the known ones
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            # (3.5 was silently 3; "8" or None failed deep inside without naming the argument)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not isinstance(bidirectional, (bool, np.bool_)):
            raise TypeError(f"bidirectional must be True or False, got {bidirectional!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real):
            raise TypeError(f"dropout must be a number, got {type(dropout).__name__} {dropout!r}")
        if not 0 <= dropout < 1:  # (NaN fails this too)
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if dropout and num_layers == 1:
            warnings.warn(f"RNN: dropout={dropout} acts between layers, and there is only one layer: it does nothing",
                          stacklevel=2)
        self.cell, self.num_layers, self.dropout = cell, num_layers, dropout
        self.layers = []
        size = input_size
        for _ in range(num_layers):
            layer = RecurrentLayer(cell, size, hidden_size, bidirectional=bidirectional, **cell_options)
            self.layers.append(layer)
            size = layer.output_size
        self.output_size = size

    def forward(self, x, h0=None, mask=None):
        if h0 is not None and (not isinstance(h0, (list, tuple)) or len(h0) != self.num_layers):
            got = f"{len(h0)} entries" if isinstance(h0, (list, tuple)) else f"a {type(h0).__name__}"
            raise ValueError(f"h0 must be a list of {self.num_layers} states (one per layer), got {got}")
        states = []
        for i, layer in enumerate(self.layers):
            if i > 0:
                x = ops.dropout(x, self.dropout, training=self.training)
            x, state = layer(x, None if h0 is None else h0[i], mask)
            states.append(state)
        return x, states

    def step(self, x_t, state=None):
        """One time step: ``x_t`` (B, D) → ``(y_t (B, H), state)``, ``state`` as `forward`'s h0/h_last.

        Each layer runs its cell's `reference_step` (the equations with Tensor ops; for minGRU and
        minLSTM the sequential form) on the projection of this one step: nothing is recomputed for
        earlier steps. A bidirectional stack cannot step: its backward direction reads the
        sequence from its end, which has not been generated yet.
        """
        if any(layer.bidirectional for layer in self.layers):
            raise ValueError("RNN.step: a bidirectional RNN cannot run one step at a time: its backward direction "
                             "starts from the last step of the sequence, which a step-by-step caller does not have")
        if not isinstance(x_t, Tensor):
            x_t = Tensor(x_t)
        if x_t.ndim != 2:
            raise ValueError(f"RNN.step: x_t must be one time step (B, D), got shape {x_t.shape}")
        if state is not None and (not isinstance(state, (list, tuple)) or len(state) != self.num_layers):
            got = f"{len(state)} entries" if isinstance(state, (list, tuple)) else f"a {type(state).__name__}"
            raise ValueError(f"state must be a list of {self.num_layers} states (one per layer), got {got}")
        x, new_state = x_t, []
        for i, layer in enumerate(self.layers):
            if i > 0:
                x = ops.dropout(x, self.dropout, training=self.training)
            cell = layer.forward_cell
            h = None if state is None else state[i]
            # checked (or the zero state built) as for a sequence of one step
            sequence, h, _ = cell.check_inputs(x.reshape(1, *x.shape), h, None)
            cell.prepare_reference(sequence)
            x, h = cell.reference_step(sequence[0], h, 0)
            new_state.append(h)
        return x, new_state

    def extra_repr(self):
        return f"cell={self.cell!r}, num_layers={self.num_layers}, dropout={self.dropout}"
