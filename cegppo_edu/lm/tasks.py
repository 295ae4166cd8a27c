"""Problems for the LM trainer: a synthetic arithmetic task, and the prompt format shared with math datasets.

A ``Problem`` is a user message (``question``, with ``config.prompt_template`` already applied by the task
factory) and a gold ``answer`` string. The trainer turns a problem into token ids with the model's own chat
template (``encode_chat_prompt``) or ``config.prompt_encoder``, so the same code serves the tiny char-level
model of chapter 4 and DeepSeek-R1-Distill in chapter 6 (whose template pre-fills ``<think>\\n``).

The arithmetic task: a + b with ``n_digits``-digit operands, drawn deterministically from a seed; the train
and held-out splits are disjoint (no (a, b) pair appears in both). The model is expected to answer with the
digits of the sum; ``extract_integer`` reads the last integer of a response.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any, Sequence

from ..validation import POSITIVE_INT, Range


@dataclass(frozen=True)
class Problem:
    question: str  # the problem's text as the user message says it (prompt template and instruction applied)
    answer: str  # the gold answer, graded by a RewardFn


@dataclass(frozen=True)
class TaskData:
    train: list[Problem]  # RL prompts are drawn from here
    heldout: list[Problem]  # held-out accuracy is measured here
    sft: list[tuple[Problem, str]] | None = None  # (problem, target response) pairs for a warm start, if any


def as_problem(record: Any) -> Problem:
    """Normalise a record to a ``Problem``: a Problem, a (question, answer) pair, an object with ``.question`` and
    ``.answer`` (``gpu.math_data.MathProblem``), or a dict with those keys."""
    if isinstance(record, Problem):
        return record
    if isinstance(record, dict):
        question, answer = record.get("question"), record.get("answer")
    elif isinstance(record, (tuple, list)) and len(record) == 2:
        question, answer = record
    else:
        question, answer = getattr(record, "question", None), getattr(record, "answer", None)
    if not isinstance(question, str) or not isinstance(answer, str):
        raise ValueError(f"cannot read a (question, answer) pair of strings from {type(record).__name__} record")
    return Problem(question, answer)


def apply_prompt_template(problem: str, template: str) -> str:
    """``template`` with ``{problem}`` replaced (plain replace, so LaTeX braces like ``\\boxed{}`` stay as is)."""
    if "{problem}" not in template:
        raise ValueError(f"prompt_template={template!r} must contain the placeholder {{problem}}")
    return template.replace("{problem}", problem)


def encode_chat_prompt(tokenizer, user_message: str, system_prompt: str = "") -> list[int]:
    """Token ids of a one-turn chat ending where the assistant starts, via the tokenizer's chat template."""
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + \
        [{"role": "user", "content": user_message}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


# --------------------------------------------------------------------------------------------------
# Synthetic addition
# --------------------------------------------------------------------------------------------------
def addition_problem(a: int, b: int) -> Problem:
    return Problem(question=f"{a}+{b}=", answer=str(a + b))


def _operand_range(n_digits: int) -> tuple[int, int]:
    return 10 ** (n_digits - 1) if n_digits > 1 else 0, 10 ** n_digits - 1


def make_addition_task(n_train: int, n_heldout: int, n_digits: int = 3, seed: int = 0,
                       min_digits: int | None = None) -> TaskData:
    """Disjoint train / held-out sets of a+b problems, operands of ``min_digits..n_digits`` digits.

    Deterministic: the same arguments give the same problems in the same order (``random.Random(seed)``).
    The SFT targets are the bare sums, so a warm-started model answers with digits and then ``<|im_end|>``.
    """
    Range(1, 9, integer=True).check("n_digits", n_digits)
    min_digits = n_digits if min_digits is None else min_digits
    Range(1, n_digits, integer=True, note=f"at most n_digits={n_digits}").check("min_digits", min_digits)
    n_pairs = sum((hi - lo + 1) for lo, hi in (_operand_range(d) for d in range(min_digits, n_digits + 1))) ** 2
    for name, value in (("n_train", n_train), ("n_heldout", n_heldout)):
        POSITIVE_INT.check(name, value)
    if n_train + n_heldout > n_pairs // 2:
        raise ValueError(f"n_train + n_heldout = {n_train + n_heldout} is outside the allowed range: at most "
                         f"{n_pairs // 2} (half the distinct pairs) for {min_digits}..{n_digits}-digit operands")
    rng = random.Random(seed)
    seen: set[tuple[int, int]] = set()
    pairs: list[tuple[int, int]] = []
    while len(pairs) < n_train + n_heldout:
        digits = rng.randint(min_digits, n_digits)
        lo, hi = _operand_range(digits)
        pair = (rng.randint(lo, hi), rng.randint(lo, hi))
        if pair not in seen:
            seen.add(pair)
            pairs.append(pair)
    problems = [addition_problem(a, b) for a, b in pairs]
    train, heldout = problems[:n_train], problems[n_train:]
    return TaskData(train=train, heldout=heldout, sft=[(p, p.answer) for p in train])


# Bounded patterns: a response of a million characters is scanned once, in linear time, and never evaluated.
_INTEGER = re.compile(r"-?\d+")


def extract_integer(response: str, max_digits: int = 64) -> str | None:
    """The last integer in ``response`` as a canonical digit string (no leading zeros), or None.

    Works on strings, never converts to ``int`` (a number of thousands of digits would hit Python's int/str
    conversion limit), and rejects integers longer than ``max_digits``.
    """
    if not isinstance(response, str):
        return None
    last = None
    for last in _INTEGER.finditer(response):
        pass
    if last is None:
        return None
    text = last.group(0)
    sign, digits = ("-", text[1:]) if text.startswith("-") else ("", text)
    if len(digits) > max_digits:
        return None
    digits = digits.lstrip("0") or "0"
    return ("" if digits == "0" else sign) + digits


def accuracy_of(rewards: Sequence[float], correct_value: float) -> float:
    """Fraction of responses whose reward equals the reward of a correct answer."""
    return sum(r == correct_value for r in rewards) / max(len(rewards), 1)


def make_addition_task_from_config(config) -> TaskData:
    """Factory for the trainer's task registry (``config.task = "arith"``)."""
    from .config import task_seed

    task = make_addition_task(config.n_train, config.n_heldout, n_digits=config.n_digits, seed=task_seed(config),
                              min_digits=config.min_digits)
    if config.prompt_template == "{problem}":
        return task

    def templated(p: Problem) -> Problem:
        return Problem(apply_prompt_template(p.question, config.prompt_template), p.answer)
    return TaskData([templated(p) for p in task.train], [templated(p) for p in task.heldout],
                    [(templated(p), target) for p, target in task.sft])
