"""Regenerates chapter 4's many-seed comparison (``cegppo_edu.lm.study``):

    warm_start/                  chapter 4's warm start after a further SFT on 1-3 digit addition (study.WARM_START)
    runs/CONFIG/seedS/           metrics.jsonl (timings and a few per-group sums left out) + config.json of each run
    summary.txt                  the claims' verdicts with their intervals (study.summary_lines)

All 14 configurations (study.CONFIGS: 11, and 3 at a lower lr) × 5 seeds × 100 steps, two runs at a time, one
thread each: about 28 minutes on a 2-core CPU (the last lines of summary.txt give the measured times: 21 min for
the 55 runs of the first 11 configurations with the warm start, 7 min for the other 15). Run from the root:
    .venv/bin/python notebooks/data/ch04/seeds/regenerate.py [--workers 2] [--only CONFIG ...] [--summary-only]
A run whose metrics are already kept is not run again (delete its folder to redo it), so an interrupted
regeneration continues where it stopped.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

from cegppo_edu.lm import study
from cegppo_edu.lm.run_dir import keep_run, write_summary
from cegppo_edu.lm.warm_start import build_warm_start

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(HERE))))
SCRATCH = os.path.join("runs", "seeds")  # full run folders (checkpoints and all), not committed


def run_one(name: str, seed: int) -> tuple[str, int, float]:
    from cegppo_edu.lm.trainer import Trainer

    start = time.perf_counter()
    scratch = os.path.join(SCRATCH, name, f"seed{seed}")
    trainer = Trainer(study.run_config(name, seed), scratch, overwrite=True, progress=False)
    try:
        trainer.train()
    finally:
        trainer.close()
    # timings and the per-group sums no figure reads are left out (study.keep_key)
    keep_run(scratch, os.path.join(HERE, study.run_folder(name, seed)), study.keep_key)
    return name, seed, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="runs at a time (one thread each)")
    parser.add_argument("--only", nargs="*", choices=sorted(study.CONFIGS), help="configurations to (re)run")
    parser.add_argument("--summary-only", action="store_true", help="only rewrite summary.txt from the kept runs")
    args = parser.parse_args()
    os.chdir(ROOT)  # run configs hold paths relative to the root
    start = time.perf_counter()
    warm = os.path.join(study.DATA, "warm_start")
    if not args.summary_only and not os.path.exists(os.path.join(warm, "model.safetensors")):
        print(build_warm_start(study.warm_start_config(), warm), file=sys.stderr)
    todo = [] if args.summary_only else [
        (name, seed) for name in (args.only or study.CONFIGS) for seed in study.SEEDS
        if not os.path.exists(os.path.join(HERE, study.run_folder(name, seed), "metrics.jsonl"))]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = [pool.submit(run_one, name, seed) for name, seed in todo]
        for done, future in enumerate(as_completed(futures), 1):
            name, seed, seconds = future.result()
            print(f"[{done}/{len(todo)}] {name} seed {seed}: {seconds:.0f} s", file=sys.stderr, flush=True)
    regenerated = (f"regenerated {len(todo)} runs ({', '.join(sorted({n for n, _ in todo}))}) with "
                   f"{args.workers} workers in {(time.perf_counter() - start) / 60:.0f} min") if todo else ""
    text = write_summary(HERE, study.summary_lines(study.load(HERE)), regenerated)
    print(text)


if __name__ == "__main__":
    main()
