"""The recurrent stack, the registry and the `minirec gradcheck` command."""

import numpy as np
import pytest

import minirec as mr
from minirec import backend, nn
from minirec.cells import RecurrentLayer, cell_names, get_cell
from minirec.cli import main

ALL_CELLS = "gru lstm mgu sgu fofe sru qrnn atr lrn glrn elrn olrn mingru minlstm".split()


def test_every_cell_is_registered():
    assert sorted(cell_names()) == sorted(ALL_CELLS)


def test_unknown_cell_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown cell 'grue'; known cells: ") as error:
        nn.RNN("grue", 3, 4)
    assert all(name in str(error.value) for name in ALL_CELLS)


@pytest.mark.parametrize("cell", ALL_CELLS)
def test_stack_shapes_and_parameter_count(cell):
    size = 4
    rnn = nn.RNN(cell, size, size, num_layers=2, bidirectional=cell != "fofe", dropout=0.2)
    directions = 1 if cell == "fofe" else 2
    if cell == "fofe":
        rnn = nn.RNN(cell, size, size, num_layers=2)
    x = mr.tensor(np.random.default_rng(0).standard_normal((5, 3, size)).astype(np.float32))
    y, states = rnn(x)
    assert y.shape == (5, 3, size * directions)
    assert len(states) == 2
    first = states[0][0] if isinstance(states[0], tuple) else states[0]
    assert first.shape == ((3, size) if directions == 1 else (2, 3, size))
    cls = get_cell(cell)
    expected = sum(
        directions * cls.parameter_count(layer.forward_cell.input_size, size, **_options(layer.forward_cell))
        for layer in rnn.layers
    )
    assert rnn.count_parameters() == expected


def _options(cell):
    return {k: getattr(cell, k) for k in ("activation", "highway", "layer_norm") if hasattr(cell, k)}


@pytest.mark.parametrize("cell", ["sru", "lstm", "mingru"])
def test_stack_gradcheck_with_dropout_off_and_mask(cell):
    backend.set_default_dtype(np.float64)
    rnn = nn.RNN(cell, 3, 4, num_layers=2, bidirectional=True, dropout=0.5).eval()
    x = mr.tensor(np.random.default_rng(1).standard_normal((4, 2, 3)), requires_grad=True)
    mask = np.array([[1, 1], [1, 1], [1, 0], [1, 0]], dtype=bool)
    result = mr.gradcheck(lambda x, *p: rnn(x, mask=mask)[0], [x, *rnn.parameters()], mode="projection")
    assert result.passed


def test_dropout_between_layers_only_in_training():
    rnn = nn.RNN("sru", 4, 4, num_layers=2, dropout=0.5)
    x = mr.tensor(np.ones((3, 2, 4), dtype=np.float32))
    rnn.eval()
    a, _ = rnn(x)
    b, _ = rnn(x)
    np.testing.assert_array_equal(a.data, b.data)
    rnn.train()
    c, _ = rnn(x)
    assert not np.allclose(a.data, c.data)


def test_h0_per_layer_is_checked():
    rnn = nn.RNN("gru", 3, 4, num_layers=2)
    with pytest.raises(ValueError, match="one per layer"):
        rnn(mr.tensor(np.ones((2, 1, 3))), h0=[mr.tensor(np.zeros((1, 4)))])


@pytest.mark.parametrize("cell", sorted(set(cell_names()) - {"fofe"}))
def test_every_cell_refuses_weights_of_another_dtype(cell):
    layer = get_cell(cell)(3, 4)  # float32 weights
    with pytest.raises(TypeError, match="x has dtype float64 but the weights are float32"):
        layer(mr.tensor(np.ones((2, 1, 3))))  # would upcast y, state and the weights' gradients


@pytest.mark.parametrize("cell", ["gru", "lstm", "sru", "mingru"])
def test_a_non_finite_h0_is_refused_like_a_non_finite_x(cell):
    layer = get_cell(cell)(3, 4)
    x = mr.tensor(np.ones((2, 1, 3), dtype=np.float32))
    state = layer.init_state(1, np, np.float32)
    bad = tuple(mr.tensor(np.full((1, 4), np.nan, dtype=np.float32)) for _ in range(len(state))) \
        if isinstance(state, tuple) else mr.tensor(np.full((1, 4), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match=f"{cell}: h0 contains NaN or inf"):
        layer(x, bad)


def test_malformed_h0_and_mask_are_named():
    x = mr.tensor(np.ones((2, 1, 3), dtype=np.float32))
    h = mr.tensor(np.zeros((1, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="gru: h0 must be one Tensor of shape \\(1, 4\\), got a tuple"):
        get_cell("gru")(3, 4)(x, (h,))
    y, (h_last, c_last) = get_cell("lstm")(3, 4)(x, [h, h])  # a list works like a tuple
    assert h_last.shape == c_last.shape == (1, 4)
    with pytest.raises(ValueError, match="lstm: h0 must be a tuple of 2 tensors, got a Tensor"):
        get_cell("lstm")(3, 4)(x, h)
    with pytest.raises(TypeError, match="mask must be an array"):
        get_cell("gru")(3, 4)(x, None, [[1], [1]])
    with pytest.raises(ValueError, match="one per layer\\), got a Tensor"):
        nn.RNN("gru", 3, 4)(x, h0=h)


def test_stack_dropout_with_one_layer_warns():
    with pytest.warns(UserWarning, match="only one layer"):
        nn.RNN("gru", 3, 4, num_layers=1, dropout=0.5)


def test_gradcheck_command_takes_cell_names_in_any_case(capsys):
    assert main(["gradcheck", "--cells", "FOFE", "LSTM", "--no-ops"]) == 0  # FOFE: square sizes
    assert "forget_bias=0" in capsys.readouterr().out  # LSTM's own option case is not skipped


def test_bidirectional_h0_shape_is_checked():
    layer = RecurrentLayer("gru", 3, 4, bidirectional=True)
    with pytest.raises(ValueError, match=r"\(2, B, H\)"):
        layer(mr.tensor(np.ones((2, 1, 3))), h0=mr.tensor(np.zeros((1, 4))))


def test_fofe_alpha_outside_unit_interval():
    for alpha in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="alpha must lie in \\(0, 1\\)"):
            nn.RNN("fofe", 3, 3, alpha=alpha)


def test_gradcheck_command_prints_full_table(capsys):
    code = main(["gradcheck", "--cells", "sru", "lrn", "--no-ops"])
    out = capsys.readouterr().out
    assert code == 0
    assert "sru" in out and "projected skip" in out and "lrn" in out and "identity" in out
    assert "NO" not in out
    assert "cases within tolerance" in out


def test_gradcheck_command_fails_on_a_broken_backward(capsys, monkeypatch):
    from minirec.cells import fofe

    real = fofe.FOFERecurrence.backward

    def broken(ctx, grad_y, grad_h_last):
        grad_x, grad_h0, _ = real(ctx, grad_y, grad_h_last)
        return grad_x * 1.001, grad_h0, None

    monkeypatch.setattr(fofe.FOFERecurrence, "backward", staticmethod(broken))
    assert main(["gradcheck", "--cells", "fofe", "--no-ops"]) == 1
    assert "NO" in capsys.readouterr().out


def test_info_command_lists_cells_and_kernels(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "cuda_usable" in out and "sru_forward (" in out
    assert all(name in out for name in ALL_CELLS)
