"""The optional instruments of the RL step, each attached to the core step of ``lm.trainer`` through named hooks.

The core step (``Trainer.train_step`` → ``update_phase`` → ``optimizer_step``) is the data flow of DESIGN.md and
nothing else. Everything optional attaches at one of these named points, called on every instrument in order:

    step_start(step, hyper)            -> (hyper, metrics)   β schedule: this step's β(t)
    phase_start(phase, hyper)          -> (hyper, metrics)   steering: β or the bonus coefficient from H(t)
    before_optimizer_step(phase)                             predictor: θ_k, H̄ and ∇θH̄ there
    loss_bonus(micro)                  -> tensor | None      entropy bonus c·H̄, NLL of correct responses (subtracted)
    before_backward(loss, micro)                             attribution's per-cell gradients, token-group stats
    after_optimizer_step(phase, norm)                        predictor: θ_{k+1} (and the step's parts)
    phase_end(phase, metrics)          -> metrics            predictor, steering's estimate, merged stats, entropy
                                                             re-measure

An instrument only reads the model, or adds a term to the loss that its config asks for: with every instrument off
(``build`` returns none), the step is the bare RL step that ``teaching.lm_rl_step`` spells out.
The loss hyper-parameters (``hyper``: ε, β, ...) are returned by the hooks that choose them and passed down, never
stored on the trainer.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ..losses import clipped_sides, get_method, ratio_from_logps, reference_clip
from ..param_entropy import PhasePredictor, adamw_step_parts
from ..token_groups import CLASSES, classify, group_stats, merge_group_stats
from .batching import Batch, collate_shared, entropy_with_shared_prompts, response_entropy_sum
from .config import step_loss_kwargs
from .steer import Steerer

if TYPE_CHECKING:  # the trainer builds the instruments and hands itself in; no import cycle at run time
    from .trainer import Response, Timer, Trainer


@dataclass
class Phase:
    """One update phase as its hooks see it: the step, the kept rows, H(t) before the phase, the step's timer."""

    step: int
    rows: list["Response"]
    entropy_before: float
    timer: "Timer"


@dataclass
class MicroBatch:
    """One micro-batch of an optimizer step as its hooks see it. ``logp`` still carries its graph."""

    rows: list["Response"]  # the micro-batch's rows
    mini: list["Response"]  # the rows of the whole mini-batch (one optimizer step)
    batch: Batch
    logp: torch.Tensor  # (b, R) log π_θ of the response tokens, with gradient
    old: torch.Tensor  # (b, R) log π_old
    adv: torch.Tensor  # (b,) Â
    influence: torch.Tensor | None  # (b, R) entropy influence, when an instrument asked for it
    hyper: dict  # the loss's hyper-parameters this step

    @property
    def mini_tokens(self) -> int:
        return sum(len(r.response) for r in self.mini)


class Instrument:
    """An optional part of the RL step. Each hook does nothing here; an instrument overrides the ones it needs."""

    wants_influence = False  # the token-group stats need each token's entropy influence from the forward pass

    def step_start(self, step: int, hyper: dict) -> tuple[dict, dict]:
        return hyper, {}

    def phase_start(self, phase: Phase, hyper: dict) -> tuple[dict, dict]:
        return hyper, {}

    def before_optimizer_step(self, phase: Phase) -> None:
        pass

    def loss_bonus(self, micro: MicroBatch) -> torch.Tensor | None:
        return None

    def before_backward(self, loss: torch.Tensor, micro: MicroBatch) -> None:
        pass

    def after_optimizer_step(self, phase: Phase, norm: float) -> None:
        pass

    def phase_end(self, phase: Phase, metrics: dict) -> dict:
        return {}


