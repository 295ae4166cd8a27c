"""Plotly figures of the book: one function per figure, each returning a ``go.Figure``.

Conventions (DESIGN.md):
- the four token groups always wear ``token_groups.GROUP_COLORS``; methods wear ``METHOD_COLORS``;
- sliders are plotly-native: every step's traces are precomputed and a step only toggles which are visible
  (``method="update"``), so they move on the static site, without a kernel;
- figures take numbers computed elsewhere (``losses``, ``demos``, ``bandit``) and compute nothing but layout.

``setup_notebook()`` installs a renderer that emits both plotly's JSON mimetype (JupyterLab draws it) and a
``text/html`` div (what Jupyter Book shows; it needs ``plotly.min.js`` served by the book, see ``_config.yml``).
"""

from __future__ import annotations

import hashlib
import itertools
import json

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from plotly.io._base_renderers import MimetypeRenderer, PlotlyRenderer
from plotly.subplots import make_subplots

from .losses import gradient_weight
from .token_groups import GROUP_COLORS, GROUPS

METHOD_LABELS = {"grpo": "PPO / GRPO", "ppo_clip": "PPO / GRPO", "dapo": "DAPO", "gppo": "GPPO",
                 "ce_gppo": "CE-GPPO", "cispo": "CISPO", "unclipped": "no clipping (F = r)"}
# Okabe-Ito colours not used by the token groups, so a method is never mistaken for a group.
METHOD_COLORS = {"grpo": "#CC79A7", "ppo_clip": "#CC79A7", "dapo": "#009E73", "gppo": "#7F7F7F",
                 "ce_gppo": "#000000", "cispo": "#F0E442", "unclipped": "#BBBBBB"}
METHODS = ("grpo", "dapo", "gppo", "ce_gppo", "cispo")
UP_COLOR, DOWN_COLOR = "#009E73", "#CC79A7"
HYPER_LABELS = {"eps_low": "ε_l", "eps_high": "ε_h", "beta1": "β1", "beta2": "β2", "eps": "ε"}
TEMPLATE = "plotly_white"


# --------------------------------------------------------------------------------------------------
# Notebook / book rendering
# --------------------------------------------------------------------------------------------------
class BookRenderer(MimetypeRenderer):
    """Plotly JSON for JupyterLab plus a ``text/html`` div for Jupyter Book (plotly.js served by the book).

    Div ids are derived from the figure's content and a counter, so re-running a notebook gives the same
    ids (clean diffs) and two figures on one page never share one.
    """

    def __init__(self):
        self._count = itertools.count()

    def to_mimebundle(self, fig_dict):
        bundle = PlotlyRenderer(config={"displaylogo": False}).to_mimebundle(dict(fig_dict))
        digest = hashlib.sha1(json.dumps(bundle, sort_keys=True).encode()).hexdigest()[:10]
        div = pio.to_html(fig_dict, include_plotlyjs=False, include_mathjax=False, full_html=False,
                          div_id=f"fig-{digest}-{next(self._count)}",
                          config={"displaylogo": False, "responsive": True})
        bundle["text/html"] = div
        return bundle


def setup_notebook() -> None:
    """Make ``fig.show()`` (and a figure as a cell's last value) render in JupyterLab *and* in the book."""
    pio.renderers["cegppo_book"] = BookRenderer()
    pio.renderers.default = "cegppo_book"
    pio.templates.default = TEMPLATE


# --------------------------------------------------------------------------------------------------
# Slider helper: one step per precomputed set of traces
# --------------------------------------------------------------------------------------------------
def _add_visibility_slider(fig: go.Figure, step_traces: list[list[int]], labels: list[str], prefix: str,
                           titles: list[str] | None = None, active: int = 0, always: tuple[int, ...] = ()):
    """Add a slider whose step k shows ``step_traces[k]`` (trace indices) plus ``always``, hiding the rest."""
    n = len(fig.data)
    steps = []
    for k, (indices, label) in enumerate(zip(step_traces, labels)):
        visible = [False] * n
        for i in list(indices) + list(always):
            visible[i] = True
        layout = {"title.text": titles[k]} if titles else {}
        steps.append({"method": "update", "label": label, "args": [{"visible": visible}, layout]})
    for i, trace in enumerate(fig.data):
        trace.visible = i in set(step_traces[active]) | set(always)
    if titles:
        fig.update_layout(title_text=titles[active])
    fig.update_layout(sliders=[{"active": active, "currentvalue": {"prefix": prefix}, "pad": {"t": 50},
                                "steps": steps}])
    return fig


