"""CE-GPPO inside verl 0.9.1: registry, real loss call site, Hydra config, Ray workers, and main_ppo on a CPU.

The reference for every value and gradient is ``cegppo_edu.losses`` (tested against the math in tests/).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import verl
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tensordict import TensorDict
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from verl.trainer.ppo.utils import need_critic, need_reference_policy
from verl.utils import tensordict_utils as tu
from verl.utils.config import omega_conf_to_dataclass, validate_config
from verl.workers.config import ActorConfig, PolicyLossConfig
from verl.workers.utils.losses import ppo_loss

from cegppo_edu import losses, token_groups
from cegppo_edu.integrations import verl as plugin

PYTHON = sys.executable
OUR_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")  # verl modes that are also ours
PROMPT_LEN = 3


# --------------------------------------------------------------------------------------------------
# Helpers: a batch with tokens in every region, verl's actor config, and verl's real call site.
# --------------------------------------------------------------------------------------------------
def make_batch(seed=0, batch=8, length=10):
    """logp, old_logp, adv (B, T), right-padded mask; ratios spread wide enough to hit every clip region."""
    g = torch.Generator().manual_seed(seed)
    logp = torch.log(0.03 + 0.97 * torch.rand(batch, length, generator=g, dtype=torch.float64))
    old_logp = (logp + 0.9 * torch.randn(batch, length, generator=g, dtype=torch.float64)).clamp(max=-1e-3)
    adv = torch.randn(batch, 1, generator=g, dtype=torch.float64).expand(batch, length).clone()
    adv[0] = 0.0  # a zero-variance group that was kept
    lengths = torch.randint(1, length + 1, (batch,), generator=g)
    lengths[1] = length
    mask = (torch.arange(length)[None, :] < lengths[:, None]).double()  # (B, T)
    return logp, old_logp, adv, mask


def actor_config(loss_mode="ce_gppo", beta1=None, beta2=None, eps_low=0.2, eps_high=0.2, dual_clip=3.0,
                 agg="token-mean", policy_loss=None):
    if policy_loss is None:
        policy_loss = plugin.CEGPPOPolicyLossConfig(loss_mode=loss_mode, beta1=beta1, beta2=beta2)
    return ActorConfig(strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1, clip_ratio_low=eps_low,
                       clip_ratio_high=eps_high, clip_ratio_c=dual_clip, loss_agg_mode=agg, policy_loss=policy_loss)


def call_ppo_loss(config, logp, old_logp, adv, mask, weights=None, dp_size=1, num_tokens=None, num_seqs=None):
    """Run verl.workers.utils.losses.ppo_loss as verl's engine does, on model log-probs laid out flat.

    The engine hands ppo_loss the log-probs of every position of every (prompt + response) sequence,
    concatenated; ppo_loss cuts each response back out (shifted by one) and pads it to (B, T).
    """
    batch, length = logp.shape
    lengths = mask.sum(-1).long()
    filler = torch.full((PROMPT_LEN - 1,), -7.0, dtype=logp.dtype)
    pieces = []
    for i, n in enumerate(lengths.tolist()):  # per sequence: prompt slots, the response's log-probs, one more
        pieces += [filler, logp[i, :n], filler[:1]]
    attention = torch.cat([torch.ones(batch, PROMPT_LEN), mask.float()], dim=1).long()  # (B, P + T)
    fields = {"prompts": torch.ones(batch, PROMPT_LEN, dtype=torch.long),
              "responses": torch.ones(batch, length, dtype=torch.long),
              "attention_mask": attention, "response_mask": mask, "old_log_probs": old_logp, "advantages": adv}
    if weights is not None:
        fields["rollout_is_weights"] = weights
    data = TensorDict(fields, batch_size=[batch])
    tu.assign_non_tensor(data, dp_size=dp_size, batch_num_tokens=num_tokens, global_batch_size=num_seqs)
    loss, metrics = ppo_loss(config, {"log_probs": torch.cat(pieces)}, data)
    return loss, metrics


def value_and_grad(fn, logp):
    leaf = logp.clone().requires_grad_(True)
    value = fn(leaf)
    (grad,) = torch.autograd.grad(value, leaf)
    return value.detach(), grad


def regions(logp, old_logp, adv, mask, eps_low=0.2, eps_high=0.2, dual_clip=3.0):
    ratio = losses.ratio_from_logps(logp, old_logp)
    lower, upper = token_groups.clipped_sides(ratio, adv, eps_low, eps_high)
    capped = (adv < 0) & (ratio > dual_clip)
    valid = mask.bool()
    return [int((x & valid).sum()) for x in (lower, upper, capped)]


def test_batch_reaches_every_region():
    """Guards the other tests: a batch without clipped or dual-clipped tokens would prove nothing."""
    for seed in (0, 1, 2, 4, 5, 7, 8, 9, 10, 11):  # every seed the tests below use with old_logp != logp
        lower, upper, capped = regions(*make_batch(seed))
        assert lower > 0 and upper > 0 and capped > 0, (seed, lower, upper, capped)


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------
def test_registry_returns_our_functions():
    assert get_policy_loss_fn("ce_gppo") is plugin.compute_policy_loss_ce_gppo
    assert get_policy_loss_fn("gppo") is plugin.compute_policy_loss_gppo
    assert verl.__version__ == plugin.VERL_VERSION


def _registry_in_fresh_process(plugins_policy):
    code = ("import sys, verl; from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY as R; "
            "print('loaded', 'cegppo_edu.integrations.verl' in sys.modules, 'ce_gppo' in R, 'gppo' in R)")
    env = {**os.environ, "VERL_USE_EXTERNAL_PLUGINS": plugins_policy}
    out = subprocess.run([PYTHON, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def test_import_cegppo_edu_does_not_import_verl():
    code = "import sys, cegppo_edu; print('verl' in sys.modules, 'cegppo_edu.integrations' in sys.modules)"
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_entry_point_registers_on_plain_import_verl():
    """The `verl.plugins` entry point: `import verl` alone registers both losses; verl's opt-out disables it."""
    assert _registry_in_fresh_process("auto") == "loaded True True True"
    assert _registry_in_fresh_process("none") == "loaded False False False"


