"""Plotly figures of LM training runs (chapter 4, chapter 6, ``cegppo report``) and a live-updating figure.

Each figure function takes ``runs``: a dict label -> list of per-step metrics dicts (``lm.run_dir.read_metrics``)
and computes nothing but layout and sums. Token groups wear ``style.GROUP_COLORS``; methods wear their
``style.METHOD_COLORS`` when the label names a method.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..param_entropy import FORMS, attribution_totals
from ..summaries import FINAL_STEPS, final_mean
from ..token_groups import GROUPS
from ..losses import METHODS, method_label
from .style import FALLBACK_COLORS, GROUP_COLORS, METHOD_COLORS, TEMPLATE, finish, wrap

CURVES = (("reward/mean", "reward (train)"), ("eval/accuracy", "held-out accuracy"),
          ("entropy/mean", "token entropy (nats)"), ("response/length_mean", "response length (tokens)"),
          ("clip/low_frac", "clipped below (r<1-ε_l, Â<0)"), ("clip/high_frac", "clipped above (r>1+ε_h, Â>0)"))


def run_label(label: str) -> str:
    """How a figure names a run: a leading method name becomes the method's label ("ce_gppo β1=1" ->
    "CE-GPPO β1=1"), so the book never says "grpo" in one place and "GRPO" in another."""
    head, sep, rest = label.partition(" ")
    return method_label(head) + sep + rest if head in METHODS else label


def run_colors(labels) -> dict[str, str]:
    """One colour per run: the method's colour (``style.METHOD_COLORS``) for the first run of each method, then
    distinct fallback colours, so two runs of one method (a β sweep) never share a colour."""
    colors, used = {}, set()
    spare = (c for c in FALLBACK_COLORS * 4 if c not in METHOD_COLORS.values())
    for label in labels:
        method = next((m for m in sorted(METHOD_COLORS, key=len, reverse=True)
                       if label == m or label.startswith((m + " ", m + "("))), None)
        color = METHOD_COLORS.get(method)
        if color is None or color in used:
            color = next(c for c in spare if c not in used)
        colors[label] = color
        used.add(color)
    return colors


def series(metrics: list[dict], key: str) -> tuple[list[int], list[float]]:
    """Steps and values of ``key`` over the steps that logged it."""
    rows = [(m["step"], m[key]) for m in metrics if key in m]
    return [s for s, _ in rows], [v for _, v in rows]


def trailing_mean(values, window: int) -> np.ndarray:
    """Mean of each value and the ``window − 1`` before it, over as many as there are: the first point is the first
    value, so a smoothed curve starts where the run starts (a "valid" moving average would begin ``window − 1``
    entries late and hide the start)."""
    values = np.asarray(values, dtype=float)
    sums = np.cumsum(np.r_[0.0, values])
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - max(window, 1), 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


def run_curves_figure(runs: dict[str, list[dict]], curves=CURVES, cols: int = 2, smooth: int = 1,
                      title: str = "") -> go.Figure:
    """One panel per metric, one line per run.

    With ``smooth`` > 1 a metric logged at every step is drawn as its raw points (faint markers) under the trailing
    mean of the last ``smooth`` steps (``trailing_mean``, which starts at the first step); a metric logged less
    often (held-out accuracy, every 10 steps) is drawn raw, lines and markers, since averaging its entries would
    average over ``smooth`` evaluations, not steps."""
    rows = -(-len(curves) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[name for _, name in curves],
                        vertical_spacing=0.12, horizontal_spacing=0.08)
    colors = run_colors(runs)
    for label, metrics in runs.items():
        color = colors[label]
        for k, (key, _) in enumerate(curves):
            steps, values = series(metrics, key)
            if not steps:
                continue
            where = dict(row=k // cols + 1, col=k % cols + 1)
            # logged at (nearly) every step: a few missing steps (no group kept) do not make it a sparse metric
            every_step = len(steps) > 1 and float(np.median(np.diff(steps))) == 1
            mode = "lines"
            if smooth > 1 and every_step:
                fig.add_trace(go.Scatter(x=steps, y=values, mode="markers", name=run_label(label), legendgroup=label,
                                         showlegend=False, hoverinfo="skip",
                                         marker=dict(color=color, size=3, opacity=0.35)), **where)
                values = trailing_mean(values, smooth).tolist()
            elif smooth > 1:
                mode = "lines+markers"
            fig.add_trace(go.Scatter(x=steps, y=values, mode=mode, name=run_label(label), legendgroup=label,
                                     showlegend=(k == 0), line=dict(color=color, width=2), marker=dict(size=5)),
                          **where)
    fig.update_xaxes(title_text="RL step", row=rows)
    fig.update_layout(height=250 * rows + 60, title=title or None, template=TEMPLATE, margin_b=40)
    return finish(fig)


def _total(metrics: list[dict], key: str) -> float:
    return float(sum(m.get(key, 0.0) for m in metrics))


def _group_totals_figure(runs: dict[str, list[dict]], stat: str, barmode: str, yaxis_title: str,
                         title: str) -> go.Figure:
    """One bar per run and token group: the metric ``{group}/{stat}`` summed over the run."""
    fig = go.Figure()
    labels = list(runs)
    for group in GROUPS:
        fig.add_trace(go.Bar(x=[run_label(r) for r in labels], y=[_total(runs[r], f"{group}/{stat}") for r in labels],
                             name=group, marker_color=GROUP_COLORS[group]))
    fig.update_layout(barmode=barmode, yaxis_title=yaxis_title, height=380, title=title, template=TEMPLATE)
    return finish(fig)


def clipped_by_group_figure(runs: dict[str, list[dict]]) -> go.Figure:
    """Tokens PPO clips, summed over each run, split by token group (the tokens CE-GPPO gives back a gradient)."""
    return _group_totals_figure(runs, "clipped", "stack", "clipped tokens, whole run", "Clipped tokens by group")


def group_push_figure(runs: dict[str, list[dict]]) -> go.Figure:
    """Each group's summed first-order entropy push Σ −F·Â·I over the run, per run (positive raises entropy)."""
    return _group_totals_figure(runs, "entropy_push", "relative", "Σ −F·Â·I (up = raises entropy)",
                                "Entropy push by token group")


