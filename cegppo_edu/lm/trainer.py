"""The LM trainer shared by chapter 4 (tiny Qwen2, CPU) and chapter 5 (R1-Distill-1.5B, one GPU).

One RL step (DESIGN.md "data flow"):

    P prompts × G samples (any interfaces.Sampler) → rewards (any interfaces.RewardFn)
    → group advantages → drop zero-variance groups → old log-probs recomputed here (no grad)
    → K mini-batch optimizer steps (× update_epochs) with any loss in losses.LOSSES,
      each as micro-batches by token budget, bf16 autocast and gradient checkpointing when configured
    → grad-norm clip (a non-finite norm skips the optimizer step, logged) → AdamW, linear warm-up
    → metrics (JSONL + callbacks) → checkpoint (atomic) every N steps and at the end.

Per-step randomness is derived from (seed, step) — which prompts, the sampler's seed, the mini-batch order —
so a run resumed from a checkpoint replays exactly the steps an uninterrupted run would have taken.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import json
import os
import random
import shlex
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from . import checkpoint as ckpt
from . import run_dir
from ..advantages import group_advantages, zero_variance_groups
from .batching import collate, pack_by_tokens, score
from .config import (
    PRESETS,
    TrainConfig,
    apply_overrides,
    from_dict,
    get_preset,
    loss_kwargs,
    resolve,
    to_dict,
    validate,
)
from ..losses import METHODS, get_loss, get_method
from .models import DTYPES, build_tiny_model_and_tokenizer, load_model_and_tokenizer
from .tasks import TaskData, accuracy_of, as_problem, encode_prompt
from ..token_groups import CLASSES, group_stats, merge_group_stats

METRICS_FILE = run_dir.METRICS_FILE
WARM_START_FILE = run_dir.WARM_START_FILE
TIMING_PREFIX = "time/"  # keys that differ between identical runs; everything else is deterministic
_SEED_TAGS = {"prompts": 1, "rollout": 2, "shuffle": 3, "eval": 4, "warm_start": 5}


def derive_seed(seed: int, tag: str, step: int = 0) -> int:
    """A 31-bit seed from (run seed, purpose, step): independent streams that need no saved state."""
    return int(np.random.SeedSequence([seed, _SEED_TAGS[tag], step]).generate_state(1)[0] & 0x7FFFFFFF)


def make_prompt_encoder(config: TrainConfig, tokenizer) -> Callable[[str], list[int]]:
    """User message -> prompt token ids: the chat template (``tasks.encode_prompt`` with ``system_prompt``), or
    ``config.prompt_encoder`` = "module:function" called as ``function(message, tokenizer)`` (e.g. R1-Distill's
    ``prompts.encode_prompt``, which adds the math instruction and the ``<think>`` prefill)."""
    if not config.prompt_encoder:
        return lambda message: encode_prompt(tokenizer, message, config.system_prompt)
    module_name, _, attr = config.prompt_encoder.partition(":")
    function = getattr(importlib.import_module(module_name), attr)
    return lambda message: list(function(message, tokenizer))


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class _Response:
    prompt: list[int]
    response: list[int]
    adv: float
    correct: bool


class Trainer:
    """Holds the model, optimizer, sampler, reward and task of one run; ``train()`` runs it to ``config.steps``.

    Anything can be passed in ready-made (``model``/``tokenizer``, ``task``, ``sampler``, ``reward_fn``);
    otherwise it is built from the config through the registries in ``config``. ``callbacks`` get each
    step's metrics dict (a live figure in a notebook, for instance); the trainer itself has no UI but tqdm.

    ``out_dir`` holds one run (``run_dir``): a fresh run into a folder that holds one is refused unless
    ``overwrite``; ``resume`` continues the run from its newest complete checkpoint (a folder with no run starts
    fresh). ``how`` is recorded in ``run.json`` (e.g. the command line).
    """

    def __init__(self, config: TrainConfig, out_dir: str, model=None, tokenizer=None, task: TaskData | None = None,
                 sampler=None, reward_fn=None, callbacks: Sequence[Callable[[dict], None]] = (),
                 resume: bool = False, progress: bool = True, overwrite: bool = False, how: dict | None = None):
        self.config = validate(config)
        self.out_dir = out_dir
        self.callbacks = list(callbacks)
        self.progress = progress
        self.interrupted = False  # set by train() when Ctrl-C stopped it after a checkpoint
        run_dir.check_output_folder(out_dir)  # before any work: a file, a read-only disk, ... named at once
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        self.device = pick_device(config.device)
        self.autocast = DTYPES.get(config.autocast_dtype)
        self._seed_globals(config.seed)

        identity = run_dir.read_run_identity(out_dir)
        resume_from = ckpt.latest_checkpoint(out_dir, identity.get("run_id", "")) if resume else None
        if resume and not resume_from and run_dir.holds_run(out_dir):
            raise ValueError(f"cannot resume {out_dir!r}: it holds a run ({run_dir.describe_run(out_dir)}) but no "
                             f"complete checkpoint of it; to start again, drop --resume and add --overwrite")
        if not resume_from:
            run_dir.prepare_fresh(out_dir, overwrite)
        if resume:
            ckpt.remove_incomplete(out_dir)
        if resume_from:
            model, tokenizer = load_model_and_tokenizer(resume_from, config.dtype, str(self.device),
                                                        config.attn_implementation or None)
        elif model is None:
            model, tokenizer = self._build_model()
        if tokenizer is None:
            raise ValueError("a model passed in needs its tokenizer too")
        self.model, self.tokenizer = model.to(self.device), tokenizer
        self.checkpoint_bytes = run_dir.checkpoint_bytes(self.model)
        run_dir.check_free_space(out_dir, self.checkpoint_bytes)  # before the warm start's minute of work
        self.task = task if task is not None else resolve("task", config.task)(config)
        self._prompt_cache: dict[str, list[int]] = {}
        self._encode = make_prompt_encoder(config, self.tokenizer)
        # Prompts longer than max_prompt_tokens are left out (as verl's filter_overlong_prompts does): they
        # would not fit the sampler's context (vLLM's max_model_len = max_prompt_tokens + max_new_tokens).
        self.train_problems = self._fitting([as_problem(p) for p in self.task.train])
        self.heldout_problems = self._fitting([as_problem(p) for p in self.task.heldout])
        if not self.train_problems:
            raise ValueError(f"the task has no training problem of at most max_prompt_tokens="
                             f"{config.max_prompt_tokens} prompt tokens")

        self.step = 0
        self.metrics_path = os.path.join(out_dir, METRICS_FILE)
        if resume_from:
            self.run_id = ckpt.checkpoint_run_id(resume_from)
        else:
            self.run_id = run_dir.new_run_identity(out_dir, **(how or {}))
            self._write_config()
            self._truncate_metrics(0)
            if config.warm_start_steps:
                self._warm_start()
        if config.gradient_checkpointing:
            if hasattr(self.model, "activation_checkpointing_enable"):  # the name since transformers 5.x
                self.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.model.train()
        # Fused AdamW on a GPU: the default multi-tensor ("foreach") step allocates a temporary as large as the
        # weights (≈6.6 GiB of fp32 for 1.78B parameters); on a CPU torch's default is kept.
        fused = {"fused": True} if self.device.type == "cuda" else {}
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                           betas=(config.adam_b1, config.adam_b2), **fused)
        warmup = config.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)  # linear warm-up, constant
        self.sampler = sampler if sampler is not None else resolve("sampler", config.sampler)(
            config, self.model, self.tokenizer)
        self.reward_fn = reward_fn if reward_fn is not None else resolve("reward", config.reward)(config)
        self.loss_fn = get_loss(config.method)
        self.loss_kwargs = loss_kwargs(config)
        if resume_from:
            self._restore(resume_from)
        if resume_from or config.warm_start_steps:
            # A sampler holding its own copy of the weights (vLLM) was built from model_path: give it ours.
            self.sampler.sync_weights(self.model)
        self.resumed_from = resume_from

    # ---------------------------------------------------------------- set-up
    @staticmethod
    def _seed_globals(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _build_model(self):
        c = self.config
        if c.model_path:
            return load_model_and_tokenizer(c.model_path, c.dtype, str(self.device), c.attn_implementation or None)
        model, tok = build_tiny_model_and_tokenizer(
            seed=c.seed, hidden_size=c.tiny_hidden_size, num_layers=c.tiny_layers, num_heads=c.tiny_heads,
            num_kv_heads=c.tiny_kv_heads, intermediate_size=c.tiny_intermediate_size)
        return model.to(DTYPES[c.dtype]), tok

    def _warm_start(self) -> None:
        from .warm_start import warm_start

        if not self.task.sft:
            raise ValueError(f"warm_start_steps={self.config.warm_start_steps} but task {self.config.task!r} "
                             f"provides no supervised examples")
        c = self.config
        with open(os.path.join(self.out_dir, WARM_START_FILE), "w") as f:
            warm_start(self.model, self.tokenizer, self.task.sft, c.warm_start_steps, c.warm_start_lr,
                       c.warm_start_batch_size, derive_seed(c.seed, "warm_start"), self._encode,
                       on_step=lambda rec: f.write(json.dumps(rec) + "\n"))

    def _restore(self, path: str) -> None:
        state = ckpt.load_state(path)
        saved = from_dict(state["config"])
        differing = [k for k, v in to_dict(saved).items() if k != "steps" and to_dict(self.config)[k] != v]
        if differing:
            raise ValueError(f"cannot resume {path}: config fields {differing} differ from the checkpoint's")
        if self.config.steps < saved.steps:
            raise ValueError(f"steps={self.config.steps} is below the run's steps={saved.steps}: a resume may "
                             f"extend a run, never shorten its record (stop early with Ctrl-C instead)")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if hasattr(self.sampler, "load_state_dict") and state.get("sampler") is not None:
            self.sampler.load_state_dict(state["sampler"])
        self.step = state["step"]
        self._truncate_metrics(state["metrics_offset"], path)
        ckpt.set_rng_states(state["rng"])
        if self.config.steps != saved.steps:
            self._write_config()  # the run was extended: its record says so

    def _write_config(self) -> None:
        """``OUT/config.json``: the run's full config (``cegppo report`` labels runs with it)."""
        run_dir.write_json_atomic(os.path.join(self.out_dir, run_dir.CONFIG_FILE), to_dict(self.config))

    def _truncate_metrics(self, offset: int, checkpoint: str | None = None) -> None:
        """Cut the metrics log back to ``offset`` bytes (the steps a checkpoint covers); never extend it."""
        size = os.path.getsize(self.metrics_path) if os.path.exists(self.metrics_path) else 0
        if size < offset:
            raise ValueError(f"{self.metrics_path} has {size} bytes but checkpoint {checkpoint} was written after "
                             f"{offset}: the log was replaced or cut, so resuming would not continue this run")
        with open(self.metrics_path, "a+b") as f:
            f.truncate(offset)

    # ---------------------------------------------------------------- data
    def _prompt_ids(self, problem) -> list[int]:
        if problem.prompt not in self._prompt_cache:
            self._prompt_cache[problem.prompt] = self._encode(problem.prompt)
        return self._prompt_cache[problem.prompt]

    def _fitting(self, problems: list) -> list:
        return [p for p in problems if len(self._prompt_ids(p)) <= self.config.max_prompt_tokens]

    def step_problem_indices(self, step: int) -> list[int]:
        """The P training problems of RL step ``step`` (1-based): consecutive slices of per-epoch permutations."""
        n, per_step = len(self.train_problems), self.config.prompts_per_step
        indices, position = [], (step - 1) * per_step
        while len(indices) < per_step:
            epoch, offset = divmod(position, n)
            perm = np.random.default_rng(derive_seed(self.config.seed, "prompts", epoch)).permutation(n)
            take = min(per_step - len(indices), n - offset)
            indices += perm[offset:offset + take].tolist()
            position += take
        return indices

    # ---------------------------------------------------------------- one step
    def train_step(self) -> dict:
        c = self.config
        step = self.step + 1
        metrics: dict = {"step": step}
        t0 = time.perf_counter()
        problems = [self.train_problems[i] for i in self.step_problem_indices(step)]
        rollout = self.sampler.generate([self._prompt_ids(p) for p in problems], c.group_size, c.max_new_tokens,
                                        c.temperature, c.top_p, seed=derive_seed(c.seed, "rollout", step))
        metrics[TIMING_PREFIX + "generate"] = time.perf_counter() - t0

        answers = [p.answer for p in problems for _ in range(c.group_size)]  # prompt-major, like the rollout
        t_reward = time.perf_counter()
        rewards = torch.tensor(self.reward_fn(rollout.texts, answers), dtype=torch.float32)
        metrics[TIMING_PREFIX + "reward"] = time.perf_counter() - t_reward
        adv = group_advantages(rewards, c.group_size, c.scale_adv_by_std)
        keep = ~zero_variance_groups(rewards, c.group_size) if c.drop_zero_variance else torch.ones_like(
            rewards, dtype=torch.bool)
        if c.max_kept_prompts:
            kept_groups = keep.view(-1, c.group_size)[:, 0].cumsum(0) <= c.max_kept_prompts  # (P,)
            keep &= kept_groups.repeat_interleave(c.group_size)
        lengths = [len(r) for r in rollout.response_ids]
        metrics.update({
            "reward/mean": rewards.mean().item(),
            "accuracy/train": accuracy_of(rewards.tolist(), c.reward_correct),
            "response/length_mean": float(np.mean(lengths)),
            "response/length_max": float(max(lengths)),
            "response/truncated_frac": float(np.mean(rollout.truncated)),
            "groups/kept_frac": keep.view(-1, c.group_size)[:, 0].float().mean().item(),
            "responses/kept": int(keep.sum().item()),
        })
        rows = [_Response(rollout.prompt_ids[i], rollout.response_ids[i], adv[i].item(),
                          rewards[i].item() == c.reward_correct) for i in range(len(lengths)) if keep[i]]
        if rows:
            metrics.update(self._update_phase(rows, step))
        else:  # every group had equal rewards: nothing to learn from this batch (logged, not an error)
            metrics.update(self._entropy_only(rollout))
        with warnings.catch_warnings():  # a step with no kept group has no optimizer step; the schedule still moves
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
            self.scheduler.step()
        metrics["lr"] = self.optimizer.param_groups[0]["lr"]
        # The optimizer phase is over: free the gradients (and on a GPU the allocator's cache) so that a
        # colocated sampler (vLLM) wakes up into memory the trainer no longer holds (7 GB of fp32 grads at 1.5B).
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        self.sampler.sync_weights(self.model)
        if c.eval_every and (step % c.eval_every == 0 or step == c.steps):
            metrics.update(self.evaluate(step))
        metrics[TIMING_PREFIX + "step"] = time.perf_counter() - t0
        self.step = step
        return metrics

    def _entropy_only(self, rollout) -> dict:
        rows = [_Response(p, r, 0.0, False) for p, r in zip(rollout.prompt_ids, rollout.response_ids)]
        entropy, _, _ = self._old_logps(rows)
        return {"entropy/mean": entropy, "update/optimizer_steps": 0, "update/skipped_steps": 0}

    def _micro_batches(self, rows: list[_Response], order: Sequence[int]):
        groups = pack_by_tokens([len(r.prompt) for r in rows], [len(r.response) for r in rows], order,
                                self.config.micro_batch_tokens)
        for group in groups:
            batch = collate([rows[i].prompt for i in group], [rows[i].response for i in group],
                            self.tokenizer.pad_token_id, self.device)
            yield group, batch

    @torch.no_grad()
    def _old_logps(self, rows: list[_Response]):
        """π_old log-probs of every kept token (recomputed, PAPER.md §6) and the batch's token-mean entropy."""
        was_training = self.model.training
        self.model.eval()
        old, ent_sum, n_tok = [None] * len(rows), 0.0, 0.0
        for group, batch in self._micro_batches(rows, range(len(rows))):
            logp, entropy, _ = score(self.model, batch, self.config.logp_chunk, True, False, self.autocast,
                                     self.config.temperature)
            for j, i in enumerate(group):
                old[i] = logp[j, :len(rows[i].response)].float()
            ent_sum += (entropy * batch.mask).sum().item()
            n_tok += batch.mask.sum().item()
        self.model.train(was_training)
        return ent_sum / n_tok, old, n_tok

    def _update_phase(self, rows: list[_Response], step: int) -> dict:
        c = self.config
        t0 = time.perf_counter()
        entropy_before, old_logps, n_tokens = self._old_logps(rows)
        t1 = time.perf_counter()
        shuffle = torch.Generator().manual_seed(derive_seed(c.seed, "shuffle", step))
        stats_list, losses, norms, skipped, n_opt = [], [], [], 0, 0
        for _ in range(c.update_epochs):
            order = torch.randperm(len(rows), generator=shuffle)
            for mini in torch.tensor_split(order, min(c.mini_batches, len(rows))):
                loss, norm, stats = self._optimizer_step(rows, old_logps, mini.tolist())
                losses.append(loss)
                norms.append(norm)
                stats_list += stats
                n_opt += 1
                skipped += not np.isfinite(norm)
        t2 = time.perf_counter()
        out = {"entropy/mean": entropy_before, "loss": float(np.mean(losses)),
               "grad_norm/mean": float(np.mean([n for n in norms if np.isfinite(n)] or [0.0])),
               "grad_norm/max": float(max([n for n in norms if np.isfinite(n)] or [0.0])),
               "update/optimizer_steps": n_opt, "update/skipped_steps": skipped, "update/tokens": n_tokens,
               TIMING_PREFIX + "old_logp": t1 - t0, TIMING_PREFIX + "update": t2 - t1}
        if stats_list:
            out.update(merge_group_stats(stats_list))
            out["entropy/predicted_push"] = sum(out.get(f"{k}/entropy_push", 0.0) for k in CLASSES) / max(
                out["tokens"], 1.0)
        if c.measure_entropy_change:
            t3 = time.perf_counter()
            entropy_after, _, _ = self._old_logps(rows)
            out["entropy/after_update"] = entropy_after
            out["entropy/measured_change"] = entropy_after - entropy_before
            out[TIMING_PREFIX + "entropy_after"] = time.perf_counter() - t3
        return out

    def _optimizer_step(self, rows, old_logps, mini: list[int]):
        """One mini-batch: micro-batch forward/backward with exact token-mean weights, clip, AdamW step."""
        c = self.config
        total_tokens = sum(len(rows[i].response) for i in mini)
        total_seqs = len(mini)
        total_correct = sum(len(rows[i].response) for i in mini if rows[i].correct)
        self.optimizer.zero_grad(set_to_none=True)
        loss_value, stats = 0.0, []
        for group, batch in self._micro_batches(rows, mini):
            logp, _, influence = score(self.model, batch, c.logp_chunk, False, c.token_group_stats, self.autocast,
                                       c.temperature)
            old = torch.zeros_like(logp)
            for j, i in enumerate(group):
                old[j, :len(rows[i].response)] = old_logps[i]
            adv = torch.tensor([rows[i].adv for i in group], dtype=logp.dtype, device=logp.device)  # (b,)
            # The loss is a mean over the micro-batch; re-weight so the sum over micro-batches is the mini-batch mean.
            n_mb_tokens = batch.mask.sum().item()
            share = n_mb_tokens / total_tokens if c.loss_agg == "token-mean" and c.method != "gspo" \
                else len(group) / total_seqs
            loss = self.loss_fn(logp, old, adv, batch.mask, **self.loss_kwargs) * share
            if c.nll_coef and total_correct:
                correct = torch.tensor([rows[i].correct for i in group], dtype=logp.dtype, device=logp.device)
                loss = loss - c.nll_coef * (logp * batch.mask * correct[:, None]).sum() / total_correct
            loss.backward()
            loss_value += loss.item()
            if c.token_group_stats:
                stats.append(self._group_stats(logp.detach(), old, adv, batch.mask, influence))
        params = [p for p in self.model.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, c.max_grad_norm).item()
        if np.isfinite(norm):
            self.optimizer.step()
        else:  # never apply a NaN/inf gradient; drop it and carry on (counted in update/skipped_steps)
            self.optimizer.zero_grad(set_to_none=True)
        return loss_value, norm, stats

    def _group_stats(self, logp, old, adv, mask, influence) -> dict:
        c = self.config
        hyper = {k: v for k, v in self.loss_kwargs.items() if k != "agg"}
        if get_method(c.method).level == "token":
            return group_stats(logp, old, adv, mask, c.method, c.hp_threshold, influence, **hyper)
        # A sequence-level method (GSPO) has no per-token weight: counts and PPO-style clip fractions of token
        # ratios only.
        stats = group_stats(logp, old, adv, mask, "ppo_clip", c.hp_threshold, None, **hyper)
        return {k: v for k, v in stats.items() if not k.endswith("/weight_sum")}

    # ---------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, step: int) -> dict:
        """Held-out accuracy (avg@k over ``eval_samples``), with a fixed seed so steps are comparable."""
        c = self.config
        t0 = time.perf_counter()
        problems = self.heldout_problems[:c.eval_problems or None]
        if not problems:
            return {}
        rollout = self.sampler.generate([self._prompt_ids(p) for p in problems], c.eval_samples, c.max_new_tokens,
                                        c.eval_temperature, c.eval_top_p, seed=derive_seed(c.seed, "eval"))
        answers = [p.answer for p in problems for _ in range(c.eval_samples)]
        rewards = self.reward_fn(rollout.texts, answers)
        return {"eval/accuracy": accuracy_of(rewards, c.reward_correct),
                "eval/length_mean": float(np.mean([len(r) for r in rollout.response_ids])),
                TIMING_PREFIX + "eval": time.perf_counter() - t0}

    # ---------------------------------------------------------------- loop
    def _write_metrics(self, metrics: dict) -> None:
        line = json.dumps(metrics) + "\n"
        try:
            with open(self.metrics_path, "a") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise run_dir.NoSpaceError(self.metrics_path, len(line.encode())) from err
            raise

    def save(self) -> str:
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "config": to_dict(self.config), "metrics_offset": os.path.getsize(self.metrics_path),
                 "sampler": self.sampler.state_dict() if hasattr(self.sampler, "state_dict") else None}
        path = ckpt.save_checkpoint(self.out_dir, self.step, self.model, self.tokenizer, state,
                                    self.config.keep_checkpoints, self.run_id, self.checkpoint_bytes)
        self.saved_step = self.step
        return path

    def close(self) -> None:
        """Release what the run holds outside this process (the math-verify reward's worker pool)."""
        if hasattr(self.reward_fn, "close"):
            self.reward_fn.close()

    def train(self, stop_after: int | None = None) -> list[dict]:
        """Run until ``config.steps`` (or ``stop_after`` more steps); returns the metrics of the steps run."""
        from tqdm.auto import tqdm

        c = self.config
        history = []
        if self.step == 0 and c.eval_every:
            initial = {"step": 0, **self.evaluate(0)}
            self._write_metrics(initial)
            history.append(initial)
            for callback in self.callbacks:
                callback(initial)
        last = c.steps if stop_after is None else min(c.steps, self.step + stop_after)
        bar = tqdm(total=c.steps, initial=self.step, desc=f"{c.method}", disable=not self.progress,
                   dynamic_ncols=True)
        self.saved_step = None
        try:
            with stop_on_interrupt() as interrupt:
                while self.step < last and not interrupt.requested:
                    metrics = self.train_step()
                    self._write_metrics(metrics)
                    history.append(metrics)
                    for callback in self.callbacks:
                        callback(metrics)
                    bar.update(1)
                    bar.set_postfix(reward=f"{metrics['reward/mean']:.2f}", H=f"{metrics['entropy/mean']:.3f}")
                    if (self.step == last or interrupt.requested
                            or (c.checkpoint_every and self.step % c.checkpoint_every == 0)):
                        self.save()  # every N steps, where this run stops, and after a Ctrl-C
                self.interrupted = interrupt.requested
        finally:
            bar.close()
        return history


