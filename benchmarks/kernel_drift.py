"""How far the committed runs drift when the same code runs on other float kernels.

Re-runs the first ``--steps`` RL steps of every committed run under ``--folder`` (default chapter 4's,
``notebooks/data/ch04/runs/*``; chapter 5's are ``notebooks/data/ch05/runs`` with ``--runs ce_gppo/seed0 ...``) once per kernel
set this CPU supports (``reproducibility.kernel_sets()``: ATen's AVX-512 / AVX2 / default kernels, MKL's
ISA-independent GEMM), each in its own process, and prints per step the largest relative difference of any
metric from the committed numbers, and from this machine's native run. The tolerance
``reproducibility.RTOL`` is set from what this prints.

    .venv/bin/python benchmarks/kernel_drift.py --steps 8            # about 3 minutes on 2 cores
    .venv/bin/python benchmarks/kernel_drift.py --steps 8 --json drift.json
    .venv/bin/python benchmarks/kernel_drift.py --folder notebooks/data/ch05/runs --runs ce_gppo/seed0 --steps 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from cegppo_edu.experiments.reproducibility import kernel_env, kernel_sets  # noqa: E402
from cegppo_edu.lm.run_dir import read_metrics  # noqa: E402

RUNS = os.path.join(ROOT, "notebooks", "data", "ch04", "runs")
CHILD = ("import sys; from cegppo_edu.experiments.reproducibility import rerun_prefix; "
         "rerun_prefix(sys.argv[1], sys.argv[2], sys.argv[3], steps=int(sys.argv[4]))")


def rerun(kernel: str, run: str, steps: int, out: str, folder: str = RUNS) -> list[dict]:
    """The run's first ``steps`` steps in a new process with kernel set ``kernel`` ("native": none forced)."""
    if kernel == "native":
        env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR")}
    else:
        env = kernel_env(kernel)
    subprocess.run([sys.executable, "-c", CHILD, os.path.join(folder, run), ROOT, out, str(steps)], cwd=ROOT,
                   env={**env, "PYTHONPATH": ROOT}, check=True, capture_output=True)
    return read_metrics(os.path.join(out, "metrics.jsonl"))


def step_drift(a: dict, b: dict, floor: float = 1e-6) -> tuple[float, str]:
    """Largest |a − b| / max(|b|, floor) over the shared non-timing keys of one step, and its key."""
    worst = (0.0, "")
    for key in b.keys() & a.keys():
        if key.startswith("time/") or key == "step" or (key.startswith("eval/") and b["step"] != 0):
            continue
        rel = abs(a[key] - b[key]) / max(abs(b[key]), floor)
        worst = max(worst, (rel, key))
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="RL steps to re-run per committed run")
    parser.add_argument("--folder", default=RUNS, help="the committed runs' folder (default chapter 4's)")
    parser.add_argument("--runs", nargs="*", help="committed run names under --folder (default: all)")
    parser.add_argument("--json", help="also write the per-step drifts to this file")
    parser.add_argument("--keep", help="keep the re-run metrics under this folder (KEEP/<kernel set>/<run>/)")
    args = parser.parse_args()
    runs = args.runs or sorted(os.listdir(args.folder))
    sets = kernel_sets()
    print(f"kernel sets on this CPU: {', '.join(sets)}; runs: {', '.join(runs)}; steps 0-{args.steps}")
    result = {}
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or scratch
        for run in runs:
            committed = read_metrics(os.path.join(args.folder, run, "metrics.jsonl"))
            fresh = {k: rerun(k, run, args.steps, os.path.join(tmp, k, run), args.folder) for k in ["native", *sets]}
            result[run] = {}
            for k, metrics in fresh.items():
                vs_committed = [step_drift(a, b) for a, b in zip(metrics, committed)]
                vs_native = [step_drift(a, b) for a, b in zip(metrics, fresh["native"])]
                result[run][k] = {"vs_committed": vs_committed, "vs_native": vs_native}
                print(f"{run:22s} {k:15s} vs committed: " +
                      " ".join(f"{d:.0e}" for d, _ in vs_committed) +
                      f" | worst key at step 1: {vs_committed[1][1]}")
                if k != "native":
                    print(f"{'':22s} {'':15s} vs native:    " + " ".join(f"{d:.0e}" for d, _ in vs_native))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
