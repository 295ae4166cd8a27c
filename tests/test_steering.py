"""Steering entropy (chapter 7): the β solver against its defining equation, the controllers' signs and limits,
the validation of targets and bounds, and the toy's look-ahead against the measured entropy change."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from cegppo_edu import steering
from cegppo_edu.entropy import entropy_from_logits
from cegppo_edu.experiments import steer_study
from cegppo_edu.steering import BetaBounds, EntropyBonus, PIController, solve_betas
from cegppo_edu.toy import steering as toy_steering
from cegppo_edu.toy.bandit import _seed_generators, _small_tensors, _uniform_stream, make_toy

BOX = BetaBounds(0.0, 2.0)


# ---------------------------------------------------------------------------------------------- the β solver
def test_unconstrained_solution_meets_the_equation_and_moves_along_the_units():
    rest, low, high, ref = -0.03, -0.02, 0.01, (0.5, 1.0)
    b1, b2 = solve_betas(-0.035, rest, low, high, ref, BOX)
    assert rest + b1 * low + b2 * high == pytest.approx(-0.035, abs=1e-15)
    # the closest point to the reference on the line: the move is parallel to (low, high)
    assert (b1 - ref[0]) * high - (b2 - ref[1]) * low == pytest.approx(0.0, abs=1e-15)


def test_a_coordinate_that_leaves_the_box_is_held_and_the_other_makes_up_the_rest():
    rest, low, high = 0.0, -0.02, 0.01
    b1, b2 = solve_betas(0.02, rest, low, high, (0.5, 1.0), BOX)  # wants β1 < 0: β1 held at 0, β2 does the rest
    assert b1 == 0.0 and b2 == pytest.approx(2.0)  # 0.02 / 0.01 = 2: exactly the upper bound
    b1, b2 = solve_betas(1.0, rest, low, high, (0.5, 1.0), BOX)  # out of reach: both at the bounds that help most
    assert (b1, b2) == (0.0, 2.0)
    assert solve_betas(0.3, 0.1, 0.0, 0.0, (0.5, 3.0), BOX) == (0.5, 2.0)  # no lever: the reference, in the box


def test_targets_bounds_and_controllers_are_validated_with_the_field_named():
    with pytest.raises(ValueError, match=r"target=2.5 is outside the allowed range \(0.0, 2.07"):
        steering.check_target("target", 2.5, vocab=8)  # log 8 = 2.079
    with pytest.raises(ValueError, match="target_final=0"):
        steering.check_target("target_final", 0.0, vocab=8)
    assert steering.check_target("target", math.log(8), vocab=8) == math.log(8)
    with pytest.raises(ValueError, match="beta_max=0.5 is outside the allowed range.*at least beta_min=1.0"):
        BetaBounds(1.0, 0.5)
    with pytest.raises(ValueError, match="beta_controller='predictive'.*method 'grpo' has none"):
        steering.check_controller("predictive", False, "grpo")
    with pytest.raises(ValueError, match="beta_controller='bang'"):
        steering.check_controller("bang", True, "ce_gppo")
    steering.check_controller("entropy_bonus", False, "grpo")  # a bonus needs no β


def test_target_curve_is_constant_or_decays_from_start_to_final():
    assert steering.target_at(7, 100, 0.8) == 0.8
    assert steering.target_at(1, 100, 1.2, 0.5) == 1.2 and steering.target_at(100, 100, 1.2, 0.5) == 0.5
    values = [steering.target_at(k, 100, 1.2, 0.5) for k in range(1, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_pi_raises_beta2_and_lowers_beta1_when_entropy_is_low_and_stops_winding_up_at_the_bounds():
    pi = PIController((0.5, 1.0), BOX, kp=1.0, ki=0.5)
    b1, b2 = pi.betas(entropy=0.6, target=0.8)  # e = 0.2: u = 0.2 + 0.5·0.2 = 0.3
    assert (b1, b2) == pytest.approx((0.2, 1.3))
    for _ in range(50):  # far below target for long: both saturate, and the sum stops growing
        pi.betas(entropy=0.0, target=1.0)
    wound = pi.integral
    pi.betas(entropy=0.0, target=1.0)
    assert pi.integral == wound < 1.0  # without anti-windup it would be about 50
    assert pi.betas(entropy=1.0, target=1.0) == pytest.approx((0.5 - 0.5 * wound, 1.0 + 0.5 * wound))  # back at once


def test_entropy_bonus_moves_by_delta_toward_the_target_and_stays_in_its_range():
    bonus = EntropyBonus(0.0, 0.01, 0.015)
    assert bonus.update(0.5, 0.8) == 0.01 and bonus.update(0.5, 0.8) == 0.015  # up, then capped
    assert bonus.update(0.9, 0.8) == pytest.approx(0.005) and bonus.update(0.9, 0.8) == 0.0 == bonus.update(0.9, 0.8)


# ---------------------------------------------------------------------------------------------- the toy
def _toy_start(seed=0, seeds=4):
    cfg = make_toy()
    rngs = _seed_generators(seed, seeds)
    z = torch.from_numpy(np.stack([rng.normal(0.0, 1.0, (cfg.positions, cfg.vocab)) for rng in rngs]))
    return z, rngs, cfg, {"eps_low": 0.2, "eps_high": 0.2, "beta1": 0.5, "beta2": 1.0}


def _pairs(*pair, seeds=4):
    return torch.tensor([pair] * seeds, dtype=torch.float64)


def test_the_look_ahead_predicts_the_steps_entropy_change_and_its_dependence_on_beta():
    """Over 40 steps × 4 seeds of a fixed-β run: rest + β1·unit_low + β2·unit_high from a look-ahead at (0.5, 1)
    against the change measured when the step is taken at (0.5, 1), and the predicted effect of moving to (0, 2)
    against the measured one. First order at η = 8: close, not exact."""
    z, rngs, cfg, hyper = _toy_start()
    uniforms, rule = _uniform_stream(rngs, cfg, 40), toy_steering._Rule.of("ce_gppo", hyper)
    predicted, measured, effect_predicted, effect_measured = [], [], [], []
    with _small_tensors():
        for t in range(40):
            batch = toy_steering._batch(z, uniforms[:, t], cfg)
            h0 = entropy_from_logits(z).double().mean(-1).numpy()
            rest, low, high = toy_steering._look_ahead(z, batch, rule, cfg, _pairs(0.5, 1.0))
            after = {pair: entropy_from_logits(toy_steering._updates(z, batch, rule, cfg, _pairs(*pair), torch.zeros(4))[0]).double().mean(-1).numpy()
                     for pair in ((0.5, 1.0), (0.0, 2.0))}
            predicted += list(rest + 0.5 * low + 1.0 * high)
            measured += list(after[(0.5, 1.0)] - h0)
            effect_predicted += list(-0.5 * low + 1.0 * high)
            effect_measured += list(after[(0.0, 2.0)] - after[(0.5, 1.0)])
            z = toy_steering._updates(z, batch, rule, cfg, _pairs(0.5, 1.0), torch.zeros(4))[0]
    assert np.corrcoef(predicted, measured)[0, 1] > 0.95
    assert np.corrcoef(effect_predicted, effect_measured)[0, 1] > 0.7


def test_the_bonus_step_is_gradient_ascent_on_the_mean_entropy():
    """One update (one mini-batch, one epoch): the bonus adds η·c·∇H̄(z) to the logits, ∇ by autograd."""
    cfg = make_toy(minibatches=1, epochs=1)
    rngs = _seed_generators(1, 2)
    z = torch.from_numpy(np.stack([rng.normal(0.0, 1.0, (cfg.positions, cfg.vocab)) for rng in rngs]))
    batch = toy_steering._batch(z, _uniform_stream(rngs, cfg, 1)[:, 0], cfg)
    hyper = {"eps_low": 0.2, "eps_high": 0.2}
    none, rule = torch.zeros(2, 2, dtype=torch.float64), toy_steering._Rule.of("grpo", hyper)
    with_bonus, _ = toy_steering._updates(z, batch, rule, cfg, none, torch.tensor([0.3, 0.0], dtype=torch.float64))
    without, _ = toy_steering._updates(z, batch, rule, cfg, none, torch.zeros(2))
    x = z.clone().requires_grad_(True)
    logp = torch.log_softmax(x[0], -1)  # float64 throughout (entropy_from_logits works in float32)
    (grad,) = torch.autograd.grad(-(logp.exp() * logp).sum(-1).mean(), x)
    torch.testing.assert_close(with_bonus - without, cfg.lr * 0.3 * grad, rtol=1e-10, atol=1e-13)


def test_batch_level_coefficients_by_autograd_match_the_weight_path_when_nothing_is_picked():
    """Clip-Cov with an empty covariance band is PPO-clip: its autograd coefficients equal GRPO's from F."""
    z, rngs, cfg, _ = _toy_start()
    batch = toy_steering._batch(z, _uniform_stream(rngs, cfg, 1)[:, 0], cfg)
    tok, a, old = (x[..., :cfg.minibatch] for x in (batch.tokens, batch.adv, batch.old_logp))
    logp = torch.log_softmax(z + 0.3, -1).gather(-1, tok) + 0.05 * torch.sin(torch.arange(tok.numel()).double()
                                                                            ).reshape(tok.shape)
    ratio = torch.exp(logp - old)
    grpo = toy_steering._coefficients(toy_steering._Rule.of("grpo", {"eps_low": 0.2, "eps_high": 0.2}), logp, old, a,
                                      ratio, {})
    band = {"eps_low": 0.2, "eps_high": 0.2, "cov_ratio": 0.01, "clip_cov_lb": 50.0, "clip_cov_ub": 60.0}
    clip_cov = toy_steering._coefficients(toy_steering._Rule.of("clip_cov", band), logp, old, a, ratio, {})
    torch.testing.assert_close(clip_cov, grpo, rtol=1e-12, atol=1e-15)
    assert (grpo == 0).any() and (grpo != 0).any()  # some tokens clipped, some not: the comparison means something


