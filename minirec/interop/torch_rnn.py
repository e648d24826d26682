"""nn.RNN stacks of LSTM or GRU ↔ ``torch.nn.LSTM`` / ``torch.nn.GRU``.

The conventions that differ, and how each is mapped (exactly: the functions agree to rounding):

* storage: minirec keeps (in, out) matrices, PyTorch (out, in): every matrix is transposed;
* LSTM gate order: minirec [i | f | o | g], PyTorch [i | f | g | o]: the last two blocks swap;
* GRU: PyTorch is the reset-after form (r ⊙ (W_hn h + b_hn)), so only a minirec GRU built with
  ``reset_after=True`` maps. Its gate order is [r | z | n] against minirec's [z | r | h̃], and it
  blends h = z ⊙ h + (1 − z) ⊙ n where minirec blends h = (1 − z) ⊙ h + z ⊙ h̃: PyTorch's z is
  minirec's 1 − z = σ(−a), so its update-gate weights and biases are minirec's negated;
* biases: PyTorch has two per gate (b_ih + b_hh); minirec one (their sum), plus the GRU's
  b_n = b_hn, which sits inside the reset product and cannot be merged. Exporting puts the whole
  bias in b_ih and zeros in b_hh: minirec → torch → minirec is exact, and torch → minirec →
  torch gives the same function with the biases summed.
* directions and layers: PyTorch names ``weight_ih_l{k}`` and ``..._reverse``; minirec holds a
  `RecurrentLayer` per layer with ``forward_cell`` and ``backward_cell``. Both concatenate the
  directions' outputs [forward | backward] as the next layer's input.
"""

from __future__ import annotations

import numpy as np

from minirec.interop._common import ConversionError, require_torch, to_numpy, to_torch_tensor

__all__ = ["rnn_to_torch", "rnn_from_torch", "states_to_torch", "states_from_torch"]


def _lstm_blocks(H):
    """Column indices that reorder [i | f | o | g] ↔ [i | f | g | o] (the permutation is its own inverse)."""
    return np.concatenate([np.arange(0, 2 * H), np.arange(3 * H, 4 * H), np.arange(2 * H, 3 * H)])


def _cell_to_torch_params(cell):
    """(weight_ih, weight_hh, bias_ih, bias_hh) in PyTorch's layout, as NumPy arrays."""
    W, U, b = cell.input_weight.data, cell.recurrent_weight.data, cell.bias.data
    H = cell.hidden_size
    if cell.name == "lstm":
        order = _lstm_blocks(H)
        return W[:, order].T, U[:, order].T, b[order], np.zeros_like(b)
    # GRU, reset after: minirec [z | r | h̃] → PyTorch [r | z | n], with z negated
    z, r, n = slice(0, H), slice(H, 2 * H), slice(2 * H, 3 * H)
    weight_ih = np.concatenate([W[:, r], -W[:, z], W[:, n]], axis=1).T
    weight_hh = np.concatenate([U[:, r], -U[:, z], U[:, n]], axis=1).T
    bias_ih = np.concatenate([b[r], -b[z], b[n]])
    bias_hh = np.concatenate([np.zeros(2 * H, b.dtype), cell.recurrent_bias.data])
    return weight_ih, weight_hh, bias_ih, bias_hh


def _cell_from_torch_params(cell, weight_ih, weight_hh, bias_ih, bias_hh):
    """Set a minirec LSTM or reset-after GRU cell from PyTorch's four arrays (in place)."""
    H = cell.hidden_size
    dtype = cell.input_weight.data.dtype
    if cell.name == "lstm":
        order = _lstm_blocks(H)
        W, U, b = weight_ih.T[:, order], weight_hh.T[:, order], (bias_ih + bias_hh)[order]
    else:
        r, z, n = slice(0, H), slice(H, 2 * H), slice(2 * H, 3 * H)
        W = np.concatenate([-weight_ih[z].T, weight_ih[r].T, weight_ih[n].T], axis=1)
        U = np.concatenate([-weight_hh[z].T, weight_hh[r].T, weight_hh[n].T], axis=1)
        b = np.concatenate([-(bias_ih[z] + bias_hh[z]), bias_ih[r] + bias_hh[r], bias_ih[n]])
        cell.recurrent_bias.data = np.ascontiguousarray(bias_hh[n], dtype=dtype)
    cell.input_weight.data = np.ascontiguousarray(W, dtype=dtype)
    cell.recurrent_weight.data = np.ascontiguousarray(U, dtype=dtype)
    cell.bias.data = np.ascontiguousarray(b, dtype=dtype)


def _check_exportable(rnn):
    if rnn.cell not in ("lstm", "gru"):
        raise ConversionError(f"torch.nn has no {rnn.cell!r} cell: only LSTM and GRU stacks map to torch.nn.LSTM/GRU "
                              "(SRU maps to sru.SRU, minGRU/minLSTM to minGRU_pytorch: see minirec.interop)")
    first = rnn.layers[0].forward_cell
    if rnn.cell == "gru" and not first.reset_after:
        raise ConversionError("torch.nn.GRU is the reset-after GRU (r ⊙ (W_hn h + b_hn)); this minirec GRU resets "
                              "before the product, a different function: build it with reset_after=True to export")
    if any(not np.issubdtype(p.data.dtype, np.floating) for p in rnn.parameters()):
        raise ConversionError("only floating-point parameters convert")
    if type(first.input_weight.data).__module__.split(".")[0] != "numpy":
        raise ConversionError("move the model to the CPU first (model.to('cpu')): conversion reads NumPy arrays")


