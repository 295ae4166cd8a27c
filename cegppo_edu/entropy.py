"""Entropy of a softmax policy, and how one update changes it (the paper in brief, §3).

- ``entropy_from_logits``: H = logsumexp(z) − Σ_a π_a z_a, computed over chunks of tokens, so that a
  (T, V) block with V = 151,936 never holds more than one chunk of fp32 probabilities.
- ``token_logp_and_entropy``: the same pass also gathers the sampled tokens' log-probabilities.
- ``predicted_entropy_change``: first-order ΔH ≈ −Cov_{a∼π}(log π_a, Δz_a) for a logit update Δz
  (Cui et al., arXiv:2505.22617, Lemma 1).
- ``entropy_influence``: for one sampled token a, I_a = π_a (log π_a + H) − Σ_b π_b² (log π_b + H), so that
  a tabular update Δz_b = η·w·(1[b=a] − π_b) changes the entropy by ΔH ≈ −η·w·I_a.
  I_a > 0 for high-probability tokens (roughly π_a > e^{−H}), < 0 for low-probability ones.

Masked vocabularies work everywhere: a logit of −inf is a choice of probability 0, which adds nothing (the terms
0·(−inf) are taken as 0). NaN or +inf logits, a row whose logits are all −inf, and empty inputs raise a
``ValueError`` naming the argument.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from .validation import POSITIVE_INT

DEFAULT_CHUNK = 1024  # tokens per chunk: 1024 × 151,936 fp32 ≈ 0.6 GB


def _chunks(n: int, chunk_size: int):
    POSITIVE_INT.check("chunk_size", chunk_size)
    return ((start, min(start + chunk_size, n)) for start in range(0, n, chunk_size))


def check_logits(name: str, logits: torch.Tensor) -> None:
    """Raise ``ValueError`` naming ``name`` unless every row has finite logits or −inf (masked) ones, and at least
    one finite logit."""
    if not isinstance(logits, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(logits).__name__}")
    if logits.dim() < 1 or logits.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(logits.shape)}); it needs shape (..., V) with V >= 1")
    if torch.isnan(logits).any() or torch.isposinf(logits).any():
        raise ValueError(f"{name} contains NaN or +inf; logits must be finite, or −inf for a masked choice")
    if torch.isneginf(logits).all(-1).any():
        raise ValueError(f"{name} has a row whose logits are all −inf: no choice has a probability")


def _finite(z: torch.Tensor) -> torch.Tensor:
    """``z`` with −inf (masked, probability 0) replaced by 0, so that π·z is 0 there, not NaN. Same shape."""
    return torch.where(torch.isneginf(z), torch.zeros((), dtype=z.dtype, device=z.device), z)


def _flat_pairs(logits: torch.Tensor, tokens: torch.Tensor):
    """Validated ``(logits (N, V), tokens (N,))``, flattened over the leading axes."""
    check_logits("logits", logits)
    if tokens.shape != logits.shape[:-1]:
        raise ValueError(f"tokens has shape {tuple(tokens.shape)}, expected logits' leading shape "
                         f"{tuple(logits.shape[:-1])}")
    return logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1)


def _at_least_fp32(z: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 logits in fp32; fp32 and fp64 ones as they are (a float64 model's entropy stays float64)."""
    return z.to(torch.promote_types(z.dtype, torch.float32))


def _entropy_of_chunk(z: torch.Tensor) -> torch.Tensor:
    z = _at_least_fp32(z)  # (n, V)
    log_norm = torch.logsumexp(z, dim=-1)  # (n,)
    probs = torch.softmax(z, dim=-1)  # (n, V): the one fp32 probability buffer of this chunk
    if torch.isneginf(z).any():  # a masked vocabulary: π_a z_a = 0·(−inf) must count as 0
        z = _finite(z)
    expected_z = torch.bmm(probs[:, None, :], z[:, :, None]).reshape(-1)  # Σ_a π_a z_a without a (n, V) product
    return log_norm - expected_z  # (n,)


