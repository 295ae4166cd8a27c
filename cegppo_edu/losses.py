"""Policy-gradient objectives of the PPO-clip family, as pure tensor functions.

Every objective here is "a per-token weight F(r, Â) on Â·∇log π" (see ``gradient_weight``):

    method      | F inside [1-ε_l, 1+ε_h] | F on a clipped token (r<1-ε_l, Â<0 | r>1+ε_h, Â>0)
    ------------+--------------------------+---------------------------------------------------
    PPO / GRPO  | r                        | 0            | 0
    DAPO        | r   (ε_h = 0.28)         | 0            | 0
    GPPO        | r                        | (1-ε_l)      | (1+ε_h)
    CE-GPPO     | r                        | β1·(1-ε_l)   | β2·(1+ε_h)
    CISPO       | clip(r) on every token, whatever the sign of Â

Each loss returns the scalar to *minimise* (the negative objective). Shapes (nanoGPT style):
``logp, old_logp, mask: (B, T)``; ``adv: (B,)`` (one advantage per response, broadcast over its
tokens) or ``(B, T)``. Aggregation is "token-mean" over ``mask`` unless ``agg`` says otherwise.

Equations refer to CE-GPPO, arXiv:2509.20712 (v2), §3, in the notation of ``book/paper_in_brief.md`` (cited as PAPER.md).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

# |log r| is clamped in value before exp(), so one extreme token cannot produce inf or NaN (verl does the same);
# the gradient passes the clamp unchanged (straight through), so F(r, Â) holds at any ratio (see clamped_log_ratio).
LOG_RATIO_CLAMP = 20.0
AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")


# --------------------------------------------------------------------------------------------------
# Validation: every public function checks its inputs and names the bad argument and the allowed range.
# --------------------------------------------------------------------------------------------------
def _check_range(name: str, value: float, low: float, high: float, low_open=True, high_open=True) -> None:
    ok_low = value > low if low_open else value >= low
    ok_high = value < high if high_open else value <= high
    if not (isinstance(value, (int, float)) and math.isfinite(value) and ok_low and ok_high):
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ValueError(f"{name}={value!r} is outside the allowed range {lo}{low}, {high}{hi}")


def check_clip_params(eps_low: float, eps_high: float, beta1: float = 0.0, beta2: float = 0.0,
                      dual_clip: float | None = None, eps_low_max_closed: bool = False) -> None:
    """Raise ``ValueError`` naming the first hyper-parameter outside its range."""
    _check_range("eps_low", eps_low, 0.0, 1.0, high_open=not eps_low_max_closed)
    _check_range("eps_high", eps_high, 0.0, math.inf)
    _check_range("beta1", beta1, 0.0, math.inf, low_open=False)
    _check_range("beta2", beta2, 0.0, math.inf, low_open=False)
    if dual_clip is not None:
        _check_range("dual_clip", dual_clip, 1.0, math.inf)


def check_inputs(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor):
    """Validate shapes and values; return ``(adv, mask)`` broadcast to ``(B, T)`` in ``logp``'s dtype."""
    for name, x in (("logp", logp), ("old_logp", old_logp), ("adv", adv), ("mask", mask)):
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if logp.dim() != 2:
        raise ValueError(f"logp must have shape (B, T), got {tuple(logp.shape)}")
    if old_logp.shape != logp.shape:
        raise ValueError(f"old_logp has shape {tuple(old_logp.shape)}, expected logp's {tuple(logp.shape)}")
    if mask.shape != logp.shape:
        raise ValueError(f"mask has shape {tuple(mask.shape)}, expected logp's {tuple(logp.shape)}")
    if adv.shape == logp.shape[:1]:
        adv = adv[:, None].expand_as(logp)  # (B,) -> (B, T)
    elif adv.shape != logp.shape:
        raise ValueError(f"adv has shape {tuple(adv.shape)}, expected (B,)={tuple(logp.shape[:1])} "
                         f"or (B, T)={tuple(logp.shape)}")
    for name, x in (("logp", logp), ("old_logp", old_logp), ("adv", adv)):
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} contains non-finite values (inf or NaN); all entries must be finite")
    mask = mask.to(logp.dtype)
    if ((mask != 0) & (mask != 1)).any():
        raise ValueError("mask must contain only 0 and 1 (or False and True)")
    if mask.sum() == 0:
        raise ValueError("mask has no valid token; at least one entry must be 1")
    return adv.to(logp.dtype), mask