class Hooks:
    """The instruments of one run, called in order at each named point (the module docstring lists them)."""

    def __init__(self, instruments: list[Instrument]):
        self.instruments = instruments
        self.wants_influence = any(i.wants_influence for i in instruments)

    def step_start(self, step: int, hyper: dict) -> tuple[dict, dict]:
        metrics = {}
        for inst in self.instruments:
            hyper, more = inst.step_start(step, hyper)
            metrics.update(more)
        return hyper, metrics

    def phase_start(self, phase: Phase, hyper: dict) -> tuple[dict, dict]:
        metrics = {}
        for inst in self.instruments:
            hyper, more = inst.phase_start(phase, hyper)
            metrics.update(more)
        return hyper, metrics

    def before_optimizer_step(self, phase: Phase) -> None:
        for inst in self.instruments:
            inst.before_optimizer_step(phase)

    def add_bonuses(self, loss: torch.Tensor, micro: MicroBatch) -> torch.Tensor:
        """``loss`` minus each instrument's bonus, one after another (in this order the run's numbers were made)."""
        for inst in self.instruments:
            bonus = inst.loss_bonus(micro)
            if bonus is not None:
                loss = loss - bonus
        return loss

    def before_backward(self, loss: torch.Tensor, micro: MicroBatch) -> None:
        for inst in self.instruments:
            inst.before_backward(loss, micro)

    def after_optimizer_step(self, phase: Phase, norm: float) -> None:
        for inst in self.instruments:
            inst.after_optimizer_step(phase, norm)

    def phase_end(self, phase: Phase, metrics: dict) -> dict:
        """Each instrument's metrics, each seeing those of the instruments before it (steering reads the
        predictor's)."""
        out = {}
        for inst in self.instruments:
            out.update(inst.phase_end(phase, {**metrics, **out}))
        return out


def build(trainer: "Trainer") -> Hooks:
    """The instruments the trainer's config switches on, in the order their hooks run."""
    c = trainer.config
    chosen: list[Instrument] = []
    if c.beta_schedule != "constant":
        chosen.append(BetaSchedule(c))
    if c.entropy_predictor_every:
        chosen.append(EntropyPredictor(trainer))
    if trainer.steerer:
        chosen.append(Steering(trainer))
    if c.nll_coef:
        chosen.append(NLLTerm(c.nll_coef))
    if c.token_group_stats:
        chosen.append(TokenGroupStats(c))
    if c.measure_entropy_change:
        chosen.append(EntropyRemeasure(trainer))
    return Hooks(chosen)


# -------------------------------------------------------------------- the instruments
class BetaSchedule(Instrument):
    """CE-GPPO's β1, β2 of this step where ``beta_schedule`` moves them (``schedules.scheduled``); logged."""

    def __init__(self, config):
        self.config = config

    def step_start(self, step, hyper):
        hyper = {**hyper, **{k: v for k, v in step_loss_kwargs(self.config, step).items() if k in ("beta1", "beta2")}}
        return hyper, {f"loss/{name}": hyper[name] for name in ("beta1", "beta2")}


class Steering(Instrument):
    """Chapter 7's controller (``lm.steer.Steerer``): before the first optimizer step it picks β (``predictive``,
    ``pi``) or the entropy bonus's coefficient c from H(t); the bonus −c·H̄ enters the loss, token-mean over the
    mini-batch; after the phase the predictive controller reads the phase's attribution."""

    def __init__(self, trainer: "Trainer"):
        self.trainer, self.steerer = trainer, trainer.steerer

    def phase_start(self, phase, hyper):
        metrics = self.steerer.before_updates(phase.step, phase.entropy_before)
        return self.steerer.loss_betas(hyper), metrics

    def loss_bonus(self, micro):
        if not self.steerer.coef:
            return None
        t, c = self.trainer, self.trainer.config
        return self.steerer.coef * response_entropy_sum(t.model, micro.batch, chunk_size=c.logp_chunk,
                                                        autocast_dtype=t.autocast,
                                                        temperature=c.temperature) / micro.mini_tokens

    def phase_end(self, phase, metrics):
        self.steerer.after_updates(metrics)
        return {}


class NLLTerm(Instrument):
    """The authors' NLL term on correct responses: c · (token-sum of log π over the correct rows) / (their tokens
    in the mini-batch), maximised beside the objective (``nll_coef``)."""

    def __init__(self, coef: float):
        self.coef = coef

    def loss_bonus(self, micro):
        total_correct = sum(len(r.response) for r in micro.mini if r.correct)
        if not total_correct:
            return None
        logp = micro.logp
        correct = torch.tensor([r.correct for r in micro.rows], dtype=logp.dtype, device=logp.device)
        return self.coef * (logp * micro.batch.mask * correct[:, None]).sum() / total_correct


