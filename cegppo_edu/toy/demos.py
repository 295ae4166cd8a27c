"""Small, deterministic experiments behind the figures of chapters 1 and 2.

Each function builds an example, runs the package's own losses and entropy code on it and returns plain
numpy arrays, so that a notebook only plots and explains, and a test can check every number.

- ``funnel_sample``: one policy-gradient update of a small softmax policy with shared parameters; each
  token's probability before the update and its ratio after it (the "funnel" of the paper's figure 1, left).
- ``funnel_summary``: how many tokens leave [1−ε_l, 1+ε_h], and how many of those are low-probability.
- ``value_and_grad_curves``: the per-token objective value and d loss / d logp against r, by autograd.
- ``grad_norm_by_prob``: the size of the gradient that reaches a token's logits, against its probability.
- ``single_softmax_update``: the gradient on every logit of one softmax when one token is kept with weight
  F(r, Â), the logit update it causes, and the entropy change predicted (the paper in brief, §3) and measured.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..entropy import entropy_from_logits, entropy_influence, predicted_entropy_change
from ..losses import clipped_sides, get_loss, gradient_weight
from ..token_groups import CLASSES, HP_THRESHOLD, classify
from ..validation import POSITIVE, POSITIVE_INT, Range


# --------------------------------------------------------------------------------------------------
# Chapter 1: the funnel
# --------------------------------------------------------------------------------------------------
def funnel_sample(n_responses: int = 64, length: int = 32, vocab: int = 64, dim: int = 16,
                  logit_scale: float = 4.0, lr: float = 200.0, seed: int = 0) -> dict:
    """Sample tokens from a softmax policy with shared parameters, take one update, and return the ratios.

    The policy is a linear "language model": the logits at position t are ``W h_t`` with a fixed feature
    vector ``h_t`` per position and one shared matrix ``W`` (vocab × dim), so that, as in a real LM, the
    update made for one token moves the logits of every other position too. Each response gets one
    advantage ±1 (a random half are correct). The update is one SGD step of size ``lr`` on the package's
    token-mean PPO loss at r = 1 (the first mini-batch, where every method has the same gradient). The
    token-mean divides the gradient by the number of tokens (2,048 by default), hence the large ``lr``: the
    default moves about one token in ten out of [0.8, 1.2], as a few mini-batch steps do in practice.

    Returns numpy arrays over the ``n_responses * length`` tokens: ``prob`` (π_old of the sampled token),
    ``ratio`` (π_new / π_old after the step), ``adv``, ``group`` (index into ``token_groups.CLASSES``).
    Deterministic for a given ``seed``.
    """
    for name, value in (("n_responses", n_responses), ("length", length), ("dim", dim)):
        POSITIVE_INT.check(name, value)
    Range(2, integer=True).check("vocab", vocab)
    POSITIVE.check("logit_scale", logit_scale)
    POSITIVE.check("lr", lr)
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(n_responses, length, dim, generator=gen, dtype=torch.float64) / dim ** 0.5  # (B, T, d)
    weight = (logit_scale * torch.randn(vocab, dim, generator=gen, dtype=torch.float64)).requires_grad_()
    logits = feats @ weight.T  # (B, T, V)
    old_logpi = torch.log_softmax(logits, dim=-1).detach()  # (B, T, V)
    tokens = torch.multinomial(old_logpi.exp().reshape(-1, vocab), 1, generator=gen).reshape(n_responses, length)
    correct = torch.rand(n_responses, generator=gen) < 0.5  # (B,)
    adv = torch.where(correct, 1.0, -1.0).to(torch.float64)  # (B,)
    old_logp = old_logpi.gather(-1, tokens[..., None]).squeeze(-1)  # (B, T)
    logp = torch.log_softmax(logits, dim=-1).gather(-1, tokens[..., None]).squeeze(-1)  # (B, T)
    mask = torch.ones_like(logp)
    # At r = 1 every token-level method has this same gradient: plain policy gradient, token-mean.
    loss = get_loss("ppo_clip")(logp, old_logp, adv, mask)
    (grad,) = torch.autograd.grad(loss, weight)
    with torch.no_grad():
        new_logpi = torch.log_softmax(feats @ (weight - lr * grad).T, dim=-1)  # (B, T, V)
        new_logp = new_logpi.gather(-1, tokens[..., None]).squeeze(-1)  # (B, T)
        prob = old_logp.exp()
        group = classify(prob, adv)
    adv_tok = adv[:, None].expand_as(prob)  # (B,) -> (B, T)
    return {"prob": prob.reshape(-1).numpy(), "ratio": (new_logp - old_logp).exp().reshape(-1).numpy(),
            "adv": adv_tok.reshape(-1).numpy(), "group": group.reshape(-1).numpy()}


def funnel_summary(sample: dict, eps_low: float, eps_high: float, threshold: float = HP_THRESHOLD) -> dict:
    """Counts behind the funnel: tokens outside [1−ε_l, 1+ε_h], clipped tokens, and how many are low-prob.

    ``outside`` counts every token whose ratio left the interval; ``clipped`` only those PPO zeroes
    (below with Â<0, above with Â>0). ``*_lp_share`` is the share of them with probability < ``threshold``.
    """
    ratio = torch.as_tensor(sample["ratio"])
    adv = torch.as_tensor(sample["adv"])
    prob = np.asarray(sample["prob"])
    lower, upper = clipped_sides(ratio, adv, eps_low, eps_high)
    outside = ((ratio < 1 - eps_low) | (ratio > 1 + eps_high)).numpy()
    clipped = (lower | upper).numpy()
    low_prob = prob < threshold
    n = len(prob)
    return {
        "tokens": n,
        "outside_frac": float(outside.mean()),
        "outside_lp_share": float(low_prob[outside].mean()) if outside.any() else float("nan"),
        "clipped_frac": float(clipped.mean()),
        "clipped_lp_share": float(low_prob[clipped].mean()) if clipped.any() else float("nan"),
        "lp_frac": float(low_prob.mean()),
        "clip_low_frac": float(lower.numpy().mean()),
        "clip_high_frac": float(upper.numpy().mean()),
    }


def clipped_weight_by_group(sample: dict, methods, eps_low: float = 0.2, eps_high: float = 0.2) -> dict:
    """Where each method's gradient goes on the tokens PPO clips: per method, per token group, the summed weight
    ``Σ F(r, Â)·|Â|`` over the sample's tokens that PPO/GRPO clips at (``eps_low``, ``eps_high``), divided by the
    number of tokens in the sample. Each method uses its own defaults (``losses.gradient_weight``), so PPO/GRPO
    gives these tokens 0 by definition. ``{method: {group: weight}}`` for the four groups of ``token_groups.GROUPS``
    (a clipped token has Â ≠ 0, so never the zero-advantage class)."""
    ratio, adv = np.asarray(sample["ratio"]), np.asarray(sample["adv"])
    group = np.asarray(sample["group"])
    lower, upper = clipped_sides(torch.as_tensor(ratio), torch.as_tensor(adv), eps_low, eps_high)
    clipped = (lower | upper).numpy()
    out = {}
    for method in methods:
        weight = np.asarray(gradient_weight(ratio, adv, method), dtype=float) * np.abs(adv)
        out[method] = {name: float(weight[clipped & (group == k)].sum() / len(ratio))
                       for k, name in enumerate(CLASSES[:4])}
    return out


# --------------------------------------------------------------------------------------------------
# Chapter 2: gradients through the stop-gradient
# --------------------------------------------------------------------------------------------------
def value_and_grad_curves(ratios, adv: float, method: str, **hyper) -> tuple[np.ndarray, np.ndarray]:
    """Per-token loss value and d loss / d logp at each ratio, by autograd through the package's loss.

    One token per call (B = T = 1, so the token-mean is the token itself) with ``old_logp = 0`` and
    ``logp = log r``. By the paper in brief §2 the gradient is −F(r, Â)·Â: ``gradient_weight`` is checked against it.
    """
    if adv == 0:
        raise ValueError("adv=0 gives every method zero gradient; use a non-zero advantage")
    loss_fn = get_loss(method)
    values, grads = [], []
    for r in np.asarray(ratios, dtype=np.float64):
        POSITIVE.check("ratio", float(r))
        logp = torch.tensor([[np.log(r)]], dtype=torch.float64, requires_grad=True)
        loss = loss_fn(logp, torch.zeros_like(logp), torch.tensor([float(adv)], dtype=torch.float64),
                       torch.ones_like(logp), **hyper)
        (grad,) = torch.autograd.grad(loss, logp)
        values.append(loss.item())
        grads.append(grad.item())
    return np.array(values), np.array(grads)


def grad_norm_by_prob(sample: dict, method: str, **hyper) -> np.ndarray:
    """|d ℓ / d z| for each token of a funnel sample, under ``method``, at the ratios the sample reached.

    For a softmax over logits z, ∇_z log π_a = e_a − π, so a token with weight F and advantage Â sends
    the gradient F·Â·(e_a − π) to its own logits; with only its probability known we use the part along its
    own logit, |F·Â|·(1 − π_a). Returns one value per token (numpy).
    """
    weight = gradient_weight(np.asarray(sample["ratio"]), np.asarray(sample["adv"]), method, **hyper)
    return np.abs(weight * sample["adv"]) * (1.0 - np.asarray(sample["prob"]))


def binned_mean(x, y, edges) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``y`` in each bin of ``x`` (NaN for an empty bin) and the bin centres."""
    x, y, edges = np.asarray(x), np.asarray(y), np.asarray(edges)
    index = np.digitize(x, edges) - 1
    means = np.array([y[index == b].mean() if (index == b).any() else np.nan for b in range(len(edges) - 1)])
    return 0.5 * (edges[:-1] + edges[1:]), means


