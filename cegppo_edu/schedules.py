"""Schedules of CE-GPPO's β1 and β2 over a run: β(t) from a small family.

The paper fixes β1 and β2 for a whole run and names scheduling them as future work. A schedule here goes from a
start value (the config's ``beta1`` / ``beta2``) at the first RL step to a final value at the last one:

    constant   β(t) = start
    linear     β(t) = start + (final − start) · t
    cosine     β(t) = final + (start − final) · (1 + cos(π t)) / 2        (flat at both ends, steepest midway)

with t = (step − 1) / (steps − 1) ∈ [0, 1] (t = 0 for a one-step run). "Explore early, exploit late" is, for
example, β2 falling (less push up on the entropy from the clipped positive tokens) while β1 rises (more push
down from the clipped negative ones): chapter 1's table says which way each β moves the entropy.
"""

from __future__ import annotations

import math

from .validation import POSITIVE_INT, Range, check_choice

SCHEDULES = ("constant", "linear", "cosine")


def progress(step: int, steps: int) -> float:
    """t = (step − 1) / (steps − 1): 0 at the first RL step, 1 at the last (0 throughout a one-step run)."""
    POSITIVE_INT.check("steps", steps)
    Range(1, steps, integer=True, note=f"an RL step of a {steps}-step run").check("step", step)
    return 0.0 if steps == 1 else (step - 1) / (steps - 1)


def scheduled(kind: str, start: float, final: float, step: int, steps: int) -> float:
    """β at RL step ``step`` (1-based) of ``steps`` under schedule ``kind`` (one of ``SCHEDULES``)."""
    check_choice("schedule", kind, SCHEDULES)
    t = progress(step, steps)
    if kind == "constant":
        return start
    if kind == "linear":
        return start + (final - start) * t
    return final + (start - final) * (1.0 + math.cos(math.pi * t)) / 2.0


__all__ = ["SCHEDULES", "progress", "scheduled"]
