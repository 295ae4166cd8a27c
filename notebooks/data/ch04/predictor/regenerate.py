"""Regenerates the validation of the parameter-space entropy predictor (``cegppo_edu.param_entropy``) on chapter 4's
warm-started tiny Qwen2, with the chapter's RL settings (CE-GPPO β1 = 0.5, β2 = 1; 16 prompts × 8 responses; K = 4
AdamW steps per phase; lr 3e-4 after a 10-step warm-up; one CPU thread), the predictor on at every step:

    chapter/      30 RL steps at the chapter's lr: metrics.jsonl + config.json
    lr_<lr>/      10 RL steps at each lr of the scan (3e-4 ... 1e-5), no warm-up: does predicted/measured -> 1?
    summary.txt   what ``param_entropy.agreement`` says about each

About 2 minutes on one thread of a 2-core CPU (2 min 9 s measured). Run from the project root:
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
from cegppo_edu.param_entropy import agreement

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(HERE))))
WARM = os.path.join(ROOT, "notebooks", "data", "ch04", "warm_start")
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


def main() -> None:
    lines = [f"chapter settings (lr 3e-4, 30 phases):"]
    lines += [f"  {a}" for a in agreement(run("chapter", config(30)))]
    for lr in SCAN:
        lines.append(f"lr {lr:g}, no warm-up (10 phases):")
        lines += [f"  {a}" for a in agreement(run(f"lr_{lr:g}", config(10, lr=lr, warmup_steps=0)))]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(HERE, "summary.txt"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
