"""Tests for minirec.models: the language model, the sentence classifier, the hierarchical one.

Cells are picked among those registered when the tests run (`cell_names()`): "lstm"/"sru" when
present, else "fofe" (whose hidden size must equal its input size, so sizes are kept equal).
"""

from __future__ import annotations

import numpy as np
import pytest

from minirec import backend
from minirec.autograd import gradcheck, no_grad, ops
from minirec.autograd.function import Tensor
from minirec.cells import cell_names
from minirec.models import HierarchicalClassifier, LanguageModel, SentenceClassifier, detach_state
from minirec.models.language_model import decoder_cross_entropy

PREFERRED = ("lstm", "sru", "gru", "mingru", "fofe")


def pick_cell(*preferred):
    names = cell_names()
    for name in preferred or PREFERRED:
        if name in names:
            return name
    pytest.skip(f"none of {preferred or PREFERRED} is registered (have {names})")


def weighted_cells():
    """Registered cells that have weights (for the upper levels of a hierarchy)."""
    return [c for c in ("gru", "sgu", "lstm", "sru", "mgu", "mingru", "minlstm", "qrnn") if c in cell_names()]


def tokens_and_mask(lengths, vocab=20, seed=0, pad_id=0):
    rng = np.random.default_rng(seed)
    T, B = max(lengths), len(lengths)
    tokens = rng.integers(1, vocab, size=(T, B))
    mask = np.arange(T)[:, None] < np.asarray(lengths)[None, :]
    return np.where(mask, tokens, pad_id), mask


# ---- language model ---------------------------------------------------------------------------
@pytest.mark.parametrize("tie", [False, True])
def test_language_model_shapes_and_state(tie):
    cell = pick_cell()
    model = LanguageModel(30, cell=cell, embedding_size=12, hidden_size=12, num_layers=2, tie_weights=tie)
    tokens = np.random.default_rng(0).integers(0, 30, size=(5, 3))
    logits, state = model(tokens)
    assert logits.shape == (5, 3, 30)
    assert isinstance(state, list) and len(state) == 2
    logits2, _ = model(tokens, state)  # the state feeds the next window
    assert logits2.shape == (5, 3, 30)
    assert not np.allclose(logits.numpy(), logits2.numpy())


def test_tied_weights_share_the_embedding():
    model = LanguageModel(30, cell=pick_cell(), embedding_size=8, hidden_size=8, num_layers=1, tie_weights=True)
    untied = LanguageModel(30, cell=pick_cell(), embedding_size=8, hidden_size=8, num_layers=1)
    names = [n for n, _ in model.named_parameters()]
    assert "decoder_bias" in names and not any(n.startswith("decoder.") for n in names)
    assert untied.count_parameters() - model.count_parameters() == 8 * 30  # the (H, V) decoder matrix
    tokens = np.random.default_rng(1).integers(0, 30, size=(4, 2))
    loss, _ = model.loss(tokens, tokens)
    loss.backward()
    assert model.embedding.weight.grad is not None and np.abs(model.embedding.weight.grad).sum() > 0


def test_tied_weights_need_equal_sizes():
    cell = pick_cell("lstm", "sru", "gru", "mingru")
    with pytest.raises(ValueError, match="embedding size"):
        LanguageModel(30, cell=cell, embedding_size=8, hidden_size=10, num_layers=1, tie_weights=True)


def test_init_range_applies_to_every_parameter():
    model = LanguageModel(50, cell=pick_cell(), embedding_size=16, hidden_size=16, num_layers=2, init_range=0.05)
    for name, p in model.named_parameters():
        assert np.abs(p.numpy()).max() <= 0.05, name
    with pytest.raises(ValueError, match="init_range"):
        LanguageModel(50, cell=pick_cell(), embedding_size=16, hidden_size=16, init_range=0.0)


