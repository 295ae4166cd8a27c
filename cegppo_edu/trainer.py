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
import importlib
import json
import os
import random
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from . import checkpoint as ckpt
from .advantages import group_advantages, zero_variance_groups
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
from .losses import LOSSES, TOKEN_LEVEL_DEFAULTS, get_loss
from .models import DTYPES, build_tiny_model_and_tokenizer, load_model_and_tokenizer
from .tasks import TaskData, accuracy_of, as_problem, encode_prompt
from .token_groups import CLASSES, group_stats

METRICS_FILE = "metrics.jsonl"
WARM_START_FILE = "warm_start.jsonl"
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
    """

    def __init__(self, config: TrainConfig, out_dir: str, model=None, tokenizer=None, task: TaskData | None = None,
                 sampler=None, reward_fn=None, callbacks: Sequence[Callable[[dict], None]] = (),
                 resume: bool = False, progress: bool = True):
        self.config = validate(config)
        self.out_dir = out_dir
        self.callbacks = list(callbacks)
        self.progress = progress
        os.makedirs(out_dir, exist_ok=True)
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        self.device = pick_device(config.device)
        self.autocast = DTYPES.get(config.autocast_dtype)
        self._seed_globals(config.seed)

        resume_from = ckpt.latest_checkpoint(out_dir) if resume else None
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
        if not resume_from:
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
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if hasattr(self.sampler, "load_state_dict") and state.get("sampler") is not None:
            self.sampler.load_state_dict(state["sampler"])
        self.step = state["step"]
        self._truncate_metrics(state["metrics_offset"])
        ckpt.set_rng_states(state["rng"])

    def _truncate_metrics(self, offset: int) -> None:
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
        hyper = {k: v for k, v in self.loss_kwargs.items() if k in ("eps_low", "eps_high", "beta1", "beta2",
                                                                      "dual_clip")}
        if c.method in TOKEN_LEVEL_DEFAULTS:
            return group_stats(logp, old, adv, mask, c.method, c.hp_threshold, influence, **hyper)
        # GSPO has no per-token weight: report counts and PPO-style clip fractions of token ratios only.
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
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(metrics) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def save(self) -> str:
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "config": to_dict(self.config), "metrics_offset": os.path.getsize(self.metrics_path),
                 "sampler": self.sampler.state_dict() if hasattr(self.sampler, "state_dict") else None}
        return ckpt.save_checkpoint(self.out_dir, self.step, self.model, self.tokenizer, state,
                                    self.config.keep_checkpoints)

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
        try:
            while self.step < last:
                metrics = self.train_step()
                self._write_metrics(metrics)
                history.append(metrics)
                for callback in self.callbacks:
                    callback(metrics)
                bar.update(1)
                bar.set_postfix(reward=f"{metrics['reward/mean']:.2f}", H=f"{metrics['entropy/mean']:.3f}")
                if self.step == last or (c.checkpoint_every and self.step % c.checkpoint_every == 0):
                    self.save()  # every N steps, and always where this run stops
        finally:
            bar.close()
        return history


def merge_group_stats(stats_list: list[dict]) -> dict:
    """Combine ``token_groups.group_stats`` dicts of several micro-batches into one for the whole step.

    Counts, weight sums and entropy pushes add up; fractions and mean probabilities are re-weighted by counts.
    """
    tokens = sum(s["tokens"] for s in stats_list)
    out = {"tokens": tokens}
    for side in ("low", "high"):
        out[f"clip/{side}_frac"] = sum(s[f"clip/{side}_frac"] * s["tokens"] for s in stats_list) / tokens
    for name in CLASSES:
        count = sum(s[f"{name}/count"] for s in stats_list)
        out[f"{name}/count"] = count
        out[f"{name}/frac"] = count / tokens
        for key in ("mean_prob", "clip_low_frac", "clip_high_frac"):
            out[f"{name}/{key}"] = (sum(s[f"{name}/{key}"] * s[f"{name}/count"] for s in stats_list) / count
                                    if count else 0.0)
        for key in ("weight_sum", "entropy_push"):
            if f"{name}/{key}" in stats_list[0]:
                out[f"{name}/{key}"] = sum(s[f"{name}/{key}"] for s in stats_list)
        out[f"{name}/clipped"] = out[f"{name}/count"] * (out[f"{name}/clip_low_frac"] + out[f"{name}/clip_high_frac"])
    return out


def read_metrics(path: str) -> list[dict]:
    """The JSONL metrics of a run directory (or file)."""
    path = os.path.join(path, METRICS_FILE) if os.path.isdir(path) else path
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


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
                    "Writes OUT/metrics.jsonl (one JSON line per step), OUT/config.json and atomic checkpoints\n"
                    "under OUT/checkpoints/ (every checkpoint_every steps and at the end).\n\n"
                    "example:\n  cegppo train --preset tiny-arith --method ce_gppo --steps 200 --out runs/ce "
                    "--set beta1=0.75\n  cegppo train --preset tiny-arith --method ce_gppo --steps 200 --out runs/ce "
                    "--resume",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="presets:\n" + "\n".join(f"  {n:22s} {p.description}" for n, p in sorted(PRESETS.items())) +
               "\n\nevery field of cegppo_edu.config.TrainConfig can be set with --set key=value "
               "(see its comments for meaning, paper symbol and default source).")
    parser.add_argument("--preset", default="tiny-arith", choices=sorted(PRESETS), help="named configuration")
    parser.add_argument("--method", choices=sorted(LOSSES), help="policy loss (default: the preset's)")
    parser.add_argument("--steps", type=int, help="RL steps (rollout batches) to reach")
    parser.add_argument("--out", required=True, help="run directory (metrics, checkpoints)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest complete checkpoint in --out (fresh start if none)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set beta1=0.75 (repeatable)")
    parser.add_argument("--smoke", action="store_true", help="the preset's small CPU smoke configuration")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    parser.set_defaults(func=run_cli)
    return parser


def run_cli(args) -> int:
    config = build_config(args.preset, args.method, args.steps, args.overrides, args.smoke)
    if args.resume:
        latest = ckpt.latest_checkpoint(args.out)
        if latest:  # the run's own config, with only what this command line changes on top
            saved = from_dict(ckpt.load_state(latest)["config"])
            config = apply_overrides(saved, {"steps": config.steps} if args.steps else {})
            config = apply_overrides(config, list(args.overrides))
    trainer = Trainer(config, args.out, resume=args.resume, progress=not args.no_progress)
    if trainer.resumed_from:
        print(f"resumed from {trainer.resumed_from} at step {trainer.step}", file=sys.stderr)
    with open(os.path.join(args.out, "config.json"), "w") as f:  # the run's full config, for `cegppo report`
        json.dump(to_dict(config), f, indent=1)
    try:
        trainer.train()
    finally:
        trainer.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cegppo_edu.trainer ...``: the ``train`` sub-command alone (handy in tests and scripts)."""
    from .cli import main as cli_main  # the one place that parses, dispatches and reports errors

    return cli_main(["train", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    sys.exit(main())
