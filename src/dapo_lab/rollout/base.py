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


@runtime_checkable
class RolloutEngine(Protocol):
    """What the trainer needs from a generator: the whole contract, in the order a run uses it.

    1. ``attach(model, eos_id=, pad_id=)`` once, before anything else: the policy to sample from, the token that
       ends a response, the id to pad with.
    2. ``update_weights(model)`` before every step and every evaluation (the trainer calls it on every rank):
       from then on ``generate`` samples from ``model``'s current weights. A no-op for an engine that decodes
       with the training module itself; a weight push (gathered from shards if needed) for one with its own copy.
    3. ``generate(prompts, params)`` -> :class:`RolloutOutput`: ``params.n`` samples per prompt, grouped
       contiguously; ``logprobs`` are the engine's log-probs of each sampled token under
       ``softmax(logits / T)`` (``log_softmax(logits)`` when greedy), 0 on padding; a seeded call is
       reproducible. Prompts are token ids (never empty); responses include the EOS token when one was made.
    4. ``sleep()`` after the step's generation, before the update: release what generation holds (vLLM's KV
       cache on GPU); the next ``update_weights`` / ``generate`` wakes the engine. May be a no-op.
    5. ``close()`` at the end of the run: release the engine (processes, memory, temporary files).

    ``logprobs_match_trainer``: True when the returned log-probs are the trainer's own ``π_old`` (same weights and
    model code; the dtype the same or within a measured rounding of the training forward's, e.g. the transformers
    engine's bf16 copy), so ``rollout_correction.old_logprobs=auto`` may use them instead of a recompute.
    ``decodes_with_policy``: True when ``generate`` runs the training module itself (a sharding strategy then
    gathers its full weights around generation); False for an engine with its own copy (vLLM).

    :class:`EngineBase` gives the defaults; ``tests/rollout/test_rollout_contract.py`` checks every engine.
    """

    logprobs_match_trainer: bool
    decodes_with_policy: bool

    def attach(self, model: torch.nn.Module, *, eos_id: int, pad_id: int) -> None: ...

    def update_weights(self, model: torch.nn.Module) -> None: ...

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> RolloutOutput: ...

    def sleep(self) -> None: ...

    def close(self) -> None: ...


class EngineBase:
    """Defaults for :class:`RolloutEngine`: ``attach`` keeps the policy and token ids, ``update_weights`` keeps the
    reference, ``sleep`` and ``close`` do nothing. An engine subclasses it and writes ``generate``.

    >>> class Echo(EngineBase):
    ...     def generate(self, prompts, params):
    ...         raise NotImplementedError
    >>> engine = Echo(); engine.attach(None, eos_id=2, pad_id=0); engine.sleep(); engine.close()
    >>> isinstance(engine, RolloutEngine), engine.eos_id
    (True, 2)
    """

    logprobs_match_trainer: bool = False
    decodes_with_policy: bool = False
    model: torch.nn.Module | None = None
    eos_id: int = -1
    pad_id: int = 0

    def attach(self, model: torch.nn.Module, *, eos_id: int, pad_id: int) -> None:
        self.model, self.eos_id, self.pad_id = model, eos_id, pad_id

    def update_weights(self, model: torch.nn.Module) -> None:
        self.model = model

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> RolloutOutput:
        raise NotImplementedError

    def sleep(self) -> None:
        """Nothing to release by default."""

    def close(self) -> None:
        """Nothing to release by default."""

    def _check_prompts(self, prompts: list[list[int]]) -> None:
        if self.model is None:
            raise RuntimeError(f"{type(self).__name__}.generate called before attach(model, ...)")
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
