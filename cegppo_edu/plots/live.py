"""Live figures: inputs whose formulas run in the page's JavaScript, so every slider moves on the static site.

The book's other figures (``plots.figures``) carry plotly sliders over precomputed steps: one parameter at a
time. The two figures here recompute in the browser instead, with ``plots/live.js``, which mirrors the
package's formulas line by line:

    window.cegppoLive                               the package
    gradientWeight(family, r, adv, params)          losses.gradient_weight(r, adv, method, **hyper)
    softmaxUpdate(logits, token, ratio, adv,        toy.demos.single_softmax_update(...)["delta"], its ΔH
                  family, params, lr)               (entropy.predicted_entropy_change, entropy_from_logits)

``tests/test_live.py`` evaluates both in chromium on a grid and compares them with the package (1e-12).
What the page knows about the methods (defaults, fixed values, ranges, labels, colours) comes from
``losses.METHODS`` through each figure's JSON config; the JS holds no number of the package.

Each method's weight function maps to a JS family (``WEIGHT_FAMILIES``: ``clip_weight`` -> "clip",
``cispo_weight`` -> "cispo"). A registered method with another weight function is left out of the selector
(``live_methods``): the page could only draw it with a wrong formula.

In a notebook cell (chapters 1 and 2):

    live.weight_explorer()
    live.softmax_update_explorer()

On the book's pages plotly.js is loaded globally (``book/_ext/book_assets.py`` loads it on every page holding
"plotly-graph-div", which these figures' plot divs carry). In JupyterLab ``window.Plotly`` is usually missing:
the figure then shows a note pointing to ``plots.widgets``, whose panels compute in the kernel.
"""

from __future__ import annotations

import hashlib
import html
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import plotly.io as pio

from ..losses import LOG_RATIO_CLAMP, cispo_weight, clip_weight, get_method, gradient_weight
from ..token_groups import HP_THRESHOLD
from ..validation import Range, check_choice
from .figures import weight_breakpoints
from .style import DOWN_COLOR, compared_methods, GROUP_COLORS, HYPER_LABELS, TEMPLATE, UP_COLOR, method_color, method_label

LIVE_JS = Path(__file__).with_name("live.js")
# The JS family of each weight function; a method whose weight is not here has no live figure.
WEIGHT_FAMILIES = {clip_weight: "clip", cispo_weight: "cispo"}
# (low, high, step) of each hyper-parameter's slider, narrowed to a method's range and widened to its default
# (CISPO's ε_l = 1); the steps put every default of the book on the slider's grid.
SLIDER_SPANS = {"eps_low": (0.0, 0.5, 0.01), "eps_high": (0.0, 0.5, 0.01), "beta1": (0.0, 2.0, 0.05),
                "beta2": (0.0, 2.0, 0.05)}
WEIGHT_HYPERS = ("eps_low", "eps_high", "beta1", "beta2")  # the weight explorer's sliders
UPDATE_HYPERS = ("beta1", "beta2")  # the update panel's (ε stays at the method's default; the title says it)
PROB_COLORS = ("#BBBBBB", "#332288")  # the update panel's π before (light grey) and after (Tol's indigo)
CHAPTER2_LOGITS = (3.0, 2.0, 1.0, 0.5, 0.0, -0.5, -1.0, -2.0)  # chapter 2's softmax; token 6 is its rare one
KERNEL_NOTE = ("This live figure draws on the book's pages (its formulas run in the page, with plotly.js). "
               "In a kernel use <code>cegppo_edu.plots.widgets.{panel}()</code>.")
_ids = itertools.count()


@dataclass(frozen=True)
class LiveFigure:
    """A live figure: ``html`` (self-contained: inputs, plot div, config, script) and the ``config`` it carries.
    A notebook shows it through ``_repr_html_``."""

    html: str
    config: dict

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:  # what a notebook stores as text/plain: a name, not the whole page
        return f"LiveFigure({self.config.get('kind', 'figure')}, {len(self.html):,} characters of HTML)"


# --------------------------------------------------------------------------------------------------
# The methods as the page sees them
# --------------------------------------------------------------------------------------------------
def live_methods() -> list[str]:
    """The methods a live figure can compute: the token-level ones but aliases (``style.compared_methods``)
    whose weight function has a JS family in ``WEIGHT_FAMILIES``, in registration order."""
    return [m for m in compared_methods() if get_method(m).weight in WEIGHT_FAMILIES]


