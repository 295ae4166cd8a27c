"""Token groups: which tokens push entropy up or down, and which of them PPO clips away.

Two classifications of every valid token (the paper in brief, §3):
- by advantage sign and probability: PA&HP, PA&LP, NA&HP, NA&LP (P/N = positive/negative advantage,
  HP/LP = probability at least / below ``threshold``, default 0.5 as read off the paper's figure 1).
  Tokens with Â = 0 (e.g. a zero-variance group that was kept) carry no gradient under any method and
  get their own class ``ZA``, so that the class counts always add up to the number of valid tokens.
- by clip region: below (r < 1−ε_l), inside, above (r > 1+ε_h).

A token is *clipped* when PPO zeroes its gradient: below with Â < 0, or above with Â > 0. Those are
exactly the tokens CE-GPPO gives back a bounded gradient.
"""

from __future__ import annotations

import torch

from .losses import check_inputs, clipped_sides, get_method, gradient_weight, ratio_from_logps, reference_clip
from .validation import OPEN_UNIT

GROUPS = ("PA&HP", "PA&LP", "NA&HP", "NA&LP")
ZERO_ADV = "ZA"
CLASSES = GROUPS + (ZERO_ADV,)
# The sign of each group's first-order effect on entropy (the paper in brief §3 table).
GROUP_ENTROPY_EFFECT = {"PA&HP": "lowers", "PA&LP": "raises", "NA&HP": "raises", "NA&LP": "lowers"}
BELOW, INSIDE, ABOVE = -1, 0, 1
HP_THRESHOLD = 0.5  # π at or above: high-probability (HP), below: LP (read off the paper's figure 1)


def classify(prob: torch.Tensor, adv: torch.Tensor, threshold: float = HP_THRESHOLD) -> torch.Tensor:
    """Index into ``CLASSES`` for every token: 0 PA&HP, 1 PA&LP, 2 NA&HP, 3 NA&LP, 4 ZA. Shape of ``prob``."""
    OPEN_UNIT.check("threshold", threshold)
    adv = adv if adv.dim() == prob.dim() else adv[:, None]  # broadcasts against prob, never expanded
    # LP adds 1, a non-positive advantage 2; Â = 0 then becomes ZA. Two passes over the tokens (the bandit
    # classifies 200k token-updates a step in a β sweep), the advantage tests on the small adv tensor.
    group = (prob < threshold).long() + 2 * (adv > 0).logical_not()
    return group.masked_fill_((adv == 0).expand_as(group), len(GROUPS))


def clip_region(ratio: torch.Tensor, eps_low: float, eps_high: float) -> torch.Tensor:
    """−1 below 1−ε_l, 0 inside (edges included), +1 above 1+ε_h."""
    return (ratio > 1 + eps_high).long() - (ratio < 1 - eps_low).long()