# --------------------------------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------------------------------
def clamped_log_ratio(logp: torch.Tensor, old_logp: torch.Tensor) -> torch.Tensor:
    """log r = logp − old_logp, clamped to ±``LOG_RATIO_CLAMP`` in value but with the gradient of the unclamped
    difference (straight through). A plain clamp would zero the gradient of every token beyond |log r| = 20,
    including the bounded one CE-GPPO keeps on a clipped token. Shape of the inputs."""
    log_ratio = logp - old_logp
    return log_ratio + (log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP) - log_ratio).detach()


def ratio_from_logps(logp: torch.Tensor, old_logp: torch.Tensor) -> torch.Tensor:
    """r = exp(clamped log r), differentiable w.r.t. ``logp`` with ∂r/∂logp = r at any ratio. Shape of the inputs."""
    return torch.exp(clamped_log_ratio(logp, old_logp))


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, mode: str = "token-mean") -> torch.Tensor:
    """Reduce a ``(B, T)`` per-token loss to a scalar.

    - ``token-mean``: Σ_{i,t} ℓ·m / Σ m — every valid token of the batch weighs the same (DAPO, CE-GPPO).
    - ``seq-mean-token-mean``: mean over responses of each response's token mean (original GRPO).
    - ``seq-mean-token-sum``: mean over responses of each response's token sum.
    Responses without a valid token are left out of the sequence means.
    """
    mask = mask.to(per_token.dtype)
    if mode == "token-mean":
        return (per_token * mask).sum() / mask.sum()
    seq_sum = (per_token * mask).sum(dim=-1)  # (B,)
    n_tok = mask.sum(dim=-1)  # (B,)
    has_tokens = n_tok > 0
    if mode == "seq-mean-token-mean":
        return (seq_sum[has_tokens] / n_tok[has_tokens]).mean()
    if mode == "seq-mean-token-sum":
        return seq_sum[has_tokens].mean()
    raise ValueError(f"agg={mode!r} is not a known aggregation mode; choose one of {', '.join(AGG_MODES)}")


# --------------------------------------------------------------------------------------------------
# Per-token losses (B, T): the formulas themselves, without validation or aggregation.
# --------------------------------------------------------------------------------------------------
def ppo_clip_per_token(logp, old_logp, adv, eps_low=0.2, eps_high=0.2, dual_clip=None):
    """PPO's pessimistic clipped surrogate, per token: max(−r·Â, −clip(r, 1−ε_l, 1+ε_h)·Â).

    ``dual_clip = c`` (Ye et al. 2020) additionally caps the loss of Â<0 tokens at −c·Â, so a
    negative-advantage token whose ratio exploded (r > c) stops pushing.
    """
    ratio = ratio_from_logps(logp, old_logp)
    per_token = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 1 - eps_low, 1 + eps_high))
    return _apply_dual_clip(per_token, ratio, adv, dual_clip)


def ce_gppo_per_token(logp, old_logp, adv, eps_low=0.2, eps_high=0.2, beta1=0.5, beta2=1.0, dual_clip=None):
    """CE-GPPO per token (PAPER.md §2): keep a bounded gradient on the tokens PPO clips away.

    r / sg(r) is 1 in the forward pass and has gradient ∇log π, so a clipped token contributes the
    constant value β·(1±ε)·Â but the gradient β·(1±ε)·Â·∇log π. β1 acts on the lower side (Â<0),
    β2 on the upper side (Â>0), as in the authors' code.
    """
    ratio = ratio_from_logps(logp, old_logp)
    lower = (ratio < 1 - eps_low) & (adv < 0)  # negative advantage, ratio fell below the interval
    upper = (ratio > 1 + eps_high) & (adv > 0)  # positive advantage, ratio rose above the interval
    preserved = ratio / ratio.detach()  # == 1 in value, ∇ = ∇log π
    surrogate = torch.where(lower, beta1 * (1 - eps_low) * preserved,
                            torch.where(upper, beta2 * (1 + eps_high) * preserved, ratio))
    return _apply_dual_clip(-adv * surrogate, ratio, adv, dual_clip)


def cispo_per_token(logp, old_logp, adv, eps_low=1.0, eps_high=0.28):
    """CISPO (MiniMax-M1, arXiv:2506.13585, eq. 4) per token: −sg(clip(r, 1−ε_l, 1+ε_h))·Â·log π."""
    ratio = ratio_from_logps(logp, old_logp)
    weight = torch.clamp(ratio, 1 - eps_low, 1 + eps_high).detach()
    return -weight * adv * logp


def _apply_dual_clip(per_token, ratio, adv, dual_clip):
    if dual_clip is None:
        return per_token
    capped = (adv < 0) & (ratio > dual_clip)  # loss frozen at −c·Â: zero gradient
    return torch.where(capped, -adv * dual_clip, per_token)