class _Interrupt:
    requested = False


@contextlib.contextmanager
def stop_on_interrupt():
    """Turn the first Ctrl-C (SIGINT) into a request to stop after the step in flight; a second one stops at once
    (``KeyboardInterrupt``). Outside the main thread signals cannot be caught, and nothing changes."""
    flag = _Interrupt()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True
        print("\ninterrupted: finishing this step, then writing a checkpoint (Ctrl-C again to stop at once)",
              file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def read_metrics(path: str) -> list[dict]:
    """The JSONL metrics of a run directory (or file), one dict per line.

    A cut-off last line (a run killed while writing it) is skipped with a warning; any other line that is not a
    JSON object raises ``ValueError`` naming the file and the line number.
    """
    path = os.path.join(path, METRICS_FILE) if os.path.isdir(path) else path
    with open(path, "rb") as f:
        pieces = f.read().split(b"\n")
    records = []
    for number, piece in enumerate(pieces, 1):
        if not piece.strip():
            continue
        try:
            record = json.loads(piece)
            if not isinstance(record, dict):
                raise ValueError(f"a {type(record).__name__}, not an object")
        except ValueError as err:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
            if number == len(pieces):  # no newline after it: the write of this line never finished
                warnings.warn(f"{path}:{number}: the last line is cut off (the run stopped while writing it); "
                              f"skipped", stacklevel=2)
                continue
            raise ValueError(f"{path}:{number}: not a JSON line ({getattr(err, 'msg', err)}): "
                             f"{piece[:60].decode(errors='replace')!r}") from None
        records.append(record)
    return records


def strip_timings(metrics: Sequence[dict]) -> list[dict]:
    """Metrics without the wall-clock fields: what must be identical between a resumed and a straight run."""
    return [{k: v for k, v in m.items() if not k.startswith(TIMING_PREFIX)} for m in metrics]


def build_config(preset: str, method: str | None = None, steps: int | None = None,
                 overrides: Sequence[str] = (), smoke: bool = False) -> TrainConfig:
    """Preset → smoke overrides → ``--method`` / ``--steps`` → ``--set key=value`` (later wins)."""
    config = get_preset(preset, smoke=smoke)
    direct = {}
    if method is not None:
        direct["method"] = method
    if steps is not None:
        direct["steps"] = steps
    if direct:
        config = apply_overrides(config, direct)
    return apply_overrides(config, list(overrides))


# -------------------------------------------------------------------- command line
def add_cli(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train", help="RL-train a language model with GRPO, DAPO, CE-GPPO, ... (one trainer, many presets)",
        description="Train a causal LM with a PPO-clip-family loss (GRPO, DAPO, GPPO, CE-GPPO, CISPO, GSPO).\n"
                    "Writes OUT/metrics.jsonl (one JSON line per step), OUT/config.json, OUT/run.json and atomic\n"
                    "checkpoints under OUT/checkpoints/ (every checkpoint_every steps, at the end and after Ctrl-C).\n"
                    "One run per folder: a fresh run into a folder holding a run is refused (use --resume,\n"
                    "a new --out, or --overwrite). Ctrl-C finishes the step in flight, writes a checkpoint and\n"
                    "exits with 130; --resume then continues exactly.\n\n"
                    "example:\n  cegppo train --preset tiny-arith --method ce_gppo --steps 200 --out runs/ce "
                    "--set beta1=0.75\n  cegppo train --out runs/ce --resume             # continue it\n"
                    "  cegppo train --out runs/ce --resume --steps 300 # continue it further",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="presets:\n" + "\n".join(f"  {n:22s} {p.description}" for n, p in sorted(PRESETS.items())) +
               "\n\nevery field of cegppo_edu.config.TrainConfig can be set with --set key=value "
               "(see its comments for meaning, paper symbol and default source).")
    parser.add_argument("--preset", choices=sorted(PRESETS), help=f"named configuration (default {DEFAULT_PRESET})")
    parser.add_argument("--method", choices=sorted(METHODS), help="policy loss (default: the preset's)")
    parser.add_argument("--steps", type=int, help="RL steps (rollout batches) to reach; with --resume, at least "
                                                  "the run's own")
    parser.add_argument("--out", required=True, help="run directory (metrics, checkpoints): one run per folder")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its newest complete checkpoint (fresh start if the "
                             "folder holds no run); settings given here must equal the run's, --steps may grow")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete the run that --out holds and start a fresh one there")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set beta1=0.75 (repeatable)")
    parser.add_argument("--smoke", action="store_true", help="the preset's small CPU smoke configuration")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    parser.set_defaults(func=run_cli)
    return parser


