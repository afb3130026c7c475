"""Metric bookkeeping: how per-round and per-update values become one number per step, and pass@k.

A step logs one value per metric, but several are measured more than once per step: once per generation
round (dynamic sampling) and once per optimizer update. Each such metric has an explicit reduction here, so a
maximum stays a maximum and a count stays a count; a metric without one is an error, not a silent mean.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from math import comb
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from dapo_lab.algo import functional as F

if TYPE_CHECKING:
    from dapo_lab.trainer.groups import TrainBatch

Reduction = Literal["mean", "sum", "max"]

# Measured once per generation round.
ROUND_REDUCTIONS: dict[str, Reduction] = {
    "rollout/acc": "mean", "rollout/reward_mean": "mean", "rollout/response_len_mean": "mean",
    "rollout/response_len_max": "max", "rollout/truncated_frac": "mean", "rollout/tokens": "sum",
    "time/generate": "sum", "time/grade": "sum", "sampling/round_prompts": "sum",
    "sampling/kept_group_frac": "mean", "sampling/discarded_group_frac": "mean",
    "sampling/informative_group_frac": "mean",
    "overlong/penalty_mean": "mean", "overlong/filtered_frac": "mean",
    # The grader's counters add up over rounds; its fractions average (rounds have equal sizes).
    "reward/symbolic_checks": "sum", "reward/symbolic_rescued": "sum", "reward/timeouts": "sum",
    "reward/parse_failures": "sum",
    # A user's reward component may log any other reward/... value: averaged over rounds.
    "reward/": "mean",
}

# Measured once per optimizer update (the mean over the step's updates).
UPDATE_REDUCTIONS: dict[str, Reduction] = {
    "actor/pg_loss": "mean", "actor/kl_loss": "mean", "actor/clipfrac_low": "mean", "actor/clipfrac_high": "mean",
    "actor/clipfrac_high_lowprob": "mean", "actor/clipprob_high": "mean", "actor/ppo_kl": "mean",
    "actor/grad_norm": "mean", "actor/dummy_passes": "sum", "actor/skipped_updates": "sum",
}


def _rule(name: str, rules: Mapping[str, Reduction]) -> Reduction:
    if name in rules:
        return rules[name]
    prefix = name.split("/", 1)[0] + "/"
    if prefix in rules:
        return rules[prefix]
    raise KeyError(f"metric {name!r} has no reduction: add it to dapo_lab.trainer.metrics")


def reduce_rows(rows: Sequence[Mapping[str, float]], rules: Mapping[str, Reduction]) -> dict[str, float]:
    """One value per metric from several rows of measurements, each metric by its own rule.

    A metric missing from some rows is reduced over the rows that have it.

    >>> reduce_rows([{"rollout/response_len_max": 9, "rollout/tokens": 30, "rollout/acc": 0.5},
    ...              {"rollout/response_len_max": 7, "rollout/tokens": 20, "rollout/acc": 0.25}], ROUND_REDUCTIONS)
    {'rollout/response_len_max': 9.0, 'rollout/tokens': 50.0, 'rollout/acc': 0.375}
    >>> reduce_rows([{"rollout/new_thing": 1.0}], ROUND_REDUCTIONS)
    Traceback (most recent call last):
    ...
    KeyError: "metric 'rollout/new_thing' has no reduction: add it to dapo_lab.trainer.metrics"
    """
    names = list(dict.fromkeys(name for row in rows for name in row))
    out = {}
    for name in names:
        values = [float(row[name]) for row in rows if name in row]
        how = _rule(name, rules)
        out[name] = sum(values) / len(values) if how == "mean" else sum(values) if how == "sum" else max(values)
    return out


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples with ``c`` correct (Chen et al. 2021): ``1 − C(n−c, k) / C(n, k)``.

    >>> pass_at_k(4, 0, 4), pass_at_k(4, 1, 4), round(pass_at_k(4, 1, 2), 4)
    (0.0, 1.0, 0.5)
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    return 1.0 - comb(n - c, k) / comb(n, k)


@dataclass
class EntropyTally:
    """The policy's entropy summed over response tokens, and their count (for ``train/entropy``)."""

    total: float = 0.0
    tokens: float = 0.0

    def add(self, entropy: Tensor, response_mask: Tensor) -> None:
        self.total += (entropy * response_mask).sum().item()
        self.tokens += response_mask.sum().item()


