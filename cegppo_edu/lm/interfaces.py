"""The two seams of the LM pipeline: a sampler (HF ``generate`` on a CPU, vLLM on a GPU) and a reward.

Both chapters' presets plug different implementations into the same trainer through these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from ..validation import POSITIVE_INT, TEMPERATURE, TOP_P

# Below this temperature sampling is greedy (vLLM 0.33's _SAMPLING_EPS in sampling_params.py; HF: temperature 0).
GREEDY_BELOW = 1e-5


def check_sampling(n: int, max_new_tokens: int, temperature: float, top_p: float, n_name: str = "n") -> None:
    """The sampling settings every sampler (and ``cegppo eval``) accepts: each named with its range when refused."""
    POSITIVE_INT.check(n_name, n)
    POSITIVE_INT.check("max_new_tokens", max_new_tokens)
    TEMPERATURE.check("temperature", temperature)
    TOP_P.check("top_p", top_p)
    check_samples_per_prompt(n, temperature, n_name)


def check_samples_per_prompt(n: int, temperature: float, n_name: str = "n",
                             temperature_name: str = "temperature") -> None:
    """Refuse greedy decoding with several samples per prompt, for every sampler: greedy gives ``n`` identical
    answers, and vLLM's ``SamplingParams`` raises "n must be 1 when using greedy sampling" (after the model loaded,
    on a GPU). The message names both settings."""
    if temperature < GREEDY_BELOW and n > 1:
        raise ValueError(f"{temperature_name}={temperature!r} (greedy) with {n_name}={n}: greedy decoding gives {n} "
                         f"identical answers per prompt; use {n_name}=1 or a {temperature_name} above 0")


@dataclass
class Rollout:
    """``n`` responses for each of P prompts, prompt-major (prompt 0's n responses first). Lists of length P·n."""

    prompt_ids: list[list[int]]  # the prompt's token ids, repeated for each of its responses
    response_ids: list[list[int]]  # generated ids without padding; EOS included when it was generated
    response_logp: list[list[float]]  # the sampler's own log-probs (diagnostic only: the trainer recomputes them)
    truncated: list[bool]  # True when the response hit max_new_tokens without EOS
    texts: list[str]  # decoded responses, special tokens skipped


class Sampler(Protocol):
    def generate(self, prompt_ids: Sequence[Sequence[int]], n: int, max_new_tokens: int,
                 temperature: float = 1.0, top_p: float = 1.0, seed: int | None = None) -> Rollout:
        """Sample ``n`` responses per prompt."""

    def sync_weights(self, model) -> None:
        """Make the sampler generate from ``model``'s current weights (a no-op when it shares the model)."""


class RewardFn(Protocol):
    def __call__(self, responses: Sequence[str], answers: Sequence[str]) -> list[float]:
        """One scalar reward per response, graded against its gold answer."""
