"""The ``chars`` task: character-level language modelling on Tiny Shakespeare.

The training text is cut into ``batch_size`` contiguous streams read in windows of ``bptt``
characters, the state carried from one window to the next (truncated BPTT, as for PTB). What
differs is the unit the loop calls an *epoch*, which here is an **evaluation interval**: each
starts the streams at a fresh random point of the text (drawn by ``data_rng``, whose state the
checkpoint keeps, so a resumed run draws the same) and reads ``max_batches`` windows of them
(all of them without the cap: one pass over the rotated text). The state starts at zero in each
interval: the cpu preset's 50 windows of 64 characters carry it over 3,200 characters.

Evaluation reads the validation text the same way, from its start, capped at
``max_eval_batches`` windows (an estimate, like nanoGPT's ``eval_iters``). There is no test
split: the loop's final "test" is the best model on the **whole** validation text, recorded with
``"split": "valid"``. Losses are in nats per character; ``bpc`` is the same in bits.
"""

from __future__ import annotations

import math
from itertools import islice
from pathlib import Path

import numpy as np

from minirec import backend
from minirec.autograd.function import no_grad

from .checkpoint import write_json_atomic

__all__ = ["CharTask", "VOCAB"]

VOCAB = "vocab.json"


class CharTask:
    """Tiny Shakespeare, one character per token (see the module docstring)."""

    metric, higher_is_better = "bpc", False

    def __init__(self, config):
        from minirec.data import batchify, load_shakespeare
        from minirec.models import LanguageModel

        from .loop import _naming_cell_options

        self.config = config
        corpus = load_shakespeare(config["data_dir"])
        self.vocab = corpus.vocab
        self.vocab_size = len(corpus.vocab)
        self.outputs = (self.vocab_size, "characters")
        self.train_ids = corpus.train
        self.data_rng = np.random.default_rng(config["seed"])
        eval_batch = config["eval_batch_size"] or config["batch_size"]
        self.valid_data = batchify(corpus.valid, eval_batch)
        with _naming_cell_options(config):
            self.model = LanguageModel(
                self.vocab_size, cell=config["cell"], embedding_size=config["embedding"],
                hidden_size=config["hidden"], num_layers=config["layers"], dropout=config["dropout"],
                tie_weights=config["tie_weights"], init_range=config["init_range"], **config["cell_options"],
            )
        if config["init_range"] is None:
            # Character vectors from N(0, 1) (PyTorch's nn.Embedding), not U(±0.1): with 65 rows the
            # inputs otherwise start ~17x weaker. Measured, 2x256 LSTM, 250 Adam steps of 12x64:
            # valid loss 2.09 vs 2.34 nats/char (results/README.md).
            weight = self.model.embedding.weight
            weight.data = backend.rng().standard_normal(weight.shape).astype(weight.dtype)
        if config["out"]:  # `minirec sample` reads the characters from here
            out = Path(config["out"])
            out.mkdir(parents=True, exist_ok=True)
            write_json_atomic(out / VOCAB, self.vocab.to_dict())

    def n_train_batches(self):
        steps = len(self.train_ids) // self.config["batch_size"]  # per stream; the last has no target
        n = -(-(steps - 1) // self.config["bptt"])
        return min(n, self.config["max_batches"] or n)

    def train_batches(self, skip):
        from minirec.data import batchify, bptt_batches

        # One draw per interval, before skipping: a resumed interval redraws the same start.
        start = int(self.data_rng.integers(len(self.train_ids)))
        streams = batchify(np.roll(self.train_ids, -start), self.config["batch_size"])
        return islice(bptt_batches(streams, self.config["bptt"]), skip, self.n_train_batches())

    def step(self, batch, carry):
        inputs, targets = batch
        loss, new_carry = self.model.loss(inputs, targets, carry)
        # The mean loss per character is the gradient's scale (Adam, as nanoGPT and char-rnn).
        stats = {"count": inputs.size, "tokens": inputs.size}
        return loss, self.model.detach_state(new_carry), stats

    def evaluate(self, split):
        from minirec.data import bptt_batches

        whole = split == "test"  # no test split: the final evaluation reads all of valid
        cap = None if whole else self.config["max_eval_batches"] or self.config["max_batches"]
        total, count, state = 0.0, 0, None
        self.model.eval()
        try:
            with no_grad():
                for inputs, targets in islice(bptt_batches(self.valid_data, self.config["bptt"]), cap):
                    loss, state = self.model.loss(inputs, targets, state)
                    total += float(loss.item()) * inputs.size
                    count += inputs.size
        finally:
            self.model.train()
        summary = self.summary(total, count, 0)
        if whole:
            summary["split"] = "valid"
        return summary

    @staticmethod
    def summary(loss_sum, count, correct):
        loss = loss_sum / max(count, 1)
        return {"loss": loss, "bpc": loss / math.log(2)}
