"""The derived quantities the book reports, each defined once.

- ``final_mean``: "final" entropy (or reward, ...) = the mean over the last ``FINAL_STEPS`` steps of a run. One
  step alone is noisy; the same window everywhere makes the toy's, the transformer's and the report's "final"
  numbers the same quantity.
"""

from __future__ import annotations

import numpy as np

from .validation import POSITIVE_INT

FINAL_STEPS = 50  # steps averaged for a run's "final" value (a sixth of the toy's 300, a third of chapter 4's 150)


def final_mean(series, steps: int = FINAL_STEPS) -> np.ndarray:
    """Mean over the last ``steps`` entries of the last axis: ``(..., T) -> (...)`` (per seed for ``(seeds, T)``).

    A series shorter than ``steps`` is averaged whole.
    """
    series = np.asarray(series, dtype=float)
    if series.ndim == 0 or series.shape[-1] == 0:
        raise ValueError(f"series has shape {series.shape}; it needs at least one step on its last axis")
    POSITIVE_INT.check("steps", steps)
    return series[..., -steps:].mean(-1)


__all__ = ["FINAL_STEPS", "final_mean"]