def long_response_weight(aggregate: Callable[[Tensor, Tensor], Tensor], loss_mask: Tensor) -> float:
    """The share of the loss's weight on the tokens of responses longer than the batch's median (in loss tokens):
    what token-level loss changes (DAPO §3.3). ``aggregate(per_token [N, T], mask [N, T]) -> scalar`` is linear in
    its first argument, so the share is ``aggregate(1 on long rows) / aggregate(1 everywhere)``. NaN for an empty
    batch.

    >>> from dapo_lab.algo.loss import SeqMeanTokenMean, TokenMean
    >>> mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    >>> round(long_response_weight(TokenMean(), mask), 4)  # 6 of the 9 tokens: the one row longer than the median 2
    0.6667
    >>> round(long_response_weight(SeqMeanTokenMean(), mask), 4)  # per sample: that row is 1 of 3
    0.3333
    """
    lengths = loss_mask.sum(-1)  # [N]
    if not loss_mask.any():
        return float("nan")
    long = (lengths > lengths[lengths > 0].float().median())[:, None]  # bool [N, 1]
    ones = loss_mask.float()  # [N, T]
    return (aggregate(ones * long, loss_mask) / aggregate(ones, loss_mask)).item()


def batch_metrics(batch: TrainBatch, old_logp: Tensor, entropy: Tensor | None, *,
                  loss: Callable[[Tensor, Tensor], Tensor], carried_rows: int, recomputed: bool,
                  tis_cap: float | None) -> dict[str, float]:
    """``train/*`` (and ``rollout/logprob_abs_diff*``, ``rollout/tis_*``) of a step's assembled batch.

    ``old_logp``, ``entropy``: ``[N, R]``; ``carried_rows``: the global batch's first rows, carried over from the last
    step; ``recomputed``: π_old came from a trainer forward (so it can be compared with the engine's log-probs)."""
    mask = batch.response_mask  # bool [N, R]
    metrics = {"train/acc": batch.correct.float().mean().item(), "train/reward_mean": batch.rewards.mean().item(),
               "train/token_prob_mean": F.masked_mean(old_logp.exp(), mask).item(),
               "train/tokens": float(batch.loss_mask.sum()),
               "train/long_response_weight": long_response_weight(loss, batch.loss_mask)}
    if entropy is not None:
        metrics["train/entropy"] = F.masked_mean(entropy, mask).item()
    # The engine/trainer gap on this step's own rollouts only: carried surplus groups (the global batch's first
    # positions) were sampled before the last update, so their gap measures staleness, not the engine.
    fresh = mask & (batch.global_rows >= carried_rows)[:, None]  # bool [N, R]
    if fresh.any() and recomputed:
        gap = (old_logp - batch.engine_logprobs).abs()  # [N, R]
        metrics["rollout/logprob_abs_diff"] = F.masked_mean(gap, fresh).item()
        metrics["rollout/logprob_abs_diff_max"] = gap[fresh].max().item()
    if tis_cap is not None:
        tis = F.truncated_importance_weights(old_logp, batch.engine_logprobs, cap=tis_cap)  # [N, R]
        metrics["rollout/tis_weight_mean"] = F.masked_mean(tis, mask).item()
        metrics["rollout/tis_capped_frac"] = F.masked_mean((tis >= tis_cap).float(), mask).item()
    return metrics


def nonfinite_report(step: int, update: int, batch: TrainBatch, mini: Tensor, stats: Mapping[str, float],
                     old_logp: Tensor, advantages: Tensor) -> str:
    """One log line on a mini-batch whose loss or gradient was NaN/Inf: where, and its batch's statistics."""
    def bad(values: Tensor) -> int:
        return int((~torch.isfinite(values)).sum())

    if len(mini) == 0:
        return f"step {step + 1} update {update + 1}: non-finite loss or gradient (no rows on this rank)"
    lengths, rewards = batch.response_mask[mini].sum(-1), batch.rewards[mini]
    return (f"step {step + 1} update {update + 1}: non-finite loss or gradient (pg_loss {stats.get('actor/pg_loss')})"
            f" on {len(mini)} rows: rewards {[round(r, 3) for r in rewards.tolist()[:8]]} ({bad(rewards)} non-finite),"
            f" advantages {bad(advantages[mini])} non-finite, old log-probs {bad(old_logp[mini])} non-finite,"
            f" response lengths {int(lengths.min())}-{int(lengths.max())}")
