"""nn.RNN of SRU ↔ the official ``sru.SRU`` (asappresearch/sru, ``pip install sru``).

How the two write the same cell (Lei et al. 2018, eqs. 1–4), and how each difference is mapped:

* weights: one (D, dirs·H·k) matrix per official layer, viewed (D, dirs, H, k) — per-unit
  interleaving; minirec has one (D, k·H) block matrix per direction ([W | W_f | W_r (| W')]);
  ``weight_c`` is [v_f(dir 0), v_f(dir 1), v_r(dir 0), v_r(dir 1)] and ``bias`` likewise [b_f…, b_r…];
* the skip term: the official code decides it from the layer's input size D against its
  *output* size dirs·H: D = dirs·H skips with the input itself — in a bidirectional layer each
  direction with its own half of x — scaled by the float32 buffer ``scale_x``; otherwise it uses
  a projection x W' with no scale (the scale was folded into W' at init). minirec decides per
  direction from D against H, applies α to either form, and keeps α as the cell's ``alpha``.
  So an official bidirectional layer with D = 2H becomes a minirec layer whose W' selects each
  direction's half of x (and back: only such a selection exports); the converted cells take the
  peer's α value exactly (``cell.alpha``);
* layer norm: with it, a projected skip reads LN(x) W′ and a plain one raw x on both sides, so
  a bidirectional layer whose two sides choose differently (D = 2H, or D = H) cannot convert;
  the official layer has one LayerNorm of the input, shared by both directions;
  minirec has one per direction (the same values are copied into both, and must be equal to export);
* dropout is not mapped: the official code drops (c − x′) inside each layer, minirec drops c
  (SRU's ``dropout`` option) or the outputs between layers; a converted model is for evaluation
  or for training on with the new library's own dropout;
* padding: the official ``mask_pad`` is 1 at padding, minirec's ``mask`` 1 at real tokens; both
  keep c through padding and output 0 there.

Not mapped (a ConversionError says so): ``projection_size``, ``custom_m``, ``use_tanh``, ``v1``,
``normalize_after``, ``has_skip_term=False``, ``proj_input_to_hidden_first``.
"""

from __future__ import annotations

import numpy as np

from minirec.interop._common import ConversionError, require_torch, to_numpy, to_torch_tensor

__all__ = ["sru_to_torch", "sru_from_torch", "sru_states_to_torch", "sru_states_from_torch"]


def _require_sru():
    try:
        import sru
    except ImportError as error:
        raise ImportError("converting SRU needs the official package: pip install sru") from error
    return sru


def _per_unit_to_blocks(w, H, k):
    """(D, H·k) per-unit interleaved → (D, k·H) blocks."""
    D = w.shape[0]
    return w.reshape(D, H, k).transpose(0, 2, 1).reshape(D, k * H)


def _blocks_to_per_unit(w, H, k):
    D = w.shape[0]
    return w.reshape(D, k, H).transpose(0, 2, 1).reshape(D, H * k)


def _selection(D, H, direction):
    """The (D, H) matrix that picks a direction's half of x: x @ E = x[:, direction·H : (direction + 1)·H]."""
    E = np.zeros((D, H))
    E[direction * H + np.arange(H), np.arange(H)] = 1
    return E


def _check_skip_norm(k_minirec, k_official, layer_norm, D, H):
    """With layer norm, a projected skip reads LN(x) and a plain one raw x: the two sides must agree."""
    if layer_norm and k_minirec != k_official:
        raise ConversionError(f"with layer_norm, a bidirectional layer of input size {D} (hidden {H}) skips with "
                              f"{'raw x' if k_official == 3 else 'LN(x) W′'} in the official SRU but with "
                              f"{'raw x' if k_minirec == 3 else 'LN(x) W′'} in minirec: not the same function")


def sru_from_torch(module, dtype=None):
    """A minirec ``nn.RNN(cell="sru")`` computing what an official ``sru.SRU`` computes."""
    _require_sru()
    from minirec import nn

    cells = list(module.rnn_lst)
    first = cells[0]
    for name, bad in (("projection_size", module.projection_size), ("custom_m", first.custom_m is not None),
                      ("use_tanh", first.activation_type != 0), ("v1", first.v1),
                      ("normalize_after", first.normalize_after), ("has_skip_term=False", not first.has_skip_term),
                      ("proj_input_to_hidden_first", module.input_to_hidden is not None)):
        if bad:
            raise ConversionError(f"official SRU option {name} has no minirec counterpart")
    H, dirs = module.hidden_size, module.num_directions
    layer_norm = first.layer_norm is not None
    rnn = nn.RNN("sru", module.input_size, H, num_layers=module.num_layers, bidirectional=dirs == 2,
                 highway_bias=float(first.highway_bias), rescale=bool(first.rescale), layer_norm=layer_norm)
    for official, layer in zip(cells, rnn.layers):
        D = official.input_size
        k_official = official.num_matrices
        weight = to_numpy(official.weight).reshape(D, dirs, H * k_official)
        weight_c = to_numpy(official.weight_c).reshape(2, dirs, H)
        bias = to_numpy(official.bias).reshape(2, dirs, H)
        scale = float(official.scale_x.item()) if official.rescale else 1.0
        dtype_ = np.dtype(dtype) if dtype is not None else weight.dtype
        _check_skip_norm(layer.forward_cell.k, k_official, layer_norm, D, H)
        for di, cell in enumerate([layer.forward_cell, layer.backward_cell][:dirs]):
            blocks = _per_unit_to_blocks(weight[:, di], H, k_official)
            if cell.k == 4 and k_official == 3:  # the official skip is this direction's half of x (D = 2H)
                blocks = np.concatenate([blocks, _selection(D, H, di).astype(blocks.dtype)], axis=1)
                alpha = scale
            elif cell.k == 3 and k_official == 4:  # D = H, bidirectional: W' must be a multiple of I
                w_skip = blocks[:, 3 * H :]
                alpha = float(w_skip[0, 0])
                if not np.array_equal(w_skip, alpha * np.eye(H)):
                    raise ConversionError(f"layer of input size {D} = hidden size: minirec skips with x itself, but "
                                          "this official layer's trained skip projection W' is not a multiple of I")
                blocks = blocks[:, : 3 * H]
            else:
                alpha = scale if k_official == 3 else 1.0  # a projected official skip carries no scale
            cell.weight.data = np.ascontiguousarray(blocks, dtype=dtype_)
            cell.v_f.data, cell.v_r.data = (np.ascontiguousarray(a, dtype=dtype_) for a in weight_c[:, di])
            cell.b_f.data, cell.b_r.data = (np.ascontiguousarray(a, dtype=dtype_) for a in bias[:, di])
            cell.alpha = alpha
            if layer_norm:
                cell.norm.gamma.data = to_numpy(official.layer_norm.weight).astype(dtype_)
                cell.norm.beta.data = to_numpy(official.layer_norm.bias).astype(dtype_)
                if official.layer_norm.eps != cell.norm.eps:
                    cell.norm.eps = official.layer_norm.eps
    return rnn


