"""Chapter 7 on the transformer: the rows of ``steering.COMPARISON_ROWS`` on chapter 4's many-seed task.

The task, the warm start, the seeds and the 100 steps are chapter 4's study's (``study``): 1-3 digit addition
that the 0.8M-parameter model does not saturate, the same problems for every seed, seed s of every row drawing the
same first rollout batch. Each steered row runs once per target (``TARGETS``); the open-loop rows (fixed-β
CE-GPPO, Clip-Cov, KL-Cov, SAPO) do not look at the target, so one run of each serves both. H is the mean token
entropy of each step's rollout batch as sampled (``entropy/mean``), which is what the controllers see; it moves
from batch to batch with the prompts, and that noise is in every row's tracking error alike.

The runs are made by ``python -m cegppo_edu.experiments.regenerate ch07``; this module defines and reads them.
"""

from __future__ import annotations

import os

import numpy as np

from ..steering import COMPARISON_ROWS, Comparison, SteeredRun, target_at
from ..validation import check_choice
from . import DATA as DATA_ROOT
from . import study
from ..lm.run_dir import read_metrics

DATA = os.path.join(DATA_ROOT, "ch07")  # relative to the project root, like every run config
SEEDS = study.SEEDS
STEPS = study.STEPS
# The study's lower learning rate: no run collapses there (chapter 4, scoreboard row B12), so a row's tracking is not
# confounded with a collapse (at 3e-4 fixed-β CE-GPPO collapses in every seed, and its entropy then rises).
LR = study.LOWER_LR
TRANSIENT = 10  # steps left out of the tracking error
# (start, final): a level above where GRPO's batch entropy settles at this lr (0.26, chapter 4's summary), which
# needs holding up, and a cosine decay from about the start (0.36) to below that level.
TARGETS = {"constant": (0.32, None), "decaying": (0.37, 0.20)}
# Each target's claims by their rows of the book's claims scoreboard: (tracking, accuracy not lower)
SCOREBOARD = {"constant": ("B17", "B19"), "decaying": ("B18", "B19")}
CONTROLLER_FIELDS = {"none": {}, "pi": {}, "entropy_bonus": {},
                     "predictive": {"entropy_predictor_every": 1, "entropy_attribution": True}}


def run_name(method: str, controller: str, target: str | None) -> str:
    """The folder of a row: ``method`` (open loop) or ``method-controller-target``."""
    return method if controller == "none" else f"{method}-{controller}-{target}"


def runs() -> dict[str, dict]:
    """Every run's name and its config fields beyond the study's task (the open-loop rows once)."""
    out = {}
    for _, method, controller in COMPARISON_ROWS:
        for target in (TARGETS if controller != "none" else [None]):
            fields = {"method": method, "lr": LR, **CONTROLLER_FIELDS[controller]}
            if controller != "none":
                start, final = TARGETS[target]
                fields.update(beta_controller=controller, entropy_target=start, entropy_target_final=final)
            out[run_name(method, controller, target)] = fields
    return out


def run_config(name: str, seed: int, steps: int = STEPS):
    """The config of run ``name`` at ``seed``: the study's (``study.run_config``'s base) with the row's fields; the
    predictor and attribution only where the predictive controller needs them."""
    from ..lm.config import apply_overrides, get_preset

    check_choice("run", name, list(runs()))
    fields = runs()[name]
    return apply_overrides(get_preset("tiny-arith"), {
        **study.TASK, "model_path": os.path.join(study.DATA, "warm_start"), "warm_start_steps": 0, "seed": seed,
        "steps": steps, "eval_every": 10, "checkpoint_every": 0, "entropy_predictor_every": 0,
        "entropy_attribution": False, **fields})


def keep_key(key: str) -> bool:
    """What a committed log keeps: the study's choice, less the attribution's parts (the steer/ metrics say what
    the controller made of them)."""
    return study.keep_key(key) and not key.startswith("entropy/param_attr/")


