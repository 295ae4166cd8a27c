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

from ..entropy import DEFAULT_CHUNK
from ..losses import AGG_MODES, HYPER_RANGES, METHODS, get_method
from ..schedules import SCHEDULES, scheduled
from ..steering import BETA_CONTROLLERS, CONTROLLERS, PI_KI, PI_KP, BetaBounds, check_controller
from ..token_groups import HP_THRESHOLD
from ..validation import (LEARNING_RATE, NON_NEGATIVE, NON_NEGATIVE_INT, OPEN_UNIT, POSITIVE, POSITIVE_INT,
                          SAMPLING_TEMPERATURE, TEMPERATURE, TOP_P, Range, check_choice)
from .interfaces import check_samples_per_prompt
from .models import DTYPES

# Short names for the plug-ins; modules are imported only when a run uses them (vLLM only on a GPU run).
# The GPU chapter adds its own (math data, vLLM, math-verify) when cegppo_edu.gpu is imported.
TASKS: dict[str, str] = {"arith": "cegppo_edu.lm.tasks:make_addition_task_from_config"}
SAMPLERS: dict[str, str] = {"hf": "cegppo_edu.lm.rollout:make_hf_sampler",
                             "hf-shared": "cegppo_edu.lm.rollout:make_shared_prefill_sampler"}
REWARDS: dict[str, str] = {"exact_match": "cegppo_edu.lm.rewards:make_exact_match"}
_REGISTRIES = {"task": TASKS, "sampler": SAMPLERS, "reward": REWARDS}