DEFAULT_PRESET = "tiny-arith"


def resume_config(args, latest: str):
    """The config to resume ``latest`` with: the run's own, with ``--steps`` raised if asked. Every setting the
    command line gives (``--method``, ``--set``, ``--preset``, ``--smoke``) must equal the run's, else refused."""
    state = ckpt.load_state(latest)
    saved = from_dict(state["config"])
    asked = apply_overrides(saved, ({"method": args.method} if args.method else {}))
    asked = apply_overrides(asked, list(args.overrides))
    changed = {k: (getattr(saved, k), v) for k, v in to_dict(asked).items() if k != "steps" and getattr(saved, k) != v}
    if changed:
        what = "; ".join(f"{k}={new!r} where the run has {k}={old!r}" for k, (old, new) in changed.items())
        raise ValueError(f"cannot resume {args.out!r} with other settings: {what}. Resume without them, or start a "
                         f"new run with a new --out")
    identity = run_dir.read_run_identity(args.out)
    for key, given in (("preset", args.preset), ("smoke", args.smoke or None)):
        if given is not None and key in identity and identity[key] != given:
            raise ValueError(f"cannot resume {args.out!r} with --{key} {given}: the run was started with "
                             f"{key}={identity[key]!r}")
    if args.steps is not None:
        if args.steps < saved.steps:
            raise ValueError(f"--steps {args.steps} is below the run's steps={saved.steps} (it is at step "
                             f"{state['step']}): a resume may extend a run, never shorten its record; stop a run "
                             f"early with Ctrl-C")
        asked = apply_overrides(asked, {"steps": args.steps})
    return asked