def _check_methods(methods) -> list[str]:
    methods = live_methods() if methods is None else list(methods)
    if not methods:
        raise ValueError("methods is empty; give at least one of " + ", ".join(live_methods()))
    for name in methods:
        if name not in live_methods():
            raise ValueError(f"methods entry={name!r} is not allowed; choose one of {', '.join(live_methods())} (the "
                             "token-level methods, aliases left out, whose weight function live.js computes)")
    return methods


def _on_grid(value: float, low: float, step: float) -> bool:
    k = (value - low) / step
    return abs(k - round(k)) < 1e-9


def _slider(name: str, method: str) -> dict:
    """``{min, max, step}`` of ``method``'s slider for hyper-parameter ``name``: ``SLIDER_SPANS`` inside the
    method's range (one step in from an open end), widened to include its default, with a step fine enough
    that the default lies on the slider's grid (a browser snaps a range input's value to it)."""
    low, high, step = SLIDER_SPANS[name]
    allowed, default = get_method(method).ranges[name], get_method(method).defaults[name]
    low = max(low, allowed.low + (step if allowed.low_open else 0.0))
    high = min(high, allowed.high - (step if allowed.high_open else 0.0))
    low, high = min(low, default), max(high, default)
    while not _on_grid(default, low, step) and step > 1e-6:
        step /= 10
    return {"min": round(low, 10), "max": round(high, 10), "step": round(step, 10)}


def _method_config(method: str, hypers: tuple[str, ...]) -> dict:
    """One method for the page: its JS family, label, colour, defaults and fixed values (``losses.METHODS``)
    and a slider for each of ``hypers`` it takes."""
    spec = get_method(method)
    return {"label": method_label(method), "family": WEIGHT_FAMILIES[spec.weight], "color": method_color(method),
            "defaults": spec.defaults, "fixed": dict(spec.fixed),
            "controls": {h: _slider(h, method) for h in hypers if h in spec.defaults}}


def _largest_weight(methods: list[str], hypers: tuple[str, ...], r_range: tuple[float, float], adv: float) -> float:
    """max F(r, Â) over r in ``r_range``, the methods and every slider's range (at fixed ``adv``), computed with
    ``losses.gradient_weight``: F is piecewise linear in r, so its maximum over r lies at a breakpoint, and that
    maximum is monotone in each ε and β, so it lies at a corner of the sliders' box."""
    largest = 0.0
    for method in methods:
        controls = _method_config(method, hypers)["controls"]
        for corner in itertools.product(*[(c["min"], c["max"]) for c in controls.values()]):
            hyper = dict(zip(controls, corner))
            r = weight_breakpoints(method, *r_range, **hyper)
            largest = max(largest, float(np.max(gradient_weight(r, adv, method, **hyper))))
    return largest


# --------------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------------
def _new_id(kind: str, config: dict) -> str:
    """A page-unique id: the config's digest (the same figure re-run gives the same ids: clean notebook diffs)
    and a counter (two figures, or a re-executed cell, never share one)."""
    digest = hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:8]
    return f"cegppo-live-{kind}-{digest}-{next(_ids)}"


# What a screen reader says for each input (the visible label is the symbol alone).
SPOKEN = {"eps_low": "ε_l, lower clip bound", "eps_high": "ε_h, upper clip bound",
          "beta1": "β1, weight below the interval (Â<0)", "beta2": "β2, weight above the interval (Â>0)",
          "ratio": "r, probability ratio of the kept token", "adv": "Â, advantage of the kept token",
          "lr": "η, step size", "method": "method", "token": "kept token"}


def _range_input(fig_id: str, name: str, label: str, control: dict, value: float) -> str:
    spoken = html.escape(SPOKEN.get(name, label))
    return (f'<label class="cegppo-live-control" for="{fig_id}-{name}">{html.escape(label)} '
            f'<input type="range" id="{fig_id}-{name}" data-input="{name}" aria-label="{spoken}" '
            f'min="{control["min"]}" max="{control["max"]}" step="{control["step"]}" value="{value}">'
            f'<output data-for="{name}" for="{fig_id}-{name}" aria-live="polite">{value:g}</output></label>')


