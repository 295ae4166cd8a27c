"""Chapter 7's claims carry their scoreboard rows from where the comparisons are made (``toy.steering.SCOREBOARD``,
``experiments.steer_study.SCOREBOARD``), and ``steering.scoreboard`` folds the two targets' accuracy claims into
their one row, so the chapter maps nothing itself: it prints."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from cegppo_edu import steering
from cegppo_edu.experiments import steer_study
from cegppo_edu.summaries import FAILS, HOLDS
from cegppo_edu.toy import steering as toy_steering

ROOT = Path(__file__).resolve().parents[1]


def _comparison(target: str, rows, predictive_error: float, predictive_accuracy: float = 0.5):
    """Every row tracks with error 0.3 (plus noise) and accuracy 0.5; the predictive row as given."""
    noise = np.array([0.0, 0.01, -0.01, 0.02, -0.02])
    runs = []
    for label, method, controller in steering.COMPARISON_ROWS:
        error = (predictive_error if label == steering.PREDICTIVE else 0.3) + noise
        accuracy = predictive_accuracy if label == steering.PREDICTIVE else 0.5
        target_h = np.ones((5, 20))
        zeros = np.zeros((5, 20))
        runs.append(steering.SteeredRun(label, method, controller, target_h + error[:, None], target_h, zeros, zeros,
                                        zeros, np.full((5, 4), accuracy)))
    return steering.Comparison(target, runs, transient=5, rows=rows)


def test_the_comparisons_name_their_claims_by_rows_of_the_scoreboard():
    page = (ROOT / "book" / "scoreboard.md").read_text()
    board = set(re.findall(r"^\| ([PBS][\w-]*) \|", page, re.M))
    for table in (toy_steering.SCOREBOARD, steer_study.SCOREBOARD):
        assert set(table) == set(toy_steering.TARGETS) | set(steer_study.TARGETS)
        assert {row for rows in table.values() for row in rows} <= board
    claims = _comparison("constant", toy_steering.SCOREBOARD["constant"], 0.1).claims()
    assert [c.name for c in claims] == ["B14", "B16 (constant target)"]


def test_scoreboard_folds_both_targets_accuracy_claims_into_one_row():
    toy_rows = toy_steering.SCOREBOARD
    both_fine = [_comparison("constant", toy_rows["constant"], 0.1), _comparison("decaying", toy_rows["decaying"], 0.1)]
    assert steering.scoreboard(both_fine) == {"B14": HOLDS, "B16": HOLDS, "B15": HOLDS}
    one_loses = [_comparison("constant", toy_rows["constant"], 0.5),
                 _comparison("decaying", toy_rows["decaying"], 0.1, predictive_accuracy=0.4)]
    assert steering.scoreboard(one_loses) == {"B14": FAILS, "B16": FAILS, "B15": HOLDS}


def test_a_comparison_without_rows_is_refused_by_scoreboard():
    with pytest.raises(ValueError, match="no scoreboard rows"):
        steering.scoreboard([_comparison("constant", None, 0.1)])
