"""Group selection choices: keep every group (GRPO) or DAPO's dynamic sampling (Sec. 3.2, Eq. 11).

A group whose responses are all correct or all wrong has zero advantage everywhere and so contributes
no gradient, only a smaller effective batch. Dynamic sampling drops those groups and keeps generating
until the batch is full; the refill loop lives in the trainer, which asks these objects which groups to
keep and how many generation rounds it may spend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from dapo_lab.algo import functional as F

SAMPLING_METRICS = ("acc", "score")


def _metrics(keep: Tensor) -> dict[str, Tensor]:
    kept = keep.float().mean() if keep.numel() else torch.tensor(0.0)
    return {"sampling/kept_group_frac": kept, "sampling/discarded_group_frac": 1.0 - kept}


@dataclass(frozen=True)
class KeepAll:
    """Train on every group, informative or not (GRPO).

    >>> keep, _ = KeepAll().select(torch.tensor([1.0, 1.0, 0.0, 1.0]), group_size=2)
    >>> keep
    tensor([True, True])
    """

    dynamic: ClassVar[bool] = False
    metric: str = "acc"
    max_gen_batches: int = 1

    def select(self, values: Tensor, group_size: int) -> tuple[Tensor, dict[str, Tensor]]:
        """``values [N]`` -> ``(keep [N // group_size] bool, metrics)``."""
        if values.numel() % group_size != 0:
            raise ValueError(f"{values.numel()} values is not a multiple of group_size={group_size}")
        keep = torch.ones(values.numel() // group_size, dtype=torch.bool, device=values.device)
        informative = F.informative_groups(values, group_size)
        metrics = _metrics(keep)
        metrics["sampling/informative_group_frac"] = informative.float().mean()
        return keep, metrics


@dataclass(frozen=True)
class DynamicSampling:
    """Over-sample and keep groups with ``0 < |{correct}| < G`` (Eq. 11), refilling up to ``max_gen_batches``.

    Args:
        metric: what must differ within a group for it to be kept: ``acc``, correctness (Eq. 11's
            ``0 < |{correct}| < G``, DAPO's), or ``score``, the reward after overlong shaping (so a group of correct
            answers with different length penalties is kept too).
        max_gen_batches: the most generation rounds (``batch.gen_prompts`` prompts each) per step. When it is hit the
            step trains on the groups it has, fewer than ``batch.prompts_per_step`` (``sampling/bound_hit``: 1);
            kept groups beyond the batch carry over to the next step.

    >>> keep, m = DynamicSampling().select(torch.tensor([1.0, 1.0, 0.0, 1.0]), group_size=2)
    >>> keep, m["sampling/kept_group_frac"].item()
    (tensor([False,  True]), 0.5)
    """

    dynamic: ClassVar[bool] = True
    metric: str = "acc"
    max_gen_batches: int = 10

    def __post_init__(self) -> None:
        if self.metric not in SAMPLING_METRICS:
            raise ValueError(f"sampling.metric must be one of {SAMPLING_METRICS}, got {self.metric!r}")
        if self.max_gen_batches < 1:
            raise ValueError(f"sampling.max_gen_batches must be >= 1, got {self.max_gen_batches}")

    def select(self, values: Tensor, group_size: int) -> tuple[Tensor, dict[str, Tensor]]:
        """``values [N]`` -> ``(keep [N // group_size] bool, metrics)``."""
        keep = F.informative_groups(values, group_size)
        metrics = _metrics(keep)
        metrics["sampling/informative_group_frac"] = keep.float().mean()
        return keep, metrics