def _logp_of_chunk(z: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    z = _at_least_fp32(z)  # (n, V)
    return z.gather(-1, tokens[:, None]).squeeze(-1) - torch.logsumexp(z, dim=-1)  # (n,)


def entropy_from_logits(logits: torch.Tensor, chunk_size: int = DEFAULT_CHUNK) -> torch.Tensor:
    """Entropy (nats) of softmax(logits) over the last axis. ``(..., V) -> (...)``, at least fp32.

    Differentiable; under autograd each chunk is checkpointed (its probabilities are recomputed in the backward
    pass), so that ∇θH̄ of a long batch does not keep one (n, V) fp32 buffer per chunk."""
    check_logits("logits", logits)
    flat = logits.reshape(-1, logits.shape[-1])  # (N, V)
    grad = flat.requires_grad and torch.is_grad_enabled()
    out = torch.cat([checkpoint(_entropy_of_chunk, flat[a:b], use_reentrant=False) if grad
                     else _entropy_of_chunk(flat[a:b]) for a, b in _chunks(flat.shape[0], chunk_size)])
    return out.reshape(logits.shape[:-1])


def token_logp_and_entropy(logits: torch.Tensor, tokens: torch.Tensor, chunk_size: int = DEFAULT_CHUNK,
                           with_entropy: bool = True):
    """log π(token) and (optionally) the entropy at every position, chunked. ``(..., V), (...) -> (...), (...)``.

    The log-probabilities keep their autograd graph (the trainer differentiates them); the entropy is a
    metric and is computed without one. Under autograd each chunk is checkpointed: its fp32 copy of the
    logits is recomputed in the backward pass instead of being kept (≈5 GB at 8k tokens × 151,936 otherwise).
    """
    flat, flat_tokens = _flat_pairs(logits, tokens)  # (N, V), (N,)
    logps, entropies = [], []
    for a, b in _chunks(flat.shape[0], chunk_size):
        if flat.requires_grad and torch.is_grad_enabled():
            logps.append(checkpoint(_logp_of_chunk, flat[a:b], flat_tokens[a:b], use_reentrant=False))
        else:
            logps.append(_logp_of_chunk(flat[a:b], flat_tokens[a:b]))
        if with_entropy:
            with torch.no_grad():
                entropies.append(_entropy_of_chunk(flat[a:b]))
    logp = torch.cat(logps).reshape(tokens.shape)
    entropy = torch.cat(entropies).reshape(tokens.shape) if with_entropy else None
    return logp, entropy


def predicted_entropy_change(logits: torch.Tensor, delta_logits: torch.Tensor) -> torch.Tensor:
    """First-order ΔH ≈ −Cov_{a∼π}(log π_a, Δz_a) for every distribution. ``(..., V), (..., V) -> (...)``."""
    check_logits("logits", logits)
    if delta_logits.shape != logits.shape:
        raise ValueError(f"delta_logits has shape {tuple(delta_logits.shape)}, expected logits' {tuple(logits.shape)}")
    if not torch.isfinite(delta_logits).all():
        raise ValueError("delta_logits contains non-finite values (inf or NaN); all entries must be finite")
    logpi = _finite(torch.log_softmax(logits.float(), dim=-1))  # masked choices: π = 0, log π taken as 0
    pi = logpi.exp() * ~torch.isneginf(logits)
    delta = delta_logits.float()
    mean_logpi = (pi * logpi).sum(-1, keepdim=True)  # = −H
    mean_delta = (pi * delta).sum(-1, keepdim=True)
    return -(pi * (logpi - mean_logpi) * (delta - mean_delta)).sum(-1)


def _influence_parts(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two terms of I for every choice of a chunk: ``(π_b (log π_b + H) (n, V), Σ_b π_b² (log π_b + H) (n,))``."""
    z = z.float()
    logpi = torch.log_softmax(z, dim=-1)  # (n, V)
    pi = logpi.exp()
    if torch.isneginf(z).any():  # masked choices: π = 0, and their log π is taken as 0 (π·log π = 0)
        logpi = _finite(logpi)
    centred = logpi + (-(pi * logpi).sum(-1, keepdim=True))  # log π_b + H
    return pi * centred, (pi * pi * centred).sum(-1)


def entropy_influence(logits: torch.Tensor, tokens: torch.Tensor, chunk_size: int = DEFAULT_CHUNK) -> torch.Tensor:
    """I_a = π_a (log π_a + H) − Σ_b π_b² (log π_b + H) for the token a at every position. ``(..., V) -> (...)``.

    A gradient step that adds η·w·∇_z log π_a to the logits changes the entropy by ≈ −η·w·I_a.
    """
    flat, flat_tokens = _flat_pairs(logits, tokens)  # (N, V), (N,)
    out = []
    with torch.no_grad():
        for a, b in _chunks(flat.shape[0], chunk_size):
            own, shared = _influence_parts(flat[a:b])  # (n, V), (n,)
            out.append(own.gather(-1, flat_tokens[a:b, None]).squeeze(-1) - shared)
    return torch.cat(out).reshape(tokens.shape)


def entropy_influence_per_choice(logits: torch.Tensor, chunk_size: int = DEFAULT_CHUNK) -> torch.Tensor:
    """``entropy_influence`` of every choice b at every position, the same numbers: ``(..., V) -> (..., V)``.

    For a small vocabulary whose every choice is needed (the token bandits), one pass over the logits instead
    of one per choice.
    """
    check_logits("logits", logits)
    flat = logits.reshape(-1, logits.shape[-1])  # (N, V)
    out = []
    with torch.no_grad():
        for a, b in _chunks(flat.shape[0], chunk_size):
            own, shared = _influence_parts(flat[a:b])
            out.append(own - shared[:, None])
    return torch.cat(out).reshape(logits.shape)
