"""Tests of cegppo_edu.toy.demos: the experiments behind chapters 1 and 2, checked against math."""

import numpy as np
import pytest
import torch

from cegppo_edu.toy import demos
from cegppo_edu.entropy import entropy_from_logits
from cegppo_edu.losses import gradient_weight
from cegppo_edu.token_groups import CLASSES


@pytest.fixture(scope="module")
def sample():
    return demos.funnel_sample(seed=0)


def test_funnel_sample_shapes_and_determinism(sample):
    again = demos.funnel_sample(seed=0)
    other = demos.funnel_sample(seed=1)
    n = 64 * 32
    for key in ("prob", "ratio", "adv", "group"):
        assert sample[key].shape == (n,)
        np.testing.assert_array_equal(sample[key], again[key])
    assert not np.array_equal(sample["ratio"], other["ratio"])
    assert ((sample["prob"] > 0) & (sample["prob"] <= 1)).all() and (sample["ratio"] > 0).all()
    assert set(np.unique(sample["adv"])) <= {-1.0, 1.0}
    assert set(np.unique(sample["group"])) <= set(range(len(CLASSES) - 1))  # no zero advantage


def test_funnel_ratio_bounded_by_one_over_prob(sample):
    # π_new <= 1, so r = π_new / π_old <= 1 / π_old: the funnel's narrow end at high probability.
    assert (sample["ratio"] <= 1.0 / sample["prob"] + 1e-9).all()


def test_funnel_outside_tokens_are_mostly_low_probability(sample):
    s = demos.funnel_summary(sample, 0.2, 0.2)
    assert 0.02 < s["outside_frac"] < 0.5
    assert s["outside_lp_share"] >= 0.9
    assert s["outside_lp_share"] > s["lp_frac"] + 0.3
    assert s["clipped_frac"] == pytest.approx(s["clip_low_frac"] + s["clip_high_frac"])
    assert s["clipped_frac"] <= s["outside_frac"]


def test_funnel_summary_counts_match_a_direct_count(sample):
    s = demos.funnel_summary(sample, 0.1, 0.3, threshold=0.3)
    r, a, p = sample["ratio"], sample["adv"], sample["prob"]
    outside = (r < 0.9) | (r > 1.3)
    clipped = ((r < 0.9) & (a < 0)) | ((r > 1.3) & (a > 0))
    assert s["outside_frac"] == pytest.approx(outside.mean())
    assert s["clipped_lp_share"] == pytest.approx((p[clipped] < 0.3).mean())


def test_no_update_means_no_token_leaves_the_interval():
    s = demos.funnel_summary(demos.funnel_sample(lr=1e-9), 0.2, 0.2)
    assert s["outside_frac"] == 0 and np.isnan(s["outside_lp_share"])


