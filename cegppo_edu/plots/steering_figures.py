"""Figures of chapter 7 (``steering``): H against its target H*(t) for every row of a comparison, and the β1, β2
the two β controllers chose each step; a slider picks the target."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..steering import COMPARISON_ROWS, Comparison
from ..summaries import seed_interval
from .style import BAND_OPACITY, TEMPLATE, add_visibility_slider, f32, finish, hex_to_rgba, moving_average

# One colour per row of the comparison (Okabe-Ito and Tol), in the order of steering.COMPARISON_ROWS.
ROW_COLORS = dict(zip((label for label, _, _ in COMPARISON_ROWS),
                      ("#000000", "#D55E00", "#0072B2", "#CC79A7", "#009E73", "#999933", "#882255")))
BETA_ROWS = tuple(label for label, _, controller in COMPARISON_ROWS if controller in ("predictive", "pi"))
TARGET_COLOR = "#555555"


def tracking_figure(comparisons: dict[str, Comparison], smooth: int = 1, title: str = "") -> go.Figure:
    """Top: each row's H (seed mean; the predictive row with its 95 % band), the target H*(t) dashed. Bottom: β1
    (solid) and β2 (dotted) of the β controllers, seed mean. ``smooth``: a moving average over steps, per seed
    first (the transformer's batch entropy is noisy). The slider shows one target's comparison at a time."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, row_heights=[0.62, 0.38],
                        subplot_titles=("entropy H and its target H* (nats)", "β1 (solid) and β2 (dotted) chosen"))
    per_target = []
    for comparison in comparisons.values():
        first = len(fig.data)
        _add_entropy(fig, comparison, smooth)
        _add_betas(fig, comparison)
        per_target.append(list(range(first, len(fig.data))))
    add_visibility_slider(fig, per_target, list(comparisons), "target: ",
                          titles=[f"{title}, {name} target" if title else f"{name} target" for name in comparisons])
    fig.update_xaxes(title_text="RL step", row=2, col=1)
    fig.update_layout(height=660, template=TEMPLATE, legend=dict(orientation="h", y=-0.4, x=0), margin_b=90)
    return finish(fig)


def _add_entropy(fig: go.Figure, comparison: Comparison, smooth: int) -> None:
    steps = np.arange(1, comparison.runs[0].entropy.shape[1] + 1)
    for run in comparison.runs:
        color = ROW_COLORS.get(run.label, "#555555")
        mean, low, high = seed_interval([moving_average(e, smooth) for e in run.entropy])
        if run.controller == "predictive":
            fig.add_trace(go.Scatter(x=np.r_[steps, steps[::-1]], y=f32(np.r_[high, low[::-1]]), fill="toself",
                                     fillcolor=hex_to_rgba(color, BAND_OPACITY), line=dict(width=0),
                                     hoverinfo="skip", showlegend=False, legendgroup=run.label), row=1, col=1)
        fig.add_trace(go.Scatter(x=steps, y=f32(mean), mode="lines", name=run.label, legendgroup=run.label,
                                 line=dict(color=color, width=2.5 if run.controller == "predictive" else 1.5)),
                      row=1, col=1)
    fig.add_trace(go.Scatter(x=steps, y=f32(comparison.runs[0].target[0]), mode="lines", name="target H*",
                             line=dict(color=TARGET_COLOR, width=2, dash="dash")), row=1, col=1)


def _add_betas(fig: go.Figure, comparison: Comparison) -> None:
    steps = np.arange(1, comparison.runs[0].entropy.shape[1] + 1)
    for label in BETA_ROWS:
        run = comparison.run(label)
        for values, dash in ((run.beta1, "solid"), (run.beta2, "dot")):
            fig.add_trace(go.Scatter(x=steps, y=f32(np.nanmean(values, 0)), mode="lines", legendgroup=label,
                                     showlegend=False, name=f"{label}: {'β1' if dash == 'solid' else 'β2'}",
                                     line=dict(color=ROW_COLORS[label], width=1.5, dash=dash)), row=2, col=1)


__all__ = ["BETA_ROWS", "ROW_COLORS", "tracking_figure"]
