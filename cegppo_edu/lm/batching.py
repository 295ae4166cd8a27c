"""Batches of (prompt, response) pairs for the trainer, and the one forward pass that gives their log-probs,
entropy and entropy influence (``logp_entropy_influence``).

Layout of a batch (B rows): ``[left-padded prompt | right-padded response]``, so that every response starts
at the same column and its logits are the model's last ``R + 1`` positions (``logits_to_keep``), whatever the
prompt lengths. Position ids count real tokens only, so padding changes no number.

``entropy_with_shared_prompts`` measures the entropy of the G responses of a prompt running that prompt once: its
keys and values (HF's KV cache) are copied to its G rows, then only the responses run. The same numbers up to
float rounding (the attention sums in another order), for a fraction of the work when prompts are long against
the responses (chapter 4: 9 prompt tokens, 3-4 response tokens, G = 8). The trainer uses it for the metric that
re-measures the entropy after an update phase, never for a number that feeds the update.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from typing import Sequence

import torch

from ..entropy import DEFAULT_CHUNK, entropy_from_logits, entropy_influence, token_logp_and_entropy


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, Lp + R)
    attention_mask: torch.Tensor  # (B, Lp + R)
    position_ids: torch.Tensor  # (B, Lp + R)
    response_ids: torch.Tensor  # (B, R), pad where mask is 0
    mask: torch.Tensor  # (B, R) float, 1 on response tokens

    @property
    def padded_tokens(self) -> int:
        return self.input_ids.numel()


def collate(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int,
            device="cpu") -> Batch:
    """Build a ``Batch`` from token lists; every response must have at least one token."""
    if len(prompts) != len(responses) or not prompts:
        raise ValueError(f"got {len(prompts)} prompts and {len(responses)} responses; need equal, non-zero counts")
    width_p = max(len(p) for p in prompts)
    width_r = max(len(r) for r in responses)
    if min(len(r) for r in responses) < 1:
        raise ValueError("every response needs at least one token")
    rows = len(prompts)
    input_ids = torch.full((rows, width_p + width_r), pad_id, dtype=torch.long)  # (B, Lp + R)
    attention = torch.zeros((rows, width_p + width_r), dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        input_ids[i, width_p - len(p):width_p] = torch.tensor(p, dtype=torch.long)
        input_ids[i, width_p:width_p + len(r)] = torch.tensor(r, dtype=torch.long)
        attention[i, width_p - len(p):width_p + len(r)] = 1
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)  # 0 at each row's first real token
    response_ids = input_ids[:, width_p:]  # (B, R)
    mask = attention[:, width_p:].float()  # (B, R)
    return Batch(input_ids.to(device), attention.to(device), position_ids.to(device), response_ids.to(device),
                 mask.to(device))


def pack_by_tokens(prompt_lens: Sequence[int], response_lens: Sequence[int], order: Sequence[int],
                   token_budget: int) -> list[list[int]]:
    """Split ``order`` into consecutive micro-batches whose padded size rows × (max Lp + max R) fits the budget.

    ``token_budget = 0`` means one micro-batch. A single row larger than the budget gets its own micro-batch.
    """
    if token_budget <= 0:
        return [list(order)]
    groups, current, width_p, width_r = [], [], 0, 0
    for i in order:
        wp, wr = max(width_p, prompt_lens[i]), max(width_r, response_lens[i])
        if current and (len(current) + 1) * (wp + wr) > token_budget:
            groups.append(current)
            current, wp, wr = [], prompt_lens[i], response_lens[i]
        current.append(i)
        width_p, width_r = wp, wr
    if current:
        groups.append(current)
    return groups


@contextlib.contextmanager
def autocast_context(device: torch.device, dtype: torch.dtype | None):
    """bf16/fp16 autocast when ``dtype`` is given, with attention kernels that work under it here."""
    if dtype is None:
        yield
        return
    with torch.autocast(device.type, dtype=dtype), attention_guard(device, dtype):
        yield


HALF_DTYPES = (torch.bfloat16, torch.float16)


def needs_math_attention(device_type: str, dtype: torch.dtype | None, capability: str | None = None,
                         amx: bool | None = None) -> bool:
    """Whether torch's CPU flash attention would fail for ``dtype`` here: on a CPU with AMX it packs bf16/fp16
    operands for AMX with AVX-512-only code (``at::vec::pack_vnni2``), so under a kernel set forced below AVX-512
    (``ATEN_CPU_CAPABILITY=avx2`` or ``default``, the kernel-set re-runs) it raises "pack_vnni2 is only supported
    when avx512 is supported". ``capability`` and ``amx`` default to this machine's."""
    if device_type != "cpu" or dtype not in HALF_DTYPES:
        return False
    capability = torch.backends.cpu.get_cpu_capability() if capability is None else capability
    amx = torch.cpu._is_amx_tile_supported() if amx is None else amx
    return amx and not capability.upper().startswith("AVX512")


