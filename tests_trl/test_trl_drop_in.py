"""CE-GPPO in TRL 1.16.0's real GRPOTrainer, on a CPU with a tiny local Qwen2: the per-token gradient of the
optimizer steps TRL takes equals ``cegppo_edu.losses.ce_gppo``'s on the same batch; clipped tokens keep
β(1±ε)Â; β = 0 gives TRL's own ``dapo`` gradient; a resume from TRL's checkpoint; bad values refused."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch
import trl
from conftest import optimizer_steps, prompt_dataset, reference, reward, run
from trl import GRPOConfig, GRPOTrainer

from cegppo_edu.integrations import trl as drop_in
from cegppo_edu.integrations.trl import CEGPPOConfig, CEGPPOTrainer
from cegppo_edu.losses import ce_gppo, clipped_sides, dapo, gradient_weight, ratio_from_logps

HYPER = dict(eps_low=0.2, eps_high=0.28, beta1=0.75, beta2=0.5)  # ε_l ≠ ε_h and β1 ≠ β2: a swap would show
TRL_HYPER = dict(epsilon=HYPER["eps_low"], epsilon_high=HYPER["eps_high"], beta1=HYPER["beta1"], beta2=HYPER["beta2"])
# float32 per-token gradients are of the order Â/N ≈ 0.03; TRL's and the project's differ in rounding only
GRAD_ATOL = 1e-7
VALUE_ATOL = 1e-6


def clipped_counts(step, eps_low, eps_high):
    lower, upper = clipped_sides(ratio_from_logps(step["logp"], step["old"]), step["adv"][:, None], eps_low, eps_high)
    valid = step["mask"].bool()
    return int((lower & valid).sum()), int((upper & valid).sum())


@pytest.fixture(scope="module")
def ce_run(tiny_model, tmp_path_factory):
    return run(CEGPPOTrainer, CEGPPOConfig, tiny_model, tmp_path_factory.mktemp("ce"), **TRL_HYPER)


def test_the_off_policy_step_has_clipped_tokens_on_both_sides(ce_run):
    _, records = ce_run
    steps = optimizer_steps(records)
    assert len(steps) == 2
    low, high = clipped_counts(steps[1], HYPER["eps_low"], HYPER["eps_high"])
    assert low > 0 and high > 0, f"no clipped token on a side (low {low}, high {high}): the tests below are vacuous"


def test_per_token_gradient_of_trl_steps_equals_ce_gppo(ce_run):
    _, records = ce_run
    for step in optimizer_steps(records):
        value, grad = reference(ce_gppo, step, **HYPER)  # token-mean over the generation batch = TRL's dapo
        assert torch.allclose(step["loss"], value, rtol=0, atol=VALUE_ATOL), (step["loss"], value)
        assert (step["grad"] - grad).abs().max() <= GRAD_ATOL, (step["grad"] - grad).abs().max()


def test_clipped_tokens_keep_beta_times_one_plus_minus_eps_times_advantage(ce_run):
    _, records = ce_run
    step = optimizer_steps(records)[1]
    n_tokens = step["mask"].sum()
    adv = step["adv"][:, None].expand_as(step["logp"])
    ratio = ratio_from_logps(step["logp"], step["old"])
    lower, upper = clipped_sides(ratio, adv, HYPER["eps_low"], HYPER["eps_high"])
    valid = step["mask"].bool()
    # d loss / d logp = −F·Â/N with F = β1(1−ε_l) below, β2(1+ε_h) above, r inside (the paper in brief §2)
    weight = -step["grad"] * n_tokens / adv
    assert torch.allclose(weight[lower & valid], torch.full_like(weight[lower & valid],
                                                                 HYPER["beta1"] * (1 - HYPER["eps_low"])), atol=1e-5)
    assert torch.allclose(weight[upper & valid], torch.full_like(weight[upper & valid],
                                                                 HYPER["beta2"] * (1 + HYPER["eps_high"])), atol=1e-5)
    inside = valid & ~lower & ~upper & (adv != 0)
    expected = gradient_weight(ratio, adv, "ce_gppo", **HYPER)
    assert torch.allclose(weight[inside], expected[inside], atol=1e-5)
    assert torch.equal(step["grad"][~valid], torch.zeros_like(step["grad"][~valid]))


def test_trls_entropy_bonus_acts_beside_ce_gppo(tiny_model, tmp_path):
    """TRL's bonus −c·H̄ reaches the logits through the entropy, not through log π: the per-token gradient through
    log π stays CE-GPPO's, and the loss is CE-GPPO's minus c times the micro-batches' mean entropy (TRL's documented
    objective, each micro-batch's token mean divided by the accumulation steps)."""
    coef = 0.1
    _, records = run(CEGPPOTrainer, CEGPPOConfig, tiny_model, tmp_path, entropy_coef=coef, **TRL_HYPER)
    for step in optimizer_steps(records):
        value, grad = reference(ce_gppo, step, **HYPER)
        assert (step["grad"] - grad).abs().max() <= GRAD_ATOL
        bonus = coef * step["entropy"].mean()  # mean over the accumulated micro-batches
        assert bonus > 0.1  # the bonus is there (entropy ≈ log 104 ≈ 4.6 nats for the random model)
        assert torch.allclose(step["loss"], value - bonus, rtol=0, atol=VALUE_ATOL), (step["loss"], value - bonus)


