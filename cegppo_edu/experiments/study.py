"""Chapter 4's many-seed comparison: every configuration on the same seeds, on a task that does not saturate.

Why: one RL trajectory is chaotic (the same command on another CPU collapsed 50 steps later), and on chapter 4's
1-2 digit addition held-out accuracy goes 0.48 → 0.9 within 30 of 150 steps, so most of a run's entropy curve is
the dynamics of a solved task. Here:

- **The task**: a + b with 1-3 digit operands (``TASK``), which the 0.8M-parameter model does not solve: the
  3-digit half stays mostly wrong. The model is chapter 4's warm start, taught the new task with a further
  ``WARM_START`` SFT (``warm_start_config``); held-out accuracy starts near 0.2 and no run comes near 1
  (``summary.txt``). The problems are the same for every seed (``data_seed``).
- **The runs**: every configuration of ``CONFIGS`` (GRPO, DAPO, and CE-GPPO on the β grid
  β1 ∈ {0, 0.5, 1} × β2 ∈ {0.5, 1, 2}, which holds the paper's (0.5, 1); and ``LR_CONFIGS``, three of them at a
  third of the learning rate, to tell a collapse's causes apart) × every seed of ``SEEDS``. Seed s of
  every configuration draws the same first rollout batch, so the comparisons are made seed by seed
  (``summaries.paired_difference``), each with a 95 % interval and a verdict.
- **The claims** (``claims``, ``lr_claims``, ``predictor_claim``), each named by its row of the book's claims
  scoreboard (the one ID the book uses, from here to book/scoreboard.md) and computed from paired differences where
  it compares runs, with ``summaries.EQUIVALENCE_MARGIN`` where two accuracies may be equal; "final" is the mean over the last ``summaries.FINAL_STEPS`` steps, as everywhere in the book.

The runs are made by ``python -m cegppo_edu.experiments.regenerate ch04-seeds``; this module only defines and reads
them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np

from ..losses import method_label
from ..param_entropy import TARGET_CORRELATION, TARGET_RATIO_ERROR, agreement, attribution_totals
from ..steering import COLLAPSE_FRACTION
from ..summaries import EQUIVALENCE_MARGIN, FAILS, FINAL_STEPS, HOLDS, Claim, Paired, all_of, paired_difference, seed_interval
from ..lm.run_dir import read_metrics
from . import DATA as DATA_ROOT

# 1-3 digit addition, the same problems for every seed, held-out problems unseen by chapter 4's warm start too
TASK = {"task": "cegppo_edu.experiments.study:make_task", "n_digits": 3, "min_digits": 1, "data_seed": 0}
WARM_START = {"warm_start_steps": 100, "warm_start_lr": 1e-3}  # continued SFT of chapter 4's warm start
CHAPTER_WARM_START = os.path.join(DATA_ROOT, "ch04", "warm_start")
DATA = os.path.join(DATA_ROOT, "ch04", "seeds")  # relative to the project root, like every run config
STEPS = 100  # RL steps per run
SEEDS = tuple(range(5))
BETA1S = (0.0, 0.5, 1.0)
BETA2S = (0.5, 1.0, 2.0)
PAPER_BETAS = (0.5, 1.0)  # the paper's CE-GPPO setting: the "CE-GPPO" of the method claims
PREDICTOR_EVERY = 10  # the parameter-space predictor and the attribution every N steps (they change no number)


def ce_gppo_name(beta1: float, beta2: float) -> str:
    return f"ce_gppo_b1-{beta1:g}_b2-{beta2:g}"


CONFIGS: dict[str, dict] = {
    "grpo": {"method": "grpo"},
    "dapo": {"method": "dapo"},
    **{ce_gppo_name(b1, b2): {"method": "ce_gppo", "beta1": b1, "beta2": b2} for b1 in BETA1S for b2 in BETA2S},
}
CE_GPPO = ce_gppo_name(*PAPER_BETAS)
# Is a collapse the learning rate's doing? The same seeds at a third of the lr, for GRPO and two CE-GPPO settings.
LOWER_LR = 1e-4
LR_CONFIGS = {f"{name}_lr-{LOWER_LR:g}": {**CONFIGS[name], "lr": LOWER_LR}
              for name in ("grpo", CE_GPPO, ce_gppo_name(1.0, 0.5))}
CONFIGS.update(LR_CONFIGS)


def make_task(config):
    """The arith task of ``config`` (``tasks.make_addition_task_from_config``) with the held-out problems that
    chapter 4's warm start trained on left out: that model is where the study's warm start begins, so they would
    not be held out. The train split is arith's own; the held-out split keeps ``n_heldout`` problems."""
    from dataclasses import replace

    from ..lm.config import get_preset
    from ..lm.tasks import TaskData, make_addition_task_from_config

    seen = {p.question for p in make_addition_task_from_config(get_preset("tiny-arith")).train}
    task = make_addition_task_from_config(replace(config, n_heldout=2 * config.n_heldout))
    heldout = [p for p in task.heldout if p.question not in seen][:config.n_heldout]
    if len(heldout) < config.n_heldout:
        raise ValueError(f"n_heldout={config.n_heldout} is outside the allowed range: only {len(heldout)} of the "
                         f"drawn held-out problems are unseen by chapter 4's warm start")
    return TaskData(task.train, heldout, task.sft)


