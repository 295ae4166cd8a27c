"""The losses, tested against math: autograd gradients against the analytic weight F, limiting cases,
a golden re-statement of the authors' loss, and input validation."""

import math

import numpy as np
import pytest
import torch

from cegppo_edu import losses
from cegppo_edu.losses import LOSSES, ce_gppo, dapo, get_loss, gppo, gradient_weight, ppo_clip

EPS_LOW, EPS_HIGH = 0.2, 0.28  # different widths, so a swapped side would show


DUAL_C = math.exp(math.log(3.0))  # ≈ 3: exp() never returns 3.0 itself in float64, but returns this
EDGES = (1 - EPS_LOW, 1 + EPS_HIGH, DUAL_C)  # ratios that must be hit exactly (clip edges, dual-clip c)
# Ratios covering all three clip regions, the exact edges, and both sides of the dual-clip threshold.
RATIOS = [0.3, 0.79, 1 - EPS_LOW, 0.81, 0.95, 1.0, 1.05, 1.27, 1 + EPS_HIGH, 1.29, 1.6, 2.9, DUAL_C, 3.1, 7.0]


def _exact_pair(old_logp: float, ratio: float) -> tuple[float, float]:
    """float64 (logp, old_logp) near (old_logp + log ratio, old_logp) with exp(logp - old_logp) == ratio
    exactly, found by stepping both (not every ratio is reachable from every old_logp: |old_logp| is kept
    below 1 so that one ulp of the difference moves the ratio by less than one of its own ulps)."""
    old_logp = -0.3 - 0.4 * (-old_logp % 1.0)
    for _ in range(400):
        x = old_logp + math.log(ratio)
        for _ in range(8):
            r = math.exp(x - old_logp)
            if r == ratio:
                return x, old_logp
            x = float(np.nextafter(x, x + (1 if r < ratio else -1)))
        old_logp -= 1e-9
    raise AssertionError(f"could not hit ratio {ratio} exactly")


def _land_on_edges(logp, old_logp, ratio):
    """Nudge ``logp`` one ulp at a time until torch's exp(logp − old_logp) over the whole batch, the computation
    the losses make, gives every edge ratio exactly. ``_exact_pair`` aims with ``math.exp``; torch's vectorised
    exp can differ from it by an ulp, and which way depends on the CPU's kernel set (it did on an AVX-512 Xeon)."""
    edge = torch.isin(ratio, torch.tensor(EDGES, dtype=ratio.dtype))
    for _ in range(16):
        r = torch.exp(logp - old_logp)
        miss = edge & (r != ratio)
        if not miss.any():
            return logp
        toward = torch.where(r < ratio, math.inf, -math.inf).to(logp.dtype)
        logp = torch.where(miss, torch.nextafter(logp, toward), logp)
    raise AssertionError(f"torch.exp misses the edge ratios {ratio[miss].tolist()} on this CPU")


def make_batch(seed=0, exact=True):
    """A (B, T) float64 batch in which every row has both advantage signs, every ratio of RATIOS and both
    high- and low-probability tokens, plus padding."""
    gen = torch.Generator().manual_seed(seed)
    n_ratio = len(RATIOS)
    B, T = 4, 2 * n_ratio + 3
    old_logp = torch.log(torch.rand(B, T, generator=gen, dtype=torch.float64) * 0.98 + 0.01)
    ratio = torch.tensor(RATIOS * 2 + [1.0, 1.0, 1.0], dtype=torch.float64).expand(B, T).clone()
    logp = old_logp + torch.log(ratio)
    if exact:
        for i in range(B):
            for t in range(T):
                if ratio[i, t].item() in EDGES:
                    logp[i, t], old_logp[i, t] = _exact_pair(old_logp[i, t].item(), ratio[i, t].item())
        logp = _land_on_edges(logp, old_logp, ratio)
    adv = torch.tensor([1.3, -0.7, 0.4, -1.9], dtype=torch.float64)
    mask = torch.ones(B, T, dtype=torch.float64)
    mask[:, -2:] = 0  # padding
    mask[2, -5:] = 0
    return logp, old_logp, adv, mask


def grad_wrt_logp(fn, logp, old_logp, adv, mask, **kw):
    logp = logp.clone().requires_grad_(True)
    loss = fn(logp, old_logp, adv, mask, **kw)
    (grad,) = torch.autograd.grad(loss, logp)
    return loss.detach(), grad


