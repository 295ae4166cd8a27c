"""GPU check of the shared LM trainer (run by hand on a machine with CUDA; CI never runs it).

1. tiny-arith on CUDA from the committed warm start: fp32 vs bf16 autocast + gradient checkpointing +
   micro-batches by token budget; time per step, finiteness, and whether two identical runs agree.
2. The DeepSeek-R1-Distill-Qwen-1.5B *architecture* (Qwen2: 28 layers, hidden 1536, 12 heads, 2 KV heads, MLP
   8960, vocab 151,936) with random weights (no download) in fp32 master weights, trained by the same
   Trainer with bf16 autocast, gradient checkpointing and micro-batches: two RL steps of P×G responses of up to
   ``--new-tokens`` tokens from the HF sampler; prints peak GPU memory and the phase times.

    PYTHONPATH=. python3 benchmarks/bench_trainer_gpu.py [--new-tokens 256]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from cegppo_edu.lm.config import apply_overrides, get_preset
from cegppo_edu.lm.trainer import Trainer
from cegppo_edu.lm.run_dir import strip_timings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WARM = os.path.join(ROOT, "notebooks", "data", "ch04", "warm_start")


def tiny_runs() -> None:
    base = {"model_path": WARM, "warm_start_steps": 0, "device": "cuda", "steps": 3, "eval_every": 3,
            "checkpoint_every": 0, "num_threads": 0}
    results = {}
    for name, extra in (("fp32", {}), ("fp32 again", {}),
                        ("bf16+ckpt+micro", {"autocast_dtype": "bfloat16", "gradient_checkpointing": True,
                                             "micro_batch_tokens": 256})):
        config = apply_overrides(get_preset("tiny-arith"), {**base, **extra})
        trainer = Trainer(config, tempfile.mkdtemp(), progress=False)
        start = time.perf_counter()
        history = [trainer.train_step() for _ in range(config.steps)]
        torch.cuda.synchronize()
        results[name] = history
        finite = all(v == v and abs(v) != float("inf") for m in history for v in m.values())
        print(f"tiny-arith {name:16s}: {(time.perf_counter() - start) / config.steps:.3f} s/step, finite {finite}, "
              f"reward {[round(m['reward/mean'], 3) for m in history]}, "
              f"entropy {[round(m['entropy/mean'], 4) for m in history]}")
    same = strip_timings(results["fp32"]) == strip_timings(results["fp32 again"])
    print(f"tiny-arith fp32 on CUDA: two identical runs give identical metrics: {same}")


def big_run(new_tokens: int, prompts: int, group: int, micro_tokens: int) -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from cegppo_edu.lm.models import build_char_tokenizer

    tok = build_char_tokenizer()
    arch = Qwen2Config(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                       num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=4096,
                       tie_word_embeddings=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(arch)  # fp32 master weights
    n_params = sum(p.numel() for p in model.parameters())
    config = apply_overrides(get_preset("tiny-arith"), {
        "device": "cuda", "warm_start_steps": 0, "steps": 2, "eval_every": 0, "checkpoint_every": 0,
        "num_threads": 0, "prompts_per_step": prompts, "group_size": group, "max_new_tokens": new_tokens,
        "mini_batches": 2, "autocast_dtype": "bfloat16", "gradient_checkpointing": True,
        "micro_batch_tokens": micro_tokens, "lr": 1e-6, "weight_decay": 0.1, "drop_zero_variance": False})
    # A random model never answers a sum: reward odd-length responses so that groups have mixed rewards.
    trainer = Trainer(config, tempfile.mkdtemp(), model=model, tokenizer=tok, progress=False,
                      reward_fn=lambda texts, answers: [float(len(t) % 2) for t in texts])
    torch.cuda.reset_peak_memory_stats()
    for _ in range(config.steps):
        start = time.perf_counter()
        m = trainer.train_step()
        torch.cuda.synchronize()
        gen_tokens = m["response/length_mean"] * prompts * group
        print(f"1.5B-arch step {m['step']}: {time.perf_counter() - start:.1f} s | generate {m['time/generate']:.1f} s "
              f"({gen_tokens / m['time/generate']:.0f} tok/s, {gen_tokens:.0f} tokens) | old logp "
              f"{m['time/old_logp']:.1f} s | update {m['time/update']:.1f} s ({m['update/optimizer_steps']} steps,"
              f" skipped {m['update/skipped_steps']}) | grad norm {m['grad_norm/mean']:.3g} | loss {m['loss']:.3g}")
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(f"1.5B-arch: {n_params / 1e9:.2f}B parameters, peak GPU memory {peak:.1f} GiB (P×G = {prompts}×{group}, "
          f"up to {new_tokens} new tokens, micro-batch budget {micro_tokens} tokens)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--micro-tokens", type=int, default=4096)
    parser.add_argument("--skip-tiny", action="store_true")
    args = parser.parse_args()
    print(f"device {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    if not args.skip_tiny:
        tiny_runs()
    big_run(args.new_tokens, args.prompts, args.group, args.micro_tokens)


if __name__ == "__main__":
    main()
