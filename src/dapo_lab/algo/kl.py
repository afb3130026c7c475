"""KL regularisation choices. DAPO drops the KL term (Sec. 2.3): long-CoT training should move far
from the initial model. GRPO's two placements are kept for the ablations: a k1 penalty folded into the
reward, or a k3 term added to the per-token loss. Only these two need a frozen reference model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from dapo_lab.algo import functional as F


@dataclass(frozen=True)
class NoKL:
    """No KL term (DAPO's choice); the trainer builds no reference model.

    >>> NoKL().token_loss(torch.zeros(1, 2), torch.zeros(1, 2)) is None
    True
    """

    needs_reference: ClassVar[bool] = False

    def sequence_penalty(self, logp: Tensor, ref_logp: Tensor, mask: Tensor) -> Tensor:
        """``[B]`` amount to subtract from each response's reward: none."""
        return torch.zeros(logp.shape[0], device=logp.device)

    def token_loss(self, logp: Tensor, ref_logp: Tensor) -> Tensor | None:
        """``[B, T]`` term to add to the per-token policy loss: none."""
        return None


@dataclass(frozen=True)
class KLInReward:
    """KL folded into the reward: ``R_i ← R_i − β Σ_t kl_t`` (InstructGPT/verl ``use_kl_in_reward``).

    Args:
        kind: the per-token estimator ``kl_t`` of KL(π_θ ‖ π_ref) (Schulman's): ``k1`` = ``logp − ref_logp``,
            ``k2`` = ``½(logp − ref_logp)²``, ``k3`` = ``exp(ref_logp − logp) − (ref_logp − logp) − 1``.
        beta: ``β``, the KL coefficient: each response's reward loses ``β Σ_t kl_t`` before the group advantages
            (Eq. 9) are computed. DAPO drops the term (Sec. 2.3); must be >= 0.

    >>> lp, ref = torch.tensor([[0.0, 0.0]]), torch.log(torch.tensor([[0.5, 0.5]]))
    >>> KLInReward(kind="k1", beta=0.5).sequence_penalty(lp, ref, torch.tensor([[True, False]]))
    tensor([0.3466])
    """

    kind: str = "k1"
    beta: float = 0.001
    needs_reference: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.kind not in F.KL_KINDS:
            raise ValueError(f"kl.kind must be one of {F.KL_KINDS}, got {self.kind!r}")
        if self.beta < 0:
            raise ValueError(f"kl.beta must be >= 0, got {self.beta}")

    def sequence_penalty(self, logp: Tensor, ref_logp: Tensor, mask: Tensor) -> Tensor:
        """``[B]``: ``β Σ_t kl_t`` over the response tokens."""
        return self.beta * F.masked_sum(F.kl_estimate(logp, ref_logp, self.kind), mask, dim=-1)

    def token_loss(self, logp: Tensor, ref_logp: Tensor) -> Tensor | None:
        return None


@dataclass(frozen=True)
class KLLoss:
    """KL as a loss term: ``loss_t ← loss_t + β · k3_t`` (GRPO, Eq. 8's ``β D_KL``).

    Args:
        kind: the per-token estimator of KL(π_θ ‖ π_ref): ``k1``, ``k2`` or ``k3`` (GRPO's: unbiased, always
            >= 0, low variance; see ``functional.kl_estimate``).
        beta: ``β``, the KL coefficient: ``β · kl_t`` is added to every token's policy loss before aggregation.
            DAPO drops the term (Sec. 2.3); must be >= 0.

    >>> lp, ref = torch.tensor([[0.0]]), torch.log(torch.tensor([[0.5]]))
    >>> KLLoss(kind="k3", beta=1.0).token_loss(lp, ref)
    tensor([[0.1931]])
    """

    kind: str = "k3"
    beta: float = 0.001
    needs_reference: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.kind not in F.KL_KINDS:
            raise ValueError(f"kl.kind must be one of {F.KL_KINDS}, got {self.kind!r}")
        if self.beta < 0:
            raise ValueError(f"kl.beta must be >= 0, got {self.beta}")

    def sequence_penalty(self, logp: Tensor, ref_logp: Tensor, mask: Tensor) -> Tensor:
        return torch.zeros(logp.shape[0], device=logp.device)

    def token_loss(self, logp: Tensor, ref_logp: Tensor) -> Tensor | None:
        """``[B, T]``: ``β · kl_t`` (differentiable through ``logp``)."""
        return self.beta * F.kl_estimate(logp, ref_logp, self.kind)