def test_a_steered_run_uses_the_beta_it_logs_and_refuses_bad_settings():
    run = toy_steering.steer("ce_gppo", "pi", target=1.0, steps=6, seeds=2)
    assert run.entropy.shape == (2, 6) and (run.beta2[:, 1:] != 1.0).all()  # the PI controller moved β2
    fixed = toy_steering.steer("ce_gppo", "none", target=1.0, steps=6, seeds=2)
    assert np.array_equal(run.entropy[:, 0], fixed.entropy[:, 0])  # same seeds, same start
    assert not np.array_equal(run.entropy[:, -1], fixed.entropy[:, -1])  # the β it logs changed the run
    with pytest.raises(ValueError, match="target=3.0"):
        toy_steering.steer("ce_gppo", "predictive", target=3.0, steps=2, seeds=2)
    with pytest.raises(ValueError, match="method 'sapo' has none"):
        toy_steering.steer("sapo", "pi", steps=2, seeds=2)
    with pytest.raises(ValueError, match="transient=6"):
        run.tracking_error(6)


def test_on_the_decaying_target_the_predictive_controller_tracks_better_than_fixed_beta():
    """The chapter's decaying-target comparison, two rows: paired over 5 seeds, the predictive controller's
    tracking error is below fixed β's (the interval excludes 0)."""
    comparison = toy_steering.compare("decaying", rows=steering.COMPARISON_ROWS[:2])
    fixed, predictive = (r.tracking_error(comparison.transient) for r in comparison.runs)
    from cegppo_edu.summaries import paired_difference
    assert paired_difference(fixed, predictive).verdict == "holds"


