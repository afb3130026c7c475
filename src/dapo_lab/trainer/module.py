"""DAPOModule: Lightning's side of a run — the loop, hooks, checkpoints and loggers around a
:class:`~dapo_lab.trainer.learner.DAPOLearner`, which owns the algorithm.

One Lightning training step is one DAPO step. Lightning's ``global_step`` counts DAPO steps (the paper's x-axis):
under manual optimization it counts optimizer steps, and only each step's last update goes through Lightning's
optimizer wrapper (:class:`~dapo_lab.trainer.strategy.LightningOptimization`). One "epoch" is the span between
evaluations, so validation runs every ``evaluation.every`` steps.
"""

from __future__ import annotations

import functools
import time
import warnings
from typing import Any

import lightning as L
import torch
from torch import Tensor

from dapo_lab.trainer.checkpoints import AtomicCheckpoint
from dapo_lab.trainer.learner import DAPOLearner, NonFiniteTraining
from dapo_lab.trainer.settings import OptimSettings
from dapo_lab.trainer.strategy import LightningOptimization


class _Steps(torch.utils.data.Sampler):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(range(self.n))


def step_loader(n: int) -> torch.utils.data.DataLoader:
    """One item per DAPO step, ``n`` per Lightning "epoch" (the span between evaluations), the same on every rank: its
    own sampler, so Lightning does not shard it over ranks. Mid-epoch resumes need no loader state: Lightning counts
    the restored epoch's steps itself (tested from every step of a run), so its "not resumable" warning is muted."""
    warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch ended")
    return torch.utils.data.DataLoader(range(n), batch_size=None, sampler=_Steps(n))