def _f32(values) -> np.ndarray:
    """float32 copy: halves the size of the figure JSON stored in notebooks and pages; plots need no more."""
    return np.asarray(values, dtype=np.float32)


def _hyper_text(hyper: dict) -> str:
    return ", ".join(f"{HYPER_LABELS.get(k, k)}={v:g}" for k, v in hyper.items())


# --------------------------------------------------------------------------------------------------
# Chapter 1: the (r, Â) plane
# --------------------------------------------------------------------------------------------------
def _method_hyper(method: str, eps_low, eps_high, beta1, beta2) -> dict:
    """The hyper-parameters ``gradient_weight`` accepts for ``method`` (DAPO keeps its own wider ε_h)."""
    if method in ("grpo", "ppo_clip"):
        return {"eps_low": eps_low, "eps_high": eps_high}
    if method == "dapo":
        return {"eps_low": eps_low}
    if method == "gppo":
        return {"eps_low": eps_low, "eps_high": eps_high}
    if method == "ce_gppo":
        return {"eps_low": eps_low, "eps_high": eps_high, "beta1": beta1, "beta2": beta2}
    if method == "cispo":
        return {}
    raise ValueError(f"method={method!r} is not one of {', '.join(METHODS)}")


def weight_plane_figure(methods=METHODS, eps_low=0.2, eps_high=0.2, beta1=0.5, beta2=1.0,
                        r_max=2.0, n=100) -> go.Figure:
    """Heat map of the gradient weight F(r, Â) over the (r, Â) plane, one method per slider step.

    White (F = 0) is where a method drops the token's gradient. The dashed lines are r = 1−ε_l and r = 1+ε_h;
    the two corners PPO clips are labelled with the group that mostly lives there (PA&LP, NA&LP).
    """
    r = np.linspace(0.02, r_max, n)
    adv = np.linspace(-1, 1, 41)
    fig = go.Figure()
    for method in methods:
        hyper = _method_hyper(method, eps_low, eps_high, beta1, beta2)
        weight = gradient_weight(r[None, :], adv[:, None], method, **hyper)  # (A, R)
        fig.add_trace(go.Heatmap(x=_f32(r), y=_f32(adv), z=_f32(weight), zmin=0, zmax=max(1.5, r_max), colorscale="Viridis",
                                 name=METHOD_LABELS[method], colorbar={"title": {"text": "F"}},
                                 hovertemplate="r=%{x:.2f}<br>Â=%{y:.2f}<br>F=%{z:.2f}<extra></extra>"))
    for x in (1 - eps_low, 1 + eps_high):
        fig.add_vline(x=x, line_dash="dash", line_color="white")
    fig.add_hline(y=0, line_color="white")
    fig.add_annotation(x=(1 + eps_high + r_max) / 2, y=0.5, text="Â>0, r>1+ε_h<br>mostly PA&LP",
                       showarrow=False, font={"color": GROUP_COLORS["PA&LP"], "size": 14}, bgcolor="white")
    fig.add_annotation(x=(1 - eps_low) / 2, y=-0.5, text="Â<0, r<1−ε_l<br>mostly NA&LP",
                       showarrow=False, font={"color": GROUP_COLORS["NA&LP"], "size": 14}, bgcolor="white")
    labels = [METHOD_LABELS[m] for m in methods]
    titles = [f"Gradient weight F(r, Â) under {METHOD_LABELS[m]} "
              f"({_hyper_text(_method_hyper(m, eps_low, eps_high, beta1, beta2)) or 'defaults'})" for m in methods]
    _add_visibility_slider(fig, [[i] for i in range(len(methods))], labels, "method: ", titles)
    fig.update_layout(height=520, xaxis_title="ratio r = π_θ / π_old", yaxis_title="advantage Â",
                      template=TEMPLATE)
    return fig