@dataclass
class TrainConfig:
    # ---- run ----
    seed: int = 0  # seeds everything (model init, problem order, sampling); same seed, same metrics
    data_seed: int | None = None  # seed of the task's problems and train/held-out split; None = seed (fix it to
    #                               vary the RL seed over one warm start, whose held-out set must stay held out)
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
    tiny_max_positions: int = 256  # positions the tiny Qwen2 is built for (prompt + response; RoPE, no weights)
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
    # name in config.SAMPLERS or "module:function": "hf" (HF generate, every committed run); "hf-shared" (opt-in,
    # the SmolLM2 preset's: each prompt prefilled once for its G rows, finished rows dropped; the same distribution
    # and log-probs to float rounding, other draws for a seed: rollout.SharedPrefillSampler); the GPU chapter adds "vllm"
    sampler: str = "hf"
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

    # ---- loss (the paper in brief, §2) ----
    method: str = "ce_gppo"  # a name in losses.METHODS
    eps_low: float | None = None  # ε_l, lower clip width; None = the method's default (0.2; CISPO 1.0)
    eps_high: float | None = None  # ε_h, upper clip width; None = the method's default (0.2; DAPO/CISPO 0.28)
    beta1: float | None = None  # β1, weight of lower-side (Â<0) clipped tokens; CE-GPPO only; None = 0.5
    beta2: float | None = None  # β2, weight of upper-side (Â>0) clipped tokens; CE-GPPO only; None = 1.0
    dual_clip: float | None = None  # dual-clip c for Â<0 (authors' code: 10); None = off
    beta_schedule: str = "constant"  # schedules.SCHEDULES: β1, β2 from beta1/beta2 at step 1 to *_final at the end
    beta1_final: float | None = None  # β1 at the last step under a schedule; None = beta1 (no change)
    beta2_final: float | None = None  # β2 at the last step under a schedule; None = beta2 (no change)
    tau_pos: float | None = None  # SAPO: gate temperature where Â > 0; None = the method's default (1.0)
    tau_neg: float | None = None  # SAPO: gate temperature where Â < 0; None = 1.05
    cov_ratio: float | None = None  # Clip-Cov / KL-Cov: fraction of a micro-batch's tokens picked; None = 2e-4
    clip_cov_lb: float | None = None  # Clip-Cov: lower end of the covariance band it picks from; None = 1.0
    clip_cov_ub: float | None = None  # Clip-Cov: upper end of that band; None = 5.0
    kl_cov_coef: float | None = None  # KL-Cov: weight k of |log r| on its picks; None = 1.0
    loss_agg: str = "token-mean"  # losses.AGG_MODES; token-mean as in DAPO and CE-GPPO

    # ---- steering entropy (chapter 7; steering.py) ----
    beta_controller: str = "none"  # steering.CONTROLLERS: "predictive" | "pi" choose β1, β2 each step (CE-GPPO);
    #                                "entropy_bonus" adapts an entropy bonus −c·H̄ (any method); "none"
    entropy_target: float | None = None  # H* in nats, in (0, log V]; needed by a controller
    entropy_target_final: float | None = None  # H* at the last step (a cosine from entropy_target); None = constant
    beta_min: float = BetaBounds.low  # the box a β controller keeps β1 and β2 in (steering.BetaBounds)
    beta_max: float = BetaBounds.high
    controller_gain: float = 1.0  # predictive: the share of H*(t+1) − H(t) a step aims to close, in (0, 1]
    pi_kp: float = PI_KP  # pi: proportional gain on e = H* − H (β2 += u, β1 −= u)
    pi_ki: float = PI_KI  # pi: integral gain
    entropy_coef_delta: float = 0.005  # entropy_bonus: the coefficient's step per RL step (Skywork-OR1 style)
    entropy_coef_max: float = 0.1  # entropy_bonus: its largest value
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
    logp_chunk: int = DEFAULT_CHUNK  # tokens per chunk when computing log-probs and entropy from logits

    # ---- metrics ----
    eval_every: int = 10  # held-out accuracy every N RL steps (and at step 0 and at the end); 0 = never
    eval_problems: int = 0  # held-out problems per evaluation; 0 = all
    eval_samples: int = 1  # responses per held-out problem (accuracy = avg@k)
    eval_temperature: float = 0.0  # 0 = greedy (authors evaluate at 0.6 / top_p 0.95)
    eval_top_p: float = 1.0  # nucleus for evaluation
    hp_threshold: float = HP_THRESHOLD  # probability splitting HP from LP tokens (token_groups.HP_THRESHOLD)
    token_group_stats: bool = True  # per-group counts, clip fractions, weights and entropy pushes each step
    measure_entropy_change: bool = True  # one extra no-grad pass: entropy of the batch after the update phase
    entropy_predictor_every: int = 0  # every N RL steps, ∇θH̄·Δθ per optimizer step (param_entropy); 0 = off
    entropy_attribution: bool = False  # on those steps, ΔH̄ split by token group (HP/LP by π_old) × inside/clipped
    entropy_attribution_by: str = "old"  # whose probability makes a token HP or LP there: "old" (π_old, the
    #                                      paper's: the policy that sampled it) or "current" (the policy stepped)

    # ---- checkpoints ----
    checkpoint_every: int = 50  # RL steps between checkpoints (one is always written at the end); 0 = end only
    keep_checkpoints: int = 2  # complete checkpoints kept on disk (older ones are deleted)


def task_seed(config: TrainConfig) -> int:
    """The seed a task factory draws its problems with: ``data_seed``, or ``seed`` where that is None."""
    return config.seed if config.data_seed is None else config.data_seed


def _field_types() -> dict[str, typing.Any]:
    return typing.get_type_hints(TrainConfig)


def _base_type(annotation):
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return (args[0], True) if args else (annotation, False)


LOSS_FIELDS = tuple(HYPER_RANGES)  # the config fields that are a loss's hyper-parameters (None = its default)


def step_loss_kwargs(config: TrainConfig, step: int) -> dict:
    """``loss_kwargs`` at RL step ``step``: β1 and β2 where ``beta_schedule`` moves them (``schedules.scheduled``)."""
    kwargs = loss_kwargs(config)
    if config.beta_schedule != "constant":
        for name in ("beta1", "beta2"):
            final = getattr(config, f"{name}_final")
            kwargs[name] = scheduled(config.beta_schedule, kwargs[name], kwargs[name] if final is None else final,
                                     step, config.steps)
    return kwargs


def loss_kwargs(config: TrainConfig) -> dict:
    """Keyword arguments for ``get_loss(config.method)``: config values where set, else the method's defaults."""
    method = get_method(config.method)
    kwargs = {name: default if getattr(config, name) is None else getattr(config, name)
              for name, default in method.defaults.items()}
    if method.takes_agg:
        kwargs["agg"] = config.loss_agg
    return kwargs


