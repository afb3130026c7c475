"""Overlong reward shaping choices (DAPO Sec. 3.4).

Truncated responses get the "wrong" reward even when their reasoning was sound, which is noise.
*Overlong filtering* removes truncated responses from the loss; *soft overlong punishment* (Eq. 13) adds a
linear length penalty inside the last ``cache_len`` tokens before ``max_len``. Each component maps
``(rewards [N], lengths [N], truncated [N])`` to ``(shaped rewards [N], in_loss [N] bool, metrics)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dapo_lab.algo import functional as F


def _metrics(penalty: Tensor, in_loss: Tensor) -> dict[str, Tensor]:
    return {
        "overlong/penalty_mean": penalty.float().mean(),
        "overlong/filtered_frac": (~in_loss).float().mean(),
    }


@dataclass(frozen=True)
class NoOverlong:
    """Rewards unchanged; every response in the loss.

    >>> r, keep, _ = NoOverlong()(torch.tensor([1.0]), torch.tensor([9]), torch.tensor([True]))
    >>> r, keep
    (tensor([1.]), tensor([True]))
    """

    def __call__(self, rewards: Tensor, lengths: Tensor, truncated: Tensor) -> tuple[Tensor, Tensor, dict]:
        in_loss = torch.ones_like(truncated, dtype=torch.bool)
        return rewards, in_loss, _metrics(torch.zeros_like(rewards), in_loss)


@dataclass(frozen=True)
class OverlongFilter:
    """Overlong filtering: truncated responses (no EOS before the limit) are masked out of the loss.

    >>> r, keep, m = OverlongFilter()(torch.tensor([1.0, -1.0]), torch.tensor([5, 9]), torch.tensor([False, True]))
    >>> keep, m["overlong/filtered_frac"].item()
    (tensor([ True, False]), 0.5)
    """

    def __call__(self, rewards: Tensor, lengths: Tensor, truncated: Tensor) -> tuple[Tensor, Tensor, dict]:
        in_loss = ~truncated.bool()
        return rewards, in_loss, _metrics(torch.zeros_like(rewards), in_loss)


@dataclass(frozen=True)
class SoftOverlongPunishment:
    """Soft overlong punishment (Eq. 13): ``R ← R + penalty(|y|)``, 0 → −factor over the last L_cache tokens.

    Args:
        max_len: ``L_max`` of Eq. 13, the response limit (the YAML ties it to ``max_response_len``): a response of
            ``L_max`` tokens or more gets the full ``−factor``.
        cache_len: ``L_cache`` of Eq. 13, the buffer before ``L_max`` where the penalty grows linearly from 0 (at
            ``L_max − L_cache`` tokens) to ``−factor``; must be in ``(0, max_len]``. It should start beyond the
            length of correct solutions, or it teaches the policy to cut them short (see ``conf/train.yaml``).
        factor: scales the penalty (1.0: the paper's, 0 to −1, added to the ±1 rule-based reward of Eq. 7);
            must be >= 0.

    >>> shape = SoftOverlongPunishment(max_len=100, cache_len=20)
    >>> r, keep, _ = shape(torch.tensor([1.0, 1.0]), torch.tensor([80, 90]), torch.tensor([False, False]))
    >>> r
    tensor([1.0000, 0.5000])
    """

    max_len: int = 20480
    cache_len: int = 4096
    factor: float = 1.0

    def __post_init__(self) -> None:
        if self.cache_len <= 0 or self.cache_len > self.max_len:
            raise ValueError(
                f"overlong.cache_len={self.cache_len} must be in (0, overlong.max_len={self.max_len}]"
            )
        if self.factor < 0:
            raise ValueError(f"overlong.factor must be >= 0, got {self.factor}")

    def penalty(self, lengths: Tensor) -> Tensor:
        return F.soft_overlong_penalty(lengths, max_len=self.max_len, cache_len=self.cache_len, factor=self.factor)

    def __call__(self, rewards: Tensor, lengths: Tensor, truncated: Tensor) -> tuple[Tensor, Tensor, dict]:
        penalty = self.penalty(lengths).to(rewards.dtype)
        in_loss = torch.ones_like(truncated, dtype=torch.bool)
        return rewards + penalty, in_loss, _metrics(penalty, in_loss)


@dataclass(frozen=True)
class OverlongFilterSoftPunishment(SoftOverlongPunishment):
    """Both: the soft penalty shapes the reward, and truncated responses are masked out of the loss.

    This is the paper's cumulative Table 1 row "+ soft overlong punishment" (filtering stays on).

    Args:
        max_len: ``L_max`` of Eq. 13, the response limit (the YAML ties it to ``max_response_len``): a response of
            ``L_max`` tokens or more gets the full ``−factor``.
        cache_len: ``L_cache`` of Eq. 13, the buffer before ``L_max`` where the penalty grows linearly from 0 (at
            ``L_max − L_cache`` tokens) to ``−factor``; must be in ``(0, max_len]``. It should start beyond the
            length of correct solutions, or it teaches the policy to cut them short (see ``conf/train.yaml``).
        factor: scales the penalty (1.0: the paper's, 0 to −1, added to the ±1 rule-based reward of Eq. 7);
            must be >= 0.

    >>> shape = OverlongFilterSoftPunishment(max_len=100, cache_len=20)
    >>> r, keep, _ = shape(torch.tensor([1.0, -1.0]), torch.tensor([90, 100]), torch.tensor([False, True]))
    >>> r, keep
    (tensor([ 0.5000, -2.0000]), tensor([ True, False]))
    """

    def __call__(self, rewards: Tensor, lengths: Tensor, truncated: Tensor) -> tuple[Tensor, Tensor, dict]:
        penalty = self.penalty(lengths).to(rewards.dtype)
        in_loss = ~truncated.bool()
        return rewards + penalty, in_loss, _metrics(penalty, in_loss)
