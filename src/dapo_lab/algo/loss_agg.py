"""Loss aggregation choices: how a per-token loss ``[B, T]`` becomes the scalar that is differentiated.

DAPO's token-level loss (Eq. 12) normalises by all tokens of the batch; GRPO averages per sample first,
so long responses' tokens weigh less. Every class takes the global token / sequence counts of the whole
mini-batch (all micro-batches and ranks), so that accumulating micro-batch gradients gives exactly the
mini-batch gradient (see :func:`dapo_lab.algo.functional.aggregate`).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from dapo_lab.algo import functional as F


@dataclass(frozen=True)
class _Aggregation:
    mode = "token-mean"

    def __call__(
        self, loss: Tensor, mask: Tensor, *, global_tokens: Tensor | None = None, global_seqs: Tensor | None = None
    ) -> Tensor:
        """Scalar loss of one (micro-)batch; pass mini-batch totals as ``global_*`` when accumulating."""
        return F.aggregate(loss, mask, self.mode, global_tokens=global_tokens, global_seqs=global_seqs)


@dataclass(frozen=True)
class TokenMean(_Aggregation):
    """DAPO token-level loss: ``Σ_i Σ_t loss_{i,t} / Σ_i |o_i|`` (Eq. 12).

    >>> import torch
    >>> TokenMean()(torch.tensor([[1.0, 3.0], [2.0, 0.0]]), torch.tensor([[True, True], [True, False]]))
    tensor(2.)
    """

    mode = "token-mean"


@dataclass(frozen=True)
class SeqMeanTokenMean(_Aggregation):
    """GRPO sample-level loss: ``(1/G) Σ_i (1/|o_i|) Σ_t loss_{i,t}`` (Eq. 8).

    >>> import torch
    >>> SeqMeanTokenMean()(torch.tensor([[1.0, 3.0], [2.0, 0.0]]), torch.tensor([[True, True], [True, False]]))
    tensor(2.)
    """

    mode = "seq-mean-token-mean"


@dataclass(frozen=True)
class SeqMeanTokenSum(_Aggregation):
    """Sum over each sequence's tokens, mean over sequences.

    >>> import torch
    >>> SeqMeanTokenSum()(torch.tensor([[1.0, 3.0], [2.0, 0.0]]), torch.tensor([[True, True], [True, False]]))
    tensor(3.)
    """

    mode = "seq-mean-token-sum"


@dataclass(frozen=True)
class SeqMeanTokenSumNorm(_Aggregation):
    """Dr. GRPO: ``Σ_i Σ_t loss_{i,t} / (G · L)`` with a constant ``L`` (``norm_len``, the max length).

    >>> import torch
    >>> SeqMeanTokenSumNorm(norm_len=4)(torch.tensor([[1.0, 3.0], [2.0, 0.0]]),
    ...                                 torch.tensor([[True, True], [True, False]]))
    tensor(0.7500)
    """

    norm_len: int = 1024
    mode = "seq-mean-token-sum-norm"

    def __post_init__(self) -> None:
        if self.norm_len <= 0:
            raise ValueError(f"loss.norm_len must be > 0, got {self.norm_len}")

    def __call__(
        self, loss: Tensor, mask: Tensor, *, global_tokens: Tensor | None = None, global_seqs: Tensor | None = None
    ) -> Tensor:
        return F.aggregate(loss, mask, self.mode, global_seqs=global_seqs, norm_len=self.norm_len)
