"""Train in minirec, continue in PyTorch with DistributedDataParallel.

minirec is where a model is read, checked and trained on one machine; when it outgrows that
machine, the same model moves to PyTorch and trains on many. This script does the move:

1. a minirec word-level language model: the best weights of a `minirec train ptb` run
   (``--run DIR``), or, with ``--quick``, a tiny model trained here for a few steps on a
   synthetic corpus (no data needed: what the test suite runs);
2. ``minirec.interop.to_torch``: the same model as a ``torch.nn.Module``; its validation
   perplexity is computed by both libraries and must agree;
3. ``torch.multiprocessing.spawn`` starts ``--world-size`` processes (gloo on CPUs here; pass
   ``--backend nccl`` on GPUs, one process per GPU); each wraps the model in
   ``DistributedDataParallel`` and trains on its share of the batch's streams, DDP averaging the
   gradients; rank 0 reports the validation perplexity after training and saves the PyTorch
   weights (``--save``).

    python examples/ddp_continue_training.py --quick
    python examples/ddp_continue_training.py --run runs/ptb-lstm --data-dir ../shared/data --steps 200

Only LSTM and GRU (``reset_after=True``) models export to torch.nn: see `minirec.interop`.
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import sys
import tempfile

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import minirec as mr
from minirec.data import batchify, bptt_batches
from minirec.interop import to_torch
from minirec.models import LanguageModel


def synthetic_corpus(n_words=6000, vocab=40, seed=0):
    """A corpus with structure to learn: each word is mostly followed by one fixed successor."""
    rng = np.random.default_rng(seed)
    successor = rng.permutation(vocab)
    ids = [0]
    for _ in range(n_words - 1):
        ids.append(successor[ids[-1]] if rng.random() < 0.8 else rng.integers(vocab))
    ids = np.array(ids, dtype=np.int64)
    cut = int(0.9 * n_words)
    return vocab, ids[:cut], ids[cut:]


def minirec_model(args):
    """(model, vocab size, train ids, valid ids): trained in minirec."""
    if args.quick:
        vocab, train, valid = synthetic_corpus()
        mr.backend.manual_seed(0)
        model = LanguageModel(vocab, "lstm", embedding_size=32, hidden_size=32, num_layers=2)
        optimizer = mr.nn.Adam(model.parameters(), lr=1e-2)
        carry = None
        for step, (x, y) in enumerate(bptt_batches(batchify(train, 8), 20)):
            if step == args.minirec_steps:
                break
            loss, carry = model.loss(x, y, carry)
            carry = model.detach_state(carry)
            optimizer.zero_grad()
            loss.backward()
            mr.nn.clip_grad_norm(model.parameters(), 5.0)
            optimizer.step()
        return model, vocab, train, valid  # the synthetic corpus has no test split
    from minirec.data import load_ptb
    from minirec.training.checkpoint import load_checkpoint

    best = load_checkpoint(os.path.join(args.run, "best.npz"))
    config = best.meta["config"]
    corpus = load_ptb(args.data_dir)
    model = LanguageModel(len(corpus.vocab), cell=config["cell"], embedding_size=config["embedding"],
                          hidden_size=config["hidden"], num_layers=config["layers"], dropout=config["dropout"],
                          tie_weights=config["tie_weights"], **config["cell_options"])
    model.load_state_dict(best.model)
    return model, len(corpus.vocab), corpus.train, getattr(corpus, args.split)


def minirec_perplexity(model, ids, batch_size=10, bptt=35):
    model.eval()
    total, count, carry = 0.0, 0, None
    with mr.no_grad():
        for x, y in bptt_batches(batchify(ids, batch_size), bptt):
            loss, carry = model.loss(x, y, carry)
            total, count = total + float(loss.data) * x.size, count + x.size
    return math.exp(total / count)


def _detach(state):
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def torch_loss_sum(model, ids, batch_size, bptt, device):
    """Σ cross-entropy and token count over ``ids`` (streams of ``batch_size``), no gradient."""
    model.eval()
    total, count, state = 0.0, 0, None
    with torch.no_grad():
        for x, y in bptt_batches(batchify(ids, batch_size), bptt):
            logits, state = model(torch.from_numpy(x).to(device), state)
            total += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                       torch.from_numpy(y).reshape(-1).to(device),
                                                       reduction="sum").item()
            count += x.size
    return total, count


def worker(rank, args, weights_path, vocab, train, valid, port, split="valid"):
    """One DDP process: its share of the training streams, gradients averaged by DDP."""
    device = torch.device(f"cuda:{rank}" if args.backend == "nccl" else "cpu")
    dist.init_process_group(args.backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=args.world_size)
    torch.manual_seed(rank)
    model = torch.load(weights_path, weights_only=False).to(device)
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[rank] if args.backend == "nccl" else None)
    optimizer = torch.optim.Adam(ddp.parameters(), lr=args.lr)
    streams = batchify(train, args.batch_size)  # (n_steps, B): rank r trains streams r, r + world, ...
    mine = np.ascontiguousarray(streams[:, rank :: args.world_size])
    state = None
    ddp.train()
    for step, (x, y) in enumerate(bptt_batches(mine, args.bptt)):
        if step == args.steps:
            break
        logits, state = ddp(torch.from_numpy(x).to(device), state)
        state = _detach(state)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), torch.from_numpy(y).reshape(-1).to(device))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ddp.parameters(), 5.0)
        optimizer.step()
    # every replica holds the same weights: check it, then evaluate on rank 0
    checksum = torch.tensor([sum(p.double().sum().item() for p in model.parameters())], dtype=torch.float64,
                            device=device)
    sums = [torch.zeros_like(checksum) for _ in range(args.world_size)]
    dist.all_gather(sums, checksum)
    if rank == 0:
        assert all(torch.equal(s, sums[0]) for s in sums), "DDP replicas diverged"
        total, count = torch_loss_sum(model, valid, 10, args.bptt, device)
        print(f"after {args.steps} DDP steps on {args.world_size} processes: {split} perplexity "
              f"{math.exp(total / count):.3f} (replicas identical)")
        if args.save:
            torch.save(model.state_dict(), args.save)
            print(f"saved the PyTorch weights to {args.save}")
    dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="a `minirec train ptb` run directory (its best.npz)")
    source.add_argument("--quick", action="store_true", help="a tiny model on a synthetic corpus (no data needed)")
    parser.add_argument("--data-dir", help="PTB directory (with --run)")
    parser.add_argument("--split", choices=["valid", "test"], default="valid", help="the split to evaluate (--run)")
    parser.add_argument("--minirec-steps", type=int, default=60, help="minirec training steps (--quick)")
    parser.add_argument("--steps", type=int, default=30, help="DDP training steps per process")
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--backend", choices=["gloo", "nccl"], default="gloo")
    parser.add_argument("--batch-size", type=int, default=20, help="streams in all (split over the processes)")
    parser.add_argument("--bptt", type=int, default=35)
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam's learning rate")
    parser.add_argument("--save", help="where rank 0 saves the PyTorch state dict")
    args = parser.parse_args(argv)
    if args.batch_size % args.world_size:
        parser.error(f"--batch-size {args.batch_size} must be a multiple of --world-size {args.world_size}")
    torch.set_num_threads(1)  # one core per process

    model, vocab, train, valid = minirec_model(args)
    ppl_minirec = minirec_perplexity(model, valid, bptt=args.bptt)
    exported = to_torch(model)
    total, count = torch_loss_sum(exported, valid, 10, args.bptt, "cpu")
    ppl_torch = math.exp(total / count)
    split = "valid" if args.quick else args.split
    print(f"{split} perplexity before DDP: minirec {ppl_minirec:.6f}, exported to torch {ppl_torch:.6f}")
    if not math.isclose(ppl_minirec, ppl_torch, rel_tol=1e-4):
        sys.exit("the exported model does not compute what the minirec model computes")
    with tempfile.TemporaryDirectory() as tmp:
        weights_path = os.path.join(tmp, "model.pt")
        torch.save(exported, weights_path)
        mp.spawn(worker, args=(args, weights_path, vocab, train, valid, free_port(), split), nprocs=args.world_size)


if __name__ == "__main__":
    main()
