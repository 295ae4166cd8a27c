"""CE-GPPO and GPPO as policy losses of verl (written against verl 0.9.1).

Importing this module registers two names in verl's policy-loss registry, ``ce_gppo`` and ``gppo``. The
formula is not repeated here: the per-token loss is ``cegppo_edu.losses.ce_gppo_per_token`` (CE-GPPO,
arXiv:2509.20712 v2, eq. 5; GPPO is the case β1 = β2 = 1); verl's ``agg_loss`` reduces it over the global
batch, exactly as verl's own losses do, so data parallelism and micro-batching do not change the result.

Two ways to switch a verl run to CE-GPPO (book/scaling_verl.md shows the full command lines):

1. ``actor_rollout_ref.actor.policy_loss._target_=cegppo_edu.integrations.verl.CEGPPOPolicyLossConfig`` (or the
   packaged preset ``--config-name ce_gppo_trainer``, which sets it). Hydra imports this module wherever verl
   builds the actor config, in the driver and in every worker, so the one setting registers the loss,
   carries β1/β2 and checks every hyper-parameter in the driver, before any GPU is reserved.
2. The ``verl.plugins`` entry point of this package: ``import verl`` imports this module in every process, so
   ``policy_loss.loss_mode=ce_gppo`` works with verl's own config class. β then keep the paper's values
   (β1 = 0.5, β2 = 1) because verl's frozen config rejects unknown keys, and the ranges are checked on the
   first loss call in the worker instead of the driver.

Hyper-parameters and where they live in verl's config (all under ``actor_rollout_ref.actor``):
ε_l = ``clip_ratio_low``, ε_h = ``clip_ratio_high``, dual-clip c = ``clip_ratio_c`` (applied to Â < 0 tokens,
as verl's ``vanilla`` loss and the authors' code do), β1/β2 = ``policy_loss.beta1/beta2``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from verl.trainer.ppo.core_algos import agg_loss, register_policy_loss
from verl.workers.config import PolicyLossConfig

from cegppo_edu.losses import (ce_gppo_per_token, clamped_log_ratio, clipped_sides, get_method, ratio_from_logps)
from cegppo_edu.token_groups import GROUPS, HP_THRESHOLD, classify

VERL_VERSION = "0.9.1"  # the verl release this adapter is tested against (tests_verl/)
LOSS_MODES = ("ce_gppo", "gppo")  # names in cegppo_edu.losses.METHODS; their defaults and ranges come from there
METRIC_PREFIX = "actor/cegppo/"
# Metric-safe group names: TensorBoard and wandb tags should not contain "&".
GROUP_KEYS = {group: group.lower().replace("&", "_") for group in GROUPS}  # "PA&LP" -> "pa_lp"


@dataclass
class CEGPPOPolicyLossConfig(PolicyLossConfig):
    """verl's policy-loss config plus CE-GPPO's β; ``__post_init__`` rejects bad values in the driver.

    Fields added to verl's ``PolicyLossConfig``:
    - ``beta1``: β1 ≥ 0, the weight of the preserved gradient of tokens with r < 1−ε_l and Â < 0 (the
      lower side). ``None``: the method's default in ``cegppo_edu.losses.METHODS`` (the paper's 1.5B value for
      ``ce_gppo``; ``gppo`` fixes it at 1).
    - ``beta2``: β2 ≥ 0, the same for r > 1+ε_h and Â > 0 (the upper side).
    - ``prob_threshold``: the probability that splits high- from low-probability tokens in the token-group
      metrics (``cegppo_edu.token_groups.HP_THRESHOLD``, read off the paper's figure 1).
    - ``clip_ratio_low`` / ``clip_ratio_high`` / ``clip_ratio_c``: copies of the actor's ε_l, ε_h and c that
      the preset fills in by interpolation (``${..clip_ratio_low}``), so that the driver can check their
      ranges. Set the actor's keys, not these; the loss refuses to run if a copy disagrees with the actor.
    """

    loss_mode: str = "ce_gppo"
    beta1: Optional[float] = None
    beta2: Optional[float] = None
    prob_threshold: float = HP_THRESHOLD
    clip_ratio_low: Optional[float] = None
    clip_ratio_high: Optional[float] = None
    clip_ratio_c: Optional[float] = None

    def __post_init__(self):
        beta1, beta2 = betas(self.loss_mode, self.beta1, self.beta2)  # raises on an unknown mode
        defaults = get_method(self.loss_mode).defaults  # no copy of ε (no preset): check β only
        eps_low = defaults["eps_low"] if self.clip_ratio_low is None else self.clip_ratio_low
        eps_high = defaults["eps_high"] if self.clip_ratio_high is None else self.clip_ratio_high
        check_ranges(eps_low, eps_high, beta1, beta2, self.clip_ratio_c)
        if not 0.0 < self.prob_threshold < 1.0:
            raise ValueError(f"policy_loss.prob_threshold={self.prob_threshold!r} is outside the allowed range (0, 1)")


def betas(loss_mode: str, beta1: float | None = None, beta2: float | None = None) -> tuple[float, float]:
    """(β1, β2) for ``loss_mode`` with the defaults filled in; ``ValueError`` naming an unknown mode."""
    if loss_mode not in LOSS_MODES:
        raise ValueError(f"policy_loss.loss_mode={loss_mode!r} is not a loss of {__name__}; choose one of "
                         f"{', '.join(LOSS_MODES)} (for verl's own losses keep verl's PolicyLossConfig)")
    method = get_method(loss_mode)
    defaults = {**method.defaults, **method.fixed}
    beta1 = defaults["beta1"] if beta1 is None else float(beta1)
    beta2 = defaults["beta2"] if beta2 is None else float(beta2)
    fixed = (method.fixed.get("beta1"), method.fixed.get("beta2"))
    if method.fixed and (beta1, beta2) != fixed:
        what = f"beta1=beta2={fixed[0]:g}" if fixed[0] == fixed[1] else f"beta1={fixed[0]:g}, beta2={fixed[1]:g}"
        raise ValueError(f"policy_loss.loss_mode={loss_mode!r} fixes {what}, got beta1={beta1!r}, beta2={beta2!r}; "
                         f"use loss_mode='ce_gppo' for other values")
    return beta1, beta2


# Our parameter names -> verl's keys, so that an error names the key the user has to change.
VERL_KEYS = {"eps_low": "actor_rollout_ref.actor.clip_ratio_low",
             "eps_high": "actor_rollout_ref.actor.clip_ratio_high",
             "beta1": "actor_rollout_ref.actor.policy_loss.beta1",
             "beta2": "actor_rollout_ref.actor.policy_loss.beta2",
             "dual_clip": "actor_rollout_ref.actor.clip_ratio_c"}


def check_ranges(eps_low, eps_high, beta1, beta2, dual_clip=None) -> None:
    """The ranges of ``cegppo_edu.losses.METHODS["ce_gppo"]``, with the error also naming verl's key for the bad
    value."""
    try:
        get_method("ce_gppo").resolve(eps_low=eps_low, eps_high=eps_high, beta1=beta1, beta2=beta2,
                                      dual_clip=dual_clip)
    except ValueError as error:
        name = str(error).split("=", 1)[0]
        raise ValueError(f"{VERL_KEYS.get(name, name)}: {error}") from None


def hyper_parameters(config: Any, loss_mode: str) -> dict:
    """ε_l, ε_h, β1, β2 and the dual clip c from verl's actor config, validated (``check_ranges``)."""
    eps_low = config.clip_ratio_low if config.clip_ratio_low is not None else config.clip_ratio
    eps_high = config.clip_ratio_high if config.clip_ratio_high is not None else config.clip_ratio
    dual_clip = config.get("clip_ratio_c", 3.0)  # verl's default when the key is absent
    policy_loss = config.get("policy_loss", None) or {}
    for key, actor_value in (("clip_ratio_low", eps_low), ("clip_ratio_high", eps_high), ("clip_ratio_c", dual_clip)):
        copy = policy_loss.get(key, None)
        if copy is not None and copy != actor_value:
            raise ValueError(f"policy_loss.{key}={copy!r} differs from actor.{key}={actor_value!r}; set only the "
                             f"actor's key (the policy_loss copy is for the driver's range check)")
    beta1, beta2 = betas(loss_mode, policy_loss.get("beta1", None), policy_loss.get("beta2", None))
    check_ranges(eps_low, eps_high, beta1, beta2, dual_clip)
    return dict(eps_low=eps_low, eps_high=eps_high, beta1=beta1, beta2=beta2, dual_clip=dual_clip)


@torch.no_grad()
def loss_metrics(log_prob, old_log_prob, advantages, response_mask, eps_low, eps_high, dual_clip,
                 prob_threshold=0.5) -> dict[str, float]:
    """verl's three policy metrics (same meaning as in its ``vanilla`` loss) plus the token groups of the paper in brief §3.

    - ``actor/pg_clipfrac``: share of tokens PPO would zero (r outside the interval on the side of Â's
      sign) = the tokens whose gradient CE-GPPO keeps; ``actor/cegppo/clipfrac_low`` (β1 side, Â<0) and
      ``actor/cegppo/clipfrac_high`` (β2 side, Â>0) split it.
    - ``actor/pg_clipfrac_lower``: share of tokens capped by the dual clip (Â<0 and r>c), verl's meaning.
    - ``actor/ppo_kl``: mean of log π_old − log π over valid tokens.
    - ``actor/cegppo/frac_<group>``: share of valid tokens in PA&HP, PA&LP, NA&HP, NA&LP (e.g. ``frac_pa_lp``);
      ``actor/cegppo/clipfrac_<group>``: share of that group's tokens on the clipped side.
    All values are means over one micro-batch (verl averages them over micro-batches); one host sync.
    """
    valid = response_mask.bool()
    ratio = ratio_from_logps(log_prob, old_log_prob)
    lower, upper = clipped_sides(ratio, advantages, eps_low, eps_high)  # (B, T) each
    capped = (advantages < 0) & (ratio > dual_clip)
    group = classify(log_prob.exp(), advantages, prob_threshold)  # (B, T), index into CLASSES
    log_ratio = clamped_log_ratio(log_prob, old_log_prob)

    def share(selected, within=valid):
        return (selected & within).sum() / within.sum().clamp(min=1)

    stats = {"actor/pg_clipfrac": share(lower | upper),
             "actor/ppo_kl": (-log_ratio)[valid].sum() / valid.sum().clamp(min=1),
             "actor/pg_clipfrac_lower": share(capped),
             METRIC_PREFIX + "clipfrac_low": share(lower),
             METRIC_PREFIX + "clipfrac_high": share(upper)}
    for index, name in enumerate(GROUPS):
        in_group = valid & (group == index)
        stats[f"{METRIC_PREFIX}frac_{GROUP_KEYS[name]}"] = share(in_group)
        stats[f"{METRIC_PREFIX}clipfrac_{GROUP_KEYS[name]}"] = share(lower | upper, within=in_group)
    values = torch.stack([v.float() for v in stats.values()]).tolist()  # one device -> host copy
    return dict(zip(stats, values))


def _policy_loss(loss_mode, old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config,
                 rollout_is_weights):
    """The body shared by both registered losses; verl's keyword interface, returns (loss, metrics)."""
    if config is None:
        raise ValueError(f"verl passed config=None to the {loss_mode!r} loss; it needs the actor config")
    hyper = hyper_parameters(config, loss_mode)
    per_token = ce_gppo_per_token(log_prob, old_log_prob, advantages, **hyper)  # (B, T)
    if rollout_is_weights is not None:  # verl's rollout-correction weights, as in its vanilla loss
        per_token = per_token * rollout_is_weights
    loss = agg_loss(loss_mat=per_token, loss_mask=response_mask, loss_agg_mode=loss_agg_mode,
                    **config.global_batch_info)
    threshold = (config.get("policy_loss", None) or {}).get("prob_threshold", HP_THRESHOLD)
    metrics = loss_metrics(log_prob, old_log_prob, advantages, response_mask, hyper["eps_low"], hyper["eps_high"],
                           hyper["dual_clip"], threshold)
    return loss, metrics


def _registered_policy_loss(loss_mode: str):
    """The function verl's registry calls for ``loss_mode``, with the keyword interface of verl's own losses."""
    def compute_policy_loss(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
                            response_mask: torch.Tensor, loss_agg_mode: str = "token-mean", config: Any = None,
                            rollout_is_weights: torch.Tensor | None = None):
        return _policy_loss(loss_mode, old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config,
                            rollout_is_weights)
    compute_policy_loss.__name__ = compute_policy_loss.__qualname__ = f"compute_policy_loss_{loss_mode}"
    compute_policy_loss.__doc__ = (f"{get_method(loss_mode).reference}, β from ``config.policy_loss``. Inputs (B, T).")
    return register_policy_loss(loss_mode)(compute_policy_loss)


compute_policy_loss_ce_gppo = _registered_policy_loss("ce_gppo")
compute_policy_loss_gppo = _registered_policy_loss("gppo")


def config_dir() -> str:
    """The folder holding the packaged Hydra preset ``ce_gppo_trainer.yaml`` (for ``--config-dir``)."""
    return str(Path(__file__).resolve().parent)


def write_verl_dataset(problems: Iterable, path, data_source: str = "math_dapo", split: str = "train") -> str:
    """Write math problems as a verl RL parquet file (the schema of verl's ``RLHFDataset``); returns ``path``.

    ``problems``: objects with ``question`` and ``answer`` (``cegppo_edu.gpu.math_data.MathProblem``). Each row gets
    the one user turn of ``prompts.math_user_message`` (no system prompt; the model's chat template adds the
    rest), ``reward_model.ground_truth`` and ``data_source``, which selects verl's reward: ``math_dapo`` is
    verl's built-in +1/−1 math reward and reports ``acc``, the key the preset's dynamic-sampling filter uses.
    """
    import pandas as pd

    from cegppo_edu.gpu.prompts import math_user_message

    rows = [{"data_source": data_source,
             "prompt": [{"role": "user", "content": math_user_message(p.question)}],
             "ability": "math",
             "reward_model": {"style": "rule", "ground_truth": str(p.answer)},
             "extra_info": {"index": index, "split": split}}
            for index, p in enumerate(problems)]
    if not rows:
        raise ValueError("problems is empty; at least one problem is needed to write a dataset")
    pd.DataFrame(rows).to_parquet(path)
    return str(path)


def main(argv=None) -> int:
    """``python -m cegppo_edu.integrations.verl`` prints the preset's folder; ``... dataset SOURCE OUT``
    writes a verl parquet file from any source ``cegppo_edu.gpu.math_data.load_problems`` reads."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m cegppo_edu.integrations.verl", description=main.__doc__)
    commands = parser.add_subparsers(dest="command")
    dataset = commands.add_parser("dataset", help="write a verl RL parquet file of math problems")
    dataset.add_argument("source", help="mathsub30k, aime24, aime25, math500, a Hub id or a local json/parquet")
    dataset.add_argument("out", help="the parquet file to write")
    dataset.add_argument("--split", default="train", help="split name stored in extra_info (default train)")
    dataset.add_argument("--limit", type=int, default=None, help="keep the first LIMIT problems")
    args = parser.parse_args(argv)
    if args.command is None:
        print(config_dir())
        return 0
    from cegppo_edu.gpu.math_data import load_problems

    problems = load_problems(args.source, limit=args.limit)
    print(f"wrote {len(problems)} problems to {write_verl_dataset(problems, args.out, split=args.split)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
