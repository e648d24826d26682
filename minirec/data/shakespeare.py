"""Tiny Shakespeare for character-level language modelling (Karpathy's char-rnn corpus).

One file of 1,115,394 characters (40,000 lines of plays). Split as nanoGPT's
``shakespeare_char`` does: the first 90 % of the characters train, the last 10 % validate.
There is **no test split**: results on this corpus are validation losses. The vocabulary is
the 65 distinct characters of the whole text, sorted (id 0 is ``"\\n"``, id 1 is ``" "``),
so a character outside it is an error, never an ``<unk>``.

The file is found (or downloaded and checked against its sha256) by
:func:`minirec.data.download.locate` under the relative path ``shakespeare/input.txt``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .download import SHA256, URLS, DataError, locate
from .vocab import Vocab

__all__ = ["SHAKESPEARE", "CharCorpus", "char_vocab", "encode_text", "load_shakespeare", "read_text", "split_text"]

#: The relative path of the corpus file (``DIR/shakespeare/input.txt`` for ``--data-dir DIR``).
SHAKESPEARE = "shakespeare/input.txt"

# Registered here so that this module stays self-contained; the entries belong in download.py's
# tables beside PTB and SST (setdefault: an entry a user or a test put there first wins).
URLS.setdefault(SHAKESPEARE, "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt")
SHA256.setdefault(SHAKESPEARE, "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed")

TRAIN_FRACTION = 0.9


@dataclass
class CharCorpus:
    """A character corpus: the vocabulary and the train/valid splits as 1-D int64 id arrays."""

    vocab: Vocab
    train: np.ndarray
    valid: np.ndarray


def read_text(path: str | os.PathLike) -> str:
    """The file's characters exactly (UTF-8, line ends kept as they are)."""
    try:
        with open(path, encoding="utf-8", newline="") as file:
            return file.read()
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error})") from None


def char_vocab(text: str) -> Vocab:
    """One token per distinct character of ``text``, in sorted order (nanoGPT's numbering)."""
    if not text:
        raise DataError("cannot build a character vocabulary from an empty text")
    return Vocab(sorted(set(text)))


def encode_text(text: str, vocab: Vocab) -> np.ndarray:
    """The ids of ``text``'s characters; characters outside ``vocab`` are a ValueError naming them."""
    unknown = sorted(set(text) - set(vocab.tokens))
    if unknown:
        raise ValueError(f"characters not in the vocabulary: {', '.join(repr(c) for c in unknown)}")
    return vocab.encode(text)


def split_text(text: str, train_fraction: float = TRAIN_FRACTION) -> tuple[str, str]:
    """(train, valid): the first ``train_fraction`` of the characters, then the rest."""
    cut = int(len(text) * train_fraction)
    return text[:cut], text[cut:]


def load_shakespeare(data_dir: str | os.PathLike | None = None, download: bool = True) -> CharCorpus:
    """Tiny Shakespeare as ids: vocabulary of the whole text, nanoGPT's 90/10 split."""
    text = read_text(locate(SHAKESPEARE, data_dir=data_dir, download=download))
    vocab = char_vocab(text)
    train, valid = split_text(text)
    if not train or not valid:
        raise DataError(f"{SHAKESPEARE}: {len(text)} characters are too few to split 90/10")
    return CharCorpus(vocab=vocab, train=vocab.encode(train), valid=vocab.encode(valid))
