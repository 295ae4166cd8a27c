"""GPU check for chapter 6 (the GPU chapter): memory and speed of the DeepSeek-R1-Distill-Qwen-1.5B architecture under the
recipe's memory settings, with random weights (nothing is downloaded).

Measures, on the CUDA device:
  1. one optimizer micro-step (forward + backward + AdamW step) on one sequence of 8,192 tokens (then 16,384 if
     it fits) with fp32 master weights, bf16 autocast, gradient checkpointing and chunked log-probs / entropy
     (``cegppo_edu.entropy.token_logp_and_entropy``) feeding the CE-GPPO loss: peak memory, the resident memory
     of weights + gradients + AdamW state, training tokens/s and model-FLOPs utilisation (MFU);
  2. Hugging Face ``generate`` tokens/s for a small batch (8 prompts x 256 new tokens, bf16 weights, KV cache);
  3. with ``--vllm MODEL_DIR`` (vLLM installed): that the weight sync is right. vLLM loads MODEL_DIR, the trainer's
     copy of the same model is moved off it (one noisy step on every weight), ``VLLMSampler.sync_weights`` hands
     the trainer's weights over, and vLLM's log-probs of the tokens it samples are compared with the trainer's
     teacher-forced log-probs of the same tokens: before the sync they differ, after it they must agree within a
     tolerance (``check_weight_sync``). Run this before training: a broken sync trains on rollouts of a policy that
     is not the one being optimised.

MFU = model FLOPs per token x tokens/s / the card's dense bf16 peak. Model FLOPs per token are 6·N (N = the
parameters that do matrix products: all but the input embedding table; the recomputation of gradient
checkpointing is not counted, by convention), and a second figure adds causal attention, 6·L·d·T per token.

Prints one JSON summary at the end and writes it to $OUT/gpu_check.json when OUT is set (or to --out). Without a
usable CUDA device it says why (CPU-only torch, no driver, a driver too old for torch's CUDA build) and exits 1. ``--tiny`` runs a small Qwen2 on whatever device there is (the CPU in the
tests) to check the code path in seconds.

    python benchmarks/gpu_check.py                 # on a GPU machine: about 1-3 minutes on an H100
    python benchmarks/gpu_check.py --vllm deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B   # + the vLLM weight sync
    python benchmarks/gpu_check.py --tiny          # code-path check on a CPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

try:  # run from a checkout without `pip install -e .` (a bare GPU machine before set-up)
    import cegppo_edu  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

R1_DISTILL_QWEN_1P5B = dict(  # the model's config.json (hidden 1536, 28 layers, untied head)
    vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
    num_key_value_heads=2, max_position_embeddings=131072, rope_theta=10000.0, rms_norm_eps=1e-6,
    tie_word_embeddings=False, use_sliding_window=False, hidden_act="silu", bos_token_id=151643,
    eos_token_id=151643)
TINY = dict(R1_DISTILL_QWEN_1P5B, vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, bos_token_id=0,
            eos_token_id=1)

# Dense bf16 tensor-core peaks in TFLOP/s from NVIDIA's data sheets (without sparsity). First match wins, so
# the more specific names come first.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("GH200", 989.4), ("H200", 989.4),
    ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.05), ("L4", 121.0), ("A10", 125.0),
)
TIME_BUDGET_S = 240.0  # optional parts are skipped past this, so the whole check stays under ~5 minutes


def peak_bf16_tflops(device_name: str) -> float | None:
    """The card's dense bf16 peak from ``PEAK_BF16_TFLOPS``, or None for a card not in the table."""
    name = device_name.upper()
    for key, tflops in PEAK_BF16_TFLOPS:
        if all(part in name for part in key.upper().split()):
            return tflops
    return None


def matmul_params(model) -> int:
    """Parameters that take part in matrix products: all but the input embedding table (a lookup)."""
    embedding = model.get_input_embeddings().weight
    return sum(p.numel() for p in model.parameters() if p is not embedding)


def flops_per_token(n_matmul_params: int, n_layers: int, hidden: int, seq_len: int, attention: bool) -> float:
    """Training FLOPs per token: 6·N (forward 2N + backward 4N), plus 6·L·d·T for causal attention when asked
    (the PaLM appendix count 12·L·d·T, halved for the causal mask)."""
    return 6.0 * n_matmul_params + (6.0 * n_layers * hidden * seq_len if attention else 0.0)


def mfu(tokens_per_s: float, flops_token: float, peak_tflops: float | None) -> float | None:
    return None if not peak_tflops else tokens_per_s * flops_token / (peak_tflops * 1e12)