# ---------------------------------------------------------------------------------------------- the LM trainer
from cegppo_edu.lm.run_dir import read_metrics, strip_timings  # noqa: E402
from cegppo_edu.lm.steer import Steerer  # noqa: E402
from cegppo_edu.lm.trainer import Trainer  # noqa: E402
from test_lm_trainer import fast_config  # noqa: E402

PREDICTIVE = dict(beta_controller="predictive", entropy_target=1.0, entropy_predictor_every=1,
                  entropy_attribution=True)


@pytest.mark.parametrize("fields, message", [
    ({"beta_controller": "pi"}, "beta_controller='pi' needs entropy_target"),
    ({"entropy_target": 1.0}, "entropy_target=1.0 has no effect with beta_controller='none'"),
    ({"method": "grpo", "beta_controller": "pi", "entropy_target": 1.0}, "method 'grpo' has none"),
    ({"beta_controller": "pi", "entropy_target": -0.5}, r"entropy_target=-0.5 is outside the allowed range \(0.0"),
    ({"beta_controller": "pi", "entropy_target": 1.0, "beta_min": 1.5, "beta_max": 1.0},
     "beta_max=1.0 is outside the allowed range.*at least beta_min=1.5"),
    ({"beta_controller": "predictive", "entropy_target": 1.0}, "needs entropy_predictor_every=1 and entropy_attrib"),
    ({"beta_controller": "pi", "entropy_target": 1.0, "beta_schedule": "linear", "beta2_final": 0.5},
     "both set β"),
    ({"beta_controller": "bang", "entropy_target": 1.0}, "beta_controller='bang' is not allowed"),
])
def test_bad_steering_configs_are_refused_naming_the_field(fields, message):
    with pytest.raises(ValueError, match=message):
        fast_config(**fields)