# --------------------------------------------------------------------------------------------------
# Validation: one table of allowed values, then the rules that tie fields together
# --------------------------------------------------------------------------------------------------
UNIT_INTERVAL_OPEN_TOP = Range(0.0, 1.0, high_open=True)
FIELD_RULES: dict[str, Range | tuple] = {
    **{name: POSITIVE_INT for name in (
        "steps", "tiny_hidden_size", "tiny_layers", "tiny_heads", "tiny_kv_heads", "tiny_intermediate_size",
        "tiny_max_positions",
        "n_train", "n_heldout", "warm_start_batch_size", "prompts_per_step", "max_new_tokens", "max_prompt_tokens",
        "mini_batches", "update_epochs", "logp_chunk", "eval_samples", "keep_checkpoints", "reward_workers")},
    **{name: NON_NEGATIVE_INT for name in (
        "seed", "num_threads", "warm_start_steps", "entropy_predictor_every", "sampler_batch_sequences", "max_kept_prompts", "warmup_steps",
        "micro_batch_tokens", "eval_every", "eval_problems", "checkpoint_every")},
    "group_size": Range(2, integer=True, note="group advantages need 2 responses"),
    "n_digits": Range(1, 9, integer=True),
    "dtype": tuple(DTYPES),
    "autocast_dtype": ("none", *list(DTYPES)[1:]),  # float32 autocast is no autocast
    "warm_start_lr": LEARNING_RATE,
    "temperature": SAMPLING_TEMPERATURE,
    "top_p": TOP_P,
    "vllm_gpu_memory_utilization": OPEN_UNIT,
    "vllm_sleep_level": (1, 2),
    "reward_timeout_s": POSITIVE,
    "loss_agg": AGG_MODES,
    "nll_coef": NON_NEGATIVE,
    "lr": LEARNING_RATE,
    "weight_decay": UNIT_INTERVAL_OPEN_TOP,
    "adam_b1": UNIT_INTERVAL_OPEN_TOP,
    "adam_b2": UNIT_INTERVAL_OPEN_TOP,
    "max_grad_norm": POSITIVE,
    "eval_temperature": TEMPERATURE,
    "eval_top_p": TOP_P,
    "hp_threshold": OPEN_UNIT,
    "entropy_attribution_by": ("old", "current"),
    "beta_schedule": SCHEDULES,
    "beta_controller": CONTROLLERS,
    "controller_gain": Range(0.0, 1.0, low_open=True),
    "pi_kp": NON_NEGATIVE,
    "pi_ki": NON_NEGATIVE,
    "entropy_coef_delta": POSITIVE,
    "entropy_coef_max": POSITIVE,
}


def _check_type(name: str, value, annotation) -> None:
    base, optional = _base_type(annotation)
    if value is None and optional:
        return
    ok = isinstance(value, bool) if base is bool else (
        isinstance(value, base) and not isinstance(value, bool) if base is int else
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if base is float else isinstance(value, base))
    if not ok:
        raise ValueError(f"{name}={value!r} is outside the allowed range: a finite {base.__name__}"
                         + (" or None" if optional else ""))


def _check_rule(name: str, value, rule) -> None:
    if isinstance(rule, Range):
        rule.check(name, value)
    else:
        check_choice(name, value, rule)


def _check_beta_schedule(c: TrainConfig, method) -> None:
    """A schedule or a final β needs a method with β1 and β2, and each final β in its range."""
    scheduled_fields = [f for f in ("beta1_final", "beta2_final") if getattr(c, f) is not None]
    if c.beta_schedule != "constant":
        scheduled_fields.insert(0, "beta_schedule")
    if not scheduled_fields:
        return
    if not {"beta1", "beta2"} <= set(method.defaults):
        takers = [name for name, m in METHODS.items() if {"beta1", "beta2"} <= set(m.defaults)]
        raise ValueError(f"{scheduled_fields[0]}={getattr(c, scheduled_fields[0])!r} needs a method with β1 and β2 "
                         f"({', '.join(takers)}); method {c.method!r} has none")
    if c.beta_schedule == "constant":  # a final β was given without a schedule
        raise ValueError(f"{scheduled_fields[0]}={getattr(c, scheduled_fields[0])!r} has no effect with "
                         f"beta_schedule='constant'; choose one of {', '.join(SCHEDULES[1:])} (or leave it None)")
    ranges = method.ranges
    for name in ("beta1", "beta2"):
        final = getattr(c, f"{name}_final")
        if final is not None:
            ranges[name].check(f"{name}_final", final)


