"""This project's trainer side by side with TRL's ``GRPOTrainer`` on the same task (issue 13).

Both train the warm-started tiny Qwen2 of chapter 4 (``notebooks/data/ch04/warm_start``) on the same chat-format
addition prompts (the prompts our trainer draws, fed to TRL in that order), with the same geometry: P prompts × G
responses, at most N new tokens, K = 4 mini-batch optimizer steps per rollout batch, one pass (TRL:
``steps_per_generation=4``, ``num_iterations=1``), lr 3e-4, fp32, no gradient checkpointing, the same number of
CPU threads, an exact-match reward on the sum. TRL: ``loss_type="dapo"`` with ε = 0.2 / 0.2 (its token-mean
PPO-clip, what our GRPO/CE-GPPO without clipping reduce to; ours runs its default, CE-GPPO), ``beta=0`` (no
reference model), ``scale_rewards="group"``, its default optimiser. Our trainer keeps its defaults too, among them
dropping the groups whose rewards are all equal (DAPO's dynamic sampling; TRL trains on every group).

The contenders run in turn in one process (which goes first alternates), each on a fresh copy of the model and the
same prompts, ``--pairs`` times after one untimed warm-up round; the wall time of a run is its training loop (10
rollout batches = 40 optimizer steps by default), without imports and set-up. Printed: the medians, the ratio
TRL / ours, and each one's time split. ``ours-bare`` is our trainer with ``token_group_stats=False,
measure_entropy_change=False`` (what the diagnostics cost: target default <= 1.15 × bare).

Needs TRL: ``make bench-trl`` builds ``.venv-trl`` (pinned TRL, CPU torch, this package) and runs this file.

    .venv-trl/bin/python benchmarks/bench_vs_trl.py [--pairs 5] [--threads 2] [--geometry chapter4 big]
    .venv/bin/python benchmarks/bench_vs_trl.py --without-trl   # only the diagnostics ratio, no TRL needed
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import statistics
import tempfile
import time
import warnings

import torch

from cegppo_edu.lm.config import apply_overrides, get_preset
from cegppo_edu.lm.models import load_model_and_tokenizer
from cegppo_edu.lm.rewards import ExactMatchReward
from cegppo_edu.lm.trainer import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WARM = os.path.join(ROOT, "notebooks", "data", "ch04", "warm_start")
TRL_VERSION = "1.16.0"  # the Makefile's pin (TRL_PIN)
# The geometry, and 4 × the batch with 32 new tokens.
GEOMETRIES = {
    "chapter4": dict(prompts_per_step=16, group_size=8, max_new_tokens=8, batches=10),
    "big": dict(prompts_per_step=64, group_size=8, max_new_tokens=32, batches=5),
}
MINI_BATCHES = 4
OUR_PHASES = ("generate", "reward", "old_logp", "update", "entropy_after")


# ------------------------------------------------------------------------------------------------ our trainer
def our_config(geometry: dict, threads: int, diagnostics: bool):
    return apply_overrides(get_preset("tiny-arith"), {
        "model_path": WARM, "warm_start_steps": 0, "steps": geometry["batches"], "num_threads": threads,
        "prompts_per_step": geometry["prompts_per_step"], "group_size": geometry["group_size"],
        "max_new_tokens": geometry["max_new_tokens"], "mini_batches": MINI_BATCHES, "update_epochs": 1, "lr": 3e-4,
        "eval_every": 0, "checkpoint_every": 0, "token_group_stats": diagnostics,
        "measure_entropy_change": diagnostics})


def run_ours(geometry: dict, threads: int, diagnostics: bool = True) -> tuple[float, dict]:
    """Wall seconds of our training loop (every step and its log line; the end-of-run checkpoint is left out, as
    TRL here saves none) and its split."""
    trainer = Trainer(our_config(geometry, threads, diagnostics), tempfile.mkdtemp(prefix="bench_ours_"),
                      progress=False)
    return run_trainer(trainer, geometry["batches"])


def run_trainer(trainer: Trainer, batches: int) -> tuple[float, dict]:
    """Wall seconds of ``batches`` steps of a set-up trainer (each step and its log line) and their split."""
    split = collections.Counter()
    start = time.perf_counter()
    for _ in range(batches):
        metrics = trainer._log(trainer.train_step())
        split.update({phase: metrics.get(f"time/{phase}", 0.0) for phase in OUR_PHASES})
    wall = time.perf_counter() - start
    split["other"] = wall - sum(split.values())
    return wall, dict(split)


def prompt_sequence(geometry: dict, threads: int):
    """The problems our trainer draws for each rollout batch, in order (TRL is given exactly these)."""
    trainer = Trainer(our_config(geometry, threads, True), tempfile.mkdtemp(prefix="bench_prompts_"), progress=False)
    problems = [trainer.train_problems[i] for step in range(1, geometry["batches"] + 1)
                for i in trainer.step_problem_indices(step)]
    return problems, trainer.prompts


# ------------------------------------------------------------------------------------------------ TRL
def trl_trainer(geometry: dict, problems, threads: int, model_path: str = WARM, reward=None,
                mini_batches: int = MINI_BATCHES, lr: float = 3e-4):
    """TRL's ``GRPOTrainer`` at our geometry on ``problems`` in order; ``reward(texts, answers) -> [float]`` is our
    trainer's reward function (default: the tiny preset's exact match)."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(threads)
    model, tokenizer = load_model_and_tokenizer(model_path)
    # the reward our trainer uses (tiny-arith: config.reward = exact_match, whole response the number)
    grade = reward or ExactMatchReward(require_only_answer=True)

    def our_reward(completions, answer, **_):
        return grade([c[0]["content"] for c in completions], answer)

    rows = geometry["prompts_per_step"] * geometry["group_size"]
    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="bench_trl_"), use_cpu=True, bf16=False, fp16=False,
        gradient_checkpointing=False, per_device_train_batch_size=rows // mini_batches,
        gradient_accumulation_steps=1, steps_per_generation=mini_batches, num_iterations=1,
        num_generations=geometry["group_size"], max_completion_length=geometry["max_new_tokens"],
        max_steps=geometry["batches"] * mini_batches, learning_rate=lr, lr_scheduler_type="constant",
        weight_decay=0.0, max_grad_norm=1.0, loss_type="dapo", epsilon=0.2, epsilon_high=0.2, beta=0.0,
        scale_rewards="group", temperature=1.0, top_p=1.0, top_k=0, shuffle_dataset=False, seed=0,
        report_to=[], save_strategy="no", eval_strategy="no", logging_steps=10, disable_tqdm=True,
        dataloader_num_workers=0)
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": p.question}], "answer": p.answer}
                                 for p in problems])
    return GRPOTrainer(model=model, reward_funcs=our_reward, args=args, train_dataset=dataset,
                       processing_class=tokenizer)


