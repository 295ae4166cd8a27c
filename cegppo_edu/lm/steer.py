"""The LM trainer's entropy controller (``beta_controller``): chapter 7's controllers (``steering``) on a transformer.

Each RL step, after the old log-probs have measured H(t) on the step's batch and before the first optimizer step,
``Steerer.before_updates`` sets the step's β1, β2 (``predictive``, ``pi``) or entropy-bonus coefficient
(``entropy_bonus``). The predictive controller cannot look ahead as the toy does (a trial update phase would cost a
whole step), so it estimates ΔH(β1, β2) ≈ rest + β1·unit_low + β2·unit_high from the *last* update phase's
attribution (``param_entropy``; ``entropy_predictor_every=1``, ``entropy_attribution=True``): the clipped Â<0
cells' share divided by the β1 that phase used gives unit_low, the clipped Â>0 cells' share over β2 gives
unit_high, and everything else (the unclipped cells, the AdamW momentum, weight decay) is rest. Those are one step
late, and AdamW's normalisation makes the split linear in β only for a fixed second-moment estimate: the chapter
measures how much that costs. Its state (the estimates, the PI sum, the bonus coefficient) is checkpointed.
"""

from __future__ import annotations

from ..steering import BETA_CONTROLLERS, BetaBounds, EntropyBonus, PIController, check_target, needed_change, solve_betas, \
    target_at
from .config import TrainConfig

ATTRIBUTION = "entropy/param_attr/"  # the parts' metric prefix (trainer.update_phase)
_SMALLEST_BETA = 1e-6  # a phase run at β below this says nothing about that side's effect per unit β


class Steerer:
    """One run's controller. ``reference``: the configured (β1, β2), where the β controllers start from."""

    def __init__(self, config: TrainConfig, vocab: int, reference: tuple[float, float]):
        self.config = c = config
        for name in ("entropy_target", "entropy_target_final"):
            if getattr(c, name) is not None:
                check_target(name, getattr(c, name), vocab)
        self.reference = reference
        self.bounds = BetaBounds(c.beta_min, c.beta_max)
        self.pi = PIController(reference, self.bounds, c.pi_kp, c.pi_ki)
        self.bonus = EntropyBonus(0.0, c.entropy_coef_delta, c.entropy_coef_max)
        self.estimate: dict[str, float] = {}  # predictive: rest, unit_low, unit_high of the last phase
        self.betas = reference
        self.coef = 0.0

    def target(self, step: int) -> float:
        c = self.config
        return target_at(min(step, c.steps), c.steps, c.entropy_target, c.entropy_target_final)

    def before_updates(self, step: int, entropy: float) -> dict:
        """Choose this step's β (or bonus coefficient) from H(t) = ``entropy``; the metrics that record it."""
        kind, goal = self.config.beta_controller, self.target(step)
        out = {"steer/target": goal}
        if kind == "predictive":
            self.betas = self._predictive(entropy, self.target(step + 1), out)
        elif kind == "pi":
            self.betas = self.pi.betas(entropy, goal)
        elif kind == "entropy_bonus":
            self.coef = self.bonus.update(entropy, goal)
            out["steer/entropy_coef"] = self.coef
        if kind in BETA_CONTROLLERS:
            out["loss/beta1"], out["loss/beta2"] = self.betas
        return out

    def _predictive(self, entropy: float, goal_next: float, out: dict) -> tuple[float, float]:
        if not {"unit_low", "unit_high"} <= set(self.estimate):
            return self.reference  # the first step: nothing measured yet
        need = needed_change(entropy, goal_next, self.config.controller_gain)
        est = self.estimate
        betas = solve_betas(need, est["rest"], est["unit_low"], est["unit_high"], self.reference, self.bounds)
        out["steer/need"] = need
        out["steer/predicted_change"] = est["rest"] + betas[0] * est["unit_low"] + betas[1] * est["unit_high"]
        return betas

    def after_updates(self, metrics: dict) -> None:
        """Update the predictive estimates from the phase's attribution (``metrics`` of ``update_phase``)."""
        if self.config.beta_controller != "predictive" or "entropy/param_pred/trapezoid" not in metrics:
            return
        parts = {k[len(ATTRIBUTION):]: v for k, v in metrics.items() if k.startswith(ATTRIBUTION) and "_share_" not in k}
        low = sum(v for k, v in parts.items() if k.startswith("NA") and k.endswith("/clipped"))  # Â<0: below
        high = sum(v for k, v in parts.items() if k.startswith("PA") and k.endswith("/clipped"))  # Â>0: above
        self.estimate["rest"] = metrics["entropy/param_pred/trapezoid"] - low - high
        for name, share, beta in (("unit_low", low, self.betas[0]), ("unit_high", high, self.betas[1])):
            if beta > _SMALLEST_BETA:
                self.estimate[name] = share / beta
            else:
                self.estimate.setdefault(name, 0.0)  # keep the last estimate made at a β that says something

    def loss_betas(self, loss_kwargs: dict) -> dict:
        """``loss_kwargs`` with this step's β where a β controller sets them."""
        if self.config.beta_controller not in BETA_CONTROLLERS:
            return loss_kwargs
        return {**loss_kwargs, "beta1": self.betas[0], "beta2": self.betas[1]}

    def state_dict(self) -> dict:
        return {"estimate": dict(self.estimate), "integral": self.pi.integral, "coef": self.coef,
                "bonus": self.bonus.coef, "betas": list(self.betas)}

    def load_state_dict(self, state: dict) -> None:
        self.estimate = dict(state["estimate"])
        self.pi.integral, self.coef, self.bonus.coef = state["integral"], state["coef"], state["bonus"]
        self.betas = tuple(state["betas"])


__all__ = ["Steerer"]
