"""One RL step of SmolLM2-135M-Instruct on this CPU against the machine's own limits and TRL (issue 26).

Measured in one process, on 2 torch threads (``torch.set_num_threads(2)``; ``--threads`` changes it):

1. the machine: its fp32 GEMM rate (a 2048 x 2048 matmul) and its memory-read bandwidth (the sum of a 256 MB fp32
   tensor), each the best of a few repeats, once before and once after the contenders (both are printed; the
   fractions below use the mean of the two);
2. the contenders, one rollout batch each per round (``--steps``), in an order that rotates every round (the machine
   is shared and noisy: compare ratios within a round): our trainer on the preset ``smollm2-135m-cpu`` with its
   default sampler ``hf`` (HF ``generate``), the same with the opt-in sampler ``hf-shared``
   (``rollout.SharedPrefillSampler``), and TRL 1.16's ``GRPOTrainer`` on the same model, the same prompts in the
   same order, the same geometry and reward (``bench_vs_trl.run_trl``; not with ``--without-trl``). Ours keeps
   every group (``drop_zero_variance=False``, as TRL does), so that every step has an update phase over the same
   number of rows as TRL's.

Printed per contender (medians over the rounds): the wall time of its steps and their split (sampling, grading,
old log-probs, update, the rest), and for ours:

- the update phase's **model FLOP/s as a fraction of the GEMM rate**. Model FLOPs are counted on real tokens only
  (padding is overhead, not work): per row of prompt length p and response length r, a forward pass is
  2·N_body·(p + r) + 4·L·H·d_h·(p + r)(p + r + 1)/2 + 2·V·d·r, that is the decoder layers' matrices (N_body, the
  parameters of the 30 layers' q/k/v/o and MLP projections, no embeddings or norms), causal attention's QKᵀ and
  AV at every position, and the tied head at the response positions only (the logits the loss uses); forward +
  backward is 3x that (the usual 6·N per token). The old log-prob pass (no gradient) is 1x, reported apart;
- sampling's **weight bytes per decode step as a fraction of the read bandwidth**: every decode step reads every
  weight once (538 MB in fp32), so the rate is bytes x decode steps / sampling time, with decode steps = the
  longest response of the batch (the prefill's time is inside the sampling time, so this is a lower bound).

Run it in TRL's environment (``make test-trl`` builds ``.venv-trl``), or in ``.venv`` with ``--without-trl``:

    .venv-trl/bin/python benchmarks/bench_smollm2.py --model /path/to/smollm2 --rounds 2 --out benchmarks/results/smollm2.txt
    .venv/bin/python benchmarks/bench_smollm2.py --without-trl --prompts 2 --group 4 --new-tokens 16   # a quick look
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_vs_trl as vs  # noqa: E402  (beside this file: TRL's side of the comparison)

from cegppo_edu.lm.config import apply_overrides, get_preset, resolve  # noqa: E402
from cegppo_edu.lm.trainer import Trainer  # noqa: E402

PRESET = "smollm2-135m-cpu"
SAMPLERS = {"ours-hf": "hf", "ours-shared": "hf-shared"}


# ------------------------------------------------------------------------------------------------ the machine
def gemm_rate(n: int = 2048, repeats: int = 6) -> float:
    """fp32 GFLOP/s of an n x n matmul on the current torch threads (the best of ``repeats``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_seconds(lambda: a @ b) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def read_bandwidth(megabytes: int = 256, repeats: int = 6) -> float:
    """GB/s of reading a ``megabytes`` fp32 tensor once (its sum; the best of ``repeats``)."""
    x = torch.randn(megabytes * 2 ** 20 // 4)
    x.sum()
    best = min(_seconds(x.sum) for _ in range(repeats))
    return x.numel() * 4 / best / 1e9


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ------------------------------------------------------------------------------------------------ model work
class ModelWork:
    """FLOPs and weight bytes of a decoder-only HF model (Llama/Qwen2 layout), counted as the module docstring says."""

    def __init__(self, model):
        c = model.config
        d, heads, kv = c.hidden_size, c.num_attention_heads, c.num_key_value_heads
        head_dim = getattr(c, "head_dim", None) or d // heads
        self.layers, self.attn_width, self.d, self.vocab = c.num_hidden_layers, heads * head_dim, d, c.vocab_size
        per_layer = d * self.attn_width * 2 + d * kv * head_dim * 2 + 3 * d * c.intermediate_size  # q,o; k,v; MLP
        self.body = c.num_hidden_layers * per_layer
        self.weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())  # tied weights once

    def forward_flops(self, prompt_len: int, response_len: int) -> float:
        tokens = prompt_len + response_len
        attention = 4 * self.layers * self.attn_width * tokens * (tokens + 1) / 2  # QKᵀ and AV, causal
        return 2 * self.body * tokens + attention + 2 * self.vocab * self.d * response_len

    def rows_flops(self, rows) -> float:
        """Forward FLOPs of the kept rows of a step (``trainer.Response``s)."""
        return sum(self.forward_flops(len(r.prompt), len(r.response)) for r in rows)


# ------------------------------------------------------------------------------------------------ contenders
def our_config(args, sampler: str):
    import cegppo_edu.pretrained.smollm2  # noqa: F401  (registers the preset)

    return apply_overrides(get_preset(PRESET), {
        "model_path": args.model, "sampler": sampler, "steps": args.steps, "num_threads": args.threads,
        "prompts_per_step": args.prompts, "group_size": args.group, "max_new_tokens": args.new_tokens,
        "eval_every": 0, "checkpoint_every": 0, "drop_zero_variance": False})


def run_ours(args, sampler: str, work_of) -> dict:
    """``args.steps`` steps of a fresh trainer (fresh model) with ``sampler``: wall, split and the model work done."""
    trainer = Trainer(our_config(args, sampler), tempfile.mkdtemp(prefix="bench_smollm2_"), progress=False)
    work = work_of(trainer.model)
    seen = {"update_flops": 0.0, "decode_steps": 0}
    update_phase, generate = trainer.update_phase, trainer.sampler.generate

    def counted_update(rows, step, hyper, timer):
        seen["update_flops"] += work.rows_flops(rows) * trainer.config.update_epochs
        return update_phase(rows, step, hyper, timer)

    def counted_generate(*a, **k):
        rollout = generate(*a, **k)
        seen["decode_steps"] += max(len(r) for r in rollout.response_ids)
        return rollout

    trainer.update_phase, trainer.sampler.generate = counted_update, counted_generate
    try:
        wall, split = vs.run_trainer(trainer, args.steps)
    finally:
        trainer.close()
    return {"wall": wall, "split": split, "update_flops": seen["update_flops"],
            "decode_bytes": seen["decode_steps"] * work.weight_bytes}


def trl_setup(args):
    """The problems our trainer draws for its steps, in order, and what TRL needs to train on them like it."""
    config = our_config(args, "hf")
    trainer = Trainer(config, tempfile.mkdtemp(prefix="bench_smollm2_prompts_"), progress=False)
    try:
        problems = [trainer.train_problems[i] for step in range(1, args.steps + 1)
                    for i in trainer.step_problem_indices(step)]
        prompts = trainer.prompts
    finally:
        trainer.close()
    geometry = {"prompts_per_step": args.prompts, "group_size": args.group, "max_new_tokens": args.new_tokens,
                "batches": args.steps}
    kwargs = {"model_path": args.model, "reward": resolve("reward", config.reward)(config),
              "mini_batches": config.mini_batches, "lr": config.lr}
    vs.check_same_prompts(problems, prompts, geometry, args.threads, **kwargs)
    return lambda: dict(zip(("wall", "split"), vs.run_trl(geometry, problems, args.threads, **kwargs)))


# ------------------------------------------------------------------------------------------------ the report
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=default_model(), required=default_model() is None,
                        help="the dequantised SmolLM2-135M-Instruct folder (default: `cegppo fetch-model smollm2`'s)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds; each runs every contender once")
    parser.add_argument("--steps", type=int, default=1, help="rollout batches per contender run")
    parser.add_argument("--prompts", type=int, default=8, help="P prompts per step (the preset's 8)")
    parser.add_argument("--group", type=int, default=4, help="G responses per prompt (the preset's 4)")
    parser.add_argument("--new-tokens", type=int, default=64, help="at most this many new tokens (the preset's 64)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--without-trl", action="store_true", help="our two samplers only (runs in .venv)")
    parser.add_argument("--out", default="", help="also write the report to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    lines = []

    def say(text=""):
        print(text, flush=True)
        lines.append(text)

    import transformers

    trl_version = "not run"
    if not args.without_trl:
        import trl
        trl_version = trl.__version__
    say(f"# benchmarks/bench_smollm2.py, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    say(f"command: {' '.join([os.path.basename(sys.executable)] + sys.argv)}")
    say(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), transformers {transformers.__version__}, trl {trl_version}")
    say(f"load before: {_uptime()}")
    say(f"model: {args.model}; P x G = {args.prompts} x {args.group}, <= {args.new_tokens} new tokens, "
        f"{args.steps} step(s) a run, {args.rounds} round(s)")
    machine = [(gemm_rate(), read_bandwidth())]
    say(f"machine before: GEMM {machine[0][0]:.1f} GFLOP/s, read bandwidth {machine[0][1]:.1f} GB/s")

    contenders = {name: (lambda s=sampler: run_ours(args, s, ModelWork)) for name, sampler in SAMPLERS.items()}
    if not args.without_trl:
        contenders["trl"] = trl_setup(args)
    names, results = list(contenders), {name: [] for name in contenders}
    for i in range(args.rounds):
        for name in names[i % len(names):] + names[:i % len(names)]:
            results[name].append(contenders[name]())
            say(f"  round {i + 1}: {name} {results[name][-1]['wall']:.1f} s (load {os.getloadavg()[0]:.2f})")
    machine.append((gemm_rate(), read_bandwidth()))
    say(f"machine after: GEMM {machine[1][0]:.1f} GFLOP/s, read bandwidth {machine[1][1]:.1f} GB/s; "
        f"load after: {_uptime()}")
    gemm, bandwidth = (statistics.mean(m[0] for m in machine), statistics.mean(m[1] for m in machine))
    report(results, gemm, bandwidth, args, say)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


def report(results: dict, gemm: float, bandwidth: float, args, say) -> None:
    median = statistics.median
    say(f"\nmedians of {args.rounds} round(s); GEMM {gemm:.1f} GFLOP/s and bandwidth {bandwidth:.1f} GB/s "
        f"(mean of before and after)")
    say("| contender | wall s | sampling | grading | old log-probs | update | rest | update FLOP/s / GEMM "
        "| old log-probs FLOP/s / GEMM | decode bytes/s / bandwidth |")
    say("|---|---|---|---|---|---|---|---|---|---|")
    for name, runs in results.items():
        split = {k: median(r["split"].get(k, 0.0) for r in runs) for k in runs[0]["split"]}
        wall = median(r["wall"] for r in runs)
        sampling, grading = split.get("generate", 0.0), split.get("reward", 0.0)
        old, update = split.get("old_logp", 0.0), split.get("update", 0.0)
        rest = wall - sampling - grading - old - update
        cells = [f"{x:.1f} ({x / wall:.0%})" for x in (sampling, grading, old, update, rest)]
        if "update_flops" in runs[0]:
            flops = median(r["update_flops"] for r in runs)
            decode = median(r["decode_bytes"] / r["split"]["generate"] for r in runs)
            cells += [f"{3 * flops / update / 1e9 / gemm:.2f}" if update else "-",
                      f"{flops / old / 1e9 / gemm:.2f}" if old else "-", f"{decode / 1e9 / bandwidth:.2f}"]
        else:
            cells += ["-", "-", "-"]
        say(f"| {name} | {wall:.1f} | " + " | ".join(cells) + " |")
    walls = {name: [r["wall"] for r in runs] for name, runs in results.items()}
    base = walls["ours-hf"]
    for name in walls:
        if name != "ours-hf":
            per_round = [w / b for w, b in zip(walls[name], base)]
            say(f"{name} / ours-hf wall: per round {', '.join(f'{x:.2f}' for x in per_round)}")


def default_model() -> str | None:
    """The folder ``cegppo fetch-model smollm2`` writes, when it holds a model; otherwise None (--model needed)."""
    try:
        from cegppo_edu.pretrained import smollm2
    except ImportError:
        return None
    path = smollm2.model_dir()
    return path if os.path.isfile(os.path.join(path, "config.json")) else None


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return f"load average {os.getloadavg()}"


if __name__ == "__main__":
    main()