def expected_grad(ratio, adv, mask, method, **hyper):
    F = gradient_weight(ratio, adv[:, None], method, **hyper)
    return -F * adv[:, None] * mask / mask.sum()


TOKEN_LEVEL_CASES = [
    ("ppo_clip", ppo_clip, dict(eps_low=EPS_LOW, eps_high=EPS_HIGH)),
    ("ppo_clip", ppo_clip, dict(eps_low=EPS_LOW, eps_high=EPS_HIGH, dual_clip=DUAL_C)),
    ("dapo", dapo, dict(eps_low=EPS_LOW, eps_high=EPS_HIGH)),
    ("gppo", gppo, dict(eps_low=EPS_LOW, eps_high=EPS_HIGH)),
    ("ce_gppo", ce_gppo, dict(eps_low=EPS_LOW, eps_high=EPS_HIGH, beta1=0.5, beta2=1.0)),
    ("ce_gppo", ce_gppo, dict(eps_low=EPS_LOW, eps_high=EPS_HIGH, beta1=0.75, beta2=1.5, dual_clip=DUAL_C)),
    ("ce_gppo", ce_gppo, dict(eps_low=EPS_LOW, eps_high=EPS_HIGH, beta1=0.0, beta2=0.0)),
    ("cispo", losses.cispo, dict(eps_low=EPS_LOW, eps_high=EPS_HIGH)),
    ("cispo", losses.cispo, dict(eps_low=1.0, eps_high=EPS_HIGH)),
    ("sapo", losses.sapo, dict(tau_pos=1.0, tau_neg=1.05)),
    ("sapo", losses.sapo, dict(tau_pos=0.3, tau_neg=4.0)),
]


@pytest.mark.parametrize("method,fn,hyper", TOKEN_LEVEL_CASES)
def test_autograd_gradient_equals_analytic_weight(method, fn, hyper):
    logp, old_logp, adv, mask = make_batch()
    ratio = torch.exp(logp - old_logp)
    assert all((ratio == edge).sum() == 2 * ratio.shape[0] for edge in EDGES), "edges not exercised"
    _, grad = grad_wrt_logp(fn, logp, old_logp, adv, mask, **hyper)
    torch.testing.assert_close(grad, expected_grad(ratio, adv, mask, method, **hyper), rtol=1e-12, atol=1e-15)


def test_batch_covers_every_token_group_and_clip_region():
    from cegppo_edu.token_groups import classify, clip_region

    logp, old_logp, adv, mask = make_batch()
    groups = classify(logp.exp(), adv)[mask.bool()]
    regions = clip_region(torch.exp(logp - old_logp), EPS_LOW, EPS_HIGH)[mask.bool()]
    assert set(groups.tolist()) == {0, 1, 2, 3}
    assert set(regions.tolist()) == {-1, 0, 1}


def test_weight_values_on_each_side():
    """F at a few hand-checked points (the paper in brief §2 table)."""
    r = np.array([0.5, 0.5, 1.5, 1.5, 1.1])
    a = np.array([-1.0, 1.0, 1.0, -1.0, 1.0])
    np.testing.assert_allclose(gradient_weight(r, a, "ce_gppo", beta1=0.5, beta2=1.0),
                               [0.5 * 0.8, 0.5, 1.0 * 1.2, 1.5, 1.1])
    np.testing.assert_allclose(gradient_weight(r, a, "ppo_clip"), [0.0, 0.5, 0.0, 1.5, 1.1])
    np.testing.assert_allclose(gradient_weight(r, a, "dapo"), [0.0, 0.5, 0.0, 1.5, 1.1])
    np.testing.assert_allclose(gradient_weight(np.array([1.25]), np.array([1.0]), "dapo"), [1.25])
    np.testing.assert_allclose(gradient_weight(r, a, "gppo"), [0.8, 0.5, 1.2, 1.5, 1.1])
    np.testing.assert_allclose(gradient_weight(r, a, "cispo", eps_low=0.2), [0.8, 0.8, 1.28, 1.28, 1.1])


