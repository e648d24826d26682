"""Every chapter (chapters/NN_*.md, jupytext MyST notebooks) runs top to bottom in quick mode and
follows the book's structural rules.

Each chapter checks its own derivations with asserts in code cells, so executing it is the test:
any cell error fails. Run with the book extra installed (jupytext, nbclient, ipykernel); without
it the module is skipped. MINIREC_QUICK=1 selects the small sizes; the kernel runs in chapters/
and imports minirec from this checkout. Each chapter is executed once per session and shared by
the tests that need its outputs.

The structural rules, checked for every chapter that exists:

* a teaching chapter (every chapter but the preface ``00_*`` and the appendices ``9N_*``) has a
  ``## Summary`` section, a ``## Exercises`` section with at least 3 folded solutions
  (``{dropdown}`` directives inside that section) and a ``## References`` section, and draws at
  least one figure;
* in every chapter, no line of code in a code cell is longer than 88 characters;
* no chapter uses the project-management words "the issue" or "the specification";
* every code cell that outputs a figure has a numbered caption
  (cell metadata ``mystnb: figure: caption: ...``).
"""

from __future__ import annotations

import functools
import os
import re
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
MAX_CODE_LINE = 88
FORBIDDEN_WORDS = ("the issue", "the specification")
MIN_EXERCISES = 3
FIGURE_MIMES = {"image/png", "image/svg+xml"}
# Chapters written before the structural rules, each being rewritten on its own branch: their
# structure test is expected to fail (strict: once a chapter passes, remove it from this set).
RESTYLE_PENDING: set[str] = set()


def _title(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    raise AssertionError(f"{path.name} has no '# ' title")


def is_teaching_chapter(path: Path) -> bool:
    """The preface (00) and the appendices (90-99) have no summary, exercises or figure."""
    return not (path.stem.startswith("00_") or path.stem.startswith("9"))


def _sections(notebook) -> dict[str, str]:
    """The Markdown text under each '## ' heading, up to the next '## ' (code cells left out)."""
    sections, current = {}, None
    for cell in notebook.cells:
        if cell.cell_type != "markdown":
            continue
        for line in cell.source.splitlines():
            if line.startswith("## "):
                current = line[3:].strip()
                sections[current] = ""
            elif current is not None:
                sections[current] += line + "\n"
    return sections


def structure_problems(path: Path) -> list[str]:
    """What in the chapter's text breaks the structural rules of the module docstring."""
    notebook = jupytext.read(path)
    problems = []
    if is_teaching_chapter(path):
        sections = _sections(notebook)
        for heading in ("Summary", "Exercises", "References"):
            if heading not in sections:
                problems.append(f"no '## {heading}' section")
        solutions = len(re.findall(r"\{dropdown\}", sections.get("Exercises", "")))
        if "Exercises" in sections and solutions < MIN_EXERCISES:
            problems.append(f"'## Exercises' has {solutions} folded solution(s), fewer than {MIN_EXERCISES}")
    for number, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            for line in cell.source.splitlines():
                if len(line) > MAX_CODE_LINE:
                    problems.append(f"code cell {number}: a line of {len(line)} characters: {line[:60]}...")
    text = path.read_text(encoding="utf-8").lower()
    for words in FORBIDDEN_WORDS:
        for match in re.finditer(rf"\b{words}\b", text):
            line = text.count("\n", 0, match.start()) + 1
            problems.append(f"line {line}: {words!r}")
    return problems


@functools.cache
def executed(path: Path):
    """The chapter run top to bottom in quick mode, once per session: (notebook, seconds)."""
    env = {"MINIREC_QUICK": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)     # the kernel inherits the environment of this process
    try:
        notebook = jupytext.read(path)
        client = nbclient.NotebookClient(
            notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
            resources={"metadata": {"path": str(CHAPTER_DIR)}},
        )
        start = time.perf_counter()
        try:
            client.execute()
        except nbclient.exceptions.CellExecutionError as error:
            pytest.fail(f"{path.name}: a cell failed in quick mode:\n{error}", pytrace=False)
        return notebook, time.perf_counter() - start
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def figure_cells(notebook):
    """The code cells that output a figure."""
    return [cell for cell in notebook.cells if cell.cell_type == "code"
            and any(FIGURE_MIMES & set(output.get("data", {})) for output in cell.get("outputs", []))]


def _chapter_params(pending=frozenset()):
    reason = "written before the structural rules; being restyled on its own branch"
    pending_mark = pytest.mark.xfail(strict=True, reason=reason)
    return [pytest.param(p, id=p.stem, marks=[pending_mark] if p.stem in pending else []) for p in CHAPTERS]


def test_there_are_chapters():
    names = {p.name for p in CHAPTERS}
    assert {"01_autograd.md", "06_scans.md"} <= names, names


@pytest.mark.parametrize("path", _chapter_params())
def test_chapter_is_a_jupytext_notebook(path):
    notebook = jupytext.read(path)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    assert notebook.metadata["jupytext"]["text_representation"]["format_name"] == "myst"
    if is_teaching_chapter(path):
        assert any(c.cell_type == "code" for c in notebook.cells)
    assert _title(path)


@pytest.mark.parametrize("path", _chapter_params(RESTYLE_PENDING))
def test_chapter_structure(path):
    problems = structure_problems(path)
    assert not problems, f"{path.name}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("path", _chapter_params())
def test_chapter_runs_in_quick_mode(path):
    notebook, elapsed = executed(path)
    figures = figure_cells(notebook)
    if is_teaching_chapter(path):
        assert figures, f"{path.name} produced no figure"
    print(f"{path.name}: {elapsed:.1f} s in quick mode, {len(figures)} figure cell(s)")


@pytest.mark.parametrize("path", _chapter_params(RESTYLE_PENDING))
def test_every_figure_has_a_caption(path):
    notebook, _ = executed(path)
    uncaptioned = [cell.source.splitlines()[0] if cell.source else "(empty)" for cell in figure_cells(notebook)
                   if not cell.metadata.get("mystnb", {}).get("figure", {}).get("caption")]
    assert not uncaptioned, f"{path.name}: figure cells without a caption, starting:\n  " + "\n  ".join(uncaptioned)


def test_glue_hands_python_numbers_to_myst_nb(monkeypatch):
    # a NumPy scalar would be shown as np.float64(...) and break `{glue:text}` format specs
    import importlib.util

    import numpy as np

    spec = importlib.util.spec_from_file_location("_book", CHAPTER_DIR / "_book.py")
    book = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(book)
    seen = []
    monkeypatch.setattr(book, "_myst_glue", lambda name, value, display=True: seen.append(value) or value)
    book.glue("x", np.float64(0.25), display=False)
    book.glue("n", np.int64(3), display=False)
    book.glue("a", np.arange(3), display=False)
    assert [type(v) for v in seen] == [float, int, np.ndarray] and seen[:2] == [0.25, 3]
