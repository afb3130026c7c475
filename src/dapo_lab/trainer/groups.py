"""Groups of ``G`` scored responses to one prompt, and their assembly into a padded training batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dapo_lab.rollout.base import RolloutOutput


@dataclass
class Group:
    """One prompt's ``G`` responses with their scores (everything on CPU; rows padded to this round's R)."""

    prompt_ids: list[int]
    response_ids: Tensor  # [G, R]
    response_mask: Tensor  # bool [G, R]
    engine_logprobs: Tensor  # [G, R]
    truncated: Tensor  # bool [G]
    rewards: Tensor  # [G] shaped (rule-based + overlong penalty)
    correct: Tensor  # bool [G]
    in_loss: Tensor  # bool [G] (False: removed from the loss by overlong filtering)


def split_groups(out: RolloutOutput, group_size: int, rewards: Tensor, correct: Tensor, in_loss: Tensor) -> list[Group]:
    """Cut a rollout of ``prompts × G`` rows into groups."""
    groups = []
    for start in range(0, len(out), group_size):
        rows = slice(start, start + group_size)
        groups.append(Group(out.prompt_ids[start], out.response_ids[rows], out.response_mask[rows],
                            out.logprobs[rows], out.truncated[rows], rewards[rows], correct[rows], in_loss[rows]))
    return groups


@dataclass
class TrainBatch:
    """``N = groups × G`` rows, grouped contiguously, padded to a common ``R``: this rank's share of the step's
    batch. ``global_rows [N]`` places each row in the global batch of ``global_size`` rows (all ranks); with one
    rank it is ``0 … N−1``."""

    prompt_ids: list[list[int]]
    response_ids: Tensor  # [N, R]
    response_mask: Tensor  # bool [N, R]
    engine_logprobs: Tensor  # [N, R]
    truncated: Tensor  # bool [N]
    rewards: Tensor  # [N]
    correct: Tensor  # bool [N]
    in_loss: Tensor  # bool [N]
    global_rows: Tensor  # long [N]
    global_size: int

    def __len__(self) -> int:
        return self.response_ids.shape[0]

    def row_lengths(self) -> list[int]:
        """Prompt + response tokens of each row (what a padded forward over the row costs)."""
        return [len(p) + int(n) for p, n in zip(self.prompt_ids, self.response_mask.sum(-1).tolist())]

    @property
    def loss_mask(self) -> Tensor:
        """``bool [N, R]``: response tokens of responses that stay in the loss."""
        return self.response_mask & self.in_loss[:, None]


def assemble(groups: list[Group], pad_id: int, positions: list[int] | None = None, total: int | None = None,
             group_size: int | None = None) -> TrainBatch:
    """Concatenate groups into one padded batch. ``positions``: each group's place in the global batch of ``total``
    groups of ``group_size`` rows (default: these groups are the whole batch). No groups gives an empty batch (a
    rank with nothing to train this step, which still knows the global batch's size).

    >>> batch = assemble([], pad_id=0, positions=[], total=3, group_size=4)
    >>> len(batch), batch.global_size
    (0, 12)
    """
    group_size = groups[0].response_ids.shape[0] if groups else group_size
    positions = list(range(len(groups))) if positions is None else positions
    total = len(groups) if total is None else total
    global_rows = torch.tensor([p * group_size + j for p in positions for j in range(group_size)], dtype=torch.long)
    if not groups:
        if group_size is None:
            raise ValueError("assemble: an empty batch needs group_size")
        flags = torch.zeros(0, dtype=torch.bool)
        return TrainBatch(prompt_ids=[], response_ids=torch.zeros((0, 1), dtype=torch.long),
                          response_mask=torch.zeros((0, 1), dtype=torch.bool), engine_logprobs=torch.zeros((0, 1)),
                          truncated=flags, rewards=torch.zeros(0), correct=flags, in_loss=flags,
                          global_rows=global_rows, global_size=total * group_size)
    width = max(g.response_ids.shape[1] for g in groups)

    def cat(name: str, value) -> Tensor:
        parts = [getattr(g, name) for g in groups]
        return torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[1]), value=value) for p in parts])

    return TrainBatch(
        prompt_ids=[g.prompt_ids for g in groups for _ in range(g.response_ids.shape[0])],
        response_ids=cat("response_ids", pad_id),
        response_mask=cat("response_mask", False),
        engine_logprobs=cat("engine_logprobs", 0.0),
        truncated=torch.cat([g.truncated for g in groups]),
        rewards=torch.cat([g.rewards for g in groups]),
        correct=torch.cat([g.correct for g in groups]),
        in_loss=torch.cat([g.in_loss for g in groups]),
        global_rows=global_rows,
        global_size=total * group_size,
    )


def decode_responses(tokenizer: Any, response_ids: Tensor, response_mask: Tensor) -> list[str]:
    """The text of each response row ``[N, R]`` (padding dropped, special tokens skipped)."""
    return tokenizer.batch_decode([row[m].tolist() for row, m in zip(response_ids, response_mask)],
                                  skip_special_tokens=True)