class TokenGroupStats(Instrument):
    """Counts, clip fractions, weights and entropy pushes per PA/NA × HP/LP class (``token_groups``), summed over
    the phase's micro-batches; ``entropy/predicted_push`` is their token-mean push."""

    wants_influence = True

    def __init__(self, config):
        self.config, self.stats = config, []

    def phase_start(self, phase, hyper):
        self.stats = []
        return hyper, {}

    def before_backward(self, loss, micro):
        self.stats.append(self.micro_batch_stats(micro))

    def micro_batch_stats(self, micro: MicroBatch) -> dict:
        c = self.config
        logp, old, adv, mask = micro.logp.detach(), micro.old, micro.adv, micro.batch.mask
        hyper = {k: v for k, v in micro.hyper.items() if k != "agg"}
        if get_method(c.method).level == "token":
            return group_stats(logp, old, adv, mask, method=c.method, threshold=c.hp_threshold,
                               influence=micro.influence, **hyper)
        # A sequence- or batch-level method (GSPO, Clip-Cov, KL-Cov) has no per-token weight F(r, Â): counts and
        # PPO-style clip fractions of token ratios only.
        eps_low, eps_high = reference_clip(hyper)
        stats = group_stats(logp, old, adv, mask, method="ppo_clip", threshold=c.hp_threshold, eps_low=eps_low,
                            eps_high=eps_high)
        return {k: v for k, v in stats.items() if not k.endswith("/weight_sum")}

    def phase_end(self, phase, metrics):
        if not self.stats:
            return {}
        out = merge_group_stats(self.stats)
        out["entropy/predicted_push"] = sum(out.get(f"{k}/entropy_push", 0.0) for k in CLASSES) / max(
            out["tokens"], 1.0)
        return out


class EntropyRemeasure(Instrument):
    """The token-mean entropy of the phase's rows under the updated policy (a metric only), each prompt run once
    for its G responses (``batching.entropy_with_shared_prompts``): ``entropy/after_update``,
    ``entropy/measured_change``."""

    def __init__(self, trainer: "Trainer"):
        self.trainer = trainer

    def phase_end(self, phase, metrics):
        with phase.timer("entropy_after"):
            after = self.entropy_after_update(phase.rows)
        return {"entropy/after_update": after, "entropy/measured_change": after - phase.entropy_before}

    @torch.no_grad()
    def entropy_after_update(self, rows) -> float:
        t = self.trainer
        was_training = t.model.training
        t.model.eval()
        ent_sum, n_tok = 0.0, 0.0
        for _, batch in t.micro_batches(rows, range(len(rows)), layout=collate_shared):
            entropy = entropy_with_shared_prompts(t.model, batch, chunk_size=t.config.logp_chunk,
                                                  autocast_dtype=t.autocast, temperature=t.config.temperature)
            ent_sum += (entropy * batch.mask).sum().item()
            n_tok += batch.mask.sum().item()
        t.model.train(was_training)
        return ent_sum / n_tok


@dataclass
class CellSplit:
    """One optimizer step's gradient split by token cell: per cell the summed gradient of its tokens' part of the
    loss and counts of the clipped tokens (all, LP by π_old, LP by the current policy)."""

    grads: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    counts: collections.Counter = field(default_factory=collections.Counter)


