"""Data parallelism for the DAPO step under Lightning: a DDP launcher without the DDP wrapper, the gradient sum,
and the :class:`~dapo_lab.trainer.optimization.Optimization` that drives Lightning's optimizer.

Why a hand-written gradient sum (``GradSyncDDPStrategy``): a DAPO step runs many backward passes (micro-batches ×
mini-batches) whose number depends on how many groups dynamic sampling kept on each rank. PyTorch's DDP
all-reduces inside every backward, so every rank would have to run the same number of them. Instead the model is
left unwrapped and gradients are summed across ranks once per optimizer update. Because each rank's loss is
already divided by the *global* token/sequence count, that sum is exactly the gradient of the whole mini-batch,
and ranks only have to agree on the number of updates (fixed per step).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy
from torch import Tensor

from dapo_lab.trainer import distributed
from dapo_lab.trainer.distributed import sync_gradients


class GradSyncDDPStrategy(DDPStrategy):
    """``DDPStrategy`` that broadcasts rank 0's weights at start-up and leaves gradient sync to the module."""

    strategy_name = "dapo_ddp"

    def configure_ddp(self) -> None:
        with torch.no_grad():
            for tensor in [*self.model.parameters(), *self.model.buffers()]:
                dist.broadcast(tensor.data, src=0)


class LightningOptimization:
    """The learner's updates through a LightningModule's optimizer and strategy (manual optimization).

    - backward: ``manual_backward`` (precision and strategy hooks). Each rank's loss is its share of the
      mini-batch loss, so rank gradients must be *summed*: ``GradSyncDDPStrategy`` sums them itself in ``step``;
      strategies that average inside backward (DDP, FSDP) get the loss times the world size.
    - step: every update goes through the strategy's ``optimizer_step`` (precision plugin, sharded optimizers);
      only the step's last one goes through Lightning's optimizer wrapper, which counts it, so ``global_step``
      counts DAPO steps (the paper's x-axis). This assumes a precision without a grad scaler (32 or bf16-mixed).
    """

    def __init__(self, module: Any, grad_clip: float) -> None:
        self.module, self.grad_clip = module, grad_clip
        self.sums_itself = isinstance(module.trainer.strategy, GradSyncDDPStrategy)

    def _parameters(self) -> list[torch.nn.Parameter]:
        return list(self.module.model.parameters())

    def zero_grad(self) -> None:
        self.module.optimizers().zero_grad(set_to_none=True)

    def backward(self, loss: Tensor) -> None:
        self.module.manual_backward(loss if self.sums_itself else loss * distributed.world_size())

    def step(self, *, last: bool) -> float:
        if self.sums_itself:
            sync_gradients(self._parameters())
        norm = torch.nn.utils.clip_grad_norm_(self._parameters(), self.grad_clip)
        optimizer = self.module.optimizers()
        if last:
            optimizer.step()  # Lightning's wrapper: global_step += 1
        else:
            self.module.trainer.strategy.optimizer_step(optimizer.optimizer, closure=lambda: None, model=self.module)
        return float(norm)

    def skip_step(self) -> None:
        # No gradient at all: AdamW skips every parameter (weights and moments untouched); the wrapper still
        # counts the DAPO step. Gradients left from the previous step must not be replayed, hence the clear.
        optimizer = self.module.optimizers()
        optimizer.zero_grad(set_to_none=True)
        optimizer.step()
