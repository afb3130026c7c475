"""DAPOModule: one DAPO training step per Lightning step, with manual optimization.

A step (DAPO Algorithm 1): sample prompts → generate ``G`` responses each → grade → shape rewards
(overlong) → keep informative groups, generating more until the batch is full (dynamic sampling) →
group advantages → old log-probs once → ``ppo_epochs × prompts/mini_batch`` AdamW updates over shuffled
mini-batches, each accumulated exactly over micro-batches with the mini-batch's global token/sequence
counts (all-reduced over data-parallel ranks).

Simplifications, and why:
- Rollout and training alternate in one process (colocated): on CPU two torch processes fight for cores.
- The old policy's log-probs are recomputed by the trainer (as verl does) rather than taken from the
  engine; the engine's own log-probs are kept only to log the rollout/train mismatch.
- Lightning's ``global_step`` counts optimizer steps under manual optimization; only the step's last
  update goes through Lightning's optimizer wrapper, so ``global_step`` counts DAPO steps (the paper's x-axis).
  This assumes a precision without a grad scaler (32 or bf16-mixed).
"""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

from dapo_lab.algo import functional as F
from dapo_lab.groups import Group, TrainBatch, assemble, split_groups
from dapo_lab.metrics import pass_at_k
from dapo_lab.policy import response_logprobs
from dapo_lab.prompt_stream import PromptStream
from dapo_lab.rollout.base import SamplingParams
from dapo_lab.settings import BatchSettings, EvalSettings, GenerationSettings, OptimSettings
from dapo_lab.strategy import GradSyncDDPStrategy, sync_gradients