class EntropyPredictor(Instrument):
    """The parameter-space prediction ∇θH̄·Δθ of the phase's entropy change (``param_entropy``), on the steps
    ``entropy_predictor_every`` picks: H̄ and ∇θH̄ of the phase's rows before and after every optimizer step
    (K + 1 extra forward/backward passes). With ``entropy_attribution`` each step is split by token cell
    (``token_cell_gradients``), AdamW's carried momentum and weight decay (``param_entropy.adamw_step_parts``)."""

    def __init__(self, trainer: "Trainer"):
        self.trainer, self.config = trainer, trainer.config
        self.predictor: PhasePredictor | None = None
        self.split: CellSplit | None = None
        self.clipped_counts: collections.Counter = collections.Counter()

    def phase_start(self, phase, hyper):
        every = self.config.entropy_predictor_every
        self.predictor = None if phase.step % every else PhasePredictor(
            self.params(), lambda: self.entropy_and_gradient(phase.rows))
        self.clipped_counts = collections.Counter()
        return hyper, {}

    def params(self) -> list[torch.Tensor]:
        return [p for p in self.trainer.model.parameters() if p.requires_grad]

    def before_optimizer_step(self, phase):
        if self.predictor:
            with phase.timer("entropy_predictor"):
                self.predictor.before_step()
            self.split = CellSplit() if self.config.entropy_attribution else None

    def before_backward(self, loss, micro):
        if self.predictor and self.split is not None:
            self.token_cell_gradients(loss, micro)

    def after_optimizer_step(self, phase, norm):
        if not self.predictor:
            return
        with phase.timer("entropy_predictor"):
            self.predictor.after_step(self.step_parts(norm))

    def step_parts(self, norm: float):
        """The optimizer step just taken split by token cell, momentum and weight decay; None without attribution
        or when the step was skipped (a non-finite norm)."""
        if self.split is None or not torch.isfinite(torch.tensor(norm)):
            return None
        scale = min(1.0, self.config.max_grad_norm / (norm + 1e-6))  # torch's clip_grad_norm_ factor, at most 1
        self.clipped_counts.update(self.split.counts)
        return adamw_step_parts(self.trainer.optimizer, self.predictor.params, self.predictor.theta, self.split.grads,
                                scale)

    def phase_end(self, phase, metrics):
        if not self.predictor:
            return {}
        out = self.predictor.result().as_metrics("entropy/param_pred", "entropy/param_attr")
        out.update(clipped_lp_shares(self.clipped_counts))
        return out

    def entropy_and_gradient(self, rows) -> tuple[float, list[torch.Tensor]]:
        """H̄, the token-mean entropy of the rows (eval mode, as ``Trainer.old_logps`` measures it), and ∇θH̄ for
        the parameters that train, micro-batch by micro-batch (one graph at a time; ``p.grad`` is left alone)."""
        t, params = self.trainer, self.params()
        total = sum(len(r.response) for r in rows)
        value, grads = 0.0, [torch.zeros_like(p) for p in params]
        was_training = t.model.training
        t.model.eval()
        for _, batch in t.micro_batches(rows, range(len(rows))):
            h = response_entropy_sum(t.model, batch, chunk_size=t.config.logp_chunk,
                                     autocast_dtype=t.autocast, temperature=t.config.temperature) / total
            for g, d in zip(grads, torch.autograd.grad(h, params, allow_unused=True)):
                if d is not None:
                    g += d
            value += h.item()
        t.model.train(was_training)
        return value, grads

    def token_cell_gradients(self, loss: torch.Tensor, micro: MicroBatch) -> None:
        """Add to the step's split the gradient of each token cell's part of ``loss``: the cells are the token
        classes (HP/LP by π_old, as the paper classifies, or by the current policy with ``entropy_attribution_by``)
        × inside / clipped (PPO's zeroed sides). The loss is linear in each token's log-prob through
        d loss / d logp, so the parts sum to the loss's gradient. Also counts the clipped tokens that are LP by
        π_old and by the current policy (they differ once a token has moved)."""
        split, params = self.split, self.params()
        logp, old, adv, mask = micro.logp, micro.old, micro.adv, micro.batch.mask
        coef = torch.autograd.grad(loss, logp, retain_graph=True)[0].detach()  # (b, R) d loss / d logp
        ratio = ratio_from_logps(logp.detach(), old)
        lower, upper = clipped_sides(ratio, adv[:, None], *reference_clip(micro.hyper))
        clipped = (lower | upper) & (mask > 0)
        old_prob, threshold = old.exp(), self.config.hp_threshold
        by_current = self.config.entropy_attribution_by == "current"
        cell = classify(logp.detach().exp() if by_current else old_prob, adv, threshold)  # (b, R) into CLASSES
        split.counts.update({"clipped": int(clipped.sum()),
                             "lp_old": int((clipped & (old_prob < threshold)).sum()),
                             "lp_current": int((clipped & (logp.detach().exp() < threshold)).sum())})
        for k, name in enumerate(CLASSES):
            for side, keep in (("inside", ~clipped), ("clipped", clipped)):
                select = (cell == k) & keep & (mask > 0)
                total = split.grads.setdefault(f"{name}/{side}", [torch.zeros_like(p) for p in params])
                if not (select & (coef != 0)).any():
                    continue  # no token of this cell carries gradient here (its share stays 0): no backward pass
                grads = torch.autograd.grad((coef * logp * select).sum(), params, retain_graph=True,
                                            allow_unused=True)
                for total_g, g in zip(total, grads):
                    if g is not None:
                        total_g += g


def clipped_lp_shares(counts: collections.Counter) -> dict:
    """The share of clipped token-updates that are LP by π_old (the paper's classification) and by the current
    policy, over an attributed phase; {} without attribution or clipped tokens."""
    if not counts.get("clipped"):
        return {}
    return {f"entropy/param_attr/clipped_lp_share_{key}": counts[f"lp_{key}"] / counts["clipped"]
            for key in ("old", "current")}


__all__ = ["BetaSchedule", "EntropyPredictor", "EntropyRemeasure", "Hooks", "Instrument", "MicroBatch", "NLLTerm",
           "Phase", "Steering", "TokenGroupStats", "build", "clipped_lp_shares"]
