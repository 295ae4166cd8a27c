"""Steering entropy: a target H*(t) and the controllers that pick, step by step, what moves the entropy toward it.

The paper fixes β1 and β2 for a run. Chapter 7 closes the loop. Four ways to do it, each a ``CONTROLLERS`` name:

- ``predictive`` (this book's): CE-GPPO's first-order entropy change of a step is linear in β1 and β2 (the clipped
  tokens get the constant weights β1(1−ε_l) and β2(1+ε_h), the paper in brief §3), so it splits into

      ΔH(β1, β2) ≈ rest + β1·unit_low + β2·unit_high,

  ``rest`` from the tokens inside the interval, ``unit_low`` / ``unit_high`` the clipped lower / upper tokens'
  change per unit β. Given estimates of the three, ``solve_betas`` takes the (β1, β2) closest to the reference
  pair that makes ΔH bring H to the next step's target, within the bounds. How the three are estimated before the
  step is the caller's: the toy runs the step once on a copy (exact first order); the LM trainer reuses the last
  update phase's attribution (one step late), because its clipped tokens only exist during the update phase.
- ``pi``: a PI controller on the error e = H* − H, moving β2 up and β1 down by u = k_p·e + k_i·Σe (EntroPIC,
  arXiv:2511.15248, runs one on the weights of positive and negative samples).
- ``entropy_bonus``: a reactive entropy bonus −c·H̄ in the loss whose coefficient c moves by ±δ when H is below or
  above the target (Skywork-OR1's adaptive entropy control is of this kind).
- ``none``: the run's β stay as configured (fixed β, or a ``schedules`` schedule).

Targets are a constant or a curve that decays from ``target`` to ``target_final`` (``target_at``, the shapes of
``schedules.SCHEDULES``). A target must lie in (0, log V]: no policy over V choices has entropy above log V.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .schedules import SCHEDULES, scheduled
from .summaries import Claim, all_of, paired_difference, seed_interval
from .validation import NON_NEGATIVE, POSITIVE, Range, check_choice

CONTROLLERS = ("none", "predictive", "pi", "entropy_bonus")
BETA_CONTROLLERS = ("predictive", "pi")  # the ones that choose β1, β2 (they need a method that has them)
PI_KP, PI_KI = 2.0, 0.5  # the PI controller's gains (trainer and toy alike; chapter 7 tried no others)
COLLAPSE_FRACTION = 0.5  # a run collapses when its accuracy falls below this share of where it started
_DIVISION_FLOOR = 1e-12  # |unit|² below this: the clipped tokens do not move H, so β is left at the reference


def target_range(vocab: int) -> Range:
    """Where an entropy target may lie for a policy over ``vocab`` choices: (0, log V]."""
    return Range(0.0, math.log(vocab), low_open=True, note=f"log V with V = {vocab}")


def check_target(name: str, value: float, vocab: int) -> float:
    target_range(vocab).check(name, value)
    return float(value)


def target_at(step: int, steps: int, target: float, target_final: float | None = None,
              shape: str = "cosine") -> float:
    """H*(step) of a run of ``steps`` steps (1-based): ``target`` throughout, or from ``target`` at the first step to
    ``target_final`` at the last along ``shape`` (one of ``schedules.SCHEDULES``)."""
    if target_final is None:
        return target
    return scheduled(shape, target, target_final, step, steps)


@dataclass(frozen=True)
class BetaBounds:
    """The box (β1, β2) ∈ [low, high]² a controller keeps to; the reference pair is where it starts from."""

    low: float = 0.0
    high: float = 2.0

    def __post_init__(self):
        NON_NEGATIVE.check("beta_min", self.low)
        Range(self.low, math.inf, note=f"at least beta_min={self.low}").check("beta_max", self.high)

    def clip(self, value: float) -> float:
        return min(max(value, self.low), self.high)


def solve_betas(need: float, rest: float, unit_low: float, unit_high: float, reference: tuple[float, float],
                bounds: BetaBounds) -> tuple[float, float]:
    """The (β1, β2) in ``bounds`` closest to ``reference`` with rest + β1·unit_low + β2·unit_high = ``need``.

    Unconstrained, the closest pair moves from the reference along (unit_low, unit_high). When that leaves the
    box, the coordinate that left is held at its bound and the other one alone makes up the rest (and is itself
    held at its bound if it cannot): the predicted change then falls short of ``need``, by as little as the box
    allows along that path.
    """
    b1, b2 = reference
    norm = unit_low ** 2 + unit_high ** 2
    if norm < _DIVISION_FLOOR:
        return bounds.clip(b1), bounds.clip(b2)
    shift = (need - rest - b1 * unit_low - b2 * unit_high) / norm
    b1, b2 = b1 + shift * unit_low, b2 + shift * unit_high
    if bounds.low <= b1 <= bounds.high and bounds.low <= b2 <= bounds.high:
        return b1, b2
    if not bounds.low <= b1 <= bounds.high:  # β1 left the box: hold it, let β2 do the rest
        b1 = bounds.clip(b1)
        b2 = bounds.clip((need - rest - b1 * unit_low) / unit_high) if unit_high ** 2 >= _DIVISION_FLOOR else bounds.clip(b2)
    else:
        b2 = bounds.clip(b2)
        b1 = bounds.clip((need - rest - b2 * unit_high) / unit_low) if unit_low ** 2 >= _DIVISION_FLOOR else bounds.clip(b1)
    return b1, b2


def needed_change(entropy: float, target_next: float, gain: float = 1.0) -> float:
    """The entropy change a step should make: ``gain`` × (H*(t+1) − H(t)); 1 = all of the way in one step."""
    return gain * (target_next - entropy)


@dataclass
class PIController:
    """u = k_p·e + k_i·Σe on e = H* − H; β1 = ref1 − u, β2 = ref2 + u, each held in ``bounds``. The sum stops
    growing while both β sit at a bound in the direction it pushes (anti-windup)."""

    reference: tuple[float, float]
    bounds: BetaBounds = field(default_factory=BetaBounds)
    kp: float = PI_KP
    ki: float = PI_KI
    integral: float = 0.0

    def __post_init__(self):
        NON_NEGATIVE.check("pi_kp", self.kp)
        NON_NEGATIVE.check("pi_ki", self.ki)

    def betas(self, entropy: float, target: float) -> tuple[float, float]:
        error = target - entropy
        trial = self.integral + error
        u = self.kp * error + self.ki * trial
        b1, b2 = self.bounds.clip(self.reference[0] - u), self.bounds.clip(self.reference[1] + u)
        saturated = (b1, b2) == (self.bounds.clip(-math.inf if u > 0 else math.inf),
                                 self.bounds.clip(math.inf if u > 0 else -math.inf))
        if not saturated:
            self.integral = trial
        return b1, b2


@dataclass
class EntropyBonus:
    """The coefficient c of an entropy bonus −c·H̄: up by ``delta`` while H is below the target, down by it while
    above, kept in [0, ``coef_max``]."""

    coef: float
    delta: float  # the trainer's entropy_coef_delta; the toy's Controller.bonus_delta
    coef_max: float

    def __post_init__(self):
        NON_NEGATIVE.check("entropy_coef", self.coef)
        POSITIVE.check("entropy_coef_delta", self.delta)
        Range(self.coef, math.inf, note="at least entropy_coef").check("entropy_coef_max", self.coef_max)

    def update(self, entropy: float, target: float) -> float:
        step = self.delta if entropy < target else -self.delta
        self.coef = min(max(self.coef + step, 0.0), self.coef_max)
        return self.coef


def check_controller(controller: str, method_betas: bool, method: str) -> None:
    """A controller is one of ``CONTROLLERS``; a β controller needs a method with β1 and β2."""
    check_choice("beta_controller", controller, CONTROLLERS)
    if controller in BETA_CONTROLLERS and not method_betas:
        raise ValueError(f"beta_controller={controller!r} chooses β1 and β2, and method {method!r} has none; use "
                         f"ce_gppo (or beta_controller='entropy_bonus', which works with any method)")


@dataclass
class SteeredRun:
    """One steered run: arrays of shape ``(seeds, steps)`` of the entropy at each step's start, its target, the β
    or bonus coefficient the step used; ``accuracy (seeds, evaluations)`` (the toy: the policy's expected reward
    at every step's start; the transformer: held-out accuracy every 10 steps)."""

    label: str
    method: str
    controller: str
    entropy: np.ndarray
    target: np.ndarray
    beta1: np.ndarray
    beta2: np.ndarray
    bonus: np.ndarray
    accuracy: np.ndarray

    def tracking_error(self, transient: int) -> np.ndarray:
        """Per seed, mean |H − H*| over the steps after the first ``transient``. ``(seeds,)``."""
        Range(0, self.entropy.shape[1] - 1, integer=True, note="fewer than the run's steps").check("transient",
                                                                                                    transient)
        return np.abs(self.entropy - self.target)[:, transient:].mean(1)


# --------------------------------------------------------------------------------------------------
# The comparison of chapter 7, in the toy and on the transformer
# --------------------------------------------------------------------------------------------------
# (label, method, controller): fixed-β CE-GPPO, the two β controllers, the reactive bonus, and the open-loop
# methods of the field; every row runs on the same seeds.
COMPARISON_ROWS = (
    ("CE-GPPO, fixed β", "ce_gppo", "none"),
    ("CE-GPPO, predictive β", "ce_gppo", "predictive"),
    ("CE-GPPO, PI on β", "ce_gppo", "pi"),
    ("GRPO + adaptive entropy bonus", "grpo", "entropy_bonus"),
    ("Clip-Cov", "clip_cov", "none"),
    ("KL-Cov", "kl_cov", "none"),
    ("SAPO", "sapo", "none"),
)
PREDICTIVE, FIXED = COMPARISON_ROWS[1][0], COMPARISON_ROWS[0][0]
ACCURACY_MARGIN = 0.01  # "not lower accuracy": the predictive run's is not below fixed β's by more than this


@dataclass
class Comparison:
    """Every row of ``ROWS`` steered toward one target, on the same seeds."""

    target: str
    runs: list[SteeredRun]
    transient: int  # steps left out of the tracking error
    # The scoreboard rows (book/scoreboard.md) of the two claims, (tracking, accuracy), set where the comparison is
    # made (``toy.steering.SCOREBOARD``, ``experiments.steer_study.SCOREBOARD``): the one ID the book uses. A
    # comparison made elsewhere names its claims steer-TARGET and steer-TARGET-acc.
    rows: tuple[str, str] | None = None

    def run(self, label: str) -> SteeredRun:
        return next(r for r in self.runs if r.label == label)

    @staticmethod
    def mean_accuracy(run: SteeredRun) -> np.ndarray:
        """Per seed, the accuracy averaged over the run's evaluations: how much and how soon it learns (the toy's
        final accuracy saturates at ``success_high`` for every method, so it cannot part them)."""
        return run.accuracy.mean(1)

    @staticmethod
    def collapses(run: SteeredRun) -> int:
        """Seeds whose accuracy fell, at some later evaluation, below ``COLLAPSE_FRACTION`` × its first value."""
        return int((run.accuracy[:, 1:] < COLLAPSE_FRACTION * run.accuracy[:, :1]).any(1).sum())

    def table(self) -> list[dict]:
        """One row per run: tracking error and mean accuracy as ``mean [low, high]`` (95 % over seeds),
        collapses, and the predictive run's paired advantage in tracking error (other − predictive)."""
        rows, ref = [], self.run(PREDICTIVE).tracking_error(self.transient)
        for run in self.runs:
            err, acc = run.tracking_error(self.transient), self.mean_accuracy(run)
            row = {"method": run.label, "tracking error": _interval(err), "accuracy": _interval(acc),
                   "collapses": f"{self.collapses(run)} of {len(err)}"}
            row["error − predictive's"] = ("" if run.label == PREDICTIVE else
                                          paired_difference(err, ref).interval)
            rows.append(row)
        return rows

    def claims(self) -> list[Claim]:
        """The issue's goal as two claims: the smallest tracking error of all, and accuracy not lower than fixed β."""
        ref = self.run(PREDICTIVE)
        err = ref.tracking_error(self.transient)
        if len(self.runs) < 2:
            raise ValueError("a comparison needs the predictive row and at least one other")
        vs = {r.label: paired_difference(r.tracking_error(self.transient), err) for r in self.runs if r is not ref}
        acc = paired_difference(self.mean_accuracy(ref), self.mean_accuracy(self.run(FIXED)) - ACCURACY_MARGIN)
        worst = min(vs.values(), key=lambda p: p.low)
        tracking, accuracy = self.rows or (f"steer-{self.target}", f"steer-{self.target}-acc")
        if self.rows:  # the accuracy row holds both targets' claims: each names its target
            accuracy = f"{accuracy} ({self.target} target)"
        return [Claim(tracking, f"the predictive β controller tracks the {self.target} target with "
                      "the smallest error of all rows", all_of(p.verdict for p in vs.values()),
                      f"least clear of the comparisons: {next(k for k, v in vs.items() if v is worst)} − predictive "
                      f"{worst.interval}"),
                Claim(accuracy, f"its accuracy is not below fixed β's by more than "
                      f"{ACCURACY_MARGIN}", acc.verdict, f"predictive − fixed + {ACCURACY_MARGIN} {acc.interval}")]



def scoreboard(comparisons) -> dict[str, str]:
    """Each scoreboard row's verdict from the claims of ``comparisons`` (made with their ``rows``): a row that holds
    the claims of several targets ("B16 (constant target)", "B16 (decaying target)") gets ``all_of`` their
    verdicts. ``{"B14": "holds", ...}``, sorted by row."""
    parts: dict[str, list[str]] = {}
    for comparison in comparisons:
        if comparison.rows is None:
            raise ValueError(f"the {comparison.target!r} comparison has no scoreboard rows (Comparison.rows is None)")
        for claim in comparison.claims():
            parts.setdefault(claim.name.split(" (")[0], []).append(claim.verdict)
    return {row: all_of(parts[row]) for row in sorted(parts)}


def _interval(values) -> str:
    mean, low, high = (float(x) for x in seed_interval(values))
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


__all__ = ["COLLAPSE_FRACTION", "COMPARISON_ROWS", "Comparison", "scoreboard", "SteeredRun", "BETA_CONTROLLERS", "BetaBounds", "CONTROLLERS", "EntropyBonus", "PIController", "PI_KI", "PI_KP", "SCHEDULES",
           "check_controller", "check_target", "needed_change", "solve_betas", "target_at", "target_range"]
