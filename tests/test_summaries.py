"""The derived quantities the book reports: the final-value window and the paired-seed verdicts."""

import math

import numpy as np
import pytest

from cegppo_edu.summaries import (FAILS, FINAL_STEPS, HOLDS, all_of, final_mean, paired_difference,
                                  student_t_quantile)


@pytest.mark.parametrize("df, quantile", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (7, 2.3646), (30, 2.0423)])
def test_student_t_quantile_matches_the_tables(df, quantile):
    assert student_t_quantile(0.975, df) == pytest.approx(quantile, abs=1e-4)
    assert student_t_quantile(0.025, df) == pytest.approx(-quantile, abs=1e-4)


def test_student_t_quantile_tends_to_the_normal_one():
    assert student_t_quantile(0.975, 1e6) == pytest.approx(1.959964, abs=1e-5)
    assert student_t_quantile(0.5, 3) == pytest.approx(0.0, abs=1e-6)


def test_paired_interval_is_the_t_interval_of_the_differences():
    a, b = np.array([1.0, 2.0, 3.0, 5.0]), np.array([0.5, 0.5, 1.0, 1.0])
    d = a - b
    half = 3.1824 * d.std(ddof=1) / math.sqrt(4)  # t_{0.975, 3}
    comparison = paired_difference(a, b)
    assert comparison.mean == pytest.approx(d.mean())
    assert (comparison.low, comparison.high) == pytest.approx((d.mean() - half, d.mean() + half), abs=1e-3)
    assert comparison.wins == 4 and comparison.n == 4


def test_verdicts_follow_the_interval():
    assert paired_difference([1.0, 1.1, 0.9], 0.0).verdict == HOLDS
    assert paired_difference([-1.0, -1.1, -0.9], 0.0).verdict == FAILS
    assert paired_difference([1.0, -1.0, 0.1], 0.0).verdict == "not resolved at 3 seeds"
    assert all_of([HOLDS, HOLDS]) == HOLDS
    assert all_of([HOLDS, "not resolved at 5 seeds"]) == "not resolved at 5 seeds"
    assert all_of(["not resolved at 5 seeds", FAILS]) == FAILS
    with pytest.raises(ValueError, match="at least 2"):
        paired_difference([1.0], [0.0])


def test_final_mean_is_the_last_window():
    series = np.arange(200.0)[None].repeat(3, 0)  # (3 seeds, 200 steps)
    assert final_mean(series).tolist() == [np.arange(200 - FINAL_STEPS, 200).mean()] * 3
    assert final_mean([1.0, 3.0]) == 2.0  # shorter than the window: all of it
    with pytest.raises(ValueError, match="steps=0"):
        final_mean(series, 0)


def test_sign_agreement_is_read_against_its_base_rate():
    from cegppo_edu.summaries import sign_agreement

    rng = np.random.default_rng(0)
    measured = np.where(rng.random(400) < 0.9, -1.0, 1.0) * rng.random(400)  # falls in about 90 % of cases
    unrelated = sign_agreement(np.where(rng.random(400) < 0.9, -1.0, 1.0), measured)
    assert unrelated.common_sign == "falls" and unrelated.base_rate == pytest.approx(np.mean(measured < 0))
    assert unrelated.agreement == pytest.approx(unrelated.chance, abs=0.05)  # high agreement, no information
    assert unrelated.verdict != HOLDS
    perfect = sign_agreement(measured * 3.0, measured)
    assert perfect.agreement == 1.0 and perfect.verdict == HOLDS
    constant = sign_agreement(-np.ones(400), measured)  # "always falls" is exactly the base rate
    assert constant.agreement == constant.base_rate and constant.versus_base.mean == 0.0
    assert "cases" in constant.verdict and "base rate" in str(constant)
    with pytest.raises(ValueError, match="1-D of one length"):
        sign_agreement([1.0, 2.0], [1.0])
