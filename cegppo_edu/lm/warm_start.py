"""Supervised warm start: a short SFT so that RL starts from an imperfect policy with real entropy.

RL from a random tiny model gets no reward signal (every group is all-wrong, all advantages 0); a policy
that is right 30-70% of the time gives groups with mixed rewards and tokens of every probability. The loss is
the token-mean negative log-likelihood of the target response (answer + EOS), computed with the same batch
layout and the same ``batching.score`` as the RL trainer.
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

import torch

from .batching import collate, score
from .tasks import Problem, encode_prompt


def encode_sft_examples(tokenizer, examples: Sequence[tuple[Problem, str]],
                        encode: Callable[[str], list[int]] | None = None) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, target ids + EOS) for each (problem, target response) pair; ``encode`` turns a user message
    into prompt ids (default: the tokenizer's chat template, ``tasks.encode_prompt``)."""
    encode = encode or (lambda text: encode_prompt(tokenizer, text))
    out = []
    for problem, target in examples:
        prompt = encode(problem.prompt)
        response = list(tokenizer(target, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]
        out.append((prompt, response))
    return out


def warm_start(model, tokenizer, examples: Sequence[tuple[Problem, str]], steps: int, lr: float = 3e-3,
               batch_size: int = 64, seed: int = 0, encode: Callable[[str], list[int]] | None = None,
               on_step: Callable[[dict], None] | None = None) -> list[dict]:
    """Run ``steps`` AdamW steps of SFT on random batches of ``examples``; returns per-step ``{"step", "nll"}``.

    Deterministic: batches come from ``random.Random(seed)``; model init is the caller's.
    """
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps={steps!r} is outside the allowed range: an integer >= 0")
    if not examples:
        raise ValueError("warm start needs at least one (problem, target) example")
    encoded = encode_sft_examples(tokenizer, examples, encode)
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    rng = random.Random(seed)
    model.train()
    history = []
    for step in range(1, steps + 1):
        rows = [encoded[rng.randrange(len(encoded))] for _ in range(batch_size)]
        batch = collate([p for p, _ in rows], [r for _, r in rows], tokenizer.pad_token_id, device)
        logp, _, _ = score(model, batch, with_entropy=False)
        nll = -(logp * batch.mask).sum() / batch.mask.sum()
        optimizer.zero_grad(set_to_none=True)
        nll.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        record = {"step": step, "nll": nll.item()}
        history.append(record)
        if on_step:
            on_step(record)
    return history


def build_warm_start(config, out_dir: str) -> dict:
    """Build the preset's tiny model, warm-start it for ``config.warm_start_steps`` and save it to ``out_dir``
    (model, tokenizer, ``warm_start.jsonl``); RL runs then start from it with ``model_path=out_dir``.

    Returns ``{"path", "steps", "final_nll"}``. This is exactly what ``Trainer`` does at step 0 when
    ``warm_start_steps > 0``, so a run from ``out_dir`` equals a run that warm-starts by itself.
    """
    import json
    import os

    from .config import resolve, validate
    from .models import build_tiny_model_and_tokenizer, save_model_and_tokenizer
    from .trainer import derive_seed, make_prompt_encoder

    config = validate(config)
    if config.model_path:
        raise ValueError(f"model_path={config.model_path!r}: build_warm_start builds the tiny model; leave it empty")
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    model, tok = build_tiny_model_and_tokenizer(
        seed=config.seed, hidden_size=config.tiny_hidden_size, num_layers=config.tiny_layers,
        num_heads=config.tiny_heads, num_kv_heads=config.tiny_kv_heads,
        intermediate_size=config.tiny_intermediate_size)
    task = resolve("task", config.task)(config)
    history = warm_start(model, tok, task.sft, config.warm_start_steps, config.warm_start_lr,
                         config.warm_start_batch_size, derive_seed(config.seed, "warm_start"),
                         make_prompt_encoder(config, tok))
    save_model_and_tokenizer(model, tok, out_dir)
    with open(os.path.join(out_dir, "warm_start.jsonl"), "w") as f:
        f.writelines(json.dumps(rec) + "\n" for rec in history)
    return {"path": out_dir, "steps": len(history), "final_nll": history[-1]["nll"] if history else None}
