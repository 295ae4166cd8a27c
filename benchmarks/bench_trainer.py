"""Benchmark of the LM trainer on the tiny-arith preset (CPU).

Prints steps/s, generated tokens/s, the time split of a step (generate / old log-probs / updates / other), and
the ratio of the trainer's update phase against a bare loop — forward, log-softmax of the response tokens,
backward, AdamW step — over exactly the same mini-batches of the same rollout batches (target <= 1.5x).
Both are timed in this run, on this machine; the first step is a warm-up and is not counted.

    .venv/bin/python benchmarks/bench_trainer.py [--steps 6] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from cegppo_edu.lm.batching import collate
from cegppo_edu.lm.config import apply_overrides, get_preset
from cegppo_edu.lm.trainer import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WARM = os.path.join(ROOT, "notebooks", "data", "ch04", "warm_start")


def bare_update(model, optimizer, rows, minibatches, pad_id):
    """The minimum a policy-gradient update must do: forward, gather log π of the response, backward, step."""
    start = time.perf_counter()
    for mini in minibatches:
        batch = collate([rows[i].prompt for i in mini], [rows[i].response for i in mini], pad_id)
        width = batch.response_ids.shape[1]
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       position_ids=batch.position_ids, logits_to_keep=width + 1, use_cache=False).logits[:, :-1]
        logp = torch.log_softmax(logits.float(), -1).gather(-1, batch.response_ids[..., None]).squeeze(-1)
        loss = -(logp * batch.mask).sum() / batch.mask.sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--method", default="ce_gppo")
    args = parser.parse_args()
    overrides = {"steps": args.steps, "method": args.method, "num_threads": args.threads, "eval_every": 0,
                 "checkpoint_every": 0}
    overrides.update({"model_path": WARM, "warm_start_steps": 0} if os.path.isdir(WARM) else {"warm_start_steps": 50})
    config = apply_overrides(get_preset("tiny-arith"), overrides)
    out = tempfile.mkdtemp(prefix="bench_trainer_")
    trainer = Trainer(config, out, progress=False)
    captured = {}
    original = trainer.update_phase

    def capture(rows, step, timer):  # keep each step's rows and mini-batch order for the bare loop
        captured[step] = rows
        return original(rows, step, timer)
    trainer.update_phase = capture
    history = [trainer.train_step() for _ in range(args.steps)]
    timed = history[1:]  # step 1 warms up the allocator and kernels
    step_time = sum(m["time/step"] for m in timed)
    gen = sum(m["time/generate"] for m in timed)
    old = sum(m.get("time/old_logp", 0.0) for m in timed)
    upd = sum(m.get("time/update", 0.0) for m in timed)
    after = sum(m.get("time/entropy_after", 0.0) for m in timed)
    tokens = sum(m["response/length_mean"] * config.prompts_per_step * config.group_size for m in timed)

    # The bare loop on a copy of the model, over the same rows split into the same number of mini-batches.
    model = type(trainer.model)(trainer.model.config)
    model.load_state_dict(trainer.model.state_dict())
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    bare = 0.0
    for m in timed:
        rows = captured.get(m["step"])
        if rows:
            order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(m["step"])).tolist()
            minibatches = [list(chunk) for chunk in np.array_split(order, min(config.mini_batches, len(rows)))]
            bare += bare_update(model, optimizer, rows, minibatches, trainer.tokenizer.pad_token_id)

    print(f"tiny-arith, method {config.method}, {torch.get_num_threads()} thread(s), "
          f"P×G = {config.prompts_per_step}×{config.group_size}, K = {config.mini_batches}, "
          f"{len(timed)} timed steps")
    print(f"steps/s                  {len(timed) / step_time:8.2f}")
    print(f"generated tokens/s       {tokens / gen:8.0f}")
    print(f"time split  generate     {gen / step_time:8.1%}")
    print(f"            old log-probs{old / step_time:8.1%}")
    print(f"            updates      {upd / step_time:8.1%}")
    print(f"            entropy after{after / step_time:8.1%}")
    print(f"            other (reward, eval, bookkeeping) {1 - (gen + old + upd + after) / step_time:6.1%}")
    print(f"update phase vs bare forward+backward loop: {upd:.3f} s / {bare:.3f} s = {upd / bare:.2f}x "
          f"(target <= 1.5x)")


if __name__ == "__main__":
    main()
