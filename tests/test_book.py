"""The book (book/, Sphinx + myst-nb) builds with warnings as errors, executing every chapter in
quick mode, and its pages carry the chapter titles, embedded figures and MathJax-ready math.

If Chromium is installed, a chapter page is also opened headless (``--dump-dom``) to check what a
browser sees. Needs the book extra (sphinx, myst-nb, sphinx-book-theme, jupytext, ipykernel);
without it the module is skipped. Marked ``book``: ``pytest -m "not book"`` leaves it out.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

for _module in ("sphinx", "myst_nb", "sphinx_book_theme", "jupytext", "ipykernel"):
    pytest.importorskip(_module, reason="the book test needs the book extra: pip install -e '.[book]'")

pytestmark = pytest.mark.book

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.md"))
BUILD_TIMEOUT_S = 900
BROWSER_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def _title(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    raise AssertionError(f"{path.name} has no '# ' title")


@pytest.fixture(scope="module")
def built_book(tmp_path_factory):
    """Build the book once into a temporary directory (quick mode); return the HTML directory."""
    out = tmp_path_factory.mktemp("book")
    env = dict(os.environ, MINIREC_QUICK="1", MINIREC_BOOK_EXECUTE="force")
    command = [
        sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html",
        "-d", str(out / "doctrees"), str(ROOT / "book"), str(out / "html"),
    ]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, (
        f"sphinx -W failed (exit {proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    )
    print(f"book built in {elapsed:.1f} s")
    return out / "html"


def test_book_pages(built_book):
    assert CHAPTERS
    index = (built_book / "index.html").read_text(encoding="utf-8")
    for chapter in CHAPTERS:
        page_path = built_book / "chapters" / f"{chapter.stem}.html"
        assert page_path.exists(), f"no page for {chapter.name}"
        page = html.unescape(page_path.read_text(encoding="utf-8"))
        title = _title(chapter)
        assert title in page, f"{chapter.name}: title {title!r} missing"
        assert f"chapters/{chapter.stem}.html" in index, f"{chapter.name} is not in the table of contents"
        images = re.findall(r'<img[^>]*src="([^"]+\.(?:png|svg))"', page)
        assert images, f"{chapter.name}: no figure embedded"
        for src in images:
            assert (page_path.parent / src).resolve().is_file(), f"{chapter.name}: figure {src} not in the build"
        # MathJax-ready markup: math nodes wrapped for MathJax, and MathJax loaded by the page
        assert 'class="math notranslate nohighlight"' in page, f"{chapter.name}: no math markup"
        assert re.search(r"<script[^>]+mathjax", page, re.IGNORECASE), f"{chapter.name}: MathJax not loaded"


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (apt-get install chromium)")
def test_book_in_headless_chromium(built_book, tmp_path):
    chapter = next((p for p in CHAPTERS if p.stem.startswith("06_")), CHAPTERS[0])
    page = built_book / "chapters" / f"{chapter.stem}.html"
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    command = ["chromium", *BROWSER_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=10000",
               "--dump-dom", page.as_uri()]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dom = html.unescape(proc.stdout)
    title = _title(chapter)
    assert re.search(r"<h1[^>]*>\s*" + re.escape(title), dom), f"the browser does not show the title {title!r}"
    images = re.findall(r'<img[^>]*src="([^"]+\.(?:png|svg))"', dom)
    assert images, "the browser shows no figure"
    assert all((page.parent / src).resolve().is_file() for src in images)
    # A MathJax served with the book (sphinx-mathjax-offline, or MINIREC_MATHJAX_PATH) works offline:
    # the browser must have typeset the math. (From a CDN it depends on the network: not checked.)
    source = page.read_text(encoding="utf-8")
    local = re.search(r'<script[^>]+src="(?!https?:|//)[^"]*mathjax[^"]*"', source, re.IGNORECASE)
    if local or os.environ.get("MINIREC_MATHJAX_PATH"):
        assert "<mjx-container" in dom, "MathJax did not typeset the page"
