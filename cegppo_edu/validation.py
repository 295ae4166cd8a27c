"""One validation helper for every layer: a bad value is refused with its name, the value and the allowed range.

    Range(0.0, 1.0, low_open=True).check("top_p", 1.5)
    ValueError: top_p=1.5 is outside the allowed range (0.0, 1.0]

``Range`` describes an interval (open or closed at each end, integers only, None allowed); ``check_choice`` a set
of names. The ranges used in more than one place are named here (``TEMPERATURE``, ``TOP_P``, ...), so that each
is written once.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class Range:
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    integer: bool = False  # only integers (not bools)
    none: bool = False  # None is allowed too
    note: str = ""  # a word on the meaning of an end, e.g. "0 = greedy"

    def __str__(self) -> str:
        left = "(" if self.low_open or self.low == -math.inf else "["
        right = ")" if self.high_open or self.high == math.inf else "]"
        text = f"{left}{self.low}, {self.high}{right}"
        extras = [e for e in ("an integer" if self.integer else "", "or None" if self.none else "", self.note) if e]
        return text + (f" ({', '.join(extras)})" if extras else "")

    def contains(self, value) -> bool:
        if value is None:
            return self.none
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if self.integer and not isinstance(value, numbers.Integral):
            return False
        if not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def check(self, name: str, value):
        """``value`` if it lies in the range, else ``ValueError`` naming ``name``, the value and the range."""
        if not self.contains(value):
            raise ValueError(f"{name}={value!r} is outside the allowed range {self}")
        return value


def check_choice(name: str, value, choices: Iterable) -> None:
    """``ValueError`` naming ``name``, the value and the choices unless ``value`` is one of them."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not allowed; choose one of {', '.join(map(str, choices))}")


def check_range(name: str, value, low: float = -math.inf, high: float = math.inf, **kind):
    """Shorthand for ``Range(low, high, **kind).check(name, value)``."""
    return Range(low, high, **kind).check(name, value)


def available_memory() -> int | None:
    """Bytes of RAM a new allocation can get now (Linux ``MemAvailable``); None where that cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_fits_in_memory(name: str, value, needed_bytes: int, what: str, available: int | None = None) -> None:
    """``ValueError`` naming ``name`` when ``what`` (``needed_bytes``, which ``value`` of it sets) would not fit in
    this machine's available memory: refused before the work, not as a failed allocation after it."""
    available = available_memory() if available is None else available
    if available is not None and needed_bytes > available:
        raise ValueError(f"{name}={value!r} is outside the allowed range on this machine: {what} would need "
                         f"{needed_bytes / 2**30:,.1f} GiB and {available / 2**30:,.1f} GiB are available")


# Ranges used in several places (the trainer's config, the samplers, the evaluation, the toy).
POSITIVE_INT = Range(1, integer=True)
NON_NEGATIVE_INT = Range(0, integer=True)
POSITIVE = Range(0.0, low_open=True)
NON_NEGATIVE = Range(0.0)
OPEN_UNIT = Range(0.0, 1.0, low_open=True, high_open=True)
SAMPLING_TEMPERATURE = Range(0.0, 10.0, low_open=True, note="RL samples; greedy is for evaluation")
TEMPERATURE = Range(0.0, 10.0, note="0 = greedy")
TOP_P = Range(0.0, 1.0, low_open=True)
LEARNING_RATE = Range(0.0, 1.0, low_open=True, high_open=True)

__all__ = ["LEARNING_RATE", "NON_NEGATIVE", "NON_NEGATIVE_INT", "OPEN_UNIT", "POSITIVE", "POSITIVE_INT", "Range",
           "SAMPLING_TEMPERATURE", "TEMPERATURE", "TOP_P", "available_memory", "check_choice", "check_fits_in_memory",
           "check_range"]
