"""The metrics reference (``lm.metrics.METRICS``) names every key a run logs, and no key that no run logs."""

from __future__ import annotations

import pytest

from cegppo_edu.cli import build_parser
from cegppo_edu.lm import metrics
from cegppo_edu.lm.trainer import Trainer
from test_lm_trainer import fast_config

# Every instrument on, over three runs (a β schedule and a β controller exclude each other): the schedule, the
# NLL term, the predictor with its attribution at a large lr (so tokens get clipped), the predictive controller,
# the entropy bonus.
RUNS = {"schedule": dict(beta_schedule="linear", beta2_final=0.5, nll_coef=0.1, entropy_predictor_every=1,
                         entropy_attribution=True, lr=1e-2, update_epochs=3),
        "predictive": dict(beta_controller="predictive", entropy_target=1.0, entropy_predictor_every=1,
                           entropy_attribution=True, steps=3),
        "bonus": dict(method="grpo", beta_controller="entropy_bonus", entropy_target=1.0, steps=2)}


@pytest.fixture(scope="module")
def logged_keys(tmp_path_factory) -> set[str]:
    keys = set()
    for name, extra in RUNS.items():
        for m in Trainer(fast_config(**extra), str(tmp_path_factory.mktemp(name)), progress=False).train():
            keys |= set(m)
    return keys


def test_every_logged_key_is_in_the_reference_once(logged_keys):
    assert len(logged_keys) > 90
    missing = sorted(k for k in logged_keys if not metrics.rows_for(k))
    assert not missing, f"keys logged but not in cegppo_edu.lm.metrics.METRICS: {missing}"
    twice = {k: [m.key for m in metrics.rows_for(k)] for k in logged_keys if len(metrics.rows_for(k)) > 1}
    assert not twice, f"keys matched by more than one row: {twice}"


def test_every_row_of_the_reference_is_logged_by_some_run(logged_keys):
    stale = [m.key for m in metrics.METRICS if not any(m.regex().match(k) for k in logged_keys)]
    assert not stale, f"rows no run logs (renamed or removed keys?): {stale}"


def test_train_help_lists_the_reference(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    shown = capsys.readouterr().out
    assert all(m.key in shown for m in metrics.METRICS)
