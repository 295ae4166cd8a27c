"""A vLLM implementation of ``interfaces.Sampler``, colocated with the trainer on one GPU.

NOT RUN ON A GPU BY THIS PROJECT SO FAR. vLLM cannot be installed on the CPU machines that build this project.
What is checked without it: every vLLM module, class, method, keyword, attribute and environment variable used
here against the pinned release's own source (``tests/test_vllm_source.py`` parses the downloaded 0.33.0 wheel),
and the sampler's logic against stand-ins that behave as that release does for what it relies on (child seeds,
greedy with n > 1, ``wake_up``'s return, output order: ``tests/test_math_vllm_sampler.py``). What only a GPU can
show: the engine starting beside the trainer's fp32 weights at the chosen memory share, the memory a wake-up
takes back, and that a weight sync is right (``benchmarks/gpu_check.py --vllm`` compares vLLM's greedy tokens with
the trainer's after a sync; run it before training).

How it shares the GPU with training (vLLM 0.33.0; file names are inside the ``vllm`` package):

- ``LLM(..., gpu_memory_utilization=f, enable_sleep_mode=True)``: vLLM reserves ``f`` × the card's *total*
  memory for its bf16 weights, activations and KV cache (28 KiB per token for the 1.5B model) and refuses to
  start if less than that is free ("Free memory on device ... is less than desired GPU memory utilization",
  ``v1/worker/utils.py``). So create the sampler before the trainer fills the card, with ``f`` leaving room for
  the trainer's weights, gradients and AdamW state.
- After each generation phase ``llm.sleep(level=1)`` copies vLLM's weights to CPU RAM and frees the KV cache
  (and with it the prefix cache, ``v1/engine/core.py``), so the optimizer phase gets the memory back;
  ``wake_up`` restores them before the next generation and returns whether the engine is fully awake; the
  scheduler stays paused until it is, so a ``generate`` on a half-awake engine would wait forever: it is checked.
- After each optimizer phase ``sync_weights(model)`` hands the trainer's weights to vLLM's maintained in-place
  reload, ``llm.collective_rpc("reload_weights", kwargs={"weights_iterator": ...})`` (``v1/worker/gpu_worker.py``,
  ``model_executor/model_loader/reload/inplace.py``): one public call instead of the private attribute chain to
  the model runner that moved between versions; it runs vLLM's per-layer post-load processing, warns about
  weights it did not load, and resets the caches derived from the old weights. It passes the tensors by
  reference because the engine core runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``; with a separate
  engine process they would have to be serialised).
- ``generate(seed=s)`` gives prompt i the seed s + i·n: vLLM gives child k of a request with seed t the seed
  t + k (``v1/engine/parallel_sampling.py``), so with a stride of n no two responses of a batch share a seed (and
  with it the random draws at every position).
- The sampler's log-probs are diagnostic only: the trainer recomputes old log-probs itself (vLLM's are taken
  before temperature scaling unless told otherwise, and its kernels differ numerically).
"""

from __future__ import annotations

import importlib.metadata
import math
import os
from typing import Any, Iterable, Sequence

from ..lm.config import TrainConfig
from ..lm.device import require_cuda
from ..lm.interfaces import Rollout, check_samples_per_prompt
from ..validation import POSITIVE_INT, Range, check_choice

PACKAGE = "cegppo-edu"
GPU_EXTRA = "gpu"
# The worker method of the in-process weight reload (``LLM.collective_rpc`` calls it by name).
RELOAD_METHOD = "reload_weights"
WRAPPER_PREFIXES = ("_orig_mod.", "module.")  # torch.compile / DDP wrappers around the trainer's model


class VLLMVersionError(RuntimeError):
    """The installed vLLM is not the version the weight sync was written for."""


# ------------------------------------------------------------------------------------ version and import
def pinned_vllm_spec(package: str = PACKAGE, extra: str = GPU_EXTRA) -> str:
    """The vLLM version specifier of the ``gpu`` extra, read from the installed package metadata."""
    from packaging.requirements import Requirement
    try:
        requirements = importlib.metadata.requires(package) or []
    except importlib.metadata.PackageNotFoundError as err:
        raise VLLMVersionError(f"{package} is not installed, so the vLLM pin of its '{extra}' extra cannot be "
                               f"read: run `pip install -e \".[{extra}]\"` in the repository") from err
    for line in requirements:
        req = Requirement(line)
        if req.name == "vllm" and req.marker is not None and req.marker.evaluate({"extra": extra}):
            return str(req.specifier)
    raise VLLMVersionError(f"{package}'s '{extra}' extra pins no vllm version (requirements: {requirements})")


