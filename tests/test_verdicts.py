"""Verdict mechanics (``summaries``): an equivalence margin where "equal" is a possible answer.

A paired difference of −0.000 [−0.000, −0.000] is not evidence that one method is worse: with a margin the
verdict says the two are equal within it. Without a margin nothing changes.
"""

from __future__ import annotations

import numpy as np
import pytest

from cegppo_edu.summaries import EQUAL, EQUIVALENCE_MARGIN, FAILS, HOLDS, all_of, paired_difference

SEEDS = 8


def test_a_tiny_negative_difference_is_equal_within_the_margin_not_a_failure():
    a = np.full(SEEDS, 0.497)
    b = a + np.linspace(1e-5, 3e-5, SEEDS)  # b a hair above a in every seed: the interval is below 0
    assert paired_difference(a, b).verdict == FAILS  # no margin: the old reading
    equal = paired_difference(a, b, margin=EQUIVALENCE_MARGIN)
    assert equal.verdict == f"{EQUAL} ±{EQUIVALENCE_MARGIN:g}"


def test_a_difference_larger_than_the_margin_keeps_its_verdict():
    a = np.linspace(0.5, 0.6, SEEDS)
    assert paired_difference(a, a - 0.2, margin=EQUIVALENCE_MARGIN).verdict == HOLDS
    assert paired_difference(a, a + 0.2, margin=EQUIVALENCE_MARGIN).verdict == FAILS
    wide = paired_difference(a, a + np.linspace(-0.05, 0.05, SEEDS), margin=EQUIVALENCE_MARGIN)
    assert wide.verdict.startswith("not resolved")  # the interval reaches past the margin: equal is not shown


def test_an_interval_that_touches_the_margin_is_not_equal():
    d = np.array([0.0, 0.02] * (SEEDS // 2))  # mean 0.01, interval around it, reaching past +0.01
    assert not paired_difference(d, 0.0, margin=EQUIVALENCE_MARGIN).verdict.startswith(EQUAL)


def test_all_of_reports_an_equal_part_and_still_lets_a_failure_win():
    equal = f"{EQUAL} ±0.01"
    assert all_of([HOLDS, equal]) == equal
    assert all_of([equal, FAILS]) == FAILS
    assert all_of([HOLDS, HOLDS]) == HOLDS
    assert all_of([equal, "not resolved at 8 seeds"]) == equal


@pytest.mark.parametrize("margin", [0.0, -0.01])
def test_a_margin_must_be_positive(margin):
    with pytest.raises(ValueError, match="margin"):
        paired_difference(np.arange(4.0), 0.0, margin=margin)
