"""Stanford Sentiment Treebank, sentence level: binary (SST-2) and fine-grained (SST-5).

Each line of a file is ``LABEL<space>tokenized sentence``. Sentences have different
lengths, so a batch is padded to its longest sentence; :func:`bucket_batches` groups
sentences of similar length so that little of each batch is padding.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import NamedTuple

import numpy as np

from .download import DataError, locate
from .vocab import PAD, UNK, Vocab

__all__ = [
    "NUM_CLASSES",
    "Example",
    "SSTBatch",
    "SSTBatches",
    "SSTCorpus",
    "bucket_batches",
    "load_sst",
    "read_sst_file",
]

#: Number of sentiment classes of each kind of SST.
NUM_CLASSES = {"binary": 2, "fine": 5}


class Example(NamedTuple):
    """One sentence: its token ids (1-D int64) and its label."""

    ids: np.ndarray
    label: int


class SSTBatch(NamedTuple):
    """A padded, time-major batch of ``B`` sentences, the longest of length ``T``."""

    tokens: np.ndarray  # (T, B) int64, pad_id after each sentence's end
    mask: np.ndarray  # (T, B) bool, True at real tokens
    labels: np.ndarray  # (B,) int64
    lengths: np.ndarray  # (B,) int64, number of real tokens per sentence


@dataclass
class SSTCorpus:
    """The three splits as lists of :class:`Example`, and the vocabulary (from train)."""

    vocab: Vocab
    train: list[Example]
    dev: list[Example]
    test: list[Example]
    num_classes: int


def read_sst_file(path: str | os.PathLike, num_classes: int | None = None) -> list[tuple[list[str], int]]:
    """Parse an SST file into ``(tokens, label)`` pairs.

    Blank lines are skipped. A line without a sentence, with a label that is not an
    integer, or (when ``num_classes`` is given) a label outside ``0 .. num_classes - 1``
    raises :class:`DataError` naming the file and line number.
    """
    sentences = []
    try:
        with open(path, encoding="utf-8") as file:
            for line_number, line in enumerate(file, start=1):
                _parse_line(line, f"{path}, line {line_number}", num_classes, sentences)
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error})") from None
    return sentences


def _parse_line(line: str, where: str, num_classes: int | None, sentences: list) -> None:
    """Append ``(tokens, label)`` of one line to ``sentences`` (a blank line adds nothing)."""
    if not line.strip():
        return
    label_text, *tokens = line.split()
    if not tokens:
        raise DataError(f"{where}: expected 'LABEL sentence', got {line!r}")
    try:
        label = int(label_text)
    except ValueError:
        raise DataError(f"{where}: the label {label_text!r} is not an integer") from None
    if num_classes is not None and not 0 <= label < num_classes:
        raise DataError(f"{where}: label {label} is outside 0..{num_classes - 1}")
    sentences.append((tokens, label))


def load_sst(
    kind: str = "binary",
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    max_vocab: int | None = None,
    min_freq: int = 1,
) -> SSTCorpus:
    """Load SST train/dev/test of ``kind`` ``"binary"`` or ``"fine"``.

    The vocabulary is built from train with ``<pad>`` as id 0 and ``<unk>`` as id 1;
    ``max_vocab`` (specials included) and ``min_freq`` limit its size, and words outside
    it become ``<unk>``.
    """
    if kind not in NUM_CLASSES:
        raise ValueError(f"kind must be one of {sorted(NUM_CLASSES)}, got {kind!r}")
    num_classes = NUM_CLASSES[kind]
    splits = {}
    for split in ("train", "dev", "test"):
        path = locate(f"sst/{kind}.{split}.txt", data_dir=data_dir, download=download)
        splits[split] = read_sst_file(path, num_classes)

    train_words = chain.from_iterable(tokens for tokens, _ in splits["train"])
    vocab = Vocab.from_tokens(train_words, specials=(PAD, UNK), max_size=max_vocab, min_freq=min_freq)

    def encode(sentences):
        return [Example(vocab.encode(tokens), label) for tokens, label in sentences]

    return SSTCorpus(
        vocab=vocab,
        train=encode(splits["train"]),
        dev=encode(splits["dev"]),
        test=encode(splits["test"]),
        num_classes=num_classes,
    )


def bucket_batches(
    examples: Sequence[tuple[np.ndarray, int]],
    batch_size: int,
    shuffle: bool,
    rng: np.random.Generator | None = None,
    pad_id: int = 0,
    pool_batches: int = 50,
) -> Iterator[SSTBatch]:
    """Yield padded batches of sentences of similar length; each example exactly once.

    The examples are taken in pools of ``pool_batches * batch_size``; each pool is
    sorted by length and cut into batches. With ``shuffle``, the examples are shuffled
    before pooling and the batches are shuffled afterwards, all with ``rng`` (a fresh
    ``numpy.random.default_rng()`` when None): the same generator state gives the same
    epoch. Without ``shuffle`` no randomness is used. The last batch may be smaller.
    """
    _check_sizes(batch_size, pool_batches)
    lengths = np.array([len(ids) for ids, _ in examples], dtype=np.int64)
    order = np.arange(len(examples))
    if shuffle:
        rng = np.random.default_rng() if rng is None else rng
        order = rng.permutation(len(examples))

    pool_size = pool_batches * batch_size
    batches = []
    for pool_start in range(0, len(order), pool_size):
        pool = order[pool_start : pool_start + pool_size]
        pool = pool[np.argsort(lengths[pool], kind="stable")]
        batches.extend(pool[i : i + batch_size] for i in range(0, len(pool), batch_size))
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]

    # The order is fixed (and rng consumed) now; padding happens lazily, batch by batch.
    return (_pad([examples[i] for i in batch], pad_id) for batch in batches)


def _check_sizes(batch_size: int, pool_batches: int) -> None:
    for name, value in (("batch_size", batch_size), ("pool_batches", pool_batches)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")


def _pad(examples: list[tuple[np.ndarray, int]], pad_id: int) -> SSTBatch:
    """Stack sentences into a time-major (T, B) batch, padding with ``pad_id``."""
    lengths = np.array([len(ids) for ids, _ in examples], dtype=np.int64)
    n_steps = int(lengths.max(initial=0))
    tokens = np.full((n_steps, len(examples)), pad_id, dtype=np.int64)
    for column, (ids, _) in enumerate(examples):
        tokens[: len(ids), column] = ids
    mask = np.arange(n_steps)[:, None] < lengths[None, :]
    labels = np.array([label for _, label in examples], dtype=np.int64)
    return SSTBatch(tokens, mask, labels, lengths)


class SSTBatches:
    """A re-iterable :func:`bucket_batches`: each ``for`` loop over it is one epoch.

    With ``shuffle``, successive epochs draw from the one ``rng`` and so differ, while
    the whole sequence of epochs is reproducible from the generator's seed.
    """

    def __init__(
        self,
        examples: Sequence[tuple[np.ndarray, int]],
        batch_size: int,
        shuffle: bool = False,
        rng: np.random.Generator | None = None,
        pad_id: int = 0,
        pool_batches: int = 50,
    ):
        _check_sizes(batch_size, pool_batches)
        self.examples = examples
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.rng = np.random.default_rng() if rng is None and shuffle else rng
        self.pad_id = pad_id
        self.pool_batches = pool_batches

    def __len__(self) -> int:
        """Number of batches per epoch (the batch count does not depend on the order)."""
        n_batches = 0
        pool_size = self.pool_batches * self.batch_size
        for pool_start in range(0, len(self.examples), pool_size):
            pool_len = min(pool_size, len(self.examples) - pool_start)
            n_batches += -(-pool_len // self.batch_size)
        return n_batches

    def __iter__(self) -> Iterator[SSTBatch]:
        return bucket_batches(
            self.examples,
            self.batch_size,
            shuffle=self.shuffle,
            rng=self.rng,
            pad_id=self.pad_id,
            pool_batches=self.pool_batches,
        )
