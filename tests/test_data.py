"""Tests for minirec.data: vocabulary, PTB, SST, batching and checksummed downloads.

Unit tests write tiny corpora to ``tmp_path`` and register them (sha256, ``file://`` URL)
in place of the real ones; nothing is downloaded from the network. Tests on the real
corpora read ``../shared/data`` beside the project and are skipped when it is absent.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minirec.data import (
    DataError,
    Vocab,
    batchify,
    bptt_batches,
    bucket_batches,
    cache_dir,
    load_ptb,
    load_sst,
    locate,
    n_windows,
    read_ptb_file,
    read_ptb_tokens,
    read_sst_file,
)
from minirec.data import download as download_module
from minirec.data.sst import SSTBatches

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

PTB_FILES = {
    "ptb/train.txt": " the cat sat on the mat \n the dog <unk> \n",
    "ptb/valid.txt": " the cat ran \n",
    "ptb/test.txt": " a dog sat \n",
}

SST_FILES = {
    "sst/binary.train.txt": "1 a good film .\n0 a bad film .\n1 good good fun\n",
    "sst/binary.dev.txt": "0 bad .\n",
    "sst/binary.test.txt": "1 a great film\n",
}


# --------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """Every test gets its own empty cache and no MINIREC_DATA."""
    monkeypatch.setenv("MINIREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MINIREC_DATA", raising=False)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def write_files(root: Path, files: dict[str, str]) -> None:
    for relpath, text in files.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode())


def register(monkeypatch, files: dict[str, str], url_root: Path) -> None:
    """Make ``files`` the known corpus files, downloadable from ``url_root``."""
    for relpath, text in files.items():
        monkeypatch.setitem(download_module.SHA256, relpath, sha256_text(text))
        monkeypatch.setitem(download_module.URLS, relpath, (url_root / relpath).as_uri())


def files_under(directory: Path) -> list[Path]:
    """Every file (hidden temporary files included) below ``directory``."""
    return sorted(p for p in directory.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- vocab


def test_vocab_orders_by_frequency_then_alphabetically():
    vocab = Vocab.from_tokens(["b", "a", "c", "b", "c", "d", "c"])
    assert vocab.tokens == ["c", "b", "a", "d"]  # c:3, b:2, then a, d (1 each) by name
    assert len(vocab) == 4
    assert Vocab.from_tokens(reversed(["b", "a", "c", "b", "c", "d", "c"])) == vocab


def test_vocab_specials_come_first_and_are_not_repeated():
    vocab = Vocab.from_tokens(["x", "y", "<unk>", "y"], specials=("<pad>", "<unk>"))
    assert vocab.tokens == ["<pad>", "<unk>", "y", "x"]


def test_vocab_min_freq_and_max_size():
    tokens = ["a", "a", "a", "b", "b", "c"]
    assert Vocab.from_tokens(tokens, min_freq=2).tokens == ["a", "b"]
    assert Vocab.from_tokens(tokens, specials=("<unk>",), max_size=2).tokens == [
        "<unk>",
        "a",
    ]
    with pytest.raises(ValueError):
        Vocab.from_tokens(tokens, specials=("<pad>", "<unk>"), max_size=1)


def test_vocab_encode_decode_round_trip():
    vocab = Vocab(["<unk>", "the", "cat"])
    ids = vocab.encode(["the", "cat", "dog"])
    assert ids.dtype == np.int64
    assert ids.tolist() == [1, 2, 0]  # "dog" falls back to <unk>
    assert vocab.decode(ids) == ["the", "cat", "<unk>"]
    with pytest.raises(IndexError):
        vocab.decode([3])
    with pytest.raises(IndexError):
        vocab.decode([-1])


def test_vocab_without_unk_rejects_unknown_tokens_by_name():
    vocab = Vocab(["the", "cat"])
    with pytest.raises(KeyError, match="dog"):
        vocab.encode(["the", "dog"])


def test_vocab_rejects_repeated_tokens():
    with pytest.raises(ValueError, match="repeat"):
        Vocab(["a", "b", "a"])


def test_vocab_to_dict_round_trips_through_json():
    vocab = Vocab.from_tokens(["to", "be", "or", "not", "to", "be"], specials=("<unk>",))
    restored = Vocab.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert restored == vocab
    assert restored.unk_id == 0
    assert restored.encode(["be", "?"]).tolist() == vocab.encode(["be", "?"]).tolist()


# --------------------------------------------------------------------------- PTB


def test_read_ptb_appends_eos_to_every_line(tmp_path):
    write_files(tmp_path, PTB_FILES)
    tokens = read_ptb_tokens(tmp_path / "ptb/train.txt")
    expected = ["the", "cat", "sat", "on", "the", "mat", "<eos>"]
    assert tokens == expected + ["the", "dog", "<unk>", "<eos>"]
    vocab = Vocab.from_tokens(tokens)
    ids = read_ptb_file(tmp_path / "ptb/valid.txt", vocab)
    assert vocab.decode(ids) == ["the", "cat", "<unk>", "<eos>"]  # "ran" is unknown


def test_load_ptb_from_a_local_directory(tmp_path, monkeypatch):
    write_files(tmp_path / "data", PTB_FILES)
    register(monkeypatch, PTB_FILES, url_root=tmp_path / "nowhere")
    corpus = load_ptb(data_dir=tmp_path / "data", download=False)
    # the: 3, <eos>: 2, then the words seen once, by name ("<" sorts before "a")
    assert corpus.vocab.tokens[:3] == ["the", "<eos>", "<unk>"]
    assert len(corpus.train) == 11
    assert corpus.train.dtype == np.int64 and corpus.train.ndim == 1
    assert corpus.vocab.decode(corpus.test) == ["<unk>", "dog", "sat", "<eos>"]


def test_batchify_makes_contiguous_time_major_streams():
    ids = np.arange(23)
    data = batchify(ids, batch_size=4)
    assert data.shape == (5, 4)  # 23 // 4 = 5 steps; the last 3 ids are dropped
    assert data.dtype == np.int64 and data.flags.c_contiguous
    for b in range(4):
        np.testing.assert_array_equal(data[:, b], ids[b * 5 : (b + 1) * 5])
    with pytest.raises(ValueError):
        batchify(np.arange(3), batch_size=4)
    with pytest.raises(ValueError):
        batchify(np.arange(3), batch_size=0)
    with pytest.raises(TypeError, match="integer token ids, got dtype float64"):
        batchify(np.arange(8.0), batch_size=2)  # not silently truncated to ids


def test_bptt_windows_have_targets_shifted_by_one():
    data = batchify(np.arange(40), batch_size=2)  # (20, 2)
    windows = list(bptt_batches(data, bptt=6))
    assert [len(inputs) for inputs, _ in windows] == [6, 6, 6, 1]
    assert len(windows) == n_windows(data, 6)
    for inputs, targets in windows:
        assert inputs.shape == targets.shape
        np.testing.assert_array_equal(targets, inputs + 1)  # the next id in each stream
    np.testing.assert_array_equal(np.concatenate([i for i, _ in windows]), data[:-1])
    np.testing.assert_array_equal(np.concatenate([t for _, t in windows]), data[1:])


@settings(max_examples=50, deadline=None)
@given(
    n_ids=st.integers(1, 200),
    batch_size=st.integers(1, 8),
    bptt=st.integers(1, 30),
)
def test_bptt_windows_cover_every_prediction_once(n_ids, batch_size, bptt):
    if n_ids < batch_size:
        return
    data = batchify(np.arange(n_ids), batch_size)
    windows = list(bptt_batches(data, bptt))
    assert len(windows) == n_windows(data, bptt)
    assert sum(len(inputs) for inputs, _ in windows) == len(data) - 1
    assert all(1 <= len(inputs) <= bptt for inputs, _ in windows)
    if windows:  # in order, each step once: the inputs are the stream, the targets the stream shifted
        np.testing.assert_array_equal(np.concatenate([inputs for inputs, _ in windows]), data[:-1])
        np.testing.assert_array_equal(np.concatenate([targets for _, targets in windows]), data[1:])


# --------------------------------------------------------------------------- SST


def test_read_sst_file_parses_labels_and_tokens(tmp_path):
    write_files(tmp_path, SST_FILES)
    sentences = read_sst_file(tmp_path / "sst/binary.train.txt", num_classes=2)
    assert sentences[0] == (["a", "good", "film", "."], 1)
    assert [label for _, label in sentences] == [1, 0, 1]


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ("1\n", "LABEL sentence"),
        ("x good film\n", "not an integer"),
        ("7 ok\n", "0..1"),
    ],
)
def test_malformed_sst_line_names_file_and_line(tmp_path, bad_line, message):
    path = tmp_path / "bad.txt"
    path.write_text("1 fine line\n\n0 another line\n" + bad_line)
    with pytest.raises(DataError, match=message) as error:
        read_sst_file(path, num_classes=2)
    assert str(path) in str(error.value)
    assert "line 4" in str(error.value)  # the blank line 2 is skipped but still counted


def test_load_sst_builds_vocab_with_pad_and_unk(tmp_path, monkeypatch):
    write_files(tmp_path / "data", SST_FILES)
    register(monkeypatch, SST_FILES, url_root=tmp_path / "nowhere")
    corpus = load_sst("binary", data_dir=tmp_path / "data", download=False)
    vocab = corpus.vocab
    assert vocab.tokens[:2] == ["<pad>", "<unk>"]
    assert vocab.tokens[2:6] == ["good", ".", "a", "film"]  # 3, then 2 each by name
    assert corpus.num_classes == 2
    assert [label for _, label in corpus.train] == [1, 0, 1]
    ids, label = corpus.test[0]
    assert vocab.decode(ids) == ["a", "<unk>", "film"] and label == 1

    small = load_sst("binary", data_dir=tmp_path / "data", download=False, max_vocab=4)
    assert small.vocab.tokens == ["<pad>", "<unk>", "good", "."]
    with pytest.raises(ValueError):
        load_sst("medium", data_dir=tmp_path / "data")


def make_examples(lengths, seed=0):
    """Examples whose every token is the example's number + 1, so a batch names them."""
    rng = np.random.default_rng(seed)
    return [(np.full(length, i + 1, dtype=np.int64), int(rng.integers(0, 5))) for i, length in enumerate(lengths)]