def _check_steering(c: TrainConfig, method) -> None:
    """A controller needs a target (and a target needs a controller); a β controller a method with β and no β
    schedule; the predictive one the per-step attribution it estimates from. The target's upper end, log V, is
    checked when the model's vocabulary is known (``lm.steer``)."""
    check_controller(c.beta_controller, {"beta1", "beta2"} <= set(method.defaults), c.method)
    BetaBounds(c.beta_min, c.beta_max)
    targets = [f for f in ("entropy_target", "entropy_target_final") if getattr(c, f) is not None]
    if c.beta_controller == "none":
        if targets:
            raise ValueError(f"{targets[0]}={getattr(c, targets[0])!r} has no effect with beta_controller='none'; "
                             f"choose one of {', '.join(CONTROLLERS[1:])} (or leave it None)")
        return
    if c.entropy_target is None:
        raise ValueError(f"beta_controller={c.beta_controller!r} needs entropy_target (H* in nats, in (0, log V])")
    for name in targets:
        Range(0.0, math.inf, low_open=True, note="and at most log V").check(name, getattr(c, name))
    if c.beta_controller in BETA_CONTROLLERS and c.beta_schedule != "constant":
        raise ValueError(f"beta_schedule={c.beta_schedule!r} and beta_controller={c.beta_controller!r} both set β; "
                         f"choose one")
    if c.beta_controller == "predictive" and (c.entropy_predictor_every != 1 or not c.entropy_attribution):
        raise ValueError("beta_controller='predictive' needs entropy_predictor_every=1 and entropy_attribution=True: "
                         "it estimates each step's effect of β from the last update phase's attribution")


GENERATED_TASKS = ("arith",)  # tasks that make their own problems and read no file
LOCAL_DATA_SUFFIXES = (".json", ".jsonl", ".parquet")


def _check_data_paths(c: TrainConfig) -> None:
    """A data path given to a task that reads none is refused (it would be recorded as if used), and a path that
    looks local (absolute, relative, or a data file's suffix) must exist: both before any work."""
    for name in ("data_path", "eval_data_path"):
        value = getattr(c, name)
        if not value:
            continue
        if c.task in GENERATED_TASKS:
            raise ValueError(f"{name}={value!r} is not read by task {c.task!r}, which generates its problems: "
                             f"leave it empty, or choose a task that reads files")
        looks_local = value.startswith((os.sep, ".", "~")) or value.endswith(LOCAL_DATA_SUFFIXES)
        if looks_local and not os.path.exists(os.path.expanduser(value)):
            raise ValueError(f"{name}={value!r}: no such file or folder")


# What each plug-in factory is called with (so a "module:function" that cannot take it is refused up front).
FACTORY_ARGUMENTS = {"task": ("config",), "sampler": ("config", "model", "tokenizer"), "reward": ("config",)}


def _check_plugin(kind: str, path: str, arguments: tuple[str, ...]) -> None:
    """A "module:function" plug-in must import, be callable and accept ``arguments``: refused before any work
    (not after the warm start, when the trainer would first call it)."""
    module_name, _, attr = path.partition(":")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"{kind}={path!r} cannot be loaded: {type(err).__name__}: {err}") from None
    if not callable(target):
        raise ValueError(f"{kind}={path!r} is not a function")
    try:
        inspect.signature(target).bind(*arguments)
    except TypeError:
        raise ValueError(f"{kind}={path!r} is not a {kind} plug-in: it is called as {attr}({', '.join(arguments)}), "
                         f"which its signature {inspect.signature(target)} does not take") from None
    except ValueError:  # a builtin without a readable signature: its call will tell
        pass


