"""The look of every figure in the book: one colour per token group and per method, labels, the template, the
renderer that makes figures show both in JupyterLab and on the static site, and the helpers the figure modules
share (precomputed-frame sliders, mean ± sd bands, moving averages).

``setup_notebook()`` installs a renderer that emits both plotly's JSON mimetype (JupyterLab draws it) and a
``text/html`` div (what Jupyter Book shows; it needs ``plotly.min.js`` served by the book, see ``_config.yml``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os

import numpy as np
import plotly.colors
import plotly.graph_objects as go
import plotly.io as pio
from plotly.io._base_renderers import MimetypeRenderer, PlotlyRenderer

from ..losses import METHODS, method_label, token_level_methods

# One fixed colour per token group in every figure (Okabe-Ito palette, readable for colour-blind readers).
GROUP_COLORS = {"PA&HP": "#0072B2", "PA&LP": "#56B4E9", "NA&HP": "#D55E00", "NA&LP": "#E69F00", "ZA": "#999999"}
# Colours not used by the token groups, so a method is never mistaken for a group (Okabe-Ito, and Tol's olive
# for CISPO: Okabe-Ito's yellow has too little contrast on white).
METHOD_COLORS = {"grpo": "#CC79A7", "dapo": "#009E73", "gppo": "#7F7F7F", "ce_gppo": "#000000", "cispo": "#999933"}
# Where methods agree (F = r inside the interval) their lines lie on top of each other; a dash pattern per method
# keeps each one visible there.
METHOD_DASHES = {"grpo": "dot", "dapo": "dash", "gppo": "dashdot", "ce_gppo": "solid", "cispo": "longdash"}
FALLBACK_COLORS = ("#882255", "#44AA99", "#332288", "#AA4499", "#117733", "#000000", "#CC79A7", "#999933")
UP_COLOR, DOWN_COLOR = "#009E73", "#CC79A7"
HYPER_LABELS = {"eps_low": "ε_l", "eps_high": "ε_h", "beta1": "β1", "beta2": "β2", "eps": "ε"}
# A figure title line of at most this many characters fits the book's text column (about 700 px at a 1280-px
# window) at the template's title font; longer titles are wrapped (``wrap``).
TITLE_CHARS = 70
TITLE_SIZE = 14
# The book's plotly template: plotly_white's look for the 2-D charts the book draws, without its 3-D, polar,
# geo and colour-scale entries (every stored figure carries its template: 1 KB instead of 7).
_AXIS = {"gridcolor": "#EBF0F8", "linecolor": "#EBF0F8", "ticks": "", "title": {"standoff": 15},
         "zerolinecolor": "#EBF0F8", "automargin": True, "zerolinewidth": 2}
TEMPLATE = "cegppo"
pio.templates[TEMPLATE] = go.layout.Template(layout={
    "font": {"color": "#2a3f5f"}, "hovermode": "closest", "hoverlabel": {"align": "left"},
    "paper_bgcolor": "white", "plot_bgcolor": "white", "xaxis": _AXIS, "yaxis": _AXIS,
    "title": {"x": 0.02, "xanchor": "left", "font": {"size": TITLE_SIZE}, "yref": "container", "y": 1,
              "yanchor": "top", "pad": {"t": 24}},  # plotly anchors a multi-line title by its first baseline
    "coloraxis": {"colorbar": {"outlinewidth": 0, "ticks": ""}}, "shapedefaults": {"line": {"color": "#2a3f5f"}},
    "annotationdefaults": {"arrowcolor": "#2a3f5f", "arrowhead": 0, "arrowwidth": 1}})
STORE_ONCE = "CEGPPO_FIGURES_JSON_ONLY"  # environment variable: notebooks store each figure once (JSON)
BAND_OPACITY = 0.18


def compared_methods() -> list[str]:
    """The methods chapters 1-3 compare: every registered token-level method but aliases (PPO-clip is GRPO) and
    chapter 7's baselines (``Method.compared``)."""
    return token_level_methods(include_aliases=False, compared_only=True)


def _canonical(name: str) -> str:
    spec = METHODS.get(name)
    return spec.alias_of if spec and spec.alias_of else name


def method_color(name: str, fallback: str = "#555555") -> str:
    """A method's colour (an alias wears its original's); ``fallback`` for a method without one."""
    return METHOD_COLORS.get(_canonical(name), fallback)