def check_batch(batch, examples, pad_id):
    """The batch's tokens, mask, lengths and labels agree; returns its example numbers."""
    tokens, mask, labels, lengths = batch
    n_steps, batch_size = tokens.shape
    assert tokens.dtype == np.int64 and mask.dtype == bool
    assert mask.shape == tokens.shape and labels.shape == lengths.shape == (batch_size,)
    assert n_steps == lengths.max()
    np.testing.assert_array_equal(mask.sum(axis=0), lengths)
    assert np.all(tokens[~mask] == pad_id)
    numbers = []
    for b in range(batch_size):
        assert mask[: lengths[b], b].all()  # real tokens first, then padding
        number = int(tokens[0, b]) - 1
        ids, label = examples[number]
        np.testing.assert_array_equal(tokens[: lengths[b], b], ids)
        assert labels[b] == label
        numbers.append(number)
    return numbers


def test_bucket_batches_are_consistent_and_cover_each_example_once():
    rng = np.random.default_rng(1)
    examples = make_examples(rng.integers(1, 30, size=103))
    batches = list(bucket_batches(examples, 8, shuffle=True, rng=np.random.default_rng(7), pad_id=-1))
    assert len(batches) == 13  # ceil(103 / 8)
    seen = [n for batch in batches for n in check_batch(batch, examples, pad_id=-1)]
    assert sorted(seen) == list(range(103))


