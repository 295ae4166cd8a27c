"""The "token bandit": a toy where the entropy effects of the paper in brief §3 can be watched step by step.

The policy is a table of softmax logits ``z`` of shape ``(L, K)``: one K-way distribution per position of a
sequence of L tokens, with no context (the token at position l does not depend on earlier tokens). A
sequence's reward is 0 or 1, like a verifier's: 1 with a probability that grows with the fraction of its
first ``relevant`` positions holding the target token 0 (from ``success_low`` to ``success_high``). The other
positions are reward-irrelevant: their advantages are pure noise, and that is where the clipping asymmetry
shows most (compare ``History.entropy_irrelevant`` across methods).

One *step* is one rollout batch, exactly as in the LM trainer:
  sample ``groups × group_size`` sequences → rewards → group advantages (``advantages.group_advantages``) →
  old log-probs → ``epochs`` passes over ``minibatches`` mini-batches, one plain SGD update of the logits each.
The ratios start at 1 and leave [1−ε_l, 1+ε_h] during the later updates of a batch, which is the only
situation in which the methods differ (the paper in brief §2, last bullet).

The gradient comes from the package's losses: per token, d loss / d logp = −F(r, Â)·Â / N (token-mean over the
N tokens of a mini-batch, F = ``losses.gradient_weight``), and for tabular softmax d logp_a / d z = onehot(a) − π.
``simulate_loop`` is a plain per-seed reference that instead differentiates ``losses.get_loss(method)`` with
autograd; a test checks that both give the same numbers.

Every update also records the first-order entropy change predicted per token by ``entropy.entropy_influence``
(ΔH ≈ −η·w·I_a, the paper in brief §3, with I_a taken at the policy that sampled the batch), split over the token
groups of ``token_groups`` and over the clipped tokens.

Why these defaults (measured; see the chapter): 8 updates per rollout batch (4 mini-batches × 2 epochs, the
authors' "up to 8") and η = 8 leave 2–6 % of the token-updates clipped (GRPO 2.4 %, CE-GPPO 5.6 %), enough
for the methods to part; with ``success_high = 0.5`` the rewarded sequences are the minority, so positive
advantages are the large ones, as on hard math prompts. With ``success_low, success_high = 0.1, 0.9`` (easy
prompts, large negative advantages) GRPO's entropy ends above CE-GPPO's instead (0.86 against 0.71, 8 seeds,
mean of the last 50 steps): the toy's claims depend on that choice, and the chapter should say so.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..advantages import group_advantages
from ..entropy import entropy_from_logits, entropy_influence, entropy_influence_per_choice
from ..losses import (clipped_sides, get_loss, get_method, ratio_from_logps, reference_clip, token_level_methods,
                      weight_function)
from ..summaries import FINAL_STEPS, final_mean
from ..token_groups import GROUPS, HP_THRESHOLD, classify, group_stats
from ..validation import (NON_NEGATIVE, NON_NEGATIVE_INT, OPEN_UNIT, POSITIVE, POSITIVE_INT, Range, check_choice,
                          check_fits_in_memory)

TARGET_TOKEN = 0  # the rewarded token at every relevant position
UNIT = Range(0.0, 1.0)


# --------------------------------------------------------------------------------------------------
# The toy and its validation
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Toy:
    """Shape and optimiser of the token bandit (the ``**toy`` keywords of ``simulate``)."""

    positions: int = 8
    """L, tokens per sequence."""
    vocab: int = 8
    """K, choices per position."""
    relevant: int = 2
    """How many of the first positions the reward reads (the rest are reward-irrelevant)."""
    group_size: int = 8
    """G, samples per "prompt" for group advantages (the authors use 8)."""
    groups: int = 8
    """Prompts per rollout batch (all prompts share the same policy table)."""
    minibatches: int = 4
    """Mini-batches per rollout batch; each holds ``groups / minibatches`` whole groups."""
    epochs: int = 2
    """Passes over the rollout batch; updates per step = ``minibatches × epochs``."""
    lr: float = 8.0
    """η, plain SGD step size on the logits (no Adam: its per-parameter scaling would hide the weights F)."""
    success_low: float = 0.0
    """Probability that a sequence with no relevant position right is rewarded 1 (else 0)."""
    success_high: float = 0.5
    """Probability that a sequence with every relevant position right is rewarded 1. Below 1, rewards stay
    noisy after the relevant positions are learnt, as a verifier-graded LM's do, so the groups keep their
    variance and the updates never stop."""
    init_scale: float = 1.0
    """Standard deviation of the initial logits (0 = uniform start)."""
    hp_threshold: float = HP_THRESHOLD
    """Probability that splits high- from low-probability tokens (``token_groups.HP_THRESHOLD``)."""

    def __post_init__(self):
        for name, rule in (("positions", POSITIVE_INT), ("vocab", Range(2, integer=True)),
                           ("relevant", Range(1, self.positions, integer=True, note="at most positions")),
                           ("group_size", Range(2, integer=True)), ("groups", POSITIVE_INT),
                           ("minibatches", POSITIVE_INT), ("epochs", POSITIVE_INT), ("lr", POSITIVE),
                           ("success_low", UNIT),
                           ("success_high", Range(self.success_low, 1.0, note="at least success_low")),
                           ("init_scale", NON_NEGATIVE), ("hp_threshold", OPEN_UNIT)):
            rule.check(name, getattr(self, name))
        if self.groups % self.minibatches:
            raise ValueError(f"minibatches={self.minibatches!r} must divide groups={self.groups} "
                             f"(allowed: a divisor of groups in [1, {self.groups}])")

    @property
    def batch(self) -> int:
        """B, sequences per rollout batch."""
        return self.groups * self.group_size

    @property
    def minibatch(self) -> int:
        """Sequences per mini-batch."""
        return self.batch // self.minibatches


def resolve_hyper(method: str, beta1=None, beta2=None, eps_low=None, eps_high=None) -> dict:
    """The method's hyper-parameters (its registry defaults, ``losses.METHODS``) with the given (non-None) values.

    The toy has no dual clip. β1, β2 exist only for methods that take them (CE-GPPO; GPPO fixes them at 1,
    PPO/GRPO/DAPO at 0, CISPO has none): giving them for another method is an error rather than a silent no-op.
    """
    check_choice("method", method, token_level_methods())
    spec = get_method(method)
    hyper = {k: v for k, v in spec.defaults.items() if k != "dual_clip"}
    for name, value in (("beta1", beta1), ("beta2", beta2), ("eps_low", eps_low), ("eps_high", eps_high)):
        if value is None:
            continue
        if name not in hyper:
            takers = [m for m in token_level_methods() if name in get_method(m).defaults]
            raise ValueError(f"{name}={value!r} is not a parameter of method={method!r}; only "
                             f"{', '.join(takers)} take(s) {name} (leave it unset)")
        hyper[name] = value
    spec.resolve(**hyper)  # validates every value, naming the bad one and its range
    return {k: float(v) for k, v in hyper.items()}


def make_toy(**toy) -> Toy:
    """``Toy(**toy)`` with a ``ValueError`` (not a ``TypeError``) naming an unknown keyword."""
    allowed = [f.name for f in dataclasses.fields(Toy)]
    unknown = sorted(set(toy) - set(allowed))
    if unknown:
        raise ValueError(f"unknown toy parameter(s) {unknown}; allowed: {', '.join(allowed)}")
    return Toy(**toy)


def _seed_generators(seed: int, seeds: int) -> list[np.random.Generator]:
    """One independent generator per seed index: seed index s of run ``seed`` is the same in every function."""
    NON_NEGATIVE_INT.check("seed", seed)
    POSITIVE_INT.check("seeds", seeds)
    return [np.random.default_rng([seed, s]) for s in range(seeds)]


# --------------------------------------------------------------------------------------------------
# History
# --------------------------------------------------------------------------------------------------
@dataclass
class History:
    """What one ``simulate`` call records, one value per step (= per rollout batch).

    Arrays named ``x`` are means over seeds, shape ``(steps,)``; ``x_per_seed`` have shape ``(seeds, steps)``.
    Group arrays have a last axis of length 4 in the order of ``token_groups.GROUPS``
    (PA&HP, PA&LP, NA&HP, NA&LP); tokens with Â = 0 belong to no group and change nothing.
    """

    method: str
    hyper: dict
    """Effective ε_l, ε_h (and β1, β2) of the run."""
    toy: dict
    seed: int
    seeds: int
    steps: int
    entropy: np.ndarray
    """Mean entropy (nats) over the L positions, at the start of the step (= when the batch is sampled)."""
    entropy_per_seed: np.ndarray
    entropy_relevant: np.ndarray
    """Mean entropy of the reward-relevant positions only."""
    entropy_relevant_per_seed: np.ndarray
    entropy_irrelevant: np.ndarray
    """Mean entropy of the reward-irrelevant positions only (NaN where every position is relevant)."""
    entropy_irrelevant_per_seed: np.ndarray
    reward: np.ndarray
    """Mean reward of the step's rollout batch, in [0, 1] (rewards are 0 or 1)."""
    reward_per_seed: np.ndarray
    clip_low: np.ndarray
    """Fraction of token-updates of the step that PPO clips below (r < 1−ε_l, Â < 0)."""
    clip_low_per_seed: np.ndarray
    clip_high: np.ndarray
    """Fraction of token-updates of the step that PPO clips above (r > 1+ε_h, Â > 0)."""
    clip_high_per_seed: np.ndarray
    dH_pred: np.ndarray
    """First-order entropy change of the step, Σ over its updates and tokens of −η·w·I_a / L (the paper in brief, §3),
    w = F·Â / (tokens in the mini-batch), I_a from ``entropy.entropy_influence`` at the policy that sampled the
    batch. Tracks ``dH_meas`` step by step (correlation > 0.9 on the default toy); summed over many steps the
    neglected second-order terms accumulate, and the sums can differ a lot (CE-GPPO, default toy, 300 steps:
    +1.99 predicted against −1.23 measured, per seed)."""
    dH_pred_per_seed: np.ndarray
    dH_meas: np.ndarray
    """Measured entropy change of the step: H after its last update − H before its first."""
    dH_meas_per_seed: np.ndarray
    group_frac: np.ndarray
    """(steps, 4): each group's share of the step's token-updates (HP/LP by the current probability)."""
    group_clip_frac: np.ndarray
    """(steps, 4): fraction of the group's token-updates that PPO clips (either side)."""
    group_dH_pred: np.ndarray
    """(steps, 4): each group's first-order contribution to ``dH_pred`` (the four add up to it)."""
    group_dH_pred_per_seed: np.ndarray
    """(seeds, steps, 4)."""
    group_dH_clipped: np.ndarray
    """(steps, 4): the part of ``group_dH_pred`` that comes from clipped tokens (0 for PPO/GRPO/DAPO)."""
    group_dH_clipped_per_seed: np.ndarray
    """(seeds, steps, 4)."""
    groups: tuple = field(default=GROUPS)

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (arrays as nested lists)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.tolist() if isinstance(value, np.ndarray) else value
        out["groups"] = list(self.groups)
        return out

    def to_json(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), allow_nan=True))

    def rows(self) -> list[dict]:
        """One dict per step with the seed-mean series (the CSV's rows)."""
        rows = []
        for t in range(self.steps):
            row = {"step": t}
            for name in ("entropy", "entropy_relevant", "entropy_irrelevant", "reward", "clip_low", "clip_high",
                         "dH_pred", "dH_meas"):
                row[name] = float(getattr(self, name)[t])
            for g, group in enumerate(self.groups):
                for name in ("group_frac", "group_clip_frac", "group_dH_pred", "group_dH_clipped"):
                    row[f"{group}/{name.removeprefix('group_')}"] = float(getattr(self, name)[t, g])
            rows.append(row)
        return rows

    def to_csv(self, path) -> None:
        rows = self.rows()
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


