"""Configuration of the LM trainer: one dataclass, validated, named presets, ``key=value`` overrides.

- ``TrainConfig``: every field has a comment saying what it is, its paper symbol where there is one, and
  where its default comes from. ``None`` for a clip/β field means "the chosen loss's own default" (e.g. DAPO's
  ε_h = 0.28), read from the loss function's signature, so the defaults live in ``losses`` only.
- ``validate(config)``: raises ``ValueError`` naming the first bad field and its allowed range.
- Presets: ``register_preset(name, config, smoke=overrides)``; ``get_preset(name, smoke=False)``.
- Plug-ins: ``task``, ``sampler`` and ``reward`` are names in ``TASKS`` / ``SAMPLERS`` / ``REWARDS`` or a
  ``"module:function"`` path to a factory, so the GPU chapter plugs in math data, math-verify and vLLM without
  editing the trainer. Factories: ``task(config) -> tasks.TaskData``; ``sampler(config, model, tokenizer) ->
  interfaces.Sampler``; ``reward(config) -> interfaces.RewardFn``.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import math
import os
import typing
from dataclasses import dataclass, field

from .interfaces import check_samples_per_prompt
from .losses import LOSSES, get_loss

# Short names for the plug-ins; modules are imported only when a run uses them (vLLM only on a GPU run).
TASKS: dict[str, str] = {"arith": "cegppo_edu.tasks:make_addition_task_from_config",
                         "math": "cegppo_edu.math_data:make_math_task"}
SAMPLERS: dict[str, str] = {"hf": "cegppo_edu.rollout:make_hf_sampler",
                            "vllm": "cegppo_edu.vllm_sampler:make_vllm_sampler"}
REWARDS: dict[str, str] = {"exact_match": "cegppo_edu.rewards:make_exact_match",
                           "math_verify": "cegppo_edu.math_reward:make_math_reward"}
_REGISTRIES = {"task": TASKS, "sampler": SAMPLERS, "reward": REWARDS}


@dataclass
class TrainConfig:
    # ---- run ----
    seed: int = 0  # seeds everything (model init, problem order, sampling); same seed, same metrics
    steps: int = 200  # RL steps; one step = one rollout batch of P×G responses (the paper's "training step")
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda", "cuda:N"
    num_threads: int = 0  # torch CPU threads; 0 leaves torch's default (1 is fastest on a shared 2-core box)

    # ---- model ----
    model_path: str = ""  # HF directory or hub id; "" builds the tiny Qwen2 + char tokenizer (models.py)
    tiny_hidden_size: int = 128  # tiny Qwen2 width (only when model_path == ""); 4×128 ≈ 0.8M parameters
    tiny_layers: int = 4  # tiny Qwen2 depth
    tiny_heads: int = 4  # attention heads of the tiny Qwen2
    tiny_kv_heads: int = 2  # key/value heads (grouped-query attention, as in Qwen2)
    tiny_intermediate_size: int = 384  # SwiGLU width of the tiny Qwen2 (3× hidden)
    dtype: str = "float32"  # weight dtype; float32 = fp32 master weights (DESIGN.md: bf16 weights lose updates)
    autocast_dtype: str = "none"  # "none" | "bfloat16" | "float16": autocast for forward passes (GPU memory/speed)
    gradient_checkpointing: bool = False  # recompute activations in backward (GPU memory); HF's implementation
    attn_implementation: str = ""  # "" = HF default (sdpa); e.g. "flash_attention_2" on a GPU

    # ---- task and prompts ----
    task: str = "arith"  # name in config.TASKS or "module:function" returning tasks.TaskData
    n_digits: int = 2  # arith: most digits of an operand
    min_digits: int = 1  # arith: fewest digits of an operand
    n_train: int = 2000  # arith: training problems (RL prompts and warm-start examples)
    n_heldout: int = 200  # arith: held-out problems (disjoint from train)
    data_path: str = ""  # file-based tasks: training data (a local path or a dataset name)
    eval_data_path: str = ""  # file-based tasks: held-out data ("" = the task's own held-out split)
    prompt_template: str = "{problem}"  # user message, applied by the task factory; {problem} is replaced
    system_prompt: str = ""  # "" = no system turn (R1-Distill: none, DESIGN.md)
    prompt_encoder: str = ""  # "" = chat template; or "module:function(message, tokenizer) -> ids" (R1 runs)

    # ---- warm start (supervised fine-tuning before RL; chapter 4 only) ----
    warm_start_steps: int = 0  # SFT optimizer steps before RL; 0 = start RL from model_path as is
    warm_start_lr: float = 3e-3  # SFT learning rate (AdamW)
    warm_start_batch_size: int = 64  # SFT examples per step

    # ---- sampling ----
    sampler: str = "hf"  # name in config.SAMPLERS ("hf"; the GPU chapter adds "vllm") or "module:function"
    prompts_per_step: int = 16  # P: prompts sampled per RL step (authors: 256)
    group_size: int = 8  # G: responses per prompt (authors: 8)
    max_new_tokens: int = 8  # response cap in tokens (authors: 16,384)
    temperature: float = 1.0  # rollout temperature (authors: 1.0)
    top_p: float = 1.0  # rollout nucleus (authors: 1.0)
    sampler_batch_sequences: int = 0  # sequences per HF generate call; 0 = all at once
    max_prompt_tokens: int = 1024  # longer prompts are skipped; vLLM: max_model_len = this + max_new_tokens
    vllm_gpu_memory_utilization: float = 0.35  # vLLM: GPU memory fraction for weights + KV cache (colocated)
    vllm_sleep_level: int = 1  # vLLM: 1 = weights to CPU RAM and KV cache freed between rollouts, 2 = discard

    # ---- reward and advantages ----
    reward: str = "exact_match"  # name in config.REWARDS (the GPU chapter adds "math_verify") or "module:function"
    reward_correct: float = 1.0  # reward of a correct response (authors: +1); accuracy counts these
    reward_wrong: float = 0.0  # reward of a wrong response (authors: −1; affine changes do not move Â)
    reward_timeout_s: float = 10.0  # math-verify: time bound per graded answer (process pool)
    reward_workers: int = 2  # math-verify: grading processes
    scale_adv_by_std: bool = True  # Â = (R − mean)/(std + 1e-6) (GRPO); False = Dr. GRPO's R − mean
    drop_zero_variance: bool = True  # drop groups whose G rewards are equal (DAPO dynamic sampling; authors: on)
    max_kept_prompts: int = 0  # keep at most this many groups after dropping (authors: 128 of 256); 0 = all

    # ---- loss (PAPER.md §2) ----
    method: str = "ce_gppo"  # a name in losses.LOSSES
    eps_low: float | None = None  # ε_l, lower clip width; None = the method's default (0.2; CISPO 1.0)
    eps_high: float | None = None  # ε_h, upper clip width; None = the method's default (0.2; DAPO/CISPO 0.28)
    beta1: float | None = None  # β1, weight of lower-side (Â<0) clipped tokens; CE-GPPO only; None = 0.5
    beta2: float | None = None  # β2, weight of upper-side (Â>0) clipped tokens; CE-GPPO only; None = 1.0
    dual_clip: float | None = None  # dual-clip c for Â<0 (authors' code: 10); None = off
    loss_agg: str = "token-mean"  # losses.AGG_MODES; token-mean as in DAPO and CE-GPPO
    nll_coef: float = 0.0  # weight of an NLL term on correct responses (authors' code: 0.1; off in the paper's eq.)

    # ---- optimisation ----
    lr: float = 3e-4  # AdamW learning rate (authors: 1e-6 for 1.5B; tiny-arith: 3e-4, 1e-3 was unstable)
    weight_decay: float = 0.0  # AdamW weight decay (authors: 0.1)
    adam_b1: float = 0.9  # AdamW β₁ (PyTorch default; named so as not to clash with CE-GPPO's β1)
    adam_b2: float = 0.999  # AdamW β₂ (PyTorch default)
    warmup_steps: int = 10  # linear lr warm-up, in RL steps (authors: 10), then constant
    max_grad_norm: float = 1.0  # gradient-norm clip (authors: 1.0); a non-finite norm skips the step
    mini_batches: int = 4  # K: optimizer steps per pass over a rollout batch (authors: up to 8); ≥2 lets clipping act
    update_epochs: int = 1  # passes over each rollout batch (authors: 1)
    micro_batch_tokens: int = 0  # token budget (padded) per forward/backward; 0 = a whole mini-batch at once
    logp_chunk: int = 1024  # tokens per chunk when computing log-probs and entropy from logits

    # ---- metrics ----
    eval_every: int = 10  # held-out accuracy every N RL steps (and at step 0 and at the end); 0 = never
    eval_problems: int = 0  # held-out problems per evaluation; 0 = all
    eval_samples: int = 1  # responses per held-out problem (accuracy = avg@k)
    eval_temperature: float = 0.0  # 0 = greedy (authors evaluate at 0.6 / top_p 0.95)
    eval_top_p: float = 1.0  # nucleus for evaluation
    hp_threshold: float = 0.5  # probability splitting HP from LP tokens (paper's fig. 1, read off the figure)
    token_group_stats: bool = True  # per-group counts, clip fractions, weights and entropy pushes each step
    measure_entropy_change: bool = True  # one extra no-grad pass: entropy of the batch after the update phase

    # ---- checkpoints ----
    checkpoint_every: int = 50  # RL steps between checkpoints (one is always written at the end); 0 = end only
    keep_checkpoints: int = 2  # complete checkpoints kept on disk (older ones are deleted)


def _field_types() -> dict[str, typing.Any]:
    return typing.get_type_hints(TrainConfig)


def _base_type(annotation):
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return (args[0], True) if args else (annotation, False)


def loss_defaults(method: str) -> dict:
    """The hyper-parameter defaults of a loss, read from its signature (the single source)."""
    params = inspect.signature(get_loss(method)).parameters
    return {name: p.default for name, p in params.items() if p.default is not inspect.Parameter.empty}


def loss_kwargs(config: TrainConfig) -> dict:
    """Keyword arguments for ``get_loss(config.method)``: config values where set, else the loss's defaults."""
    defaults = loss_defaults(config.method)
    kwargs = {}
    for name in ("eps_low", "eps_high", "beta1", "beta2", "dual_clip"):
        if name in defaults:
            value = getattr(config, name)
            kwargs[name] = defaults[name] if value is None else value
    if "agg" in defaults:
        kwargs["agg"] = config.loss_agg
    return kwargs


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------
def _need(ok: bool, name: str, value, allowed: str) -> None:
    if not ok:
        raise ValueError(f"{name}={value!r} is outside the allowed range: {allowed}")