@pytest.mark.parametrize("tie", [False, True])
def test_fused_loss_matches_logits_and_cross_entropy(tie):
    model = LanguageModel(40, cell=pick_cell(), embedding_size=10, hidden_size=10, num_layers=2, tie_weights=tie)
    rng = np.random.default_rng(2)
    tokens, targets = rng.integers(0, 40, size=(6, 3)), rng.integers(0, 40, size=(6, 3))
    fused, _ = model.loss(tokens, targets)
    fused.backward()
    fused_grads = {n: p.grad.copy() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    logits, _ = model(tokens)
    plain = ops.cross_entropy(logits.reshape(-1, 40), targets.reshape(-1))
    plain.backward()
    assert fused.item() == pytest.approx(plain.item(), rel=1e-5)
    for name, p in model.named_parameters():
        if p.grad is not None:
            np.testing.assert_allclose(fused_grads[name], p.grad, rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("transposed", [False, True])
def test_decoder_cross_entropy_gradcheck(transposed):
    rng = np.random.default_rng(3)
    h = Tensor(rng.standard_normal((7, 4)), requires_grad=True)
    w_shape = (9, 4) if transposed else (4, 9)
    w = Tensor(rng.standard_normal(w_shape), requires_grad=True)
    b = Tensor(rng.standard_normal(9), requires_grad=True)
    targets = rng.integers(0, 9, size=7)
    gradcheck(lambda h, w, b: decoder_cross_entropy(h, w, b, targets, transposed), [h, w, b])


def test_decoder_cross_entropy_backward_twice_with_retain_graph():
    # the backward reuses the saved exp(z) buffer unless the graph is retained: both paths agree
    rng = np.random.default_rng(4)
    h0, w0 = rng.standard_normal((6, 5)), rng.standard_normal((5, 11))
    targets = rng.integers(0, 11, size=6)
    grads = []
    for retain in (False, True):
        h, w = Tensor(h0, requires_grad=True), Tensor(w0, requires_grad=True)
        loss = decoder_cross_entropy(h, w, None, targets)
        loss.backward(retain_graph=retain)
        if retain:
            first = h.grad.copy()
            loss.backward()
            np.testing.assert_allclose(h.grad, 2 * first, rtol=1e-12)
            grads.append(first)
        else:
            grads.append(h.grad)
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12)


def test_blocked_softmax_stats_match_numpy():
    from minirec.models import language_model

    z = np.random.default_rng(8).standard_normal((101, 37)).astype(np.float32) * 5
    e = z.copy()
    m, s = language_model.softmax_stats_(e)
    np.testing.assert_array_equal(m, z.max(axis=1))
    np.testing.assert_allclose(e, np.exp(z - z.max(axis=1, keepdims=True)), rtol=1e-6)
    np.testing.assert_allclose(s, e.sum(axis=1), rtol=1e-6)


def test_decoder_cross_entropy_is_stable_for_large_logits():
    h = Tensor(np.array([[1000.0, -1000.0]], dtype=np.float32))
    w = Tensor(np.eye(2, dtype=np.float32))
    loss = decoder_cross_entropy(h, w, None, np.array([1]))
    assert np.isfinite(loss.item()) and loss.item() == pytest.approx(2000.0)


def test_detach_state_cuts_tensors_in_lists_and_tuples():
    a = Tensor(np.ones((2, 3), dtype=np.float32), requires_grad=True)
    state = [a * 2, (a * 3, a * 4)]
    cut = detach_state(state)
    assert isinstance(cut, list) and isinstance(cut[1], tuple)
    for t in (cut[0], *cut[1]):
        assert not t.requires_grad and t.is_leaf
    np.testing.assert_array_equal(cut[1][1].numpy(), 4 * np.ones((2, 3)))
    assert detach_state(None) is None
    assert LanguageModel.detach_state is detach_state


def test_carried_state_continues_the_sequence():
    """Two windows with the state carried = one window over both (truncated BPTT's premise)."""
    backend.manual_seed(4)
    model = LanguageModel(25, cell=pick_cell(), embedding_size=8, hidden_size=8, num_layers=2).eval()
    tokens = np.random.default_rng(4).integers(0, 25, size=(10, 2))
    with no_grad():
        whole, _ = model(tokens)
        first, state = model(tokens[:6])
        second, _ = model(tokens[6:], detach_state(state))
    np.testing.assert_allclose(np.concatenate([first.numpy(), second.numpy()]), whole.numpy(), rtol=1e-5, atol=1e-6)


def test_language_model_rejects_bad_tokens():
    model = LanguageModel(10, cell=pick_cell(), embedding_size=4, hidden_size=4, num_layers=1)
    with pytest.raises(ValueError, match=r"\(T, B\)"):
        model(np.zeros(5, dtype=np.int64))
    with pytest.raises(IndexError):
        model(np.full((2, 2), 10))


@pytest.mark.parametrize("bad, error, message", [
    ([1, -1], IndexError, r"outside \[0, 10\) \(min -1"),  # -1 would silently pick word 9
    ([1, 10], IndexError, r"outside \[0, 10\)"),
    ([1.0, 2.0], TypeError, "integer ids, got dtype float64"),
])
@pytest.mark.parametrize("transposed", [False, True])
def test_decoder_cross_entropy_checks_the_targets(bad, error, message, transposed):
    rng = np.random.default_rng(0)
    h = Tensor(rng.standard_normal((2, 3)))
    weight = Tensor(rng.standard_normal((10, 3) if transposed else (3, 10)))
    with pytest.raises(error, match=message):
        decoder_cross_entropy(h, weight, None, np.array(bad), transposed=transposed)


# ---- sentence classifier ----------------------------------------------------------------------
@pytest.mark.parametrize("pooling", ["last", "max"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_classifier_padding_changes_nothing(pooling, bidirectional):
    backend.manual_seed(5)
    cell = pick_cell()
    layers = 1 if cell == "fofe" and bidirectional else 2  # fofe cannot grow 2H → H
    model = SentenceClassifier(20, 3, cell=cell, embedding_size=6, hidden_size=6, num_layers=layers,
                               bidirectional=bidirectional, pooling=pooling).eval()
    lengths = [5, 2, 4, 1]
    tokens, mask = tokens_and_mask(lengths)
    with no_grad():
        batch = model(tokens, mask).numpy()
        for b, n in enumerate(lengths):
            alone = model(tokens[:n, b:b + 1]).numpy()
            np.testing.assert_allclose(alone, batch[b:b + 1], rtol=1e-5, atol=1e-6)
    assert batch.shape == (4, 3)


def test_classifier_padding_gets_no_gradient():
    cell = pick_cell()
    for pooling in ("last", "max"):
        model = SentenceClassifier(20, 2, cell=cell, embedding_size=6, hidden_size=6, num_layers=1,
                                   bidirectional=True, pooling=pooling)
        tokens, mask = tokens_and_mask([4, 2, 3], pad_id=19)
        tokens = np.where(mask, np.minimum(tokens, 18), 19)  # id 19 only at padding
        loss = ops.cross_entropy(model(tokens, mask), np.array([0, 1, 1]))
        loss.backward()
        grad = model.embedding.weight.grad
        assert np.abs(grad[19]).max() == 0, pooling
        assert np.abs(grad[:19]).sum() > 0


def test_last_pooling_is_the_final_state():
    """For FOFE the output is the state: 'last' pooling = the RNN's final states (both directions)."""
    if "fofe" not in cell_names():
        pytest.skip("needs fofe")
    model = SentenceClassifier(20, 2, cell="fofe", embedding_size=5, hidden_size=5, num_layers=1,
                               bidirectional=True, pooling="last").eval()
    tokens, mask = tokens_and_mask([4, 2, 3])
    with no_grad():
        features = model.features(tokens, mask).numpy()
        _, states = model.rnn(model.embedding(tokens), None, mask)
    final = states[-1].numpy()  # (2, B, H)
    np.testing.assert_allclose(features, np.concatenate([final[0], final[1]], axis=-1), rtol=1e-6)


def test_max_pooling_ignores_padded_steps():
    model = SentenceClassifier(20, 2, cell=pick_cell(), embedding_size=6, hidden_size=6, num_layers=1,
                               pooling="max").eval()
    lengths = [3, 1]
    tokens, mask = tokens_and_mask(lengths)
    with no_grad():
        pooled = model.features(tokens, mask).numpy()
        y, _ = model.rnn(model.embedding(tokens), None, mask)
    y = y.numpy()
    expected = np.stack([y[:n, b].max(axis=0) for b, n in enumerate(lengths)])
    np.testing.assert_array_equal(pooled, expected)  # the max over the real steps only
    # padded steps hold zeros: where every real output of a feature is negative, letting them
    # into the max would show
    assert (expected < 0).any()


def test_classifier_rejects_bad_options():
    with pytest.raises(ValueError, match="pooling"):
        SentenceClassifier(10, 2, cell=pick_cell(), embedding_size=4, hidden_size=4, pooling="mean")
    for vocab_size, num_classes, name in [(0, 2, "vocab_size"), (10, 1, "num_classes")]:
        with pytest.raises(ValueError, match=name):
            SentenceClassifier(vocab_size, num_classes, cell=pick_cell(), embedding_size=4, hidden_size=4)
    model = SentenceClassifier(10, 2, cell=pick_cell(), embedding_size=4, hidden_size=4)
    with pytest.raises(ValueError, match="mask"):
        model(np.zeros((3, 2), dtype=np.int64), np.ones((2, 3), dtype=bool))


def bad_masks():
    """(mask for tokens (3, 2), the error it must raise): each would silently pool the wrong steps."""
    return [
        (np.array([[1, 1], [1, 2], [0, 1]]), "only 0 and 1"),
        (np.array([[1, 0], [1, 0], [0, 0]], dtype=bool), r"at least one real token; batch columns \[1\]"),
        (np.array([[0, 1], [1, 1], [1, 1]], dtype=bool), "right-padded"),  # left padding
        (np.array([[1, 1], [0, 1], [1, 1]], dtype=bool), "right-padded"),  # a gap
    ]


@pytest.mark.parametrize("model_kind", ["flat", "hierarchical"])
def test_classifiers_refuse_masks_they_would_misread(model_kind):
    if model_kind == "flat":
        model = SentenceClassifier(10, 2, cell=pick_cell(), embedding_size=4, hidden_size=4)
    else:
        model = HierarchicalClassifier(10, 2, levels=hierarchy_levels(), embedding_size=4, hidden_size=4, chunk_size=2)
    tokens = np.ones((3, 2), dtype=np.int64)
    for mask, message in bad_masks():
        with pytest.raises(ValueError, match=message):
            model(tokens, mask)
    with pytest.raises(ValueError, match="no time steps"):
        model(np.ones((0, 2), dtype=np.int64))
    model(tokens, np.array([[1, 1], [1, 1], [0, 1]]))  # an integer 0/1 mask is fine


# ---- hierarchical classifier ------------------------------------------------------------------
def hierarchy_levels():
    upper = weighted_cells()
    if "fofe" not in cell_names():
        pytest.skip("needs fofe")
    return ("fofe", upper[0], upper[-1]) if upper else ("fofe", "fofe")


def test_hierarchical_shapes_counts_and_padding():
    backend.manual_seed(6)
    levels = hierarchy_levels()
    model = HierarchicalClassifier(30, 5, levels=levels, embedding_size=6, hidden_size=7, chunk_size=3).eval()
    counts = model.parameter_counts()
    assert counts["level1:fofe"] == 0
    assert sum(counts.values()) == model.count_parameters()
    lengths = [7, 3, 1, 5]
    tokens, mask = tokens_and_mask(lengths, vocab=30)
    with no_grad():
        batch = model(tokens, mask).numpy()
        assert batch.shape == (4, 5)
        for b, n in enumerate(lengths):
            np.testing.assert_allclose(model(tokens[:n, b:b + 1]).numpy(), batch[b:b + 1], rtol=1e-5, atol=1e-6)


def test_hierarchical_chunk_vectors_are_fofe_of_each_chunk():
    if "fofe" not in cell_names():
        pytest.skip("needs fofe")
    alpha, c = 0.6, 3
    model = HierarchicalClassifier(30, 2, levels=("fofe", "fofe"), embedding_size=4, chunk_size=c,
                                   level_options=[{"alpha": alpha}, {}]).eval()
    lengths = [7, 4]
    tokens, mask = tokens_and_mask(lengths, vocab=30)
    with no_grad():
        x = model.embedding(tokens)
        vectors, chunk_mask = model.chunk_vectors(x, mask)
    x = x.numpy()
    assert vectors.shape == (3, 2, 4)
    np.testing.assert_array_equal(chunk_mask, [[True, True], [True, True], [True, False]])
    for b, n in enumerate(lengths):
        for j in range(-(-n // c)):
            words = x[j * c:min((j + 1) * c, n), b]
            expected = sum(alpha ** (len(words) - 1 - s) * words[s] for s in range(len(words)))
            np.testing.assert_allclose(vectors.numpy()[j, b], expected, rtol=1e-5, atol=1e-6)


def test_simpler_below_has_fewer_parameters():
    upper = weighted_cells()
    if "fofe" not in cell_names() or not upper:
        pytest.skip("needs fofe and a cell with weights")
    cell = "gru" if "gru" in upper else upper[0]
    simple = HierarchicalClassifier(100, 2, levels=("fofe", cell, cell), embedding_size=16, hidden_size=16)
    same = HierarchicalClassifier(100, 2, levels=(cell, cell, cell), embedding_size=16, hidden_size=16)
    assert simple.count_parameters() < same.count_parameters()


def test_hierarchical_rejects_bad_options():
    cell = pick_cell()
    with pytest.raises(ValueError, match="2 levels"):
        HierarchicalClassifier(10, 2, levels=(cell,))
    with pytest.raises(ValueError, match="chunk_size"):
        HierarchicalClassifier(10, 2, levels=(cell, cell), chunk_size=0)
    with pytest.raises(ValueError, match="num_classes must be at least 2"):
        HierarchicalClassifier(10, 1, levels=(cell, cell))
    with pytest.raises(ValueError, match="unidirectional"):
        HierarchicalClassifier(10, 2, levels=(cell, cell), level_options=[{}, {"bidirectional": True}])


# ---- the GPU ------------------------------------------------------------------------------------
@pytest.mark.cuda
@pytest.mark.skipif(not backend.cuda_available(), reason="no usable GPU")
def test_models_give_the_same_numbers_on_the_gpu():
    cell = pick_cell()
    tokens, mask = tokens_and_mask([5, 3], vocab=20)
    backend.manual_seed(7)
    lm = LanguageModel(20, cell=cell, embedding_size=8, hidden_size=8, num_layers=2, tie_weights=True).eval()
    clf = SentenceClassifier(20, 2, cell=cell, embedding_size=8, hidden_size=8, num_layers=1, bidirectional=True,
                             pooling="max").eval()
    with no_grad():
        cpu = (lm.loss(tokens, tokens)[0].item(), clf(tokens, mask).numpy())
        lm.to("gpu"), clf.to("gpu")
        gpu = (lm.loss(tokens, tokens)[0].item(), clf(tokens, mask).numpy())
    assert gpu[0] == pytest.approx(cpu[0], rel=1e-4)
    np.testing.assert_allclose(gpu[1], cpu[1], rtol=1e-4, atol=1e-5)