# --------------------------------------------------------------------------------------------------
# The vectorised simulator
# --------------------------------------------------------------------------------------------------
def simulate(method: str = "ce_gppo", beta1: float | None = None, beta2: float | None = None,
             eps_low: float | None = None, eps_high: float | None = None, steps: int = 300, seeds: int = 8,
             seed: int = 0, **toy) -> History:
    """Train ``seeds`` independent token bandits with ``method`` for ``steps`` rollout batches.

    ``None`` hyper-parameters take the method's defaults (``losses.METHODS``): CE-GPPO
    β1 = 0.5, β2 = 1, ε_l = ε_h = 0.2; DAPO ε_h = 0.28; CISPO ε_l = 1, ε_h = 0.28. ``toy`` overrides fields of
    ``Toy``. All seeds run at once (a leading seed axis); seed index s uses its own generator, so the result
    equals ``simulate_loop`` and does not depend on how many other seeds run. Deterministic for a given seed.
    """
    hyper = resolve_hyper(method, beta1, beta2, eps_low, eps_high)
    cfg = make_toy(**toy)
    POSITIVE_INT.check("steps", steps)
    check_record_size(seeds, steps)
    rngs = _seed_generators(seed, seeds)
    with _small_tensors():
        raw = _run_vectorised(method, hyper, cfg, steps, rngs)
    return _history(method, hyper, cfg, seed, seeds, steps, raw)


