"""Every chapter (chapters/NN_*.md, jupytext MyST notebooks) runs top to bottom in quick mode.

Each chapter checks its own derivations with asserts in code cells, so executing it is the test:
any cell error fails. Run with the book extra installed (jupytext, nbclient, ipykernel); without
it the module is skipped. MINIREC_QUICK=1 selects the small sizes; the kernel runs in chapters/
and imports minirec from this checkout.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext", reason="chapter tests need the book extra: pip install -e '.[book]'")
nbclient = pytest.importorskip("nbclient", reason="chapter tests need the book extra: pip install -e '.[book]'")
pytest.importorskip("ipykernel", reason="chapter tests need the book extra: pip install -e '.[book]'")

ROOT = Path(__file__).resolve().parent.parent
CHAPTER_DIR = ROOT / "chapters"
CHAPTERS = sorted(CHAPTER_DIR.glob("[0-9][0-9]_*.md"))
CELL_TIMEOUT_S = 300


def _title(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    raise AssertionError(f"{path.name} has no '# ' title")


def test_there_are_chapters():
    names = {p.name for p in CHAPTERS}
    assert {"01_autograd.md", "06_scans.md"} <= names, names


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_is_a_jupytext_notebook(path):
    notebook = jupytext.read(path)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    assert notebook.metadata["jupytext"]["text_representation"]["format_name"] == "myst"
    assert any(c.cell_type == "code" for c in notebook.cells)
    assert _title(path)


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_runs_in_quick_mode(path, monkeypatch):
    monkeypatch.setenv("MINIREC_QUICK", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    notebook = jupytext.read(path)
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(CHAPTER_DIR)}},
    )
    start = time.perf_counter()
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as error:
        pytest.fail(f"{path.name}: a cell failed in quick mode:\n{error}", pytrace=False)
    elapsed = time.perf_counter() - start
    figures = sum(
        1
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if {"image/png", "image/svg+xml"} & set(output.get("data", {}))
    )
    assert figures >= 1, f"{path.name} produced no figure"
    print(f"{path.name}: {elapsed:.1f} s in quick mode, {figures} figure(s)")