# --------------------------------------------------------------------------------------------------
# Values and gradients through verl's real call site
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("agg", OUR_MODES)
@pytest.mark.parametrize("loss_mode, beta1, beta2", [("ce_gppo", 0.5, 1.0), ("ce_gppo", 0.75, 0.3),
                                                      ("gppo", None, None)])
@pytest.mark.parametrize("global_info", [True, False])
def test_ppo_loss_matches_package(agg, loss_mode, beta1, beta2, global_info):
    logp, old_logp, adv, mask = make_batch(seed=1)
    eps_low, eps_high, dual_clip = 0.2, 0.28, 3.0
    config = actor_config(loss_mode, beta1, beta2, eps_low, eps_high, dual_clip, agg)
    info = dict(num_tokens=int(mask.sum()), num_seqs=mask.shape[0]) if global_info else {}
    ours, ours_grad = value_and_grad(lambda x: call_ppo_loss(config, x, old_logp, adv, mask, **info)[0], logp)
    b1, b2 = plugin.betas(loss_mode, beta1, beta2)
    ref, ref_grad = value_and_grad(lambda x: losses.ce_gppo(x, old_logp, adv, mask, eps_low, eps_high, b1, b2,
                                                            dual_clip=dual_clip, agg=agg), logp)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(ours_grad, ref_grad)
    assert ours_grad.abs().sum() > 0


@pytest.mark.parametrize("agg", ["token-sum", "seq-mean-token-sum-norm"])
def test_verl_only_modes_are_rescaled_package_modes(agg):
    """verl's two extra modes: token-sum = token-mean × #tokens; seq-mean-token-sum-norm = seq-mean-token-sum / T."""
    logp, old_logp, adv, mask = make_batch(seed=2)
    config = actor_config(agg=agg)
    ours, ours_grad = value_and_grad(lambda x: call_ppo_loss(config, x, old_logp, adv, mask)[0], logp)
    base = "token-mean" if agg == "token-sum" else "seq-mean-token-sum"
    scale = mask.sum() if agg == "token-sum" else 1 / mask.shape[1]
    ref, ref_grad = value_and_grad(lambda x: losses.ce_gppo(x, old_logp, adv, mask, dual_clip=3.0, agg=base) * scale,
                                   logp)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(ours_grad, ref_grad)