def test_beta_zero_is_trls_own_dapo(tiny_model, tmp_path):
    eps = dict(epsilon=HYPER["eps_low"], epsilon_high=HYPER["eps_high"])
    _, ours = run(CEGPPOTrainer, CEGPPOConfig, tiny_model, tmp_path / "ce0", beta1=0.0, beta2=0.0, **eps)
    _, theirs = run(GRPOTrainer, GRPOConfig, tiny_model, tmp_path / "dapo", loss_type="dapo", **eps)
    for mine, trl_step in zip(optimizer_steps(ours), optimizer_steps(theirs), strict=True):
        assert torch.equal(mine["logp"], trl_step["logp"]) and torch.equal(mine["old"], trl_step["old"])
        assert (mine["grad"] - trl_step["grad"]).abs().max() <= GRAD_ATOL
        # In value, TRL's dapo keeps PPO's constant −(1±ε)Â on a clipped token, CE-GPPO at β = 0 has 0 there:
        # the two differ by exactly that constant's token-mean, the project's dapo − ce_gppo(β = 0).
        offset = (dapo(mine["logp"], mine["old"], mine["adv"], mine["mask"], eps_low=HYPER["eps_low"],
                       eps_high=HYPER["eps_high"])
                  - ce_gppo(mine["logp"], mine["old"], mine["adv"], mine["mask"], eps_low=HYPER["eps_low"],
                            eps_high=HYPER["eps_high"], beta1=0.0, beta2=0.0))
        assert torch.allclose(trl_step["loss"] - mine["loss"], offset, rtol=0, atol=VALUE_ATOL)
    low, high = clipped_counts(optimizer_steps(ours)[1], HYPER["eps_low"], HYPER["eps_high"])
    assert low + high > 0, "no clipped token: β = 0 would not be tested where it matters"


def test_resume_from_a_trl_checkpoint_continues_the_run(tiny_model, tmp_path):
    # 2 optimizer steps per generation batch, 2 batches, a checkpoint after each batch; the resumed run replays the
    # second batch, whose second optimizer step is off policy (TRL regenerates a batch cut by a resume, so the
    # checkpoint is taken where a batch ends)
    geometry = dict(num_iterations=1, steps_per_generation=4, max_steps=4, save_strategy="steps", save_steps=2,
                    **TRL_HYPER)
    whole, _ = run(CEGPPOTrainer, CEGPPOConfig, tiny_model, tmp_path / "whole", **geometry)
    resumed, records = run(CEGPPOTrainer, CEGPPOConfig, tiny_model, tmp_path / "resumed",
                           resume=str(tmp_path / "whole" / "checkpoint-2"), **geometry)
    assert resumed.state.global_step == 4 and len(records) == 4  # only the last two optimizer steps ran
    low, high = clipped_counts(optimizer_steps(records)[1], HYPER["eps_low"], HYPER["eps_high"])
    assert low + high > 0, "the resumed steps clip nothing: CE-GPPO's own path would not be resumed"
    saved = torch.load(tmp_path / "whole" / "checkpoint-2" / "training_args.bin", weights_only=False)
    assert isinstance(saved, CEGPPOConfig) and (saved.beta1, saved.beta2) == (HYPER["beta1"], HYPER["beta2"])
    for (name, a), b in zip(whole.model.named_parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b), f"{name} differs after the resume"


@pytest.mark.parametrize("field, value, message", [
    ("beta1", -0.5, "beta1=-0.5 is outside the allowed range [0.0, inf)"),
    ("beta2", float("nan"), "beta2=nan is outside the allowed range [0.0, inf)"),
    ("beta1", "0.5", "beta1='0.5' is outside the allowed range"),
    ("epsilon", 1.2, "CEGPPOConfig.epsilon: eps_low=1.2 is outside the allowed range (0.0, 1.0)"),
    ("delta", 1.1, "CEGPPOConfig.delta=1.1 is outside the allowed range (1.2, inf)"),
    ("loss_type", "sapo", "CEGPPOConfig.loss_type='sapo' is not allowed"),
    ("importance_sampling_level", "sequence", "importance_sampling_level='sequence' is not allowed"),
])
def test_bad_values_are_refused_naming_the_field(tmp_path, field, value, message):
    with pytest.raises(ValueError) as error:
        CEGPPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[], **{field: value})
    assert message in str(error.value)


def test_an_on_policy_configuration_is_warned_about(tmp_path):
    with pytest.warns(UserWarning, match="every optimizer step is on policy"):
        CEGPPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[])  # TRL's defaults: one step per batch
    for off_policy in (dict(steps_per_generation=4), dict(num_iterations=2)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            CEGPPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[], **off_policy)
        assert not [w for w in caught if "on policy" in str(w.message)], off_policy


@pytest.mark.parametrize("args", [None, "grpo"])
def test_a_plain_grpo_config_is_refused(tiny_model, tmp_path, args):
    model, tokenizer = tiny_model
    if args == "grpo":
        args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    with pytest.raises(TypeError, match="args must be a CEGPPOConfig"):
        CEGPPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=prompt_dataset(),
                      processing_class=tokenizer)


def test_pinned_trl_and_a_changed_compute_loss_is_refused():
    assert trl.__version__ == drop_in.TRL_VERSION
    drop_in.check_trl()  # the installed method is the pinned one

    class Changed(GRPOTrainer):
        def _compute_loss(self, model, inputs):
            return super()._compute_loss(model, inputs)

    with pytest.raises(RuntimeError, match=r"written against TRL 1\.16\.0; the installed TRL 9\.9 has another"):
        drop_in.check_trl(Changed, version="9.9")


def test_import_cegppo_edu_does_not_import_trl():
    code = "import sys, cegppo_edu, cegppo_edu.losses; print('trl' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