def _select(fig_id: str, name: str, label: str, options: dict, value) -> str:
    items = "".join(f'<option value="{html.escape(str(k))}"{" selected" if k == value else ""}>{html.escape(text)}'
                    "</option>" for k, text in options.items())
    return (f'<label class="cegppo-live-control" for="{fig_id}-{name}">{html.escape(label)} '
            f'<select id="{fig_id}-{name}" data-input="{name}" aria-label="{html.escape(SPOKEN.get(name, label))}">'
            f'{items}</select></label>')


def _hyper_inputs(fig_id: str, config: dict, method: str) -> list[str]:
    """A slider per hyper-parameter of the page, set for ``method`` (the page's script sets them again, and on
    every change of method, from the config)."""
    spec = config["methods"][method]
    out = []
    for name in config["hypers"]:
        control = spec["controls"].get(name) or dict(zip(("min", "max", "step"), SLIDER_SPANS[name]))
        value = spec["defaults"].get(name, spec["fixed"].get(name, control["min"]))
        out.append(_range_input(fig_id, name, HYPER_LABELS[name], control, value))
    return out


_STYLE = """<style>
.cegppo-live { max-width: 100%; box-sizing: border-box; margin: 0.5em 0 1em; }
.cegppo-live-controls { display: flex; flex-wrap: wrap; gap: 0.3em 1.2em; align-items: center; font-size: 0.85em; }
.cegppo-live-control { display: inline-flex; align-items: center; gap: 0.4em; margin: 0; white-space: nowrap; }
.cegppo-live-control input[type=range] { width: 110px; margin: 0; }
.cegppo-live-control output { display: inline-block; min-width: 4.5em; font-variant-numeric: tabular-nums; }
.cegppo-live-readout { font-size: 0.85em; }
.cegppo-live-note { font-size: 0.85em; font-style: italic; }
</style>"""


def _page(fig_id: str, config: dict, controls: list[str], height: int, panel: str, readout: str = "") -> str:
    """The figure's HTML: a note (what shows where no script draws), the hidden body the script reveals
    (inputs, plot div, readout), the JSON config and the script."""
    constants = {"ratioMin": math.exp(-LOG_RATIO_CLAMP), "ratioMax": math.exp(LOG_RATIO_CLAMP)}
    config_json = json.dumps(config).replace("</", "<\\/")  # "</script>" inside the JSON would end the tag
    script = LIVE_JS.read_text()
    if "</script" in script.lower():
        raise RuntimeError(f"{LIVE_JS} contains '</script', which would end its <script> tag early")
    return (f'{_STYLE}<div class="cegppo-live" id="{fig_id}">'
            f'<p class="cegppo-live-note">{KERNEL_NOTE.format(panel=panel)}</p>'
            f'<div class="cegppo-live-body" hidden><div class="cegppo-live-controls">{"".join(controls)}</div>'
            f'<div id="{fig_id}-plot" class="plotly-graph-div" style="height:{height}px; width:100%;"></div>'
            f'{readout}</div>'
            f'<script type="application/json" class="cegppo-live-config">{config_json}</script>'
            f'<script>(function () {{\n{script}\nwindow.cegppoLive = window.cegppoLive || '
            f'defineCegppoLive({json.dumps(constants)});\n'
            f'window.cegppoLive.mount((document.currentScript && document.currentScript.closest(".cegppo-live")) || '
            f'document.getElementById("{fig_id}"));\n}})();</script></div>')


def _base_layout(height: int) -> dict:
    """The book's template, a fixed height and margins that keep the title and the axis titles inside."""
    return {"template": pio.templates[TEMPLATE].to_plotly_json(), "height": height,
            "margin": {"l": 64, "r": 16, "t": 64, "b": 96},
            "title": {"x": 0.01, "xanchor": "left", "font": {"size": 13}},
            "legend": {"orientation": "h", "x": 0, "y": -0.2, "yanchor": "top"}}


def _common_config(kind: str, methods: list[str], hypers: tuple[str, ...], height: int) -> dict:
    return {"kind": kind, "hypers": list(hypers), "hyperLabels": {h: HYPER_LABELS[h] for h in SLIDER_SPANS},
            "methods": {m: _method_config(m, hypers) for m in methods},
            "plotConfig": {"displaylogo": False, "responsive": True}, "layout": _base_layout(height)}


