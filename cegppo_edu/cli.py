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
