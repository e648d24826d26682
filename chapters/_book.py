"""What every chapter shares: quick mode, the figure style, and `glue`.

A chapter's first (hidden) cell runs ``from _book import *`` and ``setup()``. Figures are SVG,
sized for the book's text column (about 7 inches) with text at the body text's size, so that they
read at a normal zoom without being scaled down.
"""

import os

import matplotlib as mpl

QUICK = os.environ.get("MINIREC_QUICK") == "1"
COLUMN_IN = 7.0          # the width of the book's text column, in inches at 96 px per inch


def setup():
    """Vector figures with large text; call once at the top of a chapter."""
    try:
        from matplotlib_inline.backend_inline import set_matplotlib_formats
        set_matplotlib_formats("svg")
    except ImportError:      # outside a notebook: nothing to configure
        pass
    mpl.rcParams.update({
        "figure.figsize": (COLUMN_IN, 4.0),
        "font.size": 12, "axes.titlesize": 13, "axes.labelsize": 12,
        "xtick.labelsize": 11, "ytick.labelsize": 11, "legend.fontsize": 11,
        "axes.spines.top": False, "axes.spines.right": False,
        "svg.fonttype": "none",      # text stays text: sharp, selectable, the browser's font
        "figure.constrained_layout.use": True,
    })


try:
    from myst_nb import glue as _myst_glue
except ImportError:          # running a chapter without the book extra: glue shows the value
    def _myst_glue(name, value, display=True):
        if display:
            print(f"{name} = {value}")
        return value


def glue(name, value, display=True):
    """myst-nb's glue, with NumPy scalars turned into Python numbers first: a NumPy scalar is
    shown as ``np.float64(0.5)`` and breaks the `{glue:text}` format specs under ``-W``."""
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        value = value.item()
    return _myst_glue(name, value, display=display)

__all__ = ["QUICK", "COLUMN_IN", "setup", "glue"]


def table(rows, header, caption=None):
    """An HTML table for the notebook and the book (text tables get clipped in a narrow column).

    ``rows`` is a list of sequences; numbers are shown as given, so format them first.
    """
    from html import escape

    from IPython.display import HTML

    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return HTML(f'<table class="table">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')


__all__.append("table")
