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


# ---- minLSTM's oracle ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", ["sequential", "parallel", "log"])
def test_minlstm_oracle_is_finite_where_both_gates_underflow(dtype, mode):
    """|x| >= 1e4 drives both gates' pre-activations far below 0: f = i = 0 in floating point,
    and the paper's f / (f + i) is 0/0. The oracle takes the kernels' σ(d) form and agrees."""
    from minirec.cells.minlstm import MinLSTM

    mr.backend.set_default_dtype(dtype)
    cell = MinLSTM(3, 4, mode=mode)
    for p in cell.parameters():
        p.data[...] = 1.0  # every pre-activation is the sum of the inputs (+1): all three blocks alike
    x = np.full((5, 2, 3), -1e4, dtype)
    x[2:, 1] = 1e4  # the second sequence saturates the other way from step 3
    h0 = np.full((2, 4), 0.5, dtype)
    y_fast, _ = cell(mr.tensor(x), mr.tensor(h0))
    y_ref, _ = cell.run_reference(mr.tensor(x), mr.tensor(h0))
    assert np.isfinite(y_ref.data).all()
    np.testing.assert_allclose(y_ref.data, y_fast.data, rtol=1e-6, atol=0)


# ---- the data cache ------------------------------------------------------------------------------
def test_a_cached_file_failing_its_checksum_is_named_as_such(tmp_path, monkeypatch, capsys):
    import hashlib

    from minirec.data import DataError, download

    text = "the original\n"
    monkeypatch.setenv("MINIREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MINIREC_DATA", raising=False)
    monkeypatch.setitem(download.SHA256, "ptb/train.txt", hashlib.sha256(text.encode()).hexdigest())
    cached = tmp_path / "cache" / "ptb" / "train.txt"
    cached.parent.mkdir(parents=True)
    cached.write_text("damaged\n")
    actual = hashlib.sha256(b"damaged\n").hexdigest()
    monkeypatch.setitem(download.URLS, "ptb/train.txt", (tmp_path / "nowhere.txt").as_uri())  # offline
    with pytest.raises(DataError) as error:
        download.locate("ptb/train.txt")
    message = str(error.value)
    assert message.startswith(f"the cached copy {cached} failed its checksum")
    assert download.SHA256["ptb/train.txt"] in message and actual in message
    assert f"delete {cached}" in message and cached.read_text() == "damaged\n"
    assert "downloading a fresh copy" in capsys.readouterr().err
    (tmp_path / "nowhere.txt").write_text(text)  # back online: the fresh copy replaces it
    assert download.locate("ptb/train.txt").read_text() == text


# ---- argument checks of nn ----------------------------------------------------------------------
@pytest.mark.parametrize("change, error, message", [
    ({"hidden_size": 3.5}, TypeError, "hidden_size must be an integer, got float 3.5"),
    ({"hidden_size": "8"}, TypeError, "hidden_size must be an integer, got str '8'"),
    ({"input_size": None}, TypeError, "input_size must be an integer, got NoneType"),
    ({"num_layers": 0}, ValueError, "num_layers must be >= 1"),
    ({"hidden_size": True}, TypeError, "hidden_size must be an integer, got bool"),
    ({"dropout": float("nan")}, ValueError, r"dropout must be in \[0, 1\), got nan"),
    ({"dropout": "0.1"}, TypeError, "dropout must be a number"),
    ({"bidirectional": "yes"}, TypeError, "bidirectional must be True or False"),
])
def test_rnn_arguments_are_checked_by_name(change, error, message):
    arguments = dict(cell="sru", input_size=4, hidden_size=8, num_layers=2)
    arguments.update(change)
    with pytest.raises(error, match=message):
        mr.nn.RNN(**arguments)
    mr.nn.RNN(**{**arguments, **{k: v for k, v in dict(cell="sru", input_size=np.int64(4), hidden_size=8).items()},
                 "num_layers": 2, "dropout": 0.0, "bidirectional": np.bool_(True)})  # NumPy scalars are fine


@pytest.mark.parametrize("make", [
    lambda params: mr.nn.SGD(params, lr=float("nan")),
    lambda params: mr.nn.SGD(params, lr=0.1, weight_decay=float("nan")),
    lambda params: mr.nn.SGD(params, lr=0.1, momentum=float("inf")),
    lambda params: mr.nn.Adam(params, lr=float("inf")),
    lambda params: mr.nn.Adam(params, eps=float("nan")),
    lambda params: mr.nn.Adam(params, betas=(float("nan"), 0.999)),
    lambda params: mr.nn.clip_grad_norm(params, float("nan")),
    lambda params: mr.nn.clip_grad_norm(params, -1.0),
])
def test_optimisers_and_clipping_refuse_non_finite_or_negative_numbers(make):
    layer = mr.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="must be a finite number >= 0, got (nan|inf|-1.0)"):
        make(layer.parameters())


def test_clip_grad_norm_still_clips_and_inf_only_measures():
    layer = mr.nn.Linear(2, 2)
    for p in layer.parameters():
        p.grad = np.full(p.shape, 3.0, np.float32)
    assert mr.nn.clip_grad_norm(layer.parameters(), float("inf")) == pytest.approx(3 * np.sqrt(6))
    mr.nn.clip_grad_norm(layer.parameters(), 1.0)
    assert np.sqrt(sum(float((p.grad ** 2).sum()) for p in layer.parameters())) == pytest.approx(1.0, rel=1e-5)


def test_optimiser_state_with_a_nan_learning_rate_is_refused():
    layer = mr.nn.Linear(2, 2)
    state = mr.nn.SGD(layer.parameters(), lr=0.1).state_dict()
    state["lr"] = float("nan")
    with pytest.raises(ValueError, match="lr must be a finite number >= 0, got nan"):
        mr.nn.SGD(layer.parameters(), lr=0.1).load_state_dict(state)


def test_load_state_dict_refuses_nan_weights_and_changes_nothing():
    from minirec.nn.module import StateDictError

    layer = mr.nn.Linear(3, 2)
    before = layer.state_dict()
    state = {name: value.copy() for name, value in before.items()}
    name = max(state, key=lambda k: state[k].size)  # the weight (3, 2)
    state[name].flat[[0, 2]] = [np.nan, np.inf]
    with pytest.raises(StateDictError, match=f"NaN or inf entries: {name}: 2 of {state[name].size}"):
        layer.load_state_dict(state)
    assert all((layer.state_dict()[k] == before[k]).all() for k in before)


# ---- kernel dispatch without CUDA ----------------------------------------------------------------
def test_forcing_cuda_kernels_without_cuda_is_a_clear_error(monkeypatch):
    from minirec import kernels

    monkeypatch.setenv("MINIREC_KERNELS", "cuda")
    monkeypatch.setattr(kernels, "_CUDA_USABLE", [False])  # as numba answers on a machine without a GPU
    monkeypatch.setattr(kernels, "load_kind", lambda kind, warn=True: True)  # numba-cuda imports fine
    with pytest.raises(RuntimeError, match=r"CUDA is not usable here \(numba.cuda.is_available\(\) is False"):
        kernels.get_kernel("sru_forward", np)
    with pytest.raises(RuntimeError, match="CUDA is not usable here"):
        mr.nn.RNN(cell="sru", input_size=4, hidden_size=8)(mr.tensor(np.zeros((3, 1, 4), np.float32)))
