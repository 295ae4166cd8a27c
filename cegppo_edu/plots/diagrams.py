"""Figures of the book's text pages (not the chapters'): drawn when the book is built, by the directive
``cegppo-figure`` of ``book/_ext/book_directives.py``, from the package's own functions.

``FIGURES`` maps the name a page gives the directive to the function that draws it. Like ``figures``, these
take their numbers from ``losses`` and compute nothing but layout.
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..losses import get_method, gradient_weight
from .figures import weight_breakpoints
from .style import TEMPLATE, f32, method_color, method_label

# The two methods the background page contrasts; each with its registry defaults.
CONTRAST = ("grpo", "ce_gppo")
SHADE = "rgba(230, 159, 0, 0.16)"  # the clipped corners


def clipped_corners_figure(methods=CONTRAST, r_max: float = 2.0) -> go.Figure:
    """F(r, Â) against r for Â>0 (left) and Â<0 (right) under PPO/GRPO and CE-GPPO, each at its defaults.

    The shaded band of each panel is the corner PPO clips (r>1+ε_h with Â>0, r<1−ε_l with Â<0, CE-GPPO's ε):
    PPO/GRPO's weight drops to 0 there, CE-GPPO's stays at β2(1+ε_h) or β1(1−ε_l). The annotation in each band
    gives both weights there, computed by ``losses.gradient_weight``.
    """
    reference = get_method("ce_gppo").resolve()
    low, high = 1 - reference["eps_low"], 1 + reference["eps_high"]
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=("Â > 0: the upper corner is clipped", "Â < 0: the lower corner is clipped"))
    fig.update_annotations(font_size=13)  # the two subplot titles, the only annotations so far
    for col, adv, (x0, x1), probe in ((1, 1.0, (high, r_max), (high + r_max) / 2), (2, -1.0, (0.0, low), low / 2)):
        lines = []
        for method in sorted(methods, key=lambda m: m != "ce_gppo"):  # CE-GPPO first: the dashes stay visible on it
            r = weight_breakpoints(method, 0.0, r_max)
            fig.add_trace(go.Scatter(x=f32(r), y=f32(gradient_weight(r, adv, method)), mode="lines",
                                     name=method_label(method), legendgroup=method, showlegend=col == 1,
                                     line={"color": method_color(method), "width": 3 if method == "ce_gppo" else 2,
                                           "dash": None if method == "ce_gppo" else "dash"}),
                          row=1, col=col)
            lines.append(f"{method_label(method)}: F = {float(gradient_weight(probe, adv, method)):g}")
        # after the traces: plotly leaves a shape out of a subplot that has no trace yet
        fig.add_vrect(x0=x0, x1=x1, fillcolor=SHADE, line_width=0, layer="below", row=1, col=col)
        fig.add_annotation(x=probe, y=1.55, text="clipped corner<br>" + "<br>".join(lines), showarrow=False,
                           font={"size": 11}, row=1, col=col)
    fig.update_xaxes(title_text="ratio r = π_θ / π_old", range=[0, r_max])
    fig.update_yaxes(title_text="weight F(r, Â)", range=[-0.05, 2.0], row=1, col=1)
    fig.update_layout(template=TEMPLATE, height=400, margin={"t": 70, "b": 50, "l": 60, "r": 20},
                      title={"text": "F on Â·∇log π: PPO/GRPO drops the clipped corner, CE-GPPO keeps it",
                             "font": {"size": 15}},
                      legend={"x": 0.01, "y": 0.98, "xanchor": "left", "yanchor": "top",
                              "bgcolor": "rgba(255,255,255,0.85)"})
    return fig


FIGURES = {"clipped_corners": clipped_corners_figure}

__all__ = ["CONTRAST", "FIGURES", "clipped_corners_figure"]