def weight_curves_figure(param: str = "beta2", values=(0.0, 0.25, 0.5, 0.75, 1.0, 1.5), methods=METHODS,
                         eps_low=0.2, eps_high=0.2, beta1=0.5, beta2=1.0, r_max=2.0) -> go.Figure:
    """F against r for Â>0 (left) and Â<0 (right), one curve per method; a slider over one hyper-parameter.

    ``param`` is one of ``eps_low``, ``eps_high``, ``beta1``, ``beta2``; each slider step holds the curves
    computed with that value (the others fixed), so the slider moves on the static site.
    """
    fixed = {"eps_low": eps_low, "eps_high": eps_high, "beta1": beta1, "beta2": beta2}
    if param not in fixed:
        raise ValueError(f"param={param!r} is not one of {', '.join(fixed)}")
    if len(values) == 0:
        raise ValueError("values is empty; give at least one value for the slider")
    r = np.linspace(0.01, r_max, 200)
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True,
                        subplot_titles=("Â > 0 (positive advantage)", "Â < 0 (negative advantage)"))
    step_traces = []
    for value in values:
        hyper = {**fixed, param: value}
        indices = []
        for col, adv in ((1, 1.0), (2, -1.0)):
            for method in methods:
                weight = gradient_weight(r, adv, method, **_method_hyper(method, **hyper))
                indices.append(len(fig.data))
                fig.add_trace(go.Scatter(x=_f32(r), y=_f32(weight), mode="lines", name=METHOD_LABELS[method],
                                         legendgroup=method, showlegend=(col == 1),
                                         line={"color": METHOD_COLORS[method], "width": 2.5 if method == "ce_gppo" else 1.8}),
                              row=1, col=col)
        step_traces.append(indices)
    labels = [f"{value:g}" for value in values]
    # DAPO and CISPO keep their own ε_h = 0.28 (CISPO: no lower bound); the chapter's text says so.
    titles = [f"Gradient weight F against r: {_hyper_text({**fixed, param: v})}" for v in values]
    _add_visibility_slider(fig, step_traces, labels, f"{HYPER_LABELS[param]} = ", titles,
                           active=min(range(len(values)), key=lambda k: abs(values[k] - fixed[param])))
    fig.update_xaxes(title_text="ratio r")
    fig.update_yaxes(title_text="F(r, Â)", row=1, col=1)
    fig.update_layout(height=480, template=TEMPLATE, title_font_size=13)
    return fig


