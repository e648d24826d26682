"""`minirec sample`: text generated one token at a time from a trained run."""

import random

import numpy as np
import pytest
from conftest import write_corpus

from minirec.autograd.function import no_grad
from minirec.cli import main
from minirec.data.shakespeare import SHAKESPEARE
from minirec.models import LanguageModel
from minirec.training import sample, train
from minirec.training.checkpoint import save_checkpoint
from minirec.training.sample import SampleError, load_language_model

pytestmark = pytest.mark.usefixtures("isolated_cache")


@pytest.fixture
def chars_run(tmp_path, monkeypatch):
    rng = random.Random(0)
    text = "".join(f"{rng.choice(['ROMEO', 'JULIET'])}:\n{rng.choice(['o', 'ay', 'nay'])} me!\n\n" for _ in range(200))
    write_corpus(monkeypatch, tmp_path / "data", {SHAKESPEARE: text})
    out = tmp_path / "chars-run"
    train("chars", dict(cell="lstm", hidden=16, embedding=8, layers=2, batch_size=4, bptt=8, epochs=2,
                        max_batches=10, lr=1e-2, data_dir=str(tmp_path / "data"), out=str(out), verbose=False,
                        progress=False))
    return out


@pytest.fixture
def ptb_run(tmp_path, monkeypatch):
    rng = random.Random(1)
    words = [f"w{i}" for i in range(20)]
    for split, n in (("train", 60), ("valid", 10), ("test", 10)):
        lines = "".join(" " + " ".join(rng.choice(words) for _ in range(rng.randint(2, 6))) + " \n" for _ in range(n))
        write_corpus(monkeypatch, tmp_path / "data", {f"ptb/{split}.txt": lines})
    out = tmp_path / "ptb-run"
    train("ptb", dict(cell="sru", hidden=8, embedding=8, layers=1, batch_size=4, bptt=5, epochs=1, max_batches=5,
                      data_dir=str(tmp_path / "data"), out=str(out), verbose=False, progress=False))
    return out


def test_same_seed_same_text_and_another_seed_another(chars_run):
    first = sample(chars_run, prime="ROMEO:", length=60, seed=3)
    assert len(first) == 60
    assert sample(chars_run, prime="ROMEO:", length=60, seed=3) == first
    assert sample(chars_run, prime="ROMEO:", length=60, seed=4) != first


@pytest.mark.parametrize("cell", ["lstm", "mingru"])
def test_temperature_zero_is_the_argmax_of_the_whole_sequence_forward(chars_run, cell):
    """Greedy decoding with RNN.step equals re-reading the whole text with forward each time.
    A model with large random weights, so that each choice depends on the whole context."""
    _, vocab, config = load_language_model(chars_run)
    model = LanguageModel(len(vocab), cell=cell, embedding_size=8, hidden_size=16, init_range=1.0).eval()
    prime, length = "JULIET:\n", 25
    ids = list(vocab.encode(prime))
    with no_grad():
        for _ in range(length):
            logits, _ = model(np.array(ids)[:, None])
            ids.append(int(np.argmax(logits.data[-1, 0])))
    expected = "".join(vocab.decode(ids[len(prime):]))
    assert len(set(expected)) >= 2  # not one character repeated: the context matters
    loaded = (model, vocab, config)
    assert sample(None, prime=prime, length=length, temperature=0, model=loaded) == expected
    assert sample(None, prime=prime, length=length, top_k=1, seed=9, model=loaded) == expected


def test_a_low_temperature_concentrates_the_draws(chars_run):
    """Cooler sampling repeats the greedy text more often than sampling at temperature 1."""
    greedy = sample(chars_run, prime="RO", length=40, temperature=0)

    def agreement(temperature):
        texts = [sample(chars_run, prime="RO", length=40, temperature=temperature, seed=s) for s in range(5)]
        return np.mean([[a == b for a, b in zip(text, greedy)] for text in texts])

    assert agreement(0.05) > agreement(2.0)


def test_unknown_characters_in_the_prime_are_named(chars_run, capsys):
    with pytest.raises(SampleError, match=r"not in the model's vocabulary: 'Z', 'é'"):
        sample(chars_run, prime="ROMEZé")
    assert main(["sample", str(chars_run), "--prime", "Zé"]) == 2
    assert "'Z', 'é'" in capsys.readouterr().err


@pytest.mark.parametrize("change, message", [
    ({"temperature": -1.0}, "temperature"), ({"temperature": float("nan")}, "temperature"),
    ({"top_k": 0}, "top_k"), ({"length": -5}, "length"),
])
def test_bad_arguments_are_refused_by_name(chars_run, change, message):
    with pytest.raises(SampleError, match=message):
        sample(chars_run, **{"length": 5, **change})


def test_the_command_prints_the_prime_and_the_text(chars_run, capsys):
    assert main(["sample", str(chars_run), "--prime", "ROMEO:", "--length", "30", "--seed", "2"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "ROMEO:" + sample(chars_run, prime="ROMEO:", length=30, seed=2) + "\n"
    assert "tokens/s" in captured.err


def test_a_word_level_run_samples_words_and_can_stop_at_eos(ptb_run):
    text = sample(ptb_run, prime="w1 w2", length=30, seed=0)
    words = text.split()
    assert words and all(word.startswith("w") or word == "<unk>" for word in words)
    stopped = sample(ptb_run, prime="w1 w2", length=200, seed=0, stop_at_eos=True)
    assert "\n" not in stopped and text.startswith(stopped.strip())
    with pytest.raises(SampleError, match="words of the prime.*'nonword'"):
        sample(ptb_run, prime="w1 nonword")


def test_runs_that_cannot_be_sampled_say_why(tmp_path):
    with pytest.raises(SampleError, match="no best.npz"):
        sample(tmp_path)
    save_checkpoint(tmp_path / "best.npz", {}, meta={"config": {"task": "sst"}})
    with pytest.raises(SampleError, match="'sst' model; sampling needs a language model"):
        sample(tmp_path)
