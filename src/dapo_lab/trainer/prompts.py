"""Prompts: an endless, seeded, resumable stream of training-example indices (reshuffled every epoch), and a
split's examples with their tokenized prompts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from dapo_lab.data.example import PromptExample


class PromptStream:
    """Yields example indices in a fresh permutation per epoch; its state goes into checkpoints.

    >>> s = PromptStream(5, seed=0)
    >>> a = s.take(3); state = s.state_dict(); b = s.take(4)
    >>> s2 = PromptStream(5, seed=0); s2.load_state_dict(state); s2.take(4) == b
    True
    >>> sorted(a + b[:2])
    [0, 1, 2, 3, 4]
    """

    def __init__(self, size: int, seed: int) -> None:
        if size < 1:
            raise ValueError("the training set is empty")
        self.size, self.seed, self.epoch, self.position = size, seed, 0, 0
        self._order = self._permutation()

    def _permutation(self) -> list[int]:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(self.size, generator=gen).tolist()

    def take(self, count: int) -> list[int]:
        out = []
        while len(out) < count:
            if self.position == self.size:
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._permutation()
            step = min(count - len(out), self.size - self.position)
            out += self._order[self.position : self.position + step]
            self.position += step
        return out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._permutation()


class PromptSet:
    """A split's examples with their rendered, tokenized prompts (tokenized once, on first use).

    >>> from dapo_lab.data.example import PromptExample
    >>> from dapo_lab.models.tokenizer import build_byte_tokenizer
    >>> prompts = PromptSet([PromptExample("Add 1 2", "3", "toy")], build_byte_tokenizer(), lambda e: e.prompt)
    >>> len(prompts), len(prompts.ids(0)), prompts.ground_truth(0)
    (1, 7, '3')
    """

    def __init__(self, examples: Sequence[PromptExample], tokenizer: Any,
                 render: Callable[[PromptExample], str]) -> None:
        self.examples, self.tokenizer, self.render = list(examples), tokenizer, render
        self._ids: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return len(self.examples)

    def ids(self, index: int) -> list[int]:
        """The token ids the policy is conditioned on for example ``index``."""
        if index not in self._ids:
            text = self.render(self.examples[index])
            self._ids[index] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self._ids[index]

    def ground_truth(self, index: int) -> str:
        return self.examples[index].ground_truth
