"""How an update phase changes a whole model's entropy, predicted in parameter space.

The tabular predictor (``entropy.entropy_influence``, the paper in brief §3) assumes that every position has its
own free logits, moved by plain SGD. A transformer shares its parameters across positions and the trainer steps
with AdamW, so on a transformer the change is predicted where it happens, in parameter space. Let H̄(θ) be the
token-mean entropy of a fixed set of responses (the batch an update phase trains on) and θ_0, θ_1, …, θ_K the
parameters around the phase's K optimizer steps, Δθ_k = θ_{k+1} − θ_k. Then, to first order in each step,

    ΔH̄ = H̄(θ_K) − H̄(θ_0) ≈ Σ_k ∇θH̄(θ_k) · Δθ_k                        step form: error O(|Δθ_k|²) per step
                          ≈ Σ_k ½ [∇θH̄(θ_k) + ∇θH̄(θ_{k+1})] · Δθ_k     trapezoid: error O(|Δθ_k|³) per step
                          ≈ ∇θH̄(θ_0) · (θ_K − θ_0)                       phase form: one gradient, at the start

The step form is the one a controller can use before it steps: its gradient is taken where the step starts. The
trapezoid also needs the gradient where the step ends; it is the accurate form (the exact change is the line
integral of ∇θH̄ along the path, and the trapezoid is that integral's second-order rule on each straight step).
The phase form treats K AdamW steps as one straight move; it fails when the steps are large or turn.

``PhasePredictor`` accumulates the three over a phase. It evaluates H̄ and ∇θH̄ at θ_0, …, θ_K (K + 1
forward/backward passes over the batch), so it also gives the measured ΔH̄ of the same function, H̄(θ_K) − H̄(θ_0).
What H̄ is (which responses, micro-batching, dtype) is the caller's ``entropy_and_gradient``; this module only
does the bookkeeping, so that it serves the trainer and a test's small model alike.

**Attribution.** Given its second-moment estimate v (set by the whole gradient), AdamW's step is linear in the
gradient: with ĝ = c·Σ_j g_j the (clipped, c ≤ 1) gradient summed from parts j (e.g. one per token group),

    Δθ = −lr·wd·θ  −  lr/(1−β1^t) · [β1·m_{t−1} + (1−β1)·c·Σ_j g_j] / (√(v_t/(1−β2^t)) + ε),

so the step splits exactly into weight decay, the carried momentum and one term per part (``adamw_step_parts``),
and ΔH̄ splits with it: each part's share is the predictor's gradient dotted with that part of the step. The
parts add up to the whole prediction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

# () -> (H̄ at the current parameters, [∂H̄/∂p for every p of the predictor's parameters])
EntropyAndGradient = Callable[[], "tuple[float, list[torch.Tensor]]"]


def dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    """Σ_p ⟨a_p, b_p⟩ over a list of parameter-shaped tensors, accumulated in float64."""
    return float(sum((x.double() * y.double()).sum() for x, y in zip(a, b)))


@dataclass
class Prediction:
    """The first-order predictions of one phase's ΔH̄ (nats) and the change measured with the same H̄."""

    step: float  # Σ_k ∇θH̄(θ_k)·Δθ_k: each step's gradient taken before it (what a controller can use)
    trapezoid: float  # Σ_k ½[∇θH̄(θ_k) + ∇θH̄(θ_{k+1})]·Δθ_k (the accurate form)
    phase: float  # ∇θH̄(θ_0)·(θ_K − θ_0): one gradient for the whole phase
    measured: float  # H̄(θ_K) − H̄(θ_0)
    steps: int  # K
    parts: dict = field(default_factory=dict)  # part -> its share of the trapezoid prediction (when attributed)

    def as_metrics(self, prefix: str, parts_prefix: str) -> dict:
        return {**{f"{prefix}/{name}": getattr(self, name) for name in (*FORMS, "measured")},
                **{f"{parts_prefix}/{name}": value for name, value in self.parts.items()}}


class PhasePredictor:
    """Call ``before_step()`` before and ``after_step()`` after every optimizer step of a phase; then ``result()``.

    ``params``: the parameters the optimizer moves (those without a gradient of H̄ count as 0);
    ``entropy_and_gradient``: H̄ and its gradient with respect to ``params`` at their current values. It must not
    touch ``p.grad`` (use ``torch.autograd.grad``), so that the optimizer's own gradients are left alone.
    """

    def __init__(self, params: Sequence[torch.Tensor], entropy_and_gradient: EntropyAndGradient):
        self.params = list(params)
        self.entropy_and_gradient = entropy_and_gradient
        self.start_entropy = self.entropy = self.gradient = self.start_gradient = None
        self.sums = {"step": 0.0, "trapezoid": 0.0, "phase": 0.0}
        self.part_sums: dict[str, float] = {}
        self.steps, self.theta = 0, None

    def _measure(self):
        value, grads = self.entropy_and_gradient()
        if len(grads) != len(self.params):
            raise ValueError(f"entropy_and_gradient gave {len(grads)} gradients for {len(self.params)} parameters")
        return value, [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(self.params, grads)]

    def before_step(self) -> float:
        """Takes θ_k (and, at the first step, H̄ and ∇θH̄ there); returns the gradient's norm |∇θH̄(θ_k)|."""
        if self.gradient is None:
            self.start_entropy, self.gradient = self._measure()
            self.entropy, self.start_gradient = self.start_entropy, self.gradient
        self.theta = [p.detach().clone() for p in self.params]
        return dot(self.gradient, self.gradient) ** 0.5

    def after_step(self, parts: dict[str, list[torch.Tensor]] | None = None) -> None:
        """Takes θ_{k+1}, H̄ and ∇θH̄ there. ``parts``: the step split into named parts that add up to Δθ_k
        (``adamw_step_parts``); each gets its trapezoid share of ΔH̄, summed over the phase under its name."""
        if self.theta is None:
            raise RuntimeError("after_step() without before_step()")
        delta = [p.detach() - t for p, t in zip(self.params, self.theta)]
        entropy, gradient = self._measure()
        before, after = dot(self.gradient, delta), dot(gradient, delta)
        self.sums["step"] += before
        self.sums["trapezoid"] += 0.5 * (before + after)
        self.sums["phase"] += dot(self.start_gradient, delta)  # Σ_k g_0·Δθ_k = g_0·(θ_K − θ_0)
        for name, part in (parts or {}).items():
            share = 0.5 * (dot(self.gradient, part) + dot(gradient, part))
            self.part_sums[name] = self.part_sums.get(name, 0.0) + share
        self.entropy, self.gradient, self.theta = entropy, gradient, None
        self.steps += 1

    def result(self) -> Prediction:
        if not self.steps:
            raise RuntimeError("no optimizer step was recorded")
        return Prediction(**self.sums, measured=self.entropy - self.start_entropy, steps=self.steps,
                          parts=dict(self.part_sums))


