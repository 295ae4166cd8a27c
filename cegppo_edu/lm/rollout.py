"""``HFSampler``: the ``interfaces.Sampler`` implemented with Hugging Face ``generate`` (KV cache on), and
``SharedPrefillSampler`` (``config.sampler = "hf-shared"``, opt-in): the same distribution drawn by a short
decoding loop of its own that runs each prompt once for its G responses and drops finished rows.

It shares the trainer's model object, so ``sync_weights`` only re-points it. Prompts of different lengths
are left-padded; responses are cut after the first EOS. Sampling uses a fresh ``GenerationConfig`` so that a
checkpoint's own defaults (R1-Distill ships temperature 0.6, top_p 0.95) never leak into RL rollouts, and a
forked, seeded RNG so that the same ``seed`` gives the same responses without touching the global RNG.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch

from ..validation import NON_NEGATIVE_INT
from .batching import _cache_keyword, attention_guard, collate_shared
from .interfaces import Rollout, check_sampling


class HFSampler:
    def __init__(self, model, tokenizer, max_batch_sequences: int = 0, autocast_dtype: torch.dtype | None = None):
        """``max_batch_sequences``: sequences per ``generate`` call (0 = all at once); ``autocast_dtype``: e.g.
        ``torch.bfloat16`` to generate under autocast on a GPU (None = the weights' dtype)."""
        NON_NEGATIVE_INT.check("max_batch_sequences", max_batch_sequences)
        self.model, self.tokenizer = model, tokenizer
        self.max_batch_sequences = max_batch_sequences
        self.autocast_dtype = autocast_dtype
        self.eos_id, self.pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
        if self.eos_id is None or self.pad_id is None:
            raise ValueError("the tokenizer needs an eos_token and a pad_token for batched generation")

    def sync_weights(self, model) -> None:
        self.model = model  # same process, same tensors: nothing to copy

    def _generation_config(self, max_new_tokens, temperature, top_p):
        from transformers import GenerationConfig

        greedy = temperature == 0.0
        # top_k=0 switches off transformers' default top-k of 50: RL samples from the full distribution.
        return GenerationConfig(do_sample=not greedy, temperature=None if greedy else temperature,
                                top_p=None if greedy else top_p, top_k=None if greedy else 0,
                                max_new_tokens=max_new_tokens,
                                pad_token_id=self.pad_id, eos_token_id=self.eos_id, bos_token_id=None,
                                use_cache=True, output_scores=True, return_dict_in_generate=True)

    def _left_pad(self, prompts: Sequence[Sequence[int]], device):
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)  # (B, width)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt):] = 1
        return ids.to(device), mask.to(device)

    @torch.no_grad()
    def _generate_chunk(self, prompts, gen_config):
        device = next(self.model.parameters()).device
        ids, mask = self._left_pad(prompts, device)
        autocast = (torch.autocast(device.type, dtype=self.autocast_dtype) if self.autocast_dtype is not None
                    else contextlib.nullcontext())
        weights = next(self.model.parameters()).dtype  # a bf16 copy of the weights attends in bf16 without autocast
        with autocast, attention_guard(device, self.autocast_dtype or weights):
            out = self.model.generate(input_ids=ids, attention_mask=mask, generation_config=gen_config)
        new_tokens = out.sequences[:, ids.shape[1]:]  # (B, L_new)
        # out.scores: L_new tensors (B, V), the processed sampling logits. Gather step by step, so that no
        # (B, L_new, V) stack is ever made (a 1.5B model's vocabulary makes that several GB).
        logps = torch.stack([torch.log_softmax(step.float(), dim=-1).gather(-1, new_tokens[:, t, None]).squeeze(-1)
                             for t, step in enumerate(out.scores)], dim=1)  # (B, L_new)
        del out
        return self._cut_at_eos(new_tokens, logps)

    def _cut_at_eos(self, new_tokens, logps):
        """Each row up to and with its first EOS: token lists, their log-probs, and whether the row hit the cap."""
        responses, logp_lists, truncated = [], [], []
        for row in range(new_tokens.shape[0]):
            tokens = new_tokens[row].tolist()
            end = tokens.index(self.eos_id) + 1 if self.eos_id in tokens else len(tokens)
            responses.append(tokens[:end])
            logp_lists.append(logps[row, :end].tolist())
            truncated.append(self.eos_id not in tokens[:end])
        return responses, logp_lists, truncated

    def generate(self, prompt_ids: Sequence[Sequence[int]], n: int, max_new_tokens: int,
                 temperature: float = 1.0, top_p: float = 1.0, seed: int | None = None) -> Rollout:
        """``n`` responses per prompt, prompt-major. ``temperature=0`` is greedy decoding."""
        check_sampling(n, max_new_tokens, temperature, top_p)
        if not prompt_ids or any(len(p) == 0 for p in prompt_ids):
            raise ValueError("prompt_ids must be a non-empty list of non-empty token lists")
        repeated = [list(p) for p in prompt_ids for _ in range(n)]  # prompt-major: P·n rows
        gen_config = self._generation_config(max_new_tokens, temperature, top_p)
        chunk = self.max_batch_sequences or len(repeated)
        was_training = self.model.training
        self.model.eval()
        device = next(self.model.parameters()).device
        rng_devices = [device] if device.type == "cuda" else []
        responses, logps, truncated = [], [], []
        try:
            with torch.random.fork_rng(devices=rng_devices):
                if seed is not None:
                    torch.manual_seed(seed)
                for start in range(0, len(repeated), chunk):
                    r, lp, tr = self._generate_chunk(repeated[start:start + chunk], gen_config)
                    responses += r
                    logps += lp
                    truncated += tr
        finally:
            self.model.train(was_training)
        texts = self.tokenizer.batch_decode(responses, skip_special_tokens=True)
        return Rollout(prompt_ids=repeated, response_ids=responses, response_logp=logps, truncated=truncated,
                       texts=texts)


