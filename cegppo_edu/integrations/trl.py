"""CE-GPPO inside TRL's ``GRPOTrainer`` (pinned to TRL 1.16.0), everything else of TRL untouched.

    from cegppo_edu.integrations.trl import CEGPPOConfig, CEGPPOTrainer

    args = CEGPPOConfig(output_dir="out", beta1=0.5, beta2=1.0, epsilon=0.2, epsilon_high=0.2)
    trainer = CEGPPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=dataset)
    trainer.train()

``CEGPPOConfig`` is TRL's ``GRPOConfig`` plus β1 and β2; ``CEGPPOTrainer`` is ``GRPOTrainer`` with CE-GPPO's
per-token loss (arXiv:2509.20712 v2, eq. 5) in place of PPO-clip's. The formula is not repeated here: it is
``cegppo_edu.losses.ce_gppo_per_token``, the one implementation the book tests. TRL keeps its generation (also in
vLLM mode), its normalisation and gradient accumulation, its importance-sampling correction, KL term, entropy
bonus and entropy mask, its logging, checkpoints and PEFT.

The seam. TRL 1.16's ``GRPOTrainer._compute_loss`` is one method of about 270 lines: the forward pass, then the
per-token loss chosen by an ``if/elif`` on ``loss_type`` (no registry to add a loss to), then masks, the KL term,
the normalisation of ``loss_type``, the entropy bonus and the metrics. Three ways to change the loss:

1. copy the method and edit its loss line: 270 lines of TRL's code to keep in step with every release;
2. run TRL's loss unchanged and add a correction term: the correction would need TRL's normaliser, masks and
   importance-sampling weights re-derived here, a second copy of TRL's logic;
3. change the one input of TRL's loss line that TRL lets subclasses shape: the advantages (the method accepts
   one advantage per token, (B, T), for subclasses, besides its own (B,)).

This module takes the third. TRL's clip branch (``loss_type`` dapo, grpo, bnpo, dr_grpo) computes PPO-clip's
per-token loss −min(r·Â', clip(r)·Â'). CE-GPPO's per-token loss equals PPO-clip's on every token PPO does not clip.
On a clipped token PPO's loss is the constant −(1±ε)·Â; multiplying Â there by CE-GPPO's per-token loss over
PPO's (both from ``cegppo_edu.losses``; the quotient is β·(1±ε)·r/sg(r) over (1±ε), which carries the gradient)
makes TRL's line return CE-GPPO's loss, value and gradient (``ppo_line_advantages``). The advantages are set
after TRL's forward pass of the loss (``_get_per_token_logps_and_entropies``, which returns the log-probs they
need) and before TRL's loss line reads them, in a copy of the batch (TRL reuses its batch when
``num_iterations`` > 1). Every later step of TRL's method runs as written: the importance-sampling weights, the
entropy and off-policy masks multiply the per-token loss, the KL term and the entropy bonus are added to it, the
normalisation divides it, so each acts on CE-GPPO's loss as it acts on PPO's.

The pin. The seam relies on the order of statements inside ``_compute_loss``, so the module checks the installed
method's source against a SHA-256 fingerprint of TRL 1.16.0's (``check_trl``, run on import and when a trainer
is made) and refuses any other with a message saying what to do. ``tests_trl/`` runs TRL's real trainer on a CPU:
the per-token gradient equals ``cegppo_edu.losses.ce_gppo``'s, β = 0 gives TRL's ``dapo`` gradient, a resume.

Caveats. ``importance_sampling_level`` must be "token" (CE-GPPO clips per token). With β1 = 0 (or β2 = 0) the
clipped tokens of that side get Â' = 0, so TRL's ``clip_ratio/low_*`` (``high_*``) metrics, which count tokens by
the sign of Â', do not count them; the gradient and loss are still CE-GPPO's (TRL's off-policy mask reads that
sign too, per token: it can only differ from Â's where the loss is 0). ``delta`` (TRL's two-sided clip)
is the dual clip c of the paper's Â < 0 tokens only when c > 1 + ε_h; smaller values are refused.
"""

from __future__ import annotations

import hashlib
import inspect
import warnings
from dataclasses import dataclass, field

import torch
import trl
from trl import GRPOConfig, GRPOTrainer

from cegppo_edu.losses import (METHODS, ce_gppo_per_token, clipped_sides, get_method, ppo_clip_per_token,
                               ratio_from_logps)

