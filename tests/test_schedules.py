"""β schedules (``cegppo_edu.schedules``) and the trainer's use of them (config ``beta_schedule``)."""

from __future__ import annotations

import math

import pytest

from cegppo_edu.lm.config import apply_overrides, step_loss_kwargs
from cegppo_edu.lm.run_dir import read_metrics, strip_timings
from cegppo_edu.lm.trainer import Trainer
from cegppo_edu.schedules import SCHEDULES, progress, scheduled
from test_lm_trainer import fast_config


@pytest.mark.parametrize("kind", SCHEDULES)
def test_every_schedule_starts_at_start_and_the_moving_ones_end_at_final(kind):
    assert scheduled(kind, 0.5, 2.0, 1, 11) == 0.5
    assert scheduled(kind, 0.5, 2.0, 11, 11) == (0.5 if kind == "constant" else pytest.approx(2.0))


def test_linear_is_a_straight_line_and_cosine_is_flat_at_the_ends_and_halfway_in_the_middle():
    values = [scheduled("linear", 1.0, 0.0, s, 11) for s in range(1, 12)]
    assert values == pytest.approx([1.0 - 0.1 * k for k in range(11)])
    assert scheduled("cosine", 1.0, 0.0, 6, 11) == pytest.approx(0.5)  # t = 1/2
    first_move = 1.0 - scheduled("cosine", 1.0, 0.0, 2, 11)
    assert first_move == pytest.approx((1 - math.cos(math.pi / 10)) / 2) and first_move < 0.1  # slower than linear


def test_progress_and_schedule_reject_bad_input():
    assert progress(1, 1) == 0.0
    with pytest.raises(ValueError, match="step=0"):
        progress(0, 10)
    with pytest.raises(ValueError, match="step=11"):
        scheduled("linear", 0.0, 1.0, 11, 10)
    with pytest.raises(ValueError, match="schedule='exp'"):
        scheduled("exp", 0.0, 1.0, 1, 10)


@pytest.mark.parametrize("fields, message", [
    ({"method": "grpo", "beta_schedule": "linear"}, "beta_schedule='linear' needs a method with β1 and β2"),
    ({"beta2_final": 0.5}, "beta2_final=0.5 has no effect with beta_schedule='constant'"),
    ({"beta_schedule": "cosine", "beta1_final": -0.1}, "beta1_final=-0.1 is outside the allowed range"),
    ({"beta_schedule": "step"}, "beta_schedule='step' is not allowed"),
])
def test_bad_schedules_are_refused_naming_the_field(fields, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        fast_config(**fields)


def test_a_scheduled_run_uses_and_logs_the_scheduled_betas(tmp_path):
    """β2 falls linearly from 1 to 0 over 4 steps: logged each step as the schedule says, step 1 identical to the
    constant run (β2 = 1 there), a later step different (the clipped positive tokens lose their gradient)."""
    clipping = dict(lr=1e-2, update_epochs=3, eval_every=0)  # a large step over 3 epochs clips many tokens
    scheduled_run = Trainer(fast_config(beta_schedule="linear", beta2_final=0.0, **clipping), str(tmp_path / "s"),
                            progress=False).train()
    constant = strip_timings(Trainer(fast_config(**clipping), str(tmp_path / "c"), progress=False).train())
    steps = [m for m in scheduled_run if m["step"] > 0]
    assert [m["loss/beta2"] for m in steps] == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0])
    assert all(m["loss/beta1"] == 0.5 for m in steps)
    first = {k: v for k, v in strip_timings(scheduled_run)[0].items() if not k.startswith("loss/beta")}
    assert first["step"] == 1 and first == constant[0]
    assert constant[-1]["clip/high_frac"] > 0  # tokens clipped above the interval, where β2 acts
    assert strip_timings(scheduled_run)[-1]["grad_norm/mean"] != constant[-1]["grad_norm/mean"]


def test_a_schedule_with_final_equal_to_start_is_the_constant_run(tmp_path):
    moving = Trainer(fast_config(beta_schedule="cosine", beta1_final=0.5, beta2_final=1.0), str(tmp_path / "m"),
                     progress=False).train()
    constant = Trainer(fast_config(), str(tmp_path / "c"), progress=False).train()
    assert [{k: v for k, v in m.items() if not k.startswith("loss/beta")} for m in strip_timings(moving)] == \
        strip_timings(constant)


def test_step_loss_kwargs_leaves_a_constant_config_alone():
    config = fast_config()
    assert step_loss_kwargs(config, 3) == step_loss_kwargs(config, 1)
    moving = apply_overrides(config, {"beta_schedule": "linear", "beta1_final": 1.5})
    assert step_loss_kwargs(moving, config.steps)["beta1"] == pytest.approx(1.5)


def test_a_scheduled_run_resumes_exactly_but_is_not_extended(tmp_path):
    """β(t) is defined over the run's steps: a resume continues it exactly, a longer --steps is refused."""
    config = fast_config(beta_schedule="cosine", beta2_final=2.0)
    straight = strip_timings(Trainer(config, str(tmp_path / "straight"), progress=False).train())
    Trainer(config, str(tmp_path / "part"), progress=False).train(stop_after=2)
    resumed = Trainer(config, str(tmp_path / "part"), resume=True, progress=False)
    resumed.train()
    assert strip_timings(read_metrics(str(tmp_path / "part"))) == straight
    longer = apply_overrides(config, {"steps": config.steps + 2})
    with pytest.raises(ValueError, match="beta_schedule='cosine' keeps its steps=4"):
        Trainer(longer, str(tmp_path / "part"), resume=True, progress=False)