def warm_start_config():
    """The study's warm start: chapter 4's model, further SFT on ``TASK`` (``warm_start.build_warm_start``)."""
    from ..lm.config import apply_overrides, get_preset

    return apply_overrides(get_preset("tiny-arith"), {"model_path": CHAPTER_WARM_START, **TASK, **WARM_START})


def run_config(name: str, seed: int, steps: int = STEPS):
    """The config of configuration ``name`` at ``seed``: the tiny-arith preset on ``TASK`` from the study's warm
    start, evaluated every 10 steps, the predictor and attribution every ``PREDICTOR_EVERY`` steps."""
    from ..lm.config import apply_overrides, get_preset

    if name not in CONFIGS:
        raise ValueError(f"configuration {name!r} is not one of {', '.join(CONFIGS)}")
    return apply_overrides(get_preset("tiny-arith"), {
        **TASK, "model_path": os.path.join(DATA, "warm_start"), "warm_start_steps": 0, "seed": seed,
        "steps": steps, "eval_every": 10, "checkpoint_every": 0, "entropy_predictor_every": PREDICTOR_EVERY,
        "entropy_attribution": True, **CONFIGS[name]})


# timings, the no-advantage class ZA (its tokens are dropped with their groups), and per-group numbers no figure reads
_NOT_KEPT = re.compile(r"^time/|^ZA/|/(frac|mean_prob|weight_sum|clip_low_frac|clip_high_frac)$")


def keep_key(key: str) -> bool:
    """Whether the committed log of a study run keeps metric ``key`` (the regeneration leaves the others out)."""
    return not _NOT_KEPT.search(key)


def run_folder(name: str, seed: int) -> str:
    return os.path.join("runs", name, f"seed{seed}")


# --------------------------------------------------------------------------------------------------
# Reading the runs
# --------------------------------------------------------------------------------------------------
ENTROPY = "entropy/mean"  # mean token entropy of the step's rollout batch, as sampled
ACCURACY = "eval/accuracy"  # held-out accuracy (greedy), every 10 steps and at step 0
START_STEPS = 10  # a run's "start" entropy: the mean over its first 10 steps


@dataclass(frozen=True)
class Study:
    """The kept metrics of every run: ``runs[config][i]`` is the log of seed ``seeds[i]``."""

    runs: dict[str, list[list[dict]]]
    seeds: tuple[int, ...]

    def series(self, name: str, key: str) -> tuple[np.ndarray, np.ndarray]:
        """``(steps, values)`` of ``key`` for configuration ``name``: the steps that carry it, and its values there,
        shape ``(seeds, len(steps))``. Every seed must carry it at the same steps."""
        per_seed = [[(m["step"], m[key]) for m in log if key in m] for log in self.runs[name]]
        steps = [s for s, _ in per_seed[0]]
        if not steps or any([s for s, _ in run] != steps for run in per_seed):
            raise ValueError(f"{key!r} of {name!r} is missing, or logged at other steps in some seeds")
        return np.array(steps), np.array([[v for _, v in run] for run in per_seed], dtype=float)

    def final(self, name: str, key: str = ENTROPY, window: int = FINAL_STEPS) -> np.ndarray:
        """Per seed, the mean of ``key`` over the run's final ``window`` steps (the evaluations in them)."""
        steps, values = self.series(name, key)
        return values[:, steps > steps.max() - window].mean(1)

    def start(self, name: str, key: str = ENTROPY, window: int = START_STEPS) -> np.ndarray:
        """Per seed, the mean of ``key`` over the run's steps up to ``window``."""
        steps, values = self.series(name, key)
        return values[:, steps <= window].mean(1)


