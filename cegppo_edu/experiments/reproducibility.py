"""Two kinds of reproducibility, checked in two different ways.

1. **Determinism on one machine.** The same command twice in the same environment gives bitwise the same
   metrics, and a resumed run equals an uninterrupted one. These checks are exact (``==``); they live in
   ``tests/test_lm_trainer.py`` and hold on any machine, because both runs use that machine's kernels.
2. **Agreement with committed artefacts across machines.** A committed run was made on one CPU; another CPU
   runs other float kernels (AVX-512, AVX2 or none in ATen; other paths in MKL's GEMM), so its numbers differ in
   the last digits, and an RL trajectory amplifies those differences step by step until it is a different run
   (measured: the committed CE-GPPO β1=1, β2=0.5 run collapses near step 80 on one CPU and near step 130 on
   another). So the committed runs are compared over a short *prefix* with a *measured* tolerance.

The tolerance comes from ``benchmarks/kernel_drift.py``, which re-runs the committed prefixes on one machine
under every kernel set the CPU supports (``kernel_sets()``) and prints, per step, how far each set lands from
the committed numbers. The figures it printed are written next to the constants below.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from typing import Sequence

from ..lm.run_dir import TIMING_PREFIX, read_metrics
from . import DATA

# Environment settings that make one machine compute like another, read when torch loads (so they act on a new
# process only). ATEN_CPU_CAPABILITY picks ATen's vectorised kernels (softmax, reductions, elementwise and, for
# small matrices, the GEMM). MKL_CBWR=COMPATIBLE sends MKL's GEMM down its instruction-set-independent path: a
# stand-in for the GEMM kernels of another CPU (MKL_ENABLE_INSTRUCTIONS changed no bit on the AMD CPU this was
# measured on, so it is not used). oneDNN's ISA cap (ONEDNN_MAX_CPU_ISA) changed no bit either.
KERNEL_SETS: dict[str, dict[str, str]] = {
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "default": {"ATEN_CPU_CAPABILITY": "default"},
    "mkl-compatible": {"MKL_CBWR": "COMPATIBLE"},
}
_CPU_FLAG_NEEDED = {"avx512": ("avx512f", "avx512bw", "avx512vl", "avx512dq"), "avx2": ("avx2", "fma")}

# Agreement with committed runs (kind 2), measured with benchmarks/kernel_drift.py --steps 16 on 2026-12-01: an AMD
# EPYC with AVX2 and no AVX-512, kernel sets avx2 (= native), default and mkl-compatible, the five committed
# chapter-4 runs, which were made on an AVX-512 CPU. The largest relative difference of any metric from the
# committed numbers, over all runs and kernel sets, by RL step (step 0 is the evaluation before training: 0):
#     step   1     2     3     4     5     6     8     10    12    13    16
#     drift  5e-5  4e-5  3e-5  1e-5  1e-4  8e-5  3e-4  2e-4  5e-4  1e-2  1e-2
# No sampled token, reward or token count differed within 16 steps; the float drift grows about tenfold every
# five steps, and so will eventually change a sample and with it the trajectory. The worst entries are differences
# of nearly equal numbers (``loss`` ~3e-4, ``entropy/measured_change`` ~6e-3), hence an absolute floor ATOL.
# With RTOL = 1e-3 and ATOL = 1e-6 the largest |a − b| / (ATOL + RTOL·|b|) over steps 1-4 is 0.043 (a margin of
# 23); it first exceeds 1 at step 13. So PREFIX_STEPS = 4. The warm start's first 5 SFT steps drift by < 4e-7.
PREFIX_STEPS = 4
RTOL = 1e-3
ATOL = 1e-6
# The entropy attribution (``entropy/param_attr/*``, trainer option ``entropy_attribution``) splits each phase's
# ΔH̄ by token cell; a token near a cell's edge (π_old at the HP threshold, a ratio at 1 ± ε) can change cell when
# the floats change. Measured on the committed predictor run (notebooks/data/ch04/predictor/chapter), steps 1-4:
# largest |a − b| 5.8e-5 under kernel set default, 0 under avx2 (= the native one that made it), against phase
# changes of 6e-3 to 6e-2 (a single token's share is of order 1e-4). Compared in absolute terms with a margin of 17.
ATTRIBUTION_KEYS = r"^entropy/param_attr/"
ATTRIBUTION_ATOL = 1e-3
WARM_START_PREFIX_STEPS = 5
# The committed warm starts, by name: chapter 4's (from the tiny-arith preset) and the many-seed study's, which
# continues chapter 4's on the study's task (``study.warm_start_config``). Each keeps its SFT log.
WARM_STARTS = {"chapter": os.path.join(DATA, "ch04", "warm_start"), "study": os.path.join(DATA, "ch04", "seeds", "warm_start")}


def _cpuinfo(field: str) -> str:
    """The first ``field`` line of Linux ``/proc/cpuinfo``, after its colon; "" where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``); empty where that file does not exist."""
    return set(_cpuinfo("flags").split())


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), "" where unknown. Two CPUs with one kernel set can still
    round differently (their BLAS picks other code paths): exact equality with a committed run needs this too."""
    return _cpuinfo("model name")