def test_a_target_above_log_v_is_refused_when_the_vocabulary_is_known(tmp_path):
    config = fast_config(beta_controller="entropy_bonus", entropy_target=50.0)  # valid until V is known
    with pytest.raises(ValueError, match=r"entropy_target=50.0 is outside the allowed range \(0.0, .*log V with V ="):
        Trainer(config, str(tmp_path), progress=False)


def test_the_predictive_estimate_divides_each_clipped_share_by_the_beta_that_made_it():
    steerer = Steerer(fast_config(**PREDICTIVE), vocab=40, reference=(0.5, 1.0))
    assert steerer.before_updates(1, 1.2) == {"steer/target": 1.0, "loss/beta1": 0.5, "loss/beta2": 1.0}  # no estimate
    prefix = "entropy/param_attr/"
    steerer.after_updates({"entropy/param_pred/trapezoid": -0.10, f"{prefix}NA&LP/clipped": -0.02,
                           f"{prefix}NA&HP/clipped": -0.01, f"{prefix}PA&LP/clipped": 0.004,
                           f"{prefix}PA&LP/inside": -0.05, f"{prefix}momentum": -0.024,
                           f"{prefix}clipped_lp_share_old": 0.7})
    assert steerer.estimate == pytest.approx({"rest": -0.074, "unit_low": -0.06, "unit_high": 0.004})
    out = steerer.before_updates(2, 1.11)  # need = 1.0 − 1.11, within reach: predicted change = need
    assert out["steer/predicted_change"] == pytest.approx(out["steer/need"]) == pytest.approx(-0.11)
    assert out["loss/beta1"] > 0.5 and out["loss/beta2"] < 1.0  # more push down from the Â<0 side, less up
    assert steerer.loss_betas({"beta1": 0.5, "beta2": 1.0, "eps_low": 0.2}) == {
        "beta1": out["loss/beta1"], "beta2": out["loss/beta2"], "eps_low": 0.2}


def test_a_pi_steered_run_logs_and_uses_its_betas_and_resumes_exactly(tmp_path):
    clipping = dict(lr=1e-2, update_epochs=3, eval_every=0)  # a large step over 3 epochs clips many tokens
    # FAST's untrained model sits just below log V = log 104 = 4.644: a target at 4.64 is above H throughout
    config = fast_config(beta_controller="pi", entropy_target=4.64, entropy_target_final=4.6, **clipping)
    steered = strip_timings(Trainer(config, str(tmp_path / "s"), progress=False).train())
    fixed = strip_timings(Trainer(fast_config(**clipping), str(tmp_path / "f"), progress=False).train())
    updated = [m for m in steered if "loss/beta1" in m]
    assert updated and all(m["loss/beta1"] < 0.5 and m["loss/beta2"] > 1.0 for m in updated)  # H below H*
    assert [m["steer/target"] for m in updated] == pytest.approx(
        [steering.target_at(m["step"], config.steps, 4.64, 4.6) for m in updated])
    assert steered[-1]["grad_norm/mean"] != fixed[-1]["grad_norm/mean"]
    Trainer(config, str(tmp_path / "part"), progress=False).train(stop_after=2)
    Trainer(config, str(tmp_path / "part"), resume=True, progress=False).train()
    assert strip_timings(read_metrics(str(tmp_path / "part"))) == steered
    with pytest.raises(ValueError, match="entropy_target_final=4.6 keeps its steps"):
        Trainer(fast_config(**{**config.__dict__, "steps": config.steps + 2}), str(tmp_path / "part"), resume=True,
                progress=False)


