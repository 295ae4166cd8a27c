"""TRL 1.16.0's own losses against the project's on the batches TRL trains on, each with TRL's own normalisation.

Every optimizer step of TRL's real trainer (two micro-batches accumulated; the second step off policy) is
recomputed with ``cegppo_edu.losses`` on the very log-probs, old log-probs, advantages and mask TRL used; the sum
of TRL's micro-batch losses and its per-token gradient must equal the project's loss and gradient.

How TRL's definitions map onto the project's (where they differ, this is what is compared):

- ``grpo``: PPO-clip, each response's token mean, then the mean over responses, divided by the accumulation steps
  = ``ppo_clip(agg="seq-mean-token-mean")`` over the step's responses (the micro-batches hold equally many). TRL
  counts a response without a valid token as 0 in that mean, the project leaves it out: TRL always generates at
  least one token, and the test checks that every response has one.
- ``dapo``: PPO-clip, the token sum over the number of valid tokens of the whole generation batch
  = ``dapo(agg="token-mean")`` over the generation batch (one optimizer step per generation batch here).
- ``cispo``: TRL's ``epsilon_high`` is a cap on r itself and there is no lower bound: −sg(min(r, E))·Â·log π =
  the project's ``cispo`` with ε_l = 1 (bound 0) and ε_h = E − 1; dapo's normalisation.
- ``sapo``: the same gate (4/τ)·σ(τ(r − 1)), τ_pos for Â > 0, τ_neg otherwise, with grpo's normalisation
  = ``sapo(agg="seq-mean-token-mean")``.

TRL computes r = exp(log π − log π_old) without the project's ±20 clamp of log r; the batches here stay far inside.
"""

from __future__ import annotations

import pytest
import torch
from conftest import optimizer_steps, reference, run
from trl import GRPOConfig, GRPOTrainer

from cegppo_edu.losses import cispo, dapo, ppo_clip, ratio_from_logps, sapo

GRAD_ATOL = 1e-7  # float32 per-token gradients are about 0.03; the two sides differ in rounding only
VALUE_ATOL = 1e-6
CISPO_CAP = 1.5  # TRL's epsilon_high for cispo: low enough that the cap binds on the off-policy step

# TRL's loss_type and config -> the project's loss with the same definition and TRL's normalisation
CASES = {
    "grpo": (dict(epsilon=0.2, epsilon_high=0.2),
             lambda *batch: ppo_clip(*batch, eps_low=0.2, eps_high=0.2, agg="seq-mean-token-mean")),
    "grpo_dual_clip": (dict(epsilon=0.2, epsilon_high=0.28, delta=1.5),  # TRL's two-sided clip = dual clip c
                       lambda *batch: ppo_clip(*batch, eps_low=0.2, eps_high=0.28, dual_clip=1.5,
                                               agg="seq-mean-token-mean")),
    "dapo": (dict(epsilon=0.2, epsilon_high=0.28),
             lambda *batch: dapo(*batch, eps_low=0.2, eps_high=0.28, agg="token-mean")),
    "cispo": (dict(epsilon_high=CISPO_CAP),
              lambda *batch: cispo(*batch, eps_low=1.0, eps_high=CISPO_CAP - 1, agg="token-mean")),
    "sapo": (dict(sapo_temperature_pos=1.0, sapo_temperature_neg=1.05),
             lambda *batch: sapo(*batch, tau_pos=1.0, tau_neg=1.05, agg="seq-mean-token-mean")),
}
# What each case must meet on its off-policy step, else its clip, cap or gate would go untested: (r, Â) -> tokens
EXERCISED = {
    "grpo": lambda r, a: ((r < 0.8) & (a < 0)) | ((r > 1.2) & (a > 0)),
    "grpo_dual_clip": lambda r, a: (r > 1.5) & (a < 0),
    "dapo": lambda r, a: ((r < 0.8) & (a < 0)) | ((r > 1.28) & (a > 0)),
    "cispo": lambda r, a: r > CISPO_CAP,
    "sapo": lambda r, a: (r - 1).abs() > 0.5,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_trl_loss_equals_the_projects_on_trls_batches(tiny_model, tmp_path, case):
    config, project_loss = CASES[case]
    _, records = run(GRPOTrainer, GRPOConfig, tiny_model, tmp_path, loss_type=case.split("_dual")[0], **config)
    steps = optimizer_steps(records)
    assert len(steps) == 2
    for step in steps:
        assert (step["mask"].sum(-1) > 0).all(), "a response without tokens: TRL's grpo mean would count it"
        value, grad = reference(lambda logp, old, adv, mask: project_loss(logp, old, adv, mask), step)
        assert torch.allclose(step["loss"], value, rtol=0, atol=VALUE_ATOL), (step["loss"], value)
        assert (step["grad"] - grad).abs().max() <= GRAD_ATOL, (step["grad"] - grad).abs().max()
    off_policy = steps[1]
    ratio = ratio_from_logps(off_policy["logp"], off_policy["old"])
    exercised = EXERCISED[case](ratio, off_policy["adv"][:, None]) & off_policy["mask"].bool()
    assert exercised.any(), f"no token of the off-policy step is clipped, capped or gated: {case} is untested"
