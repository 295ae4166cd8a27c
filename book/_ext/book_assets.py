"""Sphinx extension of this book: serve plotly.js from the book itself, so figures draw offline, and the book's
own style sheet (``book.css``: every code block and table fits the text column).

The notebooks' figures are stored as ``text/html`` divs that call ``Plotly.newPlot`` (see
``cegppo_edu.plots.style.BookRenderer``); they need ``plotly.min.js`` on the page. We copy the copy that ships
inside the installed ``plotly`` package (the same version that made the figures) into the built site's
``_static/`` and load it, without ``defer``, on the pages that contain a plotly figure.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import plotly

PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
STATIC_NAME = "plotly.min.js"
BOOK_CSS = Path(__file__).with_name("book.css")


def _copy_static_files(app, exception) -> None:
    if exception is None and app.builder.format == "html":
        shutil.copyfile(PLOTLY_JS, Path(app.outdir) / "_static" / STATIC_NAME)
        shutil.copyfile(BOOK_CSS, Path(app.outdir) / "_static" / BOOK_CSS.name)


def _add_plotly_js(app, pagename, templatename, context, doctree) -> None:
    """Load plotly.js only where a figure needs it (it is 4.8 MB)."""
    body = context.get("body", "")
    if "plotly-graph-div" in body:
        app.add_js_file(STATIC_NAME, priority=200)


def _drop_duplicate_scripts(app, pagename, templatename, context, doctree) -> None:
    """Keep one copy of each script tag.

    sphinx-thebe 0.3.1 registers its inline configuration once per read pass; a Jupyter Book 1 build
    makes two, so every page declared ``const THEBE_JS_URL`` twice and the browser raised a SyntaxError.
    """
    seen, unique = set(), []
    for script in context.get("script_files", []):
        # an inline script is registered once with filename None and once with "": the same tag
        key = (getattr(script, "filename", str(script)) or "",
               tuple(sorted((k, str(v)) for k, v in getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    if not PLOTLY_JS.is_file():
        raise RuntimeError(f"plotly.min.js not found at {PLOTLY_JS}; reinstall plotly (pip install plotly)")
    app.connect("html-page-context", _add_plotly_js)
    app.connect("html-page-context", _drop_duplicate_scripts, priority=900)
    app.add_css_file(BOOK_CSS.name, priority=900)  # after the theme's, so its rules win
    app.connect("build-finished", _copy_static_files)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
