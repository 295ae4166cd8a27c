"""Chapter 1's Figure 1.4: the gradient weight each method gives the funnel's clipped tokens, by token group
(``toy.demos.clipped_weight_by_group``, ``plots.figures.clipped_weight_figure``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cegppo_edu.losses import clipped_sides
from cegppo_edu.plots import figures
from cegppo_edu.token_groups import GROUPS
from cegppo_edu.toy import demos


@pytest.fixture(scope="module")
def sample():
    return demos.funnel_sample(seed=0)


def test_ppo_gives_clipped_tokens_nothing_and_ce_gppo_its_constants(sample):
    weights = demos.clipped_weight_by_group(sample, ["grpo", "gppo", "ce_gppo"])
    assert weights["grpo"] == {g: 0.0 for g in GROUPS}
    lower, upper = (side.numpy() for side in clipped_sides(torch.as_tensor(sample["ratio"]),
                                                         torch.as_tensor(sample["adv"]), 0.2, 0.2))
    n, group = len(sample["ratio"]), np.asarray(sample["group"])
    pa_lp, na_lp = GROUPS.index("PA&LP"), GROUPS.index("NA&LP")
    # every clipped PA&LP token is above the interval with Â = +1: CE-GPPO gives it β2(1+ε_h) = 1.2
    assert weights["ce_gppo"]["PA&LP"] == pytest.approx(1.2 * (upper & (group == pa_lp)).sum() / n)
    # every clipped NA&LP token is below with Â = −1: β1(1−ε_l) = 0.4, and GPPO's β1 = 1 gives twice that
    assert weights["ce_gppo"]["NA&LP"] == pytest.approx(0.4 * (lower & (group == na_lp)).sum() / n)
    assert weights["gppo"]["NA&LP"] == pytest.approx(2 * weights["ce_gppo"]["NA&LP"])
    # the clipped tokens are the low-probability ones, so the two LP groups take nearly all of the weight
    lp = weights["ce_gppo"]["PA&LP"] + weights["ce_gppo"]["NA&LP"]
    assert lp > 0.9 * sum(weights["ce_gppo"].values())


def test_the_figure_stacks_one_bar_per_method_in_the_groups_colours(sample):
    weights = demos.clipped_weight_by_group(sample, ["grpo", "ce_gppo"])
    fig = figures.clipped_weight_figure(weights)
    assert [t.name for t in fig.data] == list(GROUPS) and fig.layout.barmode == "stack"
    assert list(fig.data[1].x) == ["PPO / GRPO", "CE-GPPO"]
    assert fig.data[1].y[0] == 0.0 and fig.data[1].y[1] == pytest.approx(weights["ce_gppo"]["PA&LP"])