def kernel_sets(flags: set[str] | None = None) -> list[str]:
    """The names in ``KERNEL_SETS`` this CPU can run, widest first; ``default`` (no vector ISA) always."""
    flags = cpu_flags() if flags is None else flags
    return [name for name in KERNEL_SETS
            if all(f in flags for f in _CPU_FLAG_NEEDED.get(name, ()))]


def kernel_env(name: str, base: dict | None = None) -> dict[str, str]:
    """``base`` (default ``os.environ``) with the settings of kernel set ``name``."""
    if name not in KERNEL_SETS:
        raise ValueError(f"kernel set {name!r} is not one of {', '.join(KERNEL_SETS)}")
    return {**(os.environ if base is None else base), **KERNEL_SETS[name]}


# --------------------------------------------------------------------------------------------------
# Comparing metrics
# --------------------------------------------------------------------------------------------------
@dataclass
class Agreement:
    """How a fresh prefix compares with the committed one: within tolerance or not, and where it is worst."""

    ok: bool
    steps: int  # steps compared
    keys: int  # (step, key) pairs compared
    worst_key: str
    worst_step: int
    worst_excess: float  # max over pairs of |a − b| / (atol + rtol·|b|); ≤ 1 means within tolerance
    max_rel: float  # max over pairs of |a − b| / max(|b|, atol): the drift itself
    missing: list[str]  # committed keys the fresh run lacks (a changed metric set is a disagreement)

    def __str__(self) -> str:
        verdict = "agrees" if self.ok else "DISAGREES"
        text = (f"{verdict} over {self.steps} steps ({self.keys} numbers): largest relative difference "
                f"{self.max_rel:.1e}, worst {self.worst_key!r} at step {self.worst_step} "
                f"({self.worst_excess:.2g} of the tolerance)")
        return text + (f"; missing keys {self.missing[:5]}" if self.missing else "")


def comparable_keys(fresh: dict, committed: dict) -> list[str]:
    """The committed keys that describe the run's numbers: not wall-clock times, not the step counter."""
    return sorted(k for k in committed if not k.startswith(TIMING_PREFIX) and k != "step")


def compare_prefix(fresh: Sequence[dict], committed: Sequence[dict], rtol: float = RTOL, atol: float = ATOL,
                   ignore: Sequence[str] = ()) -> Agreement:
    """Compare two metric logs step by step with ``|a − b| ≤ atol + rtol·|b|`` on every shared number.

    ``ignore``: regular expressions of keys left out (e.g. an evaluation that only one of the two ran).
    The logs are aligned by their ``step`` field; every committed step of the fresh range must be present.
    """
    if rtol < 0 or atol < 0:
        raise ValueError(f"rtol={rtol!r} and atol={atol!r} must be >= 0")
    by_step = {m["step"]: m for m in fresh}
    patterns = [re.compile(p) for p in ignore]
    worst = (0.0, "", -1)
    max_rel, n, missing, steps = 0.0, 0, [], 0
    for b in committed:
        a = by_step.get(b["step"])
        if a is None:
            continue
        steps += 1
        for key in comparable_keys(a, b):
            if any(p.search(key) for p in patterns):
                continue
            if key not in a:
                missing.append(f"{key}@{b['step']}")
                continue
            diff = abs(float(a[key]) - float(b[key]))
            allowed = atol + rtol * abs(float(b[key]))
            excess = 0.0 if not diff else diff / allowed if allowed else math.inf
            max_rel = max(max_rel, diff / max(abs(float(b[key])), atol, 1e-300))
            n += 1
            if excess > worst[0]:
                worst = (excess, key, b["step"])
    ok = steps > 0 and not missing and worst[0] <= 1.0
    return Agreement(ok, steps, n, worst[1], worst[2], worst[0], max_rel, missing)


# --------------------------------------------------------------------------------------------------
# Re-running a committed run's prefix
# --------------------------------------------------------------------------------------------------
def committed_config(run_dir: str, root: str, steps: int | None = None):
    """The ``TrainConfig`` of a committed run (its ``config.json``), cut to ``steps`` (None: the run's own),
    paths resolved from ``root``."""
    from .. import pretrained  # noqa: F401  (registers chapter 5's task "sums", which its runs' configs name)
    from ..lm.config import from_dict

    with open(os.path.join(run_dir, "config.json")) as f:
        saved = json.load(f)
    if saved.get("model_path", "").startswith("~"):  # a per-user cache (chapter 5's model): the reader's own
        saved["model_path"] = os.path.expanduser(saved["model_path"])
    elif saved.get("model_path") and not os.path.isabs(saved["model_path"]):
        saved["model_path"] = os.path.join(root, saved["model_path"])
    return from_dict({**saved, "steps": saved["steps"] if steps is None else steps, "checkpoint_every": 0})


