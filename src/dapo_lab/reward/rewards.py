"""The reward components the trainer instantiates (``conf/reward/*.yaml``): one ``score_batch`` seam.

``score_batch(responses, ground_truths) -> (scores, correct, metrics)``, metrics named ``reward/...``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dapo_lab.reward.checker import SymbolicChecker
from dapo_lab.reward.grader import MODES, Mode, grade_batch, summarize
from dapo_lab.reward.pool import resolve

ScoreBatch = tuple[list[float], list[bool], dict[str, float]]


@dataclass(frozen=True)
class MathReward:
    """DAPO's rule-based reward: ``correct_score`` if the final answer is right, else ``incorrect_score``.

    The worker processes of ``mode="symbolic"`` start on the first symbolic check; ``close()`` stops them.

    Args:
        mode: ``dapo`` reproduces the paper's grader (Eq. 7: the last ``Answer:`` in the final 300 characters,
            string match after Minerva normalisation) and never starts a process; ``symbolic`` also accepts a
            sympy-equivalent answer (``0.5`` = ``\\frac{1}{2}``) when the normalised strings differ.
        workers: killable processes for the symbolic checks (``0``: in this process, guarded but not
            time-bounded; see ``checker.py``). Unused by ``mode=dapo``.
        timeout_s: the most seconds one symbolic check may take; a slower one is killed and graded wrong
            (``reward/timeouts``). Ignored with ``workers=0``.
        correct_score: the reward of a correct final answer (Eq. 7: 1).
        incorrect_score: the reward of a wrong or missing one (Eq. 7: −1).

    >>> reward = MathReward(mode="dapo")
    >>> scores, correct, metrics = reward.score_batch(["Answer: 045", "Answer: 44"], ["45", "45"])
    >>> scores, correct, metrics["reward/accuracy"]
    ([1.0, -1.0], [True, False], 0.5)
    """

    mode: Mode = "dapo"
    workers: int = 2
    timeout_s: float = 2.0
    correct_score: float = 1.0
    incorrect_score: float = -1.0
    _checker: SymbolicChecker | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"MathReward: unknown mode {self.mode!r}; expected one of {MODES}")
        if self.workers < 0 or self.timeout_s <= 0:
            raise ValueError(f"MathReward: need workers >= 0 and timeout_s > 0, got {self.workers}, {self.timeout_s}")
        if self.mode == "symbolic":
            object.__setattr__(self, "_checker", SymbolicChecker(workers=self.workers, timeout_s=self.timeout_s))

    def score_batch(self, responses: Sequence[str], ground_truths: Sequence[str]) -> ScoreBatch:
        """Scores, correctness flags and ``reward/...`` metrics for a batch, in order."""
        grades = grade_batch(responses, ground_truths, mode=self.mode, checker=self._checker)
        correct = [g.correct for g in grades]
        scores = [self.correct_score if c else self.incorrect_score for c in correct]
        metrics = summarize(grades)
        metrics["reward/mean"] = sum(scores) / max(len(scores), 1)
        return scores, correct, metrics

    def __call__(self, response: str, ground_truth: str) -> float:
        """The score of one response (the same signature as a user's reward function)."""
        return self.score_batch([response], [ground_truth])[0][0]

    def close(self) -> None:
        """Stop the symbolic worker processes, if any."""
        if self._checker is not None:
            self._checker.close()


@dataclass(frozen=True)
class FunctionReward:
    """A user's ``(response, ground_truth) -> float`` as a reward; ``fn`` is the function or its import
    path (``"pkg.module:func"`` or ``"pkg.module.func"``). A response is correct when its score is > 0.

    Args:
        fn: the reward function ``(response, ground_truth) -> float``, or its import path (``"pkg.module:func"``
            or ``"pkg.module.func"``). A score > 0 counts as correct (``reward/accuracy``, and dynamic sampling's
            ``metric=acc``); the score itself replaces Eq. 7's ±1.

    >>> reward = FunctionReward("operator:eq")  # 1.0 when the response is exactly the ground truth
    >>> reward.score_batch(["4", "5"], ["4", "4"])[:2]
    ([1.0, 0.0], [True, False])
    >>> FunctionReward("no_such_pkg.mod:fn")
    Traceback (most recent call last):
    ...
    ValueError: cannot resolve 'no_such_pkg.mod:fn': No module named 'no_such_pkg'
    """

    fn: str | Callable[[str, str], float]
    _call: Callable[[str, str], float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        call = resolve(self.fn) if isinstance(self.fn, str) else self.fn
        if not callable(call):
            raise ValueError(f"FunctionReward: fn must be callable or an import path, got {self.fn!r}")
        object.__setattr__(self, "_call", call)

    def score_batch(self, responses: Sequence[str], ground_truths: Sequence[str]) -> ScoreBatch:
        """Scores, correctness flags (score > 0) and ``reward/...`` metrics for a batch, in order."""
        if len(responses) != len(ground_truths):
            raise ValueError(f"{len(responses)} responses but {len(ground_truths)} ground truths")
        scores = [float(self._call(r, t)) for r, t in zip(responses, ground_truths)]
        correct = [s > 0 for s in scores]
        n = max(len(scores), 1)
        return scores, correct, {"reward/accuracy": sum(correct) / n, "reward/mean": sum(scores) / n}

    def __call__(self, response: str, ground_truth: str) -> float:
        return float(self._call(response, ground_truth))