def run_cli(args) -> int:
    latest = ckpt.latest_checkpoint(args.out, run_dir.read_run_identity(args.out).get("run_id", "")) \
        if args.resume and os.path.isdir(args.out) else None
    if latest:
        config = resume_config(args, latest)
    else:
        config = build_config(args.preset or DEFAULT_PRESET, args.method, args.steps, args.overrides, args.smoke)
    argv = getattr(args, "argv", None) or sys.argv[1:]
    how = {"preset": args.preset or DEFAULT_PRESET, "smoke": bool(args.smoke), "command": shlex.join(argv)}
    trainer = Trainer(config, args.out, resume=args.resume, progress=not args.no_progress,
                      overwrite=args.overwrite, how=how)
    if trainer.resumed_from:
        print(f"resumed from {trainer.resumed_from} at step {trainer.step}", file=sys.stderr)
    try:
        trainer.train()
    finally:
        trainer.close()
    if trainer.interrupted:
        again = [a for a in argv if a not in ("--overwrite", "--resume")]
        again = ["train"] + again if again[:1] != ["train"] else again
        print(f"stopped after step {trainer.step}; checkpoint {ckpt.latest_checkpoint(args.out, trainer.run_id)}\n"
              f"continue with: cegppo {shlex.join(again)} --resume", file=sys.stderr)
        return 130
    return 0
