"""Training speed of the PTB language model, in tokens per second: minirec vs the same model in PyTorch.

One training step of the ``small`` preset (Zaremba et al. 2014): embedding 200, two recurrent
layers of 200, decoder to 10,000 words, a window of 35 steps × 20 streams (700 tokens); the loss
summed over the window, backward, global-norm clip at 5, SGD. Exactly what `minirec train ptb
--preset small` runs per batch (minirec.training.loop), minus data loading and the progress bar.
The token ids are random: the speed does not depend on which words they are.

For each cell, minirec and (for LSTM and GRU, when torch is importable) torch's ``nn.LSTM`` /
``nn.GRU`` model take turns: a warm-up, then ``--repeats`` rounds of ``--batches`` steps each,
interleaved so that both see the same machine load; the table gives the median round.

    python benchmarks/ptb.py                          # lstm gru sru lrn mingru sgu, 2 threads
    OPENBLAS_NUM_THREADS=1 python benchmarks/ptb.py --threads 1     # one core for everything
    python benchmarks/ptb.py --preset medium --device gpu   # on a GPU machine (CuPy, torch CUDA)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

CELLS = ("lstm", "gru", "sru", "lrn", "mingru", "sgu")
SIZES = {"small": 200, "medium": 650}
VOCAB, BPTT, BATCH, CLIP = 10_000, 35, 20, 5.0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", default=",".join(CELLS))
    p.add_argument("--preset", choices=sorted(SIZES), default="small")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--batches", type=int, default=10, help="training steps per timed round (default 10)")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds per model (default 5)")
    p.add_argument("--threads", type=int, default=2, help="threads for numba, BLAS and torch on the CPU (default 2)")
    p.add_argument("--no-torch", action="store_true")
    return p.parse_args(argv)


def set_threads(n: int) -> None:
    """Threads of the numba kernels. (NumPy's BLAS fixed its pool when NumPy was imported: it takes
    OPENBLAS_NUM_THREADS from the environment, as the command lines in the docstring show.)"""
    from minirec.kernels.cpu import _common

    _common.set_num_threads(n)


def random_windows(xp, rng, n):
    ids = rng.integers(0, VOCAB, size=(n, BPTT + 1, BATCH))
    return [(xp.asarray(w[:-1]), xp.asarray(w[1:])) for w in ids]


def minirec_stepper(cell, hidden, device, windows):
    import minirec as mr
    from minirec.models import LanguageModel
    from minirec.nn import SGD, clip_grad_norm

    mr.manual_seed(0)
    model = LanguageModel(VOCAB, cell=cell, embedding_size=hidden, hidden_size=hidden, num_layers=2,
                          dropout=0.0 if hidden == 200 else 0.5, init_range=0.1)
    if device == "gpu":
        model.to("gpu")
    params = [p for _, p in model.named_parameters()]
    optimizer = SGD(params, lr=1.0)
    state = [None]

    def step(i):
        tokens, targets = windows[i % len(windows)]
        loss, new_state = model.loss(tokens, targets, state[0])
        optimizer.zero_grad()
        (loss * float(BPTT)).backward()
        clip_grad_norm(params, CLIP)
        optimizer.step()
        state[0] = model.detach_state(new_state)
        return float(loss.item())

    return step, sum(int(np.prod(p.shape)) for p in params)


def torch_stepper(cell, hidden, device, windows):
    import torch

    torch.manual_seed(0)
    dev = torch.device("cuda" if device == "gpu" else "cpu")

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(VOCAB, hidden)
            rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
            self.rnn = rnn(hidden, hidden, num_layers=2, dropout=0.0 if hidden == 200 else 0.5)
            self.decoder = torch.nn.Linear(hidden, VOCAB)
            for p in self.parameters():
                torch.nn.init.uniform_(p, -0.1, 0.1)

        def forward(self, tokens, state):
            h, state = self.rnn(self.embedding(tokens), state)
            return self.decoder(h), state

    model = Model().to(dev)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    windows = [(torch.as_tensor(np.asarray(a.get() if hasattr(a, "get") else a), device=dev),
                torch.as_tensor(np.asarray(b.get() if hasattr(b, "get") else b), device=dev)) for a, b in windows]
    state = [None]

    def detach(s):
        return None if s is None else tuple(t.detach() for t in s) if isinstance(s, tuple) else s.detach()

    def step(i):
        tokens, targets = windows[i % len(windows)]
        logits, new_state = model(tokens, state[0])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
        optimizer.zero_grad()
        (loss * BPTT).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()
        state[0] = detach(new_state)
        return float(loss.item())

    return step, sum(p.numel() for p in model.parameters())


def timed_rounds(steppers, batches, repeats, sync):
    """Per stepper, the tokens/s of each of ``repeats`` rounds, the steppers taking turns."""
    counters = {name: 0 for name in steppers}
    rates = {name: [] for name in steppers}
    for name, step in steppers.items():  # warm-up: numba compiles, BLAS and torch start their pools
        for _ in range(2):
            step(counters[name])
            counters[name] += 1
    for _ in range(repeats):
        for name, step in steppers.items():
            sync()
            start = time.perf_counter()
            for _ in range(batches):
                loss = step(counters[name])
                counters[name] += 1
            sync()
            rates[name].append(batches * BPTT * BATCH / (time.perf_counter() - start))
            if not np.isfinite(loss):
                raise RuntimeError(f"{name}: non-finite loss {loss}")
    return rates


def main(argv=None):
    args = parse_args(argv)
    if args.device == "cpu":
        set_threads(args.threads)
    from minirec import backend

    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    hidden = SIZES[args.preset]
    if args.device == "gpu":
        if not backend.cuda_available():
            sys.exit("ptb.py: --device gpu needs CuPy and a CUDA device (minirec.cuda_available() is False)")
        xp = backend._cupy()
        sync = xp.cuda.Device().synchronize
    else:
        xp, sync = np, lambda: None
    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print("torch is not importable: minirec only (pip install torch for the PyTorch column)")
        else:
            if args.device == "cpu":
                torch.set_num_threads(args.threads)
    windows = random_windows(xp, np.random.default_rng(0), 8)

    rows = []
    for cell in cells:
        steppers, params = {}, {}
        steppers["minirec"], params["minirec"] = minirec_stepper(cell, hidden, args.device, windows)
        if torch is not None and cell in ("lstm", "gru"):
            torch_sync = torch.cuda.synchronize if args.device == "gpu" else (lambda: None)
            steppers["torch"], params["torch"] = torch_stepper(cell, hidden, args.device, windows)

            def sync_both(torch_sync=torch_sync):
                sync()
                torch_sync()
        else:
            sync_both = sync
        rates = timed_rounds(steppers, args.batches, args.repeats, sync_both)
        for name in steppers:
            rows.append((cell, name, params[name], statistics.median(rates[name]), min(rates[name]),
                         max(rates[name])))
        print(f"{cell}: done", flush=True)

    torch_rate = {cell: rate for cell, name, _, rate, _, _ in rows if name == "torch"}
    anchor = torch_rate.get("lstm")
    headers = ("cell", "implementation", "params", "tokens/s (median)", "min", "max", "÷ torch LSTM")
    table = [headers]
    for cell, name, n, rate, lo, hi in rows:
        table.append((cell, name, f"{n:,}", f"{rate:,.0f}", f"{lo:,.0f}", f"{hi:,.0f}",
                      f"{rate / anchor:.2f}" if anchor else "-"))
    widths = [max(len(str(r[i])) for r in table) for i in range(len(headers))]
    print()
    print(f"PTB {args.preset} training step (bptt {BPTT} × batch {BATCH}, SGD, clip {CLIP}), {args.device}")
    for i, r in enumerate(table):
        print("  ".join(str(v).rjust(w) if j >= 2 else str(v).ljust(w) for j, (v, w) in enumerate(zip(r, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    versions = f"Python {platform.python_version()}, NumPy {np.__version__}"
    try:
        import numba

        versions += f", numba {numba.__version__}"
    except ImportError:
        pass
    if torch is not None:
        versions += f", torch {torch.__version__}"
    print(f"command: python benchmarks/ptb.py {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    blas = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    print(f"machine: {platform.machine()}, {os.cpu_count()} logical CPUs, {args.threads} threads "
          f"(OPENBLAS_NUM_THREADS={blas}); {versions}; "
          f"MINIREC_KERNELS={os.environ.get('MINIREC_KERNELS', 'auto')}")
    print(f"rounds: {args.repeats} × {args.batches} steps after 2 warm-up steps, interleaved")


if __name__ == "__main__":
    main()