def adamw_step_parts(optimizer: torch.optim.AdamW, params: Sequence[torch.Tensor], theta_before: Sequence[torch.Tensor],
                     grad_parts: dict[str, list[torch.Tensor]], grad_scale: float) -> dict[str, list[torch.Tensor]]:
    """The step ``optimizer`` (``torch.optim.AdamW``, amsgrad off) has just taken, split into ``weight_decay``,
    ``momentum`` and one part per entry of ``grad_parts`` (gradients, one per parameter of ``params``, that sum to
    the gradient before clipping); ``grad_scale``: the clipping factor c the gradient was multiplied by.
    ``theta_before``: the parameters before the step. The parts add up to the step (up to float rounding)."""
    if optimizer.defaults.get("amsgrad") or optimizer.defaults.get("maximize"):
        raise ValueError("adamw_step_parts needs AdamW with amsgrad=False and maximize=False")
    index = {id(p): i for i, p in enumerate(params)}
    parts = {name: [torch.zeros_like(p) for p in params] for name in (*grad_parts, "momentum", "weight_decay")}
    for group in optimizer.param_groups:
        lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        for p in group["params"]:
            i = index.get(id(p))
            if i is None or p not in optimizer.state or p.grad is None:
                continue  # not tracked, or not stepped (no gradient)
            state = optimizer.state[p]
            t = float(state["step"])
            denom = (state["exp_avg_sq"] / (1 - b2 ** t)).sqrt() + eps
            scale = lr / (1 - b1 ** t)
            carried = state["exp_avg"] - (1 - b1) * p.grad  # β1·m_{t−1}: m_t minus this step's gradient share
            parts["momentum"][i] = -scale * carried / denom
            parts["weight_decay"][i] = -lr * wd * theta_before[i]
            for name, grads in grad_parts.items():
                parts[name][i] = -scale * (1 - b1) * grad_scale * grads[i] / denom
    return parts


FORMS = ("step", "trapezoid", "phase")  # the three predictions, in the order the chapter explains them
# What "the predictor works" means in the book: over the update phases of a run, correlation with the measured
# change at least this, and the median predicted/measured within this of 1.
TARGET_CORRELATION = 0.95
TARGET_RATIO_ERROR = 0.10


@dataclass(frozen=True)
class Agreement:
    """How one form's predictions over many phases match the measured changes."""

    form: str
    phases: int
    correlation: float  # Pearson, predicted against measured
    median_ratio: float  # median of predicted / measured over the phases

    def __str__(self) -> str:
        return (f"{self.form:9s} over {self.phases} phases: correlation {self.correlation:.3f}, "
                f"median predicted/measured {self.median_ratio:.3f}")

    @property
    def meets_targets(self) -> bool:
        """Correlation at least ``TARGET_CORRELATION`` and median ratio within ``TARGET_RATIO_ERROR`` of 1."""
        return self.correlation >= TARGET_CORRELATION and abs(self.median_ratio - 1) <= TARGET_RATIO_ERROR


def agreement(metrics: Sequence[dict], prefix: str = "entropy/param_pred") -> list[Agreement]:
    """``Agreement`` of every form over the logged phases of a run (the steps that carry ``prefix/measured``)."""
    rows = [m for m in metrics if f"{prefix}/measured" in m]
    if len(rows) < 2:
        raise ValueError(f"{len(rows)} phase(s) carry {prefix}/measured; need at least 2 to correlate")
    measured = np.array([m[f"{prefix}/measured"] for m in rows])
    out = []
    for form in FORMS:
        predicted = np.array([m[f"{prefix}/{form}"] for m in rows])
        out.append(Agreement(form, len(rows), float(np.corrcoef(predicted, measured)[0, 1]),
                             float(np.median(predicted / measured))))
    return out


def attribution_totals(metrics: Sequence[dict], prefix: str = "entropy/param_attr") -> dict[str, float]:
    """Each part's share of ΔH̄ summed over the attributed phases of a run (``prefix/<part>`` keys; shares of
    clipped tokens, ``..._share_...``, are not parts and are left out)."""
    totals: dict[str, float] = {}
    for m in metrics:
        for key, value in m.items():
            if key.startswith(prefix + "/") and "_share_" not in key:
                name = key[len(prefix) + 1:]
                totals[name] = totals.get(name, 0.0) + value
    return totals


__all__ = ["Agreement", "FORMS", "TARGET_CORRELATION", "TARGET_RATIO_ERROR", "Prediction", "PhasePredictor", "adamw_step_parts", "agreement",
           "attribution_totals", "dot"]