@pytest.mark.parametrize("batch_size, pool_batches, name", [(0, 50, "batch_size"), (4, 0, "pool_batches"),
                                                           (4, -1, "pool_batches")])
def test_bad_batch_sizes_are_refused_by_name(batch_size, pool_batches, name):
    examples = make_examples([3, 1, 2, 5])
    with pytest.raises(ValueError, match=f"{name} must be at least 1"):
        list(bucket_batches(examples, batch_size, shuffle=False, pool_batches=pool_batches))
    with pytest.raises(ValueError, match=f"{name} must be at least 1"):
        SSTBatches(examples, batch_size, pool_batches=pool_batches)


def test_bucket_batches_group_similar_lengths():
    lengths = np.random.default_rng(2).integers(1, 50, size=200)
    examples = make_examples(lengths)
    batches = list(bucket_batches(examples, 10, shuffle=False, pool_batches=50))
    # One pool holds everything: without shuffling, batches come sorted by length.
    batch_lengths = [batch.lengths for batch in batches]
    np.testing.assert_array_equal(np.concatenate(batch_lengths), np.sort(lengths))
    padding = sum(int((~batch.mask).sum()) for batch in batches)
    assert padding < 0.1 * lengths.sum()


def test_bucket_batches_are_deterministic_given_a_generator():
    examples = make_examples(np.random.default_rng(3).integers(1, 20, size=60))

    def epoch(seed):
        batches = bucket_batches(examples, 4, True, rng=np.random.default_rng(seed))
        return [batch.tokens.tolist() for batch in batches]

    assert epoch(5) == epoch(5)
    assert epoch(5) != epoch(6)


