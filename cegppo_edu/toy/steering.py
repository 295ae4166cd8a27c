"""Chapter 7 in the token bandit: runs that steer the entropy toward a target H*(t), and their comparison.

A steered run is ``bandit.simulate``'s loop (sample, group advantages, ``epochs`` × ``minibatches`` plain SGD steps
on the logits) with one decision before each step, made per seed by a controller of ``steering.CONTROLLERS``:

- ``predictive``: the step is first run on a copy of the logits with the reference β (the *look-ahead*). Along it,
  the exact first-order entropy change of every SGD update, −η·coef·I_a / L per token (``entropy.entropy_influence``
  at the logits the update starts from), is split into the tokens inside the interval (``rest``) and the clipped
  lower / upper tokens at unit β (``unit_low``, ``unit_high``). ``steering.solve_betas`` turns the three into the
  (β1, β2) whose predicted change brings H to H*(t+1); then the step is run for real with them. The look-ahead
  uses the batch the real step uses, so the only error left is that the clipped sets move with β (and second order).
- ``pi`` and ``entropy_bonus``: ``steering.PIController`` and ``steering.EntropyBonus`` on the step's H.
- ``none``: fixed hyper-parameters, any method of the registry (SAPO, Clip-Cov and KL-Cov included).

Every run of one ``compare`` call draws the same random numbers (common random numbers), so differences between
controllers are paired by seed. Accuracy here is the policy's exact expected reward at the step's start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..advantages import group_advantages
from ..entropy import entropy_from_logits, entropy_influence_per_choice
from ..losses import clipped_sides, get_loss, get_method, ratio_from_logps, reference_clip, weight_function
from ..steering import (COMPARISON_ROWS, PI_KI, PI_KP, BetaBounds, Comparison, SteeredRun, EntropyBonus, PIController, check_controller, check_target,
                        needed_change, solve_betas, target_at)
from ..validation import POSITIVE_INT, check_choice
from .bandit import TARGET_TOKEN, Toy, _seed_generators, _small_tensors, _tokens_and_rewards, _uniform_stream, make_toy


@dataclass(frozen=True)
class Controller:
    """One controller and its settings (the ``steer`` keywords); defaults are the chapter's."""

    kind: str = "none"
    bounds: BetaBounds = BetaBounds()
    gain: float = 1.0  # predictive: the share of H*(t+1) − H(t) one step aims to close
    passes: int = 2  # predictive: look-ahead passes (the second re-linearises at the first one's β)
    kp: float = PI_KP  # pi
    ki: float = PI_KI
    bonus_delta: float = 0.02  # entropy_bonus: the coefficient's step (the toy's SGD at η = 8 wants larger than the LM's)
    bonus_max: float = 1.0


