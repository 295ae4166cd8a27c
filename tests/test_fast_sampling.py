"""The opt-in sampler ``hf-shared`` (``rollout.SharedPrefillSampler``, the SmolLM2 preset's) against the default
``HFSampler`` on the tiny Qwen2: the same distribution, the same log-probs to float rounding, the same greedy
tokens. It draws other responses for a seed than ``generate`` does, which is why it is not the default (chapter
4's committed runs were sampled by ``HFSampler``).

Tolerances: log-probs within 1e-4 of the trainer's own scoring (fp32; what ``HFSampler`` is held to); the empirical
distribution of 4,000 first tokens against the model's softmax by Pearson's χ², below its mean plus five standard
deviations (a sampler at the wrong temperature fails it by far).
"""

from __future__ import annotations

import pytest
import torch

from cegppo_edu.lm.batching import collate, logp_entropy_influence
from cegppo_edu.lm.config import TrainConfig, resolve
from cegppo_edu.lm.models import build_tiny_model_and_tokenizer
from cegppo_edu.lm.rollout import HFSampler, SharedPrefillSampler
from cegppo_edu.lm.tasks import encode_chat_prompt


def sharpened(seed: int, scale: float = 3.0):
    """The tiny model with its weights scaled up, so that its distributions are far from uniform (a wrong position
    or temperature then shows in the log-probs), and with EOS made likely enough that rows finish early."""
    model, tok = build_tiny_model_and_tokenizer(seed=seed)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    return model.eval(), tok


def prompts_of(tok):
    # different lengths (left padding) and a prompt that repeats (its rows share one prefill)
    return [encode_chat_prompt(tok, "1+2="), encode_chat_prompt(tok, "10+200="), encode_chat_prompt(tok, "7+7=")]


def test_the_registry_names_the_opt_in_sampler():
    model, tok = build_tiny_model_and_tokenizer(seed=0)
    sampler = resolve("sampler", "hf-shared")(TrainConfig(sampler="hf-shared"), model, tok)
    assert isinstance(sampler, SharedPrefillSampler)
    assert type(resolve("sampler", TrainConfig().sampler)(TrainConfig(), model, tok)) is HFSampler  # default kept


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.7, 1.0), (1.0, 0.8)])
def test_log_probs_match_the_trainers_scoring(temperature, top_p):
    """The returned log-probs are log π of the drawn tokens under the sampling distribution, at every position of
    rows that finish at different steps (the batch is compacted on the way), for prompts of different lengths."""
    model, tok = sharpened(seed=4)
    sampler = SharedPrefillSampler(model, tok)
    first = sampler.generate(prompts_of(tok), n=6, max_new_tokens=12, seed=0).response_ids
    counts = torch.bincount(torch.tensor(sum(first, [])))
    sampler.eos_id = int(counts.argsort()[-2])  # a frequent (not the most) token as EOS: rows finish at many steps
    out = sampler.generate(prompts_of(tok), n=6, max_new_tokens=12, temperature=temperature, top_p=top_p, seed=0)
    lengths = [len(r) for r in out.response_ids]
    assert len(set(lengths)) > 2 and any(not t for t in out.truncated) and any(out.truncated)
    assert all(sampler.eos_id not in r[:-1] for r in out.response_ids)  # cut after the first EOS
    batch = collate(out.prompt_ids, out.response_ids, tok.pad_token_id)
    with torch.no_grad():
        logp, _, _ = logp_entropy_influence(model, batch, temperature=temperature)
    for i, lp in enumerate(out.response_logp):
        if top_p == 1.0:
            torch.testing.assert_close(torch.tensor(lp), logp[i, :len(lp)], rtol=0, atol=1e-4)
        else:  # the nucleus renormalises: log π_top-p >= log π, and equal to log π + log(1 / nucleus mass)
            assert all(a >= b - 1e-4 for a, b in zip(lp, logp[i, :len(lp)].tolist()))


def test_greedy_gives_generates_tokens_and_the_seed_is_reproducible():
    model, tok = sharpened(seed=5)
    prompts = prompts_of(tok)
    ours = SharedPrefillSampler(model, tok).generate(prompts, n=1, max_new_tokens=10, temperature=0.0)
    theirs = HFSampler(model, tok).generate(prompts, n=1, max_new_tokens=10, temperature=0.0)
    assert ours.response_ids == theirs.response_ids
    torch.testing.assert_close(torch.tensor(sum(ours.response_logp, [])), torch.tensor(sum(theirs.response_logp, [])),
                               rtol=0, atol=1e-4)
    a, b, c = (SharedPrefillSampler(model, tok).generate(prompts, n=3, max_new_tokens=6, seed=s) for s in (1, 1, 2))
    assert a.response_ids == b.response_ids != c.response_ids
    assert a.prompt_ids == [prompts[0]] * 3 + [prompts[1]] * 3 + [prompts[2]] * 3  # prompt-major, like HFSampler


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_first_tokens_follow_the_models_distribution(temperature):
    """4,000 first tokens of one prompt: their frequencies against softmax(logits / T) of the plain forward pass."""
    model, tok = sharpened(seed=6, scale=2.0)
    prompt = encode_chat_prompt(tok, "12+34=")
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt])).logits[0, -1]
    expected = torch.softmax(logits / temperature, -1)  # (V,)
    draws = 4000
    out = SharedPrefillSampler(model, tok).generate([prompt], n=draws, max_new_tokens=1, temperature=temperature,
                                                    seed=3)
    counts = torch.bincount(torch.tensor([r[0] for r in out.response_ids]), minlength=expected.numel()).double()
    assert expected.max() < 0.9  # a distribution, not a near-certain token
    assert chi_square_passes(counts, expected.double())


def chi_square_passes(counts: torch.Tensor, expected: torch.Tensor) -> bool:
    """Pearson's χ² of ``counts`` against the probabilities ``expected``, tokens expected fewer than 5 times pooled
    into one cell, below df + 5·sqrt(2·df) (about five standard deviations above its mean df)."""
    draws = counts.sum()
    big = expected * draws >= 5
    observed = torch.cat([counts[big], counts[~big].sum()[None]])
    mean = torch.cat([expected[big], expected[~big].sum()[None]]) * draws
    observed, mean = observed[mean > 0], mean[mean > 0]
    chi2, df = ((observed - mean) ** 2 / mean).sum().item(), len(mean) - 1
    return df >= 5 and chi2 < df + 5 * (2 * df) ** 0.5
