"""Write ``fast_run_before_speed_work.json``: the FAST run of ``tests/test_lm_trainer.py`` (4 RL steps) as the
trainer computed it before the speed work of issue 13 (commit ``BEFORE_SPEED_WORK`` of ``benchmarks/baseline.py``),
timings stripped, with the machine it was made on: the test demands bitwise equality only on that machine (kernel
set, torch version and CPU model), and the cross-machine tolerance of ``experiments.reproducibility`` elsewhere.

The old package runs whole, in a subprocess that imports it from ``git archive`` (its configuration names its
built-in task, sampler and reward by the module path ``cegppo_edu...``, so it cannot run beside today's).

    .venv/bin/python tests/data/make_fast_run_before_speed_work.py
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS, ROOT = os.path.dirname(HERE), os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(HERE, "fast_run_before_speed_work.json")


def run_old(out_dir: str) -> None:
    """In the subprocess: the FAST run with the package on ``sys.path`` (the old one), then its record."""
    import torch

    import cegppo_edu
    from cegppo_edu.lm.config import apply_overrides, get_preset
    from cegppo_edu.lm.run_dir import read_metrics, strip_timings
    from cegppo_edu.lm.trainer import Trainer
    from test_lm_trainer import FAST

    if not cegppo_edu.__file__.startswith(os.path.dirname(os.path.dirname(out_dir))):  # <folder>/runs/fast
        raise SystemExit(f"imported {cegppo_edu.__file__}, not the old package")
    Trainer(apply_overrides(get_preset("tiny-arith"), FAST), out_dir, progress=False).train()
    with open(os.path.join(out_dir, "record.json"), "w") as f:
        json.dump({"capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
                   "metrics": strip_timings(read_metrics(out_dir))}, f)


def main() -> None:
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from baseline import BEFORE_SPEED_WORK
    from cegppo_edu.experiments.reproducibility import cpu_model

    folder = tempfile.mkdtemp(prefix="fast_run_before_")
    archive = subprocess.run(["git", "-C", ROOT, "archive", BEFORE_SPEED_WORK, "cegppo_edu"], capture_output=True,
                             check=True).stdout
    tarfile.open(fileobj=io.BytesIO(archive)).extractall(folder, filter="data")
    out_dir = os.path.join(folder, "runs", "fast")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([folder, TESTS])}
    subprocess.run([sys.executable, __file__, "--run", out_dir], env=env, check=True)
    with open(os.path.join(out_dir, "record.json")) as f:
        record = json.load(f)
    record = {"what": f"tests/test_lm_trainer.py's FAST run (4 RL steps) as computed by the trainer before the speed "
                      f"work of issue 13 (commit {BEFORE_SPEED_WORK}), timings stripped; made by "
                      f"{os.path.relpath(__file__, ROOT)} on the machine named here",
              "capability": record["capability"], "torch": record["torch"], "cpu": cpu_model(),
              "metrics": record["metrics"]}
    with open(OUT, "w") as f:
        json.dump(record, f, indent=1)
        f.write("\n")
    print(f"wrote {OUT}: {len(record['metrics'])} metric lines; {record['capability']}, {record['torch']}, "
          f"{record['cpu']!r}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--run"]:
        run_old(sys.argv[2])
    else:
        main()