def steer(method: str = "ce_gppo", controller: Controller | str = "none", target: float = 1.2,
          target_final: float | None = None, steps: int = 200, seeds: int = 5, seed: int = 0, label: str = "",
          **hyper_and_toy) -> SteeredRun:
    """``seeds`` token bandits trained with ``method`` for ``steps`` rollout batches, each step's β (or entropy
    bonus) chosen by ``controller`` so that H follows H*(t) (``steering.target_at``: ``target``, or a cosine from
    ``target`` to ``target_final``). Keywords: the method's hyper-parameters (its defaults otherwise) and ``Toy``
    fields."""
    controller = Controller(controller) if isinstance(controller, str) else controller
    spec = get_method(method)
    check_controller(controller.kind, {"beta1", "beta2"} <= set(spec.defaults), method)
    given = {k: v for k, v in hyper_and_toy.items() if k in spec.defaults}
    cfg = make_toy(**{k: v for k, v in hyper_and_toy.items() if k not in spec.defaults})
    if given.get("dual_clip") is not None:
        raise ValueError(f"dual_clip={given['dual_clip']!r}: the toy has no dual clip; leave it None")
    spec.resolve(**given)  # validates every value, naming the bad one and its range
    hyper = {k: v for k, v in {**spec.defaults, **given}.items() if k != "dual_clip"}
    for name, value in (("target", target), ("target_final", target_final)):
        if value is not None:
            check_target(name, value, cfg.vocab)
    POSITIVE_INT.check("steps", steps)
    rngs = _seed_generators(seed, seeds)
    # Clip-Cov draws its picks from torch's global generator (as verl does): seeded here, and restored after, so a
    # run is the same every time and leaves the caller's generator alone
    with _small_tensors(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        arrays = _run(method, hyper, cfg, controller, target, target_final, steps, rngs)
    return SteeredRun(label or f"{spec.label} ({controller.kind})", method, controller.kind, **arrays)


def _run(method, hyper, cfg: Toy, controller: Controller, target, target_final, steps, rngs) -> dict:
    S, rule = len(rngs), _Rule.of(method, hyper)
    z = torch.from_numpy(np.stack([rng.normal(0.0, 1.0, (cfg.positions, cfg.vocab)) for rng in rngs])) * cfg.init_scale
    uniforms = _uniform_stream(rngs, cfg, steps)
    reference = (hyper.get("beta1", 0.0), hyper.get("beta2", 0.0))
    pis = [PIController(reference, controller.bounds, controller.kp, controller.ki) for _ in range(S)]
    bonuses = [EntropyBonus(0.0, controller.bonus_delta, controller.bonus_max) for _ in range(S)]
    out = {name: np.zeros((S, steps)) for name in ("entropy", "target", "beta1", "beta2", "bonus", "accuracy")}
    for t in range(steps):
        h = entropy_from_logits(z).double().mean(-1)  # (S,)
        goal, goal_next = (target_at(k, steps + 1, target, target_final) for k in (t + 1, t + 2))
        batch = _batch(z, uniforms[:, t], cfg)
        betas, bonus = np.tile(reference, (S, 1)), np.zeros(S)
        if controller.kind == "predictive":
            need = needed_change(h.numpy(), goal_next, controller.gain)
            for _ in range(controller.passes):  # each pass re-linearises around the last pass's choice
                rest, low, high = _look_ahead(z, batch, rule, cfg, torch.tensor(betas))
                betas = np.array([solve_betas(need[s], rest[s], low[s], high[s], reference, controller.bounds)
                                  for s in range(S)])
        elif controller.kind == "pi":
            betas = np.array([pi.betas(float(h[s]), goal) for s, pi in enumerate(pis)])
        elif controller.kind == "entropy_bonus":
            bonus = np.array([b.update(float(h[s]), goal) for s, b in enumerate(bonuses)])
        out["entropy"][:, t], out["target"][:, t] = h.numpy(), goal
        out["beta1"][:, t], out["beta2"][:, t], out["bonus"][:, t] = betas[:, 0], betas[:, 1], bonus
        out["accuracy"][:, t] = _expected_reward(z, cfg).numpy()
        z, _ = _updates(z, batch, rule, cfg, torch.tensor(betas), torch.tensor(bonus))
    return out


@dataclass
class _Batch:
    tokens: torch.Tensor  # (S, L, B)
    adv: torch.Tensor  # (S, 1, B)
    old_logp: torch.Tensor  # (S, L, B)


def _batch(z, uniforms, cfg: Toy) -> _Batch:
    S, L = z.shape[0], cfg.positions
    u_tokens, u_reward = uniforms.split([cfg.batch * L, cfg.batch], dim=-1)
    tokens, reward = _tokens_and_rewards(z, u_tokens.reshape(S, cfg.batch, L), u_reward, cfg)
    adv = group_advantages(reward.reshape(-1), cfg.group_size).double().reshape(S, 1, cfg.batch)
    tokens = tokens.transpose(1, 2).contiguous()
    return _Batch(tokens, adv, torch.log_softmax(z, -1).gather(-1, tokens))


def _expected_reward(z, cfg: Toy) -> torch.Tensor:
    """success_low + (success_high − success_low) × mean π(target) over the relevant positions. ``(S,)``."""
    right = torch.softmax(z, -1)[:, :cfg.relevant, TARGET_TOKEN].double().mean(-1)
    return cfg.success_low + (cfg.success_high - cfg.success_low) * right


def _minibatches(batch: _Batch, cfg: Toy):
    parts = [x.split(cfg.minibatch, -1) for x in (batch.tokens, batch.adv, batch.old_logp)]
    for _ in range(cfg.epochs):
        yield from zip(*parts)


@dataclass(frozen=True)
class _Rule:
    """A run's update rule, resolved once (not at each of its thousands of updates): the method's weight F
    (``losses.weight_function``; None for a method without one), CE-GPPO's F at unit β on the method's reference
    interval (the look-ahead's per-unit split), and that interval."""

    method: str
    hyper: dict
    weight: Callable | None
    unit_weight: Callable
    clip: tuple[float, float]

    @classmethod
    def of(cls, method: str, hyper: dict) -> "_Rule":
        spec, (eps_low, eps_high) = get_method(method), reference_clip(hyper)
        return cls(method, hyper, weight_function(method, **hyper) if spec.weight is not None else None,
                   weight_function("ce_gppo", eps_low=eps_low, eps_high=eps_high, beta1=1.0, beta2=1.0),
                   (eps_low, eps_high))

    @property
    def takes_betas(self) -> bool:
        return "beta1" in get_method(self.method).defaults


def _updates(z, batch: _Batch, rule: _Rule, cfg: Toy, betas, bonus, split: bool = False):
    """The step's SGD updates. ``betas (S, 2)`` per seed (ignored by a method without β), ``bonus (S,)`` the entropy
    bonus coefficient. With ``split``, also the first-order ΔH of the tokens inside the interval, and of the lower /
    upper clipped tokens at unit β, summed over the updates: three ``(S,)`` arrays; else None."""
    S, L, m = z.shape[0], cfg.positions, cfg.minibatch
    parts = np.zeros((3, S)) if split else None
    per_row = {"beta1": betas[:, 0, None, None], "beta2": betas[:, 1, None, None]} if rule.takes_betas else {}
    for tok, a, old in _minibatches(batch, cfg):
        logp_table = torch.log_softmax(z, -1)  # (S, L, K)
        logp = logp_table.gather(-1, tok)  # (S, L, m)
        ratio = ratio_from_logps(logp, old)
        coef = _coefficients(rule, logp, old, a, ratio, per_row)  # (S, L, m): d loss / d logp = −coef
        if split:
            influence = entropy_influence_per_choice(z, chunk_size=S * L).gather(-1, tok).double()  # (S, L, m)
            token_dh = (-cfg.lr / L) * influence  # ΔH per unit coef
            lower, upper = clipped_sides(ratio, a, *rule.clip)
            unit_coef = rule.unit_weight(ratio, a) * a / (m * L)
            inside = ~(lower | upper)
            parts += np.stack([(coef * token_dh * inside).sum((1, 2)).numpy(),
                               (unit_coef * token_dh * lower).sum((1, 2)).numpy(),
                               (unit_coef * token_dh * upper).sum((1, 2)).numpy()])
        pushed = torch.zeros_like(z).scatter_add_(-1, tok, coef)
        probs = logp_table.exp()
        delta = pushed - probs * coef.sum(-1, keepdim=True)
        if bool((bonus != 0).any()):  # ascent on the mean entropy over positions: ∂H̄/∂z = −π(log π + H) / L
            h = -(probs * logp_table).sum(-1, keepdim=True)
            delta = delta + bonus[:, None, None] * (-probs * (logp_table + h)) / L
        z = z + cfg.lr * delta
    return z, parts


def _coefficients(rule: _Rule, logp, old, a, ratio, per_row: dict):
    """−d loss / d logp per token, ``(S, L, m)``: from the method's weight F where it has one (token-mean over a
    seed's m·L tokens), else by autograd through its registered loss, seed by seed (Clip-Cov, KL-Cov pick tokens by
    a statistic of the seed's own mini-batch)."""
    S, L, m = logp.shape
    if rule.weight is not None:
        return rule.weight(ratio, a, **per_row) * a / (m * L)
    loss_fn, out = get_loss(rule.method), []
    with torch.inference_mode(False), torch.enable_grad():
        for s in range(S):
            x = logp[s].T.clone().requires_grad_(True)  # (m, L): one response per row, as the losses expect
            loss = loss_fn(x, old[s].T.clone(), a[s, 0].clone(), torch.ones_like(x), **rule.hyper)
            out.append(-torch.autograd.grad(loss, x)[0].T)
    return torch.stack(out)


def _look_ahead(z, batch: _Batch, rule: _Rule, cfg: Toy, betas):
    """The step run on a copy of the logits with ``betas``: its first-order ΔH split as ``_updates(split=True)``."""
    _, parts = _updates(z.clone(), batch, rule, cfg, betas, torch.zeros(z.shape[0]), split=True)
    return parts


# --------------------------------------------------------------------------------------------------
# The comparison of chapter 7 (its rows and verdicts: ``steering.Comparison``)
# --------------------------------------------------------------------------------------------------
# The two targets (start, final; final None = constant): a level the default toy passes on its way down at about
# step 50, and a cosine decay from above the start of that fall to below its end ("explore early, exploit late").
TARGETS = {"constant": (0.8, None), "decaying": (1.2, 0.5)}
TRANSIENT = 50  # steps left out of the tracking error (the fall from the initial entropy to the target)
# Each target's claims by their rows of the book's claims scoreboard: (tracking, accuracy not lower)
SCOREBOARD = {"constant": ("B14", "B16"), "decaying": ("B15", "B16")}


def compare(target: str, steps: int = 200, seeds: int = 5, seed: int = 0, rows=COMPARISON_ROWS,
            **toy) -> Comparison:
    """Every row of ``rows`` (``steering.COMPARISON_ROWS``) steered toward ``TARGETS[target]`` on the same seeds."""
    check_choice("target", target, list(TARGETS))
    start, final = TARGETS[target]
    runs = [steer(method, controller, target=start, target_final=final, steps=steps, seeds=seeds, seed=seed,
                  label=label, **toy) for label, method, controller in rows]
    return Comparison(target, runs, TRANSIENT, SCOREBOARD[target])


__all__ = ["Controller", "SCOREBOARD", "TARGETS", "TRANSIENT", "compare", "steer"]
