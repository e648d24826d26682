"""The book (book/, Sphinx + myst-nb) builds with warnings as errors, executing every chapter in
quick mode, and what a reader sees in a browser is right.

The build happens once per session (4 to 6 minutes on the shared two-core machine). Then:

* every chapter has a page with its title, listed in the table of contents; a teaching chapter
  (not the preface 00 or an appendix 9N) embeds its figures (myst-nb writes a figure output,
  PNG or SVG, to ``_images/`` and embeds it as ``<img>``) and carries MathJax-ready math;
* if Chromium is installed, every chapter page is opened headless at 1280 px with a script
  added that waits for the page and MathJax to finish, then measures and writes its verdict
  into the page, read back with ``--dump-dom``. It checks that every math node was typeset
  (an ``<mjx-container>`` inside it), that every figure fits the text column (its rendered
  width, and its natural width within MAX_SHRINK of it: a figure drawn wider than the column
  is shrunk, its text with it), and that no code cell scrolls sideways
  (``scrollWidth <= clientWidth`` for every ``pre``).

Needs the book extra (sphinx, myst-nb, sphinx-book-theme, jupytext, ipykernel); without it the
module is skipped. Marked ``book``: ``pytest -m "not book"`` leaves it out.
"""

from __future__ import annotations

import html
import json
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
BROWSER_TIMEOUT_S = 120
WINDOW = "1280,2000"
BROWSER_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
FIGURE = re.compile(r'<img[^>]*src="([^"]+\.(?:png|svg))"')
VERDICT_ID = "minirec-verdict"
# A figure drawn at 7 inches (672 px, chapters/_book.py) is shrunk a little to the 1280 px
# window's column, its 12 pt text to about 11.5 pt; a wider figure is shrunk more.
MAX_SHRINK = 1.05
# Chapters written before the book's rules, each being rewritten on its own branch: their page
# check is expected to fail (strict: once a page passes, remove it from this set).
RESTYLE_PENDING: set[str] = set()
# Added to a copy of a page: once the page and MathJax are done, measure what the reader sees.
MEASURE_SCRIPT = """
<script>
window.addEventListener("load", function () {
  function measure(mathjax) {
    var article = document.querySelector("article.bd-article") || document.querySelector("main");
    var style = getComputedStyle(article);
    var column = article.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    var figures = Array.from(article.querySelectorAll("img")).map(function (img) {
      return {src: img.getAttribute("src"), width: img.getBoundingClientRect().width,
              natural: img.naturalWidth, loaded: img.complete && img.naturalWidth > 0};
    });
    var wide_code = Array.from(article.querySelectorAll("pre")).filter(function (pre) {
      return pre.scrollWidth > pre.clientWidth + 1;
    }).map(function (pre) {
      return {text: pre.textContent.slice(0, 80), scroll: pre.scrollWidth, client: pre.clientWidth};
    });
    var math = Array.from(document.querySelectorAll(".math"));
    var verdict = {
      mathjax: mathjax, column: column, figures: figures, wide_code: wide_code,
      math: math.length,
      untypeset: math.filter(function (m) { return !m.querySelector("mjx-container"); }).length,
    };
    var out = document.createElement("pre");
    out.id = "@VERDICT_ID@";
    out.textContent = JSON.stringify(verdict);
    document.body.appendChild(out);
  }
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    MathJax.startup.promise.then(function () { measure(true); }, function () { measure(false); });
  } else {
    measure(false);
  }
});
</script>
""".replace("@VERDICT_ID@", VERDICT_ID)


