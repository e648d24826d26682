"""Shared fixtures: the array backends every op and cell test runs on, and the tiny corpora
the training tests write themselves (`write_corpus`, ``isolated_cache``, ``ptb_dir``).

``xp`` is NumPy always, and CuPy when a real GPU is usable (those cases carry the ``cuda``
marker, so `pytest -m cuda` on the GPU machine selects exactly them).
"""

import hashlib
import random

import numpy as np
import pytest

from minirec import backend
from minirec.data import download


def _backends():
    params = [pytest.param(np, id="numpy")]
    if backend.cuda_available():
        params.append(pytest.param(backend._cupy(), id="cupy", marks=pytest.mark.cuda))
    else:
        params.append(pytest.param(None, id="cupy", marks=[pytest.mark.cuda, pytest.mark.skip(reason="no usable GPU")]))
    return params


@pytest.fixture(params=_backends())
def xp(request):
    return request.param


@pytest.fixture(autouse=True)
def _seeded():
    backend.manual_seed(0)
    yield
    backend.set_default_dtype(np.float32)


# ---- tiny corpora ---------------------------------------------------------------------------------
def write_corpus(monkeypatch, root, files):
    """Write each ``relpath: text`` under ``root`` and register its sha256, as a download would be."""
    for relpath, text in files.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        monkeypatch.setitem(download.SHA256, relpath, hashlib.sha256(text.encode()).hexdigest())


def ptb_lines(rng, n, words):
    return "".join(" " + " ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) + " \n" for _ in range(n))


@pytest.fixture
def isolated_cache(monkeypatch, tmp_path):
    """No download cache or MINIREC_DATA of the machine reaches the test."""
    monkeypatch.setenv("MINIREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MINIREC_DATA", raising=False)


@pytest.fixture
def ptb_dir(tmp_path, monkeypatch):
    """A PTB of 84 lines over 40 words, in tmp_path/data."""
    rng = random.Random(0)
    words = [f"w{i}" for i in range(40)]
    root = tmp_path / "data"
    write_corpus(monkeypatch, root, {
        "ptb/train.txt": ptb_lines(rng, 60, words),
        "ptb/valid.txt": ptb_lines(rng, 12, words),
        "ptb/test.txt": ptb_lines(rng, 12, words),
    })
    return root