def validate(config: TrainConfig) -> TrainConfig:
    """Check every field; raise ``ValueError`` naming the first bad one and its allowed range."""
    for name, annotation in _field_types().items():  # types first: a str where an int belongs, etc.
        value = getattr(config, name)
        base, optional = _base_type(annotation)
        if value is None and optional:
            continue
        ok = isinstance(value, bool) if base is bool else (
            isinstance(value, base) and not isinstance(value, bool) if base is int else
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if base is float else isinstance(value, base))
        _need(ok, name, value, f"a finite {base.__name__}" + (" or None" if optional else ""))
    c = config
    positive_ints = ("steps", "tiny_hidden_size", "tiny_layers", "tiny_heads", "tiny_kv_heads",
                     "tiny_intermediate_size", "n_train", "n_heldout", "warm_start_batch_size", "prompts_per_step",
                     "max_new_tokens", "mini_batches", "update_epochs", "logp_chunk", "eval_samples",
                     "keep_checkpoints")
    for name in positive_ints:
        _need(getattr(c, name) >= 1, name, getattr(c, name), "an integer >= 1")
    for name in ("seed", "num_threads", "warm_start_steps", "sampler_batch_sequences", "max_kept_prompts",
                 "warmup_steps", "micro_batch_tokens", "eval_every", "eval_problems", "checkpoint_every"):
        _need(getattr(c, name) >= 0, name, getattr(c, name), "an integer >= 0")
    _need(c.group_size >= 2, "group_size", c.group_size, "an integer >= 2 (group advantages need 2 responses)")
    _need(1 <= c.n_digits <= 9, "n_digits", c.n_digits, "[1, 9]")
    _need(1 <= c.min_digits <= c.n_digits, "min_digits", c.min_digits, f"[1, n_digits={c.n_digits}]")
    _need(c.device == "auto" or c.device == "cpu" or c.device.startswith("cuda"), "device", c.device,
          '"auto", "cpu", "cuda" or "cuda:N"')
    _need(c.dtype in ("float32", "bfloat16", "float16"), "dtype", c.dtype, "float32, bfloat16 or float16")
    _need(c.autocast_dtype in ("none", "bfloat16", "float16"), "autocast_dtype", c.autocast_dtype,
          "none, bfloat16 or float16")
    _need(c.prompt_encoder == "" or ":" in c.prompt_encoder, "prompt_encoder", c.prompt_encoder,
          '"" or a "module:function" path')
    _need("{problem}" in c.prompt_template, "prompt_template", c.prompt_template, "a string containing {problem}")
    _need(0.0 < c.warm_start_lr < 1.0, "warm_start_lr", c.warm_start_lr, "(0, 1)")
    _need(0.0 < c.temperature <= 10.0, "temperature", c.temperature, "(0, 10] (RL samples; greedy is for eval)")
    _need(0.0 < c.top_p <= 1.0, "top_p", c.top_p, "(0, 1]")
    _need(c.max_prompt_tokens >= 1, "max_prompt_tokens", c.max_prompt_tokens, "an integer >= 1")
    _need(0.0 < c.vllm_gpu_memory_utilization < 1.0, "vllm_gpu_memory_utilization", c.vllm_gpu_memory_utilization,
          "(0, 1)")
    _need(c.vllm_sleep_level in (1, 2), "vllm_sleep_level", c.vllm_sleep_level, "1 or 2")
    _need(c.reward_timeout_s > 0.0, "reward_timeout_s", c.reward_timeout_s, "(0, inf)")
    _need(c.reward_workers >= 1, "reward_workers", c.reward_workers, "an integer >= 1")
    _need(c.reward_correct > c.reward_wrong, "reward_correct", c.reward_correct,
          f"greater than reward_wrong={c.reward_wrong}")
    _need(c.method in LOSSES, "method", c.method, f"one of {', '.join(sorted(LOSSES))}")
    from .losses import AGG_MODES, check_clip_params

    _need(c.loss_agg in AGG_MODES, "loss_agg", c.loss_agg, f"one of {', '.join(AGG_MODES)}")
    accepted = loss_defaults(c.method)
    for name in ("eps_low", "eps_high", "beta1", "beta2", "dual_clip"):
        _need(getattr(c, name) is None or name in accepted, name, getattr(c, name),
              f"None: method {c.method!r} takes no {name}")
    _need(c.loss_agg == "token-mean" or "agg" in accepted, "loss_agg", c.loss_agg,
          f"token-mean: method {c.method!r} fixes its own aggregation")
    k = loss_kwargs(c)
    check_clip_params(k.get("eps_low", 0.2), k.get("eps_high", 0.2), k.get("beta1", 0.0), k.get("beta2", 0.0),
                      k.get("dual_clip"), eps_low_max_closed=(c.method == "cispo"))
    _need(c.nll_coef >= 0.0, "nll_coef", c.nll_coef, "[0, inf)")
    _need(0.0 < c.lr < 1.0, "lr", c.lr, "(0, 1)")
    _need(0.0 <= c.weight_decay < 1.0, "weight_decay", c.weight_decay, "[0, 1)")
    for name in ("adam_b1", "adam_b2"):
        _need(0.0 <= getattr(c, name) < 1.0, name, getattr(c, name), "[0, 1)")
    _need(c.max_grad_norm > 0.0, "max_grad_norm", c.max_grad_norm, "(0, inf)")
    _need(c.mini_batches <= c.prompts_per_step * c.group_size, "mini_batches", c.mini_batches,
          f"[1, prompts_per_step × group_size = {c.prompts_per_step * c.group_size}]")
    _need(0.0 <= c.eval_temperature <= 10.0, "eval_temperature", c.eval_temperature, "[0, 10] (0 = greedy)")
    _need(0.0 < c.eval_top_p <= 1.0, "eval_top_p", c.eval_top_p, "(0, 1]")
    check_samples_per_prompt(c.eval_samples, c.eval_temperature, "eval_samples", "eval_temperature")
    _need(0.0 < c.hp_threshold < 1.0, "hp_threshold", c.hp_threshold, "(0, 1)")
    for kind, registry in _REGISTRIES.items():
        name = getattr(c, kind)
        _need(name in registry or ":" in name, kind, name,
              f"one of {', '.join(sorted(registry))} or a 'module:function' path")
    return config