def rerun_prefix(run_dir: str, root: str, out_dir: str, *, steps: int = PREFIX_STEPS) -> list[dict]:
    """Re-run the first ``steps`` RL steps of the committed run in ``run_dir`` into ``out_dir``; its metrics.

    The run keeps its own ``steps`` and stops after ``steps`` of them: what depends on the run's length (a β
    schedule, a decaying entropy target) is then what it was."""
    from ..lm.trainer import Trainer

    trainer = Trainer(committed_config(run_dir, root), out_dir, progress=False)
    try:
        trainer.train(stop_after=steps)
    finally:
        trainer.close()
    return read_metrics(out_dir)


def compare_with_committed(fresh: Sequence[dict], committed: Sequence[dict], rtol: float = RTOL,
                           atol: float = ATOL) -> Agreement:
    """``compare_prefix`` of a prefix run against the committed run it re-ran.

    A prefix run evaluates at its last step where the committed run may not have: evaluation keys are compared
    only at step 0 (the same model, before any update).
    """
    head = compare_prefix(fresh[:1], committed[:1], rtol, atol, ignore=[ATTRIBUTION_KEYS])
    rest = compare_prefix(fresh[1:], committed[1:len(fresh)], rtol, atol, ignore=[r"^eval/", ATTRIBUTION_KEYS])
    parts = [head, rest]
    if any(re.match(ATTRIBUTION_KEYS, k) for m in committed[:len(fresh)] for k in m):
        attribution_atol = ATTRIBUTION_ATOL if rtol or atol else 0.0  # rtol = atol = 0: a bitwise comparison
        parts.append(compare_prefix(fresh, committed[:len(fresh)], 0.0, attribution_atol,
                                    ignore=[rf"^(?!{ATTRIBUTION_KEYS[1:]})"]))
    worst = max(parts, key=lambda a: a.worst_excess)
    return Agreement(all(a.ok for a in parts), head.steps + rest.steps, sum(a.keys for a in parts),
                     worst.worst_key, worst.worst_step, worst.worst_excess, max(a.max_rel for a in parts),
                     [k for a in parts for k in a.missing])


def check_committed_run(run_dir: str, root: str, out_dir: str, *, steps: int = PREFIX_STEPS) -> Agreement:
    """Kind-2 check of one committed run: its first ``steps`` steps re-run here, within ``RTOL``/``ATOL``."""
    fresh = rerun_prefix(run_dir, root, out_dir, steps=steps)
    return compare_with_committed(fresh, read_metrics(os.path.join(run_dir, "metrics.jsonl")))


def warm_start_config(which: str, root: str):
    """The config that made committed warm start ``which`` (a key of ``WARM_STARTS``), paths resolved from ``root``."""
    from dataclasses import replace

    from ..lm.config import get_preset
    from .study import warm_start_config as study_warm_start

    if which not in WARM_STARTS:
        raise ValueError(f"warm start {which!r} is not one of {', '.join(WARM_STARTS)}")
    config = get_preset("tiny-arith") if which == "chapter" else study_warm_start()
    if config.model_path and not os.path.isabs(config.model_path):
        config = replace(config, model_path=os.path.join(root, config.model_path))
    return config


def rerun_warm_start(root: str, steps: int = WARM_START_PREFIX_STEPS, which: str = "chapter") -> list[dict]:
    """The first ``steps`` supervised steps of a committed warm start, re-run from the same seed."""
    from ..lm.warm_start import warm_start_from_config

    return warm_start_from_config(warm_start_config(which, root), steps)[2]


def check_committed_warm_start(root: str, steps: int = WARM_START_PREFIX_STEPS, which: str = "chapter") -> Agreement:
    """Kind-2 check of a committed warm start (its ``warm_start.jsonl``)."""
    from ..lm.run_dir import WARM_START_FILE

    committed = read_metrics(os.path.join(root, WARM_STARTS[which], WARM_START_FILE))[:steps]
    return compare_prefix(rerun_warm_start(root, steps, which), committed)


__all__ = ["ATOL", "Agreement", "KERNEL_SETS", "PREFIX_STEPS", "RTOL", "check_committed_run",
           "WARM_STARTS", "check_committed_warm_start", "compare_prefix", "compare_with_committed", "cpu_flags", "kernel_env",
           "kernel_sets", "rerun_prefix", "rerun_warm_start"]