# --------------------------------------------------------------------------------------------------
# The two figures
# --------------------------------------------------------------------------------------------------
def weight_explorer(method: str = "ce_gppo", methods=None, *, r_max: float = 2.5, reference: str | None = "grpo",
                    height: int = 440) -> LiveFigure:
    """F(r, Â) against r, Â>0 left and Â<0 right, with live sliders for ε_l, ε_h, β1, β2 and a method selector.

    ``methods`` (default ``live_methods()``) fill the selector, ``method`` is the first shown. A method's
    sliders start at its defaults; the parameters it fixes (GPPO's β = 1) or does not take (β of PPO / GRPO,
    DAPO, CISPO) are disabled and show the value it uses. ``reference`` (default PPO / GRPO at its own
    defaults but with the ε of the shown method, sliders included) is drawn faint, so the reader sees what the
    method changes on the same interval; None leaves it out. r runs from 0 to
    ``r_max``; the y range is fixed, from the largest F any slider position gives.
    """
    methods = _check_methods(methods)
    check_choice("method", method, methods)
    Range(1.0, 20.0, low_open=True).check("r_max", r_max)
    Range(250, 1200, integer=True).check("height", height)
    if reference is not None:
        check_choice("reference", reference, live_methods())
    top = max(r_max, *(_largest_weight(methods, WEIGHT_HYPERS, (0.0, r_max), adv) for adv in (1.0, -1.0)))
    config = _common_config("weight", methods, WEIGHT_HYPERS, height)
    config["rMax"] = r_max
    if reference is not None:
        spec = get_method(reference)
        config["reference"] = {"label": f"{method_label(reference)} at the same ε", "family": WEIGHT_FAMILIES[spec.weight],
                               "params": spec.resolve(), "color": method_color(reference),
                               "followEps": ["eps_low", "eps_high"]}  # the page sets them from the shown method
    axis = {"title": {"text": "ratio r = π_θ / π_old"}, "range": [0, r_max]}
    config["layout"].update({
        "xaxis": {**axis, "domain": [0, 0.48]}, "xaxis2": {**axis, "domain": [0.52, 1], "anchor": "y2"},
        "yaxis": {"title": {"text": "F(r, Â)"}, "range": [-0.03 * top, 1.05 * top]},
        "yaxis2": {"anchor": "x2", "matches": "y", "showticklabels": False},
        "annotations": [{"text": text, "x": x, "y": 1, "xref": "paper", "yref": "paper", "xanchor": "center",
                         "yanchor": "bottom", "showarrow": False}
                        for text, x in (("Â > 0 (positive advantage)", 0.24), ("Â < 0 (negative advantage)", 0.76))]})
    fig_id = _new_id("weight", config)
    controls = [_select(fig_id, "method", "method", {m: method_label(m) for m in methods}, method)]
    controls += _hyper_inputs(fig_id, config, method)
    return LiveFigure(_page(fig_id, config, controls, height, "weight_panel"), config)


def _check_span(name: str, span, allowed: Range) -> tuple[float, float]:
    if not (isinstance(span, (tuple, list)) and len(span) == 2 and all(allowed.contains(x) for x in span)
            and span[0] < span[1]):
        raise ValueError(f"{name}={span!r} must be (low, high) with low < high, both in {allowed}")
    return float(span[0]), float(span[1])


def _check_logits(logits) -> np.ndarray:
    z = np.asarray(logits, dtype=float)
    if z.ndim != 1 or not 2 <= z.size <= 64 or not np.isfinite(z).all():
        raise ValueError(f"logits={logits!r} must be a 1-D array of 2 to 64 finite numbers, got shape {z.shape}")
    return z


