"""Generate text from a trained language model: ``minirec sample RUN_DIR`` and `sample`.

    minirec sample runs/chars-lstm --prime "ROMEO:" --length 500 --temperature 0.8 --seed 1
    minirec sample runs/ptb-lstm --prime "the company said" --length 40 --stop-at-eos

    from minirec.training import sample
    text = sample("runs/chars-lstm", prime="ROMEO:", length=200, seed=1)

The run's best-validation weights (``best.npz``) and its configuration rebuild the model; the
vocabulary comes from ``vocab.json`` in the run (written by ``minirec train chars``), else from
the corpus the run was trained on. The prime is read in one pass of the whole-sequence forward,
then each new token costs one `RNN.step`: O(1) work per token, however long the text already is.

Each next token is drawn from softmax(logits / temperature), restricted to the ``top_k`` most
likely when given; temperature 0 takes the most likely token (argmax). The draws come from
NumPy's generator seeded with ``seed``: same run, same arguments, same text.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from minirec.autograd.function import no_grad

from .chars import VOCAB

__all__ = ["add_arguments", "run", "sample", "load_language_model", "SampleError"]

_START = {"chars": "\n", "ptb": "<eos>"}  # what an empty prime starts from: a line's start


class SampleError(ValueError):
    """The run cannot be sampled from, or an argument is out of range; the message says why."""


def load_language_model(run_dir):
    """(model in eval mode, vocabulary, configuration) of the run in ``run_dir``."""
    from minirec.data import Vocab
    from minirec.models import LanguageModel

    from .checkpoint import load_checkpoint
    from .loop import BEST

    run_dir = Path(run_dir)
    path = run_dir / BEST
    if not path.is_file():
        raise SampleError(f"no {BEST} in {run_dir}: not a training run's directory, or its first evaluation "
                          "has not finished yet")
    checkpoint = load_checkpoint(path)
    config = checkpoint.meta.get("config") or {}
    task = config.get("task")
    if task not in _START:
        raise SampleError(f"{run_dir} holds a {task!r} model; sampling needs a language model (chars or ptb)")
    if (run_dir / VOCAB).is_file():
        vocab = Vocab.from_dict(json.loads((run_dir / VOCAB).read_text(encoding="utf-8")))
    elif task == "chars":
        from minirec.data import load_shakespeare

        vocab = load_shakespeare(config.get("data_dir")).vocab
    else:
        from minirec.data import load_ptb

        vocab = load_ptb(config.get("data_dir")).vocab
    model = LanguageModel(
        len(vocab), cell=config["cell"], embedding_size=config["embedding"], hidden_size=config["hidden"],
        num_layers=config["layers"], tie_weights=config.get("tie_weights", False), **config.get("cell_options", {}),
    )
    model.load_state_dict(checkpoint.model)
    return model.eval(), vocab, config


def _tokens(text: str, task: str) -> list[str]:
    return list(text) if task == "chars" else text.split()


def _check_arguments(length, temperature, top_k):
    if not isinstance(length, (int, np.integer)) or length < 0:
        raise SampleError(f"length must be a whole number >= 0, got {length!r}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
        raise SampleError(f"temperature must be a finite number >= 0 (0: always the most likely), got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise SampleError(f"top_k must be a whole number >= 1, got {top_k!r}")


def _choose(logits: np.ndarray, temperature: float, top_k: int | None, rng: np.random.Generator) -> int:
    """One token id from the logits (V,) of the next position."""
    logits = logits.astype(np.float64)
    if temperature == 0:
        return int(np.argmax(logits))
    if top_k is not None and top_k < len(logits):
        threshold = np.partition(logits, -top_k)[-top_k]
        logits = np.where(logits >= threshold, logits, -np.inf)
    scaled = (logits - logits.max()) / temperature
    p = np.exp(scaled)
    return int(rng.choice(len(p), p=p / p.sum()))


def sample(run_dir, prime: str = "", length: int = 500, temperature: float = 1.0, top_k: int | None = None,
           seed: int = 0, stop_at_eos: bool = False, model=None) -> str:
    """The ``length`` tokens generated after ``prime`` (the prime itself not included), as text:
    characters for a ``chars`` run; for a ``ptb`` run words joined by spaces, ``<eos>`` written
    as a line break, and ``stop_at_eos`` ends the text at the first one. ``model``: the triple of
    `load_language_model`, to sample many times without reloading."""
    _check_arguments(length, temperature, top_k)
    model, vocab, config = model or load_language_model(run_dir)
    task = config["task"]
    tokens = _tokens(prime, task) or [_START[task]]
    unknown = sorted(set(tokens) - set(vocab.tokens))
    if unknown:
        what = "characters" if task == "chars" else "words"
        raise SampleError(f"{what} of the prime not in the model's vocabulary: {', '.join(map(repr, unknown))}")
    ids = vocab.encode(tokens)
    rng = np.random.default_rng(seed)
    generated = []
    with no_grad():
        logits, state = model(ids[:, None])  # the prime in one pass: (T, 1, V)
        next_logits = logits.data[-1, 0]
        for _ in range(length):
            token = _choose(next_logits, temperature, top_k, rng)
            if task == "ptb" and stop_at_eos and vocab.tokens[token] == "<eos>":
                break
            generated.append(token)
            x_t = model.embedding(np.array([token]))
            h_t, state = model.rnn.step(x_t, state)
            next_logits = model.decode(h_t).data[0]
    words = vocab.decode(generated)
    if task == "chars":
        return "".join(words)
    return " ".join(words).replace(" <eos> ", "\n").replace("<eos>", "\n")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("run_dir", help="a run directory of `minirec train chars` or `minirec train ptb`")
    parser.add_argument("--prime", default="", help="text to start from (default: the start of a line)")
    parser.add_argument("--length", type=int, default=500, help="tokens to generate (characters or words)")
    parser.add_argument("--temperature", type=float, default=1.0, help="0: always the most likely token")
    parser.add_argument("--top-k", type=int, help="draw among the K most likely tokens only")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same text")
    parser.add_argument("--stop-at-eos", action="store_true", help="ptb: stop at the first <eos> (end of sentence)")
    return parser


def run(args) -> int:
    from minirec.data import DataError

    try:
        loaded = load_language_model(args.run_dir)
        start = time.perf_counter()
        text = sample(args.run_dir, prime=args.prime, length=args.length, temperature=args.temperature,
                      top_k=args.top_k, seed=args.seed, stop_at_eos=args.stop_at_eos, model=loaded)
        seconds = time.perf_counter() - start
    except (SampleError, DataError, KeyError, ValueError) as error:
        print(f"minirec sample: error: {error}", file=sys.stderr)
        return 2
    separator = "" if loaded[2]["task"] == "chars" or not args.prime else " "
    print(args.prime + separator + text)
    count = len(_tokens(text, loaded[2]["task"]))
    print(f"minirec sample: {count} tokens in {seconds:.2f} s ({count / max(seconds, 1e-9):.0f} tokens/s)",
          file=sys.stderr)
    return 0