def _init_logits(rngs, cfg: Toy) -> torch.Tensor:
    z = np.stack([rng.normal(0.0, 1.0, (cfg.positions, cfg.vocab)) for rng in rngs])  # (S, L, K)
    return torch.from_numpy(z * cfg.init_scale)


def _sample(z: torch.Tensor, rngs, cfg: Toy, repeats: int = 1):
    """Sample a rollout batch and its rewards with each seed's own uniforms. ``(S, L, K) -> (S, B, L), (S, B)``.

    With ``repeats`` = R, ``z`` holds R copies of the seeds (rows ordered copy, seed); every copy of seed s uses
    seed s's uniforms.
    """
    u = [(rng.random((cfg.batch, cfg.positions)), rng.random(cfg.batch)) for rng in rngs]
    u_tokens = torch.from_numpy(np.stack([ut for ut, _ in u]))  # (seeds, B, L)
    u_reward = torch.from_numpy(np.stack([ur for _, ur in u]))  # (seeds, B)
    return _tokens_and_rewards(z, u_tokens.repeat(repeats, 1, 1), u_reward.repeat(repeats, 1), cfg)


def _uniform_stream(rngs, cfg: Toy, steps: int) -> torch.Tensor:
    """Every uniform ``_sample`` would draw in ``steps`` calls, drawn at once: ``(seeds, steps, B·L + B)``, per step
    the B×L token uniforms then the B reward uniforms. A generator's stream does not depend on how it is cut
    into calls, so these are the same numbers."""
    per_step = cfg.batch * cfg.positions + cfg.batch
    return torch.from_numpy(np.stack([rng.random((steps, per_step)) for rng in rngs]))


