"""The step's batch across data-parallel ranks: which groups train this step, and which rank trains each.

Every rank generates its own prompts and keeps its own informative groups, so ranks end dynamic sampling with
different numbers of groups of different lengths. :func:`share_groups` makes the step the same whatever the
number of ranks:

1. **One global, first-in-first-out batch.** The pool is the surplus carried from the last step (held, identical,
   by every rank), then this step's groups ordered by (round, rank, index). Its first ``prompts_per_step × world``
   groups are the batch; the rest is the new surplus. With one rank this is exactly "carried groups first, then
   this step's, in order".
2. **A balanced deal.** The batch's groups are dealt to ranks with :func:`~dapo_lab.trainer.balance.
   balanced_partition` (equal counts ± one, token totals within one group), computed identically on every rank.
3. **Moving only what must move.** Token counts travel first (small); then each rank sends the groups it holds
   that another rank trains, and its share of the new surplus, in one ``all_gather_object``. (Every rank receives
   every payload: simple, and small next to a training step; a point-to-point exchange would move less.)

Each group keeps its position in the global batch, so the update can shuffle the *global* rows with one shared
seed and each rank take its own rows of every mini-batch: the mini-batches are those of one process holding the
union batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.distributed as dist

from dapo_lab.trainer.balance import balanced_partition
from dapo_lab.trainer.distributed import rank, world_size
from dapo_lab.trainer.groups import Group


@dataclass
class SharedBatch:
    """This rank's share of the step's batch. ``groups[i]`` sits at ``positions[i]`` of the global batch of
    ``total`` groups (ascending); ``surplus`` is the new global surplus, the same on every rank."""

    groups: list[Group]
    positions: list[int]
    total: int
    surplus: list[Group]


def group_tokens(group: Group) -> int:
    """What a group costs to train: prompt and response tokens of its ``G`` rows."""
    return int(group.response_mask.sum()) + len(group.prompt_ids) * group.response_ids.shape[0]


def share_groups(surplus: list[Group], fresh: list[tuple[int, Group]], target: int) -> SharedBatch:
    """Select the step's batch (``target`` groups per rank) from the carried ``surplus`` (global) and every rank's
    ``fresh`` ``(round, group)`` pairs, and give this rank its balanced share. A collective: every rank calls it."""
    world, me = world_size(), rank()
    if world == 1:
        pool = list(surplus) + [g for _, g in fresh]
        batch = pool[:target]
        return SharedBatch(batch, list(range(len(batch))), len(batch), pool[target:])
    meta = [None] * world
    dist.all_gather_object(meta, [(round_index, group_tokens(g)) for round_index, g in fresh])
    order = sorted((round_index, r, i) for r in range(world) for i, (round_index, _) in enumerate(meta[r]))
    # Pool items: ("s", j) = surplus j (every rank has it); ("f", r, i) = rank r's fresh group i.
    pool = [("s", j) for j in range(len(surplus))] + [("f", r, i) for _, r, i in order]
    batch_items, surplus_items = pool[: target * world], pool[target * world :]
    tokens = [group_tokens(surplus[item[1]]) if item[0] == "s" else meta[item[1]][item[2]][1] for item in batch_items]
    owner = {}
    for r, positions in enumerate(balanced_partition(tokens, world)):
        owner.update({p: r for p in positions})
    payload = {}
    for p, item in enumerate(batch_items):
        if item[0] == "f" and item[1] == me and owner[p] != me:
            payload[("batch", p)] = fresh[item[2]][1]
    for k, item in enumerate(surplus_items):
        if item[0] == "f" and item[1] == me:
            payload[("surplus", k)] = fresh[item[2]][1]
    received = [None] * world
    dist.all_gather_object(received, payload)

    def resolve(item: tuple, key: tuple) -> Group:
        if item[0] == "s":
            return surplus[item[1]]
        return fresh[item[2]][1] if item[1] == me else received[item[1]][key]

    mine = sorted(p for p, r in owner.items() if r == me)
    return SharedBatch(groups=[resolve(batch_items[p], ("batch", p)) for p in mine], positions=mine,
                       total=len(batch_items),
                       surplus=[resolve(item, ("surplus", k)) for k, item in enumerate(surplus_items)])