class SharedPrefillSampler(HFSampler):
    """The ``HFSampler``'s distribution (softmax of the logits over the temperature, top-p's nucleus renormalised;
    greedy at ``temperature=0``), drawn by a decoding loop that does less work than ``generate``:

    - each distinct prompt is run once, and its keys and values (HF's ``DynamicCache``) are copied to its G rows
      (``reorder_cache``), so the prefill costs P prompts, not P·G rows (at SmolLM2's geometry, 45-token prompts
      and ≤ 64 new tokens, the prefill was a third of the sampling FLOPs);
    - rows that have written EOS leave the batch (their cache rows dropped) once at least a quarter of the live
      rows have finished, so long-tailed response lengths at T = 1 stop costing the longest one's work for all;
    - per decode step one forward call, one softmax and one ``multinomial``: no logits processors, no stored
      (B, V) scores.

    Numerically: the same distribution, not the same draws (the random numbers are consumed in another order, so
    a seed gives other responses than ``HFSampler``'s); greedy answers are the same tokens; the prompts' logits
    and the returned log-probs equal the plain pass's up to float rounding (``tests/test_fast_sampling.py``:
    1e-4 against the trainer's scoring, and the empirical distribution of the draws against the model's).
    """

    # compact the batch when this fraction of its live rows has finished (each compaction copies the KV cache)
    COMPACT_FRACTION = 0.25

    @torch.no_grad()
    def _generate_chunk(self, prompts, gen_config):
        device = next(self.model.parameters()).device
        shared = collate_shared(prompts, [[self.pad_id]] * len(prompts), self.pad_id, device)
        rows, width = len(prompts), shared.prompt_ids.shape[1]
        max_new, greedy = gen_config.max_new_tokens, not gen_config.do_sample
        temperature, top_p = (1.0, 1.0) if greedy else (gen_config.temperature, gen_config.top_p or 1.0)
        cache, keyword = None, _cache_keyword(self.model)
        from transformers import DynamicCache

        cache = DynamicCache()
        prompt_len = shared.prompt_mask.sum(-1)  # (U,)
        positions = (shared.prompt_mask.cumsum(-1) - 1).clamp(min=0)  # (U, Lp)
        autocast = (torch.autocast(device.type, dtype=self.autocast_dtype) if self.autocast_dtype is not None
                    else contextlib.nullcontext())
        weights = next(self.model.parameters()).dtype
        tokens = torch.full((rows, max_new), self.pad_id, dtype=torch.long, device=device)  # (B, L_new)
        logps = torch.zeros((rows, max_new), dtype=torch.float32, device=device)  # (B, L_new)
        with autocast, attention_guard(device, self.autocast_dtype or weights):
            out = self.model(input_ids=shared.prompt_ids, attention_mask=shared.prompt_mask, position_ids=positions,
                             logits_to_keep=1, use_cache=True, **{keyword: cache})
            logits = out.logits[shared.prompt_of_row, -1]  # (B, V): predicts each row's first token
            cache.reorder_cache(shared.prompt_of_row)  # (U, H, Lp, D) -> (B, H, Lp, D) in every layer
            live = torch.arange(rows, device=device)  # (n,) the batch rows still in the cache, in cache order
            mask = shared.prompt_mask[shared.prompt_of_row]  # (n, Lp + t)
            next_position = prompt_len[shared.prompt_of_row]  # (n,)
            done = torch.zeros(rows, dtype=torch.bool, device=device)  # (n,) finished rows still in the cache
            for t in range(max_new):
                token, logp = _draw(logits, temperature, top_p, greedy)  # (n,), (n,)
                token = torch.where(done, self.pad_id, token)
                tokens[live, t], logps[live, t] = token, logp
                done |= token == self.eos_id
                if t == max_new - 1 or bool(done.all()):
                    break
                if int(done.sum()) >= max(1, self.COMPACT_FRACTION * len(live)):  # drop the finished rows
                    keep = (~done).nonzero().squeeze(-1)  # (n',)
                    cache.reorder_cache(keep)
                    live, mask, next_position, token = live[keep], mask[keep], next_position[keep], token[keep]
                    done = done[keep]
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)  # (n, Lp + t + 1)
                out = self.model(input_ids=token[:, None], attention_mask=mask, position_ids=next_position[:, None],
                                 use_cache=True, **{keyword: cache})
                logits, next_position = out.logits[:, -1], next_position + 1
        del cache, out
        return self._cut_at_eos(tokens, logps)