@pytest.mark.parametrize("method,fn,hyper", TOKEN_LEVEL_CASES)
def test_forward_value_matches_formula(method, fn, hyper):
    logp, old_logp, adv, mask = make_batch()
    ratio = torch.exp(logp - old_logp)
    A = adv[:, None].expand_as(ratio)
    lo, hi = 1 - hyper.get("eps_low", 0.0), 1 + hyper.get("eps_high", 0.0)
    if method == "sapo":  # the gate (4/τ)σ(τ(r−1)), τ by the sign of Â
        tau = torch.where(A > 0, torch.tensor(hyper["tau_pos"], dtype=A.dtype), torch.tensor(hyper["tau_neg"], dtype=A.dtype))
        per_token = -A * 4 / tau / (1 + torch.exp(-tau * (ratio - 1)))
    elif method == "cispo":
        per_token = -torch.clamp(ratio, lo, hi) * A * logp
    else:
        # PPO's clipped value on clipped tokens; CE-GPPO's β(1±ε)Â there; r·Â elsewhere.
        beta1, beta2 = {"gppo": (1.0, 1.0), "ce_gppo": (hyper.get("beta1"), hyper.get("beta2"))}.get(method, (None, None))
        lower, upper = (ratio < lo) & (A < 0), (ratio > hi) & (A > 0)
        low_value = lo if beta1 is None else beta1 * lo
        high_value = hi if beta2 is None else beta2 * hi
        per_token = -A * torch.where(lower, low_value, torch.where(upper, high_value, ratio))
        if hyper.get("dual_clip"):
            per_token = torch.where((A < 0) & (ratio > hyper["dual_clip"]), -A * hyper["dual_clip"], per_token)
    expected = (per_token * mask).sum() / mask.sum()
    torch.testing.assert_close(fn(logp, old_logp, adv, mask, **hyper), expected, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------------------------- limiting cases
def test_ce_gppo_with_zero_betas_has_ppo_gradient():
    batch = make_batch(seed=1)
    _, g_ce = grad_wrt_logp(ce_gppo, *batch, beta1=0.0, beta2=0.0)
    _, g_ppo = grad_wrt_logp(ppo_clip, *batch)
    torch.testing.assert_close(g_ce, g_ppo, rtol=0, atol=1e-15)


def test_ce_gppo_with_unit_betas_equals_gppo():
    batch = make_batch(seed=2)
    v_ce, g_ce = grad_wrt_logp(ce_gppo, *batch, beta1=1.0, beta2=1.0)
    v_g, g_g = grad_wrt_logp(gppo, *batch)
    torch.testing.assert_close(v_ce, v_g, rtol=0, atol=0)
    torch.testing.assert_close(g_ce, g_g, rtol=0, atol=0)


def test_gppo_forward_value_equals_ppo_clip():
    """With β = 1 the boundary tokens' constant value is PPO's clipped value: only the gradient differs."""
    batch = make_batch(seed=3)
    torch.testing.assert_close(gppo(*batch), ppo_clip(*batch), rtol=1e-12, atol=1e-15)


def test_dapo_is_ppo_clip_with_eps_high_028():
    batch = make_batch(seed=4)
    v_d, g_d = grad_wrt_logp(dapo, *batch)
    v_p, g_p = grad_wrt_logp(ppo_clip, *batch, eps_high=0.28)
    torch.testing.assert_close(v_d, v_p, rtol=0, atol=0)
    torch.testing.assert_close(g_d, g_p, rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_on_policy_every_method_has_the_plain_policy_gradient(name):
    """logp == old_logp: r = 1 everywhere, nothing is clipped, F = 1 for every token (GSPO: s_i = 1 too)."""
    logp, _, adv, mask = make_batch(seed=5, exact=False)
    torch.manual_seed(0)
    _, grad = grad_wrt_logp(get_loss(name), logp, logp.clone(), adv, mask)
    if name == "gspo":  # sequence mean: each token gets Â / (|o_i| · number of responses)
        expected = -adv[:, None] * mask / mask.sum(-1, keepdim=True) / mask.shape[0]
    else:
        expected = -adv[:, None] * mask / mask.sum()
    if name == "clip_cov":  # its few picks are detached on policy too (none of them is clipped)
        torch.manual_seed(0)
        expected = expected * ~losses.clip_cov_picks(logp, logp, adv[:, None].expand_as(logp), mask,
                                                     **losses.get_method(name).resolve())
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------------------------- golden test
def authors_ce_gppo_restated(log_prob, old_log_prob, advantages, response_mask, clip_low, clip_high, beta1, beta2):
    """An independent re-statement of the authors' loss from the paper in brief §2, written with the masks as floats
    (the way the authors' verl code multiplies them in), not with torch.where."""
    ratio = torch.exp(log_prob - old_log_prob)
    A = advantages.unsqueeze(-1)
    low_mask = ((ratio < 1 - clip_low) & (A < 0)).double()
    high_mask = ((ratio > 1 + clip_high) & (A > 0)).double()
    rest = 1.0 - low_mask - high_mask
    term = (rest * ratio * A
            + low_mask * beta1 * (1 - clip_low) * ratio / ratio.detach() * A
            + high_mask * beta2 * (1 + clip_high) * ratio / ratio.detach() * A)
    return -(term * response_mask).sum() / response_mask.sum()


@pytest.mark.parametrize("beta1,beta2", [(0.5, 1.0), (0.75, 1.0), (0.0, 1.0), (1.0, 0.5)])
def test_golden_against_restated_authors_loss(beta1, beta2):
    logp, old_logp, adv, mask = make_batch(seed=6, exact=False)
    logp = logp + 0.3 * torch.randn(logp.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    v_ours, g_ours = grad_wrt_logp(ce_gppo, logp, old_logp, adv, mask, eps_low=0.2, eps_high=0.2,
                                   beta1=beta1, beta2=beta2)
    v_ref, g_ref = grad_wrt_logp(lambda *b: authors_ce_gppo_restated(*b, 0.2, 0.2, beta1, beta2),
                                 logp, old_logp, adv, mask)
    torch.testing.assert_close(v_ours, v_ref, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------------------------- other pieces
def test_gspo_sequence_ratio_and_clipping():
    logp, old_logp, adv, mask = make_batch(seed=8, exact=False)
    s = torch.exp(((logp - old_logp) * mask).sum(-1) / mask.sum(-1))
    expected = torch.maximum(-adv * s, -adv * torch.clamp(s, 1 - 3e-4, 1 + 4e-4)).mean()
    torch.testing.assert_close(losses.gspo(logp, old_logp, adv, mask), expected, rtol=1e-12, atol=1e-15)


def test_aggregate_modes():
    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0], [9.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    assert losses.aggregate(per_token, mask, "token-mean").item() == pytest.approx(10 / 4)
    assert losses.aggregate(per_token, mask, "seq-mean-token-mean").item() == pytest.approx((2 + 4) / 2)
    assert losses.aggregate(per_token, mask, "seq-mean-token-sum").item() == pytest.approx((6 + 4) / 2)
    with pytest.raises(ValueError, match="seq-mean-token-mean"):
        losses.aggregate(per_token, mask, "mean")


def test_extreme_log_ratio_stays_finite():
    logp = torch.tensor([[0.0, -1.0]], requires_grad=True)
    old_logp = torch.tensor([[-500.0, -1.0]])
    for name in sorted(LOSSES):
        loss = get_loss(name)(logp, old_logp, torch.tensor([-1.0]), torch.ones(1, 2))
        (grad,) = torch.autograd.grad(loss, logp)
        assert torch.isfinite(loss) and torch.isfinite(grad).all(), name


EXTREME_LOG_RATIOS = [-1000.0, -300.0, -21.0, -19.0, -0.5, 0.0, 0.3, 19.0, 21.0, 300.0, 1000.0]


@pytest.mark.parametrize("method,fn,hyper", TOKEN_LEVEL_CASES)
def test_gradient_equals_the_weight_at_any_log_ratio(method, fn, hyper):
    """Far outside the clamp |log r| <= 20 the value stays finite, and the gradient is still −F·Â·mask/Σmask:
    a clipped CE-GPPO token keeps β(1±ε)Â, a kept one r clamped to e^±20 (as ``gradient_weight`` says)."""
    log_ratio = torch.tensor(EXTREME_LOG_RATIOS, dtype=torch.float64)
    old_logp = torch.full((2, len(log_ratio)), -1.0, dtype=torch.float64)
    logp = old_logp + log_ratio
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    mask = torch.ones_like(logp)
    loss, grad = grad_wrt_logp(fn, logp, old_logp, adv, mask, **hyper)
    ratio = torch.exp(log_ratio.clamp(max=700.0)).expand_as(logp)  # e^1000 overflows to inf: a valid ratio
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    torch.testing.assert_close(grad, expected_grad(ratio, adv, mask, method, **hyper), rtol=1e-12, atol=1e-15)


def test_clipped_ce_gppo_token_keeps_its_gradient_beyond_the_clamp():
    for log_ratio in (19.0, 21.0, 1000.0):
        logp = torch.tensor([[log_ratio]], dtype=torch.float64, requires_grad=True)
        loss = ce_gppo(logp, torch.zeros(1, 1, dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64),
                       torch.ones(1, 1), beta2=1.0)
        (grad,) = torch.autograd.grad(loss, logp)
        assert grad.item() == pytest.approx(-1.2), log_ratio  # −β2(1+ε_h)Â


@pytest.mark.parametrize("ratio, adv, name", [(float("nan"), 1.0, "ratio"), (-0.5, 1.0, "ratio"),
                                              (1.0, float("nan"), "adv"), (1.0, float("inf"), "adv")])
def test_gradient_weight_rejects_nan_and_negative_inputs(ratio, adv, name):
    with pytest.raises(ValueError, match=name):
        gradient_weight(ratio, adv, "ce_gppo")


def test_registry_and_unknown_name():
    assert {"ppo_clip", "grpo", "dapo", "gppo", "ce_gppo", "cispo", "gspo"} <= set(LOSSES)
    with pytest.raises(ValueError) as err:
        get_loss("ce-gppo")
    for name in LOSSES:
        assert name in str(err.value)


# ---------------------------------------------------------------------------------------------- validation
def _good():
    logp = torch.full((2, 3), -1.0)
    return dict(logp=logp, old_logp=logp.clone(), adv=torch.tensor([1.0, -1.0]), mask=torch.ones(2, 3))


BAD_INPUTS = [
    ("old_logp", dict(old_logp=torch.zeros(2, 4)), "old_logp"),
    ("mask", dict(mask=torch.ones(3, 3)), "mask"),
    ("adv", dict(adv=torch.ones(3)), "adv"),
    ("logp 1-D", dict(logp=torch.zeros(3)), "logp"),
    ("logp nan", dict(logp=torch.tensor([[float("nan"), 0, 0], [0, 0, 0]])), "logp"),
    ("old_logp inf", dict(old_logp=torch.tensor([[float("-inf"), 0, 0], [0, 0, 0]])), "old_logp"),
    ("adv nan", dict(adv=torch.tensor([float("nan"), 1.0])), "adv"),
    ("empty mask", dict(mask=torch.zeros(2, 3)), "mask"),
    ("mask not 0/1", dict(mask=torch.full((2, 3), 0.5)), "mask"),
    ("eps_low 0", dict(eps_low=0.0), "eps_low"),
    ("eps_low 1", dict(eps_low=1.0), "eps_low"),
    ("eps_low negative", dict(eps_low=-0.1), "eps_low"),
    ("eps_high 0", dict(eps_high=0.0), "eps_high"),
    ("eps_high nan", dict(eps_high=float("nan")), "eps_high"),
    ("beta1 negative", dict(beta1=-0.5), "beta1"),
    ("beta2 negative", dict(beta2=-1e-3), "beta2"),
    ("dual_clip <= 1", dict(dual_clip=1.0), "dual_clip"),
]


@pytest.mark.parametrize("label,change,name", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_raises_value_error_naming_the_argument(label, change, name):
    with pytest.raises(ValueError, match=name):
        ce_gppo(**{**_good(), **change})


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_validates_shapes_and_mask(name):
    with pytest.raises(ValueError, match="mask"):
        get_loss(name)(**{**_good(), "mask": torch.zeros(2, 3)})
    first = next(iter(losses.get_method(name).defaults))  # eps_low, or SAPO's tau_pos, KL-Cov's cov_ratio
    with pytest.raises(ValueError, match=first):
        get_loss(name)(**{**_good(), first: -1.0})


def test_range_message_names_the_allowed_range():
    with pytest.raises(ValueError, match=r"eps_low=1.5 is outside the allowed range \(0.0, 1.0\)"):
        ppo_clip(**{**_good(), "eps_low": 1.5})
    with pytest.raises(ValueError, match=r"method='gspo' has no per-token weight"):
        gradient_weight(1.0, 1.0, "gspo")
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        gradient_weight(1.0, 1.0, "ce_gppo", beta=1.0)


# ----------------------------------------------------------------------------------------------------------
# weight_function: gradient_weight resolved once (the token bandit's hot loop)
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", losses.token_level_methods())
def test_weight_function_gives_the_numbers_of_gradient_weight(method):
    ratio = torch.tensor([0.0, 1e-12, 0.5, 0.8, 1.0, 1.2, 1.28, 2.0, 1e12], dtype=torch.float64)[:, None]
    adv = torch.tensor([-1.5, 0.0, 0.7], dtype=torch.float64)[None, :]
    hyper = {"eps_high": 0.3} if "eps_high" in losses.get_method(method).ranges and method != "gppo" else {}
    spec = losses.get_method(method)  # the plain path: the registered F at the clamped ratio
    clamped = ratio.clamp(math.exp(-losses.LOG_RATIO_CLAMP), math.exp(losses.LOG_RATIO_CLAMP))
    expected = spec.weight(clamped, adv, **spec.resolve(**hyper))
    assert torch.equal(losses.weight_function(method, **hyper)(ratio, adv), expected)
    assert torch.equal(gradient_weight(ratio, adv, method, **hyper), expected)


def test_weight_function_per_row_betas_equal_one_call_per_row():
    ratio = torch.linspace(0.5, 1.5, 11, dtype=torch.float64).expand(3, 11)
    adv = torch.tensor([[1.0], [-1.0], [0.5]], dtype=torch.float64).expand(3, 11)
    beta1, beta2 = torch.tensor([[0.0], [0.5], [1.0]]), torch.tensor([[1.0], [0.25], [0.0]])
    together = losses.weight_function("ce_gppo", eps_low=0.2, eps_high=0.28)(ratio, adv, beta1=beta1.double(),
                                                                             beta2=beta2.double())
    for row in range(3):
        alone = gradient_weight(ratio[row], adv[row], "ce_gppo", eps_low=0.2, eps_high=0.28,
                                beta1=float(beta1[row]), beta2=float(beta2[row]))
        assert torch.equal(together[row], alone)


def test_weight_function_refuses_what_gradient_weight_refuses():
    with pytest.raises(ValueError, match="no per-token weight"):
        losses.weight_function("gspo")
    with pytest.raises(ValueError, match="beta1=-1"):
        losses.weight_function("ce_gppo", beta1=-1.0)


def test_method_defaults_are_read_once_and_cannot_be_changed_by_a_caller():
    spec = losses.get_method("ce_gppo")
    spec.defaults["beta1"] = 99.0
    spec.ranges.pop("beta1")
    assert spec.defaults["beta1"] == 0.5 and "beta1" in spec.ranges
    assert spec.resolve()["beta1"] == 0.5


# ----------------------------------------------------------------------------------------------------------
# Chapter 7's baselines: SAPO's smooth gate, Clip-Cov and KL-Cov's tokens picked by covariance
# ----------------------------------------------------------------------------------------------------------
def test_sapo_weight_is_the_gates_derivative_and_fades_on_both_sides():
    """F = r·d/dr[(4/τ)σ(τ(r−1))], checked by central differences; F(1) = 1; F → 0 far from r = 1, faster for the
    larger τ (Â < 0 with the default τ_neg > τ_pos)."""
    r = np.array([0.2, 0.7, 1.0, 1.3, 3.0])
    for adv, tau in ((1.0, 1.0), (-1.0, 1.05)):
        def gate(x):
            return 4 / tau / (1 + np.exp(-tau * (x - 1)))
        h = 1e-6
        expected = r * (gate(r + h) - gate(r - h)) / (2 * h)
        np.testing.assert_allclose(gradient_weight(r, np.full_like(r, adv), "sapo"), expected, rtol=1e-7)
    assert gradient_weight(1.0, -1.0, "sapo") == pytest.approx(1.0)
    far = gradient_weight(np.array([40.0, 40.0]), np.array([1.0, -1.0]), "sapo", tau_pos=0.5, tau_neg=2.0)
    assert far[1] < far[0] < 1e-5


def _covariance_batch():
    logp, old_logp, adv, mask = make_batch(seed=8)
    cov = losses.token_covariance(logp, adv[:, None].expand_as(logp), mask)
    assert ((cov > 1.0) & (cov < 5.0)).sum() >= 4, "the batch must hold tokens in Clip-Cov's band"
    return logp, old_logp, adv, mask


def test_token_covariance_is_the_centred_product_over_valid_tokens():
    logp, _, adv, mask = make_batch(seed=8, exact=False)
    a = adv[:, None].expand_as(logp)
    valid = mask.bool()
    cov = losses.token_covariance(logp, a, mask)
    expected = (a - a[valid].mean()) * (logp - logp[valid].mean())
    torch.testing.assert_close(cov[valid], expected[valid], rtol=1e-12, atol=0)
    assert torch.isinf(cov[~valid]).all() and (cov[~valid] < 0).all()


def test_clip_cov_detaches_exactly_its_picks_and_otherwise_is_ppo_clip():
    logp, old_logp, adv, mask = _covariance_batch()
    hyper = dict(eps_low=EPS_LOW, eps_high=EPS_HIGH, cov_ratio=0.03, clip_cov_lb=1.0, clip_cov_ub=5.0)
    torch.manual_seed(3)
    _, grad = grad_wrt_logp(losses.clip_cov, logp, old_logp, adv, mask, **hyper)
    torch.manual_seed(3)  # the same draw
    picks = losses.clip_cov_picks(logp, old_logp, adv[:, None].expand_as(logp), mask, **hyper)
    ratio = torch.exp(logp - old_logp)
    expected = expected_grad(ratio, adv, mask, "grpo", eps_low=EPS_LOW, eps_high=EPS_HIGH) * ~picks
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-15)
    cov = losses.token_covariance(logp, adv[:, None].expand_as(logp), mask)
    lower, upper = losses.clipped_sides(ratio, adv[:, None], EPS_LOW, EPS_HIGH)
    assert picks.sum() == int(0.03 * mask.sum()) >= 2  # the picked count, each in the band and unclipped
    assert ((cov[picks] > 1.0) & (cov[picks] < 5.0)).all() and not (lower | upper)[picks].any()
    # nothing in the band: Clip-Cov is PPO-clip, value and gradient
    v_cc, g_cc = grad_wrt_logp(losses.clip_cov, logp, old_logp, adv, mask, **{**hyper, "clip_cov_lb": 50.0,
                                                                             "clip_cov_ub": 60.0})
    v_p, g_p = grad_wrt_logp(ppo_clip, logp, old_logp, adv, mask, eps_low=EPS_LOW, eps_high=EPS_HIGH)
    assert torch.equal(v_cc, v_p) and torch.equal(g_cc, g_p)


def test_kl_cov_penalises_its_top_covariance_tokens_and_never_clips():
    logp, old_logp, adv, mask = _covariance_batch()
    _, grad = grad_wrt_logp(losses.kl_cov, logp, old_logp, adv, mask, cov_ratio=0.05, kl_cov_coef=0.7)
    a = adv[:, None].expand_as(logp)
    picks = losses.kl_cov_picks(logp, a, mask, cov_ratio=0.05)
    cov = losses.token_covariance(logp, a, mask)
    assert picks.sum() == int(0.05 * mask.sum()) and cov[picks].min() >= cov[~picks].max()  # the top-k
    log_ratio = logp - old_logp
    expected = (-a * torch.exp(log_ratio) + 0.7 * torch.sign(log_ratio) * picks) * mask / mask.sum()
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name, change, field", [
    ("sapo", {"tau_pos": 0.0}, "tau_pos"), ("sapo", {"tau_neg": -1.0}, "tau_neg"),
    ("clip_cov", {"clip_cov_lb": 5.0, "clip_cov_ub": 1.0}, "clip_cov_lb=5.0 .*below clip_cov_ub=1.0"),
    ("clip_cov", {"cov_ratio": 1.5}, "cov_ratio"), ("kl_cov", {"kl_cov_coef": -0.1}, "kl_cov_coef")])
def test_baseline_hyper_parameters_are_validated(name, change, field):
    with pytest.raises(ValueError, match=field):
        get_loss(name)(**{**_good(), **change})
