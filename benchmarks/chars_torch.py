"""The PyTorch anchor of the ``chars`` task: a 2-layer LSTM on Tiny Shakespeare, nanoGPT-style.

    python benchmarks/chars_torch.py --data-dir ../shared/data [--iters 2000] [--threads 1]

Embedding 128 → nn.LSTM(256, 2 layers) → linear to the 65 characters (0.95 M parameters);
nanoGPT's batches (12 random windows of 64 characters, zero state per window), Adam 2e-3,
gradient-norm clip 1.0. Every 250 iterations the validation loss is estimated as nanoGPT does
(20 random batches); at the end it is measured over the whole validation split (windows of 64
characters, the state carried). Prints one table row per evaluation: iteration, losses in
nats/char, wall time, characters/s of the training steps. PyTorch is optional for minirec: this
script exits with a message when it is missing. Run it beside ``minirec train chars`` under the
same load to compare wall times (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="directory holding shakespeare/input.txt")
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--json", help="also write the table as JSON here (results/chars-torch-lstm.json)")
    args = parser.parse_args(argv)
    try:
        import torch
        from torch import nn
    except ImportError:
        print("benchmarks/chars_torch.py needs PyTorch (pip install torch); nothing measured", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    text = (Path(args.data_dir) / "shakespeare" / "input.txt").read_text(encoding="utf-8")
    chars = sorted(set(text))
    lookup = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([lookup[c] for c in text], dtype=torch.long)
    cut = int(0.9 * len(data))
    splits = {"train": data[:cut], "valid": data[cut:]}
    batch, block = 12, 64

    class LSTMModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(len(chars), 128)
            self.lstm = nn.LSTM(128, 256, num_layers=2)
            self.decoder = nn.Linear(256, len(chars))

        def forward(self, x, state=None):  # x (T, B)
            h, state = self.lstm(self.embedding(x), state)
            return self.decoder(h), state

    model = LSTMModel()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss_fn = nn.CrossEntropyLoss()

    def get_batch(split):
        source = splits[split]
        starts = torch.randint(len(source) - block, (batch,))
        x = torch.stack([source[s : s + block] for s in starts]).T
        y = torch.stack([source[s + 1 : s + 1 + block] for s in starts]).T
        return x, y

    @torch.no_grad()
    def estimate(split, iters=20):
        model.eval()
        losses = [loss_fn(model(x)[0].reshape(-1, len(chars)), y.reshape(-1)).item()
                  for x, y in (get_batch(split) for _ in range(iters))]
        model.train()
        return sum(losses) / len(losses)

    @torch.no_grad()
    def whole_valid(streams=64):
        model.eval()
        source = splits["valid"]
        n = len(source) // streams
        grid = source[: n * streams].reshape(streams, n).T  # (n, streams), contiguous streams
        total, count, state = 0.0, 0, None
        for start in range(0, n - 1, block):
            x, y = grid[start : min(start + block, n - 1)], grid[start + 1 : min(start + block, n - 1) + 1]
            logits, state = model(x, state)
            total += loss_fn(logits.reshape(-1, len(chars)), y.reshape(-1)).item() * y.numel()
            count += y.numel()
        model.train()
        return total / count

    parameters = sum(p.numel() for p in model.parameters())
    print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} thread(s); 2-layer LSTM 256, "
          f"{parameters:,} parameters; batches {batch} x {block}")
    print(f"{'iter':>6} {'train':>7} {'valid':>7} {'wall s':>8} {'train s':>8} {'chars/s':>8}")
    record = {"kind": "pytorch anchor (benchmarks/chars_torch.py)", "torch": torch.__version__,
              "threads": torch.get_num_threads(), "parameters": parameters, "batch": [batch, block],
              "iters": [], "train_loss": [], "valid_loss": []}
    wall_start = time.perf_counter()
    train_time = 0.0
    for it in range(args.iters + 1):
        if it % args.eval_every == 0 or it == args.iters:
            train_loss, valid_loss = estimate("train"), estimate("valid")
            wall = time.perf_counter() - wall_start
            speed = it * batch * block / max(train_time, 1e-9)
            print(f"{it:6d} {train_loss:7.3f} {valid_loss:7.3f} {wall:8.1f} {train_time:8.1f} {speed:8.0f}", flush=True)
            for key, value in (("iters", it), ("train_loss", train_loss), ("valid_loss", valid_loss)):
                record[key].append(value)
        if it == args.iters:
            break
        start = time.perf_counter()
        x, y = get_batch("train")
        logits, _ = model(x)
        loss = loss_fn(logits.reshape(-1, len(chars)), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        train_time += time.perf_counter() - start
    total = time.perf_counter() - wall_start
    valid = whole_valid()
    print(f"whole validation split: {valid:.3f} nats/char ({valid / math.log(2):.3f} bits); "
          f"wall {total:.1f} s (before this measurement), training steps {train_time:.1f} s")
    if args.json:
        record.update(whole_valid_loss=valid, wall_s=total, train_s=train_time,
                      chars_per_s=args.iters * batch * block / train_time)
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