@pytest.mark.parametrize("agg", OUR_MODES)
def test_global_batch_info_makes_parallel_split_exact(agg):
    """2 data-parallel ranks × micro-batches: DDP's mean over ranks of the summed micro-batch gradients equals
    the single-process gradient, because agg_loss normalises by the global token / sequence count."""
    logp, old_logp, adv, mask = make_batch(seed=0, batch=8)
    config = actor_config(agg=agg)
    info = dict(dp_size=2, num_tokens=int(mask.sum()), num_seqs=mask.shape[0])
    leaf = logp.clone().requires_grad_(True)
    rank_losses = []
    for rank in (slice(0, 4), slice(4, 8)):
        micro = [call_ppo_loss(config, leaf[s], old_logp[s], adv[s], mask[s], **info)[0]
                 for s in (slice(rank.start, rank.start + 1), slice(rank.start + 1, rank.stop))]
        rank_losses.append(sum(micro))
    split_loss = sum(rank_losses) / 2  # DDP averages the ranks' gradients
    (split_grad,) = torch.autograd.grad(split_loss, leaf)
    full, full_grad = value_and_grad(lambda x: losses.ce_gppo(x, old_logp, adv, mask, dual_clip=3.0, agg=agg), logp)
    torch.testing.assert_close(split_loss.detach(), full)
    torch.testing.assert_close(split_grad, full_grad)


