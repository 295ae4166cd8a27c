"""Regenerates chapter 6's comparison on the transformer (``cegppo_edu.lm.steer_study``):

    runs/NAME/seedS/    metrics.jsonl (timings, the attribution's parts and a few per-group sums left out) and
                        config.json of each run
    summary.txt         the comparison table and the claims for both targets (steer_study.summary_lines)

Every row of ``steering.COMPARISON_ROWS`` × the 5 seeds of chapter 4's study × 100 steps, from the study's warm
start (``notebooks/data/ch04/seeds/warm_start``, made by that folder's regenerate.py); the steered rows once per
target, the open-loop rows once. Two runs at a time, one thread each (summary.txt's last line gives the measured
time). Run from the root:
    .venv/bin/python notebooks/data/ch06/regenerate.py [--workers 2] [--only NAME ...] [--summary-only]
A run whose metrics are already kept is not run again (delete its folder to redo it), so an interrupted
regeneration continues where it stopped.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

from cegppo_edu.lm import steer_study
from cegppo_edu.lm.run_dir import keep_run, write_summary

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
SCRATCH = os.path.join("runs", "steering")  # full run folders (checkpoints and all), not committed


def run_one(name: str, seed: int) -> tuple[str, int, float]:
    from cegppo_edu.lm.trainer import Trainer

    start = time.perf_counter()
    scratch = os.path.join(SCRATCH, name, f"seed{seed}")
    trainer = Trainer(steer_study.run_config(name, seed), scratch, overwrite=True, progress=False)
    try:
        trainer.train()
    finally:
        trainer.close()
    keep_run(scratch, os.path.join(HERE, "runs", name, f"seed{seed}"), steer_study.keep_key)
    return name, seed, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="runs at a time (one thread each)")
    parser.add_argument("--only", nargs="*", choices=sorted(steer_study.runs()), help="runs to (re)make")
    parser.add_argument("--summary-only", action="store_true", help="only rewrite summary.txt from the kept runs")
    args = parser.parse_args()
    os.chdir(ROOT)  # run configs hold paths relative to the root
    start = time.perf_counter()
    todo = [] if args.summary_only else [
        (name, seed) for name in (args.only or steer_study.runs()) for seed in steer_study.SEEDS
        if not os.path.exists(os.path.join(HERE, "runs", name, f"seed{seed}", "metrics.jsonl"))]
    # the slow predictive runs first, so that the two workers finish together
    todo.sort(key=lambda run: "predictive" not in run[0])
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = [pool.submit(run_one, name, seed) for name, seed in todo]
        for done, future in enumerate(as_completed(futures), 1):
            name, seed, seconds = future.result()
            print(f"[{done}/{len(todo)}] {name} seed {seed}: {seconds:.0f} s", file=sys.stderr, flush=True)
    regenerated = (f"regenerated {len(todo)} runs with {args.workers} workers in "
                   f"{(time.perf_counter() - start) / 60:.0f} min") if todo else ""
    text = write_summary(HERE, steer_study.summary_lines(HERE), regenerated)
    print(text)


if __name__ == "__main__":
    main()
