"""The learning-rate schedule shared by the warm start and the DAPO optimizer: linear warmup, then cosine."""

from __future__ import annotations

import math


def lr_at(step: int, steps: int, lr: float, warmup: int, final_frac: float) -> float:
    """The lr at 0-based ``step`` of ``steps``: linear warmup, then cosine decay to ``final_frac * lr``.

    >>> [round(lr_at(s, 100, 1.0, 10, 0.1), 3) for s in (0, 9, 10, 55, 99)]
    [0.1, 1.0, 1.0, 0.542, 0.1]
    """
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup - 1)
    return lr * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))