def test_rollout_correction_weights_multiply_each_token():
    logp, old_logp, adv, mask = make_batch(seed=4)
    weights = torch.rand(mask.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    config = actor_config()
    ours, ours_grad = value_and_grad(lambda x: call_ppo_loss(config, x, old_logp, adv, mask, weights)[0], logp)

    def reference(x):
        per_token = losses.ce_gppo_per_token(x, old_logp, adv, eps_low=0.2, eps_high=0.2, beta1=0.5, beta2=1.0,
                                             dual_clip=3.0)
        return losses.aggregate(per_token * weights, mask)

    ref, ref_grad = value_and_grad(reference, logp)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(ours_grad, ref_grad)


@pytest.mark.parametrize("agg", OUR_MODES)
@pytest.mark.parametrize("dual_clip", [3.0, 10.0])
def test_beta_zero_has_the_gradient_of_verl_vanilla(agg, dual_clip):
    logp, old_logp, adv, mask = make_batch(seed=5)
    ours_cfg = actor_config(beta1=0.0, beta2=0.0, eps_high=0.28, dual_clip=dual_clip, agg=agg)
    vanilla_cfg = actor_config(eps_high=0.28, dual_clip=dual_clip, agg=agg,
                               policy_loss=PolicyLossConfig(loss_mode="vanilla"))
    ours, ours_grad = value_and_grad(lambda x: call_ppo_loss(ours_cfg, x, old_logp, adv, mask)[0], logp)
    van, van_grad = value_and_grad(lambda x: call_ppo_loss(vanilla_cfg, x, old_logp, adv, mask)[0], logp)
    torch.testing.assert_close(ours_grad, van_grad)
    assert not torch.isclose(ours, van)  # the values differ by a constant on clipped tokens, as documented


def test_on_policy_batch_equals_vanilla_in_value_too():
    """r = 1 everywhere (one optimizer step per batch): no token is clipped and every method coincides."""
    logp, _, adv, mask = make_batch(seed=6)
    ours = call_ppo_loss(actor_config(), logp, logp, adv, mask)[0]
    van = call_ppo_loss(actor_config(policy_loss=PolicyLossConfig(loss_mode="vanilla")), logp, logp, adv, mask)[0]
    torch.testing.assert_close(ours, van)
    torch.testing.assert_close(ours, -(adv * mask).sum() / mask.sum())


# --------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------
def test_metrics_match_verl_vanilla_and_token_groups():
    logp, old_logp, adv, mask = make_batch(seed=7)
    config = actor_config(eps_high=0.28)
    kwargs = dict(old_log_prob=old_logp, log_prob=logp, advantages=adv, response_mask=mask.bool(),
                  loss_agg_mode="token-mean", rollout_is_weights=None)
    _, ours = get_policy_loss_fn("ce_gppo")(config=config, **kwargs)
    _, vanilla = get_policy_loss_fn("vanilla")(config=actor_config(eps_high=0.28, policy_loss=PolicyLossConfig()),
                                               **kwargs)
    assert all(isinstance(v, float) for v in ours.values())
    for key in ("actor/pg_clipfrac", "actor/pg_clipfrac_lower", "actor/ppo_kl"):  # verl's names, verl's meaning
        assert ours[key] == pytest.approx(vanilla[key], abs=1e-6), key
    stats = token_groups.group_stats(logp, old_logp, adv, mask, eps_low=0.2, eps_high=0.28)
    assert ours["actor/cegppo/clipfrac_low"] == pytest.approx(stats["clip/low_frac"])
    assert ours["actor/cegppo/clipfrac_high"] == pytest.approx(stats["clip/high_frac"])
    assert ours["actor/pg_clipfrac"] == pytest.approx(stats["clip/low_frac"] + stats["clip/high_frac"])
    for group, key in plugin.GROUP_KEYS.items():
        assert ours[f"actor/cegppo/frac_{key}"] == pytest.approx(stats[f"{group}/frac"])
        assert ours[f"actor/cegppo/clipfrac_{key}"] == pytest.approx(
            stats[f"{group}/clip_low_frac"] + stats[f"{group}/clip_high_frac"])
    assert ours["actor/cegppo/clipfrac_pa_lp"] > 0 and ours["actor/cegppo/clipfrac_na_lp"] > 0


# --------------------------------------------------------------------------------------------------
# Hydra: the packaged preset on top of verl's shipped trainer config, validated by verl's driver check
# --------------------------------------------------------------------------------------------------
MICRO_BATCHES = ["actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1",  # verl requires these three
                 "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=1",
                 "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=1"]


def compose_preset(overrides=(), micro_batches=MICRO_BATCHES):
    with initialize_config_dir(config_dir=plugin.config_dir(), version_base=None):
        return compose(config_name="ce_gppo_trainer", overrides=list(micro_batches) + list(overrides))


def driver_validate(config):
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))


def test_preset_composes_validates_and_feeds_the_loss():
    config = compose_preset(["actor_rollout_ref.actor.policy_loss.beta1=0.75",  # no `+` needed
                             "actor_rollout_ref.actor.clip_ratio_high=0.28"])
    driver_validate(config)
    actor = omega_conf_to_dataclass(config.actor_rollout_ref.actor)  # what verl's driver and workers build
    assert isinstance(actor.policy_loss, plugin.CEGPPOPolicyLossConfig)
    assert (actor.policy_loss.loss_mode, actor.policy_loss.beta1, actor.policy_loss.beta2) == ("ce_gppo", 0.75, 1.0)
    assert (actor.clip_ratio_low, actor.clip_ratio_high, actor.clip_ratio_c) == (0.2, 0.28, 10.0)
    assert actor.policy_loss.clip_ratio_high == 0.28  # the driver-check copy follows the actor's key
    assert config.algorithm.filter_groups.enable and config.algorithm.adv_estimator == "grpo"
    assert actor.loss_agg_mode == "token-mean" and not actor.use_kl_loss

    logp, old_logp, adv, mask = make_batch(seed=8)
    ours, ours_grad = value_and_grad(lambda x: call_ppo_loss(actor, x, old_logp, adv, mask)[0], logp)
    ref, ref_grad = value_and_grad(lambda x: losses.ce_gppo(x, old_logp, adv, mask, 0.2, 0.28, 0.75, 1.0,
                                                            dual_clip=10.0), logp)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(ours_grad, ref_grad)


