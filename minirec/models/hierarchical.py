"""A small hierarchical recurrent classifier, for "The lower the simpler" comparison (Wang &
Jiang, NAACL 2019): simple recurrences low in the hierarchy, a full GRU on top.

    tokens (T, B) ─► Embedding ─► cut into chunks of ``chunk_size`` words
        level 1: a recurrent layer over the words *inside* each chunk (all chunks of all
                 sentences at once, as one batch of B·n_chunks short sequences), keeping its
                 output at each chunk's last real word: one vector per chunk
        level 2, 3, …: recurrent layers over the sequence of chunk vectors (stacked)
    ─► pooling over chunks (last / max) ─► dropout ─► Linear ─► logits (B, C)

``levels`` names the cell of each level, bottom first: ``("fofe", "sgu", "gru")`` (the default:
FOFE, parameter-free, at the bottom) against ``("gru", "gru", "gru")`` compares "simpler below"
with "the same everywhere". A FOFE level keeps its input size (it has no weights: hidden size =
input size); every other level has ``hidden_size`` features.

Reshaping, with n = ⌈T / chunk_size⌉ chunks (the batch padded to n·chunk_size steps):
(n·c, B, E) → (n, c, B, E) → (c, n, B, E) → (c, n·B, E), so column j·B + b is chunk j of
sentence b; its mask says which of its words are real. A chunk with no real word (past a
sentence's end) is masked out at the levels above. `parameter_counts` gives the size of each part.
"""

from __future__ import annotations

import numpy as np

from minirec import backend
from minirec.autograd.function import Tensor
from minirec.nn import RNN, Dropout, Embedding, Linear, Module, WordDropout

from .classifier import POOLINGS, _check_sizes, _prepare_mask, pool
from .language_model import reinit_uniform, to_model_device

__all__ = ["HierarchicalClassifier"]


class HierarchicalClassifier(Module):
    """``forward(tokens, mask=None) -> logits (B, num_classes)``.

    ``level_options``: one dict of cell options per level (e.g. ``{"alpha": 0.7}`` for FOFE), or None.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        levels=("fofe", "sgu", "gru"),
        embedding_size: int = 128,
        hidden_size: int = 128,
        chunk_size: int = 8,
        dropout: float = 0.0,
        pooling: str = "last",
        level_options=None,
        init_range: float | None = None,
        word_dropout: float = 0.0,
    ):
        levels = tuple(str(cell).lower() for cell in levels)
        if len(levels) < 2:
            raise ValueError(f"a hierarchy needs at least 2 levels (words in chunks, then chunks), got {levels}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; use one of {POOLINGS}")
        _check_sizes(vocab_size, num_classes)
        level_options = [{} for _ in levels] if level_options is None else [dict(o or {}) for o in level_options]
        if len(level_options) != len(levels):
            raise ValueError(f"level_options needs one entry per level ({len(levels)}), got {len(level_options)}")
        if any(options.get("bidirectional") for options in level_options):
            # chunk_vectors and last pooling read each level's output at the last real step only.
            raise ValueError("the hierarchy's levels are unidirectional: drop bidirectional from level_options")
        self.levels, self.chunk_size, self.pooling = levels, int(chunk_size), pooling
        self.num_classes = int(num_classes)
        self.embedding = Embedding(vocab_size, embedding_size)
        self.word_dropout = WordDropout(word_dropout)
        self.input_dropout = Dropout(dropout)
        self.dropout = Dropout(dropout)
        self.encoders = []
        size = embedding_size
        for cell, options in zip(levels, level_options):
            hidden = size if cell == "fofe" else hidden_size
            encoder = RNN(cell, size, hidden, num_layers=1, **options)
            self.encoders.append(encoder)
            size = encoder.output_size
        self.output = Linear(size, num_classes)
        if init_range is not None:
            reinit_uniform(self, init_range)

    def parameter_counts(self) -> dict:
        """Trainable parameters of each part: embedding, each level (named by its cell), output."""
        counts = {"embedding": self.embedding.count_parameters()}
        for i, (cell, encoder) in enumerate(zip(self.levels, self.encoders), start=1):
            counts[f"level{i}:{cell}"] = encoder.count_parameters()
        counts["output"] = self.output.count_parameters()
        return counts

    def chunk_vectors(self, x: Tensor, mask):
        """Level 1: x (T, B, E) and mask (T, B) → chunk vectors (n, B, D) and chunk mask (n, B)."""
        xp = backend.get_xp(x.data)
        T, B, E = x.shape
        c = self.chunk_size
        n = max(-(-T // c), 1)
        pad = n * c - T
        if pad:
            x = _pad_time(x, pad)
            mask = xp.concatenate([mask, xp.zeros((pad, B), dtype=bool)], axis=0)
        words = x.reshape(n, c, B, E).transpose(1, 0, 2, 3).reshape(c, n * B, E)
        word_mask = xp.ascontiguousarray(mask.reshape(n, c, B).transpose(1, 0, 2).reshape(c, n * B))
        chunk_lengths = word_mask.sum(axis=0)
        y, _ = self.encoders[0](words, None, word_mask)
        last = xp.maximum(chunk_lengths.astype(np.int64) - 1, 0)
        vectors = y[last, xp.arange(n * B)]  # each chunk's output at its last real word (0 if none)
        return vectors.reshape(n, B, y.shape[-1]), (chunk_lengths > 0).reshape(n, B)

    def forward(self, tokens, mask=None) -> Tensor:
        tokens = to_model_device(tokens, self)
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be time-major (T, B) ids, got shape {tuple(tokens.shape)}")
        mask, _ = _prepare_mask(mask, tokens, self)
        x = self.input_dropout(self.word_dropout(self.embedding(tokens)))
        h, chunk_mask = self.chunk_vectors(x, mask)
        for encoder in self.encoders[1:]:
            h, _ = encoder(self.dropout(h), None, chunk_mask)
        features = pool(h, chunk_mask, chunk_mask.sum(axis=0), self.pooling, bidirectional=False)
        return self.output(self.dropout(features))

    def extra_repr(self):
        return f"levels={self.levels}, chunk_size={self.chunk_size}, pooling={self.pooling!r}"


def _pad_time(x: Tensor, pad: int) -> Tensor:
    """x (T, B, E) followed by ``pad`` zero steps (a constant: no gradient flows to it)."""
    from minirec.autograd import ops

    xp = backend.get_xp(x.data)
    zeros = Tensor(xp.zeros((pad, *x.shape[1:]), dtype=x.dtype))
    return ops.concat([x, zeros], axis=0)