def sru_to_torch(rnn):
    """An official ``sru.SRU`` (eval-mode equivalent; see the module docstring) of a minirec SRU stack."""
    torch = require_torch()
    sru = _require_sru()
    first = rnn.layers[0].forward_cell
    H, dirs = first.hidden_size, 2 if rnn.layers[0].bidirectional else 1
    module = sru.SRU(first.input_size, H, num_layers=rnn.num_layers, bidirectional=dirs == 2,
                     highway_bias=first.highway_bias, rescale=True, layer_norm=first.layer_norm)
    dtype = {np.float32: torch.float32, np.float64: torch.float64}[first.weight.data.dtype.type]
    module = module.to(dtype)
    with torch.no_grad():
        for official, layer in zip(module.rnn_lst, rnn.layers):
            D, k_official = official.input_size, official.num_matrices
            cells = [layer.forward_cell, layer.backward_cell][:dirs]
            _check_skip_norm(cells[0].k, k_official, first.layer_norm, D, H)
            weights, alphas = [], set()
            for di, cell in enumerate(cells):
                blocks = cell.weight.data
                if cell.k == 4 and k_official == 3:
                    if not np.array_equal(blocks[:, 3 * H :], _selection(D, H, di)):
                        raise ConversionError(f"official SRU's bidirectional layers of input size {D} = 2H skip with "
                                              "each direction's half of x; this layer's projected skip W' is a "
                                              "trained matrix, not that selection: it cannot be exported")
                    blocks = blocks[:, : 3 * H]
                    alphas.add(cell.alpha)
                elif cell.k == 3 and k_official == 4:
                    blocks = np.concatenate([blocks, cell.alpha * np.eye(H, dtype=blocks.dtype)], axis=1)
                elif cell.k == 4:  # both project: the official projection carries no scale
                    blocks = np.concatenate([blocks[:, : 3 * H], cell.alpha * blocks[:, 3 * H :]], axis=1)
                else:
                    alphas.add(cell.alpha)
                weights.append(_blocks_to_per_unit(blocks, H, k_official))
            if len(alphas) > 1:
                raise ConversionError(f"the two directions' scales α differ ({sorted(alphas)}): the official layer "
                                      "has one")
            official.weight.copy_(to_torch_tensor(np.concatenate(weights, axis=1), like=official.weight))
            v = np.concatenate([c.v_f.data for c in cells] + [c.v_r.data for c in cells])
            b = np.concatenate([c.b_f.data for c in cells] + [c.b_r.data for c in cells])
            official.weight_c.copy_(to_torch_tensor(v, like=official.weight_c))
            official.bias.copy_(to_torch_tensor(b, like=official.bias))
            official.scale_x.fill_(alphas.pop() if alphas else 1.0)
            official.rescale = True  # scale_x holds α (1 where minirec's cell has rescale=False)
            if first.layer_norm:
                gammas, betas = [c.norm.gamma.data for c in cells], [c.norm.beta.data for c in cells]
                if any(not np.array_equal(g, gammas[0]) for g in gammas) or \
                        any(not np.array_equal(b_, betas[0]) for b_ in betas):
                    raise ConversionError("the official layer shares one LayerNorm between directions; this layer's "
                                          "two directions have different LayerNorm parameters")
                official.layer_norm.weight.copy_(to_torch_tensor(gammas[0], like=official.layer_norm.weight))
                official.layer_norm.bias.copy_(to_torch_tensor(betas[0], like=official.layer_norm.bias))
                official.layer_norm.eps = cells[0].norm.eps
    return module.eval()


def sru_states_to_torch(states, rnn):
    """minirec's per-layer c states → the official c0 (layers, B, dirs·H)."""
    torch = require_torch()
    parts = []
    for s in states:
        data = s.data if hasattr(s, "data") else s
        parts.append(np.concatenate(list(data), axis=-1) if data.ndim == 3 else data)
    return torch.from_numpy(np.stack(parts))


def sru_states_from_torch(c, rnn):
    """The official c (layers, B, dirs·H) → minirec's per-layer states."""
    from minirec.autograd.function import Tensor

    H = rnn.layers[0].forward_cell.hidden_size
    arrays = to_numpy(c)
    if rnn.layers[0].bidirectional:
        return [Tensor(np.stack([a[:, :H], a[:, H:]])) for a in arrays]
    return [Tensor(a) for a in arrays]