def load(folder: str, configs=None, seeds=SEEDS) -> Study:
    """The study's runs kept under ``folder`` (``runs/CONFIG/seedS/metrics.jsonl``); a missing one is named."""
    runs = {}
    for name in configs or CONFIGS:
        runs[name] = []
        for seed in seeds:
            path = os.path.join(folder, run_folder(name, seed))
            if not os.path.exists(os.path.join(path, "metrics.jsonl")):
                raise FileNotFoundError(f"run {name} seed {seed} is missing: {path}/metrics.jsonl (python -m "
                                        f"cegppo_edu.experiments.regenerate ch04-seeds makes it)")
            runs[name].append(read_metrics(path))
    return Study(runs, tuple(seeds))


# --------------------------------------------------------------------------------------------------
# The claims (the paper in brief, §3 and §5), each from paired differences over the seeds
# --------------------------------------------------------------------------------------------------
def label(name: str) -> str:
    spec = CONFIGS[name]
    text = method_label(spec["method"])
    if "beta1" in spec:
        text += f" (β1={spec['beta1']:g}, β2={spec['beta2']:g})"
    return text + (f", lr {spec['lr']:g}" if "lr" in spec else "")


def _above(name: str, statement: str, high: np.ndarray, low: np.ndarray, margin: float | None = None) -> Claim:
    """``name`` is the claim's row on the book's claims scoreboard (book/scoreboard.md), the one ID the book uses.
    ``margin``: where "equal" is a possible answer (accuracies), the equivalence margin of ``paired_difference``."""
    diff = paired_difference(high, low, margin=margin)
    return Claim(name, statement, diff.verdict, str(diff))


def _all(name: str, statement: str, parts: dict[str, Paired]) -> Claim:
    return Claim(name, statement, all_of(d.verdict for d in parts.values()),
                 "; ".join(f"{what}: {d.verdict}, {d.interval}" for what, d in parts.items()))


def drift(study: Study, name: str) -> np.ndarray:
    """Per seed, how far the entropy moved: |final H − start H| (nats)."""
    return np.abs(study.final(name) - study.start(name))