def funnel_figure(sample: dict, eps_values=(0.1, 0.15, 0.2, 0.25, 0.3), threshold: float = 0.5,
                  summaries: list[dict] | None = None, max_points: int = 3000) -> go.Figure:
    """The paper's figure 1 (left) from our own numbers: ratio after one update against probability before it.

    Left: one point per token, coloured by group (fixed colours); the horizontal lines mark [1−ε, 1+ε] for the
    slider's ε (ε_l = ε_h = ε). Right: the share of tokens in each probability bin that leave the interval.
    ``summaries`` (one ``demos.funnel_summary`` per ε) goes into the step titles.
    """
    prob, ratio, group = (np.asarray(sample[k]) for k in ("prob", "ratio", "group"))
    fig = make_subplots(rows=1, cols=2, column_widths=[0.62, 0.38],
                        subplot_titles=("ratio after one update", "share outside [1−ε, 1+ε]"))
    keep = np.arange(len(prob))[:max_points]
    for index, name in enumerate(GROUPS):
        sel = keep[group[keep] == index]
        fig.add_trace(go.Scatter(x=_f32(prob[sel]), y=_f32(ratio[sel]), mode="markers", name=name,
                                   marker={"color": GROUP_COLORS[name], "size": 4, "opacity": 0.7}),
                      row=1, col=1)
    always = tuple(range(len(fig.data)))
    edges = np.linspace(0, 1, 11)
    centres = 0.5 * (edges[1:] + edges[:-1])
    bins = np.clip(np.digitize(prob, edges) - 1, 0, len(centres) - 1)
    step_traces = []
    for eps in eps_values:
        start = len(fig.data)
        for y, label in ((1 - eps, f"1−ε = {1 - eps:g}"), (1 + eps, f"1+ε = {1 + eps:g}")):
            fig.add_trace(go.Scatter(x=[0, 1], y=[y, y], mode="lines", name=label, showlegend=False,
                                     line={"color": "black", "dash": "dash"}), row=1, col=1)
        outside = (ratio < 1 - eps) | (ratio > 1 + eps)
        share = np.array([outside[bins == b].mean() if (bins == b).any() else 0.0 for b in range(len(centres))])
        fig.add_trace(go.Bar(x=centres, y=share, width=0.09, name="left the interval", showlegend=False,
                             marker_color=["#56B4E9" if c < threshold else "#0072B2" for c in centres]),
                      row=1, col=2)
        step_traces.append(list(range(start, len(fig.data))))
    if summaries is None:
        titles = [f"ε = {eps:g}" for eps in eps_values]
    else:
        titles = [f"ε = {eps:g}: {100 * s['outside_frac']:.1f}% of tokens leave [1−ε, 1+ε]; "
                  f"{100 * s['outside_lp_share']:.0f}% of those have p < {threshold:g} "
                  f"(of all tokens: {100 * s['lp_frac']:.0f}%)" for eps, s in zip(eps_values, summaries)]
    _add_visibility_slider(fig, step_traces, [f"{e:g}" for e in eps_values], "ε_l = ε_h = ", titles,
                           active=len(eps_values) // 2, always=always)
    fig.update_xaxes(title_text="probability π_old of the sampled token", row=1, col=1)
    fig.update_yaxes(title_text="ratio r (log scale)", type="log", row=1, col=1)
    fig.update_xaxes(title_text="probability bin", range=[0, 1], row=1, col=2)
    fig.update_yaxes(title_text="share outside", range=[0, 1], row=1, col=2)
    fig.update_layout(height=520, template=TEMPLATE, title_font_size=13)
    return fig


# --------------------------------------------------------------------------------------------------
# Chapter 2: gradients through the stop-gradient
# --------------------------------------------------------------------------------------------------
def stop_gradient_figure(ratios, curves: dict, eps_low=0.2, eps_high=0.2) -> go.Figure:
    """Per-token objective ℓ (top) and its gradient ∂ℓ/∂log π = F·Â (bottom) against r, for Â = +1 and −1.

    ``curves[method][adv] = (loss_values, d_loss_d_logp)`` as returned by ``demos.value_and_grad_curves``
    (losses are minimised, so the figure shows their negatives, the objective being maximised).
    """
    fig = make_subplots(rows=2, cols=2, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("Â = +1: objective ℓ", "Â = −1: objective ℓ",
                                        "Â = +1: gradient ∂ℓ/∂log π", "Â = −1: gradient ∂ℓ/∂log π"))
    for method, by_adv in curves.items():
        for col, adv in ((1, 1.0), (2, -1.0)):
            values, grads = by_adv[adv]
            style = {"color": METHOD_COLORS[method], "width": 2.5 if method == "ce_gppo" else 1.8,
                     "dash": "dot" if method in ("grpo", "ppo_clip") else None}
            for row, y in ((1, -np.asarray(values)), (2, -np.asarray(grads))):
                fig.add_trace(go.Scatter(x=ratios, y=y, mode="lines", name=METHOD_LABELS[method],
                                         legendgroup=method, showlegend=(row == 1 and col == 1), line=style),
                              row=row, col=col)
    for x in (1 - eps_low, 1 + eps_high):
        fig.add_vline(x=x, line_dash="dash", line_color="grey")
    fig.update_xaxes(title_text="ratio r", row=2)
    fig.update_yaxes(title_text="ℓ (per token)", row=1, col=1)
    fig.update_yaxes(title_text="∂ℓ/∂log π", row=2, col=1)
    fig.update_layout(height=620, template=TEMPLATE, title_font_size=14,
                      title_text="Value vs gradient: the stop-gradient flattens the value, not the gradient")
    return fig


def grad_vs_prob_figure(centres, curves: dict, title: str | None = None) -> go.Figure:
    """Mean gradient size reaching a token's own logit against its probability, one line per method.

    ``curves[method] = mean |F·Â|·(1−π)`` per probability bin (``demos.grad_norm_by_prob`` + ``binned_mean``).
    """
    fig = go.Figure()
    for method, y in curves.items():
        fig.add_trace(go.Scatter(x=centres, y=y, mode="lines+markers", name=METHOD_LABELS.get(method, method),
                                 line={"color": METHOD_COLORS.get(method, "grey"),
                                       "width": 2.5 if method == "ce_gppo" else 1.8}))
    fig.update_layout(height=440, template=TEMPLATE, xaxis_title="probability π_old of the token",
                      yaxis_title="mean |F·Â|·(1−π)  (gradient on its own logit)",
                      title_text=title or "How much gradient each method sends, by token probability")
    return fig


def logit_update_figure(cases: list[dict]) -> go.Figure:
    """Bars of the logit update Δz_b on every logit of one softmax when one token is kept; a slider over cases.

    Each case is ``demos.single_softmax_update(...)`` plus ``label``, ``token`` and ``group`` (a name in
    ``GROUPS``), and optionally ``short``, the slider's label (default ``label``). Logits are sorted by probability; the kept token's bar wears its group's colour, the others
    green (up) or pink (down). The step title gives ΔH predicted (first order) and measured.
    """
    if not cases:
        raise ValueError("cases is empty; give at least one single_softmax_update result")
    fig = go.Figure()
    step_traces, titles = [], []
    for case in cases:
        order = np.argsort(-case["prob"])
        delta = case["delta"][order]
        colors = [GROUP_COLORS[case["group"]] if b == case["token"] else (UP_COLOR if d > 0 else DOWN_COLOR)
                  for b, d in zip(order, delta)]
        labels = [f"{'▶ ' if b == case['token'] else ''}π={p:.3f}" for b, p in zip(order, case["prob"][order])]
        step_traces.append([len(fig.data)])
        fig.add_trace(go.Bar(x=labels, y=delta, marker_color=colors, name=case["label"],
                             hovertemplate="%{x}<br>Δz=%{y:.4f}<extra></extra>"))
        titles.append(f"{case['label']}: F={case['weight']:.2f}, ΔH predicted {case['dH_pred']:+.4f}, "
                      f"measured {case['dH_meas']:+.4f}")
    _add_visibility_slider(fig, step_traces, [c.get("short", c["label"]) for c in cases], "kept token: ", titles)
    fig.update_layout(height=480, template=TEMPLATE, showlegend=False, title_font_size=13,
                      xaxis_title="logit b (sorted by probability; ▶ = the kept token)",
                      yaxis_title="update Δz_b = −η ∂loss/∂z_b")
    return fig


# --------------------------------------------------------------------------------------------------
# Chapter 3: the token bandit (``bandit.History`` / ``bandit.Sweep``)
# --------------------------------------------------------------------------------------------------
BAND_OPACITY = 0.18


def _hex_to_rgba(color: str, alpha: float) -> str:
    color = color.lstrip("#")
    r, g, b = (int(color[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def _mean_band_traces(per_seed: np.ndarray, name: str, color: str, legendgroup: str | None = None,
                      showlegend: bool = True, dash: str | None = None) -> list[go.Scatter]:
    """A seed-mean line and a ±1 standard deviation band (over seeds). ``per_seed``: ``(seeds, steps)``."""
    per_seed = np.asarray(per_seed, dtype=float)
    steps = np.arange(per_seed.shape[1])
    mean, std = per_seed.mean(0), per_seed.std(0)
    group = legendgroup or name
    band = go.Scatter(x=_f32(np.r_[steps, steps[::-1]]), y=_f32(np.r_[mean + std, (mean - std)[::-1]]),
                      fill="toself", fillcolor=_hex_to_rgba(color, BAND_OPACITY), line={"width": 0},
                      hoverinfo="skip", legendgroup=group, showlegend=False, name=f"{name} ±1 sd")
    line = go.Scatter(x=_f32(steps), y=_f32(mean), mode="lines", name=name, legendgroup=group,
                      showlegend=showlegend, line={"color": color, "width": 2, "dash": dash})
    return [band, line]


def _history_label(history) -> str:
    label = METHOD_LABELS.get(history.method, history.method)
    if history.method == "ce_gppo":
        label += f" β1={history.hyper['beta1']:g}, β2={history.hyper['beta2']:g}"
    return label


def bandit_history_figure(history) -> go.Figure:
    """One token-bandit run: entropy, reward, clip fractions and ΔH (predicted against measured) per step.

    Lines are means over seeds, bands ±1 standard deviation over seeds.
    """
    fig = make_subplots(rows=2, cols=2, vertical_spacing=0.14, horizontal_spacing=0.14,
                        subplot_titles=("entropy (mean over positions)", "reward of the batch",
                                        "share of token-updates clipped", "entropy change per step"))
    color = METHOD_COLORS.get(history.method, "#000000")
    for trace in _mean_band_traces(history.entropy_per_seed, "entropy", color):
        fig.add_trace(trace, row=1, col=1)
    for trace in _mean_band_traces(history.reward_per_seed, "reward", "#0072B2"):
        fig.add_trace(trace, row=1, col=2)
    for name, per_seed, col in (("clipped below (Â<0)", history.clip_low_per_seed, GROUP_COLORS["NA&LP"]),
                                ("clipped above (Â>0)", history.clip_high_per_seed, GROUP_COLORS["PA&LP"])):
        for trace in _mean_band_traces(per_seed, name, col):
            fig.add_trace(trace, row=2, col=1)
    for name, per_seed, col, dash in (("ΔH measured", history.dH_meas_per_seed, "#000000", None),
                                      ("ΔH predicted (first order)", history.dH_pred_per_seed, "#D55E00", "dot")):
        for trace in _mean_band_traces(per_seed, name, col, dash=dash):
            fig.add_trace(trace, row=2, col=2)
    fig.update_xaxes(title_text="step (rollout batch)", row=2)
    fig.update_yaxes(title_text="H (nats)", row=1, col=1)
    fig.update_yaxes(title_text="mean reward", row=1, col=2)
    fig.update_yaxes(title_text="fraction", row=2, col=1)
    fig.update_yaxes(title_text="ΔH per step", row=2, col=2)
    fig.update_layout(height=700, template=TEMPLATE, title_font_size=13,
                      legend={"orientation": "h", "yanchor": "top", "y": -0.12, "x": 0},
                      title_text=f"Token bandit: {_history_label(history)}, {history.seeds} seeds "
                                 f"(mean ±1 sd over seeds)")
    return fig


def entropy_comparison_figure(histories, field: str = "entropy", title: str | None = None) -> go.Figure:
    """The seed-mean of ``field`` (``entropy``, ``entropy_irrelevant``, ``reward``...) with ±1 sd bands, one
    line per run. ``histories`` is a list of ``bandit.History`` (labels and colours from their method)."""
    fig = go.Figure()
    palette = ["#000000", "#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7"]
    for k, history in enumerate(histories):
        color = METHOD_COLORS.get(history.method, palette[k % len(palette)])
        if history.method == "ce_gppo" and sum(h.method == "ce_gppo" for h in histories) > 1:
            color = palette[k % len(palette)]
        per_seed = getattr(history, f"{field}_per_seed", None)
        if per_seed is None:  # a series stored only as its seed-mean
            per_seed = np.asarray(getattr(history, field))[None]
        for trace in _mean_band_traces(per_seed, _history_label(history), color):
            fig.add_trace(trace)
    fig.update_layout(height=460, template=TEMPLATE, xaxis_title="step (rollout batch)",
                      yaxis_title=field.replace("_", " "),
                      title_text=title or f"{field.replace('_', ' ')}: mean over seeds, band ±1 sd")
    return fig


def entropy_prediction_figure(history, max_points: int = 2400) -> go.Figure:
    """Predicted (first order, summed over token groups) against measured entropy change, one point per step
    and seed, with the line y = x."""
    pred = np.asarray(history.dH_pred_per_seed).ravel()[:max_points]
    meas = np.asarray(history.dH_meas_per_seed).ravel()[:max_points]
    lim = float(np.nanmax(np.abs(np.r_[pred, meas]))) * 1.05 or 1.0
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[-lim, lim], y=[-lim, lim], mode="lines", name="y = x",
                             line={"color": "grey", "dash": "dash"}))
    fig.add_trace(go.Scatter(x=_f32(pred), y=_f32(meas), mode="markers", name="one step of one seed",
                             marker={"size": 4, "color": METHOD_COLORS.get(history.method, "#000000"),
                                     "opacity": 0.5}))
    corr = float(np.corrcoef(pred, meas)[0, 1]) if len(pred) > 1 else float("nan")
    fig.update_layout(height=460, template=TEMPLATE, xaxis_title="ΔH predicted (Σ −η·F·Â·I_a over tokens)",
                      yaxis_title="ΔH measured (H after − H before)",
                      title_text=f"{_history_label(history)}: predicted vs measured entropy change per step "
                                 f"(correlation {corr:.3f})")
    return fig


def cumulative_prediction_figure(histories) -> go.Figure:
    """Running sums of the predicted (dotted) and measured (solid) per-step entropy changes, one colour per run:
    where the first-order prediction is biased, the bias accumulates over steps."""
    fig = go.Figure()
    palette = ["#000000", "#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7"]
    for k, history in enumerate(histories):
        color = palette[k % len(palette)]
        steps = _f32(np.arange(history.steps))
        label = _history_label(history) + (f", η={history.toy['lr']:g}" if "lr" in history.toy else "")
        fig.add_trace(go.Scatter(x=steps, y=_f32(np.cumsum(history.dH_meas)), mode="lines", legendgroup=label,
                                 name=f"{label}: measured", line={"color": color, "width": 2}))
        fig.add_trace(go.Scatter(x=steps, y=_f32(np.cumsum(history.dH_pred)), mode="lines", legendgroup=label,
                                 name=f"{label}: predicted", line={"color": color, "width": 2, "dash": "dot"}))
    fig.update_layout(height=460, template=TEMPLATE, xaxis_title="step (rollout batch)",
                      yaxis_title="Σ ΔH since step 0 (seed mean)",
                      title_text="Cumulative entropy change: measured (solid) vs first-order prediction (dotted)")
    return fig


def _moving_average(x: np.ndarray, window: int) -> np.ndarray:
    if window <= 1:
        return np.asarray(x, dtype=float)
    kernel = np.ones(window) / window
    padded = np.r_[np.full(window - 1, x[0]), x]
    return np.convolve(padded, kernel, mode="valid")


def group_contribution_figure(histories, window: int = 10) -> go.Figure:
    """Each token group's first-order contribution to the entropy change of every step (moving average over
    ``window`` steps), the clipped tokens' part, and the measured ΔH; a slider selects the run (method)."""
    if not histories:
        raise ValueError("histories is empty; give at least one bandit.History")
    fig = go.Figure()
    step_traces, labels, titles = [], [], []
    for history in histories:
        start = len(fig.data)
        steps = _f32(np.arange(history.steps))
        for g, name in enumerate(GROUPS):
            fig.add_trace(go.Scatter(x=steps, y=_f32(_moving_average(history.group_dH_pred[:, g], window)),
                                     mode="lines", name=name, line={"color": GROUP_COLORS[name], "width": 2}))
        clipped = np.asarray(history.group_dH_clipped).sum(-1)
        fig.add_trace(go.Scatter(x=steps, y=_f32(_moving_average(clipped, window)), mode="lines",
                                 name="clipped tokens (all groups)", line={"color": "#000000", "dash": "dot"}))
        fig.add_trace(go.Scatter(x=steps, y=_f32(_moving_average(history.dH_meas, window)), mode="lines",
                                 name="ΔH measured", line={"color": "grey", "width": 3}))
        step_traces.append(list(range(start, len(fig.data))))
        labels.append(_history_label(history))
        titles.append(f"Who moves the entropy: {_history_label(history)} (moving average over {window} steps)")
    _add_visibility_slider(fig, step_traces, labels, "run: ", titles)
    fig.add_hline(y=0, line_color="lightgrey")
    fig.update_layout(height=520, template=TEMPLATE, xaxis_title="step (rollout batch)",
                      yaxis_title="contribution to ΔH per step", title_font_size=13)
    return fig


def beta_sweep_figure(sweep, references=(), field: str = "entropy") -> go.Figure:
    """CE-GPPO's ``field`` curve for each (β1, β2) of a ``bandit.Sweep`` on one slider, against reference runs
    (``references``: histories of other methods, always shown)."""
    fig = go.Figure()
    for history in references:
        for trace in _mean_band_traces(getattr(history, f"{field}_per_seed"), _history_label(history),
                                       METHOD_COLORS.get(history.method, "grey"), dash="dash"):
            fig.add_trace(trace)
    always = tuple(range(len(fig.data)))
    step_traces, labels, titles = [], [], []
    final = sweep.final(field, last=max(1, sweep.histories[0][0].steps // 10))
    for i, beta1 in enumerate(sweep.beta1s):
        for j, beta2 in enumerate(sweep.beta2s):
            history = sweep.histories[i][j]
            start = len(fig.data)
            for trace in _mean_band_traces(getattr(history, f"{field}_per_seed"), f"CE-GPPO β1={beta1:g}, β2={beta2:g}",
                                           METHOD_COLORS["ce_gppo"]):
                fig.add_trace(trace)
            step_traces.append(list(range(start, len(fig.data))))
            labels.append(f"β1={beta1:g}, β2={beta2:g}")
            titles.append(f"CE-GPPO with β1={beta1:g}, β2={beta2:g}: final {field.replace('_', ' ')} "
                          f"{final[i, j]:.3f} (mean of the last 10% of steps)")
    default = min(range(len(labels)), key=lambda k: abs(sweep.beta1s[k // len(sweep.beta2s)] - 0.5)
                  + abs(sweep.beta2s[k % len(sweep.beta2s)] - 1.0))
    _add_visibility_slider(fig, step_traces, labels, "", titles, active=default, always=always)
    fig.update_layout(height=520, template=TEMPLATE, xaxis_title="step (rollout batch)",
                      yaxis_title=field.replace("_", " "), title_font_size=13)
    return fig


def beta_grid_figure(sweep, field: str = "entropy") -> go.Figure:
    """Heat map of the final ``field`` (mean of the last 10% of steps) over the (β1, β2) grid of a sweep."""
    final = sweep.final(field, last=max(1, sweep.histories[0][0].steps // 10))
    text = [[f"{v:.3f}" for v in row] for row in final]
    fig = go.Figure(go.Heatmap(x=[f"{b:g}" for b in sweep.beta2s], y=[f"{b:g}" for b in sweep.beta1s], z=final,
                               text=text, texttemplate="%{text}", colorscale="Viridis",
                               colorbar={"title": {"text": field}}))
    fig.update_layout(height=420, template=TEMPLATE, xaxis_title="β2 (upper side, Â>0)",
                      yaxis_title="β1 (lower side, Â<0)",
                      title_text=f"CE-GPPO: final {field.replace('_', ' ')} over the (β1, β2) grid")
    return fig


__all__ = [
    "METHODS",
    "METHOD_COLORS",
    "METHOD_LABELS",
    "BookRenderer",
    "bandit_history_figure",
    "beta_grid_figure",
    "beta_sweep_figure",
    "cumulative_prediction_figure",
    "entropy_comparison_figure",
    "entropy_prediction_figure",
    "funnel_figure",
    "grad_vs_prob_figure",
    "group_contribution_figure",
    "logit_update_figure",
    "setup_notebook",
    "stop_gradient_figure",
    "weight_curves_figure",
    "weight_plane_figure",
]
