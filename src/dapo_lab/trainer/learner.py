"""DAPOLearner: one DAPO step, top to bottom, in plain PyTorch (no Lightning).

A step (DAPO Algorithm 1), in the order of this file:

    shared = collect_groups(step)     # sample prompts → G responses each → grade → shape rewards (overlong) →
                                      # keep groups with 0 < #correct < G, generate more until the batch is full;
                                      # then deal the batch's groups out to the ranks, balanced (sharing.py)
    old, ref = score(batch)           # π_old once: a trainer forward, or the engine's own sampling log-probs
    advantages = advantage(rewards)   # group-normalised (Eq. 9); a KL-in-reward penalty first, if any
    update(batch, old, advantages)    # ppo_epochs × prompts/mini_batch optimizer updates, each accumulated
                                      # exactly over micro-batches with the mini-batch's global counts

``DAPOModule`` (``trainer/module.py``) calls :meth:`DAPOLearner.step` once per Lightning step and logs what it
returns; tests and notebooks call it directly with a :class:`~dapo_lab.trainer.optimization.PlainOptimization`.

Hang-safe by construction (STYLE #16): every rank runs the same collectives in the same order. Generation rounds
are decided on global counts; the batch is dealt out so ranks hold equal numbers of groups (± one); every update
runs the same number of micro-batch forward/backward passes on every rank (the largest count over ranks — a rank
short of rows runs zero-weight dummy passes, forward and backward executed, loss × 0), because under FSDP or
ZeRO-3 each forward and backward is itself a collective; a rank with nothing to train runs only dummies.

Simplifications, and why:
- Rollout and training alternate in one process (colocated): on CPU two torch processes fight for cores.
- Every step makes the same number of optimizer updates, ``ppo_epochs × prompts_per_step / mini_batch_prompts``,
  whatever dynamic sampling collected (a short batch gives smaller mini-batches), so every rank steps its
  optimizer the same number of times.
- Mini-batches are random rows of the step's batch, not whole groups: advantages are computed per group first.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from dapo_lab.algo import functional as F
from dapo_lab.rollout.base import SamplingParams
from dapo_lab.trainer.balance import micro_batches
from dapo_lab.trainer.distributed import all_reduce_max, all_reduce_sum, global_count, rank, world_size
from dapo_lab.trainer.evaluation import Evaluator
from dapo_lab.trainer.groups import Group, TrainBatch, assemble, decode_responses, split_groups
from dapo_lab.trainer.metrics import (
    ROUND_REDUCTIONS,
    UPDATE_REDUCTIONS,
    EntropyTally,
    batch_metrics,
    nonfinite_report,
    reduce_rows,
)
from dapo_lab.trainer.optimization import Optimization
from dapo_lab.trainer.prompts import PromptSet, PromptStream
from dapo_lab.trainer.settings import (
    BatchSettings,
    EvalSettings,
    GenerationSettings,
    RolloutCorrection,
)
from dapo_lab.trainer.sharing import SharedBatch, share_groups
from dapo_lab.trainer.teacher_forced import response_logprobs

log = logging.getLogger(__name__)


class NonFiniteTraining(RuntimeError):
    """Too many optimizer updates in a row had a NaN/Inf loss or gradient (each was skipped)."""


def _width(batch: TrainBatch, rows: Tensor) -> int:
    """The longest response among ``rows`` (at least 1): the width their passes need."""
    return max(1, int(batch.response_mask[rows].sum(-1).max())) if len(rows) else 1


class DAPOLearner:
    """The policy and the DAPO step. Receives built components (``dapo_lab.build.build_learner``); never reads
    the raw config. Its state between steps — the prompt stream's position and dynamic sampling's surplus groups —
    is :meth:`state_dict`."""

    def __init__(self, *, model: torch.nn.Module, tokenizer: Any, train: PromptSet, eval: PromptSet, reward: Any,
                 rollout: Any, clip: Any, loss: Any, advantage: Any, kl: Any, overlong: Any, sampling: Any,
                 batch: BatchSettings, generation: GenerationSettings, evaluation: EvalSettings,
                 rollout_correction: RolloutCorrection, seed: int = 1,
                 ref_model: torch.nn.Module | None = None, max_consecutive_skips: int = 5) -> None:
        self.model, self.tokenizer, self.ref_model = model, tokenizer, ref_model
        self.train = train
        self.reward, self.rollout, self.clip, self.loss = reward, rollout, clip, loss
        self.advantage, self.kl, self.overlong, self.sampling = advantage, kl, overlong, sampling
        self.batch_cfg, self.gen_cfg, self.seed = batch, generation, seed
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.rollout.attach(model, eos_id=tokenizer.eos_token_id, pad_id=self.pad_id)
        # Where π_old comes from ("engine" or "recompute") and the TIS cap: settings of the loss, not the engine.
        self.old_logprobs = rollout_correction.resolve(bool(rollout.logprobs_match_trainer))
        self.tis_cap = rollout_correction.tis_cap
        # Wraps every generation call: a sharded strategy gathers the full weights there, because the ranks' decode
        # loops run different numbers of forwards (responses end at different lengths). Set by DAPOModule.
        self.generation_context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
        self.evaluator = Evaluator(rollout, reward, eval, evaluation, generation.max_new_tokens, tokenizer,
                                   lambda: self.generation_context())
        self.stream = PromptStream(len(train), seed)
        self.surplus: list[Group] = []  # carried to the next step; the same list on every rank
        self.max_consecutive_skips, self.consecutive_skips = max_consecutive_skips, 0
        self.informative_frac: float | None = None  # running fraction of generated groups kept (oversampling)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _engine_group(self) -> tuple[int, int, bool]:
        """(this rank's engine, number of engines, whether it is its engine's first rank). An engine serves
        ``rollout.tensor_parallel_size`` consecutive ranks (vLLM tensor parallelism): they generate the same prompts
        together, and only the first contributes the groups (the balanced deal then spreads them over all ranks)."""
        tp = max(1, int(getattr(self.rollout, "tensor_parallel_size", 1) or 1))
        if world_size() % tp:
            raise ValueError(f"rollout.tensor_parallel_size={tp} must divide the number of processes {world_size()}")
        return rank() // tp, world_size() // tp, rank() % tp == 0

    def _step_seed(self, step: int, round_index: int, per_rank: bool = True) -> int:
        """A seed per (step, round), and per engine unless ``per_rank=False`` (what all ranks must draw alike)."""
        rank_term = self._engine_group()[0] * 7919 if per_rank else 0
        return (self.seed * 1_000_003 + step * 1009 + round_index * 7 + rank_term) % (2**31)

    # ------------------------------------------------------------------ the step
    def step(self, step: int, optimization: Optimization) -> dict[str, float]:
        """Run DAPO step ``step`` (0-based: the number of steps completed before it); returns its metrics."""
        t_start = time.perf_counter()
        shared, metrics = self.collect_groups(step)
        self.rollout.sleep()  # e.g. vLLM frees its KV cache on GPU while the trainer updates
        updates: list[dict[str, float]] = []
        if shared.total == 0:
            optimization.skip_step()  # the bound hit with nothing informative anywhere: log it, never crash
        else:  # a rank whose share is empty still runs every pass of the update, as zero-weight dummies
            batch = assemble(shared.groups, self.pad_id, shared.positions, shared.total, self.batch_cfg.group_size)
            t0 = time.perf_counter()
            old_logp, entropy, ref_logp = self.score(batch)
            metrics["time/old_logprob"] = time.perf_counter() - t0
            advantages = torch.zeros(0)
            if len(batch):
                rewards = batch.rewards
                if ref_logp is not None:
                    rewards = rewards - self.kl.sequence_penalty(old_logp, ref_logp, batch.response_mask)
                advantages, adv_metrics = self.advantage(rewards, self.batch_cfg.group_size)
                metrics.update({k: float(v) for k, v in adv_metrics.items()})
                carried_rows = int(metrics["sampling/carried_groups"]) * self.batch_cfg.group_size
                metrics.update(batch_metrics(batch, old_logp, entropy, loss=self.loss, carried_rows=carried_rows,
                                             recomputed=self.old_logprobs == "recompute", tis_cap=self.tis_cap))
            t0 = time.perf_counter()
            updates, tallies = self.update(batch, old_logp, ref_logp, advantages, step, optimization)
            metrics["time/update"] = time.perf_counter() - t0
            if entropy is None and len(batch):  # measured in the first epoch's update forwards, every token once
                metrics["train/entropy"] = sum(t.total for t in tallies) / max(sum(t.tokens for t in tallies), 1.0)
            metrics["perf/update_tokens_per_s"] = batch.response_mask.sum().item() * self.batch_cfg.ppo_epochs / max(
                metrics["time/update"], 1e-9)
        metrics.update(reduce_rows(updates, UPDATE_REDUCTIONS))
        metrics["actor/num_updates"] = sum("actor/skipped_updates" not in u for u in updates)  # applied
        metrics["actor/skipped_updates"] = float(len(updates) - metrics["actor/num_updates"])
        metrics["time/step"] = time.perf_counter() - t_start
        if metrics.get("time/generate"):
            metrics["perf/rollout_tokens_per_s"] = metrics["rollout/tokens"] / metrics["time/generate"]
        return metrics

    # ------------------------------------------------------------------ 1. collect: rollout + dynamic sampling
    def collect_groups(self, step: int) -> tuple[SharedBatch, dict[str, float]]:
        """Generate until the ranks together hold ``prompts_per_step × world`` groups that pass the sampling filter
        (with the surplus carried from the last step), or the bound hits; then take this rank's balanced share of the
        step's batch. Groups beyond the batch are carried to the next step."""
        target = self.batch_cfg.prompts_per_step
        carried = len(self.surplus)
        fresh: list[tuple[int, Group]] = []  # (round, group): this rank's kept groups of this step
        rounds, round_metrics = 0, []
        _, engines, _ = self._engine_group()
        have = carried  # the carried surplus is the same on every rank
        while rounds < self.sampling.max_gen_batches and have < target * world_size():
            prompts = self.sampling.round_prompts(target * world_size() - have, engines, self.batch_cfg.gen_prompts,
                                                  self.informative_frac)
            kept, metrics = self._generate_round(step, rounds, prompts)
            fresh += [(rounds, g) for g in kept]
            round_metrics.append({**metrics, "sampling/round_prompts": prompts})
            rounds += 1
            now = carried + global_count(len(fresh), self.device)
            # The running fraction of generated groups that were kept, over all engines (the same on every rank).
            kept_frac = (now - have) / (prompts * engines)
            self.informative_frac = kept_frac if self.informative_frac is None else (
                0.5 * self.informative_frac + 0.5 * kept_frac)
            have = now
            if not self.sampling.dynamic:
                break
        shared = share_groups(self.surplus, fresh, target)
        self.surplus = shared.surplus
        metrics = reduce_rows(round_metrics, ROUND_REDUCTIONS)
        metrics.update({"sampling/num_gen_batches": rounds, "sampling/batch_groups": shared.total,
                        "sampling/surplus_groups": len(self.surplus), "sampling/carried_groups": carried,
                        "sampling/bound_hit": float(shared.total < target * world_size()),
                        "sampling/rank_groups": len(shared.groups)})
        return shared, metrics

    def _generate_round(self, step: int, round_index: int, prompts: int) -> tuple[list[Group], dict[str, float]]:
        b = self.batch_cfg
        # One global order of prompts; each engine (a rank, or a tensor-parallel group) takes its slice of a round.
        engine, engines, leader = self._engine_group()
        indices = self.stream.take(prompts * engines)[engine * prompts :][:prompts]
        params = SamplingParams(temperature=self.gen_cfg.temperature, top_p=self.gen_cfg.top_p,
                                max_new_tokens=self.gen_cfg.max_new_tokens, n=b.group_size,
                                seed=self._step_seed(step, round_index))
        t0 = time.perf_counter()
        with self.generation_context():
            out = self.rollout.generate([self.train.ids(i) for i in indices], params)
        t1 = time.perf_counter()
        texts = decode_responses(self.tokenizer, out.response_ids, out.response_mask)
        truths = [self.train.ground_truth(i) for i in indices for _ in range(b.group_size)]
        scores, correct, reward_metrics = self.reward.score_batch(texts, truths)
        t2 = time.perf_counter()
        scores_t = torch.tensor(scores, dtype=torch.float32)  # [N]
        correct_t = torch.tensor(correct, dtype=torch.bool)  # [N]
        lengths = out.lengths  # [N]
        shaped, in_loss, overlong_metrics = self.overlong(scores_t, lengths, out.truncated)
        values = correct_t.float() if self.sampling.metric == "acc" else shaped
        keep, sampling_metrics = self.sampling.select(values, b.group_size)  # bool [N / G]
        groups = split_groups(out, b.group_size, shaped, correct_t, in_loss)
        kept = [g for g, k in zip(groups, keep.tolist()) if k] if leader else []  # one copy per engine
        metrics = {"rollout/acc": correct_t.float().mean().item(), "rollout/reward_mean": scores_t.mean().item(),
                   "rollout/response_len_mean": lengths.float().mean().item(),
                   "rollout/response_len_max": lengths.max().item(),
                   "rollout/truncated_frac": out.truncated.float().mean().item(),
                   "time/generate": t1 - t0, "time/grade": t2 - t1, "rollout/tokens": lengths.sum().item(),
                   **{k: float(v) for k, v in {**reward_metrics, **overlong_metrics, **sampling_metrics}.items()}}
        return kept, metrics

    # ------------------------------------------------------------------ 2. score: π_old (and π_ref) once per step
    def _logprobs(self, model: torch.nn.Module, batch: TrainBatch, rows: Tensor,
                  with_entropy: bool = False) -> tuple[Tensor, Tensor | None]:
        """Log-probs (and entropy) ``[n, w]`` of ``rows``, ``w`` their longest response; each row is its prompt and its
        own response, padded only past its end to the pass's longest (``teacher_forced.pack``: the budget's width)."""
        width = _width(batch, rows)
        return response_logprobs(model, [batch.prompt_ids[i] for i in rows.tolist()], batch.response_ids[rows, :width],
                                 pad_id=self.pad_id, response_lengths=batch.response_mask[rows].sum(-1).tolist(),
                                 temperature=self.gen_cfg.temperature, with_entropy=with_entropy,
                                 chunk_tokens=self.batch_cfg.logprob_chunk_tokens)

    def _dummy_logprobs(self, model: torch.nn.Module) -> Tensor:
        """A one-token forward: the collectives of a real pass (a sharded model gathers every layer), no data."""
        return response_logprobs(model, [[self.pad_id]], torch.full((1, 1), self.pad_id), pad_id=self.pad_id)[0]

    def _micro_batches(self, batch: TrainBatch, rows: Tensor) -> list[Tensor]:
        """``rows`` of ``batch`` cut into forward/backward passes (row count, or the token budget)."""
        lengths = [0] * len(rows)
        if self.batch_cfg.max_tokens_per_micro_batch:
            every = batch.row_lengths()  # once: it sums the whole [N, R] mask (per row, 3 s a mini-batch at 1k x 20k)
            lengths = [every[i] for i in rows.tolist()]
        return [rows[torch.tensor(part, dtype=torch.long)] for part in
                micro_batches(lengths, self.batch_cfg.micro_batch_size, self.batch_cfg.max_tokens_per_micro_batch)]

    @torch.no_grad()
    def score(self, batch: TrainBatch) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Old (and reference) log-probs ``[N, R]`` and entropy ``[N, R]``, micro-batched; every rank runs as many
        forwards as the busiest (dummies for the rest).

        With engine old log-probs there is no forward here (entropy ``None``: the update measures it) unless a
        reference model needs one.
        """
        from_engine = self.old_logprobs == "engine"
        shape = batch.response_ids.shape
        old = batch.engine_logprobs.clone() if from_engine else torch.zeros(shape)
        entropy = None if from_engine else torch.zeros(shape)
        ref = torch.zeros(shape) if self.ref_model is not None else None
        if from_engine and ref is None:
            return old, entropy, ref
        micros = self._micro_batches(batch, torch.arange(len(batch)))
        for k in range(int(all_reduce_max(torch.tensor(len(micros), device=self.device)).item())):
            if k >= len(micros):  # this rank is out of rows: keep the other ranks' collectives company
                if not from_engine:
                    self._dummy_logprobs(self.model)
                if ref is not None:
                    self._dummy_logprobs(self.ref_model)
                continue
            rows = micros[k]
            if not from_engine:
                lp, h = self._logprobs(self.model, batch, rows, with_entropy=True)  # [n, w]
                old[rows, : lp.shape[1]], entropy[rows, : lp.shape[1]] = lp.cpu(), h.cpu()
            if ref is not None:
                lp = self._logprobs(self.ref_model, batch, rows)[0]  # [n, w]
                ref[rows, : lp.shape[1]] = lp.cpu()
        return old, entropy, ref

    # ------------------------------------------------------------------ 3. update
    def update(self, batch: TrainBatch, old_logp: Tensor, ref_logp: Tensor | None, advantages: Tensor, step: int,
               optimization: Optimization) -> tuple[list[dict[str, float]], list[EntropyTally]]:
        """``ppo_epochs × prompts_per_step / mini_batch_prompts`` optimizer updates over shuffled mini-batches of
        the *global* batch's rows (one permutation, the same on every rank); each rank accumulates its own rows of
        each mini-batch. Returns per-update statistics and, with engine old log-probs, the entropy measured in the
        first epoch's forwards (one tally per update)."""
        per_epoch = self.batch_cfg.prompts_per_step // self.batch_cfg.mini_batch_prompts
        minis = self.mini_batches(batch, step)
        updates, tallies = [], []
        for i, mini in enumerate(minis):
            optimization.zero_grad()
            tally = EntropyTally() if self.old_logprobs == "engine" and i < per_epoch else None
            stats = self.accumulate_gradients(batch, mini, old_logp, ref_logp, advantages, optimization, tally)
            # NaN/Inf anywhere: every rank skips this update (one collective decides), the optimizer untouched.
            finite = all(math.isfinite(v) for k, v in stats.items() if k in ("actor/pg_loss", "actor/kl_loss"))
            finite = not bool(all_reduce_max(torch.tensor(int(not finite), device=self.device)).item())
            if not finite and not optimization.can_skip:
                raise NonFiniteTraining(nonfinite_report(step, i, batch, mini, stats, old_logp, advantages)
                                        + "; this strategy cannot skip an update, so the run stops here")
            norm = optimization.step(last=i == len(minis) - 1, skip=not finite)
            if math.isfinite(norm):
                stats["actor/grad_norm"], self.consecutive_skips = norm, 0
                updates.append(stats)
            else:
                report = nonfinite_report(step, i, batch, mini, stats, old_logp, advantages)
                log.warning(report + "; skipped (optimizer untouched)")
                self.consecutive_skips += 1
                updates.append({"actor/skipped_updates": 1.0, "actor/dummy_passes": stats["actor/dummy_passes"]})
                if self.consecutive_skips > self.max_consecutive_skips:
                    raise NonFiniteTraining(f"{self.consecutive_skips} updates in a row had a NaN/Inf loss or "
                                            f"gradient (optim.max_consecutive_skips={self.max_consecutive_skips}); "
                                            f"the last was: {report}")
            if tally is not None:
                tallies.append(tally)
        return updates, tallies

    def mini_batches(self, batch: TrainBatch, step: int) -> list[Tensor]:
        """This rank's rows of each optimizer update of step ``step``, in order: ``ppo_epochs`` shuffles of the *global*
        batch (one permutation per epoch, drawn alike on every rank), each cut into ``prompts_per_step /
        mini_batch_prompts`` mini-batches."""
        b = self.batch_cfg
        gen = torch.Generator().manual_seed(self._step_seed(step, 10_000, per_rank=False))
        per_epoch = b.prompts_per_step // b.mini_batch_prompts
        local_of = torch.full((batch.global_size,), -1, dtype=torch.long)  # global row -> this rank's row (or -1)
        local_of[batch.global_rows] = torch.arange(len(batch))
        minis = []
        for _ in range(b.ppo_epochs):
            for global_mini in torch.randperm(batch.global_size, generator=gen).tensor_split(per_epoch):
                local = local_of[global_mini]
                minis.append(local[local >= 0])  # this rank's rows of the mini-batch, in the permutation's order
        return minis

    def _global_counts(self, mini_mask: Tensor) -> dict[str, Tensor]:
        """The loss's denominators over the whole mini-batch: every micro-batch, every rank (``mini_mask``: this
        rank's ``bool [n, R]`` loss mask, possibly empty)."""
        return {name: all_reduce_sum(F.LOSS_COUNTS[name](mini_mask).to(self.device))
                for name in self.loss.global_counts}

    def accumulate_gradients(self, batch: TrainBatch, mini: Tensor, old_logp: Tensor, ref_logp: Tensor | None,
                             advantages: Tensor, optimization: Optimization,
                             entropy: EntropyTally | None = None) -> dict[str, float]:
        """Backward over the micro-batches of one mini-batch (this rank's rows ``mini``); gradients sum to the
        mini-batch's. Every rank runs as many passes as the busiest rank: the rest are zero-weight dummies.

        ``entropy``: also tally the policy's entropy over the rows' response tokens, from the same forwards.
        """
        loss_mask = batch.loss_mask  # bool [N, R]
        mini_mask = loss_mask[mini]
        counts = self._global_counts(mini_mask)
        micros = self._micro_batches(batch, mini)
        passes = int(all_reduce_max(torch.tensor(len(micros), device=self.device)).item())
        stats: dict[str, float] = {"actor/dummy_passes": float(passes - len(micros))}
        for k, rows in enumerate(micros):
            w = _width(batch, rows)
            lm = loss_mask[rows, :w].to(self.device)  # bool [n, w]
            logp, ent = self._logprobs(self.model, batch, rows, with_entropy=entropy is not None)  # [n, w]
            if entropy is not None:
                entropy.add(ent, batch.response_mask[rows, :w].to(self.device))
            old = old_logp[rows, :w].to(self.device)  # [n, w]
            token_loss, clip_metrics = self.clip(logp, old, advantages[rows].to(self.device), lm)  # [n, w]
            if self.tis_cap is not None:
                # Truncated importance sampling: re-weight tokens sampled under the engine's numerics.
                token_loss = token_loss * F.truncated_importance_weights(
                    old, batch.engine_logprobs[rows, :w].to(self.device), cap=self.tis_cap)
            pg_loss = self.loss(token_loss, lm, counts)
            loss = pg_loss
            kl_term = None if ref_logp is None else self.kl.token_loss(logp, ref_logp[rows, :w].to(self.device))
            if kl_term is not None:
                kl_loss = self.loss(kl_term, lm, counts)
                loss = loss + kl_loss
                stats["actor/kl_loss"] = stats.get("actor/kl_loss", 0.0) + kl_loss.item()
            optimization.backward(loss, sync=k == passes - 1)  # this rank's share of the mini-batch loss
            weight = lm.sum().item() / max(mini_mask.sum().item(), 1)
            stats["actor/pg_loss"] = stats.get("actor/pg_loss", 0.0) + pg_loss.item()
            for name, value in clip_metrics.items():
                stats[name] = stats.get(name, 0.0) + value.item() * weight
        for k in range(len(micros), passes):  # forward and backward executed, loss × 0: the collectives line up
            optimization.backward(self._dummy_logprobs(self.model).sum() * 0.0, sync=k == passes - 1)
        return stats

    # ------------------------------------------------------------------ state and lifecycle
    def state_dict(self) -> dict[str, Any]:
        """Plain dicts of tensors and lists: loadable with ``torch.load(weights_only=True)``."""
        return {"stream": self.stream.state_dict(), "surplus": [vars(g).copy() for g in self.surplus],
                "consecutive_skips": self.consecutive_skips, "informative_frac": self.informative_frac}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "stream" in state:
            self.stream.load_state_dict(state["stream"])
        self.surplus = [Group(**g) for g in state.get("surplus", [])]
        self.consecutive_skips = int(state.get("consecutive_skips", 0))
        self.informative_frac = state.get("informative_frac")

    def close(self) -> None:
        """Release the rollout engine and the reward's worker processes."""
        self.rollout.close()
        if hasattr(self.reward, "close"):
            self.reward.close()