# --------------------------------------------------------------------------------------------------
# Reading the runs
# --------------------------------------------------------------------------------------------------
def steered_run(label: str, method: str, controller: str, logs: list[list[dict]], target: str) -> SteeredRun:
    """A row's logs (one per seed) as a ``SteeredRun`` toward ``TARGETS[target]``: per step 1..STEPS the batch
    entropy and the β / bonus the step used (NaN on a step with no kept group), per evaluation the accuracy."""
    start, final = TARGETS[target]
    steps = np.arange(1, STEPS + 1)

    def per_step(key: str, default: float) -> np.ndarray:
        return np.array([[next((m.get(key, default) for m in log if m.get("step") == s and "entropy/mean" in m),
                               np.nan) for s in steps] for log in logs], dtype=float)

    spec = runs()[run_name(method, controller, target)]
    beta1, beta2 = (spec.get(b, study.CONFIGS[study.CE_GPPO][b]) if method == "ce_gppo" else 0.0
                    for b in ("beta1", "beta2"))
    accuracy = np.array([[m[study.ACCURACY] for m in log if study.ACCURACY in m] for log in logs], dtype=float)
    return SteeredRun(label, method, controller, entropy=per_step(study.ENTROPY, np.nan),
                      target=np.tile([target_at(int(s), STEPS, start, final) for s in steps], (len(logs), 1)),
                      beta1=per_step("loss/beta1", beta1), beta2=per_step("loss/beta2", beta2),
                      bonus=per_step("steer/entropy_coef", 0.0), accuracy=accuracy)


def load(folder: str, target: str, seeds=SEEDS) -> Comparison:
    """The comparison toward ``TARGETS[target]`` from the runs kept under ``folder`` (``runs/NAME/seedS``)."""
    check_choice("target", target, list(TARGETS))
    rows = []
    for label, method, controller in COMPARISON_ROWS:
        name = run_name(method, controller, target)
        logs = []
        for seed in seeds:
            path = os.path.join(folder, "runs", name, f"seed{seed}")
            if not os.path.exists(os.path.join(path, "metrics.jsonl")):
                raise FileNotFoundError(f"run {name} seed {seed} is missing: {path}/metrics.jsonl (python -m "
                                        f"cegppo_edu.experiments.regenerate ch07 makes it)")
            logs.append(read_metrics(path))
        rows.append(steered_run(label, method, controller, logs, target))
    return Comparison(target, rows, TRANSIENT, SCOREBOARD[target])


def reach(folder: str, target: str, seeds=SEEDS) -> tuple[float, float]:
    """Of the predictive row's steps toward ``TARGETS[target]``: the median |ΔH| it asked for (``steer/need``) and
    the median |ΔH| it predicted for the β it chose within the bounds (``steer/predicted_change``), in nats."""
    name = run_name("ce_gppo", "predictive", target)
    logs = [read_metrics(os.path.join(folder, "runs", name, f"seed{seed}")) for seed in seeds]
    steps = [m for log in logs for m in log if "steer/need" in m]
    return (float(np.median([abs(m["steer/need"]) for m in steps])),
            float(np.median([abs(m["steer/predicted_change"]) for m in steps])))


def summary_lines(folder: str) -> list[str]:
    """``summary.txt``: per target, the comparison table and the two claims."""
    lines = [f"{len(COMPARISON_ROWS)} rows x {len(SEEDS)} seeds (seeds {', '.join(map(str, SEEDS))}), {STEPS} steps "
             f"at lr {LR:g}; tracking error = mean |H - H*| after step {TRANSIENT}; accuracy = held-out accuracy "
             f"averaged over the run's evaluations; intervals: 95 % Student t over seeds"]
    for target in TARGETS:
        comparison = load(folder, target)
        start, final = TARGETS[target]
        lines.append(f"target {target}: H* = {start:g}" + ("" if final is None else f" -> {final:g} (cosine)"))
        for row in comparison.table():
            lines.append("  " + "  ".join(f"{key} {value}" for key, value in row.items() if value != ""))
        lines += [f"  {claim}" for claim in comparison.claims()]
        need, predicted = reach(folder, target)
        lines.append(f"  predictive row: median |need| {need:.3f} nats per step, median |predicted change| within "
                     f"the bounds {predicted:.3f}")
    return lines


__all__ = ["DATA", "LR", "SCOREBOARD", "SEEDS", "STEPS", "TARGETS", "TRANSIENT", "keep_key", "load", "reach", "run_config", "run_name",
           "runs", "steered_run", "summary_lines"]
