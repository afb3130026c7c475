"""The update phase against its ceiling, both on one real step's batch, timed in interleaved pairs in one process.

Imported by ``bench_step.py`` and ``ab_update.py`` (a sibling module, not a package; not a command).

The ceiling (issue #18: "a forward+backward+AdamW of the same model at the same token count, unpadded"): for each of
the update's optimizer steps, one forward and backward over as many rows as its mini-batch has, every row the
mini-batch's mean real length (prompt + response: no padding, no mask), the LM head and log-softmax only over the
mean response length (the positions an update scores), then global-norm clipping and AdamW, in the run's precision.
It does nothing the update could skip: no entropy, no clipped surrogate, no per-pass bookkeeping.

Why pairs: this machine's speed drifts by 30-75% within minutes. A ratio of a mean over training steps to a ceiling
timed a minute later moved between 0.55 and 0.96 for the same code (``LOG.md``); one update and one ceiling back to
back, order alternated, then the median of the per-pair ratios, does not depend on that drift.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from dapo_lab.trainer.groups import TrainBatch
from dapo_lab.trainer.optimization import PlainOptimization
from dapo_lab.trainer.teacher_forced import _token_logprobs


@dataclass
class CapturedUpdate:
    """The arguments of a learner's last ``update`` call (a real step's batch), every call's seconds, and the
    unwrapped ``update`` (to replay the batch without capturing again)."""

    update: Callable[..., Any]
    args: tuple[Any, ...] | None = None
    seconds: list[float] = field(default_factory=list)


def capture_updates(learner: Any) -> CapturedUpdate:
    """Wrap ``learner.update`` (on this instance) so that each call's arguments and seconds are kept."""
    update = learner.update
    captured = CapturedUpdate(update)

    def timed(batch: TrainBatch, old_logp: Tensor, ref_logp: Tensor | None, advantages: Tensor, step: int,
              optimization: Any) -> Any:
        start = time.perf_counter()
        out = update(batch, old_logp, ref_logp, advantages, step, optimization)
        captured.seconds.append(time.perf_counter() - start)
        captured.args = (batch, old_logp, ref_logp, advantages, step)
        return out

    learner.update = timed
    return captured


def ceiling_shapes(batch: TrainBatch, updates: int) -> list[tuple[int, int, int]]:
    """``(rows, length, response)`` of each ceiling pass: ``updates`` passes over equal slices of the batch's rows,
    each row its slice's mean real length (prompt + response) with its mean response length, rounded.

    >>> class B:  # two rows of prompt 3 + response 2, two of prompt 5 + response 4
    ...     prompt_ids = [[1] * 3, [1] * 3, [1] * 5, [1] * 5]
    ...     response_mask = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]])
    ...     def row_lengths(self): return [5, 5, 9, 9]
    >>> ceiling_shapes(B(), updates=2)
    [(2, 5, 2), (2, 9, 4)]
    """
    lengths = batch.row_lengths()
    responses = batch.response_mask.sum(-1).tolist()
    shapes = []
    for rows in torch.arange(len(lengths)).tensor_split(updates):
        rows = rows.tolist()
        if rows:
            shapes.append((len(rows), max(1, round(sum(lengths[i] for i in rows) / len(rows))),
                           max(1, round(sum(responses[i] for i in rows) / len(rows)))))
    return shapes


def training_autocast(enabled: bool) -> torch.autocast:
    """bf16 autocast as Lightning's ``bf16-mixed`` enters it around a training step: with autocast's weight-cast
    cache off. With the cache on, a weight cast once is reused after the optimizer has changed the weight (the
    forwards of later updates would see stale bf16 weights and skip their casts: faster, and wrong)."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled, cache_enabled=False)


def ceiling_update(model: torch.nn.Module, shapes: list[tuple[int, int, int]], optimization: PlainOptimization,
                   autocast: bool) -> float:
    """Seconds for the ceiling's passes (``shapes`` from :func:`ceiling_shapes`), one optimizer step each."""
    generator = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    start = time.perf_counter()
    for rows, length, response in shapes:
        ids = torch.randint(3, vocab, (rows, length), generator=generator)  # [n, L], every token real
        targets = torch.randint(3, vocab, (rows, response), generator=generator)  # [n, r]
        optimization.zero_grad()
        with training_autocast(autocast):
            logits = model(input_ids=ids, use_cache=False, logits_to_keep=response + 1).logits[:, :-1]  # [n, r, V]
            loss = -_token_logprobs(logits, targets, 1.0, False)[0].mean()
        optimization.backward(loss)
        optimization.step(last=False)
    return time.perf_counter() - start


def replay_update(model: torch.nn.Module, captured: CapturedUpdate, optimization: PlainOptimization,
                  autocast: bool) -> float:
    """Seconds for the learner's whole update (every pass, clip and AdamW step) on the captured batch, as Lightning's
    bf16-mixed step runs it (:func:`training_autocast` around it)."""
    model.train()
    start = time.perf_counter()
    with training_autocast(autocast):
        captured.update(*captured.args, optimization)
    return time.perf_counter() - start


def paired(first: Callable[[], float], second: Callable[[], float], pairs: int) -> tuple[list[float], list[float]]:
    """Each callable's seconds over ``pairs`` back-to-back pairs, the order reversed every other pair, after one
    untimed call of each (optimizer state, allocator)."""
    first(), second()
    a, b = [], []
    for pair in range(pairs):
        if pair % 2 == 0:
            a.append(first())
            b.append(second())
        else:
            b.append(second())
            a.append(first())
    return a, b


def fraction_of_ceiling(update_seconds: list[float], ceiling_seconds: list[float]) -> tuple[float, list[float]]:
    """The median over pairs of ``ceiling / update`` (the fraction of the ceiling reached), and each pair's.

    >>> fraction_of_ceiling([2.0, 1.0, 4.0], [1.0, 0.9, 2.0])
    (0.5, [0.5, 0.9, 0.5])
    """
    ratios = [c / u for u, c in zip(update_seconds, ceiling_seconds)]
    return statistics.median(ratios), ratios