def check_vllm_version(installed: str | None = None, pinned: str | None = None) -> str:
    """Fail clearly unless the installed vLLM matches the ``gpu`` extra's pin; returns the installed version."""
    from packaging.specifiers import SpecifierSet
    pinned = pinned if pinned is not None else pinned_vllm_spec()
    if installed is None:
        try:
            installed = importlib.metadata.version("vllm")
        except importlib.metadata.PackageNotFoundError as err:
            raise ImportError(_missing_vllm_message()) from err
    if installed not in SpecifierSet(pinned):
        raise VLLMVersionError(
            f"vllm {installed} is installed, but the weight sync of VLLMSampler was written for vllm{pinned} "
            f"(the '{GPU_EXTRA}' extra's pin): its engine, sleep and weight-reload calls were checked against "
            f"that release's source only. Install the pinned version with `pip install -e \".[{GPU_EXTRA}]\"`, or use the HF "
            "generate sampler.")
    return installed


def _missing_vllm_message() -> str:
    return ("VLLMSampler needs vLLM, which is not installed. On a CUDA machine run "
            f"`pip install -e \".[{GPU_EXTRA}]\"`; without vLLM, use the HF generate sampler (the default).")


IN_PROCESS_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"  # read by vllm/envs.py when the engine is built


def import_vllm():
    """Import vLLM lazily (never on ``import cegppo_edu``), in-process engine core, with a clear error."""
    os.environ[IN_PROCESS_ENV] = "0"  # sync_weights passes the trainer's tensors to the engine in this process
    try:
        import vllm
    except ImportError as err:
        raise ImportError(_missing_vllm_message()) from err
    return vllm


# ----------------------------------------------------------------------------------- outputs -> Rollout
def sampled_logprob(position: Any, token_id: int) -> float:
    """vLLM's log-prob of the sampled token at one position: a ``{token_id: Logprob}`` dict (``logprobs=0``
    returns the sampled token only), whose values have ``.logprob`` or are floats. NaN when absent."""
    if not position or token_id not in position:
        return math.nan
    entry = position[token_id]
    return float(getattr(entry, "logprob", entry))


def request_outputs_to_rollout(outputs: Sequence[Any], prompt_ids: Sequence[Sequence[int]], n: int) -> Rollout:
    """vLLM ``RequestOutput``s (one per prompt, each with ``n`` completions) -> a prompt-major ``Rollout``.

    Uses ``CompletionOutput.token_ids`` (EOS included when generated), ``.text``, ``.logprobs`` and
    ``.finish_reason`` (``"length"`` means the response hit ``max_tokens``).
    """
    if len(outputs) != len(prompt_ids):
        raise ValueError(f"{len(outputs)} request outputs for {len(prompt_ids)} prompts")
    rollout = Rollout(prompt_ids=[], response_ids=[], response_logp=[], truncated=[], texts=[])
    for p, (request, prompt) in enumerate(zip(outputs, prompt_ids, strict=True)):
        if len(request.outputs) != n:
            raise ValueError(f"prompt {p} has {len(request.outputs)} completions, expected n={n}")
        for completion in request.outputs:
            ids = [int(t) for t in completion.token_ids]
            positions = completion.logprobs or [None] * len(ids)
            rollout.prompt_ids.append(list(prompt))
            rollout.response_ids.append(ids)
            rollout.response_logp.append([sampled_logprob(pos, t) for pos, t in zip(positions, ids, strict=False)])
            rollout.truncated.append(completion.finish_reason == "length")
            rollout.texts.append(completion.text)
    return rollout


def request_seeds(seed: int | None, prompts: int, n: int) -> list[int | None]:
    """One seed per request, with a stride of ``n``: vLLM gives child k of a request with seed t the seed t + k,
    so request i's children get seed + i·n + k, k < n, and no two responses of the batch share a seed."""
    return [None] * prompts if seed is None else [seed + i * n for i in range(prompts)]


