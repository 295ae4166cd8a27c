"""The argument of the book in one picture: the four token groups, the way each moves the entropy, and what
PPO/GRPO, DAPO and CE-GPPO do with the clipped ones (chapter 2, "The argument in one picture").

Nothing here is typed in: the direction of each group comes from ``token_groups.GROUP_ENTROPY_EFFECT``, the
HP/LP threshold from ``token_groups.HP_THRESHOLD``, each method's clip bounds and β from its registry defaults
(``losses.get_method``), and the weight F each method gives a clipped token from ``losses.gradient_weight``.
A chapter may pass the one-softmax ΔH it measured per group (``delta_h``), which the cells then show.
"""

from __future__ import annotations

import plotly.graph_objects as go

from ..losses import get_method, gradient_weight
from ..token_groups import GROUP_ENTROPY_EFFECT, HP_THRESHOLD
from .style import GROUP_COLORS, TEMPLATE, hex_to_rgba, method_label

# The three methods the picture contrasts, in the order the text reads them.
SCHEMATIC_METHODS = ("grpo", "dapo", "ce_gppo")
ARROWS = {"raises": "▲ raises H", "lowers": "▼ lowers H"}
# Cell layout: (column, row) of each group; columns HP | LP, rows PA (top) | NA (bottom).
CELLS = {"PA&HP": (0, 1), "PA&LP": (1, 1), "NA&HP": (0, 0), "NA&LP": (1, 0)}


def clipped_weights(methods=SCHEMATIC_METHODS) -> dict[str, dict[str, float]]:
    """The weight F each method gives a token far past its clipped side, per clipped group, at its defaults.

    ``{"PA&LP": {method: F at r = 1 + 2·ε_h, Â = +1}, "NA&LP": {method: F at r = (1 − ε_l) / 2, Â = −1}}``,
    each ratio outside every compared method's interval (so DAPO's wider upper bound does not keep it)."""
    widest_high = max(get_method(m).resolve()["eps_high"] for m in methods)
    widest_low = max(get_method(m).resolve()["eps_low"] for m in methods)
    above, below = 1 + 2 * widest_high, (1 - widest_low) / 2
    return {"PA&LP": {m: float(gradient_weight(above, 1.0, m)) for m in methods},
            "NA&LP": {m: float(gradient_weight(below, -1.0, m)) for m in methods}}


def _bound_text(method: str, group: str) -> str:
    hyper = get_method(method).resolve()
    return f"r > {1 + hyper['eps_high']:g}" if group == "PA&LP" else f"r < {1 - hyper['eps_low']:g}"


def _cell_text(group: str, weights: dict, delta_h: dict | None) -> str:
    lines = [f"<b>{group}</b>", ARROWS[GROUP_ENTROPY_EFFECT[group]]]
    if delta_h and group in delta_h:
        lines.append(f"one softmax step: ΔH = {delta_h[group]:+.3f}")
    if group in weights:  # a low-probability group: its tokens leave the interval and get clipped
        lines.append("<i>clipped tokens</i> (F of a token far outside):")
        for method, weight in weights[group].items():
            verdict = "dropped" if weight == 0 else "kept"
            lines.append(f"{method_label(method)} ({_bound_text(method, group)}): F = {weight:g}, {verdict}")
    else:
        lines.append("inside the interval: F = r for every method")
    return "<br>".join(lines)


def argument_figure(delta_h: dict | None = None, methods=SCHEMATIC_METHODS) -> go.Figure:
    """A 2×2 schematic: PA/NA (rows) × HP/LP (columns), each cell in its group's fixed colour with the direction
    in which its tokens move the entropy H and, for the two low-probability groups whose tokens get clipped, the
    weight F each of ``methods`` gives them (0: the method drops that push).

    ``delta_h``: optional ``{group: ΔH}`` measured by the chapter, printed in each cell."""
    weights = clipped_weights(methods)
    fig = go.Figure()
    for group, (col, row) in CELLS.items():
        color = GROUP_COLORS[group]
        fig.add_shape(type="rect", x0=col + 0.03, x1=col + 0.97, y0=row + 0.03, y1=row + 0.97,
                      fillcolor=hex_to_rgba(color, 0.16), line={"color": color, "width": 3}, layer="below")
        fig.add_annotation(x=col + 0.5, y=row + 0.5, text=_cell_text(group, weights, delta_h), showarrow=False,
                           align="center", font={"size": 12})
    # an invisible trace per group: hover text for readers of the figure's data, and axes that plotly draws
    for group, (col, row) in CELLS.items():
        fig.add_trace(go.Scatter(x=[col + 0.5], y=[row + 0.5], mode="markers", marker={"opacity": 0, "size": 1},
                                 name=group, showlegend=False,
                                 hovertext=_cell_text(group, weights, delta_h), hoverinfo="text"))
    threshold = f"{HP_THRESHOLD:g}"
    fig.update_xaxes(range=[0, 2], tickvals=[0.5, 1.5], showgrid=False, zeroline=False, fixedrange=True,
                     ticktext=[f"HP: π ≥ {threshold}", f"LP: π < {threshold}"], side="top")
    fig.update_yaxes(range=[0, 2], tickvals=[0.5, 1.5], showgrid=False, zeroline=False, fixedrange=True,
                     ticktext=["NA: Â < 0", "PA: Â > 0"])
    fig.update_layout(template=TEMPLATE, height=480, margin={"t": 80, "b": 20, "l": 90, "r": 20},
                      title={"text": "The argument in one picture: which pushes on H each method keeps",
                             "font": {"size": 14}})
    return fig


FIGURES = {"argument": argument_figure}

__all__ = ["ARROWS", "CELLS", "FIGURES", "SCHEMATIC_METHODS", "argument_figure", "clipped_weights"]