def method_line(name: str, fallback: str = "#555555", width: float | None = None) -> dict:
    """A method's line style: its colour and dash pattern, CE-GPPO a little wider."""
    canonical = _canonical(name)
    return {"color": method_color(name, fallback), "dash": METHOD_DASHES.get(canonical, "solid"),
            "width": width or (2.6 if canonical == "ce_gppo" else 2.0)}


def wrap(text: str, width: int = TITLE_CHARS) -> str:
    """``text`` with ``<br>`` between words so that no line is longer than ``width`` characters (plotly titles
    do not wrap by themselves; a long one runs off the figure)."""
    lines, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return "<br>".join(lines + [line])


def finish(fig: go.Figure) -> go.Figure:
    """Room for the title: the top margin holds its longest version (slider steps change it) and, below it, the
    subplot titles, so that neither is cut off nor drawn over the other or over the plot."""
    if fig.layout.title.text and "<br>" not in fig.layout.title.text:
        fig.update_layout(title_text=wrap(fig.layout.title.text))
    titles = [fig.layout.title.text or ""]
    for slider in fig.layout.sliders or ():
        titles += [step.args[1].get("title.text", "") for step in slider.steps if len(step.args) > 1]
    lines = max((t.count("<br>") + 1 for t in titles if t), default=0)
    subplot_titles = any(a.yref and a.yref.endswith("paper") and (a.y or 0) >= 1 for a in fig.layout.annotations)
    for annotation in fig.layout.annotations:
        if annotation.font.size in (None, 16) and annotation.showarrow is False:  # make_subplots' titles
            annotation.font.size = 13  # smaller than the figure's own title
    fig.update_layout(margin_t=20 + (14 + 19 * lines if lines else 0) + (26 if subplot_titles else 0))
    return fig


def zero_white_colorscale(zmax: float, base: str = "Viridis") -> list:
    """A colour scale for values in [0, zmax] where exactly 0 is white and anything above 0 starts at the dark
    end of ``base``: a dropped gradient (F = 0) cannot be mistaken for a small one."""
    colors = plotly.colors.get_colorscale(base)
    gap = 1e-6 / zmax
    return [[0.0, "#ffffff"], [gap, "#ffffff"]] + [[max(gap, float(x)), c] for x, c in colors]


# --------------------------------------------------------------------------------------------------
# Notebook / book rendering
# --------------------------------------------------------------------------------------------------
FIGURE_CONFIG = {"displaylogo": False, "responsive": True}


class BookRenderer(MimetypeRenderer):
    """Plotly JSON for JupyterLab plus a ``text/html`` figure for Jupyter Book.

    The ``text/html`` part is an empty ``plotly-graph-div`` of the figure's height and the figure as a JSON
    ``<script type="application/json" data-cegppo-figure="ID">``, with no code: the book's ``book_figures.js``
    (``book/_ext``, loaded after plotly.js, both deferred) draws every figure of the page once plotly.js is
    there, fitted to a narrow screen, with a keyboard twin of each slider. So plotly.js never blocks the page's
    text, and a figure never runs before plotly.js has loaded.

    Div ids are derived from the figure's content and a counter, so re-running a notebook gives the same
    ids (clean diffs) and two figures on one page never share one. With ``STORE_ONCE`` set in the environment
    (``make notebooks`` does, for the outputs committed with the notebooks) only the JSON is emitted: the book
    re-executes the notebooks when it is built, so the div it shows is always made then, and the committed
    notebook holds each figure once.
    """

    def __init__(self):
        self._count = itertools.count()

    def to_mimebundle(self, fig_dict):
        bundle = PlotlyRenderer(config={"displaylogo": False}).to_mimebundle(dict(fig_dict))
        if os.environ.get(STORE_ONCE):
            return bundle
        digest = hashlib.sha1(json.dumps(bundle, sort_keys=True).encode()).hexdigest()[:10]
        bundle["text/html"] = figure_html(fig_dict, f"fig-{digest}-{next(self._count)}")
        return bundle


def figure_html(fig_dict, div_id: str) -> str:
    """The book's HTML of one figure: its div and its JSON (``BookRenderer``; drawn by ``book_figures.js``)."""
    figure = json.loads(pio.to_json(fig_dict, validate=False, remove_uids=False))
    figure["config"] = FIGURE_CONFIG
    height = int((figure.get("layout") or {}).get("height") or 450)
    text = json.dumps(figure, separators=(",", ":"), ensure_ascii=False).replace("</", "<\\/")
    return (f'<div id="{div_id}" class="plotly-graph-div" style="height:{height}px; width:100%;"></div>'
            f'<script type="application/json" data-cegppo-figure="{div_id}">{text}</script>')


