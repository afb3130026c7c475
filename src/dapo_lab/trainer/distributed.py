"""The few collectives the DAPO step needs, as no-ops in a single process.

Every rank must call them in the same order and the same number of times: a rank that skips one while
another waits in it hangs the run (and a hung gloo collective ignores SIGTERM).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def all_reduce_sum(value: Tensor) -> Tensor:
    """The sum of ``value`` over ranks (a copy; the input is untouched).

    >>> all_reduce_sum(torch.tensor(3))
    tensor(3)
    """
    if is_distributed():
        value = value.clone()
        dist.all_reduce(value)
    return value


def all_reduce_max(value: Tensor) -> Tensor:
    """The maximum of ``value`` over ranks (a copy).

    >>> all_reduce_max(torch.tensor([2, 5]))
    tensor([2, 5])
    """
    if is_distributed():
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return value


def global_count(count: int, device: torch.device | str = "cpu") -> int:
    """``count`` summed over ranks, as a Python int.

    >>> global_count(4)
    4
    """
    return int(all_reduce_sum(torch.tensor(count, dtype=torch.long, device=device)).item())


def sync_gradients(parameters) -> None:
    """Sum ``.grad`` over data-parallel ranks in one flat all-reduce (missing grads count as zero)."""
    if not is_distributed() or dist.get_world_size() == 1:
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


def iter_full_weights(model: torch.nn.Module) -> Iterator[tuple[str, Tensor]]:
    """``(name, full tensor)`` of every state-dict entry of ``model``, gathered ONE at a time: an engine push never
    holds a second full copy of a sharded model. A collective under FSDP2 (each DTensor's all-gather) and ZeRO-3 (each
    module's gather): every rank must iterate it to the end, in step.

    >>> [name for name, _ in iter_full_weights(torch.nn.Linear(2, 1))]
    ['weight', 'bias']
    """
    params = list(model.parameters())
    if any(hasattr(p, "ds_id") for p in params):
        import deepspeed

        for name, module in model.named_modules():
            own = list(module.parameters(recurse=False))
            with deepspeed.zero.GatheredParameters(own, modifier_rank=None):
                for key, value in module.state_dict(keep_vars=True).items():
                    if "." not in key:  # this module's own entries; children come in their own turn
                        yield (f"{name}.{key}" if name else key), value.detach().clone()
        return
    for name, value in model.state_dict(keep_vars=True).items():
        if type(value).__name__ == "DTensor":
            value = value.full_tensor()  # an all-gather of this tensor only
        yield name, value.detach()


def full_state_dict(model: torch.nn.Module) -> dict[str, Tensor]:
    """Full (unsharded) tensors of ``model`` under Hugging Face checkpoint names, on every rank.

    - plain models, or data-parallel replicas: ``model.state_dict()`` (detached, no copy);
    - FSDP2 (``fully_shard``, DTensor parameters) or FSDP1 units nested inside ``model``:
      ``get_model_state_dict(full_state_dict=True)`` all-gathers the shards and strips FSDP's name prefixes
      (a collective: every rank must call it). FSDP2 is tested on CPU with two gloo ranks;
    - DeepSpeed ZeRO-3 (partitioned parameters carry ``ds_id``): ``GatheredParameters``.
    """
    params = list(model.parameters())
    if any(hasattr(p, "ds_id") for p in params):
        import deepspeed

        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            return {k: v.detach().clone() for k, v in model.state_dict().items()}
    sharded = any(type(p).__name__ == "DTensor" for p in params) or any(
        type(m).__name__ == "FullyShardedDataParallel" for m in model.modules())
    if sharded:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    return {k: v.detach() for k, v in model.state_dict().items()}