def rnn_to_torch(rnn):
    """A ``torch.nn.LSTM`` or ``torch.nn.GRU`` (time-major, ``batch_first=False``) computing what
    the minirec ``nn.RNN`` computes, with its weights copied (same dtype)."""
    torch = require_torch()
    _check_exportable(rnn)
    first = rnn.layers[0]
    cell = first.forward_cell
    cls = torch.nn.LSTM if rnn.cell == "lstm" else torch.nn.GRU
    module = cls(cell.input_size, cell.hidden_size, num_layers=rnn.num_layers, bias=True, batch_first=False,
                 dropout=rnn.dropout, bidirectional=first.bidirectional)
    module = module.to(dtype={np.float32: torch.float32, np.float64: torch.float64}[cell.input_weight.data.dtype.type])
    with torch.no_grad():
        for k, layer in enumerate(rnn.layers):
            cells = [("", layer.forward_cell)] + ([("_reverse", layer.backward_cell)] if layer.bidirectional else [])
            for suffix, c in cells:
                arrays = _cell_to_torch_params(c)
                for name, array in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), arrays):
                    target = getattr(module, f"{name}_l{k}{suffix}")
                    target.copy_(to_torch_tensor(array, like=target))
    return module


def rnn_from_torch(module, dtype=None):
    """A minirec ``nn.RNN`` computing what a ``torch.nn.LSTM`` / ``torch.nn.GRU`` computes (a GRU
    becomes ``cell="gru", reset_after=True``). ``dtype``: NumPy float dtype (default: the module's).

    The module's ``batch_first`` is not a weight: minirec is always time-major (T, B, D).
    """
    torch = require_torch()
    from minirec import nn

    if isinstance(module, torch.nn.LSTM):
        cell, options = "lstm", {}
        if module.proj_size:
            raise ConversionError(f"torch.nn.LSTM with proj_size={module.proj_size} (LSTMP) has no minirec cell")
    elif isinstance(module, torch.nn.GRU):
        cell, options = "gru", {"reset_after": True}
    else:
        raise ConversionError(f"rnn_from_torch takes torch.nn.LSTM or torch.nn.GRU, got {type(module).__name__}")
    if module.mode not in ("LSTM", "GRU"):
        raise ConversionError(f"unsupported torch RNN mode {module.mode!r}")
    arrays = {name: to_numpy(p) for name, p in module.named_parameters()}
    dtype = np.dtype(dtype) if dtype is not None else next(iter(arrays.values())).dtype
    if not np.issubdtype(dtype, np.floating):
        raise ConversionError(f"dtype must be a float dtype, got {dtype}")
    rnn = nn.RNN(cell, module.input_size, module.hidden_size, num_layers=module.num_layers,
                 bidirectional=module.bidirectional, dropout=float(module.dropout), **options)
    for k, layer in enumerate(rnn.layers):
        cells = [("", layer.forward_cell)] + ([("_reverse", layer.backward_cell)] if layer.bidirectional else [])
        for suffix, c in cells:
            _set_dtype(c, dtype)
            get = lambda name, s=suffix, k=k: arrays.get(f"{name}_l{k}{s}")
            bias_ih, bias_hh = get("bias_ih"), get("bias_hh")
            if bias_ih is None:  # bias=False in torch: zero biases
                width = get("weight_ih").shape[0]
                bias_ih = bias_hh = np.zeros(width, dtype=dtype)
            _cell_from_torch_params(c, get("weight_ih"), get("weight_hh"), bias_ih, bias_hh)
    return rnn


def _set_dtype(cell, dtype):
    for p in cell.parameters():
        p.data = p.data.astype(dtype)


def states_to_torch(states, rnn):
    """minirec's per-layer states → PyTorch's ``h`` or ``(h, c)``, each (layers · directions, B, H)."""
    torch = require_torch()
    lstm = rnn.cell == "lstm"

    def stack(which):
        parts = []
        for s in states:
            s = s[which] if lstm else s
            data = s.data if hasattr(s, "data") else s
            parts.append(data if data.ndim == 3 else data[None])
        return torch.from_numpy(np.concatenate(parts, axis=0))

    return (stack(0), stack(1)) if lstm else stack(None)


def states_from_torch(state, rnn):
    """PyTorch's ``h`` or ``(h, c)`` (layers · directions, B, H) → minirec's per-layer state list."""
    from minirec.autograd.function import Tensor

    lstm = rnn.cell == "lstm"
    dirs = 2 if rnn.layers[0].bidirectional else 1
    arrays = [to_numpy(s) for s in (state if lstm else (state,))]
    out = []
    for k in range(rnn.num_layers):
        per = [a[k * dirs : (k + 1) * dirs] for a in arrays]
        per = [p if dirs == 2 else p[0] for p in per]
        out.append(tuple(Tensor(p) for p in per) if lstm else Tensor(per[0]))
    return out