# --------------------------------------------------------------------------------------------------
# Plug-in resolution
# --------------------------------------------------------------------------------------------------
def register(kind: str, name: str, factory) -> None:
    """Register a task, sampler or reward factory (a callable or a ``"module:function"`` string)."""
    if kind not in _REGISTRIES:
        raise ValueError(f"kind={kind!r} is not one of {', '.join(_REGISTRIES)}")
    _REGISTRIES[kind][name] = factory


def resolve(kind: str, name: str):
    """The factory a task/sampler/reward name stands for; imports its module lazily (vLLM only when used)."""
    target = _REGISTRIES[kind].get(name, name)
    if callable(target):
        return target
    module_name, _, attr = target.partition(":")
    if not attr:
        raise ValueError(f"{kind}={name!r} is neither registered ({', '.join(_REGISTRIES[kind])}) nor "
                         f"a 'module:function' path")
    return getattr(importlib.import_module(module_name), attr)


# --------------------------------------------------------------------------------------------------
# key=value overrides
# --------------------------------------------------------------------------------------------------
def _parse_value(name: str, text: str):
    base, optional = _base_type(_field_types()[name])
    if not text.strip() and base is not str:
        allowed = f"a {base.__name__}" + (" or none (the method's default)" if optional else "")
        raise ValueError(f"{name}= has no value; give {allowed}, e.g. {name}={_example(name)}")
    if optional and text.strip().lower() in ("none", "null"):
        return None
    try:
        if base is bool:
            lowered = text.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return lowered in ("true", "1", "yes")
        if base is int:
            return int(text)
        if base is float:
            return float(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} cannot be read as {base.__name__}") from None
    return text