def _check_relations(c: TrainConfig) -> None:
    """The rules that tie one field to another, or to a registry."""
    Range(1, c.n_digits, integer=True, note=f"at most n_digits={c.n_digits}").check("min_digits", c.min_digits)
    if not (c.device in ("auto", "cpu") or c.device.startswith("cuda")):
        raise ValueError(f'device={c.device!r} is not allowed; choose "auto", "cpu", "cuda" or "cuda:N"')
    if c.prompt_encoder and ":" not in c.prompt_encoder:
        raise ValueError(f'prompt_encoder={c.prompt_encoder!r} must be "" or a "module:function" path')
    if "{problem}" not in c.prompt_template:
        raise ValueError(f"prompt_template={c.prompt_template!r} must contain {{problem}}")
    if not c.reward_correct > c.reward_wrong:
        raise ValueError(f"reward_correct={c.reward_correct!r} is outside the allowed range: greater than "
                         f"reward_wrong={c.reward_wrong}")
    if c.data_seed is not None:
        NON_NEGATIVE_INT.check("data_seed", c.data_seed)
    _check_data_paths(c)
    if c.entropy_attribution and not c.entropy_predictor_every:
        raise ValueError("entropy_attribution=True needs entropy_predictor_every >= 1 (the steps it splits)")
    check_choice("method", c.method, sorted(METHODS))
    method = get_method(c.method)
    for name in LOSS_FIELDS:
        if getattr(c, name) is not None and name not in method.defaults:
            raise ValueError(f"{name}={getattr(c, name)!r} is not a parameter of method {c.method!r} (it takes "
                             f"{', '.join(method.defaults)}): leave it None")
    if c.loss_agg != "token-mean" and not method.takes_agg:
        raise ValueError(f"loss_agg={c.loss_agg!r}: method {c.method!r} fixes its own aggregation (token-mean)")
    method.resolve(**{k: v for k, v in loss_kwargs(c).items() if k != "agg"})  # each value in its method's range
    _check_beta_schedule(c, method)
    _check_steering(c, method)
    Range(1, c.prompts_per_step * c.group_size, integer=True,
          note="at most prompts_per_step × group_size").check("mini_batches", c.mini_batches)
    check_samples_per_prompt(c.eval_samples, c.eval_temperature, "eval_samples", "eval_temperature")
    for kind, registry in _REGISTRIES.items():
        name = getattr(c, kind)
        if name not in registry and ":" not in name:
            raise ValueError(f"{kind}={name!r} is not allowed; choose one of {', '.join(sorted(registry))} or a "
                             f"'module:function' path")
        if name not in registry:
            _check_plugin(kind, name, FACTORY_ARGUMENTS[kind])
    if c.prompt_encoder:
        _check_plugin("prompt_encoder", c.prompt_encoder, ("message", "tokenizer"))


def validate(config: TrainConfig) -> TrainConfig:
    """Check every field; raise ``ValueError`` naming the first bad one and its allowed range."""
    for name, annotation in _field_types().items():  # types first: a str where an int belongs, etc.
        _check_type(name, getattr(config, name), annotation)
    for name, rule in FIELD_RULES.items():
        _check_rule(name, getattr(config, name), rule)
    _check_relations(config)
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
    """A validated config from a dict (a run's config.json or a checkpoint's): a field this version does not know
    is named, not a TypeError."""
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise ValueError(f"the saved config has fields this version of cegppo-edu does not know: {', '.join(unknown)}"
                         f" (written by another version? run it with that version)")
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
# down (the paper in brief, §4): P=16 prompts × G=8, K=4 mini-batch steps per rollout batch so that clipping acts.
register_preset(
    "tiny-arith",
    TrainConfig(seed=0, steps=150, num_threads=1, warm_start_steps=350, lr=3e-4, checkpoint_every=50),
    description="tiny Qwen2 (0.8M params, char tokenizer) on 1-2 digit addition, CPU, warm start then RL",
    smoke={"steps": 3, "warm_start_steps": 20, "eval_every": 3, "eval_problems": 32, "checkpoint_every": 0},
)
