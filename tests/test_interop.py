"""minirec ↔ PyTorch: converted models compute the same function (float64, 1e-10), gradients
included; round trips are exact; what the peer cannot express is a ConversionError naming it.
Skipped without torch (pip install -e '.[torch]'); the minGRU cases also need minGRU-pytorch.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="interop tests need torch: pip install -e '.[torch]'")

import minirec as mr  # noqa: E402
from minirec import backend, nn  # noqa: E402
from minirec.autograd.function import Tensor  # noqa: E402
from minirec.interop import ConversionError, from_torch, to_torch  # noqa: E402
from minirec.interop.torch_rnn import states_from_torch, states_to_torch  # noqa: E402

TOL = 1e-10
SHAPES = [(1, 1, 1, 1, 1), (5, 3, 4, 6, 2), (7, 1, 3, 2, 3), (1, 4, 5, 5, 1)]  # T, B, D, H, layers


@pytest.fixture(autouse=True)
def float64():
    previous = backend.get_default_dtype()
    backend.set_default_dtype(np.float64)
    backend.manual_seed(7)
    torch.manual_seed(7)
    yield
    backend.set_default_dtype(previous)


def _torch_rnn(kind, D, H, layers, bidirectional):
    cls = torch.nn.LSTM if kind == "lstm" else torch.nn.GRU
    module = cls(D, H, num_layers=layers, bidirectional=bidirectional).double()
    with torch.no_grad():  # nonzero, different b_ih and b_hh so that merging them is exercised
        for name, p in module.named_parameters():
            if "bias" in name:
                p.uniform_(-0.5, 0.5)
    return module


def _run_both(module, rnn, x, h0_torch=None, lengths=None):
    """Outputs, final states and input gradients of both, for loss = Σ y ⊙ w."""
    T, B, _ = x.shape
    w = np.random.default_rng(1).normal(size=(T, B, rnn.output_size))
    xt = torch.tensor(x, requires_grad=True)
    h0t = None
    if h0_torch is not None:
        h0t = tuple(h.clone().requires_grad_(True) for h in h0_torch) if isinstance(h0_torch, tuple) \
            else h0_torch.clone().requires_grad_(True)
    if lengths is None:
        yt, st = module(xt, h0t)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(xt, lengths, enforce_sorted=False)
        yp, st = module(packed, h0t)
        yt, _ = torch.nn.utils.rnn.pad_packed_sequence(yp, total_length=T)
    (yt * torch.from_numpy(w)).sum().backward()
    xm = Tensor(x, requires_grad=True)
    h0m = None if h0_torch is None else states_from_torch(h0_torch, rnn)
    for s in h0m or []:
        for part in s if isinstance(s, tuple) else (s,):
            part.requires_grad = True
    mask = None if lengths is None else (np.arange(T)[:, None] < np.asarray(lengths)[None, :]).astype(np.float64)
    ym, sm = rnn(xm, h0m, mask)
    (ym * Tensor(w)).sum().backward()
    return (yt, st, xt, h0t), (ym, sm, xm, h0m)


def _assert_same(torch_side, minirec_side, rnn):
    (yt, st, xt, h0t), (ym, sm, xm, h0m) = torch_side, minirec_side
    np.testing.assert_allclose(ym.data, yt.detach().numpy(), rtol=0, atol=TOL)
    for a, b in zip(states_to_torch(sm, rnn) if isinstance(st, tuple) else (states_to_torch(sm, rnn),),
                    st if isinstance(st, tuple) else (st,)):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=0, atol=TOL)
    np.testing.assert_allclose(xm.grad, xt.grad.numpy(), rtol=0, atol=TOL)
    if h0t is not None:
        grads = states_to_torch([tuple(Tensor(p.grad) for p in s) if isinstance(s, tuple) else Tensor(s.grad)
                                 for s in h0m], rnn)
        for a, b in zip(grads if isinstance(grads, tuple) else (grads,), h0t if isinstance(h0t, tuple) else (h0t,)):
            np.testing.assert_allclose(a.numpy(), b.grad.numpy(), rtol=0, atol=TOL)


def _assert_parameter_grads(module, rnn):
    """minirec's parameter gradients equal PyTorch's, mapped: through the exporter applied to a copy
    of the module whose weights are the gradients (weights map linearly), biases via b_ih."""
    grads = {name: p.grad.numpy().copy() for name, p in module.named_parameters()}
    for k, layer in enumerate(rnn.layers):
        for suffix, cell in [("", layer.forward_cell)] + ([("_reverse", layer.backward_cell)]
                                                           if layer.bidirectional else []):
            H = cell.hidden_size
            if rnn.cell == "lstm":
                order = np.r_[0 : 2 * H, 3 * H : 4 * H, 2 * H : 3 * H]
                W = grads[f"weight_ih_l{k}{suffix}"].T[:, order]
                U = grads[f"weight_hh_l{k}{suffix}"].T[:, order]
                b = grads[f"bias_ih_l{k}{suffix}"][order]  # ∂L/∂(b_ih + b_hh) = ∂L/∂b_ih
            else:
                def block(g, H=H):
                    return np.concatenate([-g[H : 2 * H], g[:H], g[2 * H :]], axis=0)

                W, U = block(grads[f"weight_ih_l{k}{suffix}"]).T, block(grads[f"weight_hh_l{k}{suffix}"]).T
                b = block(grads[f"bias_ih_l{k}{suffix}"])
                np.testing.assert_allclose(cell.recurrent_bias.grad, grads[f"bias_hh_l{k}{suffix}"][2 * H :],
                                           rtol=0, atol=TOL)
            np.testing.assert_allclose(cell.input_weight.grad, W, rtol=0, atol=TOL)
            np.testing.assert_allclose(cell.recurrent_weight.grad, U, rtol=0, atol=TOL)
            np.testing.assert_allclose(cell.bias.grad, b, rtol=0, atol=TOL)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("T,B,D,H,layers", SHAPES)
def test_from_torch_matches_outputs_states_and_gradients(kind, bidirectional, T, B, D, H, layers):
    module = _torch_rnn(kind, D, H, layers, bidirectional)
    rnn = from_torch(module)
    assert rnn.cell == kind and (kind != "gru" or rnn.layers[0].forward_cell.reset_after)
    x = np.random.default_rng(T * 10 + B).normal(size=(T, B, D))
    n = layers * (2 if bidirectional else 1)
    h0 = torch.randn(n, B, H, dtype=torch.float64)
    h0 = (h0, torch.randn(n, B, H, dtype=torch.float64)) if kind == "lstm" else h0
    torch_side, minirec_side = _run_both(module, rnn, x, h0)
    _assert_same(torch_side, minirec_side, rnn)
    _assert_parameter_grads(module, rnn)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_padding_matches_packed_sequences(kind, bidirectional):
    T, B, D, H = 6, 4, 3, 5
    module = _torch_rnn(kind, D, H, 2, bidirectional)
    rnn = from_torch(module)
    x = np.random.default_rng(0).normal(size=(T, B, D))
    lengths = [6, 1, 4, 3]
    torch_side, minirec_side = _run_both(module, rnn, x, None, lengths)
    _assert_same(torch_side, minirec_side, rnn)
    _assert_parameter_grads(module, rnn)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("kind,options", [("lstm", {}), ("gru", {"reset_after": True})], ids=["lstm", "gru"])
def test_to_torch_then_back_is_exact(kind, options, bidirectional):
    rnn = nn.RNN(kind, 4, 3, num_layers=2, bidirectional=bidirectional, **options)
    module = to_torch(rnn)
    x = np.random.default_rng(2).normal(size=(5, 2, 4))
    y_torch, _ = module(torch.from_numpy(x))
    np.testing.assert_allclose(rnn(Tensor(x))[0].data, y_torch.detach().numpy(), rtol=0, atol=TOL)
    back = from_torch(module)
    for a, b in zip(rnn.parameters(), back.parameters()):
        assert a.data.dtype == b.data.dtype and np.array_equal(a.data, b.data)  # bit for bit


def test_float32_keeps_its_dtype():
    backend.set_default_dtype(np.float32)
    rnn = nn.RNN("lstm", 3, 4)
    module = to_torch(rnn)
    assert module.weight_ih_l0.dtype == torch.float32
    assert from_torch(module).parameters()[0].data.dtype == np.float32
    assert from_torch(module, dtype=np.float64).parameters()[0].data.dtype == np.float64


def test_torch_without_bias_maps_to_zero_biases():
    module = torch.nn.GRU(3, 4, bias=False).double()
    rnn = from_torch(module)
    x = np.random.default_rng(0).normal(size=(4, 2, 3))
    np.testing.assert_allclose(rnn(Tensor(x))[0].data, module(torch.from_numpy(x))[0].detach().numpy(),
                               rtol=0, atol=TOL)


def test_what_the_peer_cannot_express_is_named():
    with pytest.raises(ConversionError, match="reset_after=True"):
        to_torch(nn.RNN("gru", 3, 4))  # reset-before: a different function
    with pytest.raises(ConversionError, match="'lrn'"):
        to_torch(nn.RNN("lrn", 3, 3))  # no peer
    with pytest.raises(ConversionError, match="proj_size"):
        from_torch(torch.nn.LSTM(3, 4, proj_size=2))
    with pytest.raises(ConversionError, match="RNN_TANH|torch.nn.LSTM"):
        from_torch(torch.nn.RNN(3, 4))
    with pytest.raises(ConversionError, match="nn.RNN or LanguageModel"):
        to_torch(mr.nn.Linear(3, 4))


# ---- a whole language model ---------------------------------------------------------------------
@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("cell,options", [("lstm", {}), ("gru", {"reset_after": True})], ids=["lstm", "gru"])
def test_language_model_exports_with_the_same_loss(cell, options, tie):
    from minirec.models.language_model import LanguageModel

    V = 30
    model = LanguageModel(V, cell, 6, 6, num_layers=2, dropout=0.5, tie_weights=tie, **options)
    model.eval()
    exported = to_torch(model).eval()
    rng = np.random.default_rng(0)
    tokens, targets = rng.integers(0, V, (8, 3)), rng.integers(0, V, (8, 3))
    loss, state = model.loss(tokens, targets)
    logits, torch_state = exported(torch.from_numpy(tokens))
    torch_loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), torch.from_numpy(targets).reshape(-1))
    assert abs(float(loss.data) - torch_loss.item()) < TOL
    # the state carries over to the next window identically
    loss2, _ = model.loss(targets, tokens, state)
    logits2, _ = exported(torch.from_numpy(targets), torch_state)
    torch_loss2 = torch.nn.functional.cross_entropy(logits2.reshape(-1, V), torch.from_numpy(tokens).reshape(-1))
    assert abs(float(loss2.data) - torch_loss2.item()) < TOL
    if tie:
        assert exported.decoder.weight is exported.embedding.weight


# ---- lucidrains' minGRU / minLSTM -----------------------------------------------------------------
@pytest.mark.parametrize("name", ["minGRU", "minLSTM"])
@pytest.mark.parametrize("T,B,D,H", [(1, 1, 3, 3), (6, 2, 4, 4), (5, 3, 2, 4)])
def test_lucidrains_min_rnn_both_ways(name, T, B, D, H):
    pytest.importorskip("minGRU_pytorch", reason="needs lucidrains' package: pip install minGRU-pytorch")
    from minGRU_pytorch.minGRU import minGRU
    from minGRU_pytorch.minLSTM import minLSTM

    from minirec.interop.min_rnn import zero_state

    cls = {"minGRU": minGRU, "minLSTM": minLSTM}[name]
    module = cls(D, expansion_factor=H / D, proj_out=False).double()
    rnn = from_torch(module)
    x = np.random.default_rng(T).normal(size=(T, B, D))
    xt = torch.tensor(x.transpose(1, 0, 2), requires_grad=True)  # lucidrains is batch-first
    y_torch = module(xt)
    w = np.random.default_rng(1).normal(size=(B, T, H))
    (y_torch * torch.from_numpy(w)).sum().backward()
    xm = Tensor(x, requires_grad=True)
    y, _ = rnn(xm, h0=zero_state(rnn, B))
    (y * Tensor(w.transpose(1, 0, 2))).sum().backward()
    np.testing.assert_allclose(y.data, y_torch.detach().numpy().transpose(1, 0, 2), rtol=0, atol=TOL)
    np.testing.assert_allclose(xm.grad, xt.grad.numpy().transpose(1, 0, 2), rtol=0, atol=TOL)
    back = to_torch(rnn)
    for a, b in zip(module.parameters(), back.parameters()):
        assert torch.equal(a, b)  # round trip bit for bit


def test_lucidrains_mismatches_are_named():
    pytest.importorskip("minGRU_pytorch", reason="needs lucidrains' package: pip install minGRU-pytorch")
    from minGRU_pytorch.minGRU import minGRU

    with pytest.raises(ConversionError, match="no bias"):
        to_torch(nn.RNN("mingru", 3, 3, g_activation=True))  # its bias is random, nonzero
    with pytest.raises(ConversionError, match="g_activation=True"):
        to_torch(nn.RNN("mingru", 3, 3))
    with pytest.raises(ConversionError, match="one layer, one direction"):
        to_torch(nn.RNN("minlstm", 3, 3, num_layers=2, g_activation=True))
    with pytest.raises(ConversionError, match="proj_out"):
        from_torch(minGRU(4, expansion_factor=2.0))


# ---- the scale path: exported, then trained with DistributedDataParallel ------------------------------
def test_ddp_example_runs_two_processes_from_an_exported_model():
    import re
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = dict(__import__("os").environ, PYTHONPATH=str(root))
    proc = subprocess.run([sys.executable, str(root / "examples" / "ddp_continue_training.py"), "--quick",
                           "--minirec-steps", "20", "--steps", "5"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    before = re.search(r"minirec ([\d.]+), exported to torch ([\d.]+)", proc.stdout)
    assert before and abs(float(before[1]) - float(before[2])) < 1e-4 * float(before[1])
    after = re.search(r"after 5 DDP steps on 2 processes: valid perplexity ([\d.]+) \(replicas identical\)",
                      proc.stdout)
    assert after and float(after[1]) < float(before[1])  # training went on, and helped


# ---- the official SRU ------------------------------------------------------------------------------
SRU_CASES = [  # D, H, layers, bidirectional, layer_norm
    (4, 4, 1, False, False), (3, 4, 2, False, False), (8, 4, 2, True, False), (5, 4, 1, True, True),
    (6, 4, 3, False, True), (4, 2, 3, True, False),
]


@pytest.mark.filterwarnings("ignore::UserWarning")  # the official package warns about CUDA and CPU training
@pytest.mark.parametrize("D,H,layers,bidirectional,layer_norm", SRU_CASES)
def test_official_sru_both_ways(D, H, layers, bidirectional, layer_norm):
    sru = pytest.importorskip("sru", reason="needs the official SRU: pip install sru")
    from minirec.interop.sru import sru_states_from_torch, sru_states_to_torch

    module = sru.SRU(D, H, num_layers=layers, bidirectional=bidirectional, layer_norm=layer_norm).double()
    with torch.no_grad():  # away from the init, so that every parameter matters
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))
    module.eval()
    rnn = from_torch(module)
    T, B = 6, 3
    x = np.random.default_rng(0).normal(size=(T, B, D))
    mask = np.ones((T, B))
    mask[4:, 1] = 0  # a right-padded sequence
    c0 = torch.randn(layers, B, H * (2 if bidirectional else 1), dtype=torch.float64, requires_grad=True)
    xt = torch.tensor(x, requires_grad=True)
    # the official CPU op is float32-only without grad; with grad it runs its float64 Python loop
    yt, ct = module(xt, c0, mask_pad=torch.from_numpy(mask == 0))
    w = np.random.default_rng(1).normal(size=yt.shape)
    (yt * torch.from_numpy(w)).sum().backward()
    xm = Tensor(x, requires_grad=True)
    c0m = sru_states_from_torch(c0.detach(), rnn)
    for s in c0m:
        s.requires_grad = True
    ym, cm = rnn(xm, c0m, mask)
    (ym * Tensor(w)).sum().backward()
    np.testing.assert_allclose(ym.data, yt.detach().numpy(), rtol=0, atol=TOL)
    np.testing.assert_allclose(sru_states_to_torch(cm, rnn).numpy(), ct.detach().numpy(), rtol=0, atol=TOL)
    np.testing.assert_allclose(xm.grad, xt.grad.numpy(), rtol=0, atol=TOL)
    np.testing.assert_allclose(sru_states_to_torch([Tensor(s.grad) for s in c0m], rnn).numpy(), c0.grad.numpy(),
                               rtol=0, atol=TOL)
    # and back: the exported module computes the same again
    again = to_torch(rnn)
    y2, _ = again(torch.from_numpy(x), c0.detach(), mask_pad=torch.from_numpy(mask == 0))
    np.testing.assert_allclose(y2.detach().numpy(), ym.data, rtol=0, atol=TOL)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_official_sru_mismatches_are_named():
    sru = pytest.importorskip("sru", reason="needs the official SRU: pip install sru")
    with pytest.raises(ConversionError, match="not a multiple of I"):
        from_torch(sru.SRU(4, 4, bidirectional=True))  # D = H: its trained skip projection has no minirec form
    with pytest.raises(ConversionError, match="layer_norm"):
        from_torch(sru.SRU(8, 4, num_layers=2, bidirectional=True, layer_norm=True))
    with pytest.raises(ConversionError, match="projection_size"):
        from_torch(sru.SRU(8, 8, projection_size=2))
    with pytest.raises(ConversionError, match="trained matrix"):
        to_torch(nn.RNN("sru", 8, 4, bidirectional=True))  # minirec's W' (D = 2H) is a free matrix
