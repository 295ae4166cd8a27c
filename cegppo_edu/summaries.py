"""The derived quantities the book reports, each defined once.

- ``final_mean``: "final" entropy (or reward, ...) = the mean over the last ``FINAL_STEPS`` steps of a run. One
  step alone is noisy; the same window everywhere makes the toy's, the transformer's and the report's "final"
  numbers the same quantity.
- ``paired_difference``: a claim "A is above B" over paired seeds (seed s of A and of B start from the same
  draw): the mean difference with its Student-t confidence interval, and a verdict — ``holds`` (the interval is
  above 0), ``does not hold`` (below 0) or ``not resolved at n seeds`` (it contains 0). Where "the same" is a
  possible answer (two methods' final rewards), pass an equivalence ``margin``: an interval that lies inside
  (−margin, +margin) is ``equal within ±margin`` whatever its sign, so a difference too small to matter is never
  read as one method beating the other.
- ``seed_interval``: a curve over seeds as its mean with a Student-t interval, step by step.
- ``Claim``: a claim as a chapter tests it (statement, verdict, numbers).
- ``all_of``: the verdict of a claim made of several such comparisons.
- ``sign_agreement``: how often a predictor gets the sign of a change right, next to its base rate (what always
  guessing the commoner sign scores) — a predictor is only informative where it beats that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .validation import POSITIVE_INT, Range

FINAL_STEPS = 50  # steps averaged for a run's "final" value (a sixth of the toy's 300, a third of chapter 4's 150)


def final_mean(series, steps: int = FINAL_STEPS) -> np.ndarray:
    """Mean over the last ``steps`` entries of the last axis: ``(..., T) -> (...)`` (per seed for ``(seeds, T)``).

    A series shorter than ``steps`` is averaged whole.
    """
    series = np.asarray(series, dtype=float)
    if series.ndim == 0 or series.shape[-1] == 0:
        raise ValueError(f"series has shape {series.shape}; it needs at least one step on its last axis")
    POSITIVE_INT.check("steps", steps)
    return series[..., -steps:].mean(-1)


HOLDS, FAILS = "holds", "does not hold"
EQUAL = "equal within"  # the verdict's prefix when a paired interval lies inside an equivalence margin
CONFIDENCE = 0.95  # two-sided level of every interval the book reports
# A difference of final reward or accuracy (both in [0, 1]) smaller than this counts as none: where "equal" is a
# possible answer, the chapters pass it as ``paired_difference(..., margin=EQUIVALENCE_MARGIN)``.
EQUIVALENCE_MARGIN = 0.01


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularized incomplete beta function (modified Lentz's method)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return h


def incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function, for a, b > 0 and x in [0, 1]."""
    if x <= 0.0 or x >= 1.0:
        return float(x >= 1.0)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def student_t_cdf(t: float, df: float) -> float:
    tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def student_t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with ``df`` degrees of freedom (bisection on the cdf, to 1e-12)."""
    Range(0.0, 1.0, low_open=True, high_open=True).check("p", p)
    low, high = -1e6, 1e6
    for _ in range(200):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if student_t_cdf(mid, df) < p else (low, mid)
        if high - low < 1e-12:
            break
    return 0.5 * (low + high)


@dataclass(frozen=True)
class Paired:
    """A − B over ``n`` paired seeds: the mean difference, its confidence interval, and how many seeds agree."""

    mean: float
    low: float
    high: float
    n: int
    wins: int  # seeds with A > B
    level: float = CONFIDENCE
    unit: str = "seeds"  # what the n pairs are
    margin: float | None = None  # equivalence margin: an interval inside (−margin, +margin) is "equal"

    @property
    def verdict(self) -> str:
        if self.margin is not None and -self.margin < self.low and self.high < self.margin:
            return f"{EQUAL} ±{self.margin:g}"
        if self.low > 0:
            return HOLDS
        if self.high < 0:
            return FAILS
        return f"not resolved at {self.n} {self.unit}"

    @property
    def interval(self) -> str:
        """``+mean [+low, +high]``, to three decimals."""
        return f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"

    def __str__(self) -> str:
        return f"{self.interval} ({self.level:.0%} CI; A above B in {self.wins} of {self.n} {self.unit})"


def paired_difference(a, b, level: float = CONFIDENCE, unit: str = "seeds", margin: float | None = None) -> Paired:
    """``a − b`` pair by pair (``b`` may be a number), with a Student-t interval for the mean difference.

    The pairs are ``unit`` (seeds, unless said otherwise); the interval assumes they are independent. With a
    ``margin`` (> 0) the verdict is ``equal within ±margin`` when the whole interval lies inside ±margin."""
    if margin is not None and not margin > 0:
        raise ValueError(f"margin={margin!r} must be a positive number (allowed: (0, inf)) or None")
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    d = d.reshape(-1)
    if d.size < 2 or not np.isfinite(d).all():
        raise ValueError(f"a paired comparison needs at least 2 finite paired values, got {d.size}")
    mean, low, high = (float(x) for x in seed_interval(d, level))
    return Paired(mean, low, high, int(d.size), int((d > 0).sum()), level, unit, margin)


def seed_interval(values, level: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over seeds (the first axis) with its Student-t interval, per entry of the other axes:
    ``(seeds, ...) -> (mean, low, high)``, each of shape ``(...)``. The seeds are taken as independent runs."""
    values = np.asarray(values, dtype=float)
    if values.ndim == 0 or values.shape[0] < 2:
        raise ValueError(f"values has shape {values.shape}; an interval needs at least 2 seeds on the first axis")
    mean, sem = values.mean(0), values.std(0, ddof=1) / math.sqrt(values.shape[0])
    half = student_t_quantile(0.5 + level / 2.0, values.shape[0] - 1) * sem
    return mean, mean - half, mean + half