def build_model(tiny: bool, device: torch.device):
    from transformers import Qwen2Config, Qwen2ForCausalLM
    config = Qwen2Config(**(TINY if tiny else R1_DISTILL_QWEN_1P5B))
    torch.manual_seed(0)
    with device:
        model = Qwen2ForCausalLM(config)  # fp32 master weights, random init
    return model.float()


def set_checkpointing(model, on: bool) -> None:
    """Gradient (activation) checkpointing; transformers 5.2x renamed the methods, older 5.x has the old names."""
    if hasattr(model, "activation_checkpointing_enable"):
        enable, disable, key = (model.activation_checkpointing_enable, model.activation_checkpointing_disable,
                                "activation_checkpointing_kwargs")
    else:
        enable, disable, key = (model.gradient_checkpointing_enable, model.gradient_checkpointing_disable,
                                "gradient_checkpointing_kwargs")
    if on:
        enable(**{key: {"use_reentrant": False}})
    else:
        disable()


def gib(n_bytes: float) -> float:
    return round(n_bytes / 2**30, 3)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_microstep(model, optimizer, ids, chunk_size):
    """One optimizer micro-step as the trainer runs it: chunked log-probs/entropy -> CE-GPPO loss -> AdamW."""
    from cegppo_edu.entropy import token_logp_and_entropy
    from cegppo_edu.lm.batching import attention_guard
    from cegppo_edu.losses import ce_gppo
    with torch.autocast(device_type=ids.device.type, dtype=torch.bfloat16), attention_guard(ids.device, torch.bfloat16):
        logits = model(input_ids=ids).logits  # (1, T, V)
    logp, entropy = token_logp_and_entropy(logits[:, :-1], ids[:, 1:], chunk_size=chunk_size)  # (1, T-1)
    old_logp = logp.detach() + 0.05 * torch.randn_like(logp)  # ratios spread around 1, so some are clipped
    adv = torch.ones_like(logp)
    loss = ce_gppo(logp, old_logp, adv, torch.ones_like(logp))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    resident = torch.cuda.memory_allocated(ids.device) if ids.device.type == "cuda" else 0  # weights+grads+Adam
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach()), float(entropy.mean()), resident


def measure_training(model, device, seq_len, steps, chunk_size, peak_tflops):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.1,
                                  fused=device.type == "cuda")
    ids = torch.randint(2, model.config.vocab_size, (1, seq_len), device=device)
    train_microstep(model, optimizer, ids, chunk_size)  # warm-up: allocates the AdamW state
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        loss, entropy, resident = train_microstep(model, optimizer, ids, chunk_size)
    sync(device)
    seconds = (time.perf_counter() - start) / steps
    tokens_per_s = seq_len / seconds
    cfg = model.config
    n = matmul_params(model)
    result = {
        "seq_len": seq_len, "status": "ok", "seconds_per_microstep": round(seconds, 4),
        "tokens_per_s": round(tokens_per_s, 1),
        "mfu_6n": _round(mfu(tokens_per_s, flops_per_token(n, 0, 0, 0, False), peak_tflops)),
        "mfu_6n_plus_attention": _round(mfu(tokens_per_s, flops_per_token(
            n, cfg.num_hidden_layers, cfg.hidden_size, seq_len, True), peak_tflops)),
        "loss": round(loss, 4), "mean_entropy": round(entropy, 4),
    }
    if device.type == "cuda":
        result["peak_allocated_gib"] = gib(torch.cuda.max_memory_allocated(device))
        result["peak_reserved_gib"] = gib(torch.cuda.max_memory_reserved(device))
        result["weights_grads_adam_gib"] = gib(resident)
    del optimizer
    return result


def _round(x, digits=4):
    return None if x is None else round(x, digits)


def measure_generation(model, device, batch, prompt_len, new_tokens):
    """HF ``generate`` with the KV cache, bf16 weights, sampling at temperature 1, a fixed number of tokens."""
    set_checkpointing(model, False)
    model.to(torch.bfloat16).eval()
    model.config.use_cache = True
    ids = torch.randint(2, model.config.vocab_size, (batch, prompt_len), device=device)
    kwargs = dict(attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0, top_p=1.0,
                  pad_token_id=0)
    from cegppo_edu.lm.batching import attention_guard
    with torch.no_grad(), attention_guard(device, torch.bfloat16):
        model.generate(ids, max_new_tokens=8, min_new_tokens=8, **kwargs)  # warm-up
        sync(device)
        start = time.perf_counter()
        out = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **kwargs)
        sync(device)
    seconds = time.perf_counter() - start
    generated = (out.shape[1] - prompt_len) * batch
    return {"batch": batch, "prompt_len": prompt_len, "new_tokens": new_tokens, "seconds": round(seconds, 3),
            "tokens_per_s": round(generated / seconds, 1)}


