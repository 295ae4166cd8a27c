"""The ``cegppo`` command: one sub-command per capability, each defined next to the code it runs.

Each entry of ``SUBCOMMANDS`` names a module with ``add_cli(subparsers)``, which adds its parser and
sets ``func`` (called with the parsed arguments; its return value is the exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__

SUBCOMMANDS = (
    "cegppo_edu.bandit",  # cegppo bandit
    "cegppo_edu.trainer",  # cegppo train
    "cegppo_edu.report",  # cegppo report
    "cegppo_edu.evaluate",  # cegppo eval
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cegppo",
        description="CE-GPPO, the book's toolkit: toy bandits, RL training of language models, evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"cegppo-edu {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMANDS:
        importlib.import_module(module_name).add_cli(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ValueError as err:  # bad input: one clear line, no traceback
        print(f"cegppo {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