def test_sst_batches_iterates_one_epoch_per_loop():
    examples = make_examples(np.random.default_rng(4).integers(1, 20, size=45))
    loader = SSTBatches(examples, 4, shuffle=True, rng=np.random.default_rng(0))
    first, second = list(loader), list(loader)
    assert len(first) == len(second) == len(loader) == 12
    assert [b.tokens.tolist() for b in first] != [b.tokens.tolist() for b in second]
    again = SSTBatches(examples, 4, shuffle=True, rng=np.random.default_rng(0))
    assert [b.tokens.tolist() for b in again] == [b.tokens.tolist() for b in first]


@settings(max_examples=50, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 12), min_size=1, max_size=60),
    batch_size=st.integers(1, 9),
    pool_batches=st.integers(1, 4),
    shuffle=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_bucket_batches_property(lengths, batch_size, pool_batches, shuffle, seed):
    examples = make_examples(lengths, seed)
    loader = SSTBatches(examples, batch_size, shuffle, np.random.default_rng(seed), 0, pool_batches)
    batches = list(loader)
    assert len(batches) == len(loader)
    seen = [n for batch in batches for n in check_batch(batch, examples, pad_id=0)]
    assert sorted(seen) == list(range(len(examples)))


# --------------------------------------------------------------------------- download


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("MINIREC_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "minirec"


def test_download_from_file_url_into_the_cache(tmp_path, monkeypatch):
    write_files(tmp_path / "remote", PTB_FILES)
    register(monkeypatch, PTB_FILES, url_root=tmp_path / "remote")
    path = locate("ptb/train.txt")
    assert path == tmp_path / "cache" / "ptb" / "train.txt"
    assert path.read_text() == PTB_FILES["ptb/train.txt"]
    assert files_under(tmp_path / "cache") == [path]  # no temporary file left

    (tmp_path / "remote" / "ptb" / "train.txt").unlink()  # now "offline"
    assert locate("ptb/train.txt") == path  # served from the cache

    corpus = load_ptb()  # downloads valid and test too
    assert len(corpus.train) == 11
    assert len(files_under(tmp_path / "cache")) == 3


def test_bad_download_checksum_leaves_nothing_behind(tmp_path, monkeypatch):
    write_files(tmp_path / "remote", PTB_FILES)
    register(monkeypatch, PTB_FILES, url_root=tmp_path / "remote")
    expected = "0" * 64
    monkeypatch.setitem(download_module.SHA256, "ptb/train.txt", expected)
    with pytest.raises(DataError) as error:
        locate("ptb/train.txt")
    message = str(error.value)
    assert expected in message
    assert sha256_text(PTB_FILES["ptb/train.txt"]) in message
    assert (tmp_path / "remote" / "ptb" / "train.txt").as_uri() in message
    assert files_under(tmp_path / "cache") == []


def test_offline_error_says_where_to_put_the_files(tmp_path, monkeypatch):
    register(monkeypatch, PTB_FILES, url_root=tmp_path / "unreachable")
    data_dir = tmp_path / "mydata"
    with pytest.raises(DataError) as error:
        locate("ptb/valid.txt", data_dir=data_dir)
    message = str(error.value)
    assert str(data_dir / "ptb" / "valid.txt") in message
    assert str(tmp_path / "cache" / "ptb" / "valid.txt") in message
    for relpath in PTB_FILES:
        assert f"DIR/{relpath}" in message
    assert "--data-dir" in message and "MINIREC_DATA" in message
    assert download_module.URLS["ptb/valid.txt"] in message
    assert files_under(tmp_path / "cache") == []


def test_missing_file_without_download_is_a_data_error(tmp_path, monkeypatch):
    write_files(tmp_path / "remote", PTB_FILES)
    register(monkeypatch, PTB_FILES, url_root=tmp_path / "remote")
    with pytest.raises(DataError, match="downloading is disabled"):
        locate("ptb/test.txt", download=False)
    assert not (tmp_path / "cache").exists()


def test_local_copy_is_used_without_download(tmp_path, monkeypatch):
    write_files(tmp_path / "mydata", PTB_FILES)
    register(monkeypatch, PTB_FILES, url_root=tmp_path / "unreachable")
    path = locate("ptb/train.txt", data_dir=tmp_path / "mydata")
    assert path == tmp_path / "mydata" / "ptb" / "train.txt"

    monkeypatch.setenv("MINIREC_DATA", str(tmp_path / "mydata"))
    assert locate("ptb/test.txt") == tmp_path / "mydata" / "ptb" / "test.txt"
    assert not (tmp_path / "cache").exists()


def test_data_dir_argument_comes_before_minirec_data(tmp_path, monkeypatch):
    write_files(tmp_path / "first", PTB_FILES)
    write_files(tmp_path / "second", PTB_FILES)
    register(monkeypatch, PTB_FILES, url_root=tmp_path / "unreachable")
    monkeypatch.setenv("MINIREC_DATA", str(tmp_path / "second"))
    assert locate("ptb/train.txt", data_dir=tmp_path / "first").is_relative_to(tmp_path / "first")


def test_wrong_local_copy_is_reported_and_kept(tmp_path, monkeypatch):
    write_files(tmp_path / "mydata", {"ptb/train.txt": "something else\n"})
    register(monkeypatch, PTB_FILES, url_root=tmp_path / "unreachable")
    local = tmp_path / "mydata" / "ptb" / "train.txt"
    with pytest.raises(DataError) as error:
        locate("ptb/train.txt", data_dir=tmp_path / "mydata")
    message = str(error.value)
    assert str(local) in message
    assert sha256_text(PTB_FILES["ptb/train.txt"]) in message  # expected
    assert sha256_text("something else\n") in message  # actual
    assert local.exists()


def test_damaged_cache_file_is_downloaded_again(tmp_path, monkeypatch):
    write_files(tmp_path / "remote", PTB_FILES)
    register(monkeypatch, PTB_FILES, url_root=tmp_path / "remote")
    write_files(tmp_path / "cache", {"ptb/train.txt": "truncated"})
    with pytest.raises(DataError, match="checksum"):
        locate("ptb/train.txt", download=False)
    path = locate("ptb/train.txt")
    assert path.read_text() == PTB_FILES["ptb/train.txt"]


def test_download_gets_the_permissions_of_an_ordinary_new_file(tmp_path, monkeypatch):
    # mkstemp's private 0600 would lock other users out of a shared cache.
    write_files(tmp_path / "remote", PTB_FILES)
    register(monkeypatch, PTB_FILES, url_root=tmp_path / "remote")
    previous = os.umask(0o022)
    try:
        path = locate("ptb/train.txt")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_unwritable_cache_is_a_data_error_that_says_where_to_put_the_files(tmp_path, monkeypatch):
    register(monkeypatch, PTB_FILES, url_root=tmp_path / "remote")
    (tmp_path / "a-file").write_text("not a directory")
    monkeypatch.setenv("MINIREC_CACHE", str(tmp_path / "a-file"))
    with pytest.raises(DataError) as error:
        locate("ptb/train.txt")
    message = str(error.value)
    assert "cannot write to the cache" in message and "MINIREC_CACHE" in message
    assert "--data-dir" in message


def test_connection_dropped_mid_download_is_a_data_error(tmp_path, monkeypatch):
    register(monkeypatch, PTB_FILES, url_root=tmp_path / "remote")

    class DroppedResponse(io.BytesIO):
        def read(self, size=-1):
            raise http.client.IncompleteRead(b"the cat", 100)

    monkeypatch.setattr(download_module.urllib.request, "urlopen", lambda url, timeout: DroppedResponse())
    with pytest.raises(DataError, match="IncompleteRead"):
        locate("ptb/train.txt")
    assert files_under(tmp_path / "cache") == []


def test_damaged_cache_file_is_replaced_not_deleted_first(tmp_path, monkeypatch):
    # Two runs may meet the same damaged file; neither deletes it, the verified download
    # replaces it, so neither can trip over the other's unlink.
    register(monkeypatch, PTB_FILES, url_root=tmp_path / "unreachable")
    write_files(tmp_path / "cache", {"ptb/train.txt": "truncated"})
    with pytest.raises(DataError, match="not found and not downloaded"):
        locate("ptb/train.txt")
    assert (tmp_path / "cache" / "ptb" / "train.txt").read_text() == "truncated"


def test_unreadable_local_copy_is_a_data_error(tmp_path, monkeypatch):
    # e.g. another user's file in a shared directory (root, who runs CI, can read anything,
    # so the permission error is simulated).
    write_files(tmp_path / "mydata", PTB_FILES)
    register(monkeypatch, PTB_FILES, url_root=tmp_path / "unreachable")

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(download_module, "open", refuse, raising=False)
    with pytest.raises(DataError, match="cannot read .*Permission denied"):
        locate("ptb/train.txt", data_dir=tmp_path / "mydata")


def test_files_that_are_not_utf8_are_named(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("1 un film très bon\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8") as error:
        read_sst_file(path)
    assert str(path) in str(error.value)
    with pytest.raises(DataError, match="not UTF-8"):
        read_ptb_tokens(path)


def test_unknown_file_is_a_data_error():
    with pytest.raises(DataError, match="unknown corpus file"):
        locate("ptb/train.csv")


# --------------------------------------------------------------------------- real data

needs_real_data = pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"real corpora not found at {REAL_DATA}")


@needs_real_data
def test_real_ptb():
    corpus = load_ptb(data_dir=REAL_DATA, download=False)
    assert len(corpus.train) == 929_589
    assert len(corpus.vocab) == 10_000
    assert "<unk>" in corpus.vocab and "<eos>" in corpus.vocab
    assert corpus.vocab.tokens[0] == "the"  # the most frequent word
    assert len(corpus.valid) == 73_760 and len(corpus.test) == 82_430


@needs_real_data
def test_real_sst_binary():
    corpus = load_sst("binary", data_dir=REAL_DATA, download=False)
    assert len(corpus.train) == 6_920
    assert (len(corpus.dev), len(corpus.test)) == (872, 1_821)
    assert {label for _, label in corpus.train} == {0, 1}
    assert corpus.vocab.tokens[:2] == ["<pad>", "<unk>"]


@needs_real_data
def test_real_sst_fine():
    corpus = load_sst("fine", data_dir=REAL_DATA, download=False)
    assert len(corpus.train) == 8_544
    labels = {label for split in (corpus.train, corpus.dev, corpus.test) for _, label in split}
    assert labels == {0, 1, 2, 3, 4}