def beta_contrast(study: Study, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Per seed, the final H at the top and at the bottom of one β axis of the grid (0: β1, 1: β2), each averaged
    over the other β: ``(H at max β, H at min β)``."""
    def at(index: int) -> np.ndarray:
        cells = [(b1, b2) for b1 in BETA1S for b2 in BETA2S if (b1, b2)[axis] == (BETA1S, BETA2S)[axis][index]]
        return np.mean([study.final(ce_gppo_name(*cell)) for cell in cells], axis=0)
    return at(-1), at(0)


def claims(study: Study) -> list[Claim]:
    """The seven claims of chapter 4's comparison, each named by its scoreboard row and with its verdict (holds /
    does not hold / not resolved; the accuracy claim P10-lm may also be equal within the equivalence margin)."""
    f = study.final
    high_b1, low_b1 = beta_contrast(study, 0)
    high_b2, low_b2 = beta_contrast(study, 1)
    return [
        _all("P4-lm", "GRPO's entropy falls fastest: its final H is below DAPO's and CE-GPPO's",
             {"DAPO − GRPO": paired_difference(f("dapo"), f("grpo")),
              "CE-GPPO − GRPO": paired_difference(f(CE_GPPO), f("grpo"))}),
        _above("P5-lm", "DAPO's final H is above GRPO's", f("dapo"), f("grpo")),
        _all("P8-lm", "CE-GPPO's entropy is the most stable: its |final H − start H| is below GRPO's and DAPO's",
             {"GRPO − CE-GPPO": paired_difference(drift(study, "grpo"), drift(study, CE_GPPO)),
              "DAPO − CE-GPPO": paired_difference(drift(study, "dapo"), drift(study, CE_GPPO))}),
        _above("P7-lm", f"a larger β1 lowers H: final H at β1={BETA1S[0]:g} above β1={BETA1S[-1]:g} (mean over β2)",
               low_b1, high_b1),
        _above("P6-lm", f"a larger β2 raises H: final H at β2={BETA2S[-1]:g} above β2={BETA2S[0]:g} (mean over β1)",
               high_b2, low_b2),
        _all("P9", "the paper's ablation: β1=1, β2=0.5 ends with a lower H than CE-GPPO's, and β1=0, β2=1 ends above "
                   "its start",
             {"CE-GPPO − (β1=1, β2=0.5)": paired_difference(f(CE_GPPO), f(ce_gppo_name(1.0, 0.5))),
              "(β1=0, β2=1): final − start": paired_difference(f(ce_gppo_name(0.0, 1.0)),
                                                               study.start(ce_gppo_name(0.0, 1.0)))}),
        _above("P10-lm", "CE-GPPO's final held-out accuracy is above GRPO's", f(CE_GPPO, ACCURACY), f("grpo", ACCURACY),
               EQUIVALENCE_MARGIN),
    ]


# --------------------------------------------------------------------------------------------------
# Per-configuration figures, collapses, the predictor over every run, and the summary
# --------------------------------------------------------------------------------------------------
# a run collapses if a later held-out accuracy falls below COLLAPSE_FRACTION of its step-0 one (steering, the one rule)


@dataclass(frozen=True)
class Row:
    """One configuration over the seeds: mean [95 % interval] of its final entropy and accuracy, and more."""

    name: str
    start_entropy: float
    final_entropy: tuple[float, float, float]
    final_accuracy: tuple[float, float, float]
    lowest_accuracy: float  # the lowest held-out accuracy of any seed at any evaluation after step 0
    collapses: int  # seeds whose accuracy fell below COLLAPSE_FRACTION × their step-0 accuracy

    def __str__(self) -> str:
        h, a = self.final_entropy, self.final_accuracy
        return (f"{label(self.name):34s} H start {self.start_entropy:.3f}  final {h[0]:.3f} [{h[1]:.3f}, {h[2]:.3f}]"
                f"   accuracy final {a[0]:.3f} [{a[1]:.3f}, {a[2]:.3f}]  lowest {self.lowest_accuracy:.3f}  "
                f"collapses {self.collapses}")


def _interval(values: np.ndarray) -> tuple[float, float, float]:
    mean, low, high = seed_interval(values)
    return float(mean), float(low), float(high)


def collapsed(study: Study, name: str) -> np.ndarray:
    """Per seed, whether held-out accuracy fell below ``COLLAPSE_FRACTION`` × its step-0 value after step 0."""
    return np.array([collapse_step(study, name, i) is not None for i in range(len(study.seeds))])


def rows(study: Study) -> list[Row]:
    out = []
    for name in study.runs:
        steps, acc = study.series(name, ACCURACY)
        out.append(Row(name, float(study.start(name).mean()), _interval(study.final(name)),
                       _interval(study.final(name, ACCURACY)), float(acc[:, steps > 0].min()),
                       int(collapsed(study, name).sum())))
    return out


def pooled_agreement(study: Study) -> list:
    """``param_entropy.agreement`` of the parameter-space predictor over the phases of every run pooled."""
    return agreement([m for logs in study.runs.values() for log in logs for m in log])


def summary_lines(study: Study) -> list[str]:
    """What summary.txt says: the task's accuracy range, one row per configuration, the claims, the predictor."""
    n = len(study.seeds)
    acc = np.concatenate([study.series(name, ACCURACY)[1].ravel() for name in study.runs])
    lines = [f"{len(study.runs)} configurations x {n} seeds (seeds {', '.join(map(str, study.seeds))}), "
             f"{STEPS} steps each; final = mean of the last {FINAL_STEPS} steps; intervals: 95 % Student t over seeds",
             f"held-out accuracy over every evaluation of every run: {acc.min():.3f} to {acc.max():.3f}",
             "per configuration:"]
    lines += [f"  {row}" for row in rows(study)]
    lines.append("claims (paired differences over seeds, A − B):")
    lines += [f"  {c}" for c in claims(study)]
    if all(name in study.runs for name in LR_CONFIGS):
        lines += [f"  {c}" for c in lr_claims(study)]
    lines.append(f"parameter-space predictor, every {PREDICTOR_EVERY} steps of every run, phases pooled:")
    lines += [f"  {a}" for a in pooled_agreement(study)]
    lines.append(f"  {predictor_claim(study)}")
    lines.append("  trapezoid form by configuration (phases of its seeds pooled):")
    lines += [f"    {label(name):34s} {a}" for name, a in trapezoid_by_config(study).items()]
    lines.append(f"before a collapse: the {PRECURSOR_STEPS} steps before it minus the same steps of the same seed "
                 f"under GRPO (seeds that collapse):")
    for name in study.runs:
        found = precursors(study, name) if "grpo" in study.runs and name != "grpo" else None
        if found:
            lines.append(f"  {label(name)}: collapse at steps {[collapse_step(study, name, i) for i in range(n)]}")
            lines += [f"    {key:22s} {d}" for key, d in found.items()]
    lines.append("attribution of ΔH̄ over the attributed phases before the collapse (whole run if none), mean over "
                 "seeds, top three parts and the clipped cells' total:")
    for name in study.runs:
        parts = attribution_before_collapse(study, name)
        clipped = sum(v for k, v in parts.items() if k.endswith("/clipped"))
        lines.append(f"  {label(name):34s} " + "  ".join(f"{k} {v:+.3f}" for k, v in list(parts.items())[:3])
                     + f"  | clipped {clipped:+.3f}")
    return lines


