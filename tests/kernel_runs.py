"""Everything that must agree across CPUs, run once per other float-kernel set this CPU has: the committed runs'
prefixes (``test_reproducibility.py``) and the chapters' ``# NBVAL_CHECK_OUTPUT`` cells (``test_notebooks.py``).

One job per kernel set, two at a time on one torch thread each (a 2-core machine runs both at full speed; two
threads each would contend), started once per session by the ``kernel_set_runs`` fixture of ``conftest.py``. The
native kernel set is not among them: the in-process tests and nbval's book-build check already run it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from cegppo_edu.experiments import ROOT
from cegppo_edu.experiments import reproducibility as repro
from cegppo_edu.experiments import study

RUNS = os.path.join(ROOT, "notebooks", "data", "ch04", "runs")
# chapter 4's runs, the run that validates the parameter-space entropy predictor (regenerate ch04-predictor), and
# three of the many-seed study's 55 (regenerate ch04-seeds): other seeds, methods and β than the runs above
COMMITTED = [f"runs/{run}" for run in sorted(os.listdir(RUNS))] + ["predictor/chapter"] + [
    f"seeds/{study.run_folder(name, seed)}" for name, seed in (("grpo", 1), (study.CE_GPPO, 2),
                                                               (study.ce_gppo_name(1.0, 0.5), 3))] + [
    # chapter 6's controllers (regenerate ch06): each one's state carries from step to step
    f"../ch06/runs/{name}/seed{seed}" for name, seed in (("ce_gppo-predictive-constant", 0),
                                                         ("ce_gppo-pi-decaying", 1),
                                                         ("grpo-entropy_bonus-constant", 2))]

PREFIXES = """
import json, sys, tempfile, torch
from cegppo_edu.experiments import reproducibility as repro
from cegppo_edu.lm.run_dir import read_metrics
root, runs = sys.argv[1], sys.argv[2:]
out = {"capability": torch.backends.cpu.get_cpu_capability(), "runs": {}}
for run in runs:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = repro.rerun_prefix(f"{root}/notebooks/data/ch04/{run}", root, tmp, steps=repro.PREFIX_STEPS)
    committed = read_metrics(f"{root}/notebooks/data/ch04/{run}/metrics.jsonl")
    tolerant = repro.compare_with_committed(fresh, committed)
    exact = repro.compare_with_committed(fresh, committed, rtol=0.0, atol=0.0)
    out["runs"][run] = {"ok": tolerant.ok, "text": str(tolerant), "bitwise": exact.ok}
warm = {which: repro.check_committed_warm_start(root, which=which) for which in repro.WARM_STARTS}
out["warm_start"] = {which: str(a) for which, a in warm.items()}
out["warm_start_ok"] = all(a.ok for a in warm.values())
print(json.dumps(out))
"""
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def other_kernel_sets() -> list[str]:
    """This CPU's kernel sets except the native one (the rest of the suite runs that)."""
    native = torch.backends.cpu.get_cpu_capability().lower()
    return [k for k in repro.kernel_sets() if repro.KERNEL_SETS[k].get("ATEN_CPU_CAPABILITY") != native]


@dataclass
class KernelSetRun:
    prefixes: dict  # PREFIXES' JSON: capability, per run ok/text/bitwise, warm starts
    prefix_error: str  # stderr's tail when the prefix job failed, else ""
    nbval: subprocess.CompletedProcess  # nbval over every chapter under this kernel set


def run_kernel_set(name: str) -> KernelSetRun:
    env = {**repro.kernel_env(name), **ONE_THREAD}
    done = subprocess.run([sys.executable, "-c", PREFIXES, ROOT, *COMMITTED], cwd=ROOT, capture_output=True,
                          text=True, timeout=900, env=env)
    prefixes = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {}
    nbval = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider", "notebooks"],
                           cwd=ROOT, capture_output=True, text=True, timeout=1200, env=env)
    return KernelSetRun(prefixes, "" if done.returncode == 0 else done.stderr[-3000:], nbval)


def run_all(names: list[str], workers: int = 2) -> dict[str, KernelSetRun]:
    with ThreadPoolExecutor(max_workers=workers) as pool:  # the work is in the subprocesses
        return dict(zip(names, pool.map(run_kernel_set, names)))
