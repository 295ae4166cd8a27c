"""CE-GPPO at β1 = 1, β2 = 0.5 (the setting whose committed chapter-4 run broke down) with the entropy predictor and
its attribution on at every step, seeds 0 and 1, 150 steps each; then a table per seed over windows of steps.

    .venv/bin/python notebooks/data/ch04/predictor/collapse/collapse.py            # the table, from the runs here
    .venv/bin/python notebooks/data/ch04/predictor/collapse/collapse.py --run      # re-run both first

``--run`` takes about 25 minutes on a 2-core CPU (the two seeds side by side, one thread each). Seed 0 is the
committed run's seed; on this AVX2 machine it breaks down later than the committed AVX-512 run did (issue 9).
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from cegppo_edu.lm.run_dir import read_metrics
from cegppo_edu.param_entropy import attribution_totals

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import regenerate  # noqa: E402  (the predictor runs' config and run-then-keep step, next door)

SEEDS = (0, 1)
WINDOWS = ((1, 30), (30, 60), (60, 90), (90, 110), (110, 130), (130, 151))


def config(seed: int):
    """The chapter's β1 = 1, β2 = 0.5 run, held-out accuracy every 10 steps, predictor and attribution on."""
    return regenerate.config(150, method="ce_gppo", beta1=1.0, beta2=0.5, seed=seed, eval_every=10,
                             entropy_attribution=True)


def run(seed: int) -> None:
    regenerate.run(os.path.join("collapse", f"seed{seed}"), config(seed))


def window_line(rows: list[dict]) -> str:
    totals = attribution_totals(rows)
    clipped = sum(v for k, v in totals.items() if k.endswith("/clipped"))
    top = ", ".join(f"{k} {v:+.3f}" for k, v in sorted(totals.items(), key=lambda kv: -abs(kv[1]))[:3])
    mean = lambda key: np.mean([m[key] for m in rows])  # noqa: E731
    return (f"ΔH̄ measured {sum(m['entropy/param_pred/measured'] for m in rows):+.3f}, trapezoid "
            f"{sum(m['entropy/param_pred/trapezoid'] for m in rows):+.3f}, clipped cells {clipped:+.3f}; largest: "
            f"{top}; clip low/high {mean('clip/low_frac'):.3f}/{mean('clip/high_frac'):.3f}, grad norm "
            f"{mean('grad_norm/mean'):.1f}, responses kept {mean('responses/kept'):.0f}, reward {mean('reward/mean'):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="store_true", help="re-run both seeds first (about 25 minutes)")
    if parser.parse_args().run:
        os.chdir(regenerate.ROOT)  # the configs hold the warm start's path relative to the root
        with ProcessPoolExecutor(len(SEEDS)) as pool:  # one process (and one torch thread) per seed
            list(pool.map(run, SEEDS))
    for seed in SEEDS:
        metrics = read_metrics(os.path.join(HERE, f"seed{seed}"))
        accuracy = ", ".join(f"{m['step']}: {m['eval/accuracy']:.2f}" for m in metrics if "eval/accuracy" in m)
        print(f"seed {seed}, held-out accuracy by step: {accuracy}")
        for low, high in WINDOWS:
            rows = [m for m in metrics if low <= m["step"] < high and "entropy/param_pred/measured" in m]
            print(f"  steps {low:3d}-{high - 1:3d}: {window_line(rows)}")


if __name__ == "__main__":
    main()