def attention_guard(device: torch.device | str, dtype: torch.dtype | None):
    """Scaled-dot-product attention restricted to torch's math backend where ``needs_math_attention`` (the same
    attention, summed in another order); elsewhere nothing changes, so no number changes on any other setup."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    device_type = device.type if isinstance(device, torch.device) else str(device)
    return sdpa_kernel(SDPBackend.MATH) if needs_math_attention(device_type, dtype) else contextlib.nullcontext()


def response_logits(model, batch: Batch, autocast_dtype: torch.dtype | None = None,
                    temperature: float = 1.0) -> torch.Tensor:
    """The logits that predict each response token, divided by the sampling temperature. ``(B, R, V)``."""
    width_r = batch.response_ids.shape[1]
    with autocast_context(batch.input_ids.device, autocast_dtype):
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                    position_ids=batch.position_ids, logits_to_keep=width_r + 1, use_cache=False)
    logits = out.logits[:, :-1]  # (B, R, V): position t predicts response token t
    return logits / temperature if temperature != 1.0 else logits


def response_entropy_sum(model, batch: Batch, *, chunk_size: int = DEFAULT_CHUNK,
                         autocast_dtype: torch.dtype | None = None, temperature: float = 1.0) -> torch.Tensor:
    """Σ of the entropy over the batch's response tokens, a scalar with its autograd graph (for ∇θH̄)."""
    logits = response_logits(model, batch, autocast_dtype, temperature)
    return (entropy_from_logits(logits, chunk_size) * batch.mask).sum()


def logp_entropy_influence(model, batch: Batch, *, chunk_size: int = DEFAULT_CHUNK, with_entropy: bool = True,
                           with_influence: bool = False, autocast_dtype: torch.dtype | None = None,
                           temperature: float = 1.0):
    """log π of each response token (with grad if enabled), entropy and entropy influence (no grad).

    ``temperature``: the sampler's; the logits are divided by it so that π (and so the ratio and the clipping)
    is the distribution the responses were drawn from, as verl does.

    Returns ``(logp, entropy, influence)``, each ``(B, R)`` fp32; entropy/influence are None unless asked for.
    """
    logits = response_logits(model, batch, autocast_dtype, temperature)  # (B, R, V)
    logp, entropy = token_logp_and_entropy(logits, batch.response_ids, chunk_size, with_entropy)
    influence = entropy_influence(logits.detach(), batch.response_ids, chunk_size) if with_influence else None
    return logp, entropy, influence


# --------------------------------------------------------------------------------------------------
# The entropy of responses that share prompts, each prompt run once
# --------------------------------------------------------------------------------------------------
@dataclass
class SharedPrompts:
    """B responses over U distinct prompts: each prompt once, left-padded, and for every row the index of its prompt."""

    prompt_ids: torch.Tensor  # (U, Lp)
    prompt_mask: torch.Tensor  # (U, Lp)
    prompt_of_row: torch.Tensor  # (B,) index into the U prompts
    response_ids: torch.Tensor  # (B, R), pad where mask is 0
    mask: torch.Tensor  # (B, R) float, 1 on response tokens


def collate_shared(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int,
                   device="cpu") -> SharedPrompts:
    """``SharedPrompts`` from token lists (rows with equal prompts share one); every response needs a token."""
    distinct: dict[tuple, int] = {}
    prompt_of_row = [distinct.setdefault(tuple(p), len(distinct)) for p in prompts]
    unique = [list(p) for p in distinct]
    # the same padding as collate: prompts on the left, responses on the right
    head = collate(unique, [[pad_id]] * len(unique), pad_id)
    tail = collate([[pad_id]] * len(responses), responses, pad_id)
    return SharedPrompts(head.input_ids[:, :-1].to(device), head.attention_mask[:, :-1].to(device),
                         torch.tensor(prompt_of_row, device=device), tail.response_ids.to(device), tail.mask.to(device))


def _cache_keyword(model) -> str:
    """The name under which this transformers version's forward takes a KV cache (``cache`` from 5.x on)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@torch.no_grad()
def entropy_with_shared_prompts(model, batch: SharedPrompts, *, chunk_size: int = DEFAULT_CHUNK,
                                autocast_dtype: torch.dtype | None = None, temperature: float = 1.0) -> torch.Tensor:
    """Entropy at every response position, ``(B, R)`` fp32, each distinct prompt run once (no grad).

    The prompts' forward leaves their keys and values in a ``DynamicCache`` and gives the logits that predict
    each response's first token; the cache is copied to the rows (``reorder_cache``), and the responses but their
    last token run on top of it for the other R − 1 positions. Like ``logp_entropy_influence``: the logits are
    divided by the sampling ``temperature``; position ids count real tokens only.
    """
    from transformers import DynamicCache

    rows, width_r = batch.response_ids.shape
    cache, keyword = DynamicCache(), _cache_keyword(model)
    prompt_positions = (batch.prompt_mask.cumsum(-1) - 1).clamp(min=0)  # (U, Lp)
    with autocast_context(batch.prompt_ids.device, autocast_dtype):
        head = model(input_ids=batch.prompt_ids, attention_mask=batch.prompt_mask, position_ids=prompt_positions,
                     logits_to_keep=1, use_cache=True, **{keyword: cache})
        logits = head.logits[batch.prompt_of_row]  # (B, 1, V): predicts response token 0
        if width_r > 1:
            cache.reorder_cache(batch.prompt_of_row)  # (U, H, Lp, D) -> (B, H, Lp, D) in every layer
            mask = torch.cat([batch.prompt_mask[batch.prompt_of_row], batch.mask[:, :-1].long()], dim=1)
            start = batch.prompt_mask.sum(-1)[batch.prompt_of_row, None]  # (B, 1): each row's prompt length
            positions = start + torch.arange(width_r - 1, device=start.device)  # (B, R - 1)
            tail = model(input_ids=batch.response_ids[:, :-1], attention_mask=mask, position_ids=positions,
                         use_cache=True, **{keyword: cache})
            logits = torch.cat([logits, tail.logits], dim=1)  # (B, R, V): position t predicts response token t
    if temperature != 1.0:
        logits = logits / temperature
    return entropy_from_logits(logits, chunk_size)
