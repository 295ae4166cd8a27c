"""Chapter 2's "argument in one picture" (``plots.schematic``) says what the package computes.

The figure types no number in: each cell's direction is ``token_groups.GROUP_ENTROPY_EFFECT``, each clipped
weight is the method's own F at its registry defaults. These tests hold it to an implementation it does not use
(``teaching.ce_gppo_weight``) and to the group colours every other figure uses.
"""

from __future__ import annotations

import pytest

from cegppo_edu.losses import get_method
from cegppo_edu.plots.schematic import ARROWS, CELLS, SCHEMATIC_METHODS, argument_figure, clipped_weights
from cegppo_edu.plots.style import GROUP_COLORS
from cegppo_edu.teaching import ce_gppo_weight
from cegppo_edu.token_groups import GROUP_ENTROPY_EFFECT, GROUPS


def test_the_clipped_weights_are_each_methods_weight_far_outside_its_interval():
    weights = clipped_weights()
    for method in SCHEMATIC_METHODS:
        hyper = get_method(method).resolve()
        betas = {k: hyper[k] for k in ("eps_low", "eps_high", "beta1", "beta2")}
        # a token beyond every compared method's bound: 1 + 2·(widest ε_h) above, half of 1 − (widest ε_l) below
        above = 1 + 2 * max(get_method(m).resolve()["eps_high"] for m in SCHEMATIC_METHODS)
        below = (1 - max(get_method(m).resolve()["eps_low"] for m in SCHEMATIC_METHODS)) / 2
        assert weights["PA&LP"][method] == pytest.approx(float(ce_gppo_weight(above, 1.0, **betas)))
        assert weights["NA&LP"][method] == pytest.approx(float(ce_gppo_weight(below, -1.0, **betas)))
    # what the text of chapter 2 reads off the picture: PPO/GRPO and DAPO drop both far-out pushes, CE-GPPO keeps both
    assert weights["PA&LP"]["grpo"] == weights["NA&LP"]["grpo"] == 0
    assert weights["PA&LP"]["dapo"] == weights["NA&LP"]["dapo"] == 0
    assert weights["PA&LP"]["ce_gppo"] > 0 and weights["NA&LP"]["ce_gppo"] > 0


def test_each_cell_has_its_groups_colour_direction_and_measured_change():
    delta_h = {"PA&HP": -0.012, "PA&LP": 0.034, "NA&HP": 0.056, "NA&LP": -0.078}
    fig = argument_figure(delta_h)
    assert sorted(CELLS) == sorted(GROUPS)
    assert [shape.line.color for shape in fig.layout.shapes] == [GROUP_COLORS[g] for g in CELLS]
    for group, annotation in zip(CELLS, fig.layout.annotations):
        assert annotation.text.startswith(f"<b>{group}</b>")
        assert ARROWS[GROUP_ENTROPY_EFFECT[group]] in annotation.text
        assert f"ΔH = {delta_h[group]:+.3f}" in annotation.text
        clipped = "clipped tokens" in annotation.text
        assert clipped == group.endswith("LP"), group  # only the low-probability groups leave the interval
