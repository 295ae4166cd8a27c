"""Chapter 5's task: "What is 7 + 9?" with operands 1-12, answered in a \\boxed{} by a real pretrained model.

Why so easy a task: measured on SmolLM2-135M-Instruct before RL (16 problems × 4 answers at T = 1, 48 new tokens,
graded by math-verify), one-line word problems with two operations are right 0 % of the time, with one operation
on 1-9 6 %, and these sums 30 %, with 62 % of the groups of 4 answers mixing right and wrong ones: what GRPO-style
advantages need. The model answers with a short restatement ("10 + 4 = 14.") and often rambles on; the chapter
measures its accuracy again from the committed runs' step 0.

Problems are drawn from a seed; train and held-out problems are disjoint (no (a, b) pair is in both).
"""

from __future__ import annotations

import random

from ..lm.tasks import Problem, TaskData, apply_prompt_template
from ..validation import POSITIVE_INT, Range

LARGEST = Range(2, 99, integer=True)


def make_sum_task(n_train: int, n_heldout: int, seed: int = 0, largest: int = 12) -> TaskData:
    """Disjoint train / held-out problems a + b, operands in ``1..largest``, in a seeded random order."""
    POSITIVE_INT.check("n_train", n_train)
    POSITIVE_INT.check("n_heldout", n_heldout)
    LARGEST.check("largest", largest)
    pairs = [(a, b) for a in range(1, largest + 1) for b in range(1, largest + 1)]
    if n_train + n_heldout > len(pairs):
        raise ValueError(f"n_train + n_heldout = {n_train + n_heldout} is outside the allowed range: at most "
                         f"{len(pairs)} distinct problems for operands 1..{largest}")
    random.Random(seed).shuffle(pairs)
    problems = [Problem(f"What is {a} + {b}?", str(a + b)) for a, b in pairs[:n_train + n_heldout]]
    return TaskData(problems[:n_train], problems[n_train:])


def make_sum_task_from_config(config) -> TaskData:
    """Factory for the trainer's task registry (``config.task = "sums"``); applies the prompt template."""
    from ..lm.config import task_seed

    task = make_sum_task(config.n_train, config.n_heldout, seed=task_seed(config))

    def templated(p: Problem) -> Problem:
        return Problem(apply_prompt_template(p.question, config.prompt_template), p.answer)
    return TaskData([templated(p) for p in task.train], [templated(p) for p in task.heldout])