# --------------------------------------------------------------------------------------------------
# What precedes a collapse: the steps before it against the same steps of the same seed under a baseline
# --------------------------------------------------------------------------------------------------
PRECURSOR_KEYS = ("clip/low_frac", "clip/high_frac", "grad_norm/mean", "groups/kept_frac", "response/length_mean")
PRECURSOR_LABELS = {"clip/low_frac": "clipped below", "clip/high_frac": "clipped above",  # how a table heads them
                    "grad_norm/mean": "gradient norm", "groups/kept_frac": "groups kept",
                    "response/length_mean": "response length"}
PRECURSOR_STEPS = 10  # the window of steps before a collapse that is compared


def collapse_step(study: Study, name: str, seed_index: int) -> int | None:
    """The first evaluation step at which seed ``seed_index`` of ``name`` has collapsed, or None."""
    steps, acc = study.series(name, ACCURACY)
    below = [int(s) for s, a in zip(steps, acc[seed_index]) if s > 0 and a < COLLAPSE_FRACTION * acc[seed_index][0]]
    return below[0] if below else None


def _window_mean(log: list[dict], key: str, first: int, last: int) -> float:
    values = [m[key] for m in log if first <= m["step"] <= last and key in m]  # steps with no kept group lack them
    return float(np.mean(values)) if values else float("nan")


def precursors(study: Study, name: str, baseline: str = "grpo") -> dict[str, Paired] | None:
    """For the seeds of ``name`` that collapse: each ``PRECURSOR_KEYS`` metric over the ``PRECURSOR_STEPS`` steps
    before the collapse, minus the same steps of the same seed under ``baseline`` (paired over those seeds).
    None when fewer than 2 seeds collapse."""
    pairs = []
    for i in range(len(study.seeds)):
        step = collapse_step(study, name, i)
        if step is not None:
            first = max(1, step - PRECURSOR_STEPS)
            pairs.append([(_window_mean(study.runs[name][i], key, first, step - 1),
                           _window_mean(study.runs[baseline][i], key, first, step - 1)) for key in PRECURSOR_KEYS])
    if len(pairs) < 2:
        return None
    values = np.array(pairs)  # (seeds, keys, 2)
    return {key: paired_difference(values[:, k, 0], values[:, k, 1]) for k, key in enumerate(PRECURSOR_KEYS)}