def group_weight_figure(runs: dict[str, list[dict]]) -> go.Figure:
    """Summed gradient weight Σ|F·Â| per token group over each run: where each method's gradient goes."""
    return _group_totals_figure(runs, "weight_sum", "group", "Σ |F·Â| over the run", "Gradient weight by token group")


def entropy_prediction_figure(runs: dict[str, list[dict]]) -> go.Figure:
    """Measured entropy change of each update phase against the first-order push Σ −F·Â·I / tokens."""
    fig = go.Figure()
    colors = run_colors(runs)
    for label, metrics in runs.items():
        rows = [m for m in metrics if "entropy/measured_change" in m and "entropy/predicted_push" in m]
        fig.add_trace(go.Scatter(x=[m["entropy/predicted_push"] for m in rows],
                                 y=[m["entropy/measured_change"] for m in rows], mode="markers", name=run_label(label),
                                 marker=dict(color=colors[label], size=5, opacity=0.6)))
    fig.update_layout(xaxis_title="predicted push (Σ −F·Â·I per token)", yaxis_title="measured ΔH (nats)",
                      height=400, title="First-order entropy predictor vs measured change", template=TEMPLATE)
    return finish(fig)


FORM_LABELS = {"step": "gradient before each step", "trapezoid": "trapezoid", "phase": "one gradient per phase"}
FORM_COLORS = {"step": "#0072B2", "trapezoid": "#000000", "phase": "#D55E00"}