# The sync check's verdict: after a correct sync, the mean |log π_vLLM − log π_trainer| over the sampled tokens must
# be at most this (nats). Measured on the CPU stand-in (tests/test_math_gpu_check.py: a bf16 copy of the weights
# sampling, the fp32 trainer under bf16 autocast scoring, as vLLM and the trainer do; a tiny random Qwen2, 3 seeds):
# 0.0007-0.0012 after a right sync, 0.12-0.15 before it (noise 0.5). vLLM's fused GPU kernels against HF's add
# rounding differences of the same kind, larger on a real model, so the tolerance sits ~100x above the stand-in's
# rounding; what tells a sync that did not happen is the ratio below (a missing sync leaves the gap unchanged).
LOGPROB_GAP_TOLERANCE = 0.1
# ... and the gap before the sync must be at least this many times the gap after it (else the check could not tell).
MIN_GAP_RATIO = 5.0


def teacher_forced_logps(model, prompts, responses, pad_id, autocast_dtype=torch.bfloat16) -> list[list[float]]:
    """The trainer's log π of each response token given its prompt, computed as the trainer computes old
    log-probs (``batching.logp_entropy_influence``, bf16 autocast, temperature 1)."""
    from cegppo_edu.lm.batching import collate, logp_entropy_influence

    device = next(model.parameters()).device
    batch = collate(prompts, responses, pad_id, device)
    with torch.no_grad():
        logp, _, _ = logp_entropy_influence(model, batch, with_entropy=False, autocast_dtype=autocast_dtype)
    return [logp[i, :len(r)].tolist() for i, r in enumerate(responses)]


def logprob_gap(sampled: list[list[float]], scored: list[list[float]]) -> float:
    """Mean over tokens of |log π_sampler − log π_trainer| (the sampler's log-probs of its own sampled tokens)."""
    pairs = [(a, b) for row_a, row_b in zip(sampled, scored, strict=True) for a, b in zip(row_a, row_b, strict=True)]
    return sum(abs(a - b) for a, b in pairs) / max(len(pairs), 1)


def check_weight_sync(trainer_model, sampler, prompts, new_tokens, pad_id, noise=0.05, seed=0,
                      autocast_dtype=torch.bfloat16) -> dict:
    """The sync check of step 3, with any sampler that holds its own copy of the weights (vLLM on a GPU).

    The trainer's weights are moved off the sampler's (each weight w becomes w·(1 + noise·ε), ε ~ N(0, 1)), then
    ``sampler.sync_weights`` is called. Before and after, the sampler samples responses at temperature 1 with its
    own log-probs (vLLM: ``logprobs=0``, raw log-probs, which at temperature 1 are the sampling distribution's) and
    the trainer scores the very same tokens, teacher-forced (``teacher_forced_logps``). A right sync makes the
    two agree up to kernel rounding (gap ≤ ``LOGPROB_GAP_TOLERANCE``); before it, they must differ clearly (gap at
    least ``MIN_GAP_RATIO`` × the gap after). Comparing log-probs, not greedy tokens: a near-tie flips a greedy
    token between two correct kernels, and a flat distribution has many near-ties.
    """
    generator = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for p in trainer_model.parameters():
            p.mul_(1 + noise * torch.randn(p.shape, generator=generator).to(p.device, p.dtype))

    def gap() -> float:
        rollout = sampler.generate(prompts, n=1, max_new_tokens=new_tokens, temperature=1.0, top_p=1.0, seed=seed)
        scored = teacher_forced_logps(trainer_model, prompts, rollout.response_ids, pad_id, autocast_dtype)
        return logprob_gap(rollout.response_logp, scored)

    before = gap()
    sampler.sync_weights(trainer_model)
    after = gap()
    return {"prompts": len(prompts), "new_tokens": new_tokens, "logprob_gap_before_sync": round(before, 4),
            "logprob_gap_after_sync": round(after, 4), "tolerance": LOGPROB_GAP_TOLERANCE,
            "ok": after <= LOGPROB_GAP_TOLERANCE and before >= MIN_GAP_RATIO * after}


