"""The chapters' experiments, built on the LM pipeline (``lm``) and read by the chapters:

    study             chapter 4's many-seed comparison: its task, configurations, and the claims' verdicts
    steer_study       chapter 7's steered runs on the transformer, read back as ``steering.Comparison``s
    reproducibility   the checks of committed runs across machines (prefix re-runs, tolerances, kernel sets)
    regenerate        the one runner that regenerates every committed run (``python -m cegppo_edu.experiments.regenerate``)

Where the committed data lives is written once, here: ``DATA``, relative to the repository root (run configs record
their paths so, e.g. ``model_path``, so that they re-run on any machine), and ``ROOT``, the repository this package
sits in; ``data_path`` joins them. No module here reads the working directory.
"""

from __future__ import annotations

import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join("notebooks", "data")


def data_path(*parts: str) -> str:
    """The absolute path of ``DATA/<parts>`` in this repository."""
    return os.path.join(ROOT, DATA, *parts)


__all__ = ["DATA", "ROOT", "data_path"]
