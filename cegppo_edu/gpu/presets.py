"""The GPU chapter's presets: DeepSeek-R1-Distill-Qwen-1.5B on math, on one GPU, and their CPU smoke mode.

Importing this module (``import cegppo_edu.gpu`` does) registers the chapter's plug-ins in the trainer's
registries (``task="math"``, ``sampler="vllm"``, ``reward="math_verify"``) and its two presets. The recipe and
every change from the authors' setup are explained on the book page ``book/gpu_recipe.md``.
"""

from __future__ import annotations

import dataclasses
import os

from ..lm.config import TrainConfig, register, register_preset

register("task", "math", "cegppo_edu.gpu.math_data:make_math_task")
register("sampler", "vllm", "cegppo_edu.gpu.vllm_sampler:make_vllm_sampler")
register("reward", "math_verify", "cegppo_edu.gpu.math_reward:make_math_reward")
register("reward", "math_verify_authors", "cegppo_edu.gpu.math_reward:make_authors_math_reward")

# --------------------------------------------------------------------------------------------------
# Chapter 6: DeepSeek-R1-Distill-Qwen-1.5B on math, on one GPU (book/gpu_recipe.md has the full ledger)
# --------------------------------------------------------------------------------------------------
R1_DISTILL_1P5B = "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"
# Parameters of the presets' models, for the memory and disk arithmetic of `cegppo preflight` (nothing is loaded
# there). tests/test_math_gpu_check.py counts them from the architecture's config.
MODEL_PARAMS = {R1_DISTILL_1P5B: 1_777_088_000}
# Made-up problems in the schema of each dataset (cegppo_edu/gpu/data/math/README.md), shipped inside the package
# so that the smoke mode (and the data-loader tests) work from an installed wheel.
SMOKE_MATH_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "math")

# The authors' setup (the paper in brief, §4) scaled to one 80 GB GPU. Every value that differs from theirs says why.
R1_DISTILL_1GPU = TrainConfig(
    seed=0,
    steps=100,  # authors ≈1,000 steps on 128 GPUs; one rented GPU for hours (≈3,200 of the 30k problems)
    device="cuda",  # never "auto": without a usable CUDA device it stops at once and says why (setup.cuda_problem)
    model_path=R1_DISTILL_1P5B,
    dtype="float32",  # fp32 master weights: bf16 weights with lr 1e-6 lose most updates (DESIGN.md)
    autocast_dtype="bfloat16",
    gradient_checkpointing=True,
    task="math",  # Kwai-Klear/KlearReasoner-MathSub-30K from the Hub; data_path= a local copy instead
    eval_data_path="",  # "" = AIME24 from the Hub (in-loop evaluation); a local file/folder works too
    prompt_template="{problem}",  # the instruction and <think> prefill come from prompt_encoder
    prompt_encoder="cegppo_edu.gpu.prompts:encode_r1_prompt",  # R1-Distill conventions: no system turn
    sampler="vllm",  # colocated vLLM, asleep while the trainer trains; HF generate is the fallback ("hf")
    prompts_per_step=32,  # authors 256 (≤128 kept): generation dominates a step on one GPU
    group_size=8,  # authors 8
    max_new_tokens=8192,  # authors 16,384: halves generation time and the longest micro-batch
    temperature=1.0,
    top_p=1.0,
    max_prompt_tokens=1024,  # authors 4,096: competition problems are short; vLLM max_model_len = 9,216
    vllm_gpu_memory_utilization=0.5,  # 40 GB for vLLM's bf16 weights + KV cache (≈1.2M tokens) while generating
    vllm_sleep_level=1,
    reward="math_verify",
    reward_correct=1.0,
    reward_wrong=-1.0,  # authors: +1 / −1
    reward_timeout_s=10.0,
    reward_workers=4,
    drop_zero_variance=True,  # DAPO dynamic sampling, as the authors
    max_kept_prompts=0,  # authors keep ≤128 of 256; we keep every non-constant group of 32
    method="ce_gppo",  # ε_l = ε_h = 0.2, β1 = 0.5, β2 = 1 (the loss's defaults, the authors' 1.5B values)
    dual_clip=None,  # authors' code: 10 (switch: --set dual_clip=10)
    nll_coef=0.0,  # authors' code: 0.1 on correct responses (switch: --set nll_coef=0.1)
    lr=1e-6,
    weight_decay=0.1,
    warmup_steps=10,
    max_grad_norm=1.0,
    mini_batches=4,  # K: authors up to 8 (16-prompt mini-batches); K ≥ 2 makes clipping act at all
    update_epochs=1,
    micro_batch_tokens=8192,  # measured on an H100: 8k tokens peak 29.2 GiB allocated and 17.7k tok/s
    logp_chunk=1024,
    eval_every=20,  # AIME24 avg@4 at T = 0.6, top_p = 0.95 (authors: avg@32 on AIME24 and AIME25)
    eval_problems=0,
    eval_samples=4,
    eval_temperature=0.6,
    eval_top_p=0.95,
    checkpoint_every=10,  # a checkpoint (fp32 weights + AdamW) is ≈21 GB; lose at most 10 steps to pre-emption
    keep_checkpoints=2,
)

# The same code path on a CPU in seconds: a tiny random Qwen2 (same architecture family) with the character
# tokenizer, the fixture problems, the HF sampler and math-verify in its process pool. A random model never
# writes </think>, so every response scores −1 and the dynamic-sampling filter would drop every group:
# drop_zero_variance=False keeps them (all Â = 0), so the update phase still runs end to end.
R1_DISTILL_SMOKE = {
    "steps": 3, "device": "cpu", "num_threads": 1, "model_path": "", "tiny_hidden_size": 64, "tiny_layers": 2,
    "tiny_heads": 4, "tiny_kv_heads": 2, "tiny_intermediate_size": 192, "tiny_max_positions": 2048,
    "autocast_dtype": "none",
    "data_path": os.path.join(SMOKE_MATH_DATA, "mathsub30k_verl.jsonl"),
    "eval_data_path": os.path.join(SMOKE_MATH_DATA, "aime24_h4.jsonl"),  # JSON: a wheel without extras runs it
    "sampler": "hf", "prompts_per_step": 4, "group_size": 4, "max_new_tokens": 16, "max_prompt_tokens": 512,
    "reward_workers": 1, "drop_zero_variance": False, "lr": 1e-3, "warmup_steps": 1, "mini_batches": 2,
    "micro_batch_tokens": 512, "eval_every": 2, "eval_samples": 2, "checkpoint_every": 2,
}

register_preset(
    "r1-distill-1.5b-1gpu", R1_DISTILL_1GPU,
    description="DeepSeek-R1-Distill-Qwen-1.5B on KlearReasoner-MathSub-30K, one 80 GB GPU, vLLM rollouts",
    smoke=R1_DISTILL_SMOKE,
)
# 40-48 GB cards (L40S, A6000, A100 40 GB): the fp32 training state alone is 28.9 GiB (measured), so responses,
# micro-batches and vLLM's share shrink. No 8-bit Adam: the trainer has no optimizer switch (AdamW only).
register_preset(
    "r1-distill-1.5b-1gpu-48gb",
    dataclasses.replace(R1_DISTILL_1GPU, max_new_tokens=4096, micro_batch_tokens=4096,
                        vllm_gpu_memory_utilization=0.3),
    description="r1-distill-1.5b-1gpu for a 40-48 GB card: 4k-token responses and micro-batches, vLLM 30%",
    smoke=R1_DISTILL_SMOKE,
)