# Names other trainers use for some fields: an unknown field close to one of these is pointed to the field.
ALIASES = {"learning_rate": "lr", "num_steps": "steps", "max_steps": "steps", "total_steps": "steps",
           "epsilon_low": "eps_low", "epsilon_high": "eps_high", "clip_ratio_low": "eps_low",
           "clip_ratio_high": "eps_high", "num_generations": "group_size", "batch_size": "prompts_per_step",
           "max_completion_length": "max_new_tokens", "max_tokens": "max_new_tokens", "ppo_epochs": "update_epochs",
           "num_iterations": "update_epochs", "steps_per_generation": "mini_batches", "loss_type": "method",
           "model": "model_path", "model_name": "model_path"}


def _example(name: str):
    default = getattr(TrainConfig(), name)
    return default if default is not None else 0.5


def unknown_field_message(key: str) -> str:
    """``unknown config field``, with the close field names (and aliases), or else every field's name."""
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    close = difflib.get_close_matches(key, names + list(ALIASES), n=4, cutoff=0.6)
    close += [n for n in names if n not in close and len(key) >= 3 and (key in n or n in key) and len(n) >= 3]
    suggested = list(dict.fromkeys(ALIASES.get(n, n) for n in close))[:4]
    if suggested:
        return f"unknown config field {key!r}; did you mean {', '.join(suggested)}?"
    return f"unknown config field {key!r}; the fields are: {', '.join(names)}"


