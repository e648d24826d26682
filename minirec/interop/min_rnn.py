"""nn.RNN of minGRU / minLSTM ↔ lucidrains' ``minGRU_pytorch`` (``minGRU``, ``minLSTM``).

lucidrains' modules are the paper's log-space code: one projection without bias, columns
[hidden | gate] (minGRU) or [hidden | f | i] (minLSTM), g(x) = x + 0.5 (x ≥ 0), σ(x) (x < 0)
applied to the candidate, batch-first (B, T, D), and h_0 = 0 when no ``prev_hidden`` is given.
minirec's cells hold W (D, k·H) with columns [k | h̃] or [k_f | k_i | h̃] and a bias, so:

* ``from_torch`` builds ``nn.RNN(cell, D, H, g_activation=True, mode="parallel")`` with zero
  bias. minirec's default initial state for a g-model is g(0) = 0.5 (the value the paper's code
  feeds for h_0 = 0 in log space); lucidrains' parallel path without ``prev_hidden`` starts
  from 0 instead: pass ``h0=zero_state(rnn, B)`` to compute exactly what lucidrains computes.
* ``to_torch`` needs one layer, one direction, a zero bias (the peer has none) and g applied;
  with H ≠ D it builds the peer with ``expansion_factor=H/D, proj_out=False``.
The conversions are exact (outputs agree to rounding: tested in float64).
"""

from __future__ import annotations

import numpy as np

from minirec.interop._common import ConversionError, require_torch, to_numpy, to_torch_tensor

__all__ = ["min_rnn_to_torch", "min_rnn_from_torch", "zero_state"]

# minirec column block → lucidrains column block, per cell
_BLOCKS = {"mingru": {"k": 1, "h": 0}, "minlstm": {"k_f": 1, "k_i": 2, "h": 0}}
_MINIREC_ORDER = {"mingru": ["k", "h"], "minlstm": ["k_f", "k_i", "h"]}


def zero_state(rnn, batch: int):
    """h0 = 0 for each layer of ``rnn`` (what lucidrains' modules start from)."""
    from minirec.autograd.function import Tensor

    layer = rnn.layers[0]
    cell = layer.forward_cell
    dtype = cell.weight.data.dtype
    shape = (2, batch, cell.hidden_size) if layer.bidirectional else (batch, cell.hidden_size)
    return [Tensor(np.zeros(shape, dtype=dtype)) for _ in rnn.layers]


def min_rnn_to_torch(rnn):
    """lucidrains' ``minGRU`` / ``minLSTM`` computing what a one-layer minirec minGRU/minLSTM computes."""
    torch = require_torch()
    try:
        from minGRU_pytorch.minGRU import minGRU
        from minGRU_pytorch.minLSTM import minLSTM
    except ImportError as error:
        raise ImportError("exporting minGRU/minLSTM needs lucidrains' package: pip install minGRU-pytorch") from error
    if rnn.num_layers != 1 or rnn.layers[0].bidirectional:
        raise ConversionError(f"minGRU_pytorch's modules are one layer, one direction; this RNN has "
                              f"{rnn.num_layers} layer(s), bidirectional={rnn.layers[0].bidirectional}")
    cell = rnn.layers[0].forward_cell
    if not cell.applies_g:
        raise ConversionError(f"minGRU_pytorch applies g(x) to the candidate; this {rnn.cell} does not: build it "
                              "with g_activation=True (or mode='log') to export")
    bias = cell.bias.data
    if np.any(bias != 0):
        raise ConversionError(f"minGRU_pytorch's projection has no bias; this {rnn.cell}'s bias is nonzero "
                              f"(max |b| = {float(np.abs(bias).max()):.3g}): it cannot be exported exactly")
    D, H = cell.input_size, cell.hidden_size
    cls = minGRU if rnn.cell == "mingru" else minLSTM
    module = cls(D, expansion_factor=H / D, proj_out=False)
    linear = module.to_hidden_and_gate if rnn.cell == "mingru" else module.to_hidden_and_f_i_gate
    if linear.weight.shape[0] != len(_BLOCKS[rnn.cell]) * H:
        raise ConversionError(f"minGRU_pytorch rounds its inner size int({D}·{H}/{D}) to {linear.weight.shape[0] // 2}"
                              f", not {H}: choose sizes whose ratio is exact")
    module = module.to(dtype={np.float32: torch.float32, np.float64: torch.float64}[cell.weight.data.dtype.type])
    W = cell.weight.data
    columns = [None] * len(_BLOCKS[rnn.cell])
    for i, block in enumerate(_MINIREC_ORDER[rnn.cell]):
        columns[_BLOCKS[rnn.cell][block]] = W[:, i * H : (i + 1) * H]
    with torch.no_grad():
        linear.weight.copy_(to_torch_tensor(np.concatenate(columns, axis=1).T, like=linear.weight))
    return module


def min_rnn_from_torch(module, dtype=None):
    """A one-layer minirec ``nn.RNN`` (g applied, zero bias) computing what lucidrains' module computes
    (from ``h0=zero_state(rnn, B)``; see the module docstring)."""
    torch = require_torch()
    from minirec import nn

    name = {"minGRU": "mingru", "minLSTM": "minlstm"}[type(module).__name__]
    if not isinstance(module.to_out, torch.nn.Identity):
        raise ConversionError(f"this {type(module).__name__} has an output projection (proj_out): minirec's "
                              f"{name} cell has none; build the peer with proj_out=False to convert")
    linear = module.to_hidden_and_gate if name == "mingru" else module.to_hidden_and_f_i_gate
    if linear.bias is not None:
        raise ConversionError("expected lucidrains' bias-free projection")
    weight = to_numpy(linear.weight).T  # (D, k·H), lucidrains' column order
    dtype = np.dtype(dtype) if dtype is not None else weight.dtype
    k = len(_BLOCKS[name])
    D, H = weight.shape[0], weight.shape[1] // k
    rnn = nn.RNN(name, D, H, g_activation=True, mode="parallel")
    cell = rnn.layers[0].forward_cell
    blocks = [weight[:, _BLOCKS[name][b] * H : (_BLOCKS[name][b] + 1) * H] for b in _MINIREC_ORDER[name]]
    cell.weight.data = np.ascontiguousarray(np.concatenate(blocks, axis=1), dtype=dtype)
    cell.bias.data = np.zeros(k * H, dtype=dtype)
    return rnn
