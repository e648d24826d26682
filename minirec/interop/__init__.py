"""Weights both ways between minirec and PyTorch (optional: ``pip install -e '.[torch]'``).

    from minirec.interop import to_torch, from_torch
    torch_lstm = to_torch(rnn)            # minirec nn.RNN(cell="lstm") → torch.nn.LSTM
    rnn = from_torch(torch_lstm)          # and back; outputs agree to rounding

What maps to what:

* ``nn.RNN`` of LSTM ↔ ``torch.nn.LSTM``; of GRU with ``reset_after=True`` ↔ ``torch.nn.GRU``
  (`minirec.interop.torch_rnn`), multi-layer and bidirectional;
* ``nn.RNN`` of SRU ↔ the official ``sru.SRU`` (`minirec.interop.sru`), multi-layer and
  bidirectional, layer norm included;
* ``nn.RNN`` of minGRU / minLSTM ↔ lucidrains' ``minGRU_pytorch`` ``minGRU`` / ``minLSTM``
  (`minirec.interop.min_rnn`; one layer, one direction, as the peer has);
* a `LanguageModel` of LSTM or GRU → a ``torch.nn.Module`` with the same perplexity
  (`minirec.interop.models`).

Anything the other side cannot express (a cell, an option, a nonzero bias the peer lacks) is a
`ConversionError` naming it. The core of minirec never imports torch; only this package does.
"""

from __future__ import annotations

from minirec.interop._common import ConversionError

__all__ = ["ConversionError", "to_torch", "from_torch"]


def to_torch(model):
    """The PyTorch equivalent of a minirec ``nn.RNN`` or ``LanguageModel`` (weights copied)."""
    from minirec.models.language_model import LanguageModel
    from minirec.nn.rnn import RNN

    if isinstance(model, LanguageModel):
        from minirec.interop.models import language_model_to_torch

        return language_model_to_torch(model)
    if isinstance(model, RNN):
        if model.cell == "sru":
            from minirec.interop.sru import sru_to_torch

            return sru_to_torch(model)
        if model.cell in ("mingru", "minlstm"):
            from minirec.interop.min_rnn import min_rnn_to_torch

            return min_rnn_to_torch(model)
        from minirec.interop.torch_rnn import rnn_to_torch

        return rnn_to_torch(model)
    raise ConversionError(f"to_torch converts a minirec nn.RNN or LanguageModel, got {type(model).__name__}")


def from_torch(module, dtype=None):
    """The minirec equivalent of ``torch.nn.LSTM``/``GRU`` or lucidrains' ``minGRU``/``minLSTM``."""
    from minirec.interop._common import require_torch

    torch = require_torch()
    if isinstance(module, (torch.nn.LSTM, torch.nn.GRU)):
        from minirec.interop.torch_rnn import rnn_from_torch

        return rnn_from_torch(module, dtype=dtype)
    kind = type(module).__name__
    if kind == "SRU" and type(module).__module__.startswith("sru"):
        from minirec.interop.sru import sru_from_torch

        return sru_from_torch(module, dtype=dtype)
    if kind in ("minGRU", "minLSTM") and type(module).__module__.startswith("minGRU_pytorch"):
        from minirec.interop.min_rnn import min_rnn_from_torch

        return min_rnn_from_torch(module, dtype=dtype)
    raise ConversionError("from_torch converts torch.nn.LSTM, torch.nn.GRU, sru.SRU and minGRU_pytorch's "
                          f"minGRU/minLSTM, got {type(module).__module__}.{kind}")