def _draw(logits: torch.Tensor, temperature: float, top_p: float, greedy: bool):
    """One token per row from softmax(logits / temperature) restricted to the top-p nucleus (renormalised), or
    the argmax; and its log-prob under that distribution (as ``generate``'s processed scores give it).
    ``(n, V) -> (n,), (n,)``."""
    z = logits.float()  # (n, V)
    if greedy:
        token = z.argmax(-1)
        return token, torch.log_softmax(z, -1).gather(-1, token[:, None]).squeeze(-1)
    if temperature != 1.0:
        z = z / temperature
    if top_p < 1.0:  # keep the most probable tokens until their mass reaches top_p (at least one)
        sorted_z, order = z.sort(-1, descending=True)  # (n, V)
        before = sorted_z.softmax(-1).cumsum(-1) - sorted_z.softmax(-1)  # mass of the tokens ranked above
        sorted_z = sorted_z.masked_fill(before >= top_p, float("-inf"))
        z = torch.full_like(z, float("-inf")).scatter(-1, order, sorted_z)
    logp = torch.log_softmax(z, -1)  # (n, V)
    token = torch.multinomial(logp.exp(), 1).squeeze(-1)  # (n,)
    return token, logp.gather(-1, token[:, None]).squeeze(-1)


def make_hf_sampler(config, model, tokenizer) -> HFSampler:
    """Factory for the trainer's sampler registry (``config.sampler = "hf"``)."""
    from .models import DTYPES

    autocast = DTYPES.get(config.autocast_dtype)
    return HFSampler(model, tokenizer, max_batch_sequences=config.sampler_batch_sequences, autocast_dtype=autocast)


def make_shared_prefill_sampler(config, model, tokenizer) -> SharedPrefillSampler:
    """Factory for ``config.sampler = "hf-shared"`` (opt-in; ``SharedPrefillSampler``)."""
    from .models import DTYPES

    autocast = DTYPES.get(config.autocast_dtype)
    return SharedPrefillSampler(model, tokenizer, max_batch_sequences=config.sampler_batch_sequences,
                                autocast_dtype=autocast)
