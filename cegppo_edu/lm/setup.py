"""Setting up one run of the trainer, step by step: the pieces ``Trainer.__init__`` calls in order.

    prepare_folder → seed and torch → model and tokenizer → room for checkpoints → task and prompts
    → (fresh run: identity, config.json, warm start) → optimizer and schedule → sampler, reward, loss

Per-step randomness is derived from (seed, purpose, step) by ``derive_seed``, so a run resumed from a checkpoint
replays exactly the steps an uninterrupted run would have taken.
"""

from __future__ import annotations

import importlib
import random
from typing import Callable

import numpy as np
import torch

from . import checkpoint as ckpt
from . import run_dir
from .config import TrainConfig, resolve
from .device import require_cuda
from .models import DTYPES, build_tiny_model_and_tokenizer, load_model_and_tokenizer
from .tasks import as_problem, encode_chat_prompt

_SEED_TAGS = {"prompts": 1, "rollout": 2, "shuffle": 3, "eval": 4, "warm_start": 5}


def derive_seed(seed: int, tag: str, step: int = 0) -> int:
    """A 31-bit seed from (run seed, purpose, step): independent streams that need no saved state."""
    return int(np.random.SeedSequence([seed, _SEED_TAGS[tag], step]).generate_state(1)[0] & 0x7FFFFFFF)


def prepare_folder(out_dir: str, *, resume: bool, overwrite: bool) -> str | None:
    """Check ``out_dir`` before any work; the checkpoint to resume from, or None for a fresh run.

    A fresh run into a folder that holds a run is refused unless ``overwrite``; ``resume`` on a folder that holds
    logged steps but no complete checkpoint of that run is refused too (they cannot be continued).
    """
    run_dir.check_output_folder(out_dir)  # a file, a read-only disk, ... named at once
    identity = run_dir.read_run_identity(out_dir)
    resume_from = ckpt.latest_checkpoint(out_dir, identity.get("run_id", "")) if resume else None
    if resume and not resume_from and run_dir.holds_run(out_dir):
        raise ValueError(f"cannot resume {out_dir!r}: it holds a run ({run_dir.describe_run(out_dir)}) but no "
                         f"complete checkpoint of it; to start again, drop --resume and add --overwrite")
    if not resume_from:
        run_dir.prepare_fresh(out_dir, overwrite)
    if resume:
        ckpt.remove_incomplete(out_dir)
    return resume_from


def seed_and_device(config: TrainConfig) -> tuple[torch.device, torch.dtype | None]:
    """Seed every global RNG, set the CPU threads; the device and the autocast dtype (None: no autocast)."""
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    require_cuda(config.device)  # before any model is loaded: a CPU fallback of a GPU preset is never silent
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if config.device == "auto"
                          else config.device)
    return device, DTYPES.get(config.autocast_dtype)


def model_and_tokenizer(config: TrainConfig, device: torch.device, resume_from: str | None, model=None,
                        tokenizer=None):
    """The checkpoint's model when resuming, else the one passed in, else ``config.model_path``, else the tiny
    Qwen2 of ``models.build_tiny_model_and_tokenizer``."""
    if resume_from:
        model, tokenizer = load_model_and_tokenizer(resume_from, config.dtype, str(device),
                                                    config.attn_implementation or None)
    elif model is None and config.model_path:
        model, tokenizer = load_model_and_tokenizer(config.model_path, config.dtype, str(device),
                                                    config.attn_implementation or None)
    elif model is None:
        model, tokenizer = build_tiny_model_and_tokenizer(
            seed=config.seed, hidden_size=config.tiny_hidden_size, num_layers=config.tiny_layers,
            num_heads=config.tiny_heads, num_kv_heads=config.tiny_kv_heads,
            intermediate_size=config.tiny_intermediate_size,
            max_positions=config.tiny_max_positions)
        model = model.to(DTYPES[config.dtype])
    if tokenizer is None:
        raise ValueError("a model passed in needs its tokenizer too")
    return model.to(device), tokenizer


def make_prompt_encoder(config: TrainConfig, tokenizer) -> Callable[[str], list[int]]:
    """User message -> prompt token ids: the chat template (``tasks.encode_chat_prompt`` with ``system_prompt``),
    or ``config.prompt_encoder`` = "module:function" called as ``function(message, tokenizer)`` (e.g. R1-Distill's
    ``gpu.prompts.encode_r1_prompt``, which adds the math instruction and the ``<think>`` prefill)."""
    if not config.prompt_encoder:
        return lambda message: encode_chat_prompt(tokenizer, message, config.system_prompt)
    module_name, _, attr = config.prompt_encoder.partition(":")
    function = getattr(importlib.import_module(module_name), attr)
    return lambda message: list(function(message, tokenizer))


class Prompts:
    """Problems -> prompt token ids, encoded once per distinct question."""

    def __init__(self, config: TrainConfig, tokenizer):
        self.encode = make_prompt_encoder(config, tokenizer)
        self.max_tokens = config.max_prompt_tokens
        self._cache: dict[str, list[int]] = {}

    def ids(self, problem) -> list[int]:
        if problem.question not in self._cache:
            self._cache[problem.question] = self.encode(problem.question)
        return self._cache[problem.question]

    def fitting(self, records) -> list:
        """The problems of ``records`` whose prompt fits ``max_prompt_tokens``. Longer ones are left out (as verl's
        filter_overlong_prompts does): they would not fit the sampler's context (vLLM's max_model_len =
        max_prompt_tokens + max_new_tokens)."""
        return [p for p in (as_problem(r) for r in records) if len(self.ids(p)) <= self.max_tokens]


def enable_gradient_checkpointing(model) -> None:
    """HF's activation checkpointing, non-reentrant (the method's name changed in transformers 5.x)."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def optimizer_and_schedule(config: TrainConfig, model, device: torch.device):
    """AdamW and its linear warm-up over ``warmup_steps`` RL steps, then a constant rate.

    Fused AdamW on a GPU: the default multi-tensor ("foreach") step allocates a temporary as large as the weights
    (≈6.6 GiB of fp32 for 1.78B parameters); on a CPU torch's default is kept.
    """
    fused = {"fused": True} if device.type == "cuda" else {}
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  betas=(config.adam_b1, config.adam_b2), **fused)
    warmup = config.warmup_steps
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    return optimizer, schedule


def sampler_and_reward(config: TrainConfig, model, tokenizer, sampler=None, reward_fn=None):
    """The ones passed in, else those the config names (``config.SAMPLERS`` / ``config.REWARDS``)."""
    sampler = sampler if sampler is not None else resolve("sampler", config.sampler)(config, model, tokenizer)
    reward_fn = reward_fn if reward_fn is not None else resolve("reward", config.reward)(config)
    return sampler, reward_fn


__all__ = ["Prompts", "derive_seed", "enable_gradient_checkpointing", "make_prompt_encoder", "model_and_tokenizer",
           "optimizer_and_schedule", "prepare_folder", "sampler_and_reward", "seed_and_device"]
