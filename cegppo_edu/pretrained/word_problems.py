"""Chapter 5's task: one-line word problems with two small operations, for a real pretrained model.

"Ana has 23 stamps. Ana gets 15 more and then gives away 7. How many stamps does Ana have now?" → 31.

Why this task: SmolLM2-135M-Instruct answers in a few dozen tokens with a short reasoning step ("23 + 15 = 38,
38 − 7 = 31") and gets a minority of them right before RL (the chapter measures how many), so a group of G answers
usually mixes right and wrong ones and GRPO-style advantages are not all zero. Problems are drawn from a seed;
train and held-out problems are disjoint (no (a, b, c) triple, whatever the names, is in both).
"""

from __future__ import annotations

import random

from ..lm.tasks import Problem, TaskData, apply_prompt_template
from ..validation import POSITIVE_INT, Range

NAMES = ("Ana", "Tom", "Li", "Sam", "Maya", "Omar", "Zoe", "Ivan")
THINGS = ("apples", "books", "coins", "stamps", "marbles", "pencils", "shells", "cards")
LARGEST = Range(10, 999, integer=True)  # the largest starting amount


def word_problem(a: int, b: int, c: int, name: str, things: str) -> Problem:
    """``a`` things, ``b`` more, ``c`` given away: the answer is ``a + b − c`` (never negative: c ≤ a + b)."""
    question = (f"{name} has {a} {things}. {name} gets {b} more and then gives away {c}. "
                f"How many {things} does {name} have now?")
    return Problem(question, str(a + b - c))


def make_word_problem_task(n_train: int, n_heldout: int, seed: int = 0, largest: int = 40) -> TaskData:
    """Disjoint train / held-out word problems with ``a, b`` in ``5..largest`` and ``c`` in ``1..min(a + b, 20)``.

    Deterministic: the same arguments give the same problems in the same order (``random.Random(seed)``).
    """
    POSITIVE_INT.check("n_train", n_train)
    POSITIVE_INT.check("n_heldout", n_heldout)
    LARGEST.check("largest", largest)
    distinct = (largest - 4) ** 2 * 10  # at least 10 choices of c (a + b ≥ 10)
    if n_train + n_heldout > distinct // 2:
        raise ValueError(f"n_train + n_heldout = {n_train + n_heldout} is outside the allowed range: at most "
                         f"{distinct // 2} (half the distinct problems) for largest={largest}")
    rng = random.Random(seed)
    seen: set[tuple[int, int, int]] = set()
    problems: list[Problem] = []
    while len(problems) < n_train + n_heldout:
        a, b = rng.randint(5, largest), rng.randint(5, largest)
        c = rng.randint(1, min(a + b, 20))
        name, things = rng.choice(NAMES), rng.choice(THINGS)
        if (a, b, c) not in seen:
            seen.add((a, b, c))
            problems.append(word_problem(a, b, c, name, things))
    return TaskData(problems[:n_train], problems[n_train:])


def make_word_problem_task_from_config(config) -> TaskData:
    """Factory for the trainer's task registry (``config.task = "word_problems"``); applies the prompt template."""
    from ..lm.config import task_seed

    task = make_word_problem_task(config.n_train, config.n_heldout, seed=task_seed(config))

    def templated(p: Problem) -> Problem:
        return Problem(apply_prompt_template(p.question, config.prompt_template), p.answer)
    return TaskData([templated(p) for p in task.train], [templated(p) for p in task.heldout])
