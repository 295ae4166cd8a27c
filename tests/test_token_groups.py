import pytest
import torch

from cegppo_edu.losses import gradient_weight
from cegppo_edu.plots.style import GROUP_COLORS
from cegppo_edu.token_groups import CLASSES, GROUPS, classify, clip_region, group_stats


def test_classify_by_sign_and_probability():
    prob = torch.tensor([[0.9, 0.1, 0.9, 0.1, 0.5]])
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0, 0.0]])
    assert [CLASSES[i] for i in classify(prob, adv)[0]] == ["PA&HP", "PA&LP", "NA&HP", "NA&LP", "ZA"]
    assert [CLASSES[i] for i in classify(prob, adv, threshold=0.05)[0][:4]] == ["PA&HP", "PA&HP", "NA&HP", "NA&HP"]
    with pytest.raises(ValueError, match="threshold"):
        classify(prob, adv, threshold=1.0)


@pytest.mark.parametrize("adv_shape", ["(B,)", "(B, T)", "(B, 1)"])
def test_classify_equals_its_definition_for_every_advantage_shape(adv_shape):
    """classify broadcasts Â instead of expanding it; the classes are those of the definition: PA/NA by the sign
    of Â (Â = 0: ZA), HP/LP by π against the threshold."""
    gen = torch.Generator().manual_seed(1)
    prob = torch.rand(7, 9, generator=gen)
    adv = torch.randn(7, generator=gen).round()  # -1, 0, 1, ...: every sign, zeros included
    shaped = {"(B,)": adv, "(B, T)": adv[:, None].expand(7, 9), "(B, 1)": adv[:, None]}[adv_shape]
    full = adv[:, None].expand(7, 9)
    low = (prob < 0.5).long()
    expected = torch.where(full == 0, 4, torch.where(full > 0, low, 2 + low))
    assert torch.equal(classify(prob, shaped), expected)


def test_clip_region_edges_count_as_inside():
    ratio = torch.tensor([0.79, 0.8, 1.0, 1.2, 1.21])
    assert clip_region(ratio, 0.2, 0.2).tolist() == [-1, 0, 0, 0, 1]


def test_every_group_has_a_colour():
    assert set(GROUP_COLORS) == set(CLASSES) and len(set(GROUP_COLORS.values())) == len(CLASSES)


def test_group_stats_add_up():
    gen = torch.Generator().manual_seed(0)
    old_logp = torch.log(torch.rand(6, 20, generator=gen) * 0.98 + 0.01)
    logp = old_logp + 0.4 * torch.randn(6, 20, generator=gen)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5, 0.0, 2.0])
    mask = (torch.rand(6, 20, generator=gen) > 0.2).float()
    stats = group_stats(logp, old_logp, adv, mask, method="ce_gppo", eps_low=0.2, eps_high=0.2)
    n_valid = mask.sum().item()
    assert sum(stats[f"{c}/count"] for c in CLASSES) == n_valid == stats["tokens"]
    assert sum(stats[f"{c}/frac"] for c in CLASSES) == pytest.approx(1.0)
    # clipped tokens only in the groups where PPO zeroes them
    assert stats["ZA/clip_low_frac"] == stats["ZA/clip_high_frac"] == 0
    for g in GROUPS:
        side = "high" if g.startswith("PA") else "low"
        other = "low" if side == "high" else "high"
        assert stats[f"{g}/clip_{other}_frac"] == 0
    # the summed weights are Σ|F·Â| over each group
    ratio = torch.exp(logp - old_logp)
    coef = (gradient_weight(ratio, adv[:, None], "ce_gppo") * adv[:, None]).abs() * mask
    assert sum(stats[f"{c}/weight_sum"] for c in CLASSES) == pytest.approx(coef.sum().item(), rel=1e-5)
    clipped = (((ratio < 0.8) & (adv[:, None] < 0)) * mask).sum().item()
    assert stats["clip/low_frac"] == pytest.approx(clipped / n_valid)


def test_group_stats_equal_their_per_class_definition():
    """group_stats sums every class in one scatter; each number equals the class-by-class definition: a count, a
    mean probability, clip fractions, Σ|F·Â| and Σ −F·Â·I over the class's valid tokens."""
    gen = torch.Generator().manual_seed(3)
    old_logp = torch.log(torch.rand(9, 13, generator=gen) * 0.98 + 0.01)
    logp = old_logp + 0.5 * torch.randn(9, 13, generator=gen)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5, 0.0, 2.0, -2.0, 0.3, -0.1])
    mask = (torch.rand(9, 13, generator=gen) > 0.3).float()
    influence = torch.randn(9, 13, generator=gen)
    stats = group_stats(logp, old_logp, adv, mask, method="ce_gppo", influence=influence, beta1=0.3, beta2=1.5)
    ratio = torch.exp(logp - old_logp)
    a = adv[:, None].expand(9, 13)
    coef = gradient_weight(ratio, a, "ce_gppo", beta1=0.3, beta2=1.5) * a
    cls = classify(logp.exp(), adv)
    lower, upper = (ratio < 0.8) & (a < 0), (ratio > 1.2) & (a > 0)
    for k, name in enumerate(CLASSES):
        sel = (cls == k) & mask.bool()
        n = sel.sum().item()
        assert stats[f"{name}/count"] == n
        if n:
            assert stats[f"{name}/mean_prob"] == pytest.approx(logp.exp()[sel].mean().item(), rel=1e-6)
            assert stats[f"{name}/clip_low_frac"] == pytest.approx((lower & sel).sum().item() / n)
            assert stats[f"{name}/clip_high_frac"] == pytest.approx((upper & sel).sum().item() / n)
        assert stats[f"{name}/weight_sum"] == pytest.approx(coef[sel].abs().sum().item(), rel=1e-6, abs=1e-9)
        assert stats[f"{name}/entropy_push"] == pytest.approx((-coef * influence)[sel].sum().item(), rel=1e-5,
                                                              abs=1e-6)
    assert {n for n in CLASSES if stats[f"{n}/count"]} == set(CLASSES)  # every class was exercised


def test_group_stats_can_classify_by_the_sampling_policy():
    old_logp = torch.log(torch.tensor([[0.4, 0.6]]))
    logp = torch.log(torch.tensor([[0.6, 0.4]]))  # both tokens crossed the 0.5 threshold during the update
    adv, mask = torch.tensor([1.0]), torch.ones(1, 2)
    current = group_stats(logp, old_logp, adv, mask)
    old = group_stats(logp, old_logp, adv, mask, classify_by="old")
    assert current["PA&HP/count"] == old["PA&HP/count"] == 1.0
    assert current["PA&HP/clip_high_frac"] == 1.0 and old["PA&LP/clip_high_frac"] == 1.0  # r = 1.5 is clipped
    with pytest.raises(ValueError, match="classify_by"):
        group_stats(logp, old_logp, adv, mask, classify_by="new")
