"""Entropy: chunked against direct, and the first-order predictors against measured entropy changes."""

import pytest
import torch

from cegppo_edu.entropy import (entropy_from_logits, entropy_influence, entropy_influence_per_choice,
                                predicted_entropy_change, token_logp_and_entropy)


def direct_entropy(logits):
    p = torch.softmax(logits.double(), -1)
    return -(p * torch.log(p)).sum(-1)


def test_chunked_entropy_equals_direct():
    logits = 3 * torch.randn(5, 37, 100, generator=torch.Generator().manual_seed(0))
    for chunk in (1, 7, 1024):
        torch.testing.assert_close(entropy_from_logits(logits, chunk_size=chunk).double(), direct_entropy(logits),
                                   rtol=1e-5, atol=1e-5)


def test_chunked_logp_and_entropy_keep_the_gradient():
    logits = torch.randn(3, 11, 50, generator=torch.Generator().manual_seed(1), requires_grad=True)
    tokens = torch.randint(0, 50, (3, 11), generator=torch.Generator().manual_seed(2))
    logp, ent = token_logp_and_entropy(logits, tokens, chunk_size=4)
    expected = torch.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)
    torch.testing.assert_close(logp, expected)
    torch.testing.assert_close(ent.double(), direct_entropy(logits.detach()), rtol=1e-5, atol=1e-5)
    (grad,) = torch.autograd.grad(logp.sum(), logits)
    (expected_grad,) = torch.autograd.grad(expected.sum(), logits)
    torch.testing.assert_close(grad, expected_grad)


