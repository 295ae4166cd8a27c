"""Policy-gradient objectives of the PPO-clip family, as pure tensor functions, and the registry of methods.

Every objective here is "a per-token weight F(r, Â) on Â·∇log π" (see ``gradient_weight``):

    method      | F inside [1-ε_l, 1+ε_h] | F on a clipped token (r<1-ε_l, Â<0 | r>1+ε_h, Â>0)
    ------------+--------------------------+---------------------------------------------------
    PPO / GRPO  | r                        | 0            | 0
    DAPO        | r   (ε_h = 0.28)         | 0            | 0
    GPPO        | r                        | (1-ε_l)      | (1+ε_h)
    CE-GPPO     | r                        | β1·(1-ε_l)   | β2·(1+ε_h)
    CISPO       | clip(r) on every token, whatever the sign of Â
    SAPO        | a smooth gate instead of a clip: F = 4·σ(τ(r−1))·(1−σ(τ(r−1)))·r, τ = τ_pos (Â>0) or τ_neg

Two more methods of chapter 7 ("Steering entropy") pick tokens by a statistic of the whole batch, so their F is
not a function of (r, Â) alone (their level is "batch"): Clip-Cov detaches the gradient of a few tokens whose
covariance (Â − mean Â)(log π − mean log π) lies in a band; KL-Cov adds a penalty k·|log r| on the tokens of
highest covariance (Cui et al., arXiv:2505.22617, §4; verl's ``clip_cov`` and ``kl_cov``).

Each loss returns the scalar to *minimise* (the negative objective). Shapes (nanoGPT style):
``logp, old_logp, mask: (B, T)``; ``adv: (B,)`` (one advantage per response, broadcast over its
tokens) or ``(B, T)``. Aggregation is "token-mean" over ``mask`` unless ``agg`` says otherwise.

``METHODS`` is the one registry of methods: for each its loss, per-token function, gradient weight, defaults
(the loss signature's), accepted hyper-parameters with their ranges, display label and level (token or
sequence). The toy, the figures, the widgets, the trainer's config, the command line and the verl plugin read it;
``register_method`` adds one.

Equations refer to CE-GPPO, arXiv:2509.20712 (v2), §3, in the notation of the book page "The paper in brief"
(``book/paper_in_brief.md``).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

import torch

from .validation import Range

# |log r| is clamped in value before exp(), so one extreme token cannot produce inf or NaN (verl does the same);
# the gradient passes the clamp unchanged (straight through), so F(r, Â) holds at any ratio (see clamped_log_ratio).
LOG_RATIO_CLAMP = 20.0
AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")

# The hyper-parameters of the family and their allowed ranges (a method may narrow or widen one).
HYPER_RANGES = {
    "eps_low": Range(0.0, 1.0, low_open=True, high_open=True),
    "eps_high": Range(0.0, math.inf, low_open=True),
    "beta1": Range(0.0, math.inf),
    "beta2": Range(0.0, math.inf),
    "dual_clip": Range(1.0, math.inf, low_open=True, none=True),
    "tau_pos": Range(0.0, math.inf, low_open=True),  # SAPO's gate temperatures
    "tau_neg": Range(0.0, math.inf, low_open=True),
    "cov_ratio": Range(0.0, 1.0, low_open=True),  # Clip-Cov / KL-Cov: fraction of the batch's tokens picked
    "clip_cov_lb": Range(-math.inf, math.inf),  # Clip-Cov: the covariance band its picks come from
    "clip_cov_ub": Range(-math.inf, math.inf),
    "kl_cov_coef": Range(0.0, math.inf),  # KL-Cov: weight k of |log r| on its picks
}


# --------------------------------------------------------------------------------------------------
# Validation of tensors
# --------------------------------------------------------------------------------------------------
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
# Shared pieces: the ratio, the clipped sides, the dual clip, aggregation (each written once)
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


def clipped_sides(ratio, adv, eps_low: float, eps_high: float):
    """Boolean masks of the tokens PPO zeroes: ``(lower, upper)`` = (r<1−ε_l & Â<0, r>1+ε_h & Â>0).

    On the interval's edges (r exactly 1±ε) a token counts as inside.
    """
    return (ratio < 1 - eps_low) & (adv < 0), (ratio > 1 + eps_high) & (adv > 0)


def dual_clipped(ratio, adv, dual_clip: float):
    """Tokens the dual clip freezes (Â<0 and r>c, Ye et al. 2020): their loss is −c·Â, their gradient 0."""
    return (adv < 0) & (ratio > dual_clip)


def _apply_dual_clip(per_token, ratio, adv, dual_clip):
    if dual_clip is None:
        return per_token
    return torch.where(dual_clipped(ratio, adv, dual_clip), -adv * dual_clip, per_token)


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
def ppo_clip_per_token(logp, old_logp, adv, *, eps_low, eps_high, dual_clip=None):
    """PPO's pessimistic clipped surrogate, per token: max(−r·Â, −clip(r, 1−ε_l, 1+ε_h)·Â).

    ``dual_clip = c`` (Ye et al. 2020) additionally caps the loss of Â<0 tokens at −c·Â, so a
    negative-advantage token whose ratio exploded (r > c) stops pushing.
    """
    ratio = ratio_from_logps(logp, old_logp)
    per_token = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 1 - eps_low, 1 + eps_high))
    return _apply_dual_clip(per_token, ratio, adv, dual_clip)


def ce_gppo_per_token(logp, old_logp, adv, *, eps_low, eps_high, beta1, beta2, dual_clip=None):
    """CE-GPPO per token (the paper's eq. 5): keep a bounded gradient on the tokens PPO clips away.

    r / sg(r) is 1 in the forward pass and has gradient ∇log π, so a clipped token contributes the
    constant value β·(1±ε)·Â but the gradient β·(1±ε)·Â·∇log π. β1 acts on the lower side (Â<0),
    β2 on the upper side (Â>0), as in the authors' code.
    """
    ratio = ratio_from_logps(logp, old_logp)
    lower, upper = clipped_sides(ratio, adv, eps_low, eps_high)
    preserved = ratio / ratio.detach()  # == 1 in value, ∇ = ∇log π
    surrogate = torch.where(lower, beta1 * (1 - eps_low) * preserved,
                            torch.where(upper, beta2 * (1 + eps_high) * preserved, ratio))
    return _apply_dual_clip(-adv * surrogate, ratio, adv, dual_clip)


def cispo_per_token(logp, old_logp, adv, *, eps_low, eps_high):
    """CISPO (MiniMax-M1, arXiv:2506.13585, eq. 4) per token: −sg(clip(r, 1−ε_l, 1+ε_h))·Â·log π."""
    ratio = ratio_from_logps(logp, old_logp)
    weight = torch.clamp(ratio, 1 - eps_low, 1 + eps_high).detach()
    return -weight * adv * logp


def sapo_per_token(logp, old_logp, adv, *, tau_pos, tau_neg):
    """SAPO (arXiv:2511.20347, eq. 5) per token: −(4/τ)·σ(τ(r−1))·Â, τ = τ_pos where Â > 0, else τ_neg.

    The gate's slope at r = 1 is 1, so on policy SAPO is the plain policy gradient; away from r = 1 the gradient
    fades smoothly instead of stopping at a clip edge.
    """
    ratio = ratio_from_logps(logp, old_logp)
    tau = _sapo_temperature(adv, tau_pos, tau_neg)
    return -adv * torch.sigmoid(tau * (ratio - 1)) * (4 / tau)


def _sapo_temperature(adv, tau_pos, tau_neg):
    return torch.where(adv > 0, torch.as_tensor(tau_pos, dtype=adv.dtype), torch.as_tensor(tau_neg, dtype=adv.dtype))


def token_covariance(logp, adv, mask):
    """Each valid token's covariance term (Â − mean Â)·(log π − mean log π), the means over the valid tokens of
    the batch (Cui et al., arXiv:2505.22617, eq. 9); no gradient. ``(B, T)`` in, ``(B, T)`` out, −inf on padding."""
    valid = mask > 0
    a, lp = adv.detach(), logp.detach()
    cov = (a - a[valid].mean()) * (lp - lp[valid].mean())
    return cov.masked_fill(~valid, -math.inf)


def _picked_count(mask, cov_ratio: float) -> int:
    return max(int(cov_ratio * mask.sum().item()), 1)  # at least one token, as verl picks


def clip_cov_picks(logp, old_logp, adv, mask, *, eps_low, eps_high, cov_ratio, clip_cov_lb, clip_cov_ub):
    """Boolean ``(B, T)`` mask of the tokens Clip-Cov detaches: ``max(1, ⌊cov_ratio·N⌋)`` tokens drawn at random
    (``torch.randperm``, the global generator, as verl does) from the valid, unclipped tokens whose covariance lies
    in (``clip_cov_lb``, ``clip_cov_ub``); fewer when fewer qualify."""
    lower, upper = clipped_sides(ratio_from_logps(logp, old_logp).detach(), adv, eps_low, eps_high)
    cov = token_covariance(logp, adv, mask)
    candidates = ((mask > 0) & ~lower & ~upper & (cov > clip_cov_lb) & (cov < clip_cov_ub)).flatten().nonzero()[:, 0]
    chosen = candidates[torch.randperm(len(candidates)).to(candidates.device)[:_picked_count(mask, cov_ratio)]]
    return torch.zeros(mask.numel(), dtype=torch.bool, device=mask.device).index_fill_(0, chosen, True).view_as(mask)


def kl_cov_picks(logp, adv, mask, *, cov_ratio):
    """Boolean ``(B, T)`` mask of the tokens KL-Cov penalises: the ``max(1, ⌊cov_ratio·N⌋)`` valid tokens of highest
    covariance (``token_covariance``)."""
    cov = token_covariance(logp, adv, mask).flatten()
    top = torch.topk(cov, min(_picked_count(mask, cov_ratio), int((mask > 0).sum()))).indices
    return torch.zeros(mask.numel(), dtype=torch.bool, device=mask.device).index_fill_(0, top, True).view_as(mask)


# --------------------------------------------------------------------------------------------------
# Public losses: validate, compute per token, aggregate. The defaults of their signatures are the methods'
# defaults (the registry reads them from here).
# --------------------------------------------------------------------------------------------------
def ppo_clip(logp, old_logp, adv, mask, eps_low=0.2, eps_high=0.2, dual_clip=None, agg="token-mean"):
    """PPO-clip (arXiv:1707.06347, eq. 7) with token-mean aggregation = token-level GRPO without KL.

    Defaults ε_l = ε_h = 0.2: the PPO paper and the CE-GPPO authors' scripts.
    Limiting case: with logp == old_logp every token has F = 1 (plain policy gradient).
    """
    check_hyper("ppo_clip", eps_low=eps_low, eps_high=eps_high, dual_clip=dual_clip)
    adv, mask = check_inputs(logp, old_logp, adv, mask)
    per_token = ppo_clip_per_token(logp, old_logp, adv, eps_low=eps_low, eps_high=eps_high, dual_clip=dual_clip)
    return aggregate(per_token, mask, agg)


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
    check_hyper("ce_gppo", eps_low=eps_low, eps_high=eps_high, beta1=beta1, beta2=beta2, dual_clip=dual_clip)
    adv, mask = check_inputs(logp, old_logp, adv, mask)
    per_token = ce_gppo_per_token(logp, old_logp, adv, eps_low=eps_low, eps_high=eps_high, beta1=beta1,
                                  beta2=beta2, dual_clip=dual_clip)
    return aggregate(per_token, mask, agg)


def gppo(logp, old_logp, adv, mask, eps_low=0.2, eps_high=0.2, dual_clip=None, agg="token-mean"):
    """GPPO (Klear-Reasoner, arXiv:2508.07629, eq. 4): CE-GPPO with β1 = β2 = 1."""
    return ce_gppo(logp, old_logp, adv, mask, eps_low, eps_high, 1.0, 1.0, dual_clip, agg)


def cispo(logp, old_logp, adv, mask, eps_low=1.0, eps_high=0.28, agg="token-mean"):
    """CISPO (MiniMax-M1, arXiv:2506.13585, eq. 4): every token keeps the gradient sg(clip(r))·Â·∇log π.

    Defaults: ε_l = 1.0, i.e. no lower bound (MiniMax-M1 §3.1 "did not impose a lower bound"; here the
    only case where ε_l = 1 is allowed), and ε_h = 0.28 as commonly paired with it (DAPO's value).
    """
    check_hyper("cispo", eps_low=eps_low, eps_high=eps_high)
    adv, mask = check_inputs(logp, old_logp, adv, mask)
    return aggregate(cispo_per_token(logp, old_logp, adv, eps_low=eps_low, eps_high=eps_high), mask, agg)


def sapo(logp, old_logp, adv, mask, tau_pos=1.0, tau_neg=1.05, agg="token-mean"):
    """SAPO (Soft Adaptive Policy Optimization, arXiv:2511.20347, eq. 5): a temperature-controlled sigmoid gate in
    place of the clip, with a larger temperature (a faster fade) for Â < 0.

    Defaults τ_pos = 1.0, τ_neg = 1.05: the values verl and Trinity-RFT ship for it. The paper averages over tokens
    within a response, then over responses (``agg="seq-mean-token-mean"``); token-mean is this book's default for
    every method (set the trainer's ``loss_agg`` to follow the paper).
    """
    check_hyper("sapo", tau_pos=tau_pos, tau_neg=tau_neg)
    adv, mask = check_inputs(logp, old_logp, adv, mask)
    return aggregate(sapo_per_token(logp, old_logp, adv, tau_pos=tau_pos, tau_neg=tau_neg), mask, agg)


def clip_cov(logp, old_logp, adv, mask, eps_low=0.2, eps_high=0.2, cov_ratio=2e-4, clip_cov_lb=1.0, clip_cov_ub=5.0,
             agg="token-mean"):
    """Clip-Cov (Cui et al., arXiv:2505.22617, §4.2): PPO-clip, with the gradient of the few tokens
    ``clip_cov_picks`` draws detached (their loss and gradient are 0).

    Defaults: ε = 0.2, ``cov_ratio`` = 2·10⁻⁴ of the tokens, covariance band (1, 5): the paper's and verl's. Which
    tokens it picks depends on the batch and on torch's global random generator.
    """
    check_hyper("clip_cov", eps_low=eps_low, eps_high=eps_high, cov_ratio=cov_ratio, clip_cov_lb=clip_cov_lb,
                clip_cov_ub=clip_cov_ub)
    adv, mask = check_inputs(logp, old_logp, adv, mask)
    picks = clip_cov_picks(logp, old_logp, adv, mask, eps_low=eps_low, eps_high=eps_high, cov_ratio=cov_ratio,
                           clip_cov_lb=clip_cov_lb, clip_cov_ub=clip_cov_ub)
    per_token = ppo_clip_per_token(logp, old_logp, adv, eps_low=eps_low, eps_high=eps_high)
    return aggregate(per_token.masked_fill(picks, 0.0), mask, agg)


def _check_covariance_band(hyper: dict) -> None:
    if not hyper["clip_cov_lb"] < hyper["clip_cov_ub"]:
        raise ValueError(f"clip_cov_lb={hyper['clip_cov_lb']!r} is outside the allowed range: below "
                         f"clip_cov_ub={hyper['clip_cov_ub']!r}")


def kl_cov(logp, old_logp, adv, mask, cov_ratio=2e-4, kl_cov_coef=1.0, agg="token-mean"):
    """KL-Cov (Cui et al., arXiv:2505.22617, §4.2): the unclipped surrogate −r·Â on every token, plus
    k·|log r| on the tokens of highest covariance (``kl_cov_picks``). There is no clip.

    Defaults: ``cov_ratio`` = 2·10⁻⁴ of the tokens and k = 1: verl's (the paper uses 2·10⁻³ for Qwen2.5-7B).
    """
    check_hyper("kl_cov", cov_ratio=cov_ratio, kl_cov_coef=kl_cov_coef)
    adv, mask = check_inputs(logp, old_logp, adv, mask)
    log_ratio = clamped_log_ratio(logp, old_logp)
    picks = kl_cov_picks(logp, adv, mask, cov_ratio=cov_ratio)
    per_token = -adv * torch.exp(log_ratio) + kl_cov_coef * log_ratio.abs() * picks
    return aggregate(per_token, mask, agg)


def gspo(logp, old_logp, adv, mask, eps_low=3e-4, eps_high=4e-4):
    """GSPO (arXiv:2507.18071, eq. 5-7): one ratio per response, clipped PPO-style, mean over responses.

    s_i = exp(mean_t (logp − old_logp)); each token receives s_i/|o_i| of the response's gradient.
    Defaults ε_l = 3e-4, ε_h = 4e-4: the values the GSPO paper reports for its runs.
    ``adv`` must be constant within a response (it is read from the first valid token).
    """
    check_hyper("gspo", eps_low=eps_low, eps_high=eps_high)
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
def clip_weight(r, a, *, eps_low, eps_high, beta1, beta2, dual_clip=None):
    """F of the PPO-clip family (PPO/GRPO and DAPO: β = 0; GPPO: β = 1; CE-GPPO): r inside the interval,
    β1(1−ε_l) / β2(1+ε_h) on the clipped sides, 0 where the dual clip freezes the token."""
    lower, upper = clipped_sides(r, a, eps_low, eps_high)  # (shape of r and a broadcast): so is the weight
    weight = torch.where(lower, beta1 * (1 - eps_low), torch.where(upper, beta2 * (1 + eps_high), r))
    return weight if dual_clip is None else torch.where(dual_clipped(r, a, dual_clip), 0.0, weight)


def cispo_weight(r, a, *, eps_low, eps_high):
    """F of CISPO: clip(r, 1−ε_l, 1+ε_h) on every token."""
    return torch.clamp(r, 1 - eps_low, 1 + eps_high) * torch.ones_like(a)


def sapo_weight(r, a, *, tau_pos, tau_neg):
    """F of SAPO: d/dr of the gate (4/τ)σ(τ(r−1)), times r: 4σ(1−σ)·r with σ = σ(τ(r−1)); F(1) = 1."""
    gate = torch.sigmoid(_sapo_temperature(a, tau_pos, tau_neg) * (r - 1))
    return 4 * gate * (1 - gate) * r


def gradient_weight(ratio, adv, method: str = "ce_gppo", **hyper):
    """The per-token weight F(r, Â) of the paper's §2, for the token-level methods.

    Accepts tensors, numpy arrays or floats (broadcast together) and returns the same kind.
    ``hyper`` overrides the method's defaults (any of its accepted hyper-parameters, e.g. ``eps_low``,
    ``eps_high``, ``beta1``, ``beta2``, ``dual_clip``); GPPO's β are fixed at 1. On the interval's edges
    (r exactly 1±ε) a token counts as inside. ``ratio`` may be any number in [0, inf]; like the losses, F uses r
    clamped to [e^−20, e^20] (``LOG_RATIO_CLAMP``).
    """
    weight_of = weight_function(method, **hyper)
    as_numpy = not isinstance(ratio, torch.Tensor)
    r = torch.as_tensor(ratio, dtype=torch.float64 if as_numpy else None)
    a = torch.as_tensor(adv, dtype=r.dtype, device=r.device)
    if torch.isnan(r).any() or (r < 0).any():
        raise ValueError("ratio contains NaN or negative values; a ratio π/π_old lies in [0, inf]")
    if not torch.isfinite(a).all():
        raise ValueError("adv contains non-finite values (inf or NaN); all entries must be finite")
    weight = weight_of(r, a)
    return weight.numpy() if as_numpy else weight


def weight_function(method: str = "ce_gppo", **hyper) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``gradient_weight`` with the method and its hyper-parameters resolved and checked once: a function
    ``(ratio, adv) -> F`` of tensors, for loops that call F thousands of times (the token bandit calls it 2,400
    times a run, and checking the method at each call was most of its time).

    It does not check the tensors (``gradient_weight`` does): give it ratios from ``ratio_from_logps`` (never NaN
    or negative) and finite advantages. Same numbers as ``gradient_weight``. Keywords given at call time replace
    hyper-parameters by tensors that broadcast against the ratio, one value per row (a β sweep run as one batch);
    the caller has checked those values.
    """
    spec = get_method(method)
    if spec.weight is None:
        raise ValueError(f"method={method!r} has no per-token weight; choose one of "
                         f"{', '.join(token_level_methods())} ({method} is {spec.level}-level)")
    p = spec.resolve(**hyper)
    low, high = math.exp(-LOG_RATIO_CLAMP), math.exp(LOG_RATIO_CLAMP)
    return lambda r, a, **per_row: spec.weight(r.clamp(low, high), a, **{**p, **per_row})


# --------------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Method:
    """One policy objective, as every layer of the package sees it.

    ``loss`` is the public loss; its signature's defaults are the method's ``defaults`` and its keyword
    parameters (but ``agg``) the accepted hyper-parameters, each with its range in ``ranges``. ``fixed`` holds
    values the method sets itself (GPPO's β = 1), which ``weight`` also needs. A method's ``level`` is "token"
    when it has a weight F(r, Â), "batch" when it treats apart tokens picked by a statistic of the whole batch
    (``batch_picks``, Clip-Cov and KL-Cov: a token-mean loss whose per-token gradient depends on the batch), else
    "sequence" (GSPO). ``compared``: chapters 1-3 compare it with CE-GPPO (the clip family); the other ways to
    control entropy are chapter 7's baselines.
    """

    name: str
    label: str  # how figures and tables call it
    loss: Callable[..., torch.Tensor]
    per_token: Callable[..., torch.Tensor] | None  # (B, T) loss, no validation/aggregation; None: sequence-level
    weight: Callable[..., torch.Tensor] | None  # F(r, Â, **hyper); None: sequence-level
    reference: str  # paper and equation
    fixed: dict = field(default_factory=dict)
    range_overrides: dict = field(default_factory=dict)  # hyper -> Range where it differs from HYPER_RANGES
    alias_of: str | None = None  # the same objective under another name (ppo_clip is GRPO's)
    batch_picks: Callable[..., torch.Tensor] | None = None  # batch-level: (logp, ..., mask, **hyper) -> picked tokens
    compared: bool = True  # among the methods chapters 1-3 compare (``plots.style.compared_methods``)
    check_together: Callable[[dict], None] | None = None  # rules that tie one hyper-parameter to another

    # Read once per method: ``resolve`` runs at every gradient_weight call (thousands in one bandit run), and
    # inspect.signature took most of the toy's time. A copy is returned so that a caller cannot change the cache.
    @cached_property
    def _signature_defaults(self) -> dict:
        params = inspect.signature(self.loss).parameters
        return {n: p.default for n, p in params.items() if p.default is not inspect.Parameter.empty and n != "agg"}

    @property
    def defaults(self) -> dict:
        return dict(self._signature_defaults)

    @cached_property
    def _ranges(self) -> dict[str, Range]:
        return {name: self.range_overrides.get(name, HYPER_RANGES[name]) for name in self._signature_defaults}

    @property
    def ranges(self) -> dict[str, Range]:
        return dict(self._ranges)

    @property
    def level(self) -> str:
        if self.weight is not None:
            return "token"
        return "batch" if self.batch_picks is not None else "sequence"

    @property
    def takes_agg(self) -> bool:
        return "agg" in inspect.signature(self.loss).parameters

    def resolve(self, **hyper) -> dict:
        """The full hyper-parameters: ``hyper`` over the defaults, validated, plus the fixed ones."""
        defaults, ranges = self._signature_defaults, self._ranges
        unknown = sorted(set(hyper) - set(defaults))
        if unknown:
            fixed = f" ({self.name} fixes {', '.join(f'{k}={v}' for k, v in self.fixed.items())})" if self.fixed else ""
            raise ValueError(f"unknown hyper-parameter(s) {unknown} for method={self.name!r}; allowed: "
                             f"{', '.join(defaults)}{fixed}")
        values = {**defaults, **hyper}
        for name, value in values.items():
            ranges[name].check(name, value)
        if self.check_together is not None:
            self.check_together(values)
        return {**values, **self.fixed}


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add ``method`` to ``METHODS`` (every layer that lists methods reads it); returns it."""
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is already registered")
    unknown = sorted(set(method.defaults) - set(HYPER_RANGES) - set(method.range_overrides))
    if unknown:
        raise ValueError(f"method {method.name!r} has hyper-parameters without a range: {unknown}")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The registered method ``name``; the error lists the registered names."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid names: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def check_hyper(method: str, **hyper) -> dict:
    """Validate ``hyper`` against ``method``'s accepted hyper-parameters and ranges; the resolved values."""
    return get_method(method).resolve(**hyper)


def reference_clip(hyper: dict) -> tuple[float, float]:
    """``(ε_l, ε_h)`` of resolved hyper-parameters, or PPO/GRPO's defaults for a method without a clip (SAPO,
    KL-Cov): the interval clip fractions and token cells are counted against."""
    grpo = METHODS["grpo"].defaults
    return hyper.get("eps_low", grpo["eps_low"]), hyper.get("eps_high", grpo["eps_high"])


def token_level_methods(include_aliases: bool = True, compared_only: bool = False) -> list[str]:
    """Names of the registered methods with a per-token weight F, in registration order; ``compared_only``: those
    chapters 1-3 compare (``Method.compared``, the clip family)."""
    return [n for n, m in METHODS.items() if m.level == "token" and (include_aliases or m.alias_of is None)
            and (m.compared or not compared_only)]


def method_label(name: str) -> str:
    """The display label of a registered method, or the name itself for anything else."""
    return METHODS[name].label if name in METHODS else name


class _Losses(Mapping):
    """``LOSSES[name]`` is ``METHODS[name].loss``: a live view, so a method registered later appears too."""

    def __getitem__(self, name):
        return METHODS[name].loss

    def __iter__(self):
        return iter(METHODS)

    def __len__(self):
        return len(METHODS)


LOSSES: Mapping[str, Callable[..., torch.Tensor]] = _Losses()


def get_loss(name: str) -> Callable[..., torch.Tensor]:
    """Look a loss up by name; the error lists the valid names."""
    return get_method(name).loss


# The methods of the book. GRPO comes first: PPO-clip is the same objective under another name.
register_method(Method("grpo", "PPO / GRPO", ppo_clip, ppo_clip_per_token, clip_weight,
                       "token-level GRPO without KL = PPO-clip (arXiv:1707.06347, eq. 7) with group advantages",
                       fixed={"beta1": 0.0, "beta2": 0.0}))
register_method(Method("ppo_clip", "PPO / GRPO", ppo_clip, ppo_clip_per_token, clip_weight,
                       "PPO-clip, arXiv:1707.06347, eq. 7", fixed={"beta1": 0.0, "beta2": 0.0}, alias_of="grpo"))
register_method(Method("dapo", "DAPO", dapo, ppo_clip_per_token, clip_weight, "DAPO clip-higher, arXiv:2503.14476, eq. 8",
                       fixed={"beta1": 0.0, "beta2": 0.0}))
register_method(Method("gppo", "GPPO", gppo, ce_gppo_per_token, clip_weight, "GPPO (Klear-Reasoner), arXiv:2508.07629, eq. 4",
                       fixed={"beta1": 1.0, "beta2": 1.0}))
register_method(Method("ce_gppo", "CE-GPPO", ce_gppo, ce_gppo_per_token, clip_weight, "CE-GPPO, arXiv:2509.20712 v2, eq. 5"))
register_method(Method("cispo", "CISPO", cispo, cispo_per_token, cispo_weight, "CISPO (MiniMax-M1), arXiv:2506.13585, eq. 4",
                       range_overrides={"eps_low": Range(0.0, 1.0, low_open=True)}))
register_method(Method("gspo", "GSPO", gspo, None, None, "GSPO, arXiv:2507.18071, eq. 5-7"))
# Chapter 7's other ways to control entropy.
register_method(Method("sapo", "SAPO", sapo, sapo_per_token, sapo_weight, "SAPO, arXiv:2511.20347, eq. 5",
                       compared=False))
register_method(Method("clip_cov", "Clip-Cov", clip_cov, None, None, "Clip-Cov, arXiv:2505.22617, §4.2",
                       batch_picks=clip_cov_picks, compared=False, check_together=_check_covariance_band))
register_method(Method("kl_cov", "KL-Cov", kl_cov, None, None, "KL-Cov, arXiv:2505.22617, §4.2",
                       batch_picks=kl_cov_picks, compared=False))


__all__ = [
    "AGG_MODES", "HYPER_RANGES", "LOG_RATIO_CLAMP", "LOSSES", "METHODS", "Method", "aggregate", "ce_gppo",
    "ce_gppo_per_token", "check_hyper", "check_inputs", "cispo", "cispo_per_token", "cispo_weight", "clamped_log_ratio",
    "clip_cov", "clip_cov_picks", "clip_weight", "clipped_sides", "dapo", "dual_clipped", "get_loss", "get_method",
    "gppo", "gradient_weight", "gspo", "kl_cov", "kl_cov_picks", "method_label", "ppo_clip", "ppo_clip_per_token",
    "ratio_from_logps", "reference_clip", "register_method", "sapo", "sapo_per_token", "sapo_weight", "token_covariance",
    "token_level_methods", "weight_function",
]