def apply_overrides(config: TrainConfig, overrides: typing.Iterable[str] | dict) -> TrainConfig:
    """A copy of ``config`` with ``key=value`` strings (or a dict of values) applied, validated."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    changes = {}
    items = overrides.items() if isinstance(overrides, dict) else (_split(item) for item in overrides)
    for key, value in items:
        if key not in names:
            raise ValueError(unknown_field_message(key))
        changes[key] = _parse_value(key, value) if isinstance(value, str) and not isinstance(
            getattr(config, key), str) else value
    return validate(dataclasses.replace(config, **changes))


def _split(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ValueError(f"override {item!r} must look like key=value")
    key, _, value = item.partition("=")
    return key.strip(), value.strip()


def to_dict(config: TrainConfig) -> dict:
    return dataclasses.asdict(config)


def from_dict(values: dict) -> TrainConfig:
    return validate(TrainConfig(**values))


# --------------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------------
@dataclass
class Preset:
    config: TrainConfig
    description: str = ""
    smoke: dict = field(default_factory=dict)  # overrides applied by `cegppo train --smoke`


PRESETS: dict[str, Preset] = {}


def register_preset(name: str, config: TrainConfig, description: str = "", smoke: dict | None = None) -> None:
    """Add a named preset; ``smoke`` are the field overrides of its CPU smoke mode (``--smoke``)."""
    PRESETS[name] = Preset(validate(config), description, dict(smoke or {}))


def get_preset(name: str, smoke: bool = False) -> TrainConfig:
    """A fresh copy of a preset's config (with its smoke overrides when ``smoke``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}")
    preset = PRESETS[name]
    config = dataclasses.replace(preset.config)
    if smoke:
        if not preset.smoke:
            raise ValueError(f"preset {name!r} has no smoke mode")
        config = apply_overrides(config, preset.smoke)
    return config


