"""The parameter-space entropy predictor (``param_entropy``) against the measured change, on a small model whose
parameters are shared across positions (as a transformer's are): the step form's error falls like η², the
trapezoid's like η³, and over several AdamW steps trapezoid < step < phase form in error."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from cegppo_edu.entropy import entropy_from_logits
from cegppo_edu.lm.run_dir import read_metrics
from cegppo_edu.param_entropy import PhasePredictor, adamw_step_parts, agreement

PREDICTOR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "notebooks", "data", "ch04",
                         "predictor")

CONTEXTS, WIDTH, VOCAB = 12, 5, 7


class SharedPolicy(torch.nn.Module):
    """Logits of every context from one small MLP: a step on one context's token moves every context's logits."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(CONTEXTS, WIDTH, generator=g, dtype=torch.float64)
        self.hidden = torch.nn.Linear(WIDTH, 16).double()
        self.out = torch.nn.Linear(16, VOCAB).double()
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.7)
        self.tokens = torch.randint(VOCAB, (CONTEXTS,), generator=g)
        self.adv = torch.randn(CONTEXTS, generator=g, dtype=torch.float64)

    def logits(self):
        return self.out(torch.tanh(self.hidden(self.x)))  # (contexts, vocab)

    def loss(self):  # a policy-gradient surrogate: −Σ Â·log π(token)
        logp = torch.log_softmax(self.logits(), -1).gather(-1, self.tokens[:, None]).squeeze(-1)
        return -(self.adv * logp).mean()

    def entropy_and_gradient(self):
        h = entropy_from_logits(self.logits()).double().mean()
        return h.item(), list(torch.autograd.grad(h, list(self.parameters())))


def run_phase(lr: float, steps: int, optimizer: str = "sgd", seed: int = 0):
    model = SharedPolicy(seed)
    opt = (torch.optim.SGD(model.parameters(), lr=lr) if optimizer == "sgd"
           else torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01))
    predictor = PhasePredictor(list(model.parameters()), model.entropy_and_gradient)
    for _ in range(steps):
        predictor.before_step()
        opt.zero_grad()
        model.loss().backward()
        opt.step()
        predictor.after_step()
    return predictor.result()


def slope(lrs, errors):
    return np.polyfit(np.log(lrs), np.log(errors), 1)[0]


def test_one_sgd_step_step_form_error_falls_like_lr_squared_trapezoid_like_lr_cubed():
    lrs = [0.2, 0.1, 0.05, 0.025]
    results = [run_phase(lr, 1) for lr in lrs]
    step_error = [abs(r.measured - r.step) for r in results]
    trapezoid_error = [abs(r.measured - r.trapezoid) for r in results]
    assert 1.8 < slope(lrs, step_error) < 2.2
    assert 2.7 < slope(lrs, trapezoid_error) < 3.3
    smallest = results[-1]
    assert abs(smallest.step / smallest.measured - 1) < 0.05
    assert abs(smallest.trapezoid / smallest.measured - 1) < 1e-3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_adamw_phase_trapezoid_beats_step_form_beats_one_gradient(seed):
    """K = 4 AdamW steps: Adam's steps have a size set by lr, not by the gradient, and turn from step to step."""
    r = run_phase(0.01, 4, "adamw", seed=seed)
    errors = {name: abs(r.measured - getattr(r, name)) for name in ("trapezoid", "step", "phase")}
    assert errors["trapezoid"] < errors["step"] < errors["phase"], errors
    assert errors["trapezoid"] < 0.02 * abs(r.measured)
    assert r.steps == 4


@pytest.mark.parametrize("lr", [1e-2, 1e-3])
def test_adamw_predictions_converge_to_the_measured_change(lr):
    r = run_phase(lr, 4, "adamw", seed=1)
    assert math.isclose(r.step, r.measured, rel_tol=30 * lr)
    assert math.isclose(r.trapezoid, r.measured, rel_tol=lr)


