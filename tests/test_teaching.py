"""The short teaching versions the chapters show first equal the full implementations they stand for."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from cegppo_edu import teaching
from cegppo_edu.entropy import entropy_from_logits
from cegppo_edu.losses import ce_gppo, get_method, gradient_weight
from cegppo_edu.toy import bandit, demos

# the interval's edges, far tails; not below e^-20, where the package clamps log r and the short version does not
RATIOS = np.concatenate([np.linspace(0.01, 3.0, 300), [0.8, 1.2, 1.28, 0.72, 1e-6, 50.0]])
ADVS = np.array([-2.0, -1.0, -0.3, 0.0, 0.3, 1.0, 2.0])
HYPERS = [dict(eps_low=0.2, eps_high=0.2, beta1=0.5, beta2=1.0), dict(eps_low=0.1, eps_high=0.28, beta1=0.0, beta2=0.0),
          dict(eps_low=0.3, eps_high=0.4, beta1=1.0, beta2=1.0), dict(eps_low=0.05, eps_high=0.1, beta1=2.0, beta2=0.25)]


@pytest.mark.parametrize("hyper", HYPERS)
def test_teaching_weight_is_the_package_weight(hyper):
    r, a = np.meshgrid(RATIOS, ADVS)
    np.testing.assert_array_equal(teaching.ce_gppo_weight(r, a, **hyper), gradient_weight(r, a, "ce_gppo", **hyper))


@pytest.mark.parametrize("hyper", HYPERS)
def test_teaching_loss_has_the_package_value_and_gradient(hyper):
    gen = torch.Generator().manual_seed(0)
    old = torch.randn(64, generator=gen, dtype=torch.float64) - 1.0
    logp = (old + 0.6 * torch.randn(64, generator=gen, dtype=torch.float64)).requires_grad_()
    adv = torch.randn(64, generator=gen, dtype=torch.float64)
    short = teaching.ce_gppo_loss(logp, old, adv, **hyper)
    (g_short,) = torch.autograd.grad(short, logp)
    full = ce_gppo(logp[None], old[None], adv[None], torch.ones(1, 64, dtype=torch.float64), **hyper)
    (g_full,) = torch.autograd.grad(full, logp)
    torch.testing.assert_close(short, full, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(g_short, g_full, rtol=1e-14, atol=1e-15)
    ratio = torch.exp(logp - old).detach().numpy()
    clipped = gradient_weight(ratio, adv.numpy(), "ce_gppo", **hyper) != ratio
    assert 0 < clipped.sum() < 64, "the random tokens must include clipped and kept ones"


@pytest.mark.parametrize("token,ratio,adv,method", [(6, 1.5, 1.0, "ce_gppo"), (6, 0.6, -1.0, "ce_gppo"),
                                                    (0, 1.0, 1.0, "ce_gppo"), (2, 1.1, -0.7, "gppo")])
def test_teaching_softmax_update_is_the_autograd_update(token, ratio, adv, method):
    logits = np.array([3.0, 2.0, 1.0, 0.5, 0.0, -0.5, -1.0, -2.0])
    full = demos.single_softmax_update(logits, token, ratio, adv, method, lr=0.5)
    short = teaching.softmax_update(logits, token, full["weight"], adv, lr=0.5)
    np.testing.assert_allclose(short, full["delta"], rtol=0, atol=1e-15)
    assert np.abs(short).max() > 0.01


@pytest.mark.parametrize("method,toy", [("ce_gppo", {}), ("grpo", {}), ("dapo", {"success_low": 0.1, "success_high": 0.9}),
                                        ("ce_gppo", {"minibatches": 2, "epochs": 3, "lr": 4.0, "relevant": 3})])
def test_teaching_bandit_step_reproduces_the_vectorised_bandit(method, toy):
    steps = 25
    history = bandit.simulate(method, steps=steps, seeds=1, seed=3, **toy)
    cfg = bandit.make_toy(**toy)
    hyper = {k: v for k, v in get_method(method).resolve(**history.hyper).items() if k != "dual_clip"}
    weight = functools.partial(teaching.ce_gppo_weight, **{k: hyper[k] for k in ("eps_low", "eps_high", "beta1",
                                                                                 "beta2")})
    rng = np.random.default_rng([3, 0])  # seed index 0 of run seed 3 (bandit._seed_generators)
    z = rng.normal(0.0, 1.0, (cfg.positions, cfg.vocab)) * cfg.init_scale
    entropies = []
    for _ in range(steps):
        entropies.append(float(entropy_from_logits(torch.from_numpy(z)).double().mean()))
        z = teaching.token_bandit_step(z, rng, weight, groups=cfg.groups, group_size=cfg.group_size,
                                       minibatches=cfg.minibatches, epochs=cfg.epochs, lr=cfg.lr,
                                       relevant=cfg.relevant, success_low=cfg.success_low,
                                       success_high=cfg.success_high)
    # the bandit's entropies are float32 sums (entropy_from_logits), so they agree to float32's precision
    np.testing.assert_allclose(entropies, history.entropy_per_seed[0], rtol=0, atol=1e-6)
    assert abs(entropies[-1] - entropies[0]) > 0.01, "the policy must have moved for the comparison to mean much"
