#!/usr/bin/env python3
"""The speed column of the SRU paper's Table 1 on this CPU: a training step of the ``classify``
``paper`` preset (2 layers of 128, random 300-d embeddings, max pooling, Adam) for each cell.

Each round times ``--steps`` training steps (forward, backward, Adam) of every cell in turn, on
the same random batches (32 sentences of ``--length`` words from a vocabulary of ``--vocab``),
so that a passing load on a shared machine hits all cells alike; the table gives the median
round per cell, the time of an epoch of that many steps, and the ratio to SRU.

    python benchmarks/classify_speed.py                 # TREC-like: 154 steps/epoch, 10 words
    python benchmarks/classify_speed.py --length 21 --epoch-steps 270   # MR-like fold
    python benchmarks/classify_speed.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np  # noqa: E402

from minirec import backend  # noqa: E402
from minirec.autograd import ops  # noqa: E402
from minirec.models import SentenceClassifier  # noqa: E402
from minirec.nn import Adam  # noqa: E402
from minirec.training import PRESETS  # noqa: E402


def build(cell, vocab, classes):
    preset = PRESETS["classify"]["paper"]
    backend.manual_seed(0)
    model = SentenceClassifier(vocab, classes, cell=cell, num_layers=preset["layers"],
                               embedding_size=preset["embedding"], hidden_size=preset["hidden"],
                               dropout=preset["dropout"], pooling=preset["pooling"],
                               bidirectional=preset["bidirectional"])
    return model, Adam(model.parameters(), lr=preset["lr"])


def step(model, optimizer, tokens, labels):
    loss = ops.cross_entropy(model(tokens, None), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default="sru,lstm,qrnn,lrn,mingru")
    parser.add_argument("--length", type=int, default=10, help="words per sentence (TREC: 10, MR: 21)")
    parser.add_argument("--vocab", type=int, default=8897, help="vocabulary (TREC's training part: 8,897)")
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--steps", type=int, default=20, help="training steps per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epoch-steps", type=int, default=154, help="steps of one epoch (TREC: 4,906 / 32)")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 5 steps")
    parser.add_argument("--json", metavar="PATH", help="also write the rows, the settings and the machine as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.rounds = 5, 2
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    rng = np.random.default_rng(0)
    tokens = rng.integers(2, args.vocab, size=(args.length, 32))
    labels = rng.integers(0, args.classes, size=32)
    models = {cell: build(cell, args.vocab, args.classes) for cell in cells}
    for cell in cells:  # warm-up: numba compiles on first use
        step(*models[cell], tokens, labels)
    rounds = {cell: [] for cell in cells}
    for _ in range(args.rounds):
        for cell in cells:
            start = time.perf_counter()
            for _ in range(args.steps):
                step(*models[cell], tokens, labels)
            rounds[cell].append((time.perf_counter() - start) / args.steps)
    reference = statistics.median(rounds[cells[0]])
    print(f"batch 32 x {args.length} words, vocab {args.vocab:,}, {args.rounds} rounds of {args.steps} steps; "
          f"median per step")
    print(f"{'cell':8} {'ms/step':>9} {'s/epoch':>9} {'vs ' + cells[0]:>8}")
    rows = []
    for cell in cells:
        per_step = statistics.median(rounds[cell])
        rows.append({"cell": cell, "ms_per_step": 1000 * per_step, "s_per_epoch": per_step * args.epoch_steps,
                     "vs_first": per_step / reference})
        print(f"{cell:8} {1000 * per_step:9.1f} {per_step * args.epoch_steps:9.1f} {per_step / reference:8.2f}")
    if args.json:
        from minirec.training.loop import machine_info

        threads = {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS")}
        record = {"command": " ".join(["python", "benchmarks/classify_speed.py", *sys.argv[1:]]),
                  "settings": {k: v for k, v in vars(args).items() if k != "json"}, "threads": threads,
                  "rows": rows, "machine": machine_info("cpu")}
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