def hf_named_weights(model, dtype=None) -> Iterable[tuple[str, Any]]:
    """``(name, tensor)`` pairs with Hugging Face parameter names, cast one at a time to ``dtype`` (bf16 for
    vLLM) so that no second full copy of the fp32 master weights is ever made."""
    for name, param in model.named_parameters():
        for prefix in WRAPPER_PREFIXES:
            name = name.removeprefix(prefix)
        tensor = param.detach()
        yield name, (tensor.to(dtype) if dtype is not None else tensor)


# ---------------------------------------------------------------------------------------- GPU memory
def gpu_memory() -> tuple[int, int]:
    """``(free, total)`` bytes of the current CUDA device, as the driver reports them (what vLLM reads)."""
    import torch
    return torch.cuda.mem_get_info()


def check_gpu_memory(utilization: float, name: str = "gpu_memory_utilization",
                     free_total: tuple[int, int] | None = None) -> None:
    """Raise ``ValueError`` unless ``utilization`` × the card's total memory is free now.

    vLLM reserves that share of the *total* memory and refuses to start when less is free; it says so only after
    loading the model. This says it first, with the largest share that would start and the usual cause (a
    trainer in the same process: ``Trainer.close()`` releases its ≈20 GiB at 1.5B; or another process)."""
    free, total = free_total if free_total is not None else gpu_memory()
    wanted = utilization * total
    if free >= wanted:
        return
    gib = 2**30
    fits = math.floor(free / total * 100) / 100
    raise ValueError(
        f"{name}={utilization} asks vLLM for {wanted / gib:.1f} GiB of this card's {total / gib:.1f} GiB, but only "
        f"{free / gib:.1f} GiB are free: vLLM would refuse to start. Free the card first (in a notebook that "
        f"trained, trainer.close(); or stop the other process using it), or lower {name} to at most {fits:.2f}")


