"""The rollout contract: prompts in (token ids), ``n`` sampled responses each out, with their log-probs.

It is shaped like vLLM's ``LLM.generate(prompts, SamplingParams(n=...))`` plus a weight-sync call, so
the transformers engine and a vLLM engine are interchangeable behind it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. ``temperature=0`` is greedy; ``top_p=1`` disables nucleus filtering."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 96
    n: int = 1
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1 or self.n < 1:
            raise ValueError(f"max_new_tokens and n must be >= 1, got {self.max_new_tokens}, {self.n}")


@dataclass
class RolloutOutput:
    """``N = len(prompts) × n`` responses; prompt ``i``'s samples are rows ``[i·n, (i+1)·n)``.

    Attributes:
        prompt_ids: ``N`` lists of prompt token ids (each prompt repeated ``n`` times).
        response_ids: ``[N, R]`` right-padded with the pad id; includes the EOS token when one was made.
        response_mask: ``bool [N, R]``: True on generated tokens (EOS included), False on padding.
        logprobs: ``[N, R]`` engine log-probs of each sampled token under ``softmax(logits / T)``; 0 on padding.
        truncated: ``bool [N]``: hit ``max_new_tokens`` without EOS.
    """

    prompt_ids: list[list[int]]
    response_ids: Tensor
    response_mask: Tensor
    logprobs: Tensor
    truncated: Tensor

    @property
    def lengths(self) -> Tensor:
        """``[N]`` response lengths in tokens (EOS counted)."""
        return self.response_mask.sum(-1)

    def __len__(self) -> int:
        return self.response_ids.shape[0]


OLD_LOGPROBS = ("recompute", "engine")


def check_old_logprobs(old_logprobs: str, tis_cap: float | None) -> None:
    """Validate an engine's ``old_logprobs`` / ``tis_cap`` pair (one clear error naming the field).

    >>> check_old_logprobs("engine", 2.0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: rollout.tis_cap corrects the gap ... old_logprobs='engine' removes: set one of them
    """
    if old_logprobs not in OLD_LOGPROBS:
        raise ValueError(f"rollout.old_logprobs must be one of {list(OLD_LOGPROBS)}, got {old_logprobs!r}")
    if old_logprobs == "engine" and tis_cap is not None:
        raise ValueError("rollout.tis_cap corrects the gap between engine and trainer log-probs, which "
                         "old_logprobs='engine' removes: set one of them")


@runtime_checkable
class RolloutEngine(Protocol):
    """What the trainer needs from a generator."""

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> RolloutOutput: ...

    def update_weights(self, model: torch.nn.Module) -> None:
        """Make the engine sample from ``model``'s current weights (a no-op when it shares them)."""
        ...
