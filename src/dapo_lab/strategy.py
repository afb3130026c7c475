"""Data parallelism for the DAPO step: Lightning's DDP launcher and process group, without the DDP wrapper.

A DAPO step runs many backward passes (micro-batches × mini-batches) whose number depends on how many
groups dynamic sampling kept on each rank. PyTorch's DDP all-reduces inside every backward, so every rank
would have to run the same number of them. Instead the model is left unwrapped and
:class:`~dapo_lab.module.DAPOModule` sums gradients across ranks once per optimizer update. Because each
rank's loss is already divided by the *global* token/sequence count, that sum is exactly the gradient of
the whole mini-batch, and ranks only have to agree on the number of updates (fixed per step).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy


class GradSyncDDPStrategy(DDPStrategy):
    """``DDPStrategy`` that broadcasts rank 0's weights at start-up and leaves gradient sync to the module."""

    strategy_name = "dapo_ddp"

    def configure_ddp(self) -> None:
        with torch.no_grad():
            for tensor in [*self.model.parameters(), *self.model.buffers()]:
                dist.broadcast(tensor.data, src=0)


def sync_gradients(parameters) -> None:
    """Sum ``.grad`` over data-parallel ranks in one flat all-reduce (missing grads count as zero)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    params = [p for p in parameters if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        p.grad.copy_(flat[offset : offset + p.numel()].view_as(p))
        offset += p.numel()
