"""The package as it was at an earlier commit, importable next to today's: for benchmarks that print a ratio
against the code before a change, measured in the same process (no second implementation is kept in the package).

``load_package(rev)`` extracts ``cegppo_edu`` of git revision ``rev`` into a temporary folder as the package
``cegppo_edu_<rev>`` (the package imports itself only relatively, so it works under another name) and returns
its name; ``import_module(f"{name}.toy.bandit")`` then gives that revision's bandit.
"""

from __future__ import annotations

import importlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The last commit before the speed work of issue 13 ("Twice as fast as TRL"): the "today" of its ratios.
BEFORE_SPEED_WORK = "249eaad"


def load_package(rev: str = BEFORE_SPEED_WORK) -> str:
    """Extract ``cegppo_edu`` at ``rev`` and put it on ``sys.path`` as ``cegppo_edu_<rev>``; its module name."""
    name = f"cegppo_edu_{rev}"
    if name in sys.modules:
        return name
    archive = subprocess.run(["git", "-C", ROOT, "archive", rev, "cegppo_edu"], capture_output=True, check=True).stdout
    folder = tempfile.mkdtemp(prefix="cegppo_baseline_")
    tarfile.open(fileobj=io.BytesIO(archive)).extractall(folder, filter="data")
    os.rename(os.path.join(folder, "cegppo_edu"), os.path.join(folder, name))
    sys.path.insert(0, folder)
    importlib.import_module(name)
    return name


def import_module(rev: str, module: str):
    """``cegppo_edu.<module>`` as it was at ``rev`` (e.g. ``import_module(rev, "toy.bandit")``)."""
    return importlib.import_module(f"{load_package(rev)}.{module}")