def _tokens_and_rewards(z, u_tokens, u_reward, cfg: Toy):
    """Tokens by inverse-CDF sampling; reward 1 with probability success_low + (success_high − success_low) ×
    (fraction of the relevant positions holding the target token), else 0. ``z (S, L, K)``, ``u_tokens (S, B, L)``,
    ``u_reward (S, B)`` -> ``(S, B, L), (S, B)``."""
    cdf = torch.softmax(z, dim=-1).cumsum(-1)  # (S, L, K)
    # the token is the number of CDF entries below u (a binary search per draw, not K comparisons)
    below = torch.searchsorted(cdf, u_tokens.transpose(1, 2).contiguous())  # (S, L, B)
    tokens = below.transpose(1, 2).clamp(max=cfg.vocab - 1)  # (S, B, L)
    right = (tokens[..., :cfg.relevant] == TARGET_TOKEN).double().mean(-1)  # (S, B)
    success = cfg.success_low + (cfg.success_high - cfg.success_low) * right
    return tokens, (u_reward < success).double()


def _mean_entropy(z: torch.Tensor, cfg: Toy):
    """(all positions, relevant, irrelevant) mean entropies. ``(..., L, K) -> 3 × (...)``."""
    h = entropy_from_logits(z).double()  # (..., L)
    irrelevant = (h[..., cfg.relevant:].mean(-1) if cfg.relevant < cfg.positions
                  else torch.full_like(h[..., 0], math.nan))
    return h.mean(-1), h[..., :cfg.relevant].mean(-1), irrelevant


@dataclass
class _StepLog:
    """What a step of the vectorised run keeps for its records (taken for many steps at once, ``_record_chunk``)."""

    z: torch.Tensor  # (S, L, K): the logits that sampled the batch
    tokens: torch.Tensor  # (S, L, B)
    adv: torch.Tensor  # (S, 1, B)
    reward: torch.Tensor  # (S, B)
    logp: torch.Tensor  # (S, U, L, m): per update (epoch-major, then mini-batch), the mini-batch's log-probs
    ratio: torch.Tensor  # (S, U, L, m)
    coef: torch.Tensor  # (S, U, L, m): d loss / d logp = −coef


# Stored update tensors per chunk of steps (elements of one (steps, U, S, L, m) stack): the records of a chunk are
# computed in a few large operations instead of dozens of small ones per step, in bounded memory (a 5×5 sweep
# has 25 times the rows of one simulate call).
_CHUNK_ELEMENTS = 2 ** 18