@pytest.mark.parametrize("override, named", [
    ("actor_rollout_ref.actor.policy_loss.beta1=-0.5", "policy_loss.beta1: beta1=-0.5"),
    ("actor_rollout_ref.actor.policy_loss.beta2=-1", "policy_loss.beta2: beta2=-1.0"),
    ("actor_rollout_ref.actor.policy_loss.loss_mode=cegppo", "loss_mode='cegppo'"),
    ("actor_rollout_ref.actor.clip_ratio_low=1.2", "clip_ratio_low: eps_low=1.2"),
    ("actor_rollout_ref.actor.clip_ratio_high=0", "clip_ratio_high: eps_high=0"),
    ("actor_rollout_ref.actor.clip_ratio_c=0.9", "clip_ratio_c: dual_clip=0.9"),
    ("actor_rollout_ref.actor.policy_loss.prob_threshold=1.5", "prob_threshold=1.5"),
])
def test_driver_rejects_bad_values_naming_them(override, named):
    config = compose_preset([override])
    with pytest.raises(Exception, match=re.escape(named)):
        driver_validate(config)


def test_target_route_on_verls_own_config_needs_plus_for_beta():
    """Without the preset: `_target_` selects our class, and β must be added with `+` (verl's YAML lacks it)."""
    from hydra.errors import ConfigCompositionException

    verl_config_dir = str(Path(verl.__file__).parent / "trainer" / "config")
    selected = ["actor_rollout_ref.actor.policy_loss._target_=cegppo_edu.integrations.verl.CEGPPOPolicyLossConfig",
                "actor_rollout_ref.actor.policy_loss.loss_mode=ce_gppo", "algorithm.adv_estimator=grpo"]
    with initialize_config_dir(config_dir=verl_config_dir, version_base=None):
        config = compose(config_name="ppo_trainer",
                         overrides=MICRO_BATCHES + selected + ["+actor_rollout_ref.actor.policy_loss.beta1=0.75"])
        with pytest.raises(ConfigCompositionException, match="beta1"):
            compose(config_name="ppo_trainer",
                    overrides=MICRO_BATCHES + selected + ["actor_rollout_ref.actor.policy_loss.beta1=0.75"])
    driver_validate(config)
    policy_loss = omega_conf_to_dataclass(config.actor_rollout_ref.actor).policy_loss
    assert isinstance(policy_loss, plugin.CEGPPOPolicyLossConfig)
    assert (policy_loss.beta1, policy_loss.beta2, policy_loss.clip_ratio_low) == (0.75, None, None)


def test_gppo_refuses_other_betas():
    with pytest.raises(ValueError, match="fixes beta1=beta2=1"):
        plugin.CEGPPOPolicyLossConfig(loss_mode="gppo", beta1=0.5)
    assert plugin.betas("gppo") == (1.0, 1.0) and plugin.betas("ce_gppo") == (0.5, 1.0)


def test_entry_point_route_uses_paper_betas_and_checks_at_first_call():
    """verl's own PolicyLossConfig + loss_mode=ce_gppo: β default to the paper's, ranges checked in the loss."""
    logp, old_logp, adv, mask = make_batch(seed=10)
    config = actor_config(policy_loss=PolicyLossConfig(loss_mode="ce_gppo"))
    ours = call_ppo_loss(config, logp, old_logp, adv, mask)[0]
    torch.testing.assert_close(ours, losses.ce_gppo(logp, old_logp, adv, mask, 0.2, 0.2, 0.5, 1.0, dual_clip=3.0))
    bad = actor_config(eps_low=1.5, policy_loss=PolicyLossConfig(loss_mode="ce_gppo"))
    with pytest.raises(ValueError, match=re.escape("actor_rollout_ref.actor.clip_ratio_low: eps_low=1.5")):
        call_ppo_loss(bad, logp, old_logp, adv, mask)


def test_loss_refuses_a_policy_loss_copy_that_disagrees_with_the_actor():
    policy_loss = plugin.CEGPPOPolicyLossConfig(clip_ratio_low=0.1, clip_ratio_high=0.2, clip_ratio_c=3.0)
    logp, old_logp, adv, mask = make_batch(seed=11)
    with pytest.raises(ValueError, match="policy_loss.clip_ratio_low=0.1 differs from actor.clip_ratio_low=0.2"):
        call_ppo_loss(actor_config(policy_loss=policy_loss), logp, old_logp, adv, mask)