def setup_notebook() -> None:
    """Make ``fig.show()`` (and a figure as a cell's last value) render in JupyterLab *and* in the book."""
    pio.renderers["cegppo_book"] = BookRenderer()
    pio.renderers.default = "cegppo_book"
    pio.templates.default = TEMPLATE


# --------------------------------------------------------------------------------------------------
# Slider helper: one step per precomputed set of traces
# --------------------------------------------------------------------------------------------------
def add_visibility_slider(fig: go.Figure, step_traces: list[list[int]], labels: list[str], prefix: str,
                           titles: list[str] | None = None, active: int = 0, always: tuple[int, ...] = ()):
    """Add a slider whose step k shows ``step_traces[k]`` (trace indices) plus ``always``, hiding the rest."""
    n = len(fig.data)
    steps = []
    for k, (indices, label) in enumerate(zip(step_traces, labels)):
        visible = [False] * n
        for i in list(indices) + list(always):
            visible[i] = True
        layout = {"title.text": wrap(titles[k])} if titles else {}
        steps.append({"method": "update", "label": label, "args": [{"visible": visible}, layout]})
    for i, trace in enumerate(fig.data):
        trace.visible = i in set(step_traces[active]) | set(always)
    if titles:
        fig.update_layout(title_text=wrap(titles[active]))
    fig.update_layout(sliders=[{"active": active, "currentvalue": {"prefix": prefix}, "pad": {"t": 50},
                                "steps": steps}])
    return fig


def f32(values) -> np.ndarray:
    """float32 copy: halves the size of the figure JSON stored in notebooks and pages; plots need no more."""
    return np.asarray(values, dtype=np.float32)


def hyper_text(hyper: dict) -> str:
    return ", ".join(f"{HYPER_LABELS.get(k, k)}={v:g}" for k, v in hyper.items())


# --------------------------------------------------------------------------------------------------
# Bands and smoothing
# --------------------------------------------------------------------------------------------------
def hex_to_rgba(color: str, alpha: float) -> str:
    color = color.lstrip("#")
    r, g, b = (int(color[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def mean_band_traces(per_seed: np.ndarray, name: str, color: str, legendgroup: str | None = None,
                      showlegend: bool = True, dash: str | None = None) -> list[go.Scatter]:
    """A seed-mean line and a ±1 standard deviation band (over seeds). ``per_seed``: ``(seeds, steps)``."""
    per_seed = np.asarray(per_seed, dtype=float)
    steps = np.arange(per_seed.shape[1], dtype=np.int16)  # int16: half the bytes of float32 in the stored JSON
    mean, std = per_seed.mean(0), per_seed.std(0)
    group = legendgroup or name
    band = go.Scatter(x=np.r_[steps, steps[::-1]], y=f32(np.r_[mean + std, (mean - std)[::-1]]),
                      fill="toself", fillcolor=hex_to_rgba(color, BAND_OPACITY), line={"width": 0},
                      hoverinfo="skip", legendgroup=group, showlegend=False, name=f"{name} ±1 sd")
    line = go.Scatter(**step_axis(len(mean)), y=f32(mean), mode="lines", name=name, legendgroup=group,
                      showlegend=showlegend, line={"color": color, "width": 2, "dash": dash})
    return [band, line]


def step_axis(steps: int) -> dict:
    """The x of a curve with one value per step 0, 1, ...: ``x0``/``dx`` instead of an array of steps."""
    return {"x0": 0, "dx": 1} if steps else {}


def moving_average(x: np.ndarray, window: int) -> np.ndarray:
    if window <= 1:
        return np.asarray(x, dtype=float)
    kernel = np.ones(window) / window
    padded = np.r_[np.full(window - 1, x[0]), x]
    return np.convolve(padded, kernel, mode="valid")


__all__ = ["BookRenderer", "FIGURE_CONFIG", "figure_html", "DOWN_COLOR", "GROUP_COLORS", "HYPER_LABELS", "METHOD_COLORS", "METHOD_DASHES", "TEMPLATE",
           "TITLE_CHARS", "UP_COLOR", "add_visibility_slider", "compared_methods", "f32", "finish", "hex_to_rgba", "hyper_text",
           "mean_band_traces", "method_color", "method_label", "method_line", "moving_average", "setup_notebook",
           "step_axis", "wrap", "zero_white_colorscale"]