def eval_loader(count: int, batch_size: int, rank: int, world: int) -> torch.utils.data.DataLoader:
    """Prompts ``rank, rank + world, …`` of ``count``, in batches; every rank gets the same number of batches of the
    same size, the shorter shares padded with -1 (evaluated for the collectives' sake, never counted).

    >>> [b.tolist() for b in eval_loader(5, batch_size=2, rank=0, world=2)]
    [[0, 2], [4]]
    >>> [b.tolist() for b in eval_loader(5, batch_size=2, rank=1, world=2)]
    [[1, 3], [-1]]
    """
    per_rank = -(-count // world)
    mine = list(range(rank, count, world))
    return torch.utils.data.DataLoader(mine + [-1] * (per_rank - len(mine)), batch_size=batch_size, shuffle=False)


class DAPOModule(L.LightningModule):
    def __init__(self, learner: DAPOLearner, optim: OptimSettings) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.learner, self.optim_cfg = learner, optim
        # Registered as submodules: Lightning moves, wraps and checkpoints them.
        self.model, self.ref_model = learner.model, learner.ref_model
        self._eval_rows: list[dict[str, float]] = []
        self._weight_sync_s = 0.0
        self.stop_reason: str | None = None  # set when training stops on non-finite updates

    # ------------------------------------------------------------------ plumbing
    def train_dataloader(self) -> torch.utils.data.DataLoader:
        # Prompts come from the learner's stream (resumable, refillable); Lightning only counts steps. Epoch e runs
        # steps [e·every, (e+1)·every), the last one cut at max_steps, so every epoch, the last too, ends with an
        # evaluation (Lightning reloads this loader each epoch: dapo_lab.build sets reload_dataloaders_every_n_epochs).
        every, max_steps = self.learner.evaluator.settings.every, self.trainer.max_steps
        left = max_steps - self.trainer.current_epoch * every if max_steps > 0 else every
        return step_loader(max(1, min(every, left)))

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        # This rank's share of the eval prompts, in as many batches as every other rank's (padding marked -1).
        evaluator, trainer = self.learner.evaluator, self.trainer
        return eval_loader(len(evaluator), evaluator.settings.batch_prompts, trainer.global_rank, trainer.world_size)

    def configure_optimizers(self):
        o = self.optim_cfg
        opt = torch.optim.AdamW(self.model.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        total = self.trainer.max_steps if self.trainer.max_steps > 0 else None
        if o.decay != "constant" and total is None:
            raise ValueError("optim.decay needs the run's length: set trainer.max_steps")
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: o.lr_factor(s, total))
        return [opt], [{"scheduler": sched, "interval": "step"}]

    def configure_model(self) -> None:
        # A sharding strategy shards the policy here (FSDP2Strategy) or later (DeepSpeed), and gathers full weights
        # around generation, whose decode loops run different numbers of forwards on different ranks.
        strategy = self.trainer.strategy
        if hasattr(strategy, "parallelize"):
            strategy.parallelize(self.model)
        if hasattr(strategy, "full_weights") and self.learner.rollout.decodes_with_policy:  # vLLM has its own copy
            self.learner.generation_context = functools.partial(strategy.full_weights, self.model)

    def on_train_start(self) -> None:
        self.model.train()  # from_pretrained returns eval mode (matters for models with dropout)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["dapo_state"] = self.learner.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.learner.load_state_dict(checkpoint.get("dapo_state", {}))

    def sync_rollout_weights(self) -> float:
        """Make the rollout engine sample from the current policy (vLLM holds its own copy; HF shares it). Every
        rank calls it (a sharded model's weights are gathered). Runs from the ``on_train_batch_start`` /
        ``on_validation_epoch_start`` hooks, outside any wrapped forward. Returns the seconds it took."""
        start = time.perf_counter()
        self.learner.rollout.update_weights(self.model)
        return time.perf_counter() - start

    # ------------------------------------------------------------------ training
    def on_train_batch_start(self, _batch: Any, _batch_idx: int) -> None:
        self._weight_sync_s = self.sync_rollout_weights()

    def training_step(self, _batch: Any, _batch_idx: int) -> None:
        try:
            metrics = self.learner.step(self.global_step, LightningOptimization(self, self.optim_cfg.grad_clip))
        except NonFiniteTraining as err:  # every rank gets here at the same update
            self.stop_reason = str(err)
            for callback in self.trainer.callbacks:
                if isinstance(callback, AtomicCheckpoint):  # the weights and optimizer are the last good ones
                    self.stop_reason += f"; last good state saved to {callback.save(self.trainer, self.global_step)}"
            self.trainer.should_stop = True
            return
        metrics["time/weight_sync"] = self._weight_sync_s
        metrics["actor/lr"] = self.optimizers().param_groups[0]["lr"]
        self.lr_schedulers().step()
        self._log_at_step(metrics)

    # ------------------------------------------------------------------ evaluation
    def on_validation_epoch_start(self) -> None:
        self.sync_rollout_weights()

    def _full_evaluation(self) -> bool:
        """The first (step 0) and the last evaluation cover the whole split; the ones between may cover a subset
        (``evaluation.interim_prompts``). The last is the one at ``max_steps``, or the one Lightning runs when training
        stops early; a run without ``max_steps`` has no known last step, so all of its evaluations are full."""
        last = self.trainer.max_steps
        return self.global_step == 0 or last <= 0 or self.global_step >= last or self.trainer.should_stop

    def validation_step(self, indices: Tensor, batch_idx: int) -> None:
        evaluator = self.learner.evaluator
        if evaluator.runs_batch(batch_idx, self.trainer.world_size, self._full_evaluation()):
            self._eval_rows += evaluator.evaluate(indices.tolist())  # -1 (padding): run, not counted

    def on_validation_epoch_end(self) -> None:
        rows, self._eval_rows = self._eval_rows, []
        # every rank: all-reduces
        metrics = self.learner.evaluator.summarize_evaluation(rows, self._full_evaluation(), self.device)
        if metrics:
            self._log_at_step(metrics)

    def _log_at_step(self, metrics: dict[str, float]) -> None:
        """Log at ``step`` = DAPO steps completed (0 = the starting policy), which Lightning's own step
        bookkeeping does not give under manual optimization; ``self.log`` still feeds callbacks/progress bar."""
        metrics = {k: float(v) for k, v in metrics.items()}
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self.global_step)
        self.log_dict(metrics, logger=False, batch_size=1)
