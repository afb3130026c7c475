"""Grade responses against ground truths: DAPO's rule (Eq. 7), optionally with symbolic equivalence.

    R(y_hat, y) = +1 if is_equivalent(y_hat, y) else -1

Mode ``"dapo"`` is the paper's grader: the last ``Answer:`` in the final 300 characters, Minerva
normalisation of both sides, exact string comparison. Pure Python, no process, no sympy.

Mode ``"symbolic"`` reads the same answer (or, when there is no ``Answer:``, the last ``\\boxed{}`` in
the window); when the normalised strings differ, sympy decides (``0.5`` = ``\\frac{1}{2}``), in a
killable worker with a hard time bound. Plain numbers and fractions skip sympy (exact ``Fraction``
arithmetic, same verdict), and so do two different integers. An
equation that Minerva's "keep the text after the last =" would cut (``5x+4=0`` -> ``0``) also goes to
sympy, so in this mode ``0`` does not match it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from dapo_lab.reward.checker import SymbolicChecker
from dapo_lab.reward.normalize import (
    as_rational,
    drops_equation,
    extract_answer,
    normalize_final_answer,
    normalize_ground_truth,
)

Mode = Literal["dapo", "symbolic"]
GradeStatus = Literal["correct", "wrong", "no_answer", "parse_failure", "timeout"]
MODES: tuple[str, ...] = ("dapo", "symbolic")
_INTEGER = re.compile(r"-?[0-9]+")
_STATUS_OF_VERDICT: dict[str, GradeStatus] = {
    "equal": "correct",
    "different": "wrong",
    "parse_failure": "parse_failure",
    "timeout": "timeout",
}


@dataclass(frozen=True)
class Grade:
    """The verdict on one response. ``symbolic``: decided by mathematical equivalence (exact fractions or
    sympy), not by string equality."""

    correct: bool
    score: float
    extracted: str | None
    status: GradeStatus
    symbolic: bool = False


def _grade(extracted: str | None, status: GradeStatus, symbolic: bool = False) -> Grade:
    correct = status == "correct"
    return Grade(correct, 1.0 if correct else -1.0, extracted, status, symbolic)


def _is_integer(s: str) -> bool:
    return _INTEGER.fullmatch(s) is not None


def _exact_verdict(answer: str, target: str) -> GradeStatus | None:
    # Integers, decimals and fractions compare exactly here, without a process or sympy, with sympy's
    # verdict: equal values are equal; different ones are different unless a decimal is involved (then
    # math-verify's rounding to 6 places decides, e.g. 0.3333333 = 1/3).
    a, t = as_rational(answer), as_rational(target)
    if a is None or t is None:
        return None
    if a == t:
        return "correct"
    return "wrong" if "." not in answer + target else None


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown reward mode {mode!r}; expected one of {MODES}")


def grade_batch(
    responses: Sequence[str],
    ground_truths: Sequence[str],
    *,
    mode: Mode = "dapo",
    workers: int = 2,
    timeout_s: float = 2.0,
    checker: SymbolicChecker | None = None,
) -> list[Grade]:
    """Grade ``responses[i]`` against ``ground_truths[i]``; results in order.

    In mode ``"symbolic"`` the pairs whose strings differ go to ``checker`` (or to a pool of
    ``workers`` processes started for this call; pass a long-lived ``checker`` to avoid that start).

    >>> [g.score for g in grade_batch(["Answer: 045", "Answer: 1/2", "no idea"], ["45", "0.5", "7"])]
    [1.0, -1.0, -1.0]
    >>> [g.status for g in grade_batch(["Answer: 1/2"], ["0.5"], mode="symbolic", workers=0)]
    ['correct']
    """
    _check_mode(mode)
    if len(responses) != len(ground_truths):
        raise ValueError(f"{len(responses)} responses but {len(ground_truths)} ground truths")
    grades: list[Grade | None] = [None] * len(responses)
    pending: list[int] = []
    extracted_all = [extract_answer(r, accept_boxed=mode == "symbolic") for r in responses]
    for i, (extracted, truth) in enumerate(zip(extracted_all, ground_truths)):
        if extracted is None:
            grades[i] = _grade(None, "no_answer")
            continue
        answer, target = normalize_final_answer(extracted), normalize_ground_truth(truth)
        if mode == "dapo":
            grades[i] = _grade(extracted, "correct" if answer == target else "wrong")
        elif extracted.strip() == truth.strip():
            grades[i] = _grade(extracted, "correct")
        elif drops_equation(extracted) or drops_equation(truth):  # "5x+4=0" is not "0": ask sympy
            pending.append(i)
        elif answer == target:
            grades[i] = _grade(extracted, "correct")
        elif _is_integer(answer) and _is_integer(target):
            grades[i] = _grade(extracted, "wrong")
        elif (exact := _exact_verdict(answer, target)) is not None:
            grades[i] = _grade(extracted, exact, symbolic=True)
        else:
            pending.append(i)

    if pending:
        pairs = [(extracted_all[i] or "", ground_truths[i]) for i in pending]
        if checker is None:
            with SymbolicChecker(workers=workers, timeout_s=timeout_s) as own:
                verdicts = own.check(pairs)
        else:
            verdicts = checker.check(pairs)
        for i, verdict in zip(pending, verdicts):
            grades[i] = _grade(extracted_all[i], _STATUS_OF_VERDICT[verdict], symbolic=True)
    return [g for g in grades if g is not None]


_shared: SymbolicChecker | None = None
_shared_lock = threading.Lock()


def _shared_checker() -> SymbolicChecker:
    # One worker, started on the first symbolic grade() and stopped at interpreter exit.
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = SymbolicChecker(workers=1, timeout_s=2.0)
        return _shared


def grade(response: str, ground_truth: str, *, mode: Mode = "dapo", checker: SymbolicChecker | None = None) -> Grade:
    """Grade one response. Mode ``"symbolic"`` without ``checker`` uses one shared worker process.

    >>> grade("... so x = 3.\\nAnswer: $x = 3$", "3")
    Grade(correct=True, score=1.0, extracted='$x = 3$', status='correct', symbolic=False)
    >>> grade("Answer: 1/2", "0.5").score
    -1.0
    """
    _check_mode(mode)
    if checker is None and mode == "symbolic":
        checker = _shared_checker()
    return grade_batch([response], [ground_truth], mode=mode, checker=checker)[0]


def summarize(grades: Sequence[Grade]) -> dict[str, float]:
    """Batch metrics: accuracy, fraction without an answer, and counts of the responses decided by
    equivalence (``symbolic_checks``), rescued by it (``symbolic_rescued``), timed out, or unparsable.

    >>> summarize(grade_batch(["Answer: 3", "Answer: 4", "nothing"], ["3", "3", "3"]))["reward/accuracy"]
    0.3333333333333333
    """
    n = max(len(grades), 1)
    return {
        "reward/accuracy": sum(g.correct for g in grades) / n,
        "reward/no_answer_frac": sum(g.status == "no_answer" for g in grades) / n,
        "reward/symbolic_checks": float(sum(g.symbolic for g in grades)),
        "reward/symbolic_rescued": float(sum(g.symbolic and g.correct for g in grades)),
        "reward/timeouts": float(sum(g.status == "timeout" for g in grades)),
        "reward/parse_failures": float(sum(g.status == "parse_failure" for g in grades)),
    }