def test_dataset_command_writes_verl_schema(tmp_path):
    source = tmp_path / "problems.jsonl"
    source.write_text('{"problem": "What is 2+3?", "answer": "5"}\n{"problem": "Solve x+1=3.", "answer": "2"}\n')
    assert plugin.main(["dataset", str(source), str(tmp_path / "train.parquet"), "--limit", "1"]) == 0
    frame = pd.read_parquet(tmp_path / "train.parquet")  # verl's reader is exercised by the main_ppo test
    assert len(frame) == 1
    row = frame.iloc[0]
    assert row["data_source"] == "math_dapo" and row["reward_model"]["ground_truth"] == "5"
    assert list(row["prompt"]) == [{"role": "user", "content": "What is 2+3?\nPlease reason step by step, and put "
                                                                "your final answer within \\boxed{}."}]
    with pytest.raises(ValueError, match="problems is empty"):
        plugin.write_verl_dataset([], tmp_path / "empty.parquet")


# --------------------------------------------------------------------------------------------------
# Ray: a worker process finds the loss, by the entry point and by the config's _target_ alone
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ray_worker_finds_the_loss():
    import ray

    config = compose_preset(["actor_rollout_ref.actor.policy_loss.beta1=0.25"])
    actor_dict = OmegaConf.to_container(config.actor_rollout_ref.actor, resolve=True)
    def worker_registry(actor_dict):  # nested, so Ray ships it by value
        import sys

        from omegaconf import OmegaConf
        from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY  # this import runs `import verl`
        from verl.utils.config import omega_conf_to_dataclass
        before = ("ce_gppo" in POLICY_LOSS_REGISTRY, "cegppo_edu.integrations.verl" in sys.modules)
        actor = omega_conf_to_dataclass(OmegaConf.create(actor_dict)) if actor_dict else None
        after = "ce_gppo" in POLICY_LOSS_REGISTRY and "gppo" in POLICY_LOSS_REGISTRY
        return before, after, None if actor is None else actor.policy_loss.beta1

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(worker_registry)
        by_entry_point = remote.remote(None)
        no_plugins = remote.options(runtime_env={"env_vars": {"VERL_USE_EXTERNAL_PLUGINS": "none"}})
        by_target = no_plugins.remote(actor_dict)
        # Importing verl in the worker ran the entry point, which registered the loss.
        assert ray.get(by_entry_point, timeout=180) == ((True, True), True, None)
        # Plugins off: nothing registered until Hydra builds the actor config, whose _target_ imports us.
        assert ray.get(by_target, timeout=180) == ((False, False), True, 0.25)
    finally:
        ray.shutdown()


# --------------------------------------------------------------------------------------------------
# verl's real driver: python -m verl.trainer.main_ppo
# --------------------------------------------------------------------------------------------------
def run_main_ppo(overrides, cwd, timeout):
    """main_ppo in its own process group, so that a hang is killed with every Ray process it started."""
    command = [PYTHON, "-m", "verl.trainer.main_ppo", "--config-dir", plugin.config_dir(),
               "--config-name", "ce_gppo_trainer", *overrides]
    env = {**os.environ, "RAY_DEDUP_LOGS": "0", "HYDRA_FULL_ERROR": "1", "WANDB_MODE": "disabled"}
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"main_ppo did not finish within {timeout} s; last output:\n{output[-3000:]}")
    return process.returncode, output


@pytest.mark.slow
def test_main_ppo_rejects_a_bad_beta_before_starting_ray(tmp_path):
    code, output = run_main_ppo(["actor_rollout_ref.actor.policy_loss.beta2=-0.1"], tmp_path, timeout=180)
    assert code != 0
    assert "actor_rollout_ref.actor.policy_loss.beta2: beta2=-0.1 is outside the allowed range" in output
    assert "ray init kwargs" not in output  # failed in the driver, before any Ray process or GPU request