def time_trl_phases(trainer) -> collections.Counter:
    """Wrap TRL's own methods with timers: its generate call, the reward, the no-grad old log-prob pass, and the
    rest of its scoring; the updates (loss forward, backward, optimizer, logging) are what remains of the loop."""
    split = collections.Counter()

    def timed(name, fn, when=lambda: True):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if when():
                    split[name] += time.perf_counter() - start
        return wrapper

    trainer._generate_single_turn = timed("generate", trainer._generate_single_turn)
    trainer._calculate_rewards = timed("reward", trainer._calculate_rewards)
    trainer._get_per_token_logps_and_entropies = timed("old_logp", trainer._get_per_token_logps_and_entropies,
                                                       when=lambda: not torch.is_grad_enabled())
    trainer._generate_and_score_completions = timed("scoring", trainer._generate_and_score_completions)
    return split


def run_trl(geometry: dict, problems, threads: int, **trl_kwargs) -> tuple[float, dict]:
    """Wall seconds of TRL's training loop (from its on_train_begin to on_train_end) and its split;
    ``trl_kwargs`` go to ``trl_trainer``."""
    from transformers import PrinterCallback, TrainerCallback

    trainer = trl_trainer(geometry, problems, threads, **trl_kwargs)
    trainer.remove_callback(PrinterCallback)  # its end-of-run log line would interleave with the table
    marks = {}

    class Clock(TrainerCallback):
        def on_train_begin(self, *args, **kwargs):
            marks["start"] = time.perf_counter()

        def on_train_end(self, *args, **kwargs):
            marks["end"] = time.perf_counter()

    trainer.add_callback(Clock())
    split = time_trl_phases(trainer)
    trainer.train()
    wall = marks["end"] - marks["start"]
    scoring = split.pop("scoring")
    split["other_scoring"] = scoring - split["generate"] - split["reward"] - split["old_logp"]
    split["update"] = wall - scoring
    return wall, dict(split)


def check_same_prompts(problems, prompts, geometry, threads, **trl_kwargs) -> None:
    """TRL tokenizes the chat prompts itself: they must be the token ids our trainer feeds its sampler."""
    trainer = trl_trainer(geometry, problems[:2], threads, **trl_kwargs)
    theirs, _, _ = trainer._tokenize_prompts([[{"role": "user", "content": p.question}] for p in problems[:2]])
    ours = [prompts.ids(p) for p in problems[:2]]
    if [list(t) for t in theirs] != ours:
        raise SystemExit(f"TRL's prompt ids {theirs} differ from ours {ours}: the comparison would not be fair")


# ------------------------------------------------------------------------------------------------ the table
def median_split(splits: list[dict]) -> dict:
    return {k: statistics.median(s.get(k, 0.0) for s in splits) for k in splits[0]}


def diagnostics_cost(walls: dict) -> str:
    """default / bare from the medians, and from the rounds (each round runs both: the load they saw is alike)."""
    rounds = [d / b for d, b in zip(walls["ours"], walls["ours-bare"])]
    ratio = statistics.median(walls["ours"]) / statistics.median(walls["ours-bare"])
    return (f"diagnostics cost: default / bare = {ratio:.3f}x (per round: median {statistics.median(rounds):.3f}x, "
            f"{min(rounds):.2f}-{max(rounds):.2f}; target <= 1.15x)")


