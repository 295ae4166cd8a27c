"""Figure 4.3's smoothing (``run_figures.run_curves_figure``): the smoothed curve starts at the run's first step,
the raw points stay visible under it, and a metric logged every 10 steps is not averaged over evaluations."""

from __future__ import annotations

import numpy as np

from cegppo_edu.plots import run_figures


def _run(steps: int = 30) -> list[dict]:
    log = []
    for step in range(steps + 1):
        record = {"step": step, "reward/mean": float(step), "entropy/mean": 1.0 - step / 100}
        if step != 7:  # a step with no group kept logs no clip fraction: still a metric of every step
            record["clip/low_frac"] = 0.01 * step
        if step % 10 == 0:
            record["eval/accuracy"] = step / 100
        log.append(record)
    return log


def test_trailing_mean_starts_at_the_first_value_and_averages_what_came_before():
    np.testing.assert_allclose(run_figures.trailing_mean([1.0, 3.0, 5.0, 7.0], 3), [1.0, 2.0, 3.0, 5.0])
    np.testing.assert_allclose(run_figures.trailing_mean([2.0, 4.0], 1), [2.0, 4.0])


def test_smoothed_curves_start_at_step_0_with_the_raw_points_beside_them():
    curves = (("reward/mean", "reward"), ("eval/accuracy", "held-out accuracy"))
    fig = run_figures.run_curves_figure({"grpo": _run()}, curves=curves, smooth=5)
    reward = [t for t in fig.data if t.xaxis in ("x", None) or t.xaxis == "x"]
    raw = next(t for t in reward if t.mode == "markers")
    smoothed = next(t for t in reward if t.mode == "lines")
    assert raw.x[0] == smoothed.x[0] == 0 and len(raw.x) == len(smoothed.x) == 31
    assert smoothed.y[0] == 0.0 and smoothed.y[4] == 2.0 and smoothed.y[30] == 28.0  # mean of steps 26..30
    accuracy = [t for t in fig.data if t.xaxis == "x2"]
    assert len(accuracy) == 1 and list(accuracy[0].x) == [0, 10, 20, 30]  # drawn raw, every evaluation
    np.testing.assert_allclose(accuracy[0].y, [0.0, 0.1, 0.2, 0.3])
    assert sum(t.showlegend is not False for t in fig.data) == 1  # one legend entry per run


def test_a_metric_with_a_missing_step_is_still_smoothed_over_its_raw_points():
    fig = run_figures.run_curves_figure({"grpo": _run()}, curves=(("clip/low_frac", "clipped below"),), smooth=5)
    assert sorted(t.mode for t in fig.data) == ["lines", "markers"]
