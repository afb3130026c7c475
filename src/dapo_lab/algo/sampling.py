"""Group selection choices: keep every group (GRPO) or DAPO's dynamic sampling (Sec. 3.2, Eq. 11).

A group whose responses are all correct or all wrong has zero advantage everywhere and so contributes
no gradient, only a smaller effective batch. Dynamic sampling drops those groups and keeps generating
until the batch is full; the refill loop lives in the trainer, which asks these objects which groups to
keep and how many generation rounds it may spend.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from dapo_lab.algo import functional as F

SAMPLING_METRICS = ("acc", "score")
ROUND_CAP_FACTOR = 4  # an oversampled round's default cap: this many times batch.gen_prompts


def prompts_to_fill(missing: int, informative: float, probability: float) -> int:
    """The fewest prompts ``n`` whose informative groups, Binomial(``n``, ``informative``), reach ``missing`` with
    ``probability``: by the normal approximation, ``n·f − z·sqrt(n·f·(1 − f)) ≥ missing`` with ``z`` the
    probability's standard-normal quantile, a quadratic in ``sqrt(n)``. At probability 0.5 (``z = 0``) it is the
    mean's ``ceil(missing / f)``; above it, the margin that makes one round enough more often than half the time.

    >>> prompts_to_fill(16, 0.4, 0.5), prompts_to_fill(16, 0.4, 0.9), prompts_to_fill(16, 1.0, 0.9)
    (40, 52, 16)
    """
    z = statistics.NormalDist().inv_cdf(probability)
    spread = z * math.sqrt(informative * (1.0 - informative))
    root = (spread + math.sqrt(spread**2 + 4.0 * informative * missing)) / (2.0 * informative)  # sqrt(n)
    return math.ceil(root**2 - 1e-9)  # the tolerance: m / f = 40 must not round up to 41


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

    def round_prompts(self, missing: int, engines: int, minimum: int, informative: float | None) -> int:
        """One round of ``minimum`` prompts (every group is kept)."""
        return minimum

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
        max_gen_batches: the most generation rounds per step. When it is hit the step trains on the groups it has,
            fewer than ``batch.prompts_per_step`` (``sampling/bound_hit``: 1); kept groups beyond the batch carry over
            to the next step.
        oversample: size each round from the running informative fraction ``f`` (verl's ``gen_batch_size`` > train
            batch, made adaptive): enough prompts to fill the missing groups (``fill_probability``), at least
            ``batch.gen_prompts`` and at most ``max_round_prompts``, so most steps need one round; surplus groups
            carry over as usual. False: every round generates ``batch.gen_prompts``.
        fill_probability: how an oversampled round is sized: the chance that it alone fills the batch if each of
            its groups is informative with probability ``f`` (:func:`prompts_to_fill`). 0.5 sizes at the mean,
            ``ceil(missing / f)``, so about every other step needs a second round; higher asks for a margin, whose
            surplus carries over to the next step (the same groups generated per step in the long run, fewer rounds).
        max_round_prompts: the cap of an oversampled round (prompts per engine), bounding its memory and time;
            None: 4 × ``batch.gen_prompts`` (the default run: 64), so a small config's rounds stay small.

    >>> keep, m = DynamicSampling().select(torch.tensor([1.0, 1.0, 0.0, 1.0]), group_size=2)
    >>> keep, m["sampling/kept_group_frac"].item()
    (tensor([False,  True]), 0.5)
    >>> sampler = DynamicSampling(oversample=True, max_round_prompts=64, fill_probability=0.9)
    >>> sampler.round_prompts(missing=16, engines=1, minimum=16, informative=0.4)  # fills the batch 9 times in 10
    52
    >>> DynamicSampling(oversample=True, fill_probability=0.5).round_prompts(16, 1, 16, 0.4)  # the mean: 16 / 0.4
    40
    >>> sampler.round_prompts(missing=16, engines=1, minimum=16, informative=None)  # nothing measured yet
    16
    >>> DynamicSampling(oversample=True).round_prompts(missing=4, engines=1, minimum=4, informative=0.0)  # 4 x 4
    16
    """

    dynamic: ClassVar[bool] = True
    metric: str = "acc"
    max_gen_batches: int = 10
    oversample: bool = False
    max_round_prompts: int | None = None
    fill_probability: float = 0.9

    def __post_init__(self) -> None:
        if self.metric not in SAMPLING_METRICS:
            raise ValueError(f"sampling.metric must be one of {SAMPLING_METRICS}, got {self.metric!r}")
        if self.max_gen_batches < 1:
            raise ValueError(f"sampling.max_gen_batches must be >= 1, got {self.max_gen_batches}")
        if self.max_round_prompts is not None and self.max_round_prompts < 1:
            raise ValueError(f"sampling.max_round_prompts must be >= 1, got {self.max_round_prompts}")
        if not 0.0 < self.fill_probability < 1.0:
            raise ValueError(f"sampling.fill_probability must be in (0, 1), got {self.fill_probability}")

    def round_prompts(self, missing: int, engines: int, minimum: int, informative: float | None) -> int:
        """Prompts per engine for the next round: ``minimum``, or with ``oversample`` enough to fill ``missing``
        groups with ``fill_probability`` at the measured informative fraction (floored at 5%, so a round that kept
        nothing stays bounded), shared by the ``engines``."""
        if not self.oversample or informative is None:
            return minimum
        wanted = math.ceil(prompts_to_fill(missing, max(informative, 0.05), self.fill_probability) / engines)
        cap = self.max_round_prompts if self.max_round_prompts is not None else ROUND_CAP_FACTOR * minimum
        return max(minimum, min(wanted, cap))

    def select(self, values: Tensor, group_size: int) -> tuple[Tensor, dict[str, Tensor]]:
        """``values [N]`` -> ``(keep [N // group_size] bool, metrics)``."""
        keep = F.informative_groups(values, group_size)
        metrics = _metrics(keep)
        metrics["sampling/informative_group_frac"] = keep.float().mean()
        return keep, metrics
