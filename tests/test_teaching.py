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


# float32 forward passes of one row against padded batches differ by rounding (~1e-7); AdamW divides each gradient
# by its running RMS, so a weight whose gradient is nearly 0 can move by up to lr per step from that noise alone
TEACHING_LM_ATOL = 1e-5


def test_teaching_lm_rl_step_is_the_trainers_step_with_every_instrument_off(tmp_path):
    """One RL step of the tiny Qwen2 from the same weights, prompts and sampler seed: the short step (one row per
    forward pass) and the trainer's (padded batches, instruments off) give the same losses and weights up to
    float32 rounding of the different batch shapes."""
    import copy

    from cegppo_edu.lm import setup
    from cegppo_edu.lm.config import loss_kwargs
    from cegppo_edu.lm.trainer import Trainer
    from test_lm_trainer import fast_config

    c = fast_config(steps=1, eval_every=0, drop_zero_variance=True, token_group_stats=False,
                    measure_entropy_change=False, update_epochs=2, lr=1e-2, warmup_steps=0)
    trainer = Trainer(c, str(tmp_path), progress=False)
    assert not trainer.hooks.instruments, "every instrument must be off for the bare step"
    model, start = copy.deepcopy(trainer.model), copy.deepcopy(trainer.model)
    optimizer, _ = setup.optimizer_and_schedule(c, model, trainer.device)
    problems = [trainer.train_problems[i] for i in trainer.step_problem_indices(1)]
    answers = [p.answer for p in problems for _ in range(c.group_size)]

    def sample(prompts, group_size):  # the trainer's sampler at the trainer's seed: the rollout the trainer draws
        return trainer.sampler.generate(prompts, n=group_size, max_new_tokens=c.max_new_tokens, top_p=c.top_p,
                                        temperature=c.temperature,
                                        seed=setup.derive_seed(c.seed, "rollout", 1)).response_ids

    def reward(responses):
        return trainer.reward_fn(trainer.tokenizer.batch_decode(responses, skip_special_tokens=True), answers)

    shuffle = torch.Generator().manual_seed(setup.derive_seed(c.seed, "shuffle", 1))
    losses = teaching.lm_rl_step(model, optimizer, [trainer.prompts.ids(p) for p in problems], sample, reward,
                                 get_method(c.method).loss, loss_kwargs(c), group_size=c.group_size,
                                 mini_batches=c.mini_batches, epochs=c.update_epochs, max_grad_norm=c.max_grad_norm,
                                 temperature=c.temperature, shuffle=shuffle)
    metrics = trainer.train_step()
    assert len(losses) == metrics["update/optimizer_steps"] == 4 and metrics["responses/kept"] < 16
    assert np.mean(losses) == pytest.approx(metrics["loss"], rel=1e-5, abs=1e-7)
    moved = max((p - q).abs().max().item() for p, q in zip(trainer.model.parameters(), start.parameters()))
    assert moved > 1e-2, "the four AdamW steps at lr 1e-2 must move the weights well beyond the tolerance below"
    for short, full in zip(model.parameters(), trainer.model.parameters()):
        torch.testing.assert_close(short, full, rtol=0, atol=TEACHING_LM_ATOL)