def param_prediction_figure(metrics: list[dict]) -> go.Figure:
    """Measured ΔH̄ of each update phase against the three parameter-space predictions (``param_entropy``), with
    the diagonal where a prediction is exact."""
    rows = [m for m in metrics if "entropy/param_pred/measured" in m]
    measured = [m["entropy/param_pred/measured"] for m in rows]
    fig = go.Figure()
    for form in FORMS:
        fig.add_trace(go.Scatter(x=[m[f"entropy/param_pred/{form}"] for m in rows], y=measured, mode="markers",
                                 name=FORM_LABELS[form], marker=dict(color=FORM_COLORS[form], size=6, opacity=0.7)))
    ends = [min(measured + [m[f"entropy/param_pred/{f}"] for m in rows for f in FORMS]),
            max(measured + [m[f"entropy/param_pred/{f}"] for m in rows for f in FORMS])]
    fig.add_trace(go.Scatter(x=ends, y=ends, mode="lines", name="exact", line=dict(color="#999999", dash="dot")))
    fig.update_layout(xaxis_title="predicted ΔH̄ (nats)", yaxis_title="measured ΔH̄ (nats)", height=420,
                      title="Parameter-space predictions of each update phase's entropy change", template=TEMPLATE)
    return finish(fig)


def entropy_attribution_figure(metrics: list[dict]) -> go.Figure:
    """Each part's share of ΔH̄ summed over a run's attributed phases: the token classes (by π_old) split into
    inside and clipped, then the carried momentum (weight decay when it is on)."""
    totals = attribution_totals(metrics)
    fig = go.Figure()
    for side, pattern in (("inside the interval", None), ("clipped", "/")):
        shares = [totals.get(f"{g}/{'clipped' if pattern else 'inside'}", 0.0) for g in GROUPS]
        fig.add_trace(go.Bar(x=list(GROUPS), y=shares, name=side, marker=dict(
            color=[GROUP_COLORS[g] for g in GROUPS], pattern_shape=pattern, line=dict(color="#333333", width=1))))
    rest = [name for name in ("momentum", "weight_decay") if totals.get(name)]
    fig.add_trace(go.Bar(x=rest, y=[totals[n] for n in rest], name="AdamW's momentum",
                         marker=dict(color="#BBBBBB", line=dict(color="#333333", width=1))))
    fig.update_layout(barmode="relative", yaxis_title="share of ΔH̄ over the run (nats)", height=420,
                      title="Where the entropy change comes from (trapezoid shares)", template=TEMPLATE)
    return finish(fig)


def summary_rows(runs: dict[str, list[dict]]) -> list[dict]:
    """Final numbers per run: held-out accuracy first, last and over the last 3 evaluations, and the final
    (``summaries.final_mean``, the last ``FINAL_STEPS`` steps) reward, entropy and clip fractions."""
    out = []
    for label, metrics in runs.items():
        steps = [m for m in metrics if m.get("step", 0) > 0]
        _, acc = series(metrics, "eval/accuracy")

        def final(key):
            values = [m[key] for m in steps if key in m]
            return float(final_mean(values)) if values else float("nan")
        tail = f"(last {FINAL_STEPS})"
        out.append({"run": label, "steps": steps[-1]["step"] if steps else 0,
                    "eval/accuracy (first)": acc[0] if acc else float("nan"),
                    "eval/accuracy (last)": acc[-1] if acc else float("nan"),
                    "eval/accuracy (last 3 mean)": float(np.mean(acc[-3:])) if acc else float("nan"),
                    f"reward {tail}": final("reward/mean"), f"entropy {tail}": final("entropy/mean"),
                    f"clip low {tail}": final("clip/low_frac"), f"clip high {tail}": final("clip/high_frac")})
    return out


# What each panel of chapter 6's figures shows on a GPU run, for the smoke mode's one annotated figure
# (``gpu_preview_figure``): (panel title, the metric keys the smoke run logged for it, what to look for on a GPU).
GPU_PANELS = (
    ("token entropy (nats)", ("entropy/mean",),
     "On a GPU, one run per method: the paper's claim is here. GRPO's entropy falls, DAPO's rises, CE-GPPO's "
     "stays near its start (the paper in brief §5, the authors' 7B figure)."),
    ("reward (train) and held-out avg@k", ("reward/mean", "eval/accuracy"),
     "On a GPU: both rise as the model learns to end with a boxed answer that math-verify accepts."),
    ("PA&LP clipped above, NA&LP clipped below", ("PA&LP/clip_high_frac", "NA&LP/clip_low_frac"),
     "On a GPU: the share of tokens PPO's clip drops on each side, where CE-GPPO's β2 (above, Â>0) and β1 "
     "(below, Â<0) give a bounded gradient back. The other two sides are zero by definition."),
    ("clipped tokens by group, whole run", tuple(f"{g}/clipped" for g in GROUPS),
     "On a GPU: chapter 4's bars for this run, stacked by token group: most clipped tokens are low-probability."),
)