@pytest.mark.slow
def test_main_ppo_passes_config_and_data_and_stops_at_the_gpu_requirement(tmp_path, tiny_model_dir, parquet_files):
    train, val = parquet_files
    overrides = [
        f"data.train_files={train}", f"data.val_files={val}", "data.train_batch_size=4",
        "data.max_prompt_length=64", "data.max_response_length=32", "data.dataloader_num_workers=0",
        f"actor_rollout_ref.model.path={tiny_model_dir}", "actor_rollout_ref.rollout.n=2",
        "actor_rollout_ref.actor.ppo_mini_batch_size=2", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=1",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=1",
        "actor_rollout_ref.actor.policy_loss.beta1=0.75",
        "trainer.n_gpus_per_node=1", "trainer.nnodes=1", "trainer.logger=[console]",
        "ray_kwargs.ray_init.num_cpus=16",  # logical CPUs; with 2, verl's TransferQueue start-up hung
    ]
    code, output = run_main_ppo(overrides, tmp_path, timeout=280)
    stages = ["[validate_config] All configuration checks passed successfully!",
              "'_target_': 'cegppo_edu.integrations.verl.CEGPPOPolicyLossConfig'",
              "train and validate dataloader initialized, train dataset size: 8, val dataset size: 4",
              "ValueError: Total available GPUs 0 is less than total desired GPUs 1"]
    positions = [output.find(stage) for stage in stages]
    assert code != 0 and all(p >= 0 for p in positions), (positions, output[-3000:])
    assert positions == sorted(positions), positions  # in this order: config, data, then the GPU check
    assert "'beta1': 0.75" in output
    errors = [line for line in output.splitlines() if re.match(r"^[\w.]*(Error|Exception)[\w()]*: ", line)]
    assert errors and errors[-1] == stages[-1], errors  # the run stopped at the GPU requirement, nowhere else
    assert all("Total available GPUs 0" in line or line.startswith("ray.exceptions.RayTaskError(ValueError)")
               for line in errors), errors
    assert not list(Path(tmp_path).rglob("*.pt"))  # nothing was trained or saved


# --------------------------------------------------------------------------------------------------
# The book page's command line is real: every key exists in verl 0.9.1 and passes verl's driver checks
# --------------------------------------------------------------------------------------------------
BOOK_PAGE = Path(__file__).resolve().parents[1] / "book" / "scaling_verl.md"


def documented_overrides(marker="# one node, 8 GPUs"):
    """The key=value arguments of the page's main_ppo command (shell variables filled with dummy values)."""
    import shlex

    text = BOOK_PAGE.read_text()
    block = text[text.index(marker):]
    block = block[:block.index("```")]
    command = block[block.index("python -m verl.trainer.main_ppo"):].replace("\\\n", " ")
    variables = dict(re.findall(r"^(\w+)=(\S+)$", block, flags=re.MULTILINE))
    for name, value in variables.items():
        command = command.replace(f"${name}", value)
    words = shlex.split(command.replace("$HOME", "/home/user"))
    assert words[3:7] == ["--config-dir", '$(python -m cegppo_edu.integrations.verl)', "--config-name",
                          "ce_gppo_trainer"], words[:7]
    return words[7:]


def test_book_command_line_composes_and_validates():
    overrides = documented_overrides()
    assert len(overrides) > 40 and all("=" in word for word in overrides)
    config = compose_preset(overrides, micro_batches=())  # the page's command alone, nothing added
    driver_validate(config)
    actor = omega_conf_to_dataclass(config.actor_rollout_ref.actor)
    assert isinstance(actor.policy_loss, plugin.CEGPPOPolicyLossConfig)
    assert (actor.policy_loss.beta1, actor.policy_loss.beta2, actor.clip_ratio_c) == (0.5, 1.0, 10.0)
    assert (config.data.train_batch_size, config.actor_rollout_ref.rollout.n, actor.ppo_mini_batch_size) == (128, 8, 16)
    assert config.actor_rollout_ref.actor.optim.lr == 1e-6 and config.trainer.n_gpus_per_node == 8
