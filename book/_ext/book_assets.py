"""Sphinx extension of this book: serve plotly.js from the book itself, so figures draw offline, the script that
draws them, and the book's own style sheet (``book.css``: every code block and table fits the text column, at
1,280 px and on a 390-px phone).

The notebooks' figures are stored as an empty ``plotly-graph-div`` and the figure's JSON (see
``cegppo_edu.plots.style.BookRenderer``); ``book_figures.js`` draws them. A page that holds a figure loads, both
with ``defer`` (the page's text shows first):

- the smallest plotly.js bundle that draws its traces, of the version of the installed ``plotly`` package
  (``vendor/``: ``plotly-basic`` for scatter and bar, 1.2 MB; ``plotly-cartesian`` when a heat map is there,
  1.5 MB; the package's full ``plotly.min.js``, 4.8 MB, for any other trace type), then
- ``book_figures.js``.

The theme's ``fontawesome.js`` (1.5 MB of icon SVGs, there "so that users can add custom icons") is taken out of
every page after the build: the theme's style sheet draws the icons the pages use from its web font.

MathJax (served offline by ``sphinx-mathjax-offline``, only on pages with math, as Sphinx does) is loaded as the
components the book's formulas need (``MATHJAX_COMPONENTS``: the TeX input with the packages of the combined
``tex-chtml.js``, CommonHTML output, and the assistive MathML that screen readers read) through MathJax's own
``startup.js`` loader, instead of the 1.16 MB ``tex-chtml.js``: about 0.78 MB. What is left out is MathJax's
right-click menu (``ui/menu``, 0.43 MB: show the source, zoom, renderer settings).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import plotly

HERE = Path(__file__).parent
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
BUNDLES = {  # name served -> (file, the trace types it draws)
    "plotly-basic.min.js": (HERE / "vendor" / "plotly-basic.min.js", {"scatter", "bar", "pie"}),
    "plotly-cartesian.min.js": (HERE / "vendor" / "plotly-cartesian.min.js",
                                {"scatter", "bar", "pie", "heatmap", "box", "contour", "histogram", "histogram2d",
                                 "histogram2dcontour", "image", "scatterternary", "violin"}),
    "plotly.min.js": (PLOTLY_JS, None),  # every trace type
}
STATIC_NAME = "plotly.min.js"  # the full bundle's name in _static (kept for pages with other traces)
FIGURES_JS = HERE / "book_figures.js"
BOOK_CSS = HERE / "book.css"
FONTAWESOME_JS = re.compile(r'\s*<script[^>]*src="[^"]*_static/scripts/fontawesome\.js[^"]*"[^>]*></script>')
# A trace type in a figure's JSON (BookRenderer) or a live figure's config (plots.live draws scatter and bar)
TRACE_TYPE = re.compile(r'"type":\s*"([a-z0-9]+)"')


def bundle_for(body: str) -> str:
    """The served name of the smallest bundle that draws every figure in a page's ``body``."""
    types = set()
    scripts = re.findall(r'<script type="application/json" data-cegppo-figure="[^"]+">(.*?)</script>', body, re.S)
    for script in scripts:
        figure = json.loads(script.replace("<\\/", "</"))
        types |= {trace.get("type", "scatter") for trace in figure.get("data", [])}
    live = "cegppo-live" in body
    if live:
        types |= {"scatter", "bar"}
    # a plotly div that is neither a BookRenderer figure nor a live figure (an inline Plotly.newPlot): anything may
    # be in it
    if body.count('class="plotly-graph-div"') > len(scripts) + body.count('class="cegppo-live-body"'):
        return STATIC_NAME
    for name, (_, draws) in BUNDLES.items():
        if draws is None or types <= draws:
            return name
    return STATIC_NAME


MATHJAX_LOADER = "mathjax/startup.js"  # MathJax's startup component: it loads the components below, deferred
TEX_PACKAGES = ["ams", "newcommand", "noundefined", "require", "autoload", "configmacros"]  # tex-chtml.js's set
MATHJAX_COMPONENTS = ["input/tex-base", *(f"[tex]/{name}" for name in TEX_PACKAGES), "output/chtml",
                      "a11y/assistive-mml"]


def _lean_mathjax(app, config) -> None:
    """Point Sphinx's MathJax at ``MATHJAX_LOADER`` with ``MATHJAX_COMPONENTS``, keeping the page options that
    myst-nb and the book set (``mathjax3_config``), without the menu."""
    if not str(config.mathjax_path).endswith("tex-chtml.js"):
        return  # another MathJax set on purpose (a CDN, the full bundle): leave it
    merged = dict(config.mathjax3_config or {})
    merged["loader"] = {**merged.get("loader", {}), "load": MATHJAX_COMPONENTS}
    tex = dict(merged.get("tex", {}))
    tex["packages"] = {"[+]": TEX_PACKAGES}
    merged["tex"] = tex
    merged["options"] = {**merged.get("options", {}), "enableMenu": False}
    config.mathjax3_config = merged
    config.mathjax_path = MATHJAX_LOADER


def _copy_static_files(app, exception) -> None:
    if exception is None and app.builder.format == "html":
        static = Path(app.outdir) / "_static"
        for name, (source, _) in BUNDLES.items():
            shutil.copyfile(source, static / name)
        for source in (FIGURES_JS, BOOK_CSS):
            shutil.copyfile(source, static / source.name)
        for page in Path(app.outdir).rglob("*.html"):  # the theme writes this tag in its template
            text = page.read_text(encoding="utf-8")
            lean = FONTAWESOME_JS.sub("", text)
            if lean != text:
                page.write_text(lean, encoding="utf-8")


def _add_plotly_js(app, pagename, templatename, context, doctree) -> None:
    """Load plotly.js and the figure script only where a figure needs them, deferred."""
    body = context.get("body", "")
    if "plotly-graph-div" in body:
        app.add_js_file(bundle_for(body), priority=200, loading_method="defer")
        app.add_js_file(FIGURES_JS.name, priority=201, loading_method="defer")


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
    for source, _ in BUNDLES.values():
        if not source.is_file():
            raise RuntimeError(f"{source} not found; reinstall plotly (pip install plotly) or see book/_ext/vendor")
    app.connect("config-inited", _lean_mathjax, priority=900)  # after sphinx-mathjax-offline and myst-nb set theirs
    app.connect("html-page-context", _add_plotly_js)
    app.connect("html-page-context", _drop_duplicate_scripts, priority=900)
    app.add_css_file(BOOK_CSS.name, priority=900)  # after the theme's, so its rules win
    app.connect("build-finished", _copy_static_files)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