def gpu_preview_figure(runs: dict[str, list[dict]]) -> go.Figure:
    """Chapter 6 in smoke mode: one figure, four annotated panels saying what each of the chapter's figures shows on
    a GPU run, instead of three figures of flat lines.

    A random tiny model on the fixture problems earns −1 on every response, so every advantage is 0 and nothing
    is clipped: each panel states what the smoke run logged (its number of steps and the range of the panel's
    metrics, read from ``runs``) and what to look for on a GPU (``GPU_PANELS``). No curve is drawn: a flat line
    of a random model would look like a result.
    """
    fig = make_subplots(rows=len(GPU_PANELS), cols=1, subplot_titles=[title for title, _, _ in GPU_PANELS],
                        vertical_spacing=0.07)
    for row, (_, keys, text) in enumerate(GPU_PANELS, start=1):
        logged = []
        for label, metrics in runs.items():
            steps = [m for m in metrics if m.get("step", 0) > 0]
            values = [m[k] for m in metrics for k in keys if k in m]
            span = (f"{min(values):g}" if values and min(values) == max(values)
                    else f"{min(values):g} to {max(values):g}" if values else "not logged")
            logged.append(f"{run_label(label)}: {len(steps)} step{'' if len(steps) == 1 else 's'}, {', '.join(keys) if len(keys) < 3 else 'per group'}"
                          f" = {span}")
        axis = "" if row == 1 else str(row)
        fig.add_annotation(xref=f"x{axis} domain", yref=f"y{axis} domain", x=0.02, y=0.5, xanchor="left",
                           yanchor="middle", align="left", showarrow=False, font=dict(size=12),
                           text=wrap(text, 78) + "<br><i>Smoke mode, " + wrap("; ".join(logged), 72) + "</i>")
        fig.update_xaxes(visible=False, row=row, col=1)
        fig.update_yaxes(visible=False, row=row, col=1)
        fig.add_shape(type="rect", xref=f"x{axis} domain", yref=f"y{axis} domain", x0=0, x1=1, y0=0, y1=1,
                      line=dict(color="#C9CED4", width=1), fillcolor="rgba(0,0,0,0)")
    fig.update_layout(height=150 * len(GPU_PANELS) + 80, template=TEMPLATE, showlegend=False,
                      title="Chapter 6's figures on a GPU run: what each panel shows (this page ran in smoke mode)")
    return finish(fig)


class LiveFigure:
    """A training callback that redraws reward, entropy and held-out accuracy while a run goes.

    ``trainer.Trainer(..., callbacks=[live])``. In a notebook it replaces the cell's figure every ``every`` steps
    (``clear_output(wait=True)`` then ``display``, so the saved notebook keeps one figure, the last state, which
    the static book shows). Anything else the cell printed before the run is cleared with it.
    """

    def __init__(self, label: str = "run", every: int = 5, display: bool = True):
        self.label, self.every, self.display, self.history = label, every, display, []
        self.fig = run_curves_figure({label: []}, curves=CURVES[:3], cols=3)

    def __call__(self, metrics: dict) -> None:
        self.history.append(metrics)
        if metrics.get("step", 0) % self.every == 0:
            self.refresh()

    def refresh(self) -> None:
        self.fig = run_curves_figure({self.label: self.history}, curves=CURVES[:3], cols=3)
        self.fig.update_layout(height=330, title=f"{run_label(self.label)}: step {self.history[-1]['step']}"
                               if self.history else run_label(self.label))
        finish(self.fig)
        if self.display:
            from IPython.display import clear_output, display

            clear_output(wait=True)
            display(self.fig)
