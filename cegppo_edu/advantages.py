"""Group-relative advantages (GRPO) and the zero-variance filter (DAPO's dynamic sampling).

Rewards come as one flat vector of ``B = n_prompts × G`` responses, the G responses of a prompt
contiguous: ``rewards.view(n_prompts, G)``.
"""

from __future__ import annotations

import torch

from .validation import Range

STD_EPS = 1e-6  # the paper in brief §1: Â = (R − mean) / (std + 1e-6)


def _grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    if rewards.dim() != 1:
        raise ValueError(f"rewards must have shape (B,), got {tuple(rewards.shape)}")
    Range(2, integer=True, note="group advantages need 2 responses").check("group_size", group_size)
    if rewards.numel() % group_size:
        raise ValueError(f"rewards has {rewards.numel()} entries, not a multiple of group_size={group_size}")
    if not torch.isfinite(rewards).all():
        raise ValueError("rewards contains non-finite values (inf or NaN)")
    return rewards.float().view(-1, group_size)  # (n_prompts, G)


def group_advantages(rewards: torch.Tensor, group_size: int, scale_by_std: bool = True) -> torch.Tensor:
    """Â_i = (R_i − mean_group R) / (std_group R + 1e-6), one value per response. ``(B,) -> (B,)``.

    ``scale_by_std=False`` gives Dr. GRPO's advantage (arXiv:2503.20783), R_i − mean_group R.
    The std is the unbiased sample std (``torch.std``), as in verl, which the authors' code is built on.
    A group whose rewards are all equal gets Â = 0 for every response: it carries no signal.
    """
    grouped = _grouped(rewards, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale_by_std:
        centred = centred / (grouped.std(dim=1, keepdim=True) + STD_EPS)
    return centred.reshape(-1)


def zero_variance_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """True for every response whose group's rewards are all equal (DAPO drops these). ``(B,) -> (B,) bool``."""
    grouped = _grouped(rewards, group_size)
    same = (grouped == grouped[:, :1]).all(dim=1, keepdim=True)  # (n_prompts, 1)
    return same.expand_as(grouped).reshape(-1)
