"""Figures of chapter 4's many-seed comparison (``experiments.study``): curves as a mean over seeds with a 95 % band, and
the β grid's final entropy and accuracy as two annotated heatmaps."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..experiments import study as st
from ..summaries import FINAL_STEPS, seed_interval
from .run_figures import run_colors
from .style import BAND_OPACITY, TEMPLATE, finish, hex_to_rgba, moving_average


def seed_curves_figure(study: st.Study, names=("grpo", "dapo", st.CE_GPPO), smooth: int = 5) -> go.Figure:
    """Entropy (moving average over ``smooth`` steps, per seed first) and held-out accuracy of each configuration:
    the mean over seeds as a line, its 95 % Student-t interval as a band (cut at 0 and 1 for the accuracy)."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1, subplot_titles=(
        f"token entropy of the rollouts (nats, {smooth}-step average)", "held-out accuracy (greedy)"))
    # the method's colour for its first configuration (run_colors reads the method from the label's head)
    colors = run_colors([f"{st.CONFIGS[name]['method']} {name}" for name in names])
    for name in names:
        color = colors[f"{st.CONFIGS[name]['method']} {name}"]
        for col, key, window in ((1, st.ENTROPY, smooth), (2, st.ACCURACY, 1)):
            steps, values = study.series(name, key)
            mean, low, high = seed_interval([moving_average(v, window) for v in values])
            if key == st.ACCURACY:  # the band is drawn within the accuracy's range [0, 1]
                low, high = np.clip(low, 0.0, 1.0), np.clip(high, 0.0, 1.0)
            fig.add_trace(go.Scatter(x=np.concatenate([steps, steps[::-1]]), y=np.concatenate([high, low[::-1]]),
                                     fill="toself", fillcolor=hex_to_rgba(color, BAND_OPACITY), line=dict(width=0),
                                     hoverinfo="skip", showlegend=False, legendgroup=name), row=1, col=col)
            fig.add_trace(go.Scatter(x=steps, y=mean, mode="lines", name=st.label(name), legendgroup=name,
                                     showlegend=col == 1, line=dict(color=color, width=2)), row=1, col=col)
    fig.update_xaxes(title_text="RL step")
    fig.update_layout(height=400, template=TEMPLATE, margin_b=40,
                      legend=dict(orientation="h", y=-0.25, x=0))
    return finish(fig)


def beta_grid_figure(study: st.Study) -> go.Figure:
    """Final entropy and final held-out accuracy of CE-GPPO on the β grid: mean over seeds, with the 95 % interval
    written in each cell, and a colour scale beside each heat map.

    An accuracy lies in [0, 1], but a Student-t interval over few seeds can reach past either end; the interval
    written in an accuracy cell is cut at 0 and 1 (the subplot title says so). The axes are categorical: equal
    cells, whatever the spacing of the β values."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.16, subplot_titles=(
        f"final entropy (nats, last {FINAL_STEPS} steps)", "final held-out accuracy (interval cut at 0 and 1)"))
    for col, key, scale in ((1, st.ENTROPY, "Blues"), (2, st.ACCURACY, "Greens")):
        cells = [[seed_interval(study.final(st.ce_gppo_name(b1, b2), key)) for b2 in st.BETA2S] for b1 in st.BETA1S]
        if key == st.ACCURACY:  # what an accuracy can be
            cells = [[(m, np.clip(lo, 0.0, 1.0), np.clip(hi, 0.0, 1.0)) for m, lo, hi in row] for row in cells]
        mean = np.array([[float(c[0]) for c in row] for row in cells])
        text = [[f"{float(m):.3f}<br>[{float(lo):.3f}, {float(hi):.3f}]" for m, lo, hi in row] for row in cells]
        title = "H (nats)" if key == st.ENTROPY else "accuracy"
        fig.add_trace(go.Heatmap(z=mean, x=[f"β2={b:g}" for b in st.BETA2S], y=[f"β1={b:g}" for b in st.BETA1S],
                                 text=text, texttemplate="%{text}", textfont=dict(size=11), colorscale=scale,
                                 colorbar=dict(title=dict(text=title), x=0.42 if col == 1 else 1.0, len=0.9,
                                               thickness=12),
                                 hovertemplate="%{y}, %{x}<br>%{text}<extra></extra>"),
                      row=1, col=col)
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category")
    fig.update_yaxes(showticklabels=False, row=1, col=2)  # the same β1 rows as the left map
    fig.update_layout(height=420, template=TEMPLATE, margin=dict(b=40, l=70, r=30))
    return finish(fig)


__all__ = ["beta_grid_figure", "seed_curves_figure"]
