"""Tiny Shakespeare: the loader (checksum, 90/10 split, vocabulary) and the ``chars`` task.

Unit tests use a small text the tests write; the smoke run on the real corpus reads
``../shared/data`` beside the project and is skipped when it is absent.
"""

import hashlib
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from minirec.cli import main
from minirec.data import DataError, download, load_shakespeare
from minirec.data.shakespeare import SHAKESPEARE, char_vocab, encode_text, split_text
from minirec.training import train
from minirec.training.chars import VOCAB
from minirec.training.plots import curve_panels

# ../shared/data beside the project (a checkout in /work/main, or a worktree one level deeper)
REAL_DATA = next((p / "shared" / "data" for p in Path(__file__).resolve().parents[2:4] if (p / "shared").is_dir()),
                 Path("/nonexistent"))
TIMING_KEYS = {"train_time_s", "tokens_per_s"}


def _play(n_lines: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    speakers, words = ["ROMEO", "JULIET", "NURSE"], "o she doth teach the torches to burn bright and".split()
    lines = []
    for _ in range(n_lines):
        lines.append(f"{rng.choice(speakers)}:\n" + " ".join(rng.choice(words) for _ in range(rng.randint(3, 8))))
    return "\n\n".join(lines) + "\n"


@pytest.fixture(autouse=True)
def isolated_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MINIREC_DATA", raising=False)


@pytest.fixture
def text():
    return _play(150)


@pytest.fixture
def data_dir(tmp_path, monkeypatch, text):
    root = tmp_path / "data"
    (root / "shakespeare").mkdir(parents=True)
    (root / SHAKESPEARE).write_text(text, encoding="utf-8")
    monkeypatch.setitem(download.SHA256, SHAKESPEARE, hashlib.sha256(text.encode()).hexdigest())
    return root


def chars_config(data_dir, out=None, **changes):
    config = dict(cell="gru", hidden=16, embedding=8, layers=2, batch_size=4, bptt=8, epochs=3, max_batches=6,
                  max_eval_batches=3, lr=1e-2, data_dir=str(data_dir), out=None if out is None else str(out),
                  progress=False, verbose=False)
    config.update(changes)
    return config


def curve(results):
    return [{k: v for k, v in epoch.items() if k not in TIMING_KEYS} for epoch in results["epochs"]]


# ---- the loader -----------------------------------------------------------------------------------
def test_the_corpus_is_registered_with_the_published_checksum():
    assert download.SHA256[SHAKESPEARE] == "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
    assert download.URLS[SHAKESPEARE].endswith("karpathy/char-rnn/master/data/tinyshakespeare/input.txt")


def test_load_splits_the_text_90_10_with_a_sorted_character_vocabulary(data_dir, text):
    corpus = load_shakespeare(data_dir)
    assert corpus.vocab.tokens == sorted(set(text))
    cut = int(0.9 * len(text))
    assert len(corpus.train) == cut and len(corpus.valid) == len(text) - cut
    decoded = "".join(corpus.vocab.decode(corpus.train)) + "".join(corpus.vocab.decode(corpus.valid))
    assert decoded == text


def test_line_ends_are_read_as_they_are(tmp_path, monkeypatch):
    text = "A:\r\nhi\n" * 20  # a "\r" must stay a character (no newline translation)
    root = tmp_path / "crlf"
    (root / "shakespeare").mkdir(parents=True)
    (root / SHAKESPEARE).write_bytes(text.encode())
    monkeypatch.setitem(download.SHA256, SHAKESPEARE, hashlib.sha256(text.encode()).hexdigest())
    corpus = load_shakespeare(root)
    assert "\r" in corpus.vocab and len(corpus.train) + len(corpus.valid) == len(text)


def test_a_wrong_file_is_refused_by_its_checksum(data_dir):
    (data_dir / SHAKESPEARE).write_text("not the plays\n" * 10, encoding="utf-8")
    with pytest.raises(DataError, match="checksum mismatch"):
        load_shakespeare(data_dir)


def test_no_file_and_no_download_says_where_to_put_it(tmp_path):
    with pytest.raises(DataError, match=r"(?s)shakespeare/input.txt not found.*--data-dir"):
        load_shakespeare(tmp_path / "empty", download=False)


def test_unknown_characters_are_named():
    vocab = char_vocab("abc\n")
    np.testing.assert_array_equal(encode_text("cab", vocab), [3, 1, 2])
    with pytest.raises(ValueError, match=r"'z', 'é'"):
        encode_text("zbé", vocab)
    assert split_text("0123456789") == ("012345678", "9")


# ---- the task -------------------------------------------------------------------------------------
def test_chars_run_learns_and_records_bits_per_character(data_dir, tmp_path):
    out = tmp_path / "run"
    results = train("chars", chars_config(data_dir, out, epochs=4))
    assert results["status"] == "completed"
    epochs = results["epochs"]
    assert epochs[-1]["valid_loss"] < epochs[0]["valid_loss"] < math.log(results["vocab_size"])
    for record in epochs:
        assert record["valid_bpc"] == pytest.approx(record["valid_loss"] / math.log(2))
    # no test split: the final evaluation is the best model on the whole validation text
    assert results["test"]["split"] == "valid"
    assert (out / "best.npz").is_file() and (out / "curves.png").is_file()
    assert json.loads((out / VOCAB).read_text())["tokens"] == load_shakespeare(data_dir).vocab.tokens
    # the curves show what a character model records: loss and bits per character, no empty accuracy panel
    assert [metric for metric, *_ in curve_panels(epochs)] == ["loss", "bpc"]


def test_the_final_log_line_names_the_whole_validation_text(data_dir, tmp_path, capsys):
    train("chars", chars_config(data_dir, tmp_path / "run", epochs=1, verbose=True))
    final = [line for line in capsys.readouterr().err.splitlines() if "best valid epoch" in line]
    assert final and final[0].startswith("whole valid text bpc "), final


def test_each_interval_starts_the_streams_somewhere_else(data_dir):
    from minirec.training.chars import CharTask
    from minirec.training.presets import resolve_config

    task = CharTask(resolve_config("chars", chars_config(data_dir)))
    first = next(task.train_batches(0))[0]
    second = next(task.train_batches(0))[0]
    assert first.shape == (8, 4) and not np.array_equal(first, second)


def test_resume_mid_interval_gives_the_uninterrupted_curve(data_dir, tmp_path):
    straight = train("chars", chars_config(data_dir, tmp_path / "straight"))

    def interrupt(epoch, batch, loss):
        if (epoch, batch) == (2, 3):
            raise KeyboardInterrupt

    out = tmp_path / "interrupted"
    assert train("chars", chars_config(data_dir, out), on_batch=interrupt)["status"] == "interrupted"
    resumed = train("chars", {"out": str(out), "resume": True, "verbose": False})
    assert curve(resumed) == curve(straight) and resumed["test"] == straight["test"]


def test_character_vectors_start_from_a_unit_normal_unless_init_range_is_given(data_dir):
    from minirec.training.chars import CharTask
    from minirec.training.presets import resolve_config

    table = CharTask(resolve_config("chars", chars_config(data_dir, embedding=64))).model.embedding.weight.data
    assert 0.9 < table.std() < 1.1
    ranged = CharTask(resolve_config("chars", chars_config(data_dir, init_range=0.05))).model.embedding.weight.data
    assert np.abs(ranged).max() <= 0.05


def test_a_bidirectional_language_model_is_refused(data_dir):
    with pytest.raises(ValueError, match="bidirectional.*left to right"):
        train("chars", chars_config(data_dir, bidirectional=True))


def test_presets(data_dir):
    from minirec.training.presets import resolve_config

    cpu = resolve_config("chars", {"preset": "cpu"})
    assert {**cpu, "preset": None} == resolve_config("chars", {})  # the defaults are the cpu preset
    paper = resolve_config("chars", {"preset": "paper", "cell": "mingru"})
    assert (paper["layers"], paper["hidden"], paper["cell"]) == (3, 384, "mingru")


def test_minirec_train_chars_through_the_cli(data_dir, tmp_path):
    out = tmp_path / "cli"
    status = main(["train", "chars", "--cell", "sru", "--layers", "1", "--hidden", "8", "--embedding", "8",
                   "--batch-size", "4", "--bptt", "8", "--epochs", "1", "--max-batches", "2", "--data-dir",
                   str(data_dir), "--out", str(out), "--quiet", "--no-progress"])
    assert status == 0
    assert json.loads((out / "results.json").read_text())["config"]["task"] == "chars"


@pytest.mark.skipif(not (REAL_DATA / SHAKESPEARE).is_file(), reason="../shared/data/shakespeare absent")
def test_real_tiny_shakespeare_smoke(tmp_path):
    corpus = load_shakespeare(REAL_DATA, download=False)
    assert len(corpus.vocab) == 65 and len(corpus.train) + len(corpus.valid) == 1_115_394
    assert len(corpus.train) == 1_003_854
    results = train("chars", chars_config(REAL_DATA, tmp_path / "real", epochs=1, max_batches=3, batch_size=8,
                                          bptt=16))
    assert results["status"] == "completed" and results["vocab_size"] == 65