def test_the_entropy_bonus_raises_the_entropy_of_a_run(tmp_path):
    """A target far above the entropy: the coefficient climbs by δ each updated step, and the run's entropy after
    its updates ends above the same run without the bonus."""
    base = dict(method="grpo", lr=1e-2, update_epochs=3, eval_every=0)
    bonus = strip_timings(Trainer(fast_config(beta_controller="entropy_bonus", entropy_target=4.64,
                                              entropy_coef_delta=0.05, entropy_coef_max=0.5, **base),
                                  str(tmp_path / "b"), progress=False).train())
    plain = strip_timings(Trainer(fast_config(**base), str(tmp_path / "p"), progress=False).train())
    coefs = [m["steer/entropy_coef"] for m in bonus if "steer/entropy_coef" in m]
    assert coefs == pytest.approx([0.05 * (k + 1) for k in range(len(coefs))]) and coefs
    assert bonus[-1]["entropy/after_update"] > plain[-1]["entropy/after_update"]


def test_a_predictive_run_estimates_from_the_attribution_and_solves_each_step(tmp_path):
    """From the second updated step on, each step logs the need and the predicted change of the β it chose, from
    estimates read off the last phase's attribution: the clipped Â<0 cells' share over the β1 that phase used."""
    config = fast_config(**{**PREDICTIVE, "entropy_target": 4.0}, lr=1e-2, update_epochs=3, eval_every=0)
    trainer = Trainer(config, str(tmp_path), progress=False)
    metrics = strip_timings(trainer.train())
    solved = [m for m in metrics if "steer/predicted_change" in m]
    assert len(solved) >= 2
    last = metrics[-1]
    low = sum(v for k, v in last.items() if k.startswith("entropy/param_attr/NA") and k.endswith("/clipped"))
    assert low != 0 and trainer.steerer.estimate["unit_low"] == pytest.approx(low / last["loss/beta1"])
    for m in solved:
        assert config.beta_min <= m["loss/beta1"] <= config.beta_max and config.beta_min <= m["loss/beta2"] <= config.beta_max
        assert m["steer/need"] == pytest.approx(4.0 - m["entropy/mean"])  # gain 1, constant target


# ---------------------------------------------------------------------------------------------- the comparison
def _run(label, error, seeds=5, steps=30, accuracy=0.5, controller="none"):
    """A made-up run whose |H − H*| is ``error[s]`` at every step of seed s."""
    target = np.full((seeds, steps), 1.0)
    entropy = target + np.asarray(error, dtype=float)[:, None]
    zeros = np.zeros((seeds, steps))
    return steering.SteeredRun(label, "ce_gppo", controller, entropy, target, zeros, zeros, zeros,
                               np.full((seeds, 4), accuracy))


def _comparison(errors: dict, accuracy=None):
    accuracy = accuracy or {}
    runs = [_run(label, errors[label], accuracy=accuracy.get(label, 0.5)) for label, _, _ in steering.COMPARISON_ROWS]
    return steering.Comparison("constant", runs, transient=5)