@dataclass(frozen=True)
class Claim:
    """A claim of the paper as a chapter tests it: its statement, its verdict and the numbers behind it."""

    name: str
    statement: str
    verdict: str
    detail: str

    def __str__(self) -> str:
        return f"claim {self.name:12s} {self.verdict:24s} {self.statement}  [{self.detail}]"


def all_of(verdicts) -> str:
    """A claim made of several comparisons: it holds if each holds, does not hold if any does not, is equal within
    a margin if any is (and none fails), else not resolved (with the smallest number of seeds named)."""
    verdicts = list(verdicts)
    if all(v == HOLDS for v in verdicts):
        return HOLDS
    if any(v == FAILS for v in verdicts):
        return FAILS
    return next((v for v in verdicts if v.startswith(EQUAL)), None) or next(v for v in verdicts if v.startswith("not resolved"))


@dataclass(frozen=True)
class SignAgreement:
    """How often ``sign(predicted) == sign(measured)``, next to what needs no predictor at all."""

    agreement: float  # share of cases with the same sign
    base_rate: float  # share that always guessing the commoner measured sign gets right
    common_sign: str  # that sign, "falls" or "rises"
    chance: float  # expected agreement of a predictor unrelated to the measurement, with the same sign shares
    n: int
    versus_base: Paired  # per case: predictor right (1/0) minus the constant guess right (1/0)

    def __str__(self) -> str:
        return (f"same sign in {self.agreement:.0%} of {self.n}; always guessing '{self.common_sign}' scores "
                f"{self.base_rate:.0%}, an unrelated predictor with these sign shares {self.chance:.0%}; "
                f"predictor minus base rate {self.versus_base.mean:+.3f} [{self.versus_base.low:+.3f}, "
                f"{self.versus_base.high:+.3f}]: {self.verdict}")

    @property
    def verdict(self) -> str:
        """Does the predictor beat always guessing the commoner sign? (holds / does not hold / not resolved)"""
        return self.versus_base.verdict


def sign_agreement(predicted, measured, level: float = CONFIDENCE) -> SignAgreement:
    """The sign agreement of ``predicted`` with ``measured`` (1-D, paired), its base rate and a paired interval
    for the difference between the two (cases taken as independent)."""
    pred, meas = np.sign(np.asarray(predicted, dtype=float)), np.sign(np.asarray(measured, dtype=float))
    if pred.shape != meas.shape or pred.ndim != 1 or pred.size < 2:
        raise ValueError(f"predicted and measured must be 1-D of one length >= 2, got {pred.shape} and {meas.shape}")
    falls = float((meas < 0).mean())
    common = -1.0 if falls >= 0.5 else 1.0
    right = (pred == meas).astype(float)
    guess = (meas == common).astype(float)
    chance = float((pred > 0).mean() * (meas > 0).mean() + (pred < 0).mean() * (meas < 0).mean())
    return SignAgreement(float(right.mean()), float(guess.mean()), "falls" if common < 0 else "rises", chance,
                         int(pred.size), paired_difference(right, guess, level, unit="cases"))


__all__ = ["CONFIDENCE", "EQUAL", "EQUIVALENCE_MARGIN", "FAILS", "FINAL_STEPS", "HOLDS", "Paired", "SignAgreement", "all_of", "final_mean",
           "paired_difference", "sign_agreement", "student_t_quantile"]
