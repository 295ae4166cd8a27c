"""Setting up one run of the trainer, step by step: the pieces ``Trainer.__init__`` calls in order.

    prepare_folder → seed and torch → model and tokenizer → room for checkpoints → task and prompts
    → (fresh run: identity, config.json, warm start) → optimizer and schedule → sampler, reward, loss

Per-step randomness is derived from (seed, purpose, step) by ``derive_seed``, so a run resumed from a checkpoint
replays exactly the steps an uninterrupted run would have taken.
"""

from __future__ import annotations

import importlib
import os
import random
import sys
from typing import Callable

import numpy as np
import torch

from . import checkpoint as ckpt
from . import run_dir
from .config import TrainConfig, resolve
from .device import require_cuda
from .models import DTYPES, build_tiny_model_and_tokenizer, load_model_and_tokenizer
from .tasks import as_problem, encode_chat_prompt
from ..steering import check_target
from ..validation import check_fits_in_memory

_SEED_TAGS = {"prompts": 1, "rollout": 2, "shuffle": 3, "eval": 4, "warm_start": 5}


def derive_seed(seed: int, tag: str, step: int = 0) -> int:
    """A 31-bit seed from (run seed, purpose, step): independent streams that need no saved state."""
    return int(np.random.SeedSequence([seed, _SEED_TAGS[tag], step]).generate_state(1)[0] & 0x7FFFFFFF)


def prepare_folder(out_dir: str, *, resume: bool, overwrite: bool) -> str | None:
    """Check ``out_dir`` before any work; the checkpoint to resume from, or None for a fresh run.

    A fresh run into a folder that holds a run is refused unless ``overwrite``. ``resume`` continues from the
    newest checkpoint of the run that verifies (a damaged newer one is skipped and named); a folder whose
    ``run.json`` was lost resumes under its checkpoints' run id; a folder stopped during its warm start (no
    step logged, no checkpoint) starts afresh; a folder with logged steps but no usable checkpoint is refused,
    without advice that would delete a checkpoint.
    """
    run_dir.check_output_folder(out_dir)  # a file, a read-only disk, a symbolic link, ... named at once
    identity = run_dir.read_run_identity(out_dir)
    run_id = identity.get("run_id", "")
    if resume and not identity:
        run_id = run_dir.adopt_run_identity(out_dir, _checkpoint_run_ids(out_dir)) or ""
    resume_from = ckpt.latest_good_checkpoint(out_dir, run_id) if resume else None
    if resume and not resume_from and run_dir.holds_logged_work(out_dir):
        raise ValueError(_cannot_resume(out_dir, run_id))
    if not resume_from:
        stub = resume and run_dir.holds_run(out_dir) and not run_dir.holds_logged_work(out_dir)
        if stub:
            print(f"{out_dir} holds a run stopped before its first step (during its warm start): starting it afresh",
                  file=sys.stderr, flush=True)
        run_dir.prepare_fresh(out_dir, overwrite or stub)
    if resume:
        ckpt.remove_incomplete(out_dir)
    return resume_from


def _checkpoint_run_ids(out_dir: str) -> list[str]:
    return [ckpt.checkpoint_run_id(p) for p in ckpt.complete_checkpoints(out_dir)]


def resumable_run_id(out_dir: str) -> str:
    """The run id a resume of ``out_dir`` continues: ``run.json``'s, or where that file was lost the one run id
    all its complete checkpoints carry ("" when neither exists)."""
    identity = run_dir.read_run_identity(out_dir)
    if identity:
        return identity.get("run_id", "")
    ids = set(_checkpoint_run_ids(out_dir))
    return ids.pop() if len(ids) == 1 else ""


def check_before_work(config: TrainConfig, model, device: torch.device) -> None:
    """The bounds that need the model, checked before the warm start's minutes of work: an entropy target at most
    log V, and a rollout batch whose per-token scores fit this machine's memory."""
    vocab = model.get_output_embeddings().weight.shape[0]
    for name in ("entropy_target", "entropy_target_final"):
        if getattr(config, name) is not None:
            check_target(name, getattr(config, name), vocab)
    sequences = config.prompts_per_step * config.group_size
    chunk = min(config.sampler_batch_sequences or sequences, sequences)
    # HF generate keeps one (sequences, V) fp32 score row per new token; vLLM keeps none (it runs on its own budget)
    score_bytes = chunk * config.max_new_tokens * vocab * 4 if config.sampler == "hf" else 0
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None
    check_fits_in_memory("prompts_per_step", config.prompts_per_step, score_bytes,
                         f"the sampler's scores of {chunk} sequences × max_new_tokens={config.max_new_tokens} (set "
                         f"sampler_batch_sequences to generate in smaller calls)", available=free)


def _cannot_resume(out_dir: str, run_id: str) -> str:
    text = f"cannot resume {out_dir!r}: it holds a run ({run_dir.describe_run(out_dir)}) but no usable checkpoint of it"
    complete = ckpt.complete_checkpoints(out_dir)
    if complete:  # there are checkpoints: never advise what would delete them
        return (text + f"; its complete checkpoints ({', '.join(os.path.basename(p) for p in complete)}) are damaged "
                f"(named above) or belong to another run (run.json's id is {run_id or 'missing'}). Copy them away "
                f"before any --overwrite, or give a new --out")
    return text + "; to start again, drop --resume and add --overwrite (nothing resumable is lost)"


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


# A prompt longer than this many characters per allowed token is skipped without being tokenised: no tokenizer
# packs more into a token, and tokenising a 50 MB line of a data file took gigabytes.
MAX_CHARS_PER_TOKEN = 64


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
        return [p for p in (as_problem(r) for r in records)
                if len(p.question) <= MAX_CHARS_PER_TOKEN * self.max_tokens and len(self.ids(p)) <= self.max_tokens]


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
