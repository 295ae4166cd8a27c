"""The one method registry (``losses.METHODS``): a method added there reaches every layer that lists or checks
methods, with no other edit — the command line, the trainer's config validation, the toy bandit, the figures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cegppo_edu.cli import build_parser
from cegppo_edu.lm.config import apply_overrides, get_preset, loss_kwargs
from cegppo_edu.losses import (METHODS, Method, ce_gppo, ce_gppo_per_token, clip_weight, gradient_weight,
                               register_method, token_level_methods)
from cegppo_edu.plots.style import compared_methods
from cegppo_edu.toy import bandit


def half_clip(logp, old_logp, adv, mask, eps_low=0.2, eps_high=0.25, agg="token-mean"):
    """A made-up method: CE-GPPO with β1 = β2 = 0.5 fixed and its own ε_h."""
    return ce_gppo(logp, old_logp, adv, mask, eps_low, eps_high, 0.5, 0.5, None, agg)


@pytest.fixture
def registered():
    method = register_method(Method("half_clip", "half-clip", half_clip, ce_gppo_per_token, clip_weight,
                                    "made up for this test", fixed={"beta1": 0.5, "beta2": 0.5}))
    yield method
    del METHODS["half_clip"]


def test_a_registered_method_is_a_choice_of_every_command(registered):
    parser = build_parser()
    assert parser.parse_args(["train", "--method", "half_clip", "--out", "x"]).method == "half_clip"
    assert parser.parse_args(["bandit", "--method", "half_clip", "--out", "x"]).method == "half_clip"
    assert "half_clip" in token_level_methods() and "half_clip" in compared_methods()


def test_the_config_validates_a_registered_method_by_its_own_ranges(registered):
    config = apply_overrides(get_preset("tiny-arith"), {"method": "half_clip"})
    assert loss_kwargs(config) == {"eps_low": 0.2, "eps_high": 0.25, "agg": "token-mean"}
    with pytest.raises(ValueError, match="beta1=0.7 is not a parameter of method 'half_clip'"):
        apply_overrides(config, {"beta1": 0.7})
    with pytest.raises(ValueError, match=r"eps_high=-1.0 is outside the allowed range"):
        apply_overrides(config, {"eps_high": -1.0})


def test_the_bandit_runs_a_registered_method_with_its_defaults(registered):
    history = bandit.simulate("half_clip", steps=3, seeds=2)
    assert history.hyper == {"eps_low": 0.2, "eps_high": 0.25}
    with pytest.raises(ValueError, match="beta2"):
        bandit.simulate("half_clip", beta2=1.0, steps=1, seeds=1)


def test_a_registered_method_has_its_gradient_weight_checked_by_autograd(registered):
    """The same check the book's methods get: autograd's gradient is −F·Â·mask/Σmask, F from the registry."""
    ratios = torch.tensor([[0.5, 0.79, 1.0, 1.1, 1.26, 2.0]], dtype=torch.float64)
    old = torch.zeros_like(ratios)
    for adv in (1.0, -1.0):
        logp = ratios.log().requires_grad_(True)
        loss = half_clip(logp, old, torch.tensor([adv], dtype=torch.float64), torch.ones_like(ratios))
        (grad,) = torch.autograd.grad(loss, logp)
        weight = gradient_weight(ratios, torch.tensor([[adv]], dtype=torch.float64), "half_clip")
        torch.testing.assert_close(grad, -weight * adv / ratios.numel())
    assert np.allclose(gradient_weight([2.0, 0.5], [1.0, -1.0], "half_clip"), [0.5 * 1.25, 0.5 * 0.8])


def test_registering_refuses_a_duplicate_and_a_hyper_parameter_without_a_range(registered):
    with pytest.raises(ValueError, match="already registered"):
        register_method(registered)

    def odd(logp, old_logp, adv, mask, temperature=1.0):
        return ce_gppo(logp, old_logp, adv, mask)
    with pytest.raises(ValueError, match="without a range: \\['temperature'\\]"):
        register_method(Method("odd", "odd", odd, None, None, "made up"))