# --------------------------------------------------------------------------------------------------
# Public losses: validate, compute per token, aggregate.
# --------------------------------------------------------------------------------------------------
def ppo_clip(logp, old_logp, adv, mask, eps_low=0.2, eps_high=0.2, dual_clip=None, agg="token-mean"):
    """PPO-clip (arXiv:1707.06347, eq. 7) with token-mean aggregation = token-level GRPO without KL.

    Defaults ε_l = ε_h = 0.2: the PPO paper and the CE-GPPO authors' scripts.
    Limiting case: with logp == old_logp every token has F = 1 (plain policy gradient).
    """
    check_clip_params(eps_low, eps_high, dual_clip=dual_clip)
    adv, mask = check_inputs(logp, old_logp, adv, mask)
    return aggregate(ppo_clip_per_token(logp, old_logp, adv, eps_low, eps_high, dual_clip), mask, agg)


def dapo(logp, old_logp, adv, mask, eps_low=0.2, eps_high=0.28, dual_clip=None, agg="token-mean"):
    """DAPO's clip-higher (arXiv:2503.14476, eq. 8): PPO-clip with a wider upper bound, ε_h = 0.28.

    The defaults are DAPO's. Dynamic sampling (dropping zero-variance groups) is in ``advantages``.
    """
    return ppo_clip(logp, old_logp, adv, mask, eps_low, eps_high, dual_clip, agg)


def ce_gppo(logp, old_logp, adv, mask, eps_low=0.2, eps_high=0.2, beta1=0.5, beta2=1.0, dual_clip=None,
            agg="token-mean"):
    """CE-GPPO (arXiv:2509.20712 v2, eq. 5), token-mean over ``mask``.

    Defaults: ε_l = ε_h = 0.2, β1 = 0.5, β2 = 1.0 — the authors' 1.5B scripts (7B: β1 = 0.75).
    Limiting cases (in gradient): β1 = β2 = 0 is ``ppo_clip``; β1 = β2 = 1 is ``gppo``.
    """
    check_clip_params(eps_low, eps_high, beta1, beta2, dual_clip)
    adv, mask = check_inputs(logp, old_logp, adv, mask)
    per_token = ce_gppo_per_token(logp, old_logp, adv, eps_low, eps_high, beta1, beta2, dual_clip)
    return aggregate(per_token, mask, agg)


def gppo(logp, old_logp, adv, mask, eps_low=0.2, eps_high=0.2, dual_clip=None, agg="token-mean"):
    """GPPO (Klear-Reasoner, arXiv:2508.07629, eq. 4): CE-GPPO with β1 = β2 = 1."""
    return ce_gppo(logp, old_logp, adv, mask, eps_low, eps_high, 1.0, 1.0, dual_clip, agg)


def cispo(logp, old_logp, adv, mask, eps_low=1.0, eps_high=0.28, agg="token-mean"):
    """CISPO (MiniMax-M1, arXiv:2506.13585, eq. 4): every token keeps the gradient sg(clip(r))·Â·∇log π.

    Defaults: ε_l = 1.0, i.e. no lower bound (MiniMax-M1 §3.1 "did not impose a lower bound"; here the
    only case where ε_l = 1 is allowed), and ε_h = 0.28 as commonly paired with it (DAPO's value).
    """
    check_clip_params(eps_low, eps_high, eps_low_max_closed=True)
    adv, mask = check_inputs(logp, old_logp, adv, mask)
    return aggregate(cispo_per_token(logp, old_logp, adv, eps_low, eps_high), mask, agg)


def gspo(logp, old_logp, adv, mask, eps_low=3e-4, eps_high=4e-4):
    """GSPO (arXiv:2507.18071, eq. 5-7): one ratio per response, clipped PPO-style, mean over responses.

    s_i = exp(mean_t (logp − old_logp)); each token receives s_i/|o_i| of the response's gradient.
    Defaults ε_l = 3e-4, ε_h = 4e-4: the values the GSPO paper reports for its runs.
    ``adv`` must be constant within a response (it is read from the first valid token).
    """
    check_clip_params(eps_low, eps_high)
    adv, mask = check_inputs(logp, old_logp, adv, mask)
    n_tok = mask.sum(-1)  # (B,)
    has_tokens = n_tok > 0
    mean_log_ratio = ((logp - old_logp) * mask).sum(-1) / n_tok.clamp(min=1)  # (B,)
    seq_ratio = ratio_from_logps(mean_log_ratio, torch.zeros_like(mean_log_ratio))  # (B,)
    seq_adv = (adv * mask).sum(-1) / n_tok.clamp(min=1)  # (B,)
    per_seq = torch.maximum(-seq_adv * seq_ratio, -seq_adv * torch.clamp(seq_ratio, 1 - eps_low, 1 + eps_high))
    return per_seq[has_tokens].mean()