def test_entropy_of_uniform_and_one_hot():
    assert entropy_from_logits(torch.zeros(1, 50)).item() == pytest.approx(torch.log(torch.tensor(50.0)).item())
    assert entropy_from_logits(torch.tensor([[100.0, 0.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-30)


@pytest.mark.parametrize("seed", range(5))
def test_predicted_entropy_change_within_2_percent(seed):
    """50-way softmax, small random logit update: first-order ΔH within 2 % of the measured ΔH."""
    gen = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(50, generator=gen, dtype=torch.float64)
    delta = 1e-3 * torch.randn(50, generator=gen, dtype=torch.float64)
    measured = direct_entropy(logits + delta) - direct_entropy(logits)
    predicted = predicted_entropy_change(logits, delta).double()
    assert predicted.item() == pytest.approx(measured.item(), rel=0.02)


@pytest.mark.parametrize("rank", [0, 1, 10, 49])  # from the most to the least likely token
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_influence_predicts_a_tabular_step(rank, sign):
    """Δz_b = η·w·(1[b=a] − π_b) changes the entropy by ≈ −η·w·I_a (the paper in brief, §3)."""
    logits = 2 * torch.randn(50, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    pi = torch.softmax(logits, -1)
    a = torch.argsort(pi, descending=True)[rank]
    eta_w = sign * 1e-3
    step = eta_w * (torch.nn.functional.one_hot(a, 50).double() - pi)
    measured = (direct_entropy(logits + step) - direct_entropy(logits)).item()
    predicted = (-eta_w * entropy_influence(logits[None], a[None])).item()
    assert predicted == pytest.approx(measured, rel=0.02)
    # a positive push (w > 0) on the likeliest token lowers entropy, on the least likely one raises it
    if sign > 0 and rank in (0, 49):
        assert (measured < 0) == (rank == 0)


def test_influence_equals_covariance_predictor():
    logits = torch.randn(4, 7, 30, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    tokens = torch.randint(0, 30, (4, 7), generator=torch.Generator().manual_seed(5))
    pi = torch.softmax(logits, -1)
    delta = torch.nn.functional.one_hot(tokens, 30).double() - pi  # ∇_z log π_a
    torch.testing.assert_close(entropy_influence(logits, tokens, chunk_size=3).double(),
                               -predicted_entropy_change(logits, delta).double(), rtol=1e-5, atol=1e-7)


def test_influence_of_every_choice_is_the_influence_of_each_token():
    """``entropy_influence_per_choice`` gives, bitwise, ``entropy_influence`` of each choice (the token bandits
    take every choice's I from one pass), masked choices and chunking included."""
    logits = torch.randn(3, 5, 6, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    logits[0, 1, 2] = -INF
    every = entropy_influence_per_choice(logits, chunk_size=4)  # (3, 5, 6)
    assert every.shape == logits.shape
    for choice in range(6):
        tokens = torch.full((3, 5), choice)
        torch.testing.assert_close(every[..., choice], entropy_influence(logits, tokens, chunk_size=7),
                                   rtol=0, atol=0)


def test_bad_chunk_size():
    with pytest.raises(ValueError, match="chunk_size"):
        entropy_from_logits(torch.zeros(2, 3), chunk_size=0)


INF = float("inf")
MASKED = torch.tensor([[1.0, 2.0, -INF, 0.0]])
UNMASKED = MASKED[:, [0, 1, 3]]  # the same distribution without the impossible choice


def test_masked_vocabulary_entropy_is_that_of_the_remaining_choices():
    assert entropy_from_logits(MASKED).item() == pytest.approx(0.8324, abs=5e-5)
    torch.testing.assert_close(entropy_from_logits(MASKED), entropy_from_logits(UNMASKED))
    logp, entropy = token_logp_and_entropy(MASKED, torch.tensor([1]))
    torch.testing.assert_close(entropy, entropy_from_logits(UNMASKED))
    torch.testing.assert_close(logp, torch.log_softmax(UNMASKED, -1)[:, 1])


def test_masked_vocabulary_predictors_equal_the_unmasked_ones():
    delta = torch.tensor([[0.1, 0.2, 0.3, -0.4]])
    torch.testing.assert_close(predicted_entropy_change(MASKED, delta),
                               predicted_entropy_change(UNMASKED, delta[:, [0, 1, 3]]))
    torch.testing.assert_close(entropy_influence(MASKED, torch.tensor([1])),
                               entropy_influence(UNMASKED, torch.tensor([1])))
    # the masked token itself has π = 0: its own term vanishes, I = −Σ_b π_b² (log π_b + H)
    pi = torch.softmax(UNMASKED, -1)
    own_free = -(pi * pi * (pi.log() + entropy_from_logits(UNMASKED)[:, None])).sum(-1)
    torch.testing.assert_close(entropy_influence(MASKED, torch.tensor([2])), own_free)
    assert torch.isfinite(entropy_influence(MASKED, torch.tensor([2]))).all()


@pytest.mark.parametrize("bad, match", [
    (torch.tensor([[1.0, float("nan")]]), "NaN or \\+inf"),
    (torch.tensor([[1.0, INF]]), "NaN or \\+inf"),
    (torch.tensor([[-INF, -INF]]), "all −inf"),
    (torch.zeros(0, 5), "empty"),
    (torch.zeros(3, 0), "empty"),
])
def test_bad_logits_raise_naming_the_argument(bad, match):
    tokens = torch.zeros(bad.shape[:-1], dtype=torch.long)
    calls = [lambda: entropy_from_logits(bad), lambda: token_logp_and_entropy(bad, tokens),
             lambda: entropy_influence(bad, tokens), lambda: predicted_entropy_change(bad, torch.zeros_like(bad))]
    for call in calls:
        with pytest.raises(ValueError, match="logits") as err:
            call()
        assert err.match(match)


def test_entropy_gradient_is_the_same_whatever_the_chunking():
    """Under autograd the chunks are checkpointed; the gradient must not depend on how the tokens are cut."""
    logits = torch.randn(3, 7, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    weights = torch.rand(3, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    whole = torch.autograd.grad((entropy_from_logits(logits) * weights).sum(), logits)[0]
    cut = torch.autograd.grad((entropy_from_logits(logits, chunk_size=4) * weights).sum(), logits)[0]
    probs = torch.softmax(logits.detach(), -1)
    log_probs = torch.log_softmax(logits.detach(), -1)
    entropy = -(probs * log_probs).sum(-1, keepdim=True)
    analytic = -probs * (log_probs + entropy) * weights[..., None]  # dH/dz_a = −π_a (log π_a + H)
    assert torch.allclose(cut, whole, rtol=0, atol=1e-14) and torch.allclose(whole, analytic, atol=1e-12)