def _all_reduce_sum(value: Tensor) -> Tensor:
    if dist.is_available() and dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value)
    return value


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class DAPOModule(L.LightningModule):
    """The policy and the DAPO step. Receives built components; never reads the raw config."""

    def __init__(self, *, model: torch.nn.Module, tokenizer: Any, train_examples: list, eval_examples: list,
                 render, reward, rollout, clip, loss, advantage, kl, overlong, sampling,
                 batch: BatchSettings, optim: OptimSettings, generation: GenerationSettings, evaluation: EvalSettings,
                 seed: int = 1, ref_model: torch.nn.Module | None = None) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.model, self.tokenizer, self.ref_model = model, tokenizer, ref_model
        self.train_examples, self.eval_examples, self.render = train_examples, eval_examples, render
        self.reward, self.rollout, self.clip, self.loss_agg = reward, rollout, clip, loss
        self.advantage, self.kl, self.overlong, self.sampling = advantage, kl, overlong, sampling
        self.batch_cfg, self.optim_cfg, self.gen_cfg, self.eval_cfg = batch, optim, generation, evaluation
        self.seed = seed
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.rollout.attach(model, eos_id=tokenizer.eos_token_id, pad_id=self.pad_id)
        self.stream = PromptStream(len(train_examples), seed)
        self.surplus: list[Group] = []
        self._weight_sync_s = 0.0
        self._prompt_cache: dict[tuple[str, int], list[int]] = {}
        self._eval_rows: list[dict[str, float]] = []

    # ------------------------------------------------------------------ plumbing
    def train_dataloader(self) -> torch.utils.data.DataLoader:
        # Prompts come from self.stream (resumable, refillable); Lightning only counts steps. One "epoch" is
        # the span between evaluations, so validation runs every eval.every steps.
        return torch.utils.data.DataLoader(range(self.eval_cfg.every), batch_size=None)

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        count = len(self.eval_examples) if self.eval_cfg.max_prompts is None else min(
            self.eval_cfg.max_prompts, len(self.eval_examples))
        return torch.utils.data.DataLoader(range(count), batch_size=self.eval_cfg.batch_prompts)

    def configure_optimizers(self):
        o = self.optim_cfg
        opt = torch.optim.AdamW(self.model.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        total = self.trainer.max_steps if self._trainer is not None and self.trainer.max_steps > 0 else None
        if o.decay != "constant" and total is None:
            raise ValueError("optim.decay needs the run's length: set trainer.max_steps")
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: o.lr_factor(s, total))
        return [opt], [{"scheduler": sched, "interval": "step"}]

    def on_train_start(self) -> None:
        self.model.train()  # from_pretrained returns eval mode (matters for models with dropout)

    def sync_rollout_weights(self) -> float:
        """Make the rollout engine sample from the current policy (vLLM holds its own copy; HF shares it).

        Lightning's ``strategy=fsdp`` wraps this whole module in one FSDP unit: gather the shards first. That
        gather is refused inside the wrapped forward (``training_step``), so this runs from the
        ``on_train_batch_start`` / ``on_validation_epoch_start`` hooks, which Lightning calls outside it (a
        GPU run with ``trainer=gpu_fsdp`` failed with "Cannot manually unshard parameters during
        forward/backward" when it ran inside ``training_step``). Returns the seconds it took."""
        start = time.perf_counter()
        root = self._trainer.model if self._trainer is not None else None
        if isinstance(root, FSDP):
            with FSDP.summon_full_params(root, writeback=False):
                self.rollout.update_weights(self.model)
        else:
            self.rollout.update_weights(self.model)
        return time.perf_counter() - start

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Plain dicts of tensors and lists: loadable with torch.load(weights_only=True).
        checkpoint["dapo_state"] = {"stream": self.stream.state_dict(),
                                    "surplus": [vars(g).copy() for g in self.surplus]}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("dapo_state", {})
        if "stream" in state:
            self.stream.load_state_dict(state["stream"])
        self.surplus = [Group(**g) for g in state.get("surplus", [])]

    def prompt_ids(self, split: str, index: int) -> list[int]:
        key = (split, index)
        if key not in self._prompt_cache:
            example = (self.train_examples if split == "train" else self.eval_examples)[index]
            self._prompt_cache[key] = self.tokenizer(self.render(example), add_special_tokens=False)["input_ids"]
        return self._prompt_cache[key]

    def _decode(self, response_ids: Tensor, mask: Tensor) -> list[str]:
        return self.tokenizer.batch_decode([row[m].tolist() for row, m in zip(response_ids, mask)],
                                           skip_special_tokens=True)

    def _step_seed(self, round_index: int) -> int:
        return (self.seed * 1_000_003 + self.global_step * 1009 + round_index * 7 + _rank() * 7919) % (2**31)

    # ------------------------------------------------------------------ rollout + dynamic sampling
    def _generate_round(self, round_index: int) -> tuple[list[Group], dict[str, float]]:
        b = self.batch_cfg
        # One global order of prompts; each rank takes its own slice of every round.
        indices = self.stream.take(b.gen_prompts * _world_size())[_rank() * b.gen_prompts :][: b.gen_prompts]
        params = SamplingParams(temperature=self.gen_cfg.temperature, top_p=self.gen_cfg.top_p,
                                max_new_tokens=self.gen_cfg.max_new_tokens, n=b.group_size,
                                seed=self._step_seed(round_index))
        t0 = time.perf_counter()
        out = self.rollout.generate([self.prompt_ids("train", i) for i in indices], params)
        t1 = time.perf_counter()
        texts = self._decode(out.response_ids, out.response_mask)
        truths = [self.train_examples[i].ground_truth for i in indices for _ in range(b.group_size)]
        scores, correct, reward_metrics = self.reward.score_batch(texts, truths)
        t2 = time.perf_counter()
        scores_t = torch.tensor(scores, dtype=torch.float32)
        correct_t = torch.tensor(correct, dtype=torch.bool)
        lengths = out.lengths
        shaped, in_loss, overlong_metrics = self.overlong(scores_t, lengths, out.truncated)
        values = correct_t.float() if self.sampling.metric == "acc" else shaped
        keep, sampling_metrics = self.sampling.select(values, b.group_size)
        groups = split_groups(out, b.group_size, shaped, correct_t, in_loss)
        kept = [g for g, k in zip(groups, keep.tolist()) if k]
        metrics = {"rollout/acc": correct_t.float().mean().item(), "rollout/reward_mean": scores_t.mean().item(),
                   "rollout/response_len_mean": lengths.float().mean().item(),
                   "rollout/response_len_max": lengths.max().item(),
                   "rollout/truncated_frac": out.truncated.float().mean().item(),
                   "time/generate": t1 - t0, "time/grade": t2 - t1, "rollout/tokens": lengths.sum().item(),
                   **{k: float(v) for k, v in {**reward_metrics, **overlong_metrics, **sampling_metrics}.items()}}
        return kept, metrics

    def collect_groups(self) -> tuple[list[Group], dict[str, float]]:
        """Generate until ``prompts_per_step`` groups pass the sampling filter (globally), or the bound hits."""
        target = self.batch_cfg.prompts_per_step
        sync_s, self._weight_sync_s = self._weight_sync_s, 0.0  # done in on_train_batch_start
        collected, self.surplus = list(self.surplus), []
        carried = len(collected)
        rounds, round_metrics = 0, []
        while rounds < self.sampling.max_gen_batches:
            global_count = _all_reduce_sum(torch.tensor(len(collected), device=self.device)).item()
            if global_count >= target * _world_size():
                break
            kept, metrics = self._generate_round(rounds)
            collected += kept
            round_metrics.append(metrics)
            rounds += 1
            if not self.sampling.dynamic:
                break
        batch, self.surplus = collected[:target], collected[target:]
        summed = {"rollout/tokens", "time/generate", "time/grade"}
        metrics = {k: (sum if k in summed else lambda v: sum(v) / len(v))([m[k] for m in round_metrics])
                   for k in (round_metrics[0] if round_metrics else {})}
        metrics["time/weight_sync"] = sync_s
        metrics.update({"sampling/num_gen_batches": rounds, "sampling/batch_groups": len(batch),
                        "sampling/surplus_groups": len(self.surplus), "sampling/carried_groups": carried,
                        "sampling/bound_hit": float(len(batch) < target)})
        return batch, metrics

    # ------------------------------------------------------------------ the step
    def _logprobs(self, model: torch.nn.Module, batch: TrainBatch, rows: Tensor, with_entropy: bool = False):
        return response_logprobs(model, [batch.prompt_ids[i] for i in rows.tolist()], batch.response_ids[rows],
                                 pad_id=self.pad_id, temperature=self.gen_cfg.temperature, with_entropy=with_entropy)

    def _old_from_engine(self) -> bool:
        return getattr(self.rollout, "old_logprobs", "recompute") == "engine"

    @torch.no_grad()
    def _score_batch(self, batch: TrainBatch) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Old (and reference) log-probs ``[N, R]`` and entropy ``[N, R]``, once per step, micro-batched.

        With ``rollout.old_logprobs="engine"`` the old log-probs are the engine's and there is no forward
        here (entropy ``None``: the update measures it) unless a reference model needs one.
        """
        from_engine = self._old_from_engine()
        old, ent, ref = [], [], []
        for rows in torch.arange(len(batch)).split(self.batch_cfg.micro_batch_size):
            if not from_engine:
                lp, h = self._logprobs(self.model, batch, rows, with_entropy=True)
                old.append(lp.cpu()), ent.append(h.cpu())
            if self.ref_model is not None:
                ref.append(self._logprobs(self.ref_model, batch, rows)[0].cpu())
        if from_engine:
            return batch.engine_logprobs.clone(), None, (torch.cat(ref) if ref else None)
        return torch.cat(old), torch.cat(ent), (torch.cat(ref) if ref else None)

    def training_step(self, _batch: Any, _batch_idx: int) -> None:
        t_start = time.perf_counter()
        groups, metrics = self.collect_groups()
        if hasattr(self.rollout, "sleep"):
            self.rollout.sleep()  # vLLM sleep mode (GPU): free the KV cache while the trainer updates
        global_groups = _all_reduce_sum(torch.tensor(len(groups), device=self.device)).item()
        if global_groups == 0:  # the bound hit with nothing informative anywhere: log it, skip, never crash
            self._finish_step(metrics, updates=[], t_start=t_start)
            return
        if not groups:  # this rank found nothing but others did: take part in their updates with zero grads
            self._finish_step(metrics, self._update(None, None, None, None), t_start)
            return
        batch = assemble(groups, self.pad_id)
        t0 = time.perf_counter()
        old_logp, entropy, ref_logp = self._score_batch(batch)
        metrics["time/old_logprob"] = time.perf_counter() - t0
        rewards = batch.rewards
        if ref_logp is not None:
            rewards = rewards - self.kl.sequence_penalty(old_logp, ref_logp, batch.response_mask)
        advantages, adv_metrics = self.advantage(rewards, self.batch_cfg.group_size)
        mask = batch.response_mask
        metrics.update({k: float(v) for k, v in adv_metrics.items()})
        metrics.update({
            "train/acc": batch.correct.float().mean().item(), "train/reward_mean": batch.rewards.mean().item(),
            "train/token_prob_mean": F.masked_mean(old_logp.exp(), mask).item(),
        })
        if entropy is not None:
            metrics["train/entropy"] = F.masked_mean(entropy, mask).item()
        # The engine/trainer gap on this step's own rollouts only: carried surplus groups (the batch's first
        # groups) were sampled before the last update, so their gap measures staleness, not the engine.
        carried_rows = min(int(metrics["sampling/carried_groups"]), len(groups)) * self.batch_cfg.group_size
        fresh = mask.clone()  # bool [N, R]
        fresh[:carried_rows] = False
        if fresh.any() and not self._old_from_engine():
            gap = (old_logp - batch.engine_logprobs).abs()  # [N, R]
            metrics["rollout/logprob_abs_diff"] = F.masked_mean(gap, fresh).item()
            metrics["rollout/logprob_abs_diff_max"] = gap[fresh].max().item()
        if (cap := getattr(self.rollout, "tis_cap", None)) is not None:
            tis = F.truncated_importance_weights(old_logp, batch.engine_logprobs, cap=cap)  # [N, R]
            metrics["rollout/tis_weight_mean"] = F.masked_mean(tis, mask).item()
            metrics["rollout/tis_capped_frac"] = F.masked_mean((tis >= cap).float(), mask).item()
        t0 = time.perf_counter()
        updates = self._update(batch, old_logp, ref_logp, advantages)
        metrics["time/update"] = time.perf_counter() - t0
        if entropy is None:  # measured in the first epoch's forward passes, over every response token once
            ent_sum, ent_tokens = (sum(u.pop(key, 0.0) for u in updates) for key in ("_entropy_sum", "_entropy_tokens"))
            metrics["train/entropy"] = ent_sum / max(ent_tokens, 1.0)
        metrics["perf/update_tokens_per_s"] = batch.response_mask.sum().item() * self.batch_cfg.ppo_epochs / max(
            metrics["time/update"], 1e-9)
        self._finish_step(metrics, updates, t_start)

    def _update(self, batch: TrainBatch | None, old_logp: Tensor | None, ref_logp: Tensor | None,
                advantages: Tensor | None) -> list[dict]:
        b, opt = self.batch_cfg, self.optimizers()
        gen = torch.Generator().manual_seed(self._step_seed(10_000))
        size = 0 if batch is None else len(batch)
        # A fixed number of updates per epoch, whatever dynamic sampling collected, so that every rank
        # steps the optimizer the same number of times (a short batch gives smaller mini-batches).
        per_epoch = b.prompts_per_step // b.mini_batch_prompts
        minis = [mini for _ in range(b.ppo_epochs)
                 for mini in torch.randperm(size, generator=gen).tensor_split(per_epoch)]
        updates = []
        for i, mini in enumerate(minis):
            opt.zero_grad(set_to_none=True)
            with_entropy = self._old_from_engine() and i < per_epoch  # no old-log-prob pass measured it
            stats = {} if batch is None else self.accumulate_gradients(batch, mini, old_logp, ref_logp, advantages,
                                                                       with_entropy=with_entropy)
            if batch is None:  # keep the collectives of accumulate_gradients in step with the other ranks
                _all_reduce_sum(torch.zeros((), dtype=torch.long, device=self.device))
                _all_reduce_sum(torch.zeros((), dtype=torch.long, device=self.device))
            if self._sums_gradients_itself():
                sync_gradients(self.model.parameters())
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.optim_cfg.grad_clip)
            stats["actor/grad_norm"] = grad_norm.item()
            if i == len(minis) - 1:
                opt.step()  # through Lightning: global_step += 1 per DAPO step
            else:
                opt.optimizer.step()
            updates.append(stats)
        return updates

    def accumulate_gradients(self, batch: TrainBatch, mini: Tensor, old_logp: Tensor, ref_logp: Tensor | None,
                             advantages: Tensor, with_entropy: bool = False) -> dict[str, float]:
        """Backward over the micro-batches of one mini-batch (rows ``mini``); grads sum to the mini-batch's.

        ``with_entropy``: also return the policy entropy summed over the rows' response tokens
        (``_entropy_sum`` / ``_entropy_tokens``), from the same forward.
        """
        loss_mask = batch.loss_mask
        mini_mask = loss_mask[mini]
        global_tokens = _all_reduce_sum(mini_mask.sum().to(self.device))
        global_seqs = _all_reduce_sum((mini_mask.sum(-1) > 0).sum().to(self.device))
        stats: dict[str, float] = {}
        for rows in mini.split(self.batch_cfg.micro_batch_size):
            lm = loss_mask[rows].to(self.device)
            logp, entropy = self._logprobs(self.model, batch, rows, with_entropy=with_entropy)
            if entropy is not None:
                response = batch.response_mask[rows].to(self.device)
                stats["_entropy_sum"] = stats.get("_entropy_sum", 0.0) + (entropy * response).sum().item()
                stats["_entropy_tokens"] = stats.get("_entropy_tokens", 0.0) + response.sum().item()
            token_loss, clip_metrics = self.clip(logp, old_logp[rows].to(self.device),
                                                 advantages[rows].to(self.device), lm)
            if (cap := getattr(self.rollout, "tis_cap", None)) is not None:
                # Truncated importance sampling: re-weight tokens sampled under the engine's numerics.
                token_loss = token_loss * F.truncated_importance_weights(
                    old_logp[rows].to(self.device), batch.engine_logprobs[rows].to(self.device), cap=cap)
            pg_loss = self.loss_agg(token_loss, lm, global_tokens=global_tokens, global_seqs=global_seqs)
            loss = pg_loss
            kl_term = None if ref_logp is None else self.kl.token_loss(logp, ref_logp[rows].to(self.device))
            if kl_term is not None:
                kl_loss = self.loss_agg(kl_term, lm, global_tokens=global_tokens, global_seqs=global_seqs)
                loss = loss + kl_loss
                stats["actor/kl_loss"] = stats.get("actor/kl_loss", 0.0) + kl_loss.item()
            # With the global denominators each rank's loss is its share of the mini-batch loss, so rank
            # gradients must be summed: sync_gradients sums; DDP/FSDP average inside backward, hence the factor.
            self._backward(loss if self._sums_gradients_itself() else loss * _world_size())
            weight = lm.sum().item() / max(mini_mask.sum().item(), 1)
            stats["actor/pg_loss"] = stats.get("actor/pg_loss", 0.0) + pg_loss.item()
            for k, v in clip_metrics.items():
                stats[k] = stats.get(k, 0.0) + v.item() * weight
        return stats

    def _sums_gradients_itself(self) -> bool:
        return self._trainer is None or isinstance(self.trainer.strategy, GradSyncDDPStrategy)

    def _backward(self, loss: Tensor) -> None:
        if self._trainer is not None:
            self.manual_backward(loss)
        else:  # used outside a Trainer (tests, notebooks)
            loss.backward()

    def _finish_step(self, metrics: dict[str, float], updates: list[dict], t_start: float) -> None:
        if updates:
            for key in updates[0]:
                metrics[key] = sum(u.get(key, 0.0) for u in updates) / len(updates)
        else:
            self.optimizers().step()  # no informative group: advance the step counter with a zero-grad step
        metrics["actor/lr"] = self.optimizers().param_groups[0]["lr"]
        metrics["actor/num_updates"] = len(updates)
        metrics["time/step"] = time.perf_counter() - t_start
        if metrics.get("time/generate"):
            metrics["perf/rollout_tokens_per_s"] = metrics["rollout/tokens"] / metrics["time/generate"]
        self.lr_schedulers().step()
        self._log_at_step(metrics)

    def on_train_batch_start(self, _batch: Any, _batch_idx: int) -> None:
        # Engines with their own copy of the weights (vLLM) sample this step from the current policy.
        self._weight_sync_s = self.sync_rollout_weights()

    # ------------------------------------------------------------------ evaluation
    def on_validation_epoch_start(self) -> None:
        self.sync_rollout_weights()

    def validation_step(self, indices: Tensor, _batch_idx: int) -> None:
        e = self.eval_cfg
        idx = indices.tolist()
        prompts = [self.prompt_ids("eval", i) for i in idx]
        truths = [self.eval_examples[i].ground_truth for i in idx]
        seed = e.seed + idx[0]
        out = self.rollout.generate(prompts, SamplingParams(e.temperature, e.top_p, self.gen_cfg.max_new_tokens,
                                                            n=e.k, seed=seed))
        _, correct, _ = self.reward.score_batch(self._decode(out.response_ids, out.response_mask),
                                                [t for t in truths for _ in range(e.k)])
        correct_t = torch.tensor(correct, dtype=torch.float32).view(len(idx), e.k)
        lengths = out.lengths.float().view(len(idx), e.k)
        greedy = [float("nan")] * len(idx)
        if e.greedy:
            g = self.rollout.generate(prompts, SamplingParams(0.0, 1.0, self.gen_cfg.max_new_tokens, n=1))
            greedy = [float(c) for c in self.reward.score_batch(self._decode(g.response_ids, g.response_mask),
                                                                 truths)[1]]
        for row in range(len(idx)):
            self._eval_rows.append({"correct": correct_t[row].sum().item(), "len": lengths[row].mean().item(),
                                    "truncated": out.truncated.view(len(idx), e.k)[row].float().mean().item(),
                                    "greedy": greedy[row]})

    def on_validation_epoch_end(self) -> None:
        rows, self._eval_rows = self._eval_rows, []
        k = self.eval_cfg.k
        # Each rank evaluated its shard of the eval split: sum the per-prompt statistics over ranks.
        sums = torch.tensor([[r["correct"], pass_at_k(k, int(r["correct"]), k), r["len"], r["truncated"],
                              r["greedy"] if self.eval_cfg.greedy else 0.0, 1.0] for r in rows] or [[0.0] * 6],
                            dtype=torch.float64).sum(0)
        correct, passed, length, truncated, greedy, n = _all_reduce_sum(sums.to(self.device)).tolist()
        if n == 0:
            return
        metrics = {
            f"eval/avg@{k}": correct / (n * k), f"eval/pass@{k}": passed / n,
            "eval/response_len_mean": length / n, "eval/truncated_frac": truncated / n, "eval/num_prompts": n,
        }
        if self.eval_cfg.greedy:
            metrics["eval/greedy_acc"] = greedy / n
        self._log_at_step({key: float(v) for key, v in metrics.items() if not math.isnan(v)})

    def _log_at_step(self, metrics: dict[str, float]) -> None:
        """Log at ``step`` = DAPO steps completed (0 = the starting policy), which Lightning's own step
        bookkeeping does not give under manual optimization; ``self.log`` still feeds callbacks/progress bar."""
        metrics = {k: float(v) for k, v in metrics.items()}
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self.global_step)
        self.log_dict(metrics, logger=False, batch_size=1)
