"""``cegppo train``: its arguments, and the rules of ``--resume`` (the run's own settings; ``--steps`` may grow).

The trainer itself is ``lm.trainer.Trainer``; this module turns a command line into a config and a run folder.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from typing import Sequence

from ..losses import METHODS
from . import checkpoint as ckpt
from . import metrics, run_dir, setup
from .config import PRESETS, TrainConfig, apply_overrides, from_dict, get_preset, to_dict
from .trainer import Trainer, signals_stop_at_once

DEFAULT_PRESET = "tiny-arith"


def build_config(preset: str, method: str | None = None, steps: int | None = None,
                 overrides: Sequence[str] = (), smoke: bool = False) -> TrainConfig:
    """Preset → smoke overrides → ``--method`` / ``--steps`` → ``--set key=value`` (later wins)."""
    config = get_preset(preset, smoke=smoke)
    direct = {}
    if method is not None:
        direct["method"] = method
    if steps is not None:
        direct["steps"] = steps
    if direct:
        config = apply_overrides(config, direct)
    return apply_overrides(config, list(overrides))


# -------------------------------------------------------------------- command line
def add_cli(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train", help="RL-train a language model with GRPO, DAPO, CE-GPPO, ... (one trainer, many presets)",
        description="Train a causal LM with a policy loss of the registry ("
                    + ", ".join(dict.fromkeys(m.label for m in METHODS.values())) + ").\n"
                    "Writes OUT/metrics.jsonl (one JSON line per step), OUT/config.json, OUT/run.json and atomic\n"
                    "checkpoints under OUT/checkpoints/ (every checkpoint_every steps, at the end and after Ctrl-C).\n"
                    "One run per folder: a fresh run into a folder holding a run is refused (use --resume,\n"
                    "a new --out, or --overwrite). Ctrl-C finishes the step in flight, writes a checkpoint and\n"
                    "exits with 130; --resume then continues exactly.\n\n"
                    "example:\n  cegppo train --preset tiny-arith --method ce_gppo --steps 200 --out runs/ce "
                    "--set beta1=0.75\n  cegppo train --out runs/ce --resume             # continue it\n"
                    "  cegppo train --out runs/ce --resume --steps 300 # continue it further",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="presets:\n" + "\n".join(f"  {n:22s} {p.description}" for n, p in sorted(PRESETS.items())) +
               "\n\nevery field of cegppo_edu.lm.config.TrainConfig can be set with --set key=value "
               "(see its comments for meaning, paper symbol and default source)."
               "\n\nmetrics.jsonl keys (cegppo_edu.lm.metrics; <class> is a token class, e.g. PA&LP):\n"
               + metrics.describe())
    parser.add_argument("--preset", choices=sorted(PRESETS), help=f"named configuration (default {DEFAULT_PRESET})")
    parser.add_argument("--method", choices=sorted(METHODS), help="policy loss (default: the preset's)")
    parser.add_argument("--steps", type=int, help="RL steps (rollout batches) to reach; with --resume, at least "
                                                  "the run's own")
    parser.add_argument("--out", required=True, help="run directory (metrics, checkpoints): one run per folder")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its newest complete checkpoint (fresh start if the "
                             "folder holds no run); settings given here must equal the run's, --steps may grow")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete the run that --out holds and start a fresh one there")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set beta1=0.75 (repeatable)")
    parser.add_argument("--smoke", action="store_true", help="the preset's small CPU smoke configuration")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    parser.set_defaults(func=run_cli)
    return parser


def resume_config(args, latest: str):
    """The config to resume ``latest`` with: the run's own, with ``--steps`` raised if asked. Every setting the
    command line gives (``--method``, ``--set``, ``--preset``, ``--smoke``) must equal the run's, else refused."""
    saved = from_dict(ckpt.load_config_dict(latest))  # not the state: the trainer loads that once, to restore it
    asked = apply_overrides(saved, ({"method": args.method} if args.method else {}))
    asked = apply_overrides(asked, list(args.overrides))
    changed = {k: (getattr(saved, k), v) for k, v in to_dict(asked).items() if k != "steps" and getattr(saved, k) != v}
    if changed:
        what = "; ".join(f"{k}={new!r} where the run has {k}={old!r}" for k, (old, new) in changed.items())
        raise ValueError(f"cannot resume {args.out!r} with other settings: {what}. Resume without them, or start a "
                         f"new run with a new --out")
    identity = run_dir.read_run_identity(args.out)
    for key, given in (("preset", args.preset), ("smoke", args.smoke or None)):
        if given is not None and key in identity and identity[key] != given:
            raise ValueError(f"cannot resume {args.out!r} with --{key} {given}: the run was started with "
                             f"{key}={identity[key]!r}")
    if args.steps is not None:
        if args.steps < saved.steps:
            raise ValueError(f"--steps {args.steps} is below the run's steps={saved.steps} (it is at step "
                             f"{ckpt.checkpoint_step(latest)}): a resume may extend a run, never shorten its record; stop a run "
                             f"early with Ctrl-C")
        asked = apply_overrides(asked, {"steps": args.steps})
    return asked


def run_cli(args) -> int:
    try:
        with signals_stop_at_once():  # SIGTERM / SIGHUP while setting up (the warm start included): stop now
            return _run(args)
    except KeyboardInterrupt as stop:
        name = str(stop.args[0]) if stop.args else "SIGINT"
        code = 128 + getattr(signal, name, signal.SIGINT)
        print(f"cegppo train: {name} before the first RL step: nothing to keep. Run the same command again (with or "
              f"without --resume) to start afresh", file=sys.stderr)
        return code


def _run(args) -> int:
    run_id = setup.resumable_run_id(args.out) if args.resume and os.path.isdir(args.out) else None
    latest = ckpt.latest_good_checkpoint(args.out, run_id) if run_id is not None else None
    if latest:
        config = resume_config(args, latest)
    else:
        config = build_config(args.preset or DEFAULT_PRESET, args.method, args.steps, args.overrides, args.smoke)
    argv = getattr(args, "argv", None) or sys.argv[1:]
    how = {"preset": args.preset or DEFAULT_PRESET, "smoke": bool(args.smoke), "command": shlex.join(argv)}
    trainer = Trainer(config, args.out, resume=args.resume, progress=not args.no_progress,
                      overwrite=args.overwrite, how=how)
    if trainer.resumed_from:
        print(f"resumed from {trainer.resumed_from} at step {trainer.step}", file=sys.stderr)
    try:
        trainer.train()
    finally:
        trainer.close()  # the grading pool, the engine and the folder lock, however train() ended
    if trainer.interrupted:
        again = [a for a in argv if a not in ("--overwrite", "--resume")]
        again = ["train"] + again if again[:1] != ["train"] else again
        print(f"stopped after step {trainer.step}; checkpoint {ckpt.latest_checkpoint(args.out, trainer.run_id)}\n"
              f"continue with: cegppo {shlex.join(again)} --resume", file=sys.stderr)
        return 128 + trainer.interrupted  # 130 after Ctrl-C, 143 after SIGTERM, 129 after SIGHUP
    return 0
