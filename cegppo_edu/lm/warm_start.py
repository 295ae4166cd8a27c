"""Supervised warm start: a short SFT so that RL starts from an imperfect policy with real entropy.

RL from a random tiny model gets no reward signal (every group is all-wrong, all advantages 0); a policy
that is right 30-70% of the time gives groups with mixed rewards and tokens of every probability. The loss is
the token-mean negative log-likelihood of the target response (answer + EOS), computed with the same batch
layout and the same ``batching.logp_entropy_influence`` as the RL trainer.
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

import torch

from ..validation import NON_NEGATIVE_INT
from .batching import collate, logp_entropy_influence
from .tasks import Problem, encode_chat_prompt


def encode_sft_examples(tokenizer, examples: Sequence[tuple[Problem, str]],
                        encode: Callable[[str], list[int]] | None = None) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, target ids + EOS) for each (problem, target response) pair; ``encode`` turns a user message
    into prompt ids (default: the tokenizer's chat template, ``tasks.encode_chat_prompt``)."""
    encode = encode or (lambda text: encode_chat_prompt(tokenizer, text))
    out = []
    for problem, target in examples:
        prompt = encode(problem.question)
        response = list(tokenizer(target, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]
        out.append((prompt, response))
    return out


def warm_start(model, tokenizer, examples: Sequence[tuple[Problem, str]], *, steps: int, lr: float,
               batch_size: int, seed: int, encode: Callable[[str], list[int]] | None = None,
               on_step: Callable[[dict], None] | None = None) -> list[dict]:
    """Run ``steps`` AdamW steps of SFT on random batches of ``examples``; returns per-step ``{"step", "nll"}``.

    Deterministic: batches come from ``random.Random(seed)``; model init is the caller's.
    """
    NON_NEGATIVE_INT.check("steps", steps)
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
        logp, _, _ = logp_entropy_influence(model, batch, with_entropy=False)
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


def warm_start_from_config(config, steps: int | None = None):
    """The preset's tiny model (or the saved model at ``config.model_path``, to continue an earlier warm start on
    another task), warm-started as ``config`` says (``steps`` overrides ``warm_start_steps``): exactly what
    ``Trainer`` does at step 0. Returns ``(model, tokenizer, history)``."""
    from .config import resolve, validate
    from .setup import derive_seed, make_prompt_encoder, model_and_tokenizer, seed_and_device

    config = validate(config)
    seed_and_device(config)
    model, tok = model_and_tokenizer(config, torch.device("cpu"), None)
    task = resolve("task", config.task)(config)
    history = warm_start(model, tok, task.sft, steps=config.warm_start_steps if steps is None else steps,
                         lr=config.warm_start_lr, batch_size=config.warm_start_batch_size,
                         seed=derive_seed(config.seed, "warm_start"), encode=make_prompt_encoder(config, tok))
    return model, tok, history


def build_warm_start(config, out_dir: str) -> dict:
    """Warm-start the preset's tiny model or ``config.model_path`` (``warm_start_from_config``) and save it to ``out_dir`` (model,
    tokenizer, ``warm_start.jsonl``); RL runs then start from it with ``model_path=out_dir``, which equals a run
    that warm-starts by itself. Returns ``{"path", "steps", "final_nll"}``."""
    import json
    import os

    from .models import save_model_and_tokenizer
    from .run_dir import WARM_START_FILE

    model, tok, history = warm_start_from_config(config)
    save_model_and_tokenizer(model, tok, out_dir)
    with open(os.path.join(out_dir, WARM_START_FILE), "w") as f:
        f.writelines(json.dumps(rec) + "\n" for rec in history)
    return {"path": out_dir, "steps": len(history), "final_nll": history[-1]["nll"] if history else None}
