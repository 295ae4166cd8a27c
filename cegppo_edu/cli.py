"""The ``cegppo`` command: one sub-command per capability.

``train``, ``report``, ``eval``, ``preflight`` and ``fetch-model`` are defined next to the code they run
(``lm.command``, ``plots.report``, ``gpu.evaluate``, ``gpu.preflight``, ``pretrained.smollm2``): each of those modules has ``add_cli(subparsers)``, which adds its parser and sets ``func``
(called with the parsed arguments; its return value is the exit code). ``bandit`` is defined here, because it
writes a figure and the toy layer sits below the figures. Importing ``cegppo_edu.gpu`` registers the GPU
chapter's presets and plug-ins, so ``--preset`` offers them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from . import __version__
from . import gpu  # noqa: F401  (registers the GPU presets and plug-ins before the parsers list them)
from . import pretrained  # noqa: F401  (registers chapter 5's SmolLM2 task and preset)

SUBCOMMANDS = (
    "cegppo_edu.lm.command",  # cegppo train
    "cegppo_edu.plots.report",  # cegppo report
    "cegppo_edu.gpu.evaluate",  # cegppo eval
    "cegppo_edu.gpu.preflight",  # cegppo preflight
    "cegppo_edu.pretrained.smollm2",  # cegppo fetch-model
)


# ------------------------------------------------------------------------------------------ cegppo bandit
def add_bandit_cli(subparsers) -> argparse.ArgumentParser:
    """``cegppo bandit``: run ``toy.bandit.simulate`` and write history.csv, history.json and history.html."""
    from .losses import token_level_methods

    parser = subparsers.add_parser(
        "bandit", help="run the toy token bandit and write its history (CSV, JSON, HTML figure)",
        description="Train the toy token bandit (cegppo_edu.toy.bandit) and write history.csv, history.json and "
                    "history.html into --out. Unset hyper-parameters take the method's defaults.")
    parser.add_argument("--method", default="ce_gppo", choices=token_level_methods())
    parser.add_argument("--beta1", type=float, default=None, help="CE-GPPO lower-side weight (default 0.5)")
    parser.add_argument("--beta2", type=float, default=None, help="CE-GPPO upper-side weight (default 1.0)")
    parser.add_argument("--eps-low", type=float, default=None, help="ε_l (default: the method's)")
    parser.add_argument("--eps-high", type=float, default=None, help="ε_h (default: the method's)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.set_defaults(func=run_bandit)
    return parser


def run_bandit(args) -> int:
    from .plots.figures import bandit_history_figure
    from .summaries import final_mean
    from .toy.bandit import simulate

    history = simulate(args.method, args.beta1, args.beta2, args.eps_low, args.eps_high, steps=args.steps,
                       seeds=args.seeds, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    history.to_csv(out / "history.csv")
    history.to_json(out / "history.json")
    bandit_history_figure(history).write_html(out / "history.html", include_plotlyjs=True, full_html=True)
    final = final_mean(history.entropy_per_seed)
    print(f"{args.method} {history.hyper}: final entropy {final.mean():.3f} ± {final.std():.3f}, "
          f"final reward {history.reward[-1]:.3f}; wrote {out}/history.csv, history.json, history.html")
    return 0


# ------------------------------------------------------------------------------------------ the command
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cegppo",
        description="CE-GPPO, the book's toolkit: toy bandits, RL training of language models, evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"cegppo-edu {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_bandit_cli(subparsers)
    for module_name in SUBCOMMANDS:
        importlib.import_module(module_name).add_cli(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse, run, and report failures in one line: 2 for bad input (``ValueError``), 1 for a failure of the
    machine (``OSError``: a full disk, a lost file), 130 for Ctrl-C."""
    parser = build_parser()
    argv = list(argv if argv is not None else sys.argv[1:])
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    args.argv = argv  # what a sub-command needs to say "run this again with --resume"
    try:
        return int(args.func(args) or 0)
    except ValueError as err:  # bad input: one clear line, no traceback
        print(f"cegppo {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"cegppo {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"cegppo {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
