"""The claims chapter 3 tests on the token bandit, each computed here (the notebook prints them, the tests assert
them) from runs that share their seeds: seed s of every method starts from the same logits and draws the same
uniforms, so each comparison is made seed by seed (``summaries.paired_difference``) and gets a verdict —
``holds``, ``does not hold`` or ``not resolved at n seeds``.

Each claim carries its row ID of the book's claims scoreboard (``book/scoreboard.md``), from the chapter's first
test of it to the scoreboard, so that one name follows a claim everywhere:

    P4        GRPO's entropy falls faster than CE-GPPO's: final H(CE-GPPO) − H(GRPO) > 0
    P5        DAPO's entropy stays higher than GRPO's:    final H(DAPO) − H(GRPO) > 0
    P6        at fixed β1, a larger β2 gives a higher final H (every neighbour pair of a sweep row)
    P7        at fixed β2, a larger β1 gives a lower final H (every neighbour pair of a sweep column)
    P11-toy   the per-step first-order prediction tracks the measured ΔH (per-seed correlation > 0.9)
    P3b       each token group's summed push has the sign of the paper's table
    B7        clipped tokens move H only under a method that keeps their gradient (CE-GPPO)
    P4-easy, P5-easy              P4 and P5 with easy prompts
    P4-irrelevant, P5-irrelevant  P4 and P5 on the reward-irrelevant positions (not scoreboard rows)

``step_size_scan`` separates the two reasons the first-order prediction of P11-toy can miss: the step size
(its error is second order in η) and the clipping regime (a smaller η also clips fewer tokens, unless ε shrinks
with it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..losses import get_method, method_label
from ..summaries import FAILS, FINAL_STEPS, HOLDS, Claim, Paired, all_of, final_mean, paired_difference
from ..token_groups import GROUP_ENTROPY_EFFECT, GROUPS
from . import bandit

PREDICTION_CORRELATION = 0.9  # P11-toy: how closely "tracks" is meant


def _final(history, field: str = "entropy") -> np.ndarray:
    return final_mean(getattr(history, f"{field}_per_seed"))  # (seeds,)


def above(name: str, high, low, field: str = "entropy") -> Claim:
    """Claim ``name``: the final ``field`` of run ``high`` is above that of run ``low``, paired over seeds."""
    diff = paired_difference(_final(high, field), _final(low, field))
    return Claim(name, f"final {field.replace('_', ' ')} of {_label(high)} above {_label(low)}'s "
                       f"(mean of the last {FINAL_STEPS} steps)", diff.verdict, str(diff))


def monotone_in_beta(name: str, sweep, axis: int, sign: int, field: str = "entropy") -> Claim:
    """Claim ``name``: along ``axis`` of a ``bandit.Sweep`` (1: β2 at fixed β1, 0: β1 at fixed β2) the final
    ``field`` moves with ``sign`` (+1 up, −1 down) between every pair of neighbouring grid cells."""
    runs = sweep.histories
    shape = (len(sweep.beta1s), len(sweep.beta2s))
    pairs: list[tuple[str, Paired]] = []
    for i in range(shape[0] - (axis == 0)):
        for j in range(shape[1] - (axis == 1)):
            a, b = runs[i][j], runs[i + (axis == 0)][j + (axis == 1)]
            diff = paired_difference(sign * _final(b, field), sign * _final(a, field))
            pairs.append((_cell_step(sweep, i, j, axis), diff))
    verdict = all_of(d.verdict for _, d in pairs)
    held = sum(d.verdict == HOLDS for _, d in pairs)
    exceptions = [f"{where}: {d.verdict} ({d.mean:+.3f})" for where, d in pairs if d.verdict != HOLDS]
    what = "β2 at fixed β1" if axis == 1 else "β1 at fixed β2"
    direction = "higher" if sign > 0 else "lower"
    return Claim(name, f"a larger {what} gives a {direction} final {field.replace('_', ' ')}", verdict,
                 f"holds in {held} of {len(pairs)} neighbour pairs" + (f"; {'; '.join(exceptions)}" if exceptions
                                                                       else ""))


def prediction_tracks(name: str, runs: dict) -> Claim:
    """Claim ``name``: per seed, the correlation of predicted and measured ΔH per step is above 0.9, for every run."""
    per_run = {m: paired_difference(_seed_correlations(h), PREDICTION_CORRELATION) for m, h in runs.items()}
    detail = ", ".join(f"{method_label(m)} {d.mean + PREDICTION_CORRELATION:.3f}" for m, d in per_run.items())
    return Claim(name, f"the per-step first-order ΔH tracks the measured one (correlation > {PREDICTION_CORRELATION} "
                       "per seed)", all_of(d.verdict for d in per_run.values()), "mean correlation " + detail)


def group_signs(name: str, runs: dict) -> Claim:
    """Claim ``name``: summed over a run, each token group's first-order push has the sign of the paper's table
    (PA&HP and NA&LP lower H, PA&LP and NA&HP raise it), seed by seed, under every run."""
    verdicts, wrong = [], []
    for m, h in runs.items():
        totals = h.group_dH_pred_per_seed.sum(1)  # (seeds, 4)
        for g, group in enumerate(GROUPS):
            sign = -1.0 if GROUP_ENTROPY_EFFECT[group] == "lowers" else 1.0
            diff = paired_difference(sign * totals[:, g], 0.0)
            verdicts.append(diff.verdict)
            if diff.verdict != HOLDS:
                wrong.append(f"{method_label(m)} {group}: {diff.verdict}")
    return Claim(name, "each group's summed push has the sign of the paper's table", all_of(verdicts),
                 "; ".join(wrong) or f"all {len(verdicts)} (run, group) pairs")


def clipped_push(name: str, runs: dict, keeping: str = "ce_gppo") -> Claim:
    """Claim ``name``: clipped tokens move H only under ``keeping`` (PA&LP up, NA&LP down); zero elsewhere."""
    others_zero = all(np.allclose(h.group_dH_clipped_per_seed, 0.0) for m, h in runs.items() if m != keeping)
    clipped = runs[keeping].group_dH_clipped_per_seed.sum(1)  # (seeds, 4)
    up = paired_difference(clipped[:, GROUPS.index("PA&LP")], 0.0)
    down = paired_difference(-clipped[:, GROUPS.index("NA&LP")], 0.0)
    verdict = all_of([up.verdict, down.verdict]) if others_zero else FAILS
    return Claim(name, f"clipped tokens move H only under {method_label(keeping)}: PA&LP up, NA&LP down", verdict,
                 f"PA&LP {up.mean:+.2f}, NA&LP {-down.mean:+.2f}; zero under the others: {others_zero}")


def chapter3_claims(runs: dict, sweep, easy: dict | None = None) -> dict[str, Claim]:
    """Every claim of chapter 3 from its runs: ``runs`` (grpo, dapo, ce_gppo on the default toy), ``sweep`` (a
    CE-GPPO β grid) and ``easy`` (the three methods with easy prompts), all on the same seeds."""
    claims = [above("P4", runs["ce_gppo"], runs["grpo"]), above("P5", runs["dapo"], runs["grpo"]),
              above("P4-irrelevant", runs["ce_gppo"], runs["grpo"], "entropy_irrelevant"),
              above("P5-irrelevant", runs["dapo"], runs["grpo"], "entropy_irrelevant"),
              monotone_in_beta("P6", sweep, axis=1, sign=+1), monotone_in_beta("P7", sweep, axis=0, sign=-1),
              prediction_tracks("P11-toy", runs), group_signs("P3b", runs), clipped_push("B7", runs)]
    if easy:
        claims += [above("P4-easy", easy["ce_gppo"], easy["grpo"]), above("P5-easy", easy["dapo"], easy["grpo"])]
    return {c.name: c for c in claims}


def _label(history) -> str:
    if "beta1" in history.hyper and history.method == "ce_gppo":
        return f"{method_label(history.method)} (β1={history.hyper['beta1']:g}, β2={history.hyper['beta2']:g})"
    return method_label(history.method)


def _cell_step(sweep, i: int, j: int, axis: int) -> str:
    if axis == 1:
        return f"β1={sweep.beta1s[i]:g}: β2 {sweep.beta2s[j]:g}→{sweep.beta2s[j + 1]:g}"
    return f"β2={sweep.beta2s[j]:g}: β1 {sweep.beta1s[i]:g}→{sweep.beta1s[i + 1]:g}"


def _seed_correlations(history) -> np.ndarray:
    pred, meas = history.dH_pred_per_seed, history.dH_meas_per_seed  # (seeds, steps)
    return np.array([np.corrcoef(p, m)[0, 1] for p, m in zip(pred, meas)])


@dataclass(frozen=True)
class ScanRow:
    """One step size of ``step_size_scan``: ΔH per update (a step's change / its updates), seed-pooled."""

    lr: float
    eps: float
    clipped: float  # share of token-updates clipped
    mean_abs_dH: float  # mean |ΔH measured| per update
    rel_error: float  # RMS(predicted − measured) / RMS(measured), per update

    def __str__(self) -> str:
        return (f"η={self.lr:<4g} ε={self.eps:<6.3f} clipped {100 * self.clipped:5.2f}%   |ΔH| per update "
                f"{self.mean_abs_dH:.1e}   relative first-order error {self.rel_error:.3f}")


def step_size_scan(lrs, scale_eps: bool, method: str = "ce_gppo", steps: int = 300, seeds: int = 4,
                   seed: int = 0) -> list[ScanRow]:
    """The first-order prediction's error per update at each step size ``lrs`` of the token bandit.

    With ``scale_eps`` the clip interval shrinks with η (ε = ε_default · η / max(lrs)), so the ratios, which move
    ∝ η, leave it about as often at every η: the clipping regime stays fixed and only the step size changes.
    Without it ε stays at the method's default and a smaller η also clips fewer tokens. If the error falls ∝ η
    in both, it is the step size's doing (first order), not the clipping's.
    """
    if not lrs:
        raise ValueError("lrs is empty; give at least one step size")
    defaults = get_method(method).defaults
    toy = bandit.make_toy()
    updates = toy.minibatches * toy.epochs
    rows = []
    for lr in lrs:
        scale = lr / max(lrs) if scale_eps else 1.0
        eps_low, eps_high = defaults["eps_low"] * scale, defaults["eps_high"] * scale
        h = bandit.simulate(method, eps_low=eps_low, eps_high=eps_high, steps=steps, seeds=seeds, seed=seed, lr=lr)
        pred, meas = h.dH_pred_per_seed / updates, h.dH_meas_per_seed / updates  # (seeds, steps)
        rel = float(np.sqrt(np.mean((pred - meas) ** 2)) / np.sqrt(np.mean(meas ** 2)))
        rows.append(ScanRow(float(lr), eps_high, float(h.clip_low.mean() + h.clip_high.mean()),
                            float(np.abs(meas).mean()), rel))
    return rows


__all__ = ["Claim", "ScanRow", "above", "chapter3_claims", "clipped_push", "group_signs", "monotone_in_beta",
           "prediction_tracks", "step_size_scan"]