def test_the_comparison_claims_read_paired_tracking_errors_and_accuracy():
    noise = np.array([0.0, 0.01, -0.01, 0.02, -0.02])
    best = {label: 0.3 + noise for label, _, _ in steering.COMPARISON_ROWS}
    best[steering.PREDICTIVE] = 0.1 + noise[::-1] / 2
    tracking, accuracy = _comparison(best).claims()
    assert tracking.verdict == "holds" and accuracy.verdict == "holds"  # equal accuracy is "not lower"
    worse = {**best, steering.PREDICTIVE: 0.5 + noise}
    assert _comparison(worse).claims()[0].verdict == "does not hold"
    tie = {**best, "SAPO": 0.1 + np.array([0.05, -0.05, 0.04, -0.04, 0.0])}
    assert _comparison(tie).claims()[0].verdict == "not resolved at 5 seeds"
    lower = _comparison(best, accuracy={steering.PREDICTIVE: 0.4}).claims()[1]
    assert lower.verdict == "does not hold"  # 0.1 below fixed β's, more than the margin
    table = _comparison(best).table()
    assert [row["method"] for row in table] == [label for label, _, _ in steering.COMPARISON_ROWS]
    assert table[1]["error − predictive's"] == "" and table[0]["error − predictive's"].startswith("+0.2")


def test_collapses_count_seeds_whose_accuracy_falls_below_half_of_its_first():
    run = _run("x", np.zeros(3), seeds=3)
    run.accuracy = np.array([[0.2, 0.3, 0.25, 0.2], [0.2, 0.09, 0.2, 0.2], [0.2, 0.1, 0.1, 0.1]])
    assert steering.Comparison.collapses(run) == 1  # 0.09 < 0.1; exactly half is not a collapse


def test_the_transformer_runs_are_the_rows_with_the_steered_ones_once_per_target():
    runs = steer_study.runs()
    open_loop = [m for _, m, c in steering.COMPARISON_ROWS if c == "none"]
    steered = [(m, c) for _, m, c in steering.COMPARISON_ROWS if c != "none"]
    assert sorted(runs) == sorted(open_loop + [f"{m}-{c}-{t}" for m, c in steered for t in steer_study.TARGETS])
    config = steer_study.run_config("ce_gppo-predictive-decaying", 3)
    assert (config.seed, config.lr, config.entropy_target, config.entropy_target_final) == (
        3, steer_study.LR, *steer_study.TARGETS["decaying"])
    assert config.entropy_predictor_every == 1 and config.entropy_attribution and config.n_digits == 3
    assert steer_study.run_config("sapo", 0).entropy_predictor_every == 0  # the instruments only where needed
    with pytest.raises(ValueError, match="run='pi'"):
        steer_study.run_config("pi", 0)


COMMITTED_CH07 = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), steer_study.DATA)


def test_the_committed_runs_read_back_as_the_trainer_logged_them():
    """The target the reader computes is the one each steered step logged, the β the steps used are the logged
    ones, and summary.txt is what the committed runs give."""
    from cegppo_edu.lm.run_dir import read_metrics

    comparison = steer_study.load(COMMITTED_CH07, "decaying")
    run = comparison.run(steering.COMPARISON_ROWS[2][0])  # PI
    log = read_metrics(os.path.join(COMMITTED_CH07, "runs", "ce_gppo-pi-decaying", "seed0"))
    logged = {m["step"]: m for m in log if "steer/target" in m}
    assert len(logged) > 50
    for step, m in logged.items():
        assert run.target[0, step - 1] == pytest.approx(m["steer/target"], abs=1e-12)
        assert run.beta1[0, step - 1] == m["loss/beta1"] and run.entropy[0, step - 1] == m["entropy/mean"]
    assert run.accuracy.shape == (len(steer_study.SEEDS), steer_study.STEPS // 10 + 1)
    lines = open(os.path.join(COMMITTED_CH07, "summary.txt")).read().splitlines()
    assert [line for line in lines if not line.startswith("regenerated ")] == steer_study.summary_lines(COMMITTED_CH07)


def test_a_clip_cov_run_is_the_same_every_time_and_leaves_the_global_generator_alone():
    runs = []
    for caller_seed in (1, 2):  # whatever state the caller's generator is in
        torch.manual_seed(caller_seed)
        before = torch.get_rng_state()
        runs.append(toy_steering.steer("clip_cov", "none", target=1.0, steps=8, seeds=2, cov_ratio=0.05))
        assert torch.equal(torch.get_rng_state(), before)
    assert np.array_equal(runs[0].entropy, runs[1].entropy)
