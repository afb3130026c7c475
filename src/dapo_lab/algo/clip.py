"""Policy-loss clipping choices: symmetric PPO/GRPO clipping and DAPO's decoupled Clip-Higher.

Each is called on one micro-batch and returns the per-token loss ``[B, T]`` (aggregation is a separate
component, :mod:`dapo_lab.algo.loss`) and metrics averaged over the masked tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dapo_lab.algo import functional as F

# The paper's Figure 3: the tokens the upper clip stops are unlikely ones (probability < 0.2 under π_old).
LOW_PROB = 0.2


def _clip_metrics(logp: Tensor, old_logp: Tensor, low: Tensor, high: Tensor, mask: Tensor) -> dict[str, Tensor]:
    with torch.no_grad():
        old_prob = old_logp.float().exp()  # [B, T]
        return {
            "actor/clipfrac_low": F.masked_mean(low.float(), mask),
            "actor/clipfrac_high": F.masked_mean(high.float(), mask),
            # Token shares, so they add up over micro-batches like clipfrac_high. Divided by clipfrac_high: the share
            # of up-clipped tokens with π_old < 0.2, and their mean π_old.
            "actor/clipfrac_high_lowprob": F.masked_mean((high & (old_prob < LOW_PROB)).float(), mask),
            "actor/clipprob_high": F.masked_mean(high.float() * old_prob, mask),
            # k1 estimate of KL(π_old ‖ π_θ) on the rollout's tokens: how far the update moved the policy.
            "actor/ppo_kl": F.masked_mean((old_logp - logp).float(), mask),
        }


@dataclass(frozen=True)
class DecoupledClip:
    """Clip-Higher (DAPO Eq. 10): ``clip(r, 1 − ε_low, 1 + ε_high)`` with ``ε_high > ε_low``.

    Raising only the upper bound lets low-probability tokens gain mass, which keeps entropy from
    collapsing; the lower bound stays at 0.2 so unlikely tokens are not pushed to zero.

    Args:
        eps_low: ``ε_low`` of Eq. 10: for ``A < 0`` the ratio is clipped at ``1 − ε_low`` (the paper keeps PPO's
            0.2; a larger value would let an update push likely tokens' probability towards zero).
        eps_high: ``ε_high`` of Eq. 10: for ``A > 0`` the ratio is clipped at ``1 + ε_high`` (the paper: 0.28). The
            higher ceiling lets low-probability tokens gain mass, which keeps the policy's entropy up.
        dual_clip: ``c > 1`` also caps a negative-advantage token's loss at ``−c·A`` (verl's dual clip), so a
            token whose ratio exploded cannot dominate the batch; null: off (the paper's).

    >>> clip = DecoupledClip(eps_low=0.2, eps_high=0.28)
    >>> lp = torch.log(torch.tensor([[0.013, 0.5]]))
    >>> old = torch.log(torch.tensor([[0.01, 0.5]]))
    >>> loss, metrics = clip(lp, old, torch.tensor([1.0]), torch.ones(1, 2, dtype=torch.bool))
    >>> loss
    tensor([[-1.2800, -1.0000]])
    >>> metrics["actor/clipfrac_high"].item()
    0.5
    >>> round(metrics["actor/clipprob_high"].item() / metrics["actor/clipfrac_high"].item(), 4)  # mean π_old clipped
    0.01
    """

    eps_low: float = 0.2
    eps_high: float = 0.28
    dual_clip: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.eps_low < 1.0:
            raise ValueError(f"clip.eps_low must be in [0, 1), got {self.eps_low}")
        if self.eps_high < 0.0:
            raise ValueError(f"clip.eps_high must be >= 0, got {self.eps_high}")
        if self.dual_clip is not None and self.dual_clip <= 1.0:
            raise ValueError(f"clip.dual_clip must be > 1 or null, got {self.dual_clip}")

    def __call__(
        self, logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Per-token loss ``[B, T]`` and ``actor/*`` metrics over ``mask``."""
        loss, low, high = F.clipped_policy_loss(
            logp, old_logp, advantages, eps_low=self.eps_low, eps_high=self.eps_high, dual_clip=self.dual_clip
        )
        return loss, _clip_metrics(logp, old_logp, low, high, mask)


@dataclass(frozen=True)
class SymmetricClip:
    """PPO/GRPO clipping ``clip(r, 1 − ε, 1 + ε)`` (the ablation's baseline).

    Args:
        eps: ``ε`` of both bounds, i.e. Eq. 10 with ``ε_low = ε_high`` (PPO and GRPO: 0.2). The upper bound is
            what Clip-Higher raises: at 0.2 a token of probability 0.01 stops gaining at 0.012.
        dual_clip: ``c > 1`` also caps a negative-advantage token's loss at ``−c·A`` (verl's dual clip); null: off.

    >>> SymmetricClip(eps=0.2).as_decoupled()
    DecoupledClip(eps_low=0.2, eps_high=0.2, dual_clip=None)
    """

    eps: float = 0.2
    dual_clip: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.eps < 1.0:
            raise ValueError(f"clip.eps must be in [0, 1), got {self.eps}")

    def as_decoupled(self) -> DecoupledClip:
        return DecoupledClip(eps_low=self.eps, eps_high=self.eps, dual_clip=self.dual_clip)

    def __call__(
        self, logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Per-token loss ``[B, T]`` and ``actor/*`` metrics over ``mask``."""
        return self.as_decoupled()(logp, old_logp, advantages, mask)