def measure_vllm_sync(model_dir: str, device, prompts: int = 16, new_tokens: int = 64):
    """Step 3 on a GPU: vLLM from ``model_dir`` beside the trainer's fp32 copy of the same model, on the R1
    prompts of the smoke mode's made-up problems (real text, not random tokens)."""
    from cegppo_edu.gpu.math_data import load_problems
    from cegppo_edu.gpu.presets import SMOKE_MATH_DATA
    from cegppo_edu.gpu.prompts import encode_r1_prompt
    from cegppo_edu.gpu.vllm_sampler import VLLMSampler
    from cegppo_edu.lm.models import load_model_and_tokenizer

    trainer_model, tokenizer = load_model_and_tokenizer(model_dir, "float32", str(device))
    ids = [encode_r1_prompt(p.question, tokenizer) for p in load_problems(SMOKE_MATH_DATA)][:prompts]
    sampler = VLLMSampler(model_dir, gpu_memory_utilization=0.3,
                          max_model_len=max(len(i) for i in ids) + new_tokens, sleep_level=1)
    try:
        return check_weight_sync(trainer_model, sampler, ids, new_tokens, tokenizer.pad_token_id)
    finally:
        sampler.close()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="small Qwen2 on any device (code-path check)")
    parser.add_argument("--seq-lens", default=None,
                        help="comma-separated micro-step lengths in tokens (default 8192,16384; tiny: 64,128)")
    parser.add_argument("--steps", type=int, default=3, help="measured micro-steps per length (after warm-up)")
    parser.add_argument("--chunk-size", type=int, default=1024, help="tokens per log-prob/entropy chunk")
    parser.add_argument("--gen-batch", type=int, default=8)
    parser.add_argument("--gen-prompt-len", type=int, default=128)
    parser.add_argument("--gen-tokens", type=int, default=None, help="new tokens (default 256; tiny: 16)")
    parser.add_argument("--out", default=None, help="JSON file (default $OUT/gpu_check.json when OUT is set)")
    parser.add_argument("--vllm", metavar="MODEL_DIR", default=None,
                        help="also check the vLLM weight sync with this model (a folder or Hub id; needs vLLM)")
    args = parser.parse_args(argv)
    lens = args.seq_lens or ("64,128" if args.tiny else "8192,16384")
    try:
        args.seq_lens = [int(s) for s in lens.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seq-lens={lens!r} must be comma-separated integers")
    if not args.seq_lens or min(args.seq_lens) < 2:
        parser.error(f"--seq-lens={lens!r}: each length must be at least 2")
    for name in ("steps", "chunk_size", "gen_batch", "gen_prompt_len"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}={getattr(args, name)} is outside the allowed range [1, inf)")
    args.gen_tokens = args.gen_tokens or (16 if args.tiny else 256)
    return args


def write_summary(summary: dict, out: str | None) -> Path | None:
    print(json.dumps(summary, indent=2))
    target = Path(out) if out else (Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else None)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(summary, indent=2) + "\n")
    return target


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    import transformers
    summary = {"torch": torch.__version__, "transformers": transformers.__version__,
               "python": platform.python_version(), "model": "tiny Qwen2" if args.tiny else
               "DeepSeek-R1-Distill-Qwen-1.5B architecture, random weights"}
    if not torch.cuda.is_available() and not args.tiny:
        from cegppo_edu.lm.device import cuda_status

        status = cuda_status()
        print(f"gpu_check: no usable CUDA device; nothing measured. {status.problem()} "
              f"(or pass --tiny to check the code path on this CPU).", file=sys.stderr)
        summary.update(status="no-gpu", device=None, problem=status.problem(), driver=status.driver,
                       torch_cuda=status.torch_cuda)
        write_summary(summary, args.out)
        return 1
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    peak = peak_bf16_tflops(name) if device.type == "cuda" else None
    summary.update(status="ok", device=name, peak_bf16_tflops=peak)
    if device.type == "cuda":
        summary["device_memory_gib"] = gib(torch.cuda.get_device_properties(device).total_memory)

    model = build_model(args.tiny, device)
    set_checkpointing(model, True)
    summary["gradient_checkpointing"] = bool(getattr(model, "is_activation_checkpointing", None)
                                             if hasattr(model, "is_activation_checkpointing")
                                             else model.is_gradient_checkpointing)
    model.config.use_cache = False
    model.train()
    summary["n_params"] = sum(p.numel() for p in model.parameters())
    summary["n_matmul_params"] = matmul_params(model)
    summary["training"] = []
    for i, seq_len in enumerate(args.seq_lens):
        if i > 0 and time.perf_counter() - started > TIME_BUDGET_S:
            summary["training"].append({"seq_len": seq_len, "status": "skipped: time budget"})
            continue
        try:
            summary["training"].append(measure_training(model, device, seq_len, args.steps, args.chunk_size, peak))
        except torch.cuda.OutOfMemoryError:
            summary["training"].append({"seq_len": seq_len, "status": "out of memory"})
            model.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    summary["generation"] = measure_generation(model, device, args.gen_batch, args.gen_prompt_len,
                                               args.gen_tokens)
    if args.vllm:
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
        summary["vllm_sync"] = measure_vllm_sync(args.vllm, device)
    summary["total_seconds"] = round(time.perf_counter() - started, 1)
    write_summary(summary, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