TRL_VERSION = "1.16.0"  # the release this module is written and tested against (tests_trl/, the `trl` extra)
# SHA-256 of inspect.getsource(GRPOTrainer._compute_loss) in TRL 1.16.0: the method whose statement order the seam
# relies on (the forward pass before the advantages are read; the clip branch's PPO line).
COMPUTE_LOSS_SHA256 = "80295546bbdbf6f711acce7f6e69b0100ab40aa8f23ed8052cc564ff024e3e40"
# TRL's loss types that share the PPO-clip line, each with its own normalisation: dapo = token-mean over the
# generation batch (the paper's), grpo = mean over responses of their token means, bnpo = token-mean of the local
# micro-batch, dr_grpo = token sum over a constant.
NORMALISATIONS = ("dapo", "grpo", "bnpo", "dr_grpo")
_CE_GPPO = METHODS["ce_gppo"].defaults
# Our names -> TRL's config fields, so that an error names the field to change.
TRL_FIELDS = {"eps_low": "epsilon", "eps_high": "epsilon_high", "dual_clip": "delta"}


def compute_loss_fingerprint(trainer_class=GRPOTrainer) -> str:
    """SHA-256 of the source of ``trainer_class._compute_loss``."""
    return hashlib.sha256(inspect.getsource(trainer_class._compute_loss).encode()).hexdigest()


def check_trl(trainer_class=GRPOTrainer, version: str | None = None) -> None:
    """``RuntimeError`` unless ``trainer_class._compute_loss`` is TRL 1.16.0's, statement for statement."""
    version = trl.__version__ if version is None else version
    if compute_loss_fingerprint(trainer_class) != COMPUTE_LOSS_SHA256:
        raise RuntimeError(
            f"cegppo_edu.integrations.trl is written against TRL {TRL_VERSION}; the installed TRL {version} has "
            f"another GRPOTrainer._compute_loss (its source's SHA-256 differs from COMPUTE_LOSS_SHA256). Install "
            f"trl=={TRL_VERSION} (pip install 'cegppo-edu[trl]'), or check the seam in this module's docstring "
            f"against the new method, run tests_trl/, and update TRL_VERSION and COMPUTE_LOSS_SHA256.")


check_trl()


def ppo_line_advantages(logp, old_logp, adv, *, eps_low, eps_high, beta1, beta2, dual_clip=None):
    """Â' (B, T) such that PPO-clip's per-token loss at Â' equals CE-GPPO's at Â, in value and gradient.

    ``logp`` (B, T) with its graph, ``old_logp`` (B, T), ``adv`` (B, T). Â' = Â on the tokens PPO does not clip
    (there the two losses are one function); on a clipped token Â' = Â·ℓ_CE/ℓ_PPO, where ℓ_PPO = −(1±ε)·Â is a
    constant and ℓ_CE = −β·(1±ε)·Â·r/sg(r), so that −(1±ε)·Â' = ℓ_CE.
    """
    hyper = dict(eps_low=eps_low, eps_high=eps_high, dual_clip=dual_clip)
    lower, upper = clipped_sides(ratio_from_logps(logp, old_logp).detach(), adv, eps_low, eps_high)
    clipped = lower | upper  # (B, T); Â ≠ 0 there, so ℓ_PPO ≠ 0
    ce = ce_gppo_per_token(logp, old_logp, adv, beta1=beta1, beta2=beta2, **hyper)
    ppo = ppo_clip_per_token(logp, old_logp, adv, **hyper)
    # The quotient is taken where ℓ_PPO = 1 off the clipped tokens: a 0/0 there would put NaN into the gradient.
    return torch.where(clipped, adv * ce / torch.where(clipped, ppo, torch.ones_like(ppo)), adv)


def check_ranges(eps_low, eps_high, beta1, beta2, dual_clip=None) -> dict:
    """CE-GPPO's ranges (``cegppo_edu.losses.METHODS["ce_gppo"]``), the error naming TRL's field; the values."""
    try:
        return get_method("ce_gppo").resolve(eps_low=eps_low, eps_high=eps_high, beta1=beta1, beta2=beta2,
                                             dual_clip=dual_clip)
    except ValueError as error:
        name = str(error).split("=", 1)[0]
        raise ValueError(f"CEGPPOConfig.{TRL_FIELDS.get(name, name)}: {error}") from None


