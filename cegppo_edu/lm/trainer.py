"""The LM trainer shared by chapter 4 (tiny Qwen2, CPU), chapter 5 (SmolLM2-135M-Instruct, CPU) and chapter 6
(R1-Distill-1.5B, one GPU).

One RL step (``Trainer.train_step``, the data flow of DESIGN.md):

    P prompts × G samples (any interfaces.Sampler) → rewards (any interfaces.RewardFn)
    → group advantages → drop zero-variance groups (``select_responses``)
    → update phase: old log-probs recomputed here (no grad), then K mini-batch optimizer steps
      (× update_epochs) with any loss of ``losses.METHODS``, each as micro-batches by token budget,
      bf16 autocast and gradient checkpointing when configured; grad-norm clip (a non-finite norm skips the
      optimizer step, logged) → AdamW, linear warm-up
    → the sampler gets the new weights → metrics (JSONL + callbacks) → checkpoint (atomic) every N steps.

That is all ``train_step`` → ``update_phase`` → ``optimizer_step`` do, in about 90 lines read top to bottom
(``teaching.lm_rl_step`` is the same step in 30). Everything optional (token-group statistics, the entropy
re-measure, the parameter-space predictor and its attribution, the β schedule, the steering controllers and
entropy bonus, the NLL term) attaches at the named ``self.hooks.<point>(...)`` calls (``lm.instruments``), and
the loss's hyper-parameters are passed down as ``hyper``, chosen once per step by the hooks that may move them.

"Group" has one meaning here: the G responses of one prompt (GRPO's group). The rows of a micro-batch are its
``indices``; the PA/NA × HP/LP classes of tokens are ``token_groups``'s. Set-up is in ``lm.setup``; the command
line is in ``lm.command``; reading what a run wrote is in ``lm.run_dir``.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import json
import os
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from ..advantages import group_advantages, zero_variance_groups
from ..losses import get_loss, get_method
from . import checkpoint as ckpt
from . import instruments, run_dir, setup
from .batching import collate, logp_entropy_influence, pack_by_tokens
from .config import TrainConfig, from_dict, loss_kwargs, resolve, to_dict, validate
from .instruments import MicroBatch, Phase
from .run_dir import METRICS_FILE, TIMING_PREFIX, WARM_START_FILE
from .tasks import TaskData, accuracy_of
from .steer import Steerer


@dataclass
class Response:
    """One kept response of a rollout batch, what the update phase needs of it."""

    prompt: list[int]
    response: list[int]
    adv: float
    correct: bool


class Timer:
    """Wall-clock seconds of named phases, logged as ``time/<name>`` (the keys two identical runs differ in)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:  # a phase timed in several pieces (the update's mini-batches) adds them up
            key = TIMING_PREFIX + name
            self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - start


