"""Evaluation with the paper's decoding: avg@k and unbiased pass@k from k samples per prompt (T=1.0, top_p=0.7),
greedy accuracy, response length and truncation, over a (possibly sharded) eval split.

Each rank evaluates its shard and keeps per-prompt statistics; :meth:`Evaluator.summarize` sums them over ranks,
so the metrics are those of the whole split whatever the number of ranks.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import torch

from dapo_lab.rollout.base import SamplingParams
from dapo_lab.trainer.distributed import all_reduce_sum
from dapo_lab.trainer.groups import decode_responses
from dapo_lab.trainer.metrics import pass_at_k
from dapo_lab.trainer.prompts import PromptSet
from dapo_lab.trainer.settings import EvalSettings


def eval_metric_names(settings: EvalSettings) -> list[str]:
    """The ``eval/*`` metrics an evaluation with these settings logs (what ``objective`` may name).

    >>> eval_metric_names(EvalSettings(k=4, greedy=False))
    ['eval/avg@4', 'eval/pass@4', 'eval/response_len_mean', 'eval/truncated_frac', 'eval/num_prompts']
    """
    k = settings.k
    names = [f"eval/avg@{k}", f"eval/pass@{k}", "eval/response_len_mean", "eval/truncated_frac", "eval/num_prompts"]
    return names + (["eval/greedy_acc"] if settings.greedy else [])


class Evaluator:
    """Evaluates the engine's current policy on ``prompts`` (``settings``: :class:`EvalSettings`)."""

    def __init__(self, rollout: Any, reward: Any, prompts: PromptSet, settings: EvalSettings, max_new_tokens: int,
                 tokenizer: Any,
                 generation_context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext) -> None:
        self.rollout, self.reward, self.prompts, self.settings = rollout, reward, prompts, settings
        self.max_new_tokens, self.tokenizer, self.generation_context = max_new_tokens, tokenizer, generation_context

    def __len__(self) -> int:
        """How many eval prompts a full evaluation covers (``max_prompts`` caps the split)."""
        cap = self.settings.max_prompts
        return len(self.prompts) if cap is None else min(cap, len(self.prompts))

    def _correct(self, out: Any, truths: list[str]) -> list[bool]:
        texts = decode_responses(self.tokenizer, out.response_ids, out.response_mask)
        return self.reward.score_batch(texts, truths)[1]

    @torch.no_grad()
    def evaluate(self, indices: list[int]) -> list[dict[str, float]]:
        """Per-prompt statistics (correct samples, pass@k, mean length, truncated fraction, greedy correctness).
        Index -1 is padding (a rank with fewer prompts): generated like prompt 0, so every rank runs the same
        generation calls, and left out of the statistics."""
        e = self.settings
        counted = [i >= 0 for i in indices]
        indices = [max(i, 0) for i in indices]
        prompts = [self.prompts.ids(i) for i in indices]
        truths = [self.prompts.ground_truth(i) for i in indices]
        with self.generation_context():
            out = self.rollout.generate(prompts, SamplingParams(e.temperature, e.top_p, self.max_new_tokens, n=e.k,
                                                                seed=e.seed + indices[0]))
        correct = torch.tensor(self._correct(out, [t for t in truths for _ in range(e.k)]),
                               dtype=torch.float32).view(len(indices), e.k)  # [P, k]
        lengths = out.lengths.float().view(len(indices), e.k)  # [P, k]
        truncated = out.truncated.view(len(indices), e.k).float()  # [P, k]
        greedy = [float("nan")] * len(indices)
        if e.greedy:
            with self.generation_context():
                g = self.rollout.generate(prompts, SamplingParams(0.0, 1.0, self.max_new_tokens, n=1))
            greedy = [float(c) for c in self._correct(g, truths)]
        return [{"index": indices[row], "correct": correct[row].sum().item(), "len": lengths[row].mean().item(),
                 "truncated": truncated[row].mean().item(), "greedy": greedy[row]}
                for row in range(len(indices)) if counted[row]]

    @property
    def interim_limit(self) -> int | None:
        """How many prompts an interim evaluation covers (None: every evaluation is a full one)."""
        n = self.settings.interim_prompts
        return None if n is None or n >= len(self) else n

    def runs_batch(self, batch_index: int, world: int, full: bool) -> bool:
        """Whether batch ``batch_index`` of every rank's eval loader is generated: always in a full evaluation; in an
        interim one when it holds a prompt below the limit on some rank (its smallest index, rank 0's first, is
        ``batch_index · batch_prompts · world``), so all ranks decide alike and their collectives line up.

        >>> ev = Evaluator(None, None, list(range(500)), EvalSettings(batch_prompts=64, interim_prompts=128), 8, None)
        >>> [ev.runs_batch(b, world=1, full=False) for b in range(4)], ev.runs_batch(3, world=1, full=True)
        ([True, True, False, False], True)
        >>> [ev.runs_batch(b, world=2, full=False) for b in range(2)]  # rank 0's batch 1 starts at prompt 128
        [True, False]
        """
        limit = self.interim_limit
        return full or limit is None or batch_index * self.settings.batch_prompts * world < limit

    def summarize_evaluation(self, rows: list[dict[str, float]], full: bool,
                             device: torch.device | str = "cpu") -> dict[str, float]:
        """What one evaluation logs: ``eval/*`` over the whole split when ``full``, and ``eval_interim/*`` over the
        interim prompts at every evaluation (when ``interim_prompts`` is set). Every rank must call it."""
        metrics = self.summarize(rows, device) if full else {}
        limit = self.interim_limit
        if limit is not None:
            interim = self.summarize([r for r in rows if r["index"] < limit], device)
            metrics.update({key.replace("eval/", "eval_interim/", 1): v for key, v in interim.items()})
        return metrics

    def summarize(self, rows: list[dict[str, float]], device: torch.device | str = "cpu") -> dict[str, float]:
        """The ``eval/*`` metrics of the whole split: per-prompt statistics summed over this rank's ``rows`` and
        over ranks (an all-reduce: every rank must call it). Empty when no rank evaluated anything."""
        k = self.settings.k
        sums = torch.tensor([[r["correct"], pass_at_k(k, int(r["correct"]), k), r["len"], r["truncated"],
                              r["greedy"] if self.settings.greedy else 0.0, 1.0] for r in rows] or [[0.0] * 6],
                            dtype=torch.float64).sum(0)
        correct, passed, length, truncated, greedy, n = all_reduce_sum(sums.to(device)).tolist()
        if n == 0:
            return {}
        values = [correct / (n * k), passed / n, length / n, truncated / n, n] + ([greedy / n] * self.settings.greedy)
        metrics = dict(zip(eval_metric_names(self.settings), values, strict=True))
        return {key: float(v) for key, v in metrics.items() if not math.isnan(v)}