@dataclass
class CEGPPOConfig(GRPOConfig):
    """TRL's ``GRPOConfig`` plus CE-GPPO's β; ``__post_init__`` refuses bad values, naming the field.

    - ``beta1``: β1 ≥ 0, the weight of the gradient kept on tokens with r < 1 − ε_l and Â < 0 (default 0.5, the
      authors' 1.5B value; 0.75 for 7B). TRL's own ``beta`` is the KL coefficient, a different thing (keep 0, as
      the paper).
    - ``beta2``: β2 ≥ 0, the same for r > 1 + ε_h and Â > 0 (default 1.0).
    - ``epsilon`` / ``epsilon_high``: ε_l and ε_h (TRL's fields; ε_h defaults to ε_l). ``delta``: the dual clip c
      (None: off), above 1 + ε_h.
    - ``loss_type``: only TRL's normalisation here (see ``NORMALISATIONS``); the default "dapo" is the paper's
      token-mean.
    """

    beta1: float = field(default=_CE_GPPO["beta1"], metadata={"help": "CE-GPPO β1 (lower side, Â < 0), ≥ 0"})
    beta2: float = field(default=_CE_GPPO["beta2"], metadata={"help": "CE-GPPO β2 (upper side, Â > 0), ≥ 0"})

    def __post_init__(self):
        super().__post_init__()
        if self.loss_type not in NORMALISATIONS:
            raise ValueError(f"CEGPPOConfig.loss_type={self.loss_type!r} is not allowed; choose one of "
                             f"{', '.join(NORMALISATIONS)} (TRL's normalisations of its clip branch; dapo is the "
                             f"paper's token-mean)")
        if self.importance_sampling_level != "token":
            raise ValueError(f"CEGPPOConfig.importance_sampling_level={self.importance_sampling_level!r} is not "
                             f"allowed; CE-GPPO clips each token's ratio: choose 'token'")
        hyper = self.cegppo_hyper()
        if hyper["dual_clip"] is not None and not hyper["dual_clip"] > 1 + hyper["eps_high"]:
            raise ValueError(f"CEGPPOConfig.delta={self.delta!r} is outside the allowed range "
                             f"({1 + hyper['eps_high']}, inf) (above 1 + epsilon_high) or None")
        # TRL's defaults take one optimizer step per generation batch: every ratio is then 1 (the scoreboard's P12)
        if self.num_iterations == 1 and self.steps_per_generation <= self.gradient_accumulation_steps:
            warnings.warn(
                f"CEGPPOConfig: every optimizer step is on policy (num_iterations=1, steps_per_generation="
                f"{self.steps_per_generation} <= gradient_accumulation_steps={self.gradient_accumulation_steps}), so "
                f"r = 1 on every token, none is clipped and beta1, beta2 change nothing (CE-GPPO is PPO-clip there). "
                f"Set steps_per_generation to several times gradient_accumulation_steps (the paper: up to 8 optimizer "
                f"steps per generation batch) or num_iterations > 1.", UserWarning, stacklevel=3)

    def cegppo_hyper(self) -> dict:
        """ε_l, ε_h, β1, β2 and the dual clip c, validated."""
        eps_high = self.epsilon if self.epsilon_high is None else self.epsilon_high  # TRL's rule
        return check_ranges(self.epsilon, eps_high, self.beta1, self.beta2, self.delta)


class CEGPPOTrainer(GRPOTrainer):
    """TRL's ``GRPOTrainer`` with CE-GPPO's per-token loss; takes a ``CEGPPOConfig`` as ``args``."""

    def __init__(self, model, reward_funcs, args: CEGPPOConfig | None = None, *more, **kwargs):
        check_trl()
        if not isinstance(args, CEGPPOConfig):  # before TRL's set-up, which may load a model
            raise TypeError(f"args must be a CEGPPOConfig (TRL's GRPOConfig plus beta1, beta2), got "
                            f"{type(args).__name__}")
        super().__init__(model, reward_funcs, args, *more, **kwargs)
        self._hyper = self.args.cegppo_hyper()  # ε_l, ε_h, β1, β2, c, checked once
        self._loss_batch = None  # the batch of the loss in flight, while TRL's _compute_loss runs

    def _compute_loss(self, model, inputs):
        self._loss_batch = dict(inputs)  # a copy: TRL reads its buffered batch again when num_iterations > 1
        try:
            return super()._compute_loss(model, self._loss_batch)
        finally:
            self._loss_batch = None

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        logps, entropies, aux_loss = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        batch, self._loss_batch = self._loss_batch, None  # the first call inside _compute_loss is its forward pass
        if batch is not None:
            batch["advantages"] = self.cegppo_advantages(logps, batch)
        return logps, entropies, aux_loss

    def cegppo_advantages(self, logps, batch) -> torch.Tensor:
        """The (B, T) advantages TRL's loss line reads (``ppo_line_advantages``) for the log-probs ``logps``."""
        old = batch.get("old_per_token_logps")
        old = logps.detach() if old is None else old  # TRL's rule: on policy, no old log-probs are stored
        adv = batch["advantages"]
        adv = (adv.unsqueeze(1) if adv.dim() == 1 else adv).expand_as(logps)  # (B,) -> (B, T)
        return ppo_line_advantages(logps, old, adv, **self._hyper)


__all__ = ["COMPUTE_LOSS_SHA256", "CEGPPOConfig", "CEGPPOTrainer", "NORMALISATIONS", "TRL_VERSION", "check_ranges",
           "check_trl", "compute_loss_fingerprint", "ppo_line_advantages"]