# Chapter 4: a 0.8M-parameter Qwen2 learns 1-2 digit addition on a CPU. Sizes are the authors' setup scaled
# down (PAPER.md §4): P=16 prompts × G=8, K=4 mini-batch steps per rollout batch so that clipping acts.
register_preset(
    "tiny-arith",
    TrainConfig(seed=0, steps=150, num_threads=1, warm_start_steps=350, lr=3e-4, checkpoint_every=50),
    description="tiny Qwen2 (0.8M params, char tokenizer) on 1-2 digit addition, CPU, warm start then RL",
    smoke={"steps": 3, "warm_start_steps": 20, "eval_every": 3, "eval_problems": 32, "checkpoint_every": 0},
)


# --------------------------------------------------------------------------------------------------
# Chapter 5: DeepSeek-R1-Distill-Qwen-1.5B on math, on one GPU (book/gpu_recipe.md has the full ledger)
# --------------------------------------------------------------------------------------------------
R1_DISTILL_1P5B = "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"
# Made-up problems in the schema of each dataset (cegppo_edu/data/math/README.md), shipped inside the package so
# that the smoke mode (and the data-loader tests) work from an installed wheel.
SMOKE_MATH_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "math")

# The authors' setup (PAPER.md §4) scaled to one 80 GB GPU. Every value that differs from theirs says why.
R1_DISTILL_1GPU = TrainConfig(
    seed=0,
    steps=100,  # authors ≈1,000 steps on 128 GPUs; one rented GPU for hours (≈3,200 of the 30k problems)
    model_path=R1_DISTILL_1P5B,
    dtype="float32",  # fp32 master weights: bf16 weights with lr 1e-6 lose most updates (DESIGN.md)
    autocast_dtype="bfloat16",
    gradient_checkpointing=True,
    task="math",  # Kwai-Klear/KlearReasoner-MathSub-30K from the Hub; data_path= a local copy instead
    eval_data_path="",  # "" = AIME24 from the Hub (in-loop evaluation); a local file/folder works too
    prompt_template="{problem}",  # the instruction and <think> prefill come from prompt_encoder
    prompt_encoder="cegppo_edu.prompts:encode_prompt",  # R1-Distill conventions: no system turn
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
    "tiny_heads": 4, "tiny_kv_heads": 2, "tiny_intermediate_size": 192, "autocast_dtype": "none",
    "data_path": os.path.join(SMOKE_MATH_DATA, "mathsub30k_verl.jsonl"),
    "eval_data_path": os.path.join(SMOKE_MATH_DATA, "aime24_h4.parquet"),
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
