"""Reliability (issue #14): the audit's faults that are not command-line runs. Kernel threading,
argument checks of nn/optim, the minLSTM oracle at extreme inputs, kernel dispatch without
CUDA, the data cache's checksum message. The training runs' faults (locks, signals, a full
disk, resume) are in test_training_faults.py, the command line's in test_cli_faults.py."""

from __future__ import annotations

import numpy as np
import pytest

import minirec as mr
from minirec.kernels.cpu import _common


# ---- run_tiles ----------------------------------------------------------------------------------
@pytest.mark.parametrize("threads", [1, 2, 3, 4])
def test_run_tiles_covers_every_column_once_for_every_tile_count(monkeypatch, threads):
    """Every (B, H) from one tile up: a single row narrower than 64 channels is one tile, which
    made a ThreadPoolExecutor(0) (`max_workers must be greater than 0`) on a fresh pool."""
    monkeypatch.setitem(_common.THREADS, "count", threads)
    seen_counts = set()
    for B in range(1, 7):
        for H in (1, 31, 32, 63, 64, 100):
            monkeypatch.setattr(_common, "_POOL", [None, 0, 0])  # as in a fresh process
            covered = np.zeros((B, H), dtype=int)

            def tile(b0, b1, j0, j1, grid):
                grid[b0:b1, j0:j1] += 1

            # a cost that asks for as many tiles as the threads allow
            _common.run_tiles(tile, 10_000, B, H, covered, ns_per_element=1e6)
            assert (covered == 1).all(), (B, H)
            seen_counts.add(len(_common.tiles(B, H, _common.TILES_PER_THREAD * threads)))
    assert 1 in seen_counts and max(seen_counts) >= 4


@pytest.mark.parametrize("cell", ["sru", "qrnn", "fofe", "lrn", "mingru", "minlstm"])
def test_a_long_single_sequence_runs_on_several_threads(monkeypatch, cell):
    monkeypatch.setitem(_common.THREADS, "count", 2)
    monkeypatch.setattr(_common, "_POOL", [None, 0, 0])
    size = 32 if cell == "fofe" else 4  # (FOFE has no weights: its input is its width)
    rnn = mr.nn.RNN(cell=cell, input_size=size, hidden_size=32)
    y, _ = rnn(mr.tensor(np.ones((3000, 1, size), np.float32)))
    assert y.shape[:2] == (3000, 1) and np.isfinite(y.data).all()
