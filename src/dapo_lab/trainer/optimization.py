"""How the learner turns a loss into parameter updates: the seam between the DAPO step and whoever owns the
optimizer (Lightning's strategy in a run, plain PyTorch in tests and notebooks).

The learner computes, for every micro-batch, its exact share of the mini-batch loss (global denominators, see
:mod:`dapo_lab.algo.loss`); an :class:`Optimization` differentiates it, combines gradients over data-parallel
ranks (summing: the shares add up to the mini-batch loss), clips and steps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Protocol

import torch
from torch import Tensor

from dapo_lab.trainer.distributed import sync_gradients


class Optimization(Protocol):
    """What the learner calls, in this order, for each optimizer update of a DAPO step. ``can_skip``: whether a
    non-finite update can be dropped with the optimizer untouched (else the learner stops the run)."""

    can_skip: bool

    def zero_grad(self) -> None:
        """Clear gradients (to ``None``) before the update's first backward."""
        ...

    def backward(self, loss: Tensor, *, sync: bool = True) -> None:
        """Accumulate the gradient of this rank's share of the mini-batch loss. ``sync``: the update's last pass
        (an engine that combines gradients over ranks at an accumulation boundary does it there)."""
        ...

    def step(self, *, last: bool, skip: bool = False) -> float:
        """Sum gradients over ranks, clip, step the optimizer; returns the gradient norm before clipping.
        ``last``: the step's final update (Lightning counts DAPO steps there). ``skip`` (the same on every rank), or
        a non-finite norm: clear the gradients and leave the optimizer untouched; returns NaN then."""
        ...

    def skip_step(self) -> None:
        """A DAPO step without an update (nothing informative on any rank): weights and optimizer state stay as
        they are; only the step counter advances."""
        ...


class PlainOptimization:
    """Plain PyTorch: ``loss.backward()``, gradients summed over ranks when a process group is up, global-norm
    clipping, ``optimizer.step()``.

    >>> model = torch.nn.Linear(2, 1)
    >>> opt = PlainOptimization(torch.optim.SGD(model.parameters(), lr=0.1), model.parameters(), grad_clip=1.0)
    >>> opt.zero_grad(); opt.backward(model(torch.ones(1, 2)).sum()); round(opt.step(last=True), 4)
    1.7321
    """

    can_skip = True

    def __init__(self, optimizer: torch.optim.Optimizer, parameters: Iterable[torch.nn.Parameter],
                 grad_clip: float) -> None:
        self.optimizer, self.parameters, self.grad_clip = optimizer, list(parameters), grad_clip

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def backward(self, loss: Tensor, *, sync: bool = True) -> None:
        loss.backward()

    def step(self, *, last: bool, skip: bool = False) -> float:
        if skip:
            self.optimizer.zero_grad(set_to_none=True)
            return float("nan")
        sync_gradients(self.parameters)
        norm = float(torch.nn.utils.clip_grad_norm_(self.parameters, self.grad_clip))
        if not math.isfinite(norm):
            self.optimizer.zero_grad(set_to_none=True)
            return float("nan")
        self.optimizer.step()
        return norm

    def skip_step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
