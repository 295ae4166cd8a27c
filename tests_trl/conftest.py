"""Fixtures for the TRL drop-in's tests: a tiny local Qwen2 (no hub), a prompt dataset, and TRL's real trainer
run on the CPU with every loss call recorded.

These tests run in the separate TRL environment (`make test-trl`, .venv-trl) with their own pytest.ini; the main
suite (testpaths tests, notebooks) never collects them.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch

torch.set_num_threads(1)  # the machine is shared; every tensor here is tiny
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach the hub

# One generation batch of 8 responses (2 prompts × G = 4), split into 2 micro-batches of 4 that TRL accumulates into
# one optimizer step; num_iterations = 2 reuses each batch once after an update, so that step 2 is off policy
# (r ≠ 1) and tokens fall outside the clip interval. lr 0.05 moves the tiny model far enough for clipped tokens on
# both sides (the tests assert that they exist).
GEOMETRY = dict(per_device_train_batch_size=8, gradient_accumulation_steps=2, steps_per_generation=2,
                num_generations=4, num_iterations=2, max_completion_length=6, max_steps=2)
COMMON = dict(use_cpu=True, bf16=False, fp16=False, learning_rate=0.05, lr_scheduler_type="constant",
              temperature=1.0, beta=0.0, report_to=[], save_strategy="no", logging_steps=1, disable_tqdm=True,
              seed=0, shuffle_dataset=False, dataloader_num_workers=0)


class Recorder:
    """Mixed in before a TRL trainer class: keeps, for every call of TRL's ``_compute_loss``, its batch (as TRL
    passed it), the loss it returned and the log-probs of its forward pass with their gradient kept (read after
    TRL's backward). It changes nothing that TRL computes."""

    def _compute_loss(self, model, inputs):
        self.records.append({"batch": inputs})
        loss = super()._compute_loss(model, inputs)
        self.records[-1]["loss"] = loss
        return loss

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        logps, entropies, aux = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        record = self.records[-1] if getattr(self, "records", None) else None
        if logps.requires_grad and record is not None and "logp" not in record:  # the loss's forward pass
            logps.retain_grad()
            record["logp"], record["entropy"] = logps, entropies.detach()
        return logps, entropies, aux


def build_model_and_tokenizer():
    """A ~30k-parameter Qwen2 with the book's char tokenizer (``cegppo_edu.lm.models``), random weights, seed 0."""
    from cegppo_edu.lm.models import build_tiny_model_and_tokenizer

    return build_tiny_model_and_tokenizer(seed=0, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                                          intermediate_size=64)


def reward(completions, **_):
    """Any reward that varies within a group: the length of the response mod 3."""
    return [float(len(c[0]["content"]) % 3) for c in completions]


def prompt_dataset(n: int = 16):
    from datasets import Dataset

    return Dataset.from_list([{"prompt": [{"role": "user", "content": f"{i}+{2 * i + 1}="}]} for i in range(n)])


@pytest.fixture(scope="session")
def tiny_model():
    return build_model_and_tokenizer()


def run(trainer_class, config_class, tiny_model, tmp_path, resume=None, **overrides):
    """Train a fresh copy of the tiny model with TRL's real loop (``GEOMETRY`` and ``overrides``), from the
    checkpoint ``resume`` if given; the trainer and its ``records``."""
    from trl import GRPOTrainer

    model, tokenizer = tiny_model
    recording = type(f"Recording{trainer_class.__name__}", (Recorder, trainer_class), {})
    args = config_class(output_dir=str(tmp_path), **{**COMMON, **GEOMETRY, **overrides})
    trainer = recording(model=copy.deepcopy(model), reward_funcs=reward, args=args, train_dataset=prompt_dataset(),
                        processing_class=tokenizer)
    assert isinstance(trainer, GRPOTrainer)
    trainer.records = []
    trainer.train(resume_from_checkpoint=resume)
    return trainer, trainer.records


def optimizer_steps(records, per_step: int = GEOMETRY["gradient_accumulation_steps"]):
    """The records of each optimizer step joined along the batch: what TRL's accumulated micro-batches add up to.

    Each a dict: ``logp`` (B, T), its ``grad`` (the per-token gradient of the step's summed loss), ``old``, ``adv``
    (B,), ``mask``, ``loss`` (the sum of the micro-batch losses TRL back-propagated)."""
    steps = []
    for start in range(0, len(records), per_step):
        group = records[start:start + per_step]
        batch = [r["batch"] for r in group]
        steps.append(dict(logp=torch.cat([r["logp"].detach() for r in group]),
                          grad=torch.cat([r["logp"].grad for r in group]),
                          old=torch.cat([b["old_per_token_logps"] for b in batch]),
                          adv=torch.cat([b["advantages"] for b in batch]),
                          mask=torch.cat([b["completion_mask"] for b in batch]),
                          loss=sum(r["loss"].detach() for r in group),
                          # each micro-batch's token-mean entropy, what TRL's entropy bonus is made of
                          entropy=torch.stack([(r["entropy"] * b["completion_mask"]).sum() / b["completion_mask"].sum()
                                               for r, b in zip(group, batch)])))
    return steps


def reference(loss_fn, step, **hyper):
    """The project's loss on a step's batch and its per-token gradient: ``(value, d value / d logp)``."""
    logp = step["logp"].clone().requires_grad_(True)
    value = loss_fn(logp, step["old"], step["adv"], step["mask"], **hyper)
    (grad,) = torch.autograd.grad(value, logp)
    return value.detach(), grad
