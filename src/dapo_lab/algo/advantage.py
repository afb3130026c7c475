"""Advantage estimators: GRPO's group normalisation (DAPO keeps it) and Dr. GRPO's unscaled variant."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dapo_lab.algo import functional as F


@dataclass(frozen=True)
class GroupAdvantage:
    """``Â_i = (R_i − mean_g R) / (std_g R + eps)`` (DAPO Eq. 9); ``scale_std=False`` is Dr. GRPO.

    Args:
        scale_std: divide by the group's (unbiased) reward std, as GRPO and DAPO do (Eq. 9). False: Dr. GRPO's
            ``R_i − mean_g R``, which does not up-weight groups that are nearly all correct or all wrong.
        eps: added to the std so a group whose rewards barely differ does not divide by ~0 (a group of equal
            rewards gets exactly 0 either way).

    >>> adv, metrics = GroupAdvantage()(torch.tensor([1.0, -1.0, 1.0, 1.0]), group_size=2)
    >>> adv
    tensor([ 0.7071, -0.7071,  0.0000,  0.0000])
    """

    scale_std: bool = True
    eps: float = 1e-6

    def __call__(self, rewards: Tensor, group_size: int) -> tuple[Tensor, dict[str, Tensor]]:
        """``rewards [N]`` (grouped contiguously) -> ``(advantages [N], metrics)``."""
        advantages = F.group_advantages(rewards, group_size, scale_std=self.scale_std, eps=self.eps)
        with torch.no_grad():
            metrics = {
                "advantage/mean": advantages.float().mean(),
                "advantage/abs_mean": advantages.float().abs().mean(),
                "advantage/zero_frac": (advantages == 0).float().mean(),
            }
        return advantages, metrics