def softmax_update_explorer(logits=CHAPTER2_LOGITS, token: int = 6, *, ratio: float = 1.5, adv: float = 1.0,
                            lr: float = 0.5, method: str = "ce_gppo", methods=None, ratio_range=(0.1, 2.5),
                            adv_range=(-1.0, 1.0), lr_range=(0.05, 1.0), height: int = 560) -> LiveFigure:
    """Bars of the update Δz on every logit of one softmax when one token is kept, with live inputs.

    The inputs: the kept token, r, Â, β1, β2, η (``lr``) and the method, starting at the given values (chapter 2's
    softmax, its rare token 6, r = 1.5, Â = +1, η = 0.5, CE-GPPO). Below the bars: every token's probability
    before and after the update, and F, ΔH predicted to first order (−Cov_π(log π, Δz)) and measured
    (H(z+Δz) − H(z)). The bars' y range is symmetric and fitted to the update (±1, 2 or 5 times a power of ten, the
    smallest above 1.1·max|Δz|, ``live.js``'s ``niceCeil``), so the bars fill most of it; the ticks say the size.
    """
    z = _check_logits(logits)
    Range(0, z.size - 1, integer=True).check("token", token)
    lo_hi = {"ratio": _check_span("ratio_range", ratio_range, Range(0.0, 100.0, low_open=True)),
             "adv": _check_span("adv_range", adv_range, Range(-100.0, 100.0)),
             "lr": _check_span("lr_range", lr_range, Range(0.0, 100.0, low_open=True))}
    start = {"ratio": ratio, "adv": adv, "lr": lr}
    for name, (low, high) in lo_hi.items():
        Range(low, high).check(name, start[name])
    methods = _check_methods(methods)
    check_choice("method", method, methods)
    Range(250, 1200, integer=True).check("height", height)
    prob = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    config = _common_config("update", methods, UPDATE_HYPERS, height)
    config.update({"logits": z.tolist(), "hpThreshold": HP_THRESHOLD, "groupColors": GROUP_COLORS,
                   "upColor": UP_COLOR, "downColor": DOWN_COLOR,
                   "probColors": {"before": PROB_COLORS[0], "after": PROB_COLORS[1]}})
    config["layout"].update({
        "margin": {**config["layout"]["margin"], "b": 84}, "barmode": "group",
        "legend": {"orientation": "h", "x": 0, "xanchor": "left", "yref": "container", "y": 0, "yanchor": "bottom"},
        "xaxis": {"title": {"text": "logit b (▶ = the kept token)"}, "tickangle": 0, "anchor": "y"},
        "yaxis": {"title": {"text": "update Δz_b"}, "zeroline": True, "domain": [0.5, 1]},
        "xaxis2": {"title": {"text": "logit b"}, "anchor": "y2"},
        "yaxis2": {"title": {"text": "π before / after"}, "domain": [0, 0.3], "rangemode": "tozero"}})
    fig_id = _new_id("update", config)
    tokens = {b: f"{b} (π={p:.3f})" for b, p in enumerate(prob)}
    steps = {"ratio": 0.01, "adv": 0.05, "lr": 0.05}
    labels = {"ratio": "r", "adv": "Â", "lr": "η"}
    controls = [_select(fig_id, "method", "method", {m: method_label(m) for m in methods}, method),
                _select(fig_id, "token", "kept token", tokens, token)]
    for name in ("ratio", "adv"):
        controls.append(_range_input(fig_id, name, labels[name], _free_slider(lo_hi[name], steps[name], start[name]),
                                     start[name]))
    controls += _hyper_inputs(fig_id, config, method)
    controls.append(_range_input(fig_id, "lr", labels["lr"], _free_slider(lo_hi["lr"], steps["lr"], lr), lr))
    readout = ('<p class="cegppo-live-readout">F = <b data-field="weight"></b> · ΔH predicted to first order '
               '(−Cov<sub>π</sub>(log π, Δz)) <b data-field="dHPred"></b> · measured (H(z+Δz) − H(z)) '
               '<b data-field="dHMeas"></b></p>')
    return LiveFigure(_page(fig_id, config, controls, height, "softmax_panel", readout), config)


def _free_slider(span: tuple[float, float], step: float, value: float) -> dict:
    """A slider over ``span`` whose grid holds ``value``."""
    while not _on_grid(value, span[0], step) and step > 1e-6:
        step /= 10
    return {"min": span[0], "max": span[1], "step": round(step, 10)}


__all__ = ["CHAPTER2_LOGITS", "LiveFigure", "SLIDER_SPANS", "WEIGHT_FAMILIES", "live_methods",
           "softmax_update_explorer", "weight_explorer"]
