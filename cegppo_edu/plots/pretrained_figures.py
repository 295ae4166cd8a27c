"""Figures of chapter 5, a real pretrained model (SmolLM2-135M-Instruct): its answers token by token before RL, the
low-probability tail of what it samples, and which tokens PPO's clip cuts in each token group during RL."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..token_groups import GROUP_ENTROPY_EFFECT, GROUPS, HP_THRESHOLD
from .run_figures import run_colors, run_label
from .style import TEMPLATE, finish


def answer_tokens_figure(answer) -> go.Figure:
    """One sampled answer (``pretrained.before_rl.ScoredAnswer``), token by token: the probability π it was sampled
    with (dots, log scale) and the entropy H of the distribution it came from (line), token text on hover."""
    pieces = [p.replace("\n", "⏎") or "·" for p in answer.pieces]
    x = np.arange(1, len(pieces) + 1)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    colors = np.where(answer.prob < HP_THRESHOLD, "#d62728", "#1f77b4")
    # dots, not bars: a bar on a log axis reaches down to π = 0, far below the plot, and its box (clipped from view
    # but not from the page's layout) would sit over the legend on a phone
    fig.add_trace(go.Scatter(x=x, y=answer.prob, mode="markers", marker=dict(color=colors, size=9),
                             name="π of the sampled token", customdata=pieces,
                             hovertemplate="token %{x}: “%{customdata}”<br>π = %{y:.3f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=x, y=answer.entropy, mode="lines+markers", name="H where it was drawn (nats)",
                             line=dict(color="#444", width=1.5), marker=dict(size=4),
                             hovertemplate="token %{x}: H = %{y:.2f} nats<extra></extra>"), secondary_y=True)
    fig.update_yaxes(title_text="π (log scale)", type="log", range=[-3.2, 0.05], secondary_y=False)
    fig.update_yaxes(title_text="H (nats)", rangemode="tozero", secondary_y=True, showgrid=False)
    fig.update_xaxes(title_text="response token")
    fig.update_layout(template=TEMPLATE, height=330, margin_b=40,
                      legend=dict(orientation="h", y=-0.3, x=0))
    return finish(fig)


def sampled_prob_figure(answers, threshold: float = HP_THRESHOLD) -> go.Figure:
    """Histogram of π over every sampled token, in correct and wrong answers, on a log axis; the line at the
    threshold that splits high- from low-probability tokens (``token_groups.HP_THRESHOLD``)."""
    fig = go.Figure()
    edges = np.logspace(-4, 0, 33)
    for correct, name, color in ((True, "tokens of correct answers", "#2ca02c"),
                                 (False, "tokens of wrong answers", "#d62728")):
        probs = np.concatenate([a.prob for a in answers if (a.reward > 0) == correct] or [np.zeros(0)])
        if probs.size:
            counts, _ = np.histogram(np.clip(probs, 1e-4, 1.0), bins=edges)
            fig.add_trace(go.Bar(x=np.sqrt(edges[:-1] * edges[1:]), y=counts / probs.size, name=name,
                                 marker_color=color, opacity=0.7, width=np.diff(edges) * 0.9))
    fig.add_vline(x=threshold, line_dash="dash", line_color="#555",
                  annotation_text=f"π = {threshold:g}: below it, LP", annotation_position="top left")
    fig.update_xaxes(title_text="π of the sampled token (log scale)", type="log")
    fig.update_yaxes(title_text="share of the tokens")
    fig.update_layout(template=TEMPLATE, height=330, barmode="overlay", margin_b=40,
                      legend=dict(orientation="h", y=-0.3, x=0))
    return finish(fig)


def clipped_by_group_figure(per_method: dict[str, dict[str, dict[str, float]]]) -> go.Figure:
    """Per token group (PA/NA × HP/LP), the share of its tokens on PPO's clipped side, one bar per method; the mean
    π of the group in the hover. ``per_method[method][group]``: ``{"clipped", "mean_prob", "frac"}``."""
    fig = go.Figure()
    colors = run_colors(list(per_method))
    labels = [f"{g}<br>({GROUP_ENTROPY_EFFECT[g]} H)" for g in GROUPS]
    for method, groups in per_method.items():
        fig.add_trace(go.Bar(x=labels, y=[groups[g]["clipped"] for g in GROUPS], name=run_label(method),
                             marker_color=colors[method],
                             customdata=[[groups[g]["mean_prob"], groups[g]["frac"]] for g in GROUPS],
                             hovertemplate="%{x}: %{y:.2%} of its tokens clipped<br>mean π %{customdata[0]:.2f}, "
                                           "%{customdata[1]:.1%} of all tokens<extra>" + run_label(method) + "</extra>"))
    fig.update_yaxes(title_text="share of the group's tokens clipped", tickformat=".1%", rangemode="tozero")
    fig.update_layout(template=TEMPLATE, height=340, barmode="group", margin_b=40,
                      legend=dict(orientation="h", y=-0.3, x=0))
    return finish(fig)


CURVES = (("entropy/mean", "token entropy (nats)"), ("reward/mean", "train reward (+1 right, −1 wrong)"),
          ("eval/accuracy", "held-out accuracy (greedy)"))


def method_curves_figure(runs, curves=CURVES) -> go.Figure:
    """One panel per metric, one line per method: the mean over the seeds of a ``study.Study`` and its 95 %
    Student-t band (an accuracy's band cut at 0 and 1)."""
    from ..summaries import seed_interval
    from .style import BAND_OPACITY, hex_to_rgba

    fig = make_subplots(rows=1, cols=len(curves), subplot_titles=[title for _, title in curves],
                        horizontal_spacing=0.08)
    colors = run_colors(list(runs.runs))
    for name in runs.runs:
        for col, (key, _) in enumerate(curves, 1):
            steps, values = runs.series(name, key)
            mean, low, high = seed_interval(values)
            if key == "eval/accuracy":
                low, high = np.clip(low, 0.0, 1.0), np.clip(high, 0.0, 1.0)
            fig.add_trace(go.Scatter(x=np.concatenate([steps, steps[::-1]]), y=np.concatenate([high, low[::-1]]),
                                     fill="toself", fillcolor=hex_to_rgba(colors[name], BAND_OPACITY),
                                     line=dict(width=0), hoverinfo="skip", showlegend=False, legendgroup=name),
                          row=1, col=col)
            fig.add_trace(go.Scatter(x=steps, y=mean, mode="lines+markers" if len(steps) < 6 else "lines",
                                     name=run_label(name), legendgroup=name, showlegend=col == 1,
                                     line=dict(color=colors[name], width=2)), row=1, col=col)
    fig.update_xaxes(title_text="RL step")
    fig.update_layout(template=TEMPLATE, height=360, margin_b=40, legend=dict(orientation="h", y=-0.3, x=0))
    return finish(fig)


def prediction_scatter_figure(phases: list[dict], form: str = "trapezoid") -> go.Figure:
    """Predicted (``entropy/param_pred/<form>``) against measured entropy change, one point per update phase, with
    the diagonal where the two are equal."""
    measured = np.array([m["entropy/param_pred/measured"] for m in phases])
    predicted = np.array([m[f"entropy/param_pred/{form}"] for m in phases])
    edge = float(np.max(np.abs(np.concatenate([measured, predicted])))) * 1.1 or 1.0
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[-edge, edge], y=[-edge, edge], mode="lines", name="predicted = measured",
                             line=dict(color="#999", dash="dash")))
    fig.add_trace(go.Scatter(x=measured, y=predicted, mode="markers", name=f"update phases ({form})",
                             marker=dict(color="#1f77b4", size=8),
                             hovertemplate="measured %{x:.2e}<br>predicted %{y:.2e}<extra></extra>"))
    fig.update_xaxes(title_text="measured ΔH̄ of the phase (nats)", range=[-edge, edge])
    fig.update_yaxes(title_text="predicted ΔH̄ (nats)", range=[-edge, edge])
    fig.update_layout(template=TEMPLATE, height=380, margin_b=40, legend=dict(orientation="h", y=-0.3, x=0))
    return finish(fig)
