"""Exact-match reward for the arithmetic task, an ``interfaces.RewardFn``.

The same interface takes math-verify for math datasets (``cegppo_edu.math_reward``). Grading is pure string
work: a bounded regex finds the last integer of the response, which is compared as a digit string with the
gold answer. Nothing is evaluated or executed, and a response is cut to ``max_chars`` before it is scanned, so
a megabyte of output or a number with thousands of digits costs milliseconds.
"""

from __future__ import annotations

import re
from typing import Sequence

from ..validation import POSITIVE_INT
from .tasks import extract_integer

_ONLY_INTEGER = re.compile(r"[+-]?\d+")


class ExactMatchReward:
    """``correct`` when the last integer of the response equals the gold integer, else ``wrong``.

    Defaults 1 / 0 (reward = accuracy). The authors use +1 / −1 with math-verify; group-normalised advantages
    are unchanged by this affine difference.
    """

    def __init__(self, correct: float = 1.0, wrong: float = 0.0, max_chars: int = 10_000, max_digits: int = 64,
                 require_only_answer: bool = False):
        if not correct > wrong:
            raise ValueError(f"correct={correct!r} must be greater than wrong={wrong!r}")
        POSITIVE_INT.check("max_chars", max_chars)
        self.correct, self.wrong = float(correct), float(wrong)
        self.max_chars, self.max_digits = max_chars, max_digits
        self.require_only_answer = require_only_answer  # True: the whole stripped response must be the number

    def grade(self, response, answer) -> bool:
        if not isinstance(response, str) or not isinstance(answer, str):
            return False
        if self.require_only_answer:  # strict format: the WHOLE response is the number and nothing else
            stripped = response.strip()
            if len(stripped) > self.max_digits + 1 or not _ONLY_INTEGER.fullmatch(stripped):
                return False  # (checked on the whole response: text cut off before the last max_chars counts too)
        text = response[-self.max_chars:]  # the answer comes last; bound the work on huge outputs
        predicted = extract_integer(text, self.max_digits)
        gold = extract_integer(answer, self.max_digits)
        if predicted is None or gold is None:
            return False
        return predicted == gold

    def __call__(self, responses: Sequence[str], answers: Sequence[str]) -> list[float]:
        if len(responses) != len(answers):
            raise ValueError(f"got {len(responses)} responses but {len(answers)} answers; they must match")
        return [self.correct if self.grade(r, a) else self.wrong for r, a in zip(responses, answers)]


def make_exact_match(config) -> ExactMatchReward:
    """Factory used by the trainer's reward registry (``config.reward = "exact_match"``)."""
    return ExactMatchReward(correct=config.reward_correct, wrong=config.reward_wrong, require_only_answer=True)