@torch.no_grad()
def group_stats(logp, old_logp, adv, mask, method="ce_gppo", threshold=HP_THRESHOLD, influence=None, classify_by="current",
                **hyper) -> dict:
    """Per-class statistics of one batch of tokens, as a flat dict of floats (ready for a JSONL log).

    Keys ``"{class}/{stat}"`` for each class in ``CLASSES`` with stat in
    ``count``, ``frac`` (of valid tokens), ``mean_prob``, ``clip_low_frac``, ``clip_high_frac``
    (fractions of the class's tokens PPO clips on each side), ``weight_sum`` (Σ |F·Â|, the summed size of
    the coefficient on ∇log π under ``method``) and, if the per-token entropy ``influence`` I is given
    (``entropy.entropy_influence``), ``entropy_push`` = Σ −F·Â·I (proportional to the class's first-order
    contribution to the entropy change). Plus batch-wide ``clip/low_frac``, ``clip/high_frac``, ``tokens``.
    ``hyper`` are the method's hyper-parameters (``eps_low``, ``eps_high``, ``beta1``, ``beta2``, ``dual_clip``).
    ``classify_by``: whose probability decides HP/LP — ``"current"`` (π_θ = exp(logp), the policy being updated,
    whose π also enters the entropy influence I_a; the default, used by the trainer's metrics) or ``"old"``
    (π_old = exp(old_logp), the probability the token had when it was sampled). After a few updates a token can
    cross the threshold, so the two split the clipped tokens differently.
    """
    adv, mask = check_inputs(logp, old_logp, adv, mask)
    resolved = get_method(method).resolve(**hyper)
    ratio = ratio_from_logps(logp, old_logp)
    if classify_by not in ("current", "old"):
        raise ValueError(f"classify_by={classify_by!r} must be 'current' or 'old'")
    prob = (logp if classify_by == "current" else old_logp).exp()
    valid = mask.bool()
    group = classify(prob, adv, threshold)
    lower, upper = clipped_sides(ratio, adv, *reference_clip(resolved))  # PPO's interval for a method without one
    coef = gradient_weight(ratio, adv, method, **hyper) * adv  # (B, T): coefficient on ∇log π
    # One sum per (statistic, class) in a single scatter over the valid tokens, read back with one ``tolist``: a
    # loop over the classes with an ``item()`` per number was most of the trainer's diagnostics cost.
    per_token = [torch.ones_like(prob), prob, lower, upper, coef.abs()]
    if influence is not None:
        per_token.append(-coef * influence)
    values = torch.stack([x.expand_as(prob).double() for x in per_token])[:, valid]  # (stats, valid tokens)
    sums = torch.zeros(len(per_token), len(CLASSES), dtype=torch.float64, device=prob.device)
    sums.index_add_(1, group[valid], values)
    count, prob_sum, low_sum, high_sum, weight_sum, *push = sums.tolist()
    n_valid = sum(count)
    stats = {"tokens": n_valid, "clip/low_frac": sum(low_sum) / n_valid, "clip/high_frac": sum(high_sum) / n_valid}
    for index, name in enumerate(CLASSES):
        n = count[index]
        stats[f"{name}/count"] = n
        stats[f"{name}/frac"] = n / n_valid
        stats[f"{name}/mean_prob"] = prob_sum[index] / n if n else 0.0
        stats[f"{name}/clip_low_frac"] = low_sum[index] / n if n else 0.0
        stats[f"{name}/clip_high_frac"] = high_sum[index] / n if n else 0.0
        stats[f"{name}/weight_sum"] = weight_sum[index]
        if push:
            stats[f"{name}/entropy_push"] = push[0][index]
    return stats


def merge_group_stats(stats_list: list[dict]) -> dict:
    """Combine ``token_groups.group_stats`` dicts of several micro-batches into one for the whole step.

    Counts, weight sums and entropy pushes add up; fractions and mean probabilities are re-weighted by counts.
    """
    tokens = sum(s["tokens"] for s in stats_list)
    out = {"tokens": tokens}
    for side in ("low", "high"):
        out[f"clip/{side}_frac"] = sum(s[f"clip/{side}_frac"] * s["tokens"] for s in stats_list) / tokens
    for name in CLASSES:
        count = sum(s[f"{name}/count"] for s in stats_list)
        out[f"{name}/count"] = count
        out[f"{name}/frac"] = count / tokens
        for key in ("mean_prob", "clip_low_frac", "clip_high_frac"):
            out[f"{name}/{key}"] = (sum(s[f"{name}/{key}"] * s[f"{name}/count"] for s in stats_list) / count
                                    if count else 0.0)
        for key in ("weight_sum", "entropy_push"):
            if f"{name}/{key}" in stats_list[0]:
                out[f"{name}/{key}"] = sum(s[f"{name}/{key}"] for s in stats_list)
        out[f"{name}/clipped"] = out[f"{name}/count"] * (out[f"{name}/clip_low_frac"] + out[f"{name}/clip_high_frac"])
    return out