@pytest.mark.parametrize("weight_decay, max_norm", [(0.0, 100.0), (0.1, 0.05)])
def test_adamw_step_splits_exactly_into_momentum_decay_and_one_part_per_gradient(weight_decay, max_norm):
    """Three AdamW steps (momentum carried), the loss split into its positive- and negative-advantage tokens; with
    weight decay and a clipped gradient too. The parts add up to the step taken, and their entropy shares to the
    trapezoid prediction."""
    model = SharedPolicy(3)
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=0.01, weight_decay=weight_decay)
    predictor = PhasePredictor(params, model.entropy_and_gradient)
    for _ in range(3):
        predictor.before_step()
        logp = torch.log_softmax(model.logits(), -1).gather(-1, model.tokens[:, None]).squeeze(-1)
        per_token = -(model.adv * logp) / CONTEXTS
        split = {name: list(torch.autograd.grad(per_token[keep].sum(), params, retain_graph=True))
                 for name, keep in (("positive", model.adv > 0), ("negative", model.adv <= 0))}
        opt.zero_grad()
        per_token.sum().backward()
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm).item()
        scale = min(1.0, max_norm / (norm + 1e-6))
        theta = [t.clone() for t in predictor.theta]
        opt.step()
        parts = adamw_step_parts(opt, params, theta, split, scale)
        for i, p in enumerate(params):
            total = sum(part[i] for part in parts.values())
            assert torch.allclose(total, p.detach() - theta[i], rtol=1e-9, atol=1e-12)
        predictor.after_step(parts)
    r = predictor.result()
    assert set(r.parts) == {"positive", "negative", "momentum", "weight_decay"}
    assert math.isclose(sum(r.parts.values()), r.trapezoid, rel_tol=1e-9)
    assert (r.parts["weight_decay"] != 0) == (weight_decay > 0) and r.parts["momentum"] != 0


def test_predictor_refuses_a_gradient_list_of_the_wrong_length():
    model = SharedPolicy()
    predictor = PhasePredictor(list(model.parameters())[:2], model.entropy_and_gradient)
    with pytest.raises(ValueError, match="4 gradients for 2 parameters"):
        predictor.before_step()


# ------------------------------------------------------------------------------ the committed validation
def test_committed_validation_at_the_chapters_settings():
    """30 phases of chapter 4's CE-GPPO run (lr 3e-4, K = 4 AdamW steps): the trapezoid form correlates >= 0.95
    with the measured change and its median ratio is within 10 %; one gradient for the whole phase does not."""
    forms = {a.form: a for a in agreement(read_metrics(os.path.join(PREDICTOR, "chapter", "metrics.jsonl")))}
    assert forms["trapezoid"].phases == 30
    assert forms["trapezoid"].meets_targets
    assert forms["phase"].correlation < 0.9  # why the trainer does not predict from θ_0 alone


def test_committed_lr_scan_ratios_approach_one_as_the_step_shrinks():
    scan = [agreement(read_metrics(os.path.join(PREDICTOR, f"lr_{lr}", "metrics.jsonl")))
            for lr in ("0.0003", "0.0001", "3e-05", "1e-05")]
    step_gap = [abs({a.form: a for a in row}["step"].median_ratio - 1) for row in scan]
    assert step_gap == sorted(step_gap, reverse=True) and step_gap[-1] < 0.03, step_gap


def test_summary_text_is_what_the_committed_runs_say():
    with open(os.path.join(PREDICTOR, "summary.txt")) as f:
        text = f.read()
    for name in ("chapter", "lr_1e-05"):
        for a in agreement(read_metrics(os.path.join(PREDICTOR, name, "metrics.jsonl"))):
            assert str(a) in text


def test_collapse_summary_is_what_the_runner_computes_from_the_committed_runs():
    """notebooks/data/ch04/predictor/collapse/summary.txt (quoted by the closing note and the docs) must be what
    ``regenerate ch04-collapse`` computes from the committed seed runs (then the times of its regenerations)."""
    from cegppo_edu.experiments import regenerate

    folder = os.path.join(PREDICTOR, "collapse")
    with open(os.path.join(folder, "summary.txt")) as f:
        lines = f.read().splitlines()
    table = [line for line in lines if not line.startswith("regenerated ")]
    assert table == regenerate.collapse_lines(folder) and len(table) > 2 * len(regenerate.COLLAPSE_WINDOWS)
