"""Regenerates the committed runs the chapters read, with the package's own trainer, through one runner:

    python -m cegppo_edu.experiments.regenerate JOB [--workers 2] [--only NAME ...] [--summary-only]

    ch04-runs       notebooks/data/ch04/warm_start/ (350 SFT steps of tiny-arith) and runs/NAME/: chapter 4's five
                    150-step runs, metrics and config kept whole (about 10 min on one thread)
    ch04-predictor  notebooks/data/ch04/predictor/: the parameter-space predictor's validation, the chapter's run
                    for 30 steps with attribution and a 10-step lr scan, and summary.txt (about 3 min)
    ch04-collapse   notebooks/data/ch04/predictor/collapse/: CE-GPPO β1 = 1, β2 = 0.5 with the predictor at every
                    step, seeds 0 and 1, 150 steps, and summary.txt, a table per seed over windows of steps (25 min)
    ch04-seeds      notebooks/data/ch04/seeds/: the many-seed study's warm start, 14 configurations × 5 seeds ×
                    100 steps (``study.CONFIGS``), summary.txt with the claims' verdicts (about 28 min on 2 cores)
    ch05            notebooks/data/ch05/: chapter 5's GRPO, DAPO and CE-GPPO on SmolLM2-135M-Instruct × 3 seeds × 15
                    steps, summary.txt (needs `cegppo fetch-model smollm2`; about 15 min a run on one thread and
                    12 GB of memory a worker: 75 min with 2 workers on 2 cores and 24 GB)
    ch07            notebooks/data/ch07/: chapter 7's rows × 5 seeds from the study's warm start, summary.txt

Each run goes to a scratch folder (``--scratch``, default ``runs/`` of the repository; checkpoints and all, not
committed), then its ``metrics.jsonl`` (without the keys the job leaves out) and ``config.json`` are kept under
the job's folder. A run already kept is not run again (delete its folder to redo it), so an interrupted
regeneration continues where it stopped. Runs go ``--workers`` at a time, one torch thread each; a worker runs
in the repository root, where the run configs' paths (``model_path``) are relative to.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..lm.config import apply_overrides, get_preset
from ..lm.run_dir import keep_run, read_metrics, write_summary
from ..param_entropy import agreement, attribution_totals
from . import DATA, ROOT, data_path, smollm2_study, steer_study, study


@dataclass(frozen=True)
class Run:
    """One run of a job: its config, where it is kept (relative to the job's folder), which keys it keeps."""

    name: str
    config: object
    kept: str
    keep_key: Callable[[str], bool]


def keep_every_key(key: str) -> bool:
    return True


# -------------------------------------------------------------------- the jobs
CH04_RUNS = {"grpo": {"method": "grpo"}, "dapo": {"method": "dapo"},
             "ce_gppo": {"method": "ce_gppo", "beta1": 0.5, "beta2": 1.0},
             "ce_gppo_b1-1_b2-0.5": {"method": "ce_gppo", "beta1": 1.0, "beta2": 0.5},
             "ce_gppo_b1-0_b2-1": {"method": "ce_gppo", "beta1": 0.0, "beta2": 1.0}}
CHAPTER_WARM_START = study.CHAPTER_WARM_START


def ch04_runs(steps: int = 150) -> list[Run]:
    """Chapter 4's runs, as ``cegppo train --preset tiny-arith --set model_path=<warm start>`` makes them."""
    base = {"model_path": CHAPTER_WARM_START, "warm_start_steps": 0, "checkpoint_every": 0, "steps": steps}
    return [Run(name, apply_overrides(get_preset("tiny-arith"), {**base, **extra}), os.path.join("runs", name),
                keep_every_key) for name, extra in CH04_RUNS.items()]


PREDICTOR_SCAN = (3e-4, 1e-4, 3e-5, 1e-5)


def predictor_config(steps: int, **extra):
    return apply_overrides(get_preset("tiny-arith"), {
        "model_path": CHAPTER_WARM_START, "warm_start_steps": 0, "steps": steps, "checkpoint_every": 0,
        "eval_every": 0, "entropy_predictor_every": 1, **extra})


def ch04_predictor() -> list[Run]:
    """The chapter's settings (lr 3e-4, 30 phases, attribution), then 10 phases at each lr of the scan."""
    runs = [Run("chapter", predictor_config(30, entropy_attribution=True), "chapter", keep_every_key)]
    return runs + [Run(f"lr_{lr:g}", predictor_config(10, lr=lr, warmup_steps=0), f"lr_{lr:g}", keep_every_key)
                   for lr in PREDICTOR_SCAN]


def predictor_summary(folder: str) -> list[str]:
    chapter = read_metrics(os.path.join(folder, "chapter", "metrics.jsonl"))
    lines = ["chapter settings (lr 3e-4, 30 phases):", *(f"  {a}" for a in agreement(chapter)),
             *attribution_lines(chapter)]
    for lr in PREDICTOR_SCAN:
        lines.append(f"lr {lr:g}, no warm-up (10 phases):")
        lines += [f"  {a}" for a in agreement(read_metrics(os.path.join(folder, f"lr_{lr:g}", "metrics.jsonl")))]
    return lines


def attribution_lines(metrics: list[dict]) -> list[str]:
    """The summed share of ΔH̄ of every part over the phases, largest first, and the clipped tokens' LP shares."""
    totals = attribution_totals(metrics)
    lines = ["  trapezoid ΔH̄ summed over the phases, by part (token class by π_old × inside/clipped):"]
    lines += [f"    {name:16s} {value:+.4f}" for name, value in sorted(totals.items(), key=lambda kv: -abs(kv[1]))]
    measured = sum(m["entropy/param_pred/measured"] for m in metrics if "entropy/param_pred/measured" in m)
    lines.append(f"    {'all parts':16s} {sum(totals.values()):+.4f}  (measured {measured:+.4f})")
    for key in ("old", "current"):
        shares = [m[f"entropy/param_attr/clipped_lp_share_{key}"] for m in metrics
                  if f"entropy/param_attr/clipped_lp_share_{key}" in m]
        lines.append(f"  clipped token-updates that are LP by π_{key}: {np.mean(shares):.3f} "
                     f"(mean over {len(shares)} phases)")
    return lines


COLLAPSE_SEEDS = (0, 1)
COLLAPSE_WINDOWS = ((1, 30), (30, 60), (60, 90), (90, 110), (110, 130), (130, 151))


def ch04_collapse() -> list[Run]:
    """CE-GPPO at β1 = 1, β2 = 0.5 (the setting whose committed chapter-4 run broke down), predictor and attribution
    at every step, held-out accuracy every 10 steps, seeds 0 and 1, 150 steps (about 25 min, side by side)."""
    return [Run(f"seed{seed}", predictor_config(150, method="ce_gppo", beta1=1.0, beta2=0.5, seed=seed, eval_every=10,
                                                entropy_attribution=True), f"seed{seed}", keep_every_key)
            for seed in COLLAPSE_SEEDS]


def collapse_lines(folder: str) -> list[str]:
    """Per seed: held-out accuracy by step, then per window of steps the measured and predicted ΔH̄, the clipped
    cells' share, the three largest parts, clipping, gradient norm, responses kept and reward."""
    lines = []
    for seed in COLLAPSE_SEEDS:
        metrics = read_metrics(os.path.join(folder, f"seed{seed}"))
        accuracy = ", ".join(f"{m['step']}: {m['eval/accuracy']:.2f}" for m in metrics if "eval/accuracy" in m)
        lines.append(f"seed {seed}, held-out accuracy by step: {accuracy}")
        for low, high in COLLAPSE_WINDOWS:
            rows = [m for m in metrics if low <= m["step"] < high and "entropy/param_pred/measured" in m]
            lines.append(f"  steps {low:3d}-{high - 1:3d}: {window_line(rows)}")
    return lines


def window_line(rows: list[dict]) -> str:
    totals = attribution_totals(rows)
    clipped = sum(v for k, v in totals.items() if k.endswith("/clipped"))
    top = ", ".join(f"{k} {v:+.3f}" for k, v in sorted(totals.items(), key=lambda kv: -abs(kv[1]))[:3])
    mean = lambda key: np.mean([m[key] for m in rows])  # noqa: E731
    return (f"ΔH̄ measured {sum(m['entropy/param_pred/measured'] for m in rows):+.3f}, trapezoid "
            f"{sum(m['entropy/param_pred/trapezoid'] for m in rows):+.3f}, clipped cells {clipped:+.3f}; largest: "
            f"{top}; clip low/high {mean('clip/low_frac'):.3f}/{mean('clip/high_frac'):.3f}, grad norm "
            f"{mean('grad_norm/mean'):.1f}, responses kept {mean('responses/kept'):.0f}, reward {mean('reward/mean'):.2f}")


def ch04_seeds(only=None) -> list[Run]:
    return [Run(f"{name} seed {seed}", study.run_config(name, seed), study.run_folder(name, seed), study.keep_key)
            for name in (only or study.CONFIGS) for seed in study.SEEDS]


def ch05(only=None) -> list[Run]:
    return [Run(f"{name} seed {seed}", smollm2_study.run_config(name, seed), study.run_folder(name, seed),
                smollm2_study.keep_key) for seed in smollm2_study.SEEDS for name in (only or smollm2_study.METHODS)]


def ch07(only=None) -> list[Run]:
    runs = [Run(f"{name} seed {seed}", steer_study.run_config(name, seed), os.path.join("runs", name, f"seed{seed}"),
                steer_study.keep_key) for name in (only or steer_study.runs()) for seed in steer_study.SEEDS]
    return sorted(runs, key=lambda run: "predictive" not in run.name)  # the slow ones first: workers end together


@dataclass(frozen=True)
class Job:
    folder: tuple[str, ...]  # under DATA
    runs: Callable[..., list[Run]]
    summary: Callable[[str], list[str]] | None = None
    warm_start: tuple[str, Callable] | None = None  # (model folder relative to ROOT, the config that makes it)
    names: Callable[[], list[str]] | None = None  # what --only may pick


JOBS = {
    "ch04-runs": Job(("ch04",), lambda only=None, steps=150: [r for r in ch04_runs(steps) if not only or r.name in only],
                     warm_start=(CHAPTER_WARM_START, lambda: get_preset("tiny-arith")), names=lambda: list(CH04_RUNS)),
    "ch04-predictor": Job(("ch04", "predictor"), lambda only=None, steps=None: ch04_predictor(), predictor_summary),
    "ch04-collapse": Job(("ch04", "predictor", "collapse"), lambda only=None, steps=None: ch04_collapse(),
                         collapse_lines),
    "ch04-seeds": Job(("ch04", "seeds"), lambda only=None, steps=None: ch04_seeds(only),
                      lambda folder: study.summary_lines(study.load(folder)),
                      (os.path.join(study.DATA, "warm_start"), study.warm_start_config), lambda: list(study.CONFIGS)),
    "ch05": Job(("ch05",), lambda only=None, steps=None: ch05(only), smollm2_study.summary_lines,
                names=lambda: list(smollm2_study.METHODS)),
    "ch07": Job(("ch07",), lambda only=None, steps=None: ch07(only), steer_study.summary_lines,
                names=lambda: list(steer_study.runs())),
}


# -------------------------------------------------------------------- the one runner
def in_root() -> None:
    """A worker's set-up: one torch thread, and the repository root as its directory (the configs' paths)."""
    import torch

    torch.set_num_threads(1)
    os.chdir(ROOT)


def train_and_keep(run: Run, scratch: str, dest: str) -> float:
    from ..lm.trainer import Trainer

    start = time.perf_counter()
    trainer = Trainer(run.config, scratch, overwrite=True, progress=False)
    try:
        trainer.train()
    finally:
        trainer.close()
    last = read_metrics(scratch)[-1]["step"]
    if last != run.config.steps:  # a run stopped early (SIGTERM finishes the step, checkpoints and returns)
        raise RuntimeError(f"{run.name} stopped at step {last} of {run.config.steps}: not kept")
    keep_run(scratch, dest, run.keep_key)
    return time.perf_counter() - start


def run_all(runs: list[Run], folder: str, scratch: str, workers: int) -> list[Run]:
    """Train every run not kept yet under ``folder``, ``workers`` at a time; the runs made."""
    todo = [run for run in runs if not os.path.exists(os.path.join(folder, run.kept, "metrics.jsonl"))]
    # A fresh process for every run, so that no run inherits another's memory or state. A SmolLM2 run (ch05) peaks
    # near 11.8 GB by itself (measured, a fresh worker): two fit in 24 GB; three were killed for memory.
    with ProcessPoolExecutor(max_workers=workers, initializer=in_root, max_tasks_per_child=1) as pool:
        futures = {pool.submit(train_and_keep, run, os.path.join(scratch, run.kept), os.path.join(folder, run.kept)):
                   run for run in todo}
        for done, future in enumerate(as_completed(futures), 1):
            print(f"[{done}/{len(todo)}] {futures[future].name}: {future.result():.0f} s", file=sys.stderr, flush=True)
    return todo


def regenerate(name: str, *, workers: int = 2, only=None, summary_only: bool = False, steps: int | None = None,
               dest: str | None = None, scratch: str | None = None, skip_warm_start: bool = False) -> str:
    """Run job ``name`` (a key of ``JOBS``); its summary text ("" for a job without one). ``dest`` replaces the
    job's committed folder (tests point it elsewhere)."""
    job, start = JOBS[name], time.perf_counter()
    folder = dest or data_path(*job.folder)
    scratch = scratch or os.path.join(ROOT, "runs", name)
    if job.warm_start and not summary_only and not skip_warm_start:
        model, make_config = job.warm_start
        if not os.path.exists(os.path.join(ROOT, model, "model.safetensors")):
            from ..lm.warm_start import build_warm_start

            print(build_warm_start(make_config(), os.path.join(ROOT, model)), file=sys.stderr)
    kwargs = {"only": only} if steps is None else {"only": only, "steps": steps}
    made = [] if summary_only else run_all(job.runs(**kwargs), folder, scratch, workers)
    if not job.summary:
        return ""
    regenerated = (f"regenerated {len(made)} runs with {workers} workers in "
                   f"{(time.perf_counter() - start) / 60:.0f} min") if made else ""
    return write_summary(folder, job.summary(folder), regenerated)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cegppo_edu.experiments.regenerate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job", choices=sorted(JOBS))
    parser.add_argument("--workers", type=int, default=2, help="runs at a time (one thread each)")
    parser.add_argument("--only", nargs="*", help="names of the runs or configurations to (re)make")
    parser.add_argument("--summary-only", action="store_true", help="only rewrite summary.txt from the kept runs")
    parser.add_argument("--steps", type=int, help="ch04-runs: RL steps of each run (default 150)")
    parser.add_argument("--dest", help=f"keep the runs here instead of under {DATA}/ (a scratch check)")
    parser.add_argument("--scratch", help="full run folders (default runs/JOB in the repository)")
    parser.add_argument("--skip-warm-start", action="store_true", help="use the committed warm start as it is")
    args = parser.parse_args(argv)
    names = JOBS[args.job].names
    unknown = sorted(set(args.only or ()) - set(names() if names else ()))
    if unknown:
        parser.error(f"--only {unknown}: {args.job} has {names() if names else 'no named runs'}")
    print(regenerate(args.job, workers=args.workers, only=args.only, summary_only=args.summary_only, steps=args.steps,
                     dest=args.dest, scratch=args.scratch, skip_warm_start=args.skip_warm_start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
