"""`RNN.step`: one time step at a time gives what `RNN.forward` gives for the whole sequence."""

import numpy as np
import pytest

import minirec as mr
from minirec import backend, nn
from minirec.cells import cell_names

ALL_CELLS = "gru lstm mgu sgu fofe sru qrnn atr lrn glrn elrn olrn mingru minlstm".split()
STEPS, BATCH, SIZE = 6, 3, 5


def _states(state):
    """The arrays of a stack's state (one entry per layer, LSTM's (h, c) as two)."""
    flat = []
    for layer in state:
        flat.extend(part.data for part in (layer if isinstance(layer, tuple) else (layer,)))
    return flat


def _stepwise(rnn, x, state=None):
    outputs = []
    for t in range(x.shape[0]):
        y_t, state = rnn.step(x[t], state)
        outputs.append(y_t.data)
    return np.stack(outputs), state


def test_every_registered_cell_is_covered():
    assert sorted(cell_names()) == sorted(ALL_CELLS)


@pytest.mark.parametrize(
    "cell, options",
    [(cell, {}) for cell in ALL_CELLS]
    + [
        ("mingru", {"mode": "log"}),
        ("mingru", {"mode": "parallel"}),
        ("minlstm", {"mode": "log"}),
        ("sru", {"highway_bias": -1.0}),
        ("qrnn", {"highway": True}),
        ("lrn", {"activation": "identity"}),
    ],
)
def test_step_by_step_equals_the_whole_sequence(cell, options):
    backend.set_default_dtype(np.float64)
    rnn = nn.RNN(cell, SIZE, SIZE, num_layers=2, dropout=0.3, **options).eval()
    rng = np.random.default_rng(1)
    x = mr.tensor(rng.standard_normal((STEPS, BATCH, SIZE)))
    with mr.no_grad():
        y, last = rnn(x)
        y_steps, last_steps = _stepwise(rnn, x)
    np.testing.assert_allclose(y_steps, y.data, rtol=1e-10, atol=1e-12)
    for a, b in zip(_states(last_steps), _states(last), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cell", ["lstm", "sru", "mingru", "lrn"])
def test_step_continues_a_state_from_forward(cell):
    """Prime with forward over a prefix, then step: the same as forward over the whole."""
    backend.set_default_dtype(np.float64)
    rnn = nn.RNN(cell, SIZE, SIZE, num_layers=2).eval()
    x = mr.tensor(np.random.default_rng(2).standard_normal((STEPS, BATCH, SIZE)))
    with mr.no_grad():
        y, _ = rnn(x)
        _, primed = rnn(x[:2])
        y_rest, _ = _stepwise(rnn, x[2:], primed)
    np.testing.assert_allclose(y_rest, y.data[2:], rtol=1e-10, atol=1e-12)


def test_step_refuses_a_bidirectional_rnn_saying_why():
    rnn = nn.RNN("gru", SIZE, SIZE, bidirectional=True)
    with pytest.raises(ValueError, match="bidirectional.*backward direction"):
        rnn.step(np.zeros((BATCH, SIZE), dtype=np.float32))


def test_step_refuses_a_sequence_and_a_malformed_state():
    rnn = nn.RNN("lstm", SIZE, SIZE, num_layers=2)
    with pytest.raises(ValueError, match=r"one time step \(B, D\)"):
        rnn.step(np.zeros((2, BATCH, SIZE), dtype=np.float32))
    x_t = np.zeros((BATCH, SIZE), dtype=np.float32)
    with pytest.raises(ValueError, match="list of 2 states"):
        rnn.step(x_t, [None])
    h = mr.tensor(np.zeros((BATCH, SIZE), dtype=np.float32))
    with pytest.raises(ValueError, match="tuple of 2 tensors"):
        rnn.step(x_t, [h, h])  # LSTM's state is (h, c)
    with pytest.raises(ValueError, match="feature size 4"):
        rnn.step(np.zeros((BATCH, 4), dtype=np.float32))


def test_step_applies_dropout_between_layers_only_in_training():
    rnn = nn.RNN("sru", SIZE, SIZE, num_layers=2, dropout=0.5)
    x_t = np.random.default_rng(4).standard_normal((BATCH, SIZE)).astype(np.float32)
    with mr.no_grad():
        eval_a = rnn.eval().step(x_t)[0].data
        eval_b = rnn.step(x_t)[0].data
        train = rnn.train().step(x_t)[0].data
    np.testing.assert_array_equal(eval_a, eval_b)
    assert not np.allclose(train, eval_a)