def _title(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    raise AssertionError(f"{path.name} has no '# ' title")


def _straight_quotes(text: str) -> str:
    """Sphinx's smart quotes turn ' and " into curly ones: compare titles without them."""
    return text.translate(str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'}))


def is_teaching_chapter(path: Path) -> bool:
    """The preface (00) and the appendices (90-99) need no figure or math."""
    return not (path.stem.startswith("00_") or path.stem.startswith("9"))


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
        page = _straight_quotes(html.unescape(page_path.read_text(encoding="utf-8")))
        title = _title(chapter)
        assert title in page, f"{chapter.name}: title {title!r} missing"
        assert f"chapters/{chapter.stem}.html" in index, f"{chapter.name} is not in the table of contents"
        images = FIGURE.findall(page)
        for src in images:
            assert (page_path.parent / src).resolve().is_file(), f"{chapter.name}: figure {src} not in the build"
        if is_teaching_chapter(chapter):
            assert images, f"{chapter.name}: no figure embedded"
            # MathJax-ready markup: math nodes wrapped for MathJax, and MathJax loaded by the page
            assert 'class="math notranslate nohighlight"' in page, f"{chapter.name}: no math markup"
            assert re.search(r"<script[^>]+mathjax", page, re.IGNORECASE), f"{chapter.name}: MathJax not loaded"


def open_in_chromium(page: Path, profile: Path) -> tuple[str, dict]:
    """Open a copy of ``page`` (beside it, so relative links hold) with MEASURE_SCRIPT added;
    return the DOM Chromium ends with and the verdict the script wrote into it."""
    probe = page.with_name(f"_probe_{page.name}")
    source = page.read_text(encoding="utf-8")
    assert "</body>" in source, f"{page.name}: no </body> to add the script before"
    probe.write_text(source.replace("</body>", MEASURE_SCRIPT + "</body>", 1), encoding="utf-8")
    command = ["chromium", *BROWSER_FLAGS, f"--user-data-dir={profile}", f"--window-size={WINDOW}",
               "--virtual-time-budget=30000", "--dump-dom", probe.as_uri()]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S)
    assert proc.returncode == 0, f"{page.name}: chromium failed:\n{proc.stderr[-3000:]}"
    found = re.search(rf'<pre id="{VERDICT_ID}"[^>]*>(.*?)</pre>', proc.stdout, re.DOTALL)
    assert found, f"{page.name}: the measuring script wrote no verdict (the page did not finish loading?)"
    return html.unescape(proc.stdout), json.loads(html.unescape(found.group(1)))


def browser_problems(chapter: Path, page: Path, dom: str, verdict: dict, mathjax_local: bool) -> list[str]:
    """What a reader would see wrong on the page, from the browser's verdict."""
    problems = []
    title = _title(chapter)
    if not re.search(r"<h1[^>]*>\s*" + re.escape(title), _straight_quotes(dom)):
        problems.append(f"the title {title!r} is not shown")
    if is_teaching_chapter(chapter) and not verdict["figures"]:
        problems.append("no figure shown")
    column = verdict["column"]
    for figure in verdict["figures"]:
        if not figure["loaded"]:
            problems.append(f"figure {figure['src']} did not load")
        elif figure["width"] > column + 1 or figure["natural"] > MAX_SHRINK * column:
            problems.append(f"figure {figure['src']} is {figure['natural']} px wide (shown at "
                            f"{figure['width']:.0f} px) in a column of {column:.0f} px")
    for pre in verdict["wide_code"]:
        problems.append(f"code scrolls sideways ({pre['scroll']} px in {pre['client']} px): {pre['text'][:60]!r}")
    # MathJax served with the book (sphinx-mathjax-offline, or MINIREC_MATHJAX_PATH) works offline;
    # from a CDN it depends on the network, so only a local copy is required to typeset.
    if mathjax_local and verdict["math"]:
        if not verdict["mathjax"]:
            problems.append("MathJax did not start")
        if verdict["untypeset"]:
            problems.append(f"{verdict['untypeset']} of {verdict['math']} math nodes not typeset")
    return problems


def _page_params():
    reason = "written before the book's figure and code-width rules; being restyled on its own branch"
    pending = pytest.mark.xfail(strict=True, reason=reason)
    return [pytest.param(p, id=p.stem, marks=[pending] if p.stem in RESTYLE_PENDING else []) for p in CHAPTERS]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (apt-get install chromium)")
@pytest.mark.parametrize("chapter", _page_params())
def test_page_in_headless_chromium(built_book, tmp_path, chapter):
    page = built_book / "chapters" / f"{chapter.stem}.html"
    source = page.read_text(encoding="utf-8")
    local = re.search(r'<script[^>]+src="(?!https?:|//)[^"]*mathjax[^"]*"', source, re.IGNORECASE)
    mathjax_local = bool(local or os.environ.get("MINIREC_MATHJAX_PATH"))
    start = time.perf_counter()
    dom, verdict = open_in_chromium(page, tmp_path / "chromium-profile")
    problems = browser_problems(chapter, page, dom, verdict, mathjax_local)
    print(f"{chapter.stem}: {time.perf_counter() - start:.1f} s, column {verdict['column']:.0f} px, "
          f"{len(verdict['figures'])} figure(s), {verdict['math']} math node(s)")
    assert not problems, f"what a reader sees on {page.name} is wrong:\n  " + "\n  ".join(problems)
