"""Loss aggregation choices (config group ``loss``): how a per-token loss ``[B, T]`` becomes the scalar that is
differentiated.

DAPO's token-level loss (Eq. 12) normalises by all tokens of the batch; GRPO averages per sample first, so
long responses' tokens weigh less. Each class owns its formula (in :mod:`dapo_lab.algo.functional`) and
declares the denominators it needs in ``global_counts`` (names of ``functional.LOSS_COUNTS``). The trainer
computes those counts over the whole mini-batch — every micro-batch, every data-parallel rank — and passes them
in, so accumulating micro-batch gradients gives exactly the mini-batch gradient. Called without counts, a class
uses the batch's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from dapo_lab.algo import functional as F

Counts = Mapping[str, Tensor | float]


@dataclass(frozen=True)
class TokenMean:
    """DAPO token-level loss: ``Σ_i Σ_t loss_{i,t} / Σ_i |o_i|`` (Eq. 12).

    >>> import torch
    >>> TokenMean()(torch.tensor([[1.0, 3.0], [2.0, 0.0]]), torch.tensor([[True, True], [True, False]]))
    tensor(2.)
    >>> TokenMean()(torch.tensor([[1.0, 3.0]]), torch.tensor([[True, True]]), {"tokens": 8})  # a piece of 8 tokens
    tensor(0.5000)
    """

    global_counts: ClassVar[tuple[str, ...]] = ("tokens",)

    def __call__(self, loss: Tensor, mask: Tensor, counts: Counts | None = None) -> Tensor:
        """Scalar loss of one (micro-)batch; ``counts``: the mini-batch's ``{"tokens": ...}``."""
        return F.token_mean(loss, mask, tokens=None if counts is None else counts["tokens"])


@dataclass(frozen=True)
class SeqMeanTokenMean:
    """GRPO sample-level loss: ``(1/G) Σ_i (1/|o_i|) Σ_t loss_{i,t}`` (Eq. 8).

    >>> import torch
    >>> SeqMeanTokenMean()(torch.tensor([[1.0, 3.0], [2.0, 0.0]]), torch.tensor([[True, True], [True, False]]))
    tensor(2.)
    """

    global_counts: ClassVar[tuple[str, ...]] = ("sequences",)

    def __call__(self, loss: Tensor, mask: Tensor, counts: Counts | None = None) -> Tensor:
        """Scalar loss of one (micro-)batch; ``counts``: the mini-batch's ``{"sequences": ...}``."""
        return F.seq_mean_token_mean(loss, mask, sequences=None if counts is None else counts["sequences"])


@dataclass(frozen=True)
class SeqMeanTokenSum:
    """Sum over each sequence's tokens, mean over sequences.

    >>> import torch
    >>> SeqMeanTokenSum()(torch.tensor([[1.0, 3.0], [2.0, 0.0]]), torch.tensor([[True, True], [True, False]]))
    tensor(3.)
    """

    global_counts: ClassVar[tuple[str, ...]] = ("sequences",)

    def __call__(self, loss: Tensor, mask: Tensor, counts: Counts | None = None) -> Tensor:
        """Scalar loss of one (micro-)batch; ``counts``: the mini-batch's ``{"sequences": ...}``."""
        return F.seq_mean_token_sum(loss, mask, sequences=None if counts is None else counts["sequences"])


@dataclass(frozen=True)
class SeqMeanTokenSumNorm:
    """Dr. GRPO: ``Σ_i Σ_t loss_{i,t} / (G · L)`` with a constant ``L`` (``norm_len``, the max length).

    Args:
        norm_len: the constant ``L`` every response's token sum is divided by, whatever its length, so no token
            weighs more for being in a short response (Dr. GRPO uses the response limit, as
            ``conf/loss/dr_grpo.yaml`` does); must be > 0.

    >>> import torch
    >>> SeqMeanTokenSumNorm(norm_len=4)(torch.tensor([[1.0, 3.0], [2.0, 0.0]]),
    ...                                 torch.tensor([[True, True], [True, False]]))
    tensor(0.7500)
    """

    norm_len: int = 1024
    global_counts: ClassVar[tuple[str, ...]] = ("sequences",)

    def __post_init__(self) -> None:
        if self.norm_len <= 0:
            raise ValueError(f"loss.norm_len must be > 0, got {self.norm_len}")

    def __call__(self, loss: Tensor, mask: Tensor, counts: Counts | None = None) -> Tensor:
        """Scalar loss of one (micro-)batch; ``counts``: the mini-batch's ``{"sequences": ...}``."""
        return F.seq_mean_token_sum_norm(loss, mask, norm_len=self.norm_len,
                                         sequences=None if counts is None else counts["sequences"])
