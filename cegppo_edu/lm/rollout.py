"""``HFSampler``: the ``interfaces.Sampler`` implemented with Hugging Face ``generate`` (KV cache on).

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
from .batching import attention_guard
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


def make_hf_sampler(config, model, tokenizer) -> HFSampler:
    """Factory for the trainer's sampler registry (``config.sampler = "hf"``)."""
    from .models import DTYPES

    autocast = DTYPES.get(config.autocast_dtype)
    return HFSampler(model, tokenizer, max_batch_sequences=config.sampler_batch_sequences, autocast_dtype=autocast)
