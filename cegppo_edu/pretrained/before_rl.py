"""A real model's answers before RL, token by token: the probability π of each sampled token and the entropy H of
the distribution it was drawn from (chapter 5, §1).

The paper's mechanism lives in the low-probability tail: tokens sampled where π is small are the ones whose ratio
r = π_θ/π_old moves most in an update and so the ones PPO's clip cuts. ``sample_and_score`` shows where such tokens
sit in real answers; ``tail_shares`` counts them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..lm.batching import collate, logp_entropy_influence
from ..lm.rollout import HFSampler
from ..lm.tasks import Problem, encode_chat_prompt


@dataclass(frozen=True)
class ScoredAnswer:
    question: str
    answer: str  # the gold answer
    text: str  # the sampled response, decoded
    pieces: list[str]  # each response token as text
    prob: np.ndarray  # (R,) π of each sampled token under the model that sampled it
    entropy: np.ndarray  # (R,) entropy (nats) of the distribution each token was drawn from
    reward: float


def sample_and_score(model, tokenizer, problems: list[Problem], reward, samples: int = 2, max_new_tokens: int = 64,
                     seed: int = 0) -> list[ScoredAnswer]:
    """``samples`` answers per problem at T = 1, graded by ``reward`` (a RewardFn), each token scored."""
    prompts = [encode_chat_prompt(tokenizer, p.question) for p in problems]
    rollout = HFSampler(model, tokenizer).generate(prompts, n=samples, max_new_tokens=max_new_tokens, seed=seed)
    golds = [p for p in problems for _ in range(samples)]
    rewards = reward(rollout.texts, [p.answer for p in golds])
    batch = collate(rollout.prompt_ids, rollout.response_ids, tokenizer.pad_token_id)
    with torch.no_grad():
        logp, entropy, _ = logp_entropy_influence(model, batch)  # (B, R) each
    out = []
    for i, ids in enumerate(rollout.response_ids):
        n = len(ids)
        out.append(ScoredAnswer(golds[i].question, golds[i].answer, rollout.texts[i],
                                [tokenizer.decode([t]) for t in ids], logp[i, :n].exp().numpy(),
                                entropy[i, :n].numpy(), float(rewards[i])))
    return out


def tail_shares(answers: list[ScoredAnswer], thresholds=(0.1, 0.5)) -> dict[float, float]:
    """Share of all sampled tokens whose π is below each threshold."""
    probs = np.concatenate([a.prob for a in answers])
    return {t: float((probs < t).mean()) for t in thresholds}