def attribution_before_collapse(study: Study, name: str) -> dict[str, float]:
    """Each part's share of ΔH̄ summed over the attributed phases before each seed's collapse (every seed's whole
    run where it does not collapse), mean over the seeds, largest first."""
    per_seed = []
    for i, log in enumerate(study.runs[name]):
        step = collapse_step(study, name, i)
        per_seed.append(attribution_totals([m for m in log if step is None or m["step"] < step]))
    parts = {part: float(np.mean([t.get(part, 0.0) for t in per_seed])) for part in per_seed[0]}
    return dict(sorted(parts.items(), key=lambda kv: -abs(kv[1])))


def lr_claims(study: Study) -> list[Claim]:
    """The collapse's causes, from paired differences of final held-out accuracy: β1 (B10), the restored gradient
    against GRPO at the same lr (B11), a third of the lr (B12, B13); and two entropy claims where nothing collapses
    (P4-lm-slow, P9-slow). The accuracy claims pass ``summaries.EQUIVALENCE_MARGIN``: two accuracies may be equal,
    and B13 asks exactly that (is GRPO still above at the lower lr, or are they equal?)."""
    f = study.final
    low, high, paper = (f"{name}_lr-{LOWER_LR:g}" for name in (ce_gppo_name(1.0, 0.5), "grpo", CE_GPPO))
    at_b1 = {b1: np.mean([f(ce_gppo_name(b1, b2), ACCURACY) for b2 in BETA2S], axis=0) for b1 in BETA1S}
    return [
        _above("B10", f"a larger β1 collapses the policy: final accuracy at β1={BETA1S[0]:g} above β1={BETA1S[-1]:g} "
                     f"(mean over β2)", at_b1[BETA1S[0]], at_b1[BETA1S[-1]], EQUIVALENCE_MARGIN),
        _above("B11", "at the same lr, GRPO's final accuracy is above CE-GPPO (β1=1, β2=0.5)'s",
               f("grpo", ACCURACY), f(ce_gppo_name(1.0, 0.5), ACCURACY), EQUIVALENCE_MARGIN),
        _above("B12", f"a third of the lr helps: CE-GPPO (β1=1, β2=0.5) ends with a higher accuracy at lr "
                     f"{LOWER_LR:g} than at the chapter's", f(low, ACCURACY), f(ce_gppo_name(1.0, 0.5), ACCURACY),
               EQUIVALENCE_MARGIN),
        _above("B13", f"at lr {LOWER_LR:g} too, GRPO's final accuracy is above CE-GPPO (β1=1, β2=0.5)'s",
               f(high, ACCURACY), f(low, ACCURACY), EQUIVALENCE_MARGIN),
        _above("P4-lm-slow", f"with no collapse (lr {LOWER_LR:g}), CE-GPPO's final H is above GRPO's", f(paper), f(high)),
        _above("P9-slow", f"with no collapse (lr {LOWER_LR:g}), β1=1, β2=0.5 ends with a lower H than CE-GPPO's",
               f(paper), f(low)),
    ]


def trapezoid_by_config(study: Study) -> dict:
    """The trapezoid form's ``param_entropy.Agreement`` per configuration, the phases of its seeds pooled."""
    return {name: {a.form: a for a in agreement([m for log in logs for m in log])}["trapezoid"]
            for name, logs in study.runs.items()}


def predictor_claim(study: Study) -> Claim:
    """P11-lm-seeds: the trapezoid form meets the book's targets (``param_entropy.TARGET_*``) in every configuration, its
    seeds' phases pooled. A count, not an interval: each configuration passes or not."""
    forms = trapezoid_by_config(study)
    passing = [name for name, a in forms.items() if a.meets_targets]
    return Claim("P11-lm-seeds", f"the trapezoid prediction has correlation >= {TARGET_CORRELATION} and median ratio within "
                       f"{TARGET_RATIO_ERROR:.0%} in every configuration",
                 HOLDS if len(passing) == len(forms) else FAILS,
                 f"in {len(passing)} of {len(forms)}: {', '.join(label(n) for n in passing)}")
