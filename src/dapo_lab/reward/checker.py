"""Symbolic equivalence of many (answer, ground truth) pairs, each with a hard time bound.

``workers >= 1``: pairs go to a ``TimeoutPool`` of killable processes; a pair that takes longer than
``timeout_s`` is reported ``"timeout"`` and its worker replaced. This is the mode for untrusted text.

``workers == 0``: in this process, for tests and notebooks. Nothing can bound time here without a
signal, and a signal cannot stop sympy inside one C-level operation anyway, so this mode relies on the
static guards of ``symbolic.py`` (length, nesting, tree size, digits of powers and factorials), which
turn every known bomb into ``"parse_failure"`` before sympy evaluates it. ``timeout_s`` is ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from dapo_lab.reward.pool import TimeoutPool

CheckStatus = Literal["equal", "different", "parse_failure", "timeout"]


class SymbolicChecker:
    """Decide ``check_pair(answer, ground_truth)`` for many pairs; one status per pair, in order.

    >>> with SymbolicChecker(workers=0) as checker:
    ...     checker.check([("0.5", r"\\frac{1}{2}"), ("3", "4"), ("x+1", "x-1"), ("0.5", r"\\frac{1}{2}")])
    ['equal', 'different', 'different', 'equal']
    """

    def __init__(self, *, workers: int = 2, timeout_s: float = 2.0, memory_limit_mb: int | None = 2048):
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.workers, self.timeout_s = workers, timeout_s
        self._pool = (
            TimeoutPool(
                "dapo_lab.reward.symbolic:check_pair",
                workers=workers,
                timeout_s=timeout_s,
                memory_limit_mb=memory_limit_mb,
            )
            if workers
            else None
        )

    def __enter__(self) -> SymbolicChecker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker processes (they restart if the checker is used again)."""
        if self._pool is not None:
            self._pool.close()

    def check(self, pairs: Sequence[tuple[str, str]]) -> list[CheckStatus]:
        """One status per ``(answer, ground_truth)`` pair; equal pairs are checked once."""
        todo = list(dict.fromkeys(pairs))  # a group of samples often repeats the same answer
        verdicts = dict(zip(todo, self._run(todo)))
        return [verdicts[pair] for pair in pairs]

    def _run(self, todo: list[tuple[str, str]]) -> list[CheckStatus]:
        if not todo:
            return []
        if self._pool is None:
            from dapo_lab.reward.symbolic import check_pair

            return [check_pair(*pair) for pair in todo]
        verdicts: list[CheckStatus] = []
        for outcome in self._pool.map(todo):
            if outcome.status == "ok":
                verdicts.append(outcome.value)
            elif outcome.status == "timeout":
                verdicts.append("timeout")
            else:  # an exception or a dead worker: the answer could not be read safely
                verdicts.append("parse_failure")
        return verdicts