# --------------------------------------------------------------------------------------------------
# The gradient weight F: d loss / d logp = −F · Â · mask / Σ mask   (token-mean)
# --------------------------------------------------------------------------------------------------
TOKEN_LEVEL_DEFAULTS = {
    "ppo_clip": dict(eps_low=0.2, eps_high=0.2, beta1=0.0, beta2=0.0),
    "grpo": dict(eps_low=0.2, eps_high=0.2, beta1=0.0, beta2=0.0),
    "dapo": dict(eps_low=0.2, eps_high=0.28, beta1=0.0, beta2=0.0),
    "gppo": dict(eps_low=0.2, eps_high=0.2, beta1=1.0, beta2=1.0),
    "ce_gppo": dict(eps_low=0.2, eps_high=0.2, beta1=0.5, beta2=1.0),
    "cispo": dict(eps_low=1.0, eps_high=0.28),
}


def gradient_weight(ratio, adv, method: str = "ce_gppo", **hyper):
    """The per-token weight F(r, Â) of PAPER.md §2, for the token-level methods.

    Accepts tensors, numpy arrays or floats (broadcast together) and returns the same kind.
    ``hyper`` overrides the method's defaults (``eps_low``, ``eps_high``, ``beta1``, ``beta2``, ``dual_clip``);
    GPPO's β are fixed at 1. On the interval's edges (r exactly 1±ε) a token counts as inside. ``ratio`` may be
    any number in [0, inf]; like the losses, F uses r clamped to [e^−20, e^20] (``LOG_RATIO_CLAMP``).
    """
    if method not in TOKEN_LEVEL_DEFAULTS:
        raise ValueError(f"method={method!r} has no per-token weight; choose one of "
                         f"{', '.join(TOKEN_LEVEL_DEFAULTS)} (gspo is sequence-level)")
    unknown = set(hyper) - {"eps_low", "eps_high", "beta1", "beta2", "dual_clip"}
    if unknown:
        raise ValueError(f"unknown hyper-parameter(s) {sorted(unknown)}; allowed: eps_low, eps_high, "
                         f"beta1, beta2, dual_clip")
    p = {**TOKEN_LEVEL_DEFAULTS[method], **hyper}
    if method == "gppo":
        p["beta1"] = p["beta2"] = 1.0
    check_clip_params(p["eps_low"], p["eps_high"], p.get("beta1", 0.0), p.get("beta2", 0.0),
                      p.get("dual_clip"), eps_low_max_closed=(method == "cispo"))
    as_numpy = not isinstance(ratio, torch.Tensor)
    r = torch.as_tensor(ratio, dtype=torch.float64 if as_numpy else None)
    a = torch.as_tensor(adv, dtype=r.dtype, device=r.device)
    if torch.isnan(r).any() or (r < 0).any():
        raise ValueError("ratio contains NaN or negative values; a ratio π/π_old lies in [0, inf]")
    if not torch.isfinite(a).all():
        raise ValueError("adv contains non-finite values (inf or NaN); all entries must be finite")
    r = r.clamp(math.exp(-LOG_RATIO_CLAMP), math.exp(LOG_RATIO_CLAMP))
    lo, hi = 1 - p["eps_low"], 1 + p["eps_high"]
    if method == "cispo":
        weight = torch.clamp(r, lo, hi) * torch.ones_like(a)
    else:
        lower = (r < lo) & (a < 0)
        upper = (r > hi) & (a > 0)
        weight = torch.where(lower, p["beta1"] * lo, torch.where(upper, p["beta2"] * hi, r * torch.ones_like(a)))
        if p.get("dual_clip") is not None:
            weight = torch.where((a < 0) & (r > p["dual_clip"]), torch.zeros_like(weight), weight)
    return weight.numpy() if as_numpy else weight


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------
LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "ppo_clip": ppo_clip,
    "grpo": ppo_clip,  # token-level GRPO without KL is PPO-clip with group advantages
    "dapo": dapo,
    "gppo": gppo,
    "ce_gppo": ce_gppo,
    "cispo": cispo,
    "gspo": gspo,
}


def get_loss(name: str) -> Callable[..., torch.Tensor]:
    """Look a loss up by name; the error lists the valid names."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(sorted(LOSSES))}") from None


__all__ = [
    "AGG_MODES", "LOSSES", "LOG_RATIO_CLAMP", "aggregate", "ce_gppo", "ce_gppo_per_token", "check_clip_params",
    "check_inputs", "cispo", "cispo_per_token", "clamped_log_ratio", "dapo", "get_loss", "gppo", "gradient_weight", "gspo",
    "ppo_clip", "ppo_clip_per_token", "ratio_from_logps",
]
