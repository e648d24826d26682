"""Corpora and batching for minirec: PTB (language modelling) and SST (sentiment).

Pure NumPy; nothing here depends on the rest of minirec. Corpus files are located on
disk or downloaded once, with a sha256 check (:mod:`minirec.data.download`).
"""

from .download import SHA256, URLS, DataError, cache_dir, locate, sha256_of
from .ptb import (
    PTBCorpus,
    batchify,
    bptt_batches,
    load_ptb,
    n_windows,
    read_ptb_file,
    read_ptb_tokens,
)
from .shakespeare import CharCorpus, load_shakespeare
from .sst import (
    NUM_CLASSES,
    Example,
    SSTBatch,
    SSTBatches,
    SSTCorpus,
    bucket_batches,
    load_sst,
    read_sst_file,
)
from .vocab import EOS, PAD, UNK, Vocab

__all__ = [
    "EOS",
    "NUM_CLASSES",
    "PAD",
    "SHA256",
    "UNK",
    "URLS",
    "CharCorpus",
    "DataError",
    "Example",
    "PTBCorpus",
    "SSTBatch",
    "SSTBatches",
    "SSTCorpus",
    "Vocab",
    "batchify",
    "bptt_batches",
    "bucket_batches",
    "cache_dir",
    "load_ptb",
    "load_shakespeare",
    "load_sst",
    "locate",
    "n_windows",
    "read_ptb_file",
    "read_ptb_tokens",
    "read_sst_file",
    "sha256_of",
]