@pytest.mark.parametrize("bad", [dict(lr=0.0), dict(lr=-1.0), dict(vocab=1), dict(length=0), dict(logit_scale=float("nan"))])
def test_funnel_sample_rejects_bad_input(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        demos.funnel_sample(**bad)


@pytest.mark.parametrize("method", ["grpo", "dapo", "gppo", "ce_gppo", "cispo"])
@pytest.mark.parametrize("adv", [1.0, -1.0, 0.5])
def test_value_and_grad_curves_gradient_is_minus_F_times_A(method, adv):
    ratios = np.linspace(0.3, 2.0, 35)
    values, grads = demos.value_and_grad_curves(ratios, adv, method)
    np.testing.assert_allclose(grads, -gradient_weight(ratios, adv, method) * adv, atol=1e-12)
    assert values.shape == ratios.shape


def test_value_is_flat_on_the_clipped_side_for_ppo_and_ce_gppo():
    ratios = np.array([1.3, 1.6, 2.5])
    for method in ("grpo", "ce_gppo"):
        values, _ = demos.value_and_grad_curves(ratios, 1.0, method)
        np.testing.assert_allclose(values, -1.2)  # −(1+ε_h)·Â, β2 = 1


def test_value_and_grad_curves_rejects_bad_input():
    with pytest.raises(ValueError, match="adv"):
        demos.value_and_grad_curves([1.0], 0.0, "grpo")
    with pytest.raises(ValueError, match="ratio"):
        demos.value_and_grad_curves([0.0], 1.0, "grpo")


def test_grad_norm_by_prob_zero_on_clipped_tokens_for_grpo(sample):
    g = demos.grad_norm_by_prob(sample, "grpo")
    r, a = sample["ratio"], sample["adv"]
    clipped = ((r > 1.2) & (a > 0)) | ((r < 0.8) & (a < 0))
    assert clipped.any() and (g[clipped] == 0).all() and (g[~clipped] > 0).all()
    g_ce = demos.grad_norm_by_prob(sample, "ce_gppo")
    np.testing.assert_allclose(g_ce[~clipped], g[~clipped])
    assert (g_ce[clipped] > 0).all()


def test_binned_mean():
    centres, means = demos.binned_mean([0.1, 0.15, 0.6, 0.7], [1.0, 3.0, 5.0, 7.0], [0.0, 0.5, 1.0])
    np.testing.assert_allclose(centres, [0.25, 0.75])
    np.testing.assert_allclose(means, [2.0, 6.0])
    _, empty = demos.binned_mean([0.1], [1.0], [0.0, 0.5, 1.0])
    assert np.isnan(empty[1])


LOGITS = np.array([3.0, 2.0, 1.0, 0.5, 0.0, -0.5, -1.0, -2.0])


def test_single_softmax_update_matches_the_tabular_formula():
    """Δz_b = η·F·Â·(1[b=a] − π_b) / N with N = 1 token (the paper in brief, §3)."""
    token, ratio, adv, lr = 6, 1.5, 1.0, 0.5
    out = demos.single_softmax_update(LOGITS, token, ratio, adv, "ce_gppo", lr=lr)
    pi = torch.softmax(torch.tensor(LOGITS), -1).numpy()
    weight = 1.0 * 1.2  # β2 (1 + ε_h)
    expected = lr * weight * adv * (np.eye(len(LOGITS))[token] - pi)
    np.testing.assert_allclose(out["delta"], expected, atol=1e-12)
    assert out["weight"] == pytest.approx(weight)


def test_single_softmax_update_entropy_signs_and_prediction():
    pa_lp = demos.single_softmax_update(LOGITS, 6, 1.5, 1.0, "ce_gppo", lr=0.5)
    na_lp = demos.single_softmax_update(LOGITS, 6, 0.6, -1.0, "ce_gppo", lr=0.5)
    assert pa_lp["dH_meas"] > 0 and pa_lp["dH_pred"] > 0
    assert na_lp["dH_meas"] < 0 and na_lp["dH_pred"] < 0
    for out in (pa_lp, na_lp):
        assert out["dH_pred"] == pytest.approx(out["dH_influence"], rel=1e-4)
        assert out["dH_pred"] == pytest.approx(out["dH_meas"], rel=0.1)
        after = entropy_from_logits(torch.tensor(LOGITS + out["delta"])).item()
        assert out["dH_meas"] == pytest.approx(after - out["H"], abs=1e-6)


def test_single_softmax_update_grpo_drops_clipped_token():
    out = demos.single_softmax_update(LOGITS, 6, 1.5, 1.0, "grpo", lr=0.5)
    assert np.all(out["delta"] == 0) and out["dH_meas"] == 0


@pytest.mark.parametrize("kwargs, name", [(dict(token=8), "token"), (dict(ratio=0.0), "ratio"),
                                          (dict(logits=[1.0]), "logits")])
def test_single_softmax_update_rejects_bad_input(kwargs, name):
    args = dict(logits=LOGITS, token=0, ratio=1.0, adv=1.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        demos.single_softmax_update(**args)
