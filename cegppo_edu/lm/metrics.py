"""Every key the trainer writes to ``metrics.jsonl``, once: the key (or a pattern with ``<placeholders>``), what it
means, and what produces it. ``cegppo train --help`` lists it (``describe``); the book's reference section can
render ``METRICS``; ``tests/test_metrics_reference.py`` checks that every key a run with every instrument on logs
matches exactly one row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..param_entropy import FORMS
from ..token_groups import CLASSES

# What each placeholder of a pattern stands for.
PLACEHOLDERS: dict[str, tuple[str, ...]] = {
    "<class>": CLASSES,  # the PA/NA × HP/LP token classes and ZA (Â = 0), token_groups.classify
    "<side>": ("inside", "clipped"),  # inside PPO's interval, or on a side PPO zeroes
    "<form>": FORMS,  # param_entropy's three first-order predictions
    "<policy>": ("old", "current"),  # HP/LP by π_old (the paper's classification) or by the policy being stepped
    "<phase>": ("step", "generate", "reward", "old_logp", "update", "entropy_predictor", "entropy_after", "eval"),
}


@dataclass(frozen=True)
class Metric:
    key: str  # the key, or a pattern with placeholders of PLACEHOLDERS
    meaning: str  # what it is, with its formula where it has one
    producer: str  # the function or instrument that computes it

    def regex(self) -> re.Pattern:
        pattern = re.escape(self.key)
        for name, values in PLACEHOLDERS.items():
            pattern = pattern.replace(re.escape(name), "(?:" + "|".join(map(re.escape, values)) + ")")
        return re.compile(pattern + r"\Z")


ROLLOUT, UPDATE = "lm.trainer.rollout_metrics", "lm.trainer.update_metrics"
GROUPS, PREDICTOR = "lm.instruments.TokenGroupStats", "lm.instruments.EntropyPredictor"
METRICS: tuple[Metric, ...] = (
    Metric("step", "the RL step, 1-based (0: the evaluation before the first step)", "lm.trainer.Trainer.train_step"),
    Metric("reward/mean", "mean reward over the P·G sampled responses", ROLLOUT),
    Metric("accuracy/train", "share of the sampled responses graded correct (reward = reward_correct)", ROLLOUT),
    Metric("response/length_mean", "mean response length in tokens", ROLLOUT),
    Metric("response/length_max", "longest response in tokens", ROLLOUT),
    Metric("response/truncated_frac", "share of responses cut at max_new_tokens", ROLLOUT),
    Metric("groups/kept_frac", "share of the P groups kept (not zero-variance, within max_kept_prompts)", ROLLOUT),
    Metric("responses/kept", "responses the update phase learns from", ROLLOUT),
    Metric("entropy/mean", "H(t): token-mean entropy of the kept responses under π_old (all responses if none kept)",
           "lm.trainer.Trainer.old_logps"),
    Metric("update/tokens", "response tokens in the update phase", "lm.trainer.Trainer.old_logps"),
    Metric("loss", "mean over the optimizer steps of the mini-batch loss (objective, bonuses subtracted)", UPDATE),
    Metric("grad_norm/mean", "mean gradient norm before clipping over the finite optimizer steps", UPDATE),
    Metric("grad_norm/max", "largest finite gradient norm before clipping", UPDATE),
    Metric("update/optimizer_steps", "optimizer steps tried: update_epochs × mini_batches (fewer with fewer rows)",
           UPDATE),
    Metric("update/skipped_steps", "optimizer steps skipped for a non-finite gradient norm", UPDATE),
    Metric("lr", "the learning rate after this step's schedule step", "lm.trainer.Trainer.end_update_phase"),
    Metric("eval/accuracy", "held-out avg@eval_samples accuracy (fixed seed)", "lm.trainer.Trainer.evaluate"),
    Metric("eval/length_mean", "mean held-out response length in tokens", "lm.trainer.Trainer.evaluate"),
    Metric("time/<phase>", "wall-clock seconds of a phase of the step (the only keys two identical runs differ in)",
           "lm.trainer.Timer"),
    Metric("tokens", "valid response tokens the token-group statistics counted", GROUPS),
    Metric("clip/low_frac", "share of tokens with Â < 0 and r < 1 − ε_low (PPO's lower clipped side)", GROUPS),
    Metric("clip/high_frac", "share of tokens with Â > 0 and r > 1 + ε_high (PPO's upper clipped side)", GROUPS),
    Metric("<class>/count", "tokens of the class (HP/LP by the current policy, threshold hp_threshold)", GROUPS),
    Metric("<class>/frac", "<class>/count / tokens", GROUPS),
    Metric("<class>/mean_prob", "mean π_θ of the class's tokens", GROUPS),
    Metric("<class>/clip_low_frac", "share of the class's tokens on PPO's lower clipped side", GROUPS),
    Metric("<class>/clip_high_frac", "share of the class's tokens on PPO's upper clipped side", GROUPS),
    Metric("<class>/clipped", "clipped tokens of the class: count × (clip_low_frac + clip_high_frac)", GROUPS),
    Metric("<class>/weight_sum", "Σ |F·Â| over the class: the size of its coefficient on ∇log π (token-level "
           "methods only)", GROUPS),
    Metric("<class>/entropy_push", "Σ −F·Â·I over the class, I the entropy influence: its first-order push on H",
           GROUPS),
    Metric("entropy/predicted_push", "Σ over the classes of entropy_push / tokens", GROUPS),
    Metric("entropy/after_update", "token-mean entropy of the same responses after the update phase",
           "lm.instruments.EntropyRemeasure"),
    Metric("entropy/measured_change", "entropy/after_update − entropy/mean", "lm.instruments.EntropyRemeasure"),
    Metric("entropy/param_pred/<form>", "first-order ΔH̄ of the phase in parameter space: Σ_k ∇θH̄·Δθ_k with the "
           "gradient before each step (step), their mean with the one after (trapezoid), or the phase's first "
           "(phase)", PREDICTOR),
    Metric("entropy/param_pred/measured", "H̄ after − H̄ before the phase, measured as the predictor measures H̄",
           PREDICTOR),
    Metric("entropy/param_attr/<class>/<side>", "the trapezoid prediction's share from the gradient of the class's "
           "tokens inside or on PPO's clipped side (entropy_attribution)", PREDICTOR),
    Metric("entropy/param_attr/momentum", "the share from AdamW's carried momentum", PREDICTOR),
    Metric("entropy/param_attr/weight_decay", "the share from AdamW's weight decay", PREDICTOR),
    Metric("entropy/param_attr/clipped_lp_share_<policy>", "share of the phase's clipped token-updates that are LP "
           "by π_old (old) or by the policy being stepped (current)", PREDICTOR),
    Metric("loss/beta1", "β1 of this step (β schedule or β controller)", "lm.instruments.BetaSchedule, lm.steer"),
    Metric("loss/beta2", "β2 of this step (β schedule or β controller)", "lm.instruments.BetaSchedule, lm.steer"),
    Metric("steer/target", "H*(t), the entropy target of this step", "lm.steer.Steerer.before_updates"),
    Metric("steer/need", "the entropy change the predictive controller asks of this phase", "lm.steer.Steerer"),
    Metric("steer/predicted_change", "rest + β1·unit_low + β2·unit_high at the chosen β (one step late)",
           "lm.steer.Steerer"),
    Metric("steer/entropy_coef", "c of the entropy bonus −c·H̄ in this step's loss", "lm.steer.Steerer"),
)


def rows_for(key: str) -> list[Metric]:
    """The rows of ``METRICS`` whose key or pattern matches ``key``."""
    return [m for m in METRICS if m.regex().match(key)]


def describe(width: int = 36) -> str:
    """The table as plain text, one row a line (for ``cegppo train --help``)."""
    return "\n".join(f"  {m.key:{width}s} {m.meaning}" for m in METRICS)


__all__ = ["METRICS", "Metric", "PLACEHOLDERS", "describe", "rows_for"]
