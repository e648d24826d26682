"""Sphinx configuration of the minirec book: the chapters (jupytext MyST notebooks in
../chapters, reached through the symlink book/chapters) executed by myst-nb at build time.

Build (offline):  python -m sphinx -W --keep-going -b html book book/_build/html
Quick build:      MINIREC_QUICK=1 python -m sphinx -W --keep-going -b html book book/_build/quick
Environment:      MINIREC_BOOK_EXECUTE=cache|force|off  (default cache: a chapter runs again only when
                  its code changed; full and quick outputs are cached apart, in
                  book/_build/.jupyter_cache-full and -quick; the cache knows only a chapter's
                  code: after changing minirec itself, use force; the tests use force)
                  MINIREC_MATHJAX_PATH=<url>  a local MathJax 3 to read the book offline, e.g.
                  file:///path/to/node_modules/mathjax/es5/tex-mml-chtml.js (npm install mathjax@3).
                  Default: the MathJax 3 of the sphinx-mathjax-offline package (book and dev
                  extras), copied into the build; without it, Sphinx's CDN copy. (MathJax 2, e.g.
                  Debian's libjs-mathjax, does not work: myst-nb marks pages tex2jax_ignore and
                  relies on MathJax 3's processHtmlClass; MathJax 4 fetches its fonts from the CDN.)
"""

import importlib.util
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The notebooks run in a kernel started by myst-nb: let it import minirec from this checkout
# even when the package is not installed.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)

project = "minirec"
author = "the minirec authors"
copyright = "the minirec authors"
release = "0.1.0"

extensions = ["myst_nb", "sphinx_design"]      # sphinx_design: {dropdown} for folded solutions
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
numfig = True                                   # "Figure 3.2" numbers for captioned figures
myst_heading_anchors = 3

# Each chapter is a text notebook (jupytext MyST); generated .ipynb copies are never sources.
exclude_patterns = ["_build", "**.ipynb_checkpoints", "chapters/*.ipynb", "chapters/README*", "Thumbs.db", ".DS_Store"]

QUICK = os.environ.get("MINIREC_QUICK") == "1"
nb_execution_mode = os.environ.get("MINIREC_BOOK_EXECUTE", "cache")
# The cache is keyed on a notebook's code only, not on MINIREC_QUICK: one cache per mode.
nb_execution_cache_path = str(ROOT / "book" / "_build" / (".jupyter_cache-" + ("quick" if QUICK else "full")))
# Seconds per cell. A whole chapter should take about 90 s in full mode and 20 s in quick mode
# (long trainings are read from results/); these limits leave room for a loaded machine, so a
# cell past them is doing work it should not, such as a full-size training.
nb_execution_timeout = 180 if QUICK else 300
# A failing cell (an assert, a timeout) is a warning naming the chapter and showing the error,
# and -W turns it into a failed build once every chapter has run. (Raising instead stops at the
# first failure, with the error only in a crash report file.)
nb_execution_raise_on_error = False
nb_execution_show_tb = True
nb_merge_streams = True

if os.environ.get("MINIREC_MATHJAX_PATH"):
    mathjax_path = os.environ["MINIREC_MATHJAX_PATH"]
elif importlib.util.find_spec("sphinx-mathjax-offline") is not None:
    # MathJax 3 from the book extra, copied into _static/: the book reads offline
    extensions.append("sphinx-mathjax-offline")

html_theme = "sphinx_book_theme"
html_title = "minirec: simplified recurrent networks"
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": True,
}
html_static_path = ["_static"]
html_css_files = ["book.css"]   # code cells fit the column (see the file)