class Trainer:
    """Holds the model, optimizer, sampler, reward and task of one run; ``train()`` runs it to ``config.steps``.

    Anything can be passed in ready-made (``model``/``tokenizer``, ``task``, ``sampler``, ``reward_fn``);
    otherwise it is built from the config through the registries in ``config``. ``callbacks`` get each
    step's metrics dict (a live figure in a notebook, for instance); the trainer itself has no UI but tqdm.

    ``out_dir`` holds one run (``run_dir``): a fresh run into a folder that holds one is refused unless
    ``overwrite``; ``resume`` continues the run from its newest complete checkpoint (a folder with no run starts
    fresh). ``how`` is recorded in ``run.json`` (e.g. the command line).
    """

    def __init__(self, config: TrainConfig, out_dir: str, *, model=None, tokenizer=None, task: TaskData | None = None,
                 sampler=None, reward_fn=None, callbacks: Sequence[Callable[[dict], None]] = (),
                 resume: bool = False, progress: bool = True, overwrite: bool = False, how: dict | None = None):
        self.config = validate(config)
        self.out_dir, self.callbacks, self.progress = out_dir, list(callbacks), progress
        self.interrupted = 0  # set by train(): the signal (SIGINT, SIGTERM, SIGHUP) that stopped it after a checkpoint
        self.lock = run_dir.lock_run_folder(out_dir)  # one live writer per run folder
        try:
            self._set_up(model, tokenizer, task, sampler, reward_fn, resume, overwrite, how)
        except BaseException:
            run_dir.unlock_run_folder(self.lock)  # a run that never started holds nothing
            raise

    def _set_up(self, model, tokenizer, task, sampler, reward_fn, resume, overwrite, how) -> None:
        """``__init__``'s steps (``lm.setup``), in the order that refuses bad input before any expensive work."""
        c, out_dir = self.config, self.out_dir
        self.resumed_from = setup.prepare_folder(out_dir, resume=resume, overwrite=overwrite)
        self.device, self.autocast = setup.seed_and_device(c)
        self.model, self.tokenizer = setup.model_and_tokenizer(c, self.device, self.resumed_from, model, tokenizer)
        self.checkpoint_bytes = run_dir.checkpoint_bytes(self.model)
        run_dir.check_free_space(out_dir, *ckpt.room_needed(  # the run's peak, before the warm start's minute
            out_dir, ckpt.checkpoint_run_id(self.resumed_from) if self.resumed_from else None,
            c.keep_checkpoints, self.checkpoint_bytes))
        self.task = task if task is not None else resolve("task", c.task)(c)
        self.prompts = setup.Prompts(c, self.tokenizer)
        self.train_problems = self.prompts.fitting(self.task.train)
        self.heldout_problems = self.prompts.fitting(self.task.heldout)
        if not self.train_problems:
            raise ValueError(f"the task has no training problem of at most max_prompt_tokens={c.max_prompt_tokens} "
                             f"prompt tokens")
        setup.check_before_work(c, self.model, self.device)  # bounds that need the model: before the warm start
        self.step, self.metrics_path = 0, os.path.join(out_dir, METRICS_FILE)
        if self.resumed_from:
            self.run_id = ckpt.checkpoint_run_id(self.resumed_from)
        else:
            self._start_fresh(how)
        if c.gradient_checkpointing:
            setup.enable_gradient_checkpointing(self.model)
        self.model.train()
        self.optimizer, self.scheduler = setup.optimizer_and_schedule(c, self.model, self.device)
        self.sampler, self.reward_fn = setup.sampler_and_reward(c, self.model, self.tokenizer, sampler, reward_fn)
        self.loss_fn, configured = get_loss(c.method), loss_kwargs(c)
        self.steerer = (Steerer(c, self.model.get_output_embeddings().weight.shape[0],
                                (configured.get("beta1", 0.0), configured.get("beta2", 0.0)))
                        if c.beta_controller != "none" else None)
        self.hooks = instruments.build(self)  # the optional instruments the config switches on
        if self.resumed_from:
            self._restore(self.resumed_from)
        if self.resumed_from or c.warm_start_steps:
            # A sampler holding its own copy of the weights (vLLM) was built from model_path: give it ours.
            self.sampler.sync_weights(self.model)

    # ---------------------------------------------------------------- one RL step
    def train_step(self) -> dict:
        """One RL step: sample, grade, select, update, hand the weights to the sampler, (evaluate).

        The optional instruments (``lm.instruments``) attach at the named ``self.hooks.<point>(...)`` calls of this
        method, ``update_phase`` and ``optimizer_step``; the loss's hyper-parameters ``hyper`` are chosen by the
        hooks that may move them (β schedule, steering) and passed down."""
        c, step, timer = self.config, self.step + 1, Timer()
        hyper, metrics = self.hooks.step_start(step, loss_kwargs(c))
        with timer("step"):
            problems = [self.train_problems[i] for i in self.step_problem_indices(step)]
            with timer("generate"):
                rollout = self.sampler.generate([self.prompts.ids(p) for p in problems], n=c.group_size,
                                                max_new_tokens=c.max_new_tokens, temperature=c.temperature,
                                                top_p=c.top_p, seed=setup.derive_seed(c.seed, "rollout", step))
            answers = [p.answer for p in problems for _ in range(c.group_size)]  # prompt-major, like the rollout
            with timer("reward"):
                rewards = torch.tensor(self.reward_fn(rollout.texts, answers), dtype=torch.float32)
            rows, keep = select_responses(rollout, rewards, c)  # group advantages, zero-variance groups dropped
            metrics = {"step": step, **rollout_metrics(rollout, rewards, keep, c), **metrics}
            if rows:
                metrics.update(self.update_phase(rows, step, hyper, timer))
            else:  # every group had equal rewards: nothing to learn from this batch (logged, not an error)
                metrics.update(self.entropy_only(rollout))
            metrics["lr"] = self.end_update_phase()
            if c.eval_every and (step % c.eval_every == 0 or step == c.steps):
                metrics.update(self.evaluate(step))
        self.step = step
        return {**metrics, **timer.seconds}

    def update_phase(self, rows: list[Response], step: int, hyper: dict, timer: Timer) -> dict:
        """Old log-probs (π_old, no gradient), then ``update_epochs`` × ``mini_batches`` optimizer steps in a
        shuffled order; the instruments' metrics of the phase after them."""
        with timer("old_logp"):
            entropy_before, old_logps, n_tokens = self.old_logps(rows)
        phase = Phase(step, rows, entropy_before, timer)
        hyper, steered = self.hooks.phase_start(phase, hyper)  # a steering controller picks this phase's β here
        results = []
        for mini in self.mini_batch_order(len(rows), step):
            self.hooks.before_optimizer_step(phase)
            with timer("update"):
                loss, norm = self.optimizer_step(rows, old_logps, mini, hyper)
            self.hooks.after_optimizer_step(phase, norm)
            results.append((loss, norm))
        out = {"entropy/mean": entropy_before, **update_metrics(results), "update/tokens": n_tokens, **steered}
        return {**out, **self.hooks.phase_end(phase, out)}

    def optimizer_step(self, rows: list[Response], old_logps, mini: list[int], hyper: dict) -> tuple[float, float]:
        """One mini-batch: micro-batch forward/backward with exact token-mean weights, clip, AdamW step.
        Returns ``(loss, grad norm)``; a non-finite norm skips the step."""
        c = self.config
        token_level = get_method(c.method).level in ("token", "batch")  # a token-mean over the mini-batch
        total_tokens = sum(len(rows[i].response) for i in mini)
        self.optimizer.zero_grad(set_to_none=True)
        loss_value = 0.0
        for indices, batch in self.micro_batches(rows, mini):
            logp, _, influence = self._score(batch, with_entropy=False, with_influence=self.hooks.wants_influence)
            old = torch.zeros_like(logp)
            for j, i in enumerate(indices):
                old[j, :len(rows[i].response)] = old_logps[i]
            adv = torch.tensor([rows[i].adv for i in indices], dtype=logp.dtype, device=logp.device)  # (b,)
            # The loss is a mean over the micro-batch; re-weight so the sum over micro-batches is the mini-batch mean.
            share = (batch.mask.sum().item() / total_tokens if c.loss_agg == "token-mean" and token_level
                     else len(indices) / len(mini))
            loss = self.loss_fn(logp, old, adv, batch.mask, **hyper) * share
            micro = MicroBatch([rows[i] for i in indices], [rows[i] for i in mini], batch, logp, old, adv, influence,
                               hyper)
            loss = self.hooks.add_bonuses(loss, micro)  # the entropy bonus, the NLL term
            self.hooks.before_backward(loss, micro)  # token-group stats, the attribution's per-cell gradients
            loss.backward()
            loss_value += loss.item()
        params = [p for p in self.model.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, c.max_grad_norm).item()
        if np.isfinite(norm):
            self.optimizer.step()
        else:  # never apply a NaN/inf gradient; drop it and carry on (counted in update/skipped_steps)
            self.optimizer.zero_grad(set_to_none=True)
        return loss_value, norm

    def step_problem_indices(self, step: int) -> list[int]:
        """The P training problems of RL step ``step`` (1-based): consecutive slices of per-epoch permutations."""
        n, per_step = len(self.train_problems), self.config.prompts_per_step
        indices, position = [], (step - 1) * per_step
        while len(indices) < per_step:
            epoch, offset = divmod(position, n)
            perm = np.random.default_rng(setup.derive_seed(self.config.seed, "prompts", epoch)).permutation(n)
            take = min(per_step - len(indices), n - offset)
            indices += perm[offset:offset + take].tolist()
            position += take
        return indices

    def mini_batch_order(self, rows: int, step: int):
        """The row indices of each optimizer step: ``update_epochs`` shuffles of the rows, each cut into
        ``mini_batches`` parts (fewer when there are fewer rows)."""
        shuffle = torch.Generator().manual_seed(setup.derive_seed(self.config.seed, "shuffle", step))
        for _ in range(self.config.update_epochs):
            order = torch.randperm(rows, generator=shuffle)
            for mini in torch.tensor_split(order, min(self.config.mini_batches, rows)):
                yield mini.tolist()

    def end_update_phase(self) -> float:
        """Advance the learning-rate schedule, free the gradients and give the sampler the new weights; the lr.

        Freeing the gradients (and on a GPU the allocator's cache) lets a colocated sampler (vLLM) wake up into
        memory the trainer no longer holds (7 GB of fp32 gradients at 1.5B).
        """
        with warnings.catch_warnings():  # a step with no kept group has no optimizer step; the schedule still moves
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        self.sampler.sync_weights(self.model)
        return self.optimizer.param_groups[0]["lr"]

    def entropy_only(self, rollout) -> dict:
        rows = [Response(p, r, 0.0, False) for p, r in zip(rollout.prompt_ids, rollout.response_ids)]
        entropy, _, _ = self.old_logps(rows)
        return {"entropy/mean": entropy, "update/optimizer_steps": 0, "update/skipped_steps": 0}

    # ---------------------------------------------------------------- forward passes
    def micro_batches(self, rows: list[Response], order: Sequence[int], layout=collate):
        """``(indices, batch)`` pairs: the rows of ``order`` cut to the ``micro_batch_tokens`` budget, collated by
        ``layout`` (``batching.collate``, or ``batching.collate_shared``: smaller, so the budget still holds)."""
        for indices in pack_by_tokens([len(r.prompt) for r in rows], [len(r.response) for r in rows], order,
                                      self.config.micro_batch_tokens):
            batch = layout([rows[i].prompt for i in indices], [rows[i].response for i in indices],
                           self.tokenizer.pad_token_id, self.device)
            yield indices, batch

    def _score(self, batch, *, with_entropy: bool, with_influence: bool):
        return logp_entropy_influence(self.model, batch, chunk_size=self.config.logp_chunk, with_entropy=with_entropy,
                                      with_influence=with_influence, autocast_dtype=self.autocast,
                                      temperature=self.config.temperature)

    @torch.no_grad()
    def old_logps(self, rows: list[Response]):
        """π_old log-probs of every kept token (recomputed; the paper in brief §6) and the batch's token-mean
        entropy: ``(entropy, [logp (R_i,) per row], tokens)``."""
        was_training = self.model.training
        self.model.eval()
        old, ent_sum, n_tok = [None] * len(rows), 0.0, 0.0
        for indices, batch in self.micro_batches(rows, range(len(rows))):
            logp, entropy, _ = self._score(batch, with_entropy=True, with_influence=False)
            for j, i in enumerate(indices):
                old[i] = logp[j, :len(rows[i].response)].float()
            ent_sum += (entropy * batch.mask).sum().item()
            n_tok += batch.mask.sum().item()
        self.model.train(was_training)
        return ent_sum / n_tok, old, n_tok

    # ---------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, step: int) -> dict:
        """Held-out accuracy (avg@k over ``eval_samples``), with a fixed seed so steps are comparable."""
        c = self.config
        t0 = time.perf_counter()
        problems = self.heldout_problems[:c.eval_problems or None]
        if not problems:
            return {}
        rollout = self.sampler.generate([self.prompts.ids(p) for p in problems], n=c.eval_samples,
                                        max_new_tokens=c.max_new_tokens, temperature=c.eval_temperature,
                                        top_p=c.eval_top_p, seed=setup.derive_seed(c.seed, "eval"))
        answers = [p.answer for p in problems for _ in range(c.eval_samples)]
        rewards = self.reward_fn(rollout.texts, answers)
        return {"eval/accuracy": accuracy_of(rewards, c.reward_correct),
                "eval/length_mean": float(np.mean([len(r) for r in rollout.response_ids])),
                TIMING_PREFIX + "eval": time.perf_counter() - t0}

    # ---------------------------------------------------------------- the run's files
    def _start_fresh(self, how: dict | None) -> None:
        """A new run: its identity, its config.json, an empty metrics log, and the warm start if any."""
        self.run_id = run_dir.new_run_identity(self.out_dir, **(how or {}))
        self._write_config()
        self._truncate_metrics(0)
        if self.config.warm_start_steps:
            self._warm_start()

    def _warm_start(self) -> None:
        from .warm_start import warm_start

        c = self.config
        if not self.task.sft:
            raise ValueError(f"warm_start_steps={c.warm_start_steps} but task {c.task!r} provides no supervised "
                             f"examples")
        fd = run_dir.open_no_follow(os.path.join(self.out_dir, WARM_START_FILE), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        with open(fd, "w") as f:
            warm_start(self.model, self.tokenizer, self.task.sft, steps=c.warm_start_steps, lr=c.warm_start_lr,
                       batch_size=c.warm_start_batch_size, seed=setup.derive_seed(c.seed, "warm_start"),
                       encode=self.prompts.encode, on_step=lambda rec: f.write(json.dumps(rec) + "\n"))

    def _restore(self, path: str) -> None:
        state = ckpt.load_state(path)
        saved = from_dict(state["config"])
        differing = [k for k, v in to_dict(saved).items() if k != "steps" and to_dict(self.config)[k] != v]
        if differing:
            raise ValueError(f"cannot resume {path}: config fields {differing} differ from the checkpoint's")
        if self.config.steps != saved.steps and saved.beta_schedule != "constant":
            raise ValueError(f"steps={self.config.steps}: a run with beta_schedule={saved.beta_schedule!r} keeps its "
                             f"steps={saved.steps}, over which its β(t) is defined (start a new run to go further)")
        if self.config.steps != saved.steps and saved.entropy_target_final is not None:
            raise ValueError(f"steps={self.config.steps}: a run with entropy_target_final={saved.entropy_target_final}"
                             f" keeps its steps={saved.steps}, over which its target H*(t) is defined")
        if self.config.steps < saved.steps:
            raise ValueError(f"steps={self.config.steps} is below the run's steps={saved.steps}: a resume may "
                             f"extend a run, never shorten its record (stop early with Ctrl-C instead)")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if hasattr(self.sampler, "load_state_dict") and state.get("sampler") is not None:
            self.sampler.load_state_dict(state["sampler"])
        self.step = state["step"]
        if self.steerer:
            self.steerer.load_state_dict(state["steering"])
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
        with open(run_dir.open_no_follow(self.metrics_path, os.O_RDWR | os.O_CREAT), "r+b") as f:
            f.truncate(offset)

    def _write_metrics(self, metrics: dict) -> None:
        line = json.dumps(metrics) + "\n"
        try:
            with open(run_dir.open_no_follow(self.metrics_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise run_dir.NoSpaceError(self.metrics_path, len(line.encode()), what="a metrics line",
                                           kept=ckpt.latest_checkpoint(self.out_dir, self.run_id)) from err
            raise

    def save(self) -> str:
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "config": to_dict(self.config), "metrics_offset": os.path.getsize(self.metrics_path),
                 "sampler": self.sampler.state_dict() if hasattr(self.sampler, "state_dict") else None,
                 "steering": self.steerer.state_dict() if self.steerer else None}
        path = ckpt.save_checkpoint(self.out_dir, self.step, self.model, self.tokenizer, state,
                                    keep=self.config.keep_checkpoints, run_id=self.run_id,
                                    needed_bytes=self.checkpoint_bytes)
        self.saved_step = self.step
        return path

    def close(self) -> None:
        """Release what the run holds: the math-verify reward's worker pool, the sampler's engine (vLLM keeps its
        weights and KV cache), and the model, gradients and AdamW state (a 1.5B run holds ≈20 GiB of GPU memory
        in them). Call it before anything else needs the card in this process, e.g. an evaluation engine (chapter
        5's notebook); the trainer cannot train after it. The metrics and checkpoints on disk stay."""
        for part in (self.reward_fn, self.sampler):
            if hasattr(part, "close"):
                part.close()
        self.model = self.optimizer = self.scheduler = self.sampler = self.reward_fn = None
        run_dir.unlock_run_folder(self.lock)
        gc.collect()  # the model and AdamW's state sit in reference cycles (modules, hooks)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()  # hand the freed blocks back to the driver, where another engine can get them

    # ---------------------------------------------------------------- the loop
    def train(self, stop_after: int | None = None) -> list[dict]:
        """Run until ``config.steps`` (or ``stop_after`` more steps); returns the metrics of the steps run."""
        from tqdm.auto import tqdm

        c = self.config
        history = []
        if self.step == 0 and c.eval_every:
            history.append(self._log({"step": 0, **self.evaluate(0)}))
        last = c.steps if stop_after is None else min(c.steps, self.step + stop_after)
        bar = tqdm(total=c.steps, initial=self.step, desc=f"{c.method}", disable=not self.progress,
                   dynamic_ncols=True)
        self.saved_step = None
        try:
            with stop_on_interrupt() as interrupt:
                while self.step < last and not interrupt.requested:
                    metrics = self._log(self.train_step())
                    history.append(metrics)
                    bar.update(1)
                    bar.set_postfix(reward=f"{metrics['reward/mean']:.2f}", H=f"{metrics['entropy/mean']:.3f}")
                    if (self.step == last or interrupt.requested
                            or (c.checkpoint_every and self.step % c.checkpoint_every == 0)):
                        self.save()  # every N steps, where this run stops, and after a Ctrl-C
                self.interrupted = interrupt.requested
        finally:
            bar.close()
        return history

    def _log(self, metrics: dict) -> dict:
        self._write_metrics(metrics)
        for callback in self.callbacks:
            callback(metrics)
        return metrics


# -------------------------------------------------------------------- the pieces of a step
def select_responses(rollout, rewards: torch.Tensor, config: TrainConfig) -> tuple[list[Response], torch.Tensor]:
    """Group advantages, then the responses the update phase learns from: without the zero-variance groups
    (DAPO's dynamic sampling, ``drop_zero_variance``), at most ``max_kept_prompts`` groups. ``(rows, keep (P·G,))``."""
    c, G = config, config.group_size
    adv = group_advantages(rewards, G, c.scale_adv_by_std)
    keep = ~zero_variance_groups(rewards, G) if c.drop_zero_variance else torch.ones_like(rewards, dtype=torch.bool)
    if c.max_kept_prompts:
        kept_prompts = keep.view(-1, G)[:, 0].cumsum(0) <= c.max_kept_prompts  # (P,)
        keep &= kept_prompts.repeat_interleave(G)
    rows = [Response(rollout.prompt_ids[i], rollout.response_ids[i], adv[i].item(),
                     rewards[i].item() == c.reward_correct) for i in range(len(rewards)) if keep[i]]
    return rows, keep


def rollout_metrics(rollout, rewards: torch.Tensor, keep: torch.Tensor, config: TrainConfig) -> dict:
    """Reward, train accuracy, response lengths and how many groups the dynamic-sampling filter kept."""
    lengths = [len(r) for r in rollout.response_ids]
    return {"reward/mean": rewards.mean().item(),
            "accuracy/train": accuracy_of(rewards.tolist(), config.reward_correct),
            "response/length_mean": float(np.mean(lengths)),
            "response/length_max": float(max(lengths)),
            "response/truncated_frac": float(np.mean(rollout.truncated)),
            "groups/kept_frac": keep.view(-1, config.group_size)[:, 0].float().mean().item(),
            "responses/kept": int(keep.sum().item())}


def update_metrics(results: list[tuple[float, float]]) -> dict:
    """Loss and gradient norms over the optimizer steps of an update phase (non-finite norms are skipped steps)."""
    losses = [loss for loss, _ in results]
    finite = [norm for _, norm in results if np.isfinite(norm)]
    return {"loss": float(np.mean(losses)), "grad_norm/mean": float(np.mean(finite or [0.0])),
            "grad_norm/max": float(max(finite or [0.0])), "update/optimizer_steps": len(results),
            "update/skipped_steps": len(results) - len(finite)}


class _Interrupt:
    requested = 0  # the signal number that asked to stop (0: none)


# Ctrl-C, what a cloud sends before it pre-empts a machine, and a closed terminal: each stops a run cleanly.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextlib.contextmanager
def stop_on_interrupt():
    """Turn the first of ``STOP_SIGNALS`` into a request to stop after the step in flight (the caller then writes a
    checkpoint); a second one stops at once (``KeyboardInterrupt``). Outside the main thread signals cannot be
    caught, and nothing changes."""
    flag = _Interrupt()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = signum
        print(f"\n{signal.Signals(signum).name}: finishing this step, then writing a checkpoint (send it again, or "
              f"Ctrl-C, to stop at once)", file=sys.stderr, flush=True)

    previous = {number: signal.signal(number, handler) for number in STOP_SIGNALS}
    try:
        yield flag
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


@contextlib.contextmanager
def signals_stop_at_once():
    """While a run sets up (the warm start included), SIGTERM and SIGHUP stop it at once as Ctrl-C does
    (``KeyboardInterrupt``), so that ``finally`` blocks run: the grading pool is ended and the folder lock freed.
    A run stopped before its first step leaves nothing to resume, and ``--resume`` then starts it afresh."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {number: signal.signal(number, handler) for number in STOP_SIGNALS if number != signal.SIGINT}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


__all__ = ["Response", "STOP_SIGNALS", "Trainer", "rollout_metrics", "select_responses", "signals_stop_at_once",
           "stop_on_interrupt", "update_metrics"]
