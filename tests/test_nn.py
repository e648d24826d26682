"""Modules, state dicts, optimisers: a small MLP must learn."""

import numpy as np
import pytest

import minirec as mr
from minirec import nn


class MLP(nn.Module):
    def __init__(self, sizes=(2, 16, 2)):
        self.layers = [nn.Linear(a, b) for a, b in zip(sizes, sizes[1:])]
        self.norm = nn.LayerNorm(sizes[1])
        self.drop = nn.Dropout(0.1)

    def forward(self, x):
        h = self.drop(mr.tanh(self.norm(self.layers[0](x))))
        return self.layers[1](h)


def xor_data(n=128, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, 2)).astype(np.float32)
    return x, (x[:, 0] * x[:, 1] > 0).astype(np.int64)


def test_parameter_discovery_and_count():
    model = MLP()
    names = [n for n, _ in model.named_parameters()]
    assert names == ["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias", "norm.gamma", "norm.beta"]
    assert model.count_parameters() == 2 * 16 + 16 + 16 * 2 + 2 + 2 * 16


def test_train_eval_reaches_every_submodule():
    model = MLP().eval()
    assert not model.drop.training and not model.layers[0].training
    assert model.train().drop.training


@pytest.mark.parametrize("make_optimizer", [
    lambda p: nn.Adam(p, lr=0.03),
    lambda p: nn.SGD(p, lr=0.3, momentum=0.9, weight_decay=1e-4),
], ids=["adam", "sgd-momentum"])
def test_mlp_learns_xor(make_optimizer):
    mr.manual_seed(0)
    model = MLP()
    opt = make_optimizer(model.parameters())
    x, y = xor_data()
    losses = []
    for _ in range(150):
        loss = mr.cross_entropy(model(mr.tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        nn.clip_grad_norm(model.parameters(), 5.0)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
    model.eval()
    accuracy = (model(mr.tensor(x)).data.argmax(-1) == y).mean()
    assert accuracy > 0.9


def test_state_dict_round_trip_through_npz(tmp_path):
    a, b = MLP(), MLP()
    a.save(tmp_path / "m.npz")
    b.load(tmp_path / "m.npz")
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert na == nb
        np.testing.assert_array_equal(pa.data, pb.data)
    assert list(tmp_path.iterdir()) == [tmp_path / "m.npz"]  # no temporary file left


def test_load_state_dict_lists_every_problem():
    model = MLP()
    state = model.state_dict()
    del state["norm.beta"]
    state["extra"] = np.zeros(1)
    state["layers.0.weight"] = np.zeros((3, 3))
    with pytest.raises(nn.StateDictError) as error:
        model.load_state_dict(state)
    message = str(error.value)
    assert "missing keys: norm.beta" in message
    assert "unexpected keys: extra" in message
    assert "layers.0.weight: checkpoint (3, 3) vs model (2, 16)" in message


def test_load_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        MLP().load(tmp_path / "nope.npz")


def test_failed_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    model = MLP()
    model.save(path)
    before = path.read_bytes()

    def broken_savez(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]


def test_clip_grad_norm_scales_to_max_norm():
    p = nn.Parameter(np.zeros(4, dtype=np.float64))
    q = nn.Parameter(np.zeros(3, dtype=np.float64))
    p.grad, q.grad = np.full(4, 3.0), np.full(3, 4.0)
    norm = nn.clip_grad_norm([p, q], 1.0)
    assert norm == pytest.approx(np.sqrt(36 + 48))
    assert np.sqrt((p.grad**2).sum() + (q.grad**2).sum()) == pytest.approx(1.0, rel=1e-5)


def test_optimizer_state_dict_resumes_identically():
    def run(steps, split=None):
        mr.manual_seed(0)
        model = MLP()
        opt = nn.Adam(model.parameters(), lr=0.01)
        x, y = xor_data(32)
        model.eval()
        for step in range(steps):
            if step == split:
                state, opt_state = model.state_dict(), opt.state_dict()
                model = MLP().load_state_dict(state).eval()
                opt = nn.Adam(model.parameters(), lr=0.5).load_state_dict(opt_state)
            loss = mr.cross_entropy(model(mr.tensor(x)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return model.state_dict()

    straight, resumed = run(6), run(6, split=3)
    for k in straight:
        np.testing.assert_array_equal(straight[k], resumed[k])


def test_embedding_lookup_and_gradient():
    emb = nn.Embedding(5, 3)
    out = emb(np.array([[1, 1], [4, 0]]))
    assert out.shape == (2, 2, 3)
    out.sum().backward()
    np.testing.assert_array_equal(emb.weight.grad[:, 0], [1, 2, 0, 0, 1])


def test_linear_rejects_wrong_feature_size():
    with pytest.raises(ValueError, match="last dimension 2"):
        nn.Linear(2, 3)(mr.tensor(np.ones((4, 5))))


def test_module_to_cpu_keeps_values():
    model = MLP()
    before = model.state_dict()
    model.to("cpu")
    assert model.device == "cpu"
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


@pytest.mark.cuda
def test_module_to_gpu():
    if not mr.cuda_available():
        pytest.skip("no usable GPU")
    import cupy as xp

    model = MLP().to("gpu")
    assert model.device == "gpu"
    out = model(mr.tensor(xp.ones((3, 2), dtype=xp.float32)))
    assert out.device == "gpu"
    assert model.to("cpu").device == "cpu"


def test_word_dropout_drops_whole_vectors_and_is_identity_in_eval():
    mr.manual_seed(0)
    layer = nn.WordDropout(0.4)
    x = mr.tensor(np.ones((50, 8, 6)), requires_grad=True)
    y = layer(x)
    per_word = y.data.reshape(-1, 6)
    dropped = (per_word == 0).all(axis=1)
    kept = (per_word == 1 / 0.6).all(axis=1)
    assert (dropped | kept).all()  # every word vector is dropped or kept as a whole
    assert 0.3 < dropped.mean() < 0.5
    y.sum().backward()
    np.testing.assert_allclose(x.grad, y.data)  # d(sum y)/dx is the same mask
    layer.eval()
    assert layer(x) is x
    with pytest.raises(ValueError, match="word dropout probability"):
        nn.WordDropout(1.0)


def _textbook_adam(p, grads, lr, betas, eps, weight_decay):
    """Kingma & Ba's Algorithm 1 written out in float64, L2 decay added to the gradient."""
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        g = g + weight_decay * p
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g**2
        p = p - lr * (m / (1 - betas[0] ** t)) / (np.sqrt(v / (1 - betas[1] ** t)) + eps)
    return p


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_adam_follows_the_textbook_algorithm(weight_decay):
    rng = np.random.default_rng(0)
    start = rng.normal(size=(7, 5))
    grads = [rng.normal(size=(7, 5)) * 10.0**k for k in (-3, 0, 2, -1, 0, 1)]  # moments of mixed scale
    param = nn.Parameter(start.copy())
    opt = nn.Adam([param], lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=weight_decay)
    for g in grads:
        param.grad = g.copy()
        opt.step()
    expected = _textbook_adam(start, grads, 0.05, (0.8, 0.99), 1e-6, weight_decay)
    np.testing.assert_allclose(param.data, expected, rtol=1e-12, atol=1e-14)
    assert not np.allclose(param.data, start, atol=1e-2)  # it moved


def test_adam_matches_torch_in_float32():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    start = rng.normal(size=(11, 3)).astype(np.float32)
    grads = [rng.normal(size=(11, 3)).astype(np.float32) for _ in range(5)]
    param = nn.Parameter(start.copy())
    opt = nn.Adam([param], lr=0.01, weight_decay=1e-3)
    reference = torch.tensor(start.copy(), requires_grad=True)
    torch_opt = torch.optim.Adam([reference], lr=0.01, weight_decay=1e-3)
    for g in grads:
        param.grad = g.copy()
        opt.step()
        reference.grad = torch.tensor(g)
        torch_opt.step()
    assert param.data.dtype == np.float32
    np.testing.assert_allclose(param.data, reference.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_adam_counts_steps_per_parameter():
    # A parameter whose first gradient arrives at step 4 gets the first step's bias correction.
    rng = np.random.default_rng(2)
    early, late = nn.Parameter(rng.normal(size=3)), nn.Parameter(rng.normal(size=2))
    start = late.data.copy()
    opt = nn.Adam([early, late], lr=0.05, betas=(0.8, 0.99), eps=1e-6)
    grads = [rng.normal(size=2) for _ in range(3)]
    for step in range(6):
        early.grad = rng.normal(size=3)
        late.grad = grads[step - 3].copy() if step >= 3 else None
        opt.step()
    np.testing.assert_allclose(late.data, _textbook_adam(start, grads, 0.05, (0.8, 0.99), 1e-6, 0.0), rtol=1e-12)
    resumed = nn.Adam([early, late], lr=0.05).load_state_dict(opt.state_dict())
    assert (resumed.t, resumed.step_count) == ({0: 6, 1: 3}, 6)


def test_optimizer_state_that_does_not_fit_is_refused_and_changes_nothing():
    p, q = nn.Parameter(np.zeros(3)), nn.Parameter(np.zeros(2))
    opt = nn.SGD([p, q], lr=0.5, momentum=0.9)
    p.grad, q.grad = np.ones(3), np.ones(2)
    opt.step()
    before = opt.state_dict()
    bad = {"lr": 0.01, "step_count": 99, "velocity.0": np.ones(1), "velocity.7": np.ones(3), "m.0": np.ones(3)}
    with pytest.raises(ValueError) as error:
        opt.load_state_dict(bad)
    message = str(error.value)
    assert "'velocity.0': shape (1,), parameter (3,)" in message  # would broadcast silently
    assert "'velocity.7': there are only 2 parameters" in message
    assert "'m.0' is not a SGD state entry" in message  # Adam's moments
    after = opt.state_dict()
    assert after.keys() == before.keys() and all(np.array_equal(after[k], before[k]) for k in before)


def test_loaded_optimizer_state_is_a_copy():
    state = {"lr": 0.1, "step_count": 1, "m.0": np.full(3, 0.1), "v.0": np.full(3, 0.1), "t.0": 1}
    p = nn.Parameter(np.zeros(3))
    opt = nn.Adam([p], lr=0.1).load_state_dict(state)
    p.grad = np.ones(3)
    opt.step()
    np.testing.assert_array_equal(state["m.0"], np.full(3, 0.1))  # the caller's dict is untouched


@pytest.mark.parametrize("make, message", [
    (lambda ps: nn.Adam(ps, betas=(1.0, 0.999)), "betas"),
    (lambda ps: nn.Adam(ps, eps=-1.0), "eps"),
    (lambda ps: nn.Adam(ps, weight_decay=-1.0), "weight_decay"),
    (lambda ps: nn.SGD(ps, momentum=-0.5), "momentum"),
])
def test_bad_optimizer_settings_are_refused_by_name(make, message):
    with pytest.raises(ValueError, match=message):
        make([nn.Parameter(np.zeros(2))])


def test_clip_grad_norm_accepts_an_iterator():
    p = nn.Parameter(np.zeros(4))
    p.grad = np.full(4, 3.0)
    assert nn.clip_grad_norm(iter([p]), 1.0) == pytest.approx(6.0)
    assert np.sqrt((p.grad**2).sum()) == pytest.approx(1.0, rel=1e-5)  # an iterator was used up, unclipped


def test_load_state_dict_refuses_values_that_are_not_floats_and_changes_nothing():
    model = MLP()
    before = model.state_dict()
    state = {k: v.copy() for k, v in before.items()}
    state["layers.0.bias"] = np.array(["1.5"] * 16)
    state["norm.gamma"] = np.ones(16, dtype=np.complex128)
    with pytest.raises(nn.StateDictError, match="not floating point: layers.0.bias: <U3; norm.gamma: complex128"):
        model.load_state_dict(state)
    assert all(np.array_equal(model.state_dict()[k], before[k]) for k in before)


def test_layers_refuse_an_input_of_another_dtype():
    linear, norm = nn.Linear(3, 2), nn.LayerNorm(3)  # float32 weights
    x = mr.tensor(np.ones((2, 3)))  # float64
    for layer in (linear, norm):
        with pytest.raises(TypeError, match="input has dtype float64 but the weights are float32"):
            layer(x)


def test_containers_that_discovery_cannot_see_are_an_error():
    class Hidden(nn.Module):
        def __init__(self, container):
            self.parts = container

    for container in ({"a": nn.Linear(2, 2)}, [nn.Linear(2, 2), None], [nn.Parameter(np.zeros(2))],
                      [[nn.Linear(2, 2)]]):
        with pytest.raises(TypeError, match="discovery cannot see"):
            Hidden(container).parameters()
    assert Hidden([1, 2]).parameters() == [] and Hidden({"k": 3}).parameters() == []  # plain data is fine


def test_object_arrays_are_refused_before_a_good_file_is_replaced(tmp_path):
    path = tmp_path / "m.npz"
    nn.save_npz_atomic(path, {"w": np.ones(2)})
    before = path.read_bytes()
    with pytest.raises(TypeError, match=r"\['carry'\] would be pickled"):
        nn.save_npz_atomic(path, {"w": np.ones(2), "carry": np.array([None, np.ones(2)], dtype=object)})
    assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]


def test_loading_a_file_that_is_not_an_npz_names_it(tmp_path):
    garbage, single = tmp_path / "garbage.npz", tmp_path / "arr.npy"
    garbage.write_bytes(b"hello")
    np.save(single, np.ones(3))
    for path in (garbage, single):
        with pytest.raises(ValueError, match=f"{path.name} is not a readable minirec .npz file"):
            MLP().load(path)