def _exact_log_ratio(ratio: float) -> torch.Tensor:
    """The float64 x nearest log r with torch.exp(x) == r, where one exists (a few ulps from log r)."""
    x = torch.tensor(math.log(ratio), dtype=torch.float64)
    for _ in range(64):
        seen = float(torch.exp(x))
        if seen == ratio:
            break
        x = torch.nextafter(x, torch.tensor(-math.inf if seen > ratio else math.inf, dtype=torch.float64))
    return x


def single_softmax_update(logits, token: int, ratio: float, adv: float, method: str = "ce_gppo",
                          lr: float = 1.0, **hyper) -> dict:
    """One token of one softmax, kept with weight F(r, Â): which logits go up, which down, and ΔH.

    The package's loss sees the ratio ``ratio`` exactly: ``old_logp`` is 0 and the token's log-prob enters as
    ``log π_a − sg(log π_a) + x``, whose value is the float x with exp(x) == r (``_exact_log_ratio``) and whose
    gradient is ∇ log π_a. (The plain ``old_logp = log π_a − log r`` rounds r off the interval's edge r = 1±ε,
    and the token would be clipped there while ``gradient_weight`` says inside.) The gradient on every logit comes
    from autograd through ``get_loss(method)`` (one token: token-mean = the token); the update is one SGD step
    Δz = −lr·∇_z loss.

    Returns ``grad`` and ``delta`` (numpy, one entry per logit), ``prob`` (π before), ``weight`` (F),
    ``dH_pred`` (first-order, ``entropy.predicted_entropy_change``), ``dH_influence`` (−lr·F·Â·I_a from
    ``entropy.entropy_influence``, the same number by another formula) and ``dH_meas`` (H after − H before).
    """
    z = torch.as_tensor(logits, dtype=torch.float64).clone().requires_grad_()
    if z.dim() != 1 or z.numel() < 2:
        raise ValueError(f"logits must be a 1-D array with at least 2 entries, got shape {tuple(z.shape)}")
    Range(0, z.numel() - 1, integer=True).check("token", token)
    POSITIVE.check("ratio", ratio)
    logp_a = torch.log_softmax(z, dim=-1)[token]
    logp = (logp_a - logp_a.detach() + _exact_log_ratio(ratio)).reshape(1, 1)  # (B=1, T=1); value log r
    old_logp = torch.zeros_like(logp)
    adv_t = torch.tensor([float(adv)], dtype=torch.float64)
    loss = get_loss(method)(logp, old_logp, adv_t, torch.ones_like(logp), **hyper)
    (grad,) = torch.autograd.grad(loss, z)
    with torch.no_grad():
        delta = -lr * grad
        weight = float(gradient_weight(torch.tensor(ratio, dtype=torch.float64), adv_t, method, **hyper))
        influence = entropy_influence(z[None], torch.tensor([token])).item()
        h_before = entropy_from_logits(z).item()
        h_after = entropy_from_logits(z + delta).item()
        dh_pred = predicted_entropy_change(z, delta).item()
    return {"grad": grad.numpy(), "delta": delta.numpy(), "prob": torch.softmax(z.detach(), -1).numpy(),
            "weight": weight, "dH_pred": dh_pred, "dH_influence": -lr * weight * adv * influence,
            "dH_meas": h_after - h_before, "H": h_before}


__all__ = ["CLASSES", "binned_mean", "clipped_weight_by_group", "funnel_sample", "funnel_summary", "grad_norm_by_prob",
           "single_softmax_update", "value_and_grad_curves"]
