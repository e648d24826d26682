"""A recurrent sentence classifier (SST): embedding → (bi)RNN over the padded batch → pooling →
linear layer to the classes.

    tokens (T, B), mask (T, B) ─► Embedding ─► word dropout ─► dropout ─► nn.RNN(cell, bidirectional, mask)
                                ─► pooling over time ─► dropout ─► Linear ─► logits (B, C)

Pooling reads the final layer's outputs y (T, B, D):

* ``"last"``: each sentence's final hidden output. Forward direction: y at the sentence's last
  real token (index length − 1); backward direction (bidirectional): y at t = 0, where the
  time-reversed pass ends. For GRU-like cells this is the last state, for LSTM its h, for SRU
  the highway output h_t (its carried state c_t is not what it outputs).
* ``"max"``: the feature-wise maximum over the real tokens; padded steps are replaced by a large
  negative number (`ops.where`) before the max, so they can never win.

Padding changes nothing (the cells' contract): a sentence gets the same logits alone or in a
padded batch.
"""

from __future__ import annotations

import numpy as np

from minirec import backend
from minirec.autograd import ops
from minirec.autograd.function import Tensor
from minirec.nn import RNN, Dropout, Embedding, Linear, Module, WordDropout

from .language_model import reinit_uniform, to_model_device

__all__ = ["SentenceClassifier", "pool", "POOLINGS", "NEGATIVE_FILL"]

POOLINGS = ("last", "max")
NEGATIVE_FILL = -1e9  # stands in for −∞ at padded steps under max pooling (finite: no inf − inf)


def _check_sizes(vocab_size: int, num_classes: int) -> None:
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be at least 1, got {vocab_size}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")


def _prepare_mask(mask, tokens, like_module):
    """(mask array (T, B) bool on the model's device, lengths array (B,) int on that device).

    Pooling and chunking read each sentence's last word at ``length − 1`` (and the backward
    direction's at t = 0), so every sentence must be a non-empty prefix of its column: padding
    after the words, never before or between them.
    """
    xp = backend.get_xp(tokens)
    if tokens.shape[0] == 0:
        raise ValueError(f"tokens has no time steps (shape {tuple(tokens.shape)}): a sentence needs a word")
    if mask is None:
        mask = xp.ones(tokens.shape, dtype=bool)
        return mask, mask.sum(axis=0)
    mask = to_model_device(mask, like_module)
    if tuple(mask.shape) != tuple(tokens.shape):
        raise ValueError(f"mask must have the shape of tokens {tuple(tokens.shape)}, got {tuple(mask.shape)}")
    if mask.dtype != bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("mask must contain only 0 and 1 (or True and False)")
        mask = mask.astype(bool)
    lengths = mask.sum(axis=0)
    empty = xp.flatnonzero(lengths == 0)
    if empty.size:
        raise ValueError(f"every sentence needs at least one real token; batch columns {empty.tolist()[:10]} have none")
    if not bool((mask == (xp.arange(mask.shape[0])[:, None] < lengths[None, :])).all()):
        raise ValueError("mask must be right-padded: True for each sentence's words, then False for its padding")
    return mask, lengths


def pool(y: Tensor, mask, lengths, how: str, bidirectional: bool) -> Tensor:
    """Pool outputs y (T, B, D) over time into (B, D) (see the module docstring).

    ``mask`` (T, B) bool and ``lengths`` (B,) ints are arrays of y's backend; a sentence must
    have at least one real token.
    """
    xp = backend.get_xp(y.data)
    T, B, D = y.shape
    if how == "max":
        return ops.where(mask[:, :, None], y, NEGATIVE_FILL).max(axis=0)
    if how != "last":
        raise ValueError(f"unknown pooling {how!r}; use one of {POOLINGS}")
    last = xp.maximum(lengths.astype(np.int64) - 1, 0)
    columns = xp.arange(B)
    if not bidirectional:
        return y[last, columns]
    half = D // 2
    forward_last = y[last, columns][:, :half]
    backward_last = y[0][:, half:]
    return ops.concat([forward_last, backward_last], axis=-1)


class SentenceClassifier(Module):
    """``forward(tokens, mask=None) -> logits (B, num_classes)``; tokens (T, B) ids, mask (T, B)
    True at real tokens (None: every position is real)."""

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        cell: str = "lstm",
        embedding_size: int = 300,
        hidden_size: int = 150,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        pooling: str = "last",
        init_range: float | None = None,
        word_dropout: float = 0.0,
        **cell_options,
    ):
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; use one of {POOLINGS}")
        _check_sizes(vocab_size, num_classes)
        self.vocab_size, self.num_classes = int(vocab_size), int(num_classes)
        self.pooling, self.bidirectional = pooling, bool(bidirectional)
        self.embedding = Embedding(vocab_size, embedding_size)
        self.word_dropout = WordDropout(word_dropout)
        self.input_dropout = Dropout(dropout)
        self.rnn = RNN(
            cell, embedding_size, hidden_size, num_layers=num_layers, bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0, **cell_options,  # (between layers)
        )
        self.output_dropout = Dropout(dropout)
        self.output = Linear(self.rnn.output_size, num_classes)
        if init_range is not None:
            reinit_uniform(self, init_range)

    @property
    def cell(self) -> str:
        return self.rnn.cell

    def features(self, tokens, mask=None) -> Tensor:
        """The pooled sentence vectors (B, D) before the output layer."""
        tokens = to_model_device(tokens, self)
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be time-major (T, B) ids, got shape {tuple(tokens.shape)}")
        given = mask
        mask, lengths = _prepare_mask(mask, tokens, self)
        x = self.input_dropout(self.word_dropout(self.embedding(tokens)))
        y, _ = self.rnn(x, None, None if given is None else mask)
        return pool(y, mask, lengths, self.pooling, self.bidirectional)

    def forward(self, tokens, mask=None) -> Tensor:
        return self.output(self.output_dropout(self.features(tokens, mask)))

    def extra_repr(self):
        return f"classes={self.num_classes}, pooling={self.pooling!r}"
