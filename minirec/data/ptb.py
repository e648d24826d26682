"""Penn Treebank for word-level language modelling (Mikolov's split, as in Zaremba 2014).

The corpus is one long stream of word ids. For training it is cut into ``batch_size``
contiguous streams (:func:`batchify`), which are read in windows of ``bptt`` steps
(:func:`bptt_batches`): the hidden state carries over from one window to the next,
because window ``k + 1`` of a stream continues where window ``k`` stopped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .download import DataError, locate
from .vocab import EOS, Vocab

__all__ = [
    "PTBCorpus",
    "batchify",
    "bptt_batches",
    "load_ptb",
    "n_windows",
    "read_ptb_file",
    "read_ptb_tokens",
]


@dataclass
class PTBCorpus:
    """The three splits as 1-D int64 arrays of ids, and the vocabulary (from train)."""

    vocab: Vocab
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray


def read_ptb_tokens(path: str | os.PathLike) -> list[str]:
    """All tokens of a PTB file: each line split on whitespace, then ``<eos>``."""
    tokens: list[str] = []
    try:
        with open(path, encoding="utf-8") as file:
            for line in file:
                tokens.extend(line.split())
                tokens.append(EOS)
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error})") from None
    return tokens


def read_ptb_file(path: str | os.PathLike, vocab: Vocab) -> np.ndarray:
    """The ids of a PTB file (with ``<eos>`` after each line) as a 1-D int64 array."""
    return vocab.encode(read_ptb_tokens(path))


def load_ptb(data_dir: str | os.PathLike | None = None, download: bool = True) -> PTBCorpus:
    """Load PTB train/valid/test, building the vocabulary from train (10,000 words).

    Files are found (or downloaded and checked) by :func:`minirec.data.download.locate`.
    """
    paths = {
        split: locate(f"ptb/{split}.txt", data_dir=data_dir, download=download) for split in ("train", "valid", "test")
    }
    train_tokens = read_ptb_tokens(paths["train"])
    vocab = Vocab.from_tokens(train_tokens)
    return PTBCorpus(
        vocab=vocab,
        train=vocab.encode(train_tokens),
        valid=read_ptb_file(paths["valid"], vocab),
        test=read_ptb_file(paths["test"], vocab),
    )


def batchify(ids: np.ndarray, batch_size: int) -> np.ndarray:
    """Cut a 1-D id stream into ``batch_size`` contiguous streams, time-major.

    Returns an int64 array of shape ``(n_steps, batch_size)`` with
    ``n_steps = len(ids) // batch_size``; the remainder at the end is dropped.
    Column ``b`` is ``ids[b * n_steps : (b + 1) * n_steps]``.
    """
    ids = np.asarray(ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"batchify expects integer token ids, got dtype {ids.dtype}")
    ids = ids.astype(np.int64, copy=False)
    if ids.ndim != 1:
        raise ValueError(f"batchify expects a 1-D array of ids, got shape {ids.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    n_steps = len(ids) // batch_size
    if n_steps == 0:
        raise ValueError(f"{len(ids)} ids are too few for batch_size={batch_size}")
    streams = ids[: n_steps * batch_size].reshape(batch_size, n_steps)
    return np.ascontiguousarray(streams.T)


def n_windows(data: np.ndarray, bptt: int) -> int:
    """How many windows :func:`bptt_batches` yields for ``data`` of shape (n_steps, B)."""
    if bptt < 1:
        raise ValueError(f"bptt must be at least 1, got {bptt}")
    n_predictions = max(len(data) - 1, 0)
    return -(-n_predictions // bptt)  # ceiling division


def bptt_batches(data: np.ndarray, bptt: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(inputs, targets)`` windows of at most ``bptt`` steps, each ``(T, B)``.

    ``targets[t] == data[start + t + 1]``: the next word after ``inputs[t]``. The last
    window is shorter when ``n_steps - 1`` is not a multiple of ``bptt``.
    """
    if bptt < 1:
        raise ValueError(f"bptt must be at least 1, got {bptt}")
    last_input = len(data) - 1  # the final step has no next word to predict
    for start in range(0, last_input, bptt):
        length = min(bptt, last_input - start)
        yield data[start : start + length], data[start + 1 : start + 1 + length]