def _run_vectorised(method, hyper, cfg: Toy, steps: int, rngs, betas=None) -> dict:
    """All seeds at once. With ``betas`` (a list of R (β1, β2) pairs, CE-GPPO only) it runs every seed once per
    pair, rows ordered (pair, seed), all pairs drawing the same random numbers (common random numbers).

    The loop runs the dynamics only (sample, advantages, SGD updates); entropies, influences and token-group
    sums do not feed back, so they are computed afterwards for a chunk of steps at a time (``_record_chunk``).
    """
    R = 1 if betas is None else len(betas)
    S = R * len(rngs)
    weight = _weight_fn(method, hyper, betas, len(rngs))
    z = _init_logits(rngs, cfg).repeat(R, 1, 1)  # (S, L, K), S = R × seeds
    rec = _recorder(S, steps)
    updates = cfg.minibatches * cfg.epochs
    chunk = max(1, _CHUNK_ELEMENTS // (updates * S * cfg.positions * cfg.minibatch))
    uniforms = _uniform_stream(rngs, cfg, steps)  # (seeds, steps, B·L + B); every copy of a seed uses its own
    for first in range(0, steps, chunk):
        logs = []
        for t in range(first, min(first + chunk, steps)):
            z, log = _step(z, uniforms[:, t].repeat(R, 1), cfg, weight)
            logs.append(log)
        _record_chunk(rec, first, logs, z, hyper, cfg)
    return rec


def _step(z, uniforms, cfg: Toy, weight):
    """One rollout batch: sample (with this step's ``uniforms``, ``(S, B·L + B)``), group advantages, ``epochs`` ×
    ``minibatches`` SGD updates. ``(new z, _StepLog)``."""
    S, L, m = z.shape[0], cfg.positions, cfg.minibatch
    u_tokens, u_reward = uniforms.split([cfg.batch * L, cfg.batch], dim=-1)
    tokens, reward = _tokens_and_rewards(z, u_tokens.reshape(S, cfg.batch, L), u_reward, cfg)  # (S, B, L), (S, B)
    adv = group_advantages(reward.reshape(-1), cfg.group_size).double().reshape(S, 1, cfg.batch)  # (S, 1, B)
    tokens = tokens.transpose(1, 2).contiguous()  # (S, L, B): token layout of the whole update loop
    old_logp = torch.log_softmax(z, -1).gather(-1, tokens)  # (S, L, B)
    # mini-batch k = sequences [k·m, (k+1)·m) of the batch, whole groups, the same split in every epoch
    minibatches = list(zip(*(x.split(m, -1) for x in (tokens, adv, adv / (m * L), old_logp))))
    z_start, per_update = z, []
    for _ in range(cfg.epochs):
        for tok, a, a_token_mean, old in minibatches:  # (S, L, m), (S, 1, m) ×2, (S, L, m)
            z, *kept = _sgd_update(z, tok, a, a_token_mean, old, weight, cfg.lr)
            per_update.append(kept)
    logp, ratio, coef = (torch.stack(x, dim=1) for x in zip(*per_update))  # (S, U, L, m) each
    return z, _StepLog(z_start, tokens, adv, reward, logp, ratio, coef)


def _sgd_update(z, tok, a, a_token_mean, old, weight, lr: float):
    """One plain SGD step on the logits for one mini-batch; ``(new z, logp, ratio, coef)``.

    ``z (S, L, K)``; ``tok, old (S, L, m)``; ``a, a_token_mean (S, 1, m)`` (Â, and Â / tokens of the mini-batch).
    """
    logp_table = torch.log_softmax(z, -1)  # (S, L, K)
    logp = logp_table.gather(-1, tok)  # (S, L, m)
    ratio = ratio_from_logps(logp, old)
    # d loss / d logp per token (token-mean over this seed's m·L tokens) is −coef
    coef = weight(ratio, a) * a_token_mean  # (S, L, m)
    # d logp_a / d z = onehot(a) − π  ⇒  SGD step Δz = η Σ_tokens coef·(onehot(a) − π)
    pushed = torch.zeros_like(z).scatter_add_(-1, tok, coef)  # (S, L, K)
    delta_z = lr * (pushed - logp_table.exp() * coef.sum(-1, keepdim=True))  # (S, L, K)
    return z + delta_z, logp, ratio, coef


def _record_chunk(rec, first: int, logs: list[_StepLog], z_end, hyper, cfg: Toy) -> None:
    """Records of the C steps ``first, first + 1, ...`` from their logs; ``z_end``: the logits after the last."""
    C = len(logs)
    z = torch.stack([log.z for log in logs] + [z_end])  # (C + 1, S, L, K): each step's start, then the end
    h_all, h_rel, h_irr = _mean_entropy(z, cfg)  # (C + 1, S) each; the entropy after step t is the one before t+1
    reward = torch.stack([log.reward for log in logs]).mean(-1)  # (C, S)
    acc = _token_group_sums(logs, z[:-1], hyper, cfg)[..., :len(GROUPS)]  # (4, C, S, 4)
    _record_steps(rec, slice(first, first + C), tuple(h[:-1].T.numpy() for h in (h_all, h_rel, h_irr)),
                  reward.T.numpy(), h_all[1:].T.numpy(), acc.transpose(1, 2).numpy(), cfg)


def _token_group_sums(logs: list[_StepLog], z_start, hyper, cfg: Toy) -> torch.Tensor:
    """Per step, seed and ``token_groups.CLASSES`` class, summed over the step's U updates: token-updates,
    clipped token-updates, first-order ΔH, ΔH of the clipped tokens. ``z_start (C, S, L, K) -> (4, C, S, 5)``.

    The first-order ΔH of a token is −η·coef·I_a / L (the paper in brief, §3), with I_a from
    ``entropy.entropy_influence`` at the policy that sampled the batch; / L: mean over positions. Each bin adds
    its numbers update by update in the order the updates ran.
    """
    C, S, L, K = z_start.shape
    M, E, m = cfg.minibatches, cfg.epochs, cfg.minibatch
    influence = entropy_influence_per_choice(z_start, chunk_size=C * S * L).double()  # (C, S, L, K)
    tokens = torch.stack([log.tokens for log in logs])  # (C, S, L, B)
    token_influence = (-cfg.lr / L) * influence.gather(-1, tokens)  # (C, S, L, B)

    def per_update(x):  # (C, S, L', B) -> (C, S, U, L', m): mini-batch k of update u = e·M + k
        return x.reshape(C, S, x.shape[2], M, m).transpose(2, 3).repeat(1, 1, E, 1, 1)

    infl = per_update(token_influence)
    a = per_update(torch.stack([log.adv for log in logs]))  # (C, S, U, 1, m)
    logp, ratio, coef = (torch.stack([getattr(log, name) for log in logs]) for name in ("logp", "ratio", "coef"))
    token_dh = coef * infl  # (C, S, U, L, m)
    group = classify(logp.exp(), a, cfg.hp_threshold)  # (C, S, U, L, m) index into CLASSES
    clipped = torch.logical_or(*clipped_sides(ratio, a, *reference_clip(hyper))).double()
    index = group.reshape(C * S, -1)  # (C·S, U·L·m): the token-updates of a (step, seed), update-major
    sums = torch.zeros(4, C * S, len(GROUPS) + 1, dtype=torch.float64)
    for row, value in zip(sums, (torch.ones_like(clipped), clipped, token_dh, token_dh * clipped)):
        row.scatter_add_(1, index, value.reshape(C * S, -1))
    return sums.reshape(4, C, S, len(GROUPS) + 1)


def _weight_fn(method, hyper, betas, seeds: int):
    """F(r, Â) from ``losses.weight_function`` (the numbers of ``gradient_weight``), for a batch of (β1, β2) rows
    with one (β1, β2) pair per row.

    CE-GPPO's β enter F only as β1·(1−ε_l) and β2·(1+ε_h) on the clipped tokens, so per-row β tensors give every
    row exactly the numbers of a separate ``simulate`` run with its pair (each pair was checked by the caller).
    """
    if betas is None:
        return weight_function(method, **hyper)
    b = torch.tensor(betas, dtype=torch.float64).repeat_interleave(seeds, 0)  # (S, 2), rows (pair, seed)
    b1, b2 = b[:, 0, None, None], b[:, 1, None, None]  # (S, 1, 1) each
    weight = weight_function("ce_gppo", eps_low=hyper["eps_low"], eps_high=hyper["eps_high"])
    return lambda ratio, adv: weight(ratio, adv, beta1=b1, beta2=b2)


RECORDED = ("entropy", "entropy_relevant", "entropy_irrelevant", "reward", "clip_low", "clip_high", "dH_pred", "dH_meas")
RECORDED_BY_GROUP = ("group_frac", "group_clip_frac", "group_dH_pred", "group_dH_clipped")


def check_record_size(rows: int, steps: int) -> None:
    """The float64 records of ``rows`` runs over ``steps`` must fit in memory: refused up front, by name."""
    per_step = rows * (len(RECORDED) + len(RECORDED_BY_GROUP) * len(GROUPS)) * 8
    check_fits_in_memory("steps", steps, per_step * steps, f"the records of {rows} runs over {steps:,} steps")


def _recorder(S: int, steps: int) -> dict:
    names = RECORDED
    rec = {name: np.zeros((S, steps)) for name in names}
    for name in RECORDED_BY_GROUP:
        rec[name] = np.zeros((S, steps, len(GROUPS)))
    return rec


def _record_steps(rec, steps: slice, h_before, reward, h_after, acc, cfg: Toy) -> None:
    """Store the C steps of ``steps``. ``h_before``: 3 × (S, C) (all, relevant, irrelevant positions);
    ``reward``, ``h_after``: (S, C); ``acc`` (4, S, C, 4 groups): token-updates, clipped token-updates, ΔH, ΔH of
    clipped tokens.

    A token clipped below has Â < 0 and one clipped above Â > 0, so the NA groups hold every lower clip and
    the PA groups every upper clip.
    """
    count, clipped, dh, dh_clipped = acc
    n_updates = cfg.batch * cfg.positions * cfg.epochs  # token-updates per step and seed
    h_all, h_rel, h_irr = (np.asarray(h) for h in h_before)
    rec["entropy"][:, steps], rec["entropy_relevant"][:, steps], rec["entropy_irrelevant"][:, steps] = h_all, h_rel, h_irr
    rec["reward"][:, steps] = np.asarray(reward)
    rec["dH_meas"][:, steps] = np.asarray(h_after) - h_all
    rec["dH_pred"][:, steps] = dh.sum(-1)
    rec["clip_low"][:, steps] = clipped[..., [GROUPS.index("NA&HP"), GROUPS.index("NA&LP")]].sum(-1) / n_updates
    rec["clip_high"][:, steps] = clipped[..., [GROUPS.index("PA&HP"), GROUPS.index("PA&LP")]].sum(-1) / n_updates
    rec["group_frac"][:, steps] = count / n_updates
    rec["group_clip_frac"][:, steps] = np.divide(clipped, count, out=np.zeros_like(clipped), where=count > 0)
    rec["group_dH_pred"][:, steps] = dh
    rec["group_dH_clipped"][:, steps] = dh_clipped


def _history(method, hyper, cfg, seed, seeds, steps, rec) -> History:
    fields = {}
    for name, per_seed in rec.items():
        fields[name] = per_seed.mean(0)
        if f"{name}_per_seed" in History.__dataclass_fields__:
            fields[f"{name}_per_seed"] = per_seed
    return History(method=method, hyper=hyper, toy=dataclasses.asdict(cfg), seed=seed, seeds=seeds, steps=steps,
                   **fields)


@contextlib.contextmanager
def _small_tensors():
    """Context for the simulators' many small tensor ops: inference mode (no autograd bookkeeping, about 10 %
    faster) and one torch thread, whatever the caller set. Their update loop's tensors are under torch's parallel
    grain, and a second thread waits in OpenMP barriers: on a quiet 2-core machine it gained 7 % on 8 seeds and
    1.35x on a 5×5 sweep (200 rows), but beside any other busy process it lost 12x (chapter 3's 3×3 sweep, 72
    rows: 6.6 s on one thread, 79 s on two, measured during ``make test``). One thread also makes every run's
    numbers the same whatever the caller's thread count (``tests/test_bandit.py``)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            yield
    finally:
        torch.set_num_threads(saved)


# --------------------------------------------------------------------------------------------------
# The straightforward reference: one seed at a time, autograd through the package's loss
# --------------------------------------------------------------------------------------------------
def simulate_loop(method: str = "ce_gppo", beta1: float | None = None, beta2: float | None = None,
                  eps_low: float | None = None, eps_high: float | None = None, steps: int = 300, seeds: int = 8,
                  seed: int = 0, **toy) -> History:
    """Same as ``simulate``, written the plain way: a loop over seeds, the gradient from autograd through
    ``losses.get_loss(method)``, the group statistics from ``token_groups.group_stats``. Slow; it exists as the
    reference that ``simulate`` is tested against and as the benchmark's baseline."""
    hyper = resolve_hyper(method, beta1, beta2, eps_low, eps_high)
    cfg = make_toy(**toy)
    POSITIVE_INT.check("steps", steps)
    rngs = _seed_generators(seed, seeds)
    recs = [_run_one_seed(method, hyper, cfg, steps, rng) for rng in rngs]
    rec = {name: np.concatenate([r[name] for r in recs]) for name in recs[0]}
    return _history(method, hyper, cfg, seed, seeds, steps, rec)


def _run_one_seed(method, hyper, cfg: Toy, steps: int, rng) -> dict:
    loss_fn = get_loss(method)
    loss_hyper = hyper
    L, m = cfg.positions, cfg.minibatch
    z = _init_logits([rng], cfg)[0].requires_grad_(True)  # (L, K)
    rec = _recorder(1, steps)
    for t in range(steps):
        with torch.no_grad():
            h_before = _mean_entropy(z[None], cfg)
            tokens, reward = (x[0] for x in _sample(z[None], [rng], cfg))  # (B, L), (B,)
            adv = group_advantages(reward, cfg.group_size).double()  # (B,)
            old_logp = torch.log_softmax(z, -1)[torch.arange(L), tokens]  # (B, L)
            z_start = z.detach().clone()  # the first-order prediction expands around the step's start
        acc = np.zeros((4, 1, len(GROUPS)))
        clip_low = clip_high = 0.0
        for _ in range(cfg.epochs):
            for k in range(cfg.minibatches):
                tok, a, old = tokens[k * m:(k + 1) * m], adv[k * m:(k + 1) * m], old_logp[k * m:(k + 1) * m]
                logp = torch.log_softmax(z, -1)[torch.arange(L), tok]  # (m, L)
                mask = torch.ones_like(logp)
                loss = loss_fn(logp, old, a, mask, **loss_hyper)
                (grad,) = torch.autograd.grad(loss, z)
                with torch.no_grad():
                    logits = z_start[None].expand(m, L, -1)  # (m, L, K): the logits each token was drawn from
                    influence = entropy_influence(logits, tok).double()  # (m, L)
                    stats = group_stats(logp, old, a, mask, method, cfg.hp_threshold, influence, **hyper)
                    ratio = ratio_from_logps(logp, old)
                    low, high = clipped_sides(ratio, a[:, None], *reference_clip(hyper))
                    clipped = low | high
                    clipped_stats = (group_stats(logp, old, a, clipped, method, cfg.hp_threshold, influence,
                                                 **hyper) if clipped.any() else None)
                    # group_stats' entropy_push = Σ −F·Â·I; one token's ΔH is −η·(F·Â/(m·L))·I / L
                    scale = cfg.lr / (m * L * L)
                    for g, name in enumerate(GROUPS):
                        n = stats[f"{name}/count"]
                        acc[0, 0, g] += n
                        acc[1, 0, g] += n * (stats[f"{name}/clip_low_frac"] + stats[f"{name}/clip_high_frac"])
                        acc[2, 0, g] += scale * stats[f"{name}/entropy_push"]
                        if clipped_stats is not None:
                            acc[3, 0, g] += scale * clipped_stats[f"{name}/entropy_push"]
                    n_updates = cfg.epochs * cfg.minibatches
                    clip_low += stats["clip/low_frac"] / n_updates
                    clip_high += stats["clip/high_frac"] / n_updates
                    z -= cfg.lr * grad
        with torch.no_grad():
            h_after = _mean_entropy(z[None], cfg)[0]
        _record_steps(rec, slice(t, t + 1), [h[:, None] for h in h_before], reward.mean()[None, None],
                      h_after[:, None], acc[:, :, None], cfg)
        rec["clip_low"][0, t], rec["clip_high"][0, t] = clip_low, clip_high  # group_stats' own batch-wide count
    return rec


# --------------------------------------------------------------------------------------------------
# Sweeps
# --------------------------------------------------------------------------------------------------
@dataclass
class Sweep:
    """A (β1, β2) grid of CE-GPPO runs: ``histories[i][j]`` used ``beta1s[i]``, ``beta2s[j]``."""

    beta1s: list
    beta2s: list
    histories: list

    def final(self, name: str = "entropy", steps: int = FINAL_STEPS) -> np.ndarray:
        """The final value (``summaries.final_mean``) of the seed-mean series ``name``, as a
        (len(beta1s), len(beta2s)) grid."""
        return np.array([[float(final_mean(getattr(h, name), steps)) for h in row] for row in self.histories])


def sweep(beta1s, beta2s, **kw) -> Sweep:
    """``simulate(method="ce_gppo", beta1=b1, beta2=b2, **kw)`` for every pair of the grid, in one vectorised
    run (grid points × seeds on the batch axis); the numbers equal those of the separate ``simulate`` calls."""
    beta1s, beta2s = [float(b) for b in beta1s], [float(b) for b in beta2s]
    if not beta1s or not beta2s:
        raise ValueError("beta1s and beta2s must each hold at least one value")
    if kw.get("method", "ce_gppo") != "ce_gppo":
        raise ValueError(f"method={kw['method']!r}: a (beta1, beta2) sweep only exists for ce_gppo")
    kw.pop("method", None)
    unknown = sorted(set(kw) - {"eps_low", "eps_high", "steps", "seeds", "seed"} - {f.name for f in
                                                                                  dataclasses.fields(Toy)})
    if unknown:
        raise ValueError(f"unknown keyword(s) {unknown} for sweep; allowed: eps_low, eps_high, steps, seeds, seed "
                         f"and the Toy fields")
    eps_low, eps_high = kw.pop("eps_low", None), kw.pop("eps_high", None)
    steps, seeds, seed = kw.pop("steps", 300), kw.pop("seeds", 8), kw.pop("seed", 0)
    hypers = [resolve_hyper("ce_gppo", b1, b2, eps_low, eps_high) for b1 in beta1s for b2 in beta2s]  # validates
    cfg = make_toy(**kw)
    POSITIVE_INT.check("steps", steps)
    rngs = _seed_generators(seed, seeds)
    pairs = [(h["beta1"], h["beta2"]) for h in hypers]
    with _small_tensors():
        raw = _run_vectorised("ce_gppo", hypers[0], cfg, steps, rngs, betas=pairs)
    histories = [_history("ce_gppo", hyper, cfg, seed, seeds, steps,
                          {name: arr[r * seeds:(r + 1) * seeds] for name, arr in raw.items()})
                 for r, hyper in enumerate(hypers)]
    n2 = len(beta2s)
    return Sweep(beta1s, beta2s, [histories[i * n2:(i + 1) * n2] for i in range(len(beta1s))])


__all__ = ["History", "Sweep", "Toy", "make_toy", "resolve_hyper", "simulate", "simulate_loop",
           "sweep"]