# ------------------------------------------------------------------------------------------ the sampler
class VLLMSampler:
    """``Sampler`` backed by vLLM's offline ``LLM`` engine, sharing one GPU with the trainer.

    Args:
        model_path: a local folder or Hub id of the starting model (the same weights as the trainer's).
        gpu_memory_utilization: fraction of the card vLLM may use (weights + activations + KV cache).
        max_model_len: longest prompt + response, in tokens.
        sleep_level: 1 (weights to CPU RAM, KV cache freed; the default) or 2 (both discarded: the next
            generation then needs ``sync_weights`` first); 0 disables sleeping.
        seed: engine seed. ``generate(seed=s)`` also seeds each request (``request_seeds``).
        llm_kwargs: more ``vllm.LLM`` arguments (e.g. ``enforce_eager=True``).
        llm: an already built engine (tests pass a stand-in here; nothing else should).
    """

    def __init__(self, model_path: str, *, max_model_len: int,
                 gpu_memory_utilization: float = TrainConfig.vllm_gpu_memory_utilization,
                 sleep_level: int = TrainConfig.vllm_sleep_level, seed: int = 0, dtype: str = "bfloat16", enable_prefix_caching: bool = True,
                 llm_kwargs: dict | None = None, llm=None):
        Range(0.05, 0.95).check("gpu_memory_utilization", gpu_memory_utilization)
        check_choice("sleep_level", sleep_level, (0, 1, 2))
        POSITIVE_INT.check("max_model_len", max_model_len)
        self.sleep_level = sleep_level
        self.max_model_len = max_model_len
        self._asleep: set[str] = set()  # which of "weights" / "kv_cache" are released
        self._weights_current = True  # False after a level-2 sleep until the next sync_weights
        if llm is None:
            check_vllm_version()
            vllm = import_vllm()
            llm = vllm.LLM(model=model_path, dtype=dtype, gpu_memory_utilization=gpu_memory_utilization,
                           max_model_len=max_model_len, enable_prefix_caching=enable_prefix_caching,
                           enable_sleep_mode=sleep_level > 0, seed=seed, **(llm_kwargs or {}))
        self._llm = llm

    def close(self) -> None:
        """Shut the engine down and give its GPU memory back (idempotent); the sampler cannot generate after it.

        vLLM's in-process engine core holds its worker, weights and KV cache until it is shut down
        (``LLM.llm_engine.engine_core.shutdown()``, the call its own finaliser makes), asleep or not."""
        llm, self._llm = self._llm, None
        client = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if client is not None and hasattr(client, "shutdown"):
            client.shutdown()
        del llm, client
        import gc

        import torch
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # -------------------------------------------------------------------------------------- phases
    def sleep(self) -> None:
        """Release vLLM's GPU memory for the optimizer phase (no-op with ``sleep_level=0`` or when asleep)."""
        if self.sleep_level and not self._asleep:
            self._llm.sleep(level=self.sleep_level)
            self._asleep = {"weights", "kv_cache"}
            self._weights_current = self.sleep_level == 1

    def wake_up(self, tags: Sequence[str] | None = None) -> bool:
        """Re-allocate what ``sleep`` released: ``tags`` among ``"weights"``, ``"kv_cache"`` (None: both).

        Returns whether the engine is fully awake: vLLM's own answer when something was woken.
        """
        wanted = set(tags) if tags is not None else {"weights", "kv_cache"}
        todo = sorted(wanted & self._asleep)
        if not todo:
            return not self._asleep
        awake = bool(self._llm.wake_up(tags=todo))
        self._asleep -= set(todo)
        return awake

    def sync_weights(self, model) -> None:
        """Hand ``model``'s weights to vLLM's in-place reload (same process), after checking the vLLM version."""
        check_vllm_version()
        self.wake_up(["weights"])  # loading needs the weights' GPU memory back; the KV cache can stay freed
        import torch
        if os.environ.get(IN_PROCESS_ENV) != "0":
            raise VLLMVersionError(f"{IN_PROCESS_ENV}=0 must be set before the engine is built (import_vllm does "
                                   f"it): the weights are passed to an engine core in this process")
        self._llm.collective_rpc(RELOAD_METHOD, kwargs={"weights_iterator": hf_named_weights(model, torch.bfloat16)})
        if not self.sleep_level:
            # A sleep (level >= 1) clears the prefix cache; without one its entries hold the old weights' keys
            # and values. It returns False (and resets nothing) while requests run: none do between phases.
            if not self._llm.reset_prefix_cache():
                raise RuntimeError("vLLM could not reset its prefix cache after a weight sync (requests running?)")
        self._weights_current = True

    def generate(self, prompt_ids: Sequence[Sequence[int]], n: int, max_new_tokens: int,
                 temperature: float = 1.0, top_p: float = 1.0, seed: int | None = None) -> Rollout:
        """Sample ``n`` responses per prompt, then sleep (the optimizer phase comes next)."""
        if not self._weights_current:
            raise RuntimeError("vLLM slept at level 2 and discarded its weights: call sync_weights(model) first")
        longest = max((len(p) for p in prompt_ids), default=0)
        if longest + max_new_tokens > self.max_model_len:
            raise ValueError(f"longest prompt ({longest}) + max_new_tokens ({max_new_tokens}) exceeds "
                             f"max_model_len={self.max_model_len}")
        check_samples_per_prompt(n, temperature)  # vLLM would raise it only here, after loading the model
        from vllm import SamplingParams
        if not self.wake_up():
            raise RuntimeError(f"vLLM did not wake up fully (asleep here: {sorted(self._asleep) or 'nothing'}): its "
                               "scheduler stays paused until it does, so generate would wait forever")
        params = [SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, logprobs=0,
                                 seed=s) for s in request_seeds(seed, len(prompt_ids), n)]
        requests = [{"prompt_token_ids": list(ids)} for ids in prompt_ids]
        outputs = self._llm.generate(requests, params, use_tqdm=False)
        self.sleep()
        return request_outputs_to_rollout(outputs, prompt_ids, n)


def make_vllm_sampler(config, model=None, tokenizer=None) -> VLLMSampler:
    """Factory for the trainer's sampler registry (``config.sampler = "vllm"``), the signature of
    ``lm.rollout.make_hf_sampler``. ``model``/``tokenizer`` are unused: vLLM loads its own copy from
    ``config.model_path`` and gets the trainer's weights through ``sync_weights``."""
    check_vllm_version()  # vLLM installed at its pin, then a usable GPU, then room on it: each named first
    require_cuda(config.device if config.device.startswith("cuda") else "cuda")
    check_gpu_memory(config.vllm_gpu_memory_utilization, "vllm_gpu_memory_utilization")
    return VLLMSampler(config.model_path, gpu_memory_utilization=config.vllm_gpu_memory_utilization,
                       max_model_len=config.max_prompt_tokens + config.max_new_tokens,
                       sleep_level=config.vllm_sleep_level, seed=config.seed)