def compare(name: str, geometry: dict, pairs: int, threads: int, with_trl: bool = True) -> dict:
    contenders = {"ours": lambda: run_ours(geometry, threads),
                  "ours-bare": lambda: run_ours(geometry, threads, diagnostics=False)}
    if with_trl:
        problems, prompts = prompt_sequence(geometry, threads)
        check_same_prompts(problems, prompts, geometry, threads)
        contenders["trl"] = lambda: run_trl(geometry, problems, threads)
    order = list(contenders)
    for run in contenders.values():  # warm-up round, not counted
        run()
    results = {k: [] for k in contenders}
    for i in range(pairs):
        for key in order[i % len(order):] + order[:i % len(order)]:  # rotate who goes first
            results[key].append(contenders[key]())
            print(f"  {name} round {i + 1}: {key} {results[key][-1][0]:.2f} s (load {os.getloadavg()[0]:.2f})",
                  flush=True)
    walls = {k: [w for w, _ in v] for k, v in results.items()}
    med = {k: statistics.median(v) for k, v in walls.items()}
    if not with_trl:
        print(f"\n{name}: ours {med['ours']:.2f} s, ours-bare {med['ours-bare']:.2f} s (medians of {pairs}); "
              + diagnostics_cost(walls))
        return med
    ratio_rounds = [t / o for t, o in zip(walls["trl"], walls["ours"])]
    rows = geometry["prompts_per_step"] * geometry["group_size"]
    print(f"\n{name}: {geometry['prompts_per_step']} prompts x {geometry['group_size']} = {rows} responses, "
          f"<= {geometry['max_new_tokens']} new tokens, {MINI_BATCHES} mini-batches, {geometry['batches']} rollout "
          f"batches ({geometry['batches'] * MINI_BATCHES} optimizer steps), {threads} threads, {pairs} rounds")
    print("| | wall (median) | ratio TRL/ours |\n|---|---|---|")
    print(f"| TRL {TRL_VERSION} GRPOTrainer | {med['trl']:.2f} s | |")
    print(f"| this project, default metrics | {med['ours']:.2f} s | **{med['trl'] / med['ours']:.2f}x** "
          f"(per round: median {statistics.median(ratio_rounds):.2f}x, {min(ratio_rounds):.2f}-{max(ratio_rounds):.2f}) |")
    print(f"| this project, token_group_stats=False, measure_entropy_change=False | {med['ours-bare']:.2f} s | "
          f"{med['trl'] / med['ours-bare']:.2f}x |")
    print(diagnostics_cost(walls))
    splits = {key: median_split([s for _, s in results[key]]) for key in ("ours", "trl")}
    for key, split in splits.items():
        print(f"split {key:4s} (median s per run): " + ", ".join(f"{k} {v:.2f}" for k, v in split.items()))
    print(two_x_floor(splits["ours"], med["trl"]))
    return med


def two_x_floor(ours: dict, trl_wall: float) -> str:
    """What a run 2x faster than TRL's may spend, against the two phases no trainer of this task can skip: the
    updates (HF forward + backward + AdamW over the very tokens TRL's updates run) and the generation."""
    budget, update, generate = trl_wall / 2, ours["update"], ours["generate"]
    return (f"2x TRL means <= {budget:.2f} s a run; our update phase alone takes {update:.2f} s "
            f"({update / budget:.2f}x that budget), with the generation {update + generate:.2f} s "
            f"({(update + generate) / budget:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5, help="timed rounds of each contender (>= 5 for the issue)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--geometry", nargs="+", default=list(GEOMETRIES), choices=list(GEOMETRIES))
    parser.add_argument("--batches", type=int, default=0, help="rollout batches per run (0: the geometry's own)")
    parser.add_argument("--without-trl", action="store_true",
                        help="only our trainer with and without its diagnostics (no TRL needed: runs in .venv)")
    args = parser.parse_args()
    import transformers

    if args.without_trl:
        print(f"torch {torch.__version__}, transformers {transformers.__version__}, {os.cpu_count()} CPUs, load "
              f"average {os.getloadavg()[0]:.2f}; TRL not run")
        for name in args.geometry:
            compare(name, {**GEOMETRIES[name], **({"batches": args.batches} if args.batches else {})}, args.pairs,
                    args.threads, with_trl=False)
        return
    import trl

    warnings.filterwarnings("ignore")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}")
    if trl.__version__ != TRL_VERSION:
        print(f"warning: TRL {trl.__version__} is not the pinned {TRL_VERSION}")
    for name in args.geometry:
        geometry = {**GEOMETRIES[name], **({"batches": args.batches} if args.batches else {})}
        compare(name, geometry, args.pairs, args.threads)


if __name__ == "__main__":
    main()
