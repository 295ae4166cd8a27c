"""Regenerates the validation of the parameter-space entropy predictor (``cegppo_edu.param_entropy``) on chapter 4's
warm-started tiny Qwen2, with the chapter's RL settings (CE-GPPO β1 = 0.5, β2 = 1; 16 prompts × 8 responses; K = 4
AdamW steps per phase; lr 3e-4 after a 10-step warm-up; one CPU thread), the predictor on at every step:

    chapter/      30 RL steps at the chapter's lr, ΔH̄ attributed to token cells: metrics.jsonl + config.json
    lr_<lr>/      10 RL steps at each lr of the scan (3e-4 ... 1e-5), no warm-up: does predicted/measured -> 1?
    summary.txt   what ``param_entropy.agreement`` says about each

About 3 minutes on one thread of a 2-core CPU (2 min 57 s measured). Run from the project root:
    .venv/bin/python notebooks/data/ch04/predictor/regenerate.py
"""

from __future__ import annotations

import os
import shutil
import sys
import time

from cegppo_edu.lm.config import apply_overrides, get_preset
from cegppo_edu.lm.run_dir import read_metrics
from cegppo_edu.lm.trainer import Trainer
import numpy as np

from cegppo_edu.param_entropy import agreement, attribution_totals

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(HERE))))
WARM = os.path.join("notebooks", "data", "ch04", "warm_start")  # relative: configs are committed, read from the root
SCAN = (3e-4, 1e-4, 3e-5, 1e-5)


def config(steps: int, **extra):
    return apply_overrides(get_preset("tiny-arith"), {
        "model_path": WARM, "warm_start_steps": 0, "steps": steps, "checkpoint_every": 0, "eval_every": 0,
        "entropy_predictor_every": 1, **extra})


def run(name: str, cfg) -> list[dict]:
    scratch = os.path.join(ROOT, "runs", "predictor", name)
    start = time.perf_counter()
    Trainer(cfg, scratch, overwrite=True, progress=True).train()
    print(f"{name}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    kept = os.path.join(HERE, name)
    os.makedirs(kept, exist_ok=True)
    for file in ("metrics.jsonl", "config.json"):
        shutil.copy(os.path.join(scratch, file), kept)
    return read_metrics(os.path.join(kept, "metrics.jsonl"))


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


def main() -> None:
    os.chdir(ROOT)  # the relative model path, as reproducibility.rerun_prefix resolves it
    chapter = run("chapter", config(30, entropy_attribution=True))
    lines = ["chapter settings (lr 3e-4, 30 phases):"]
    lines += [f"  {a}" for a in agreement(chapter)]
    lines += attribution_lines(chapter)
    for lr in SCAN:
        lines.append(f"lr {lr:g}, no warm-up (10 phases):")
        lines += [f"  {a}" for a in agreement(run(f"lr_{lr:g}", config(10, lr=lr, warmup_steps=0)))]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(HERE, "summary.txt"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
