"""Hostile model outputs: every one is graded incorrect in bounded time, and the grader keeps working."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("math_verify")

from dapo_lab.reward import MathReward, grade_batch  # noqa: E402

NESTED_FRAC = "\\frac{" * 10_000 + "1" + "}" * 10_000

# (name, response, ground truth)
HOSTILE = [
    ("python power tower", "Answer: 9**9**9**9", "1"),
    ("latex power tower", "Answer: 9^{9^{9^{9}}}", "1"),
    ("huge factorial", "Answer: (10^{6})!", "1"),
    ("frac nested 10,000 deep", "Answer: " + NESTED_FRAC, "1"),
    ("frac nested 10,000 deep, as ground truth", "Answer: 1", NESTED_FRAC),
    ("answer of 10^6 characters", "Answer: " + "1" * 10**6, "1"),
    ("ground truth of 10^6 characters", "Answer: 1", "1" * 10**6),
    ("answer of 250 digits", "Answer: " + "7" * 250, "7"),
    ("deep parentheses", "Answer: " + "(" * 140 + "1" + ")" * 140, "1"),
    ("unclosed braces", "Answer: " + "\\text{" * 40, "1"),
    ("python code", "Answer: __import__('os').system('echo pwned')", "0"),
    ("nul and lone surrogate", "Answer: \x00\ud800\x00", "1"),
    ("many Answer: markers", "Answer:" * 100_000, "1"),
    ("dollar storm", "Answer: " + "$" * 250, "1"),
    ("10^6 characters on one line, no answer", "x" * 10**6, "1"),
]
# Passes every static guard, then makes sympy expand a degree-100 polynomial in 4 variables: only the
# killable worker bounds it (in-process mode would hang here: see checker.py).
SLOW_FOR_SYMPY = ("degree-100 polynomial", "Answer: (x+y+z+w)^{100}", "(w+x+y+z)^{99}(x+y+z+w+1)")


def test_dapo_mode_grades_every_hostile_case_fast():
    responses, truths = [r for _, r, _ in HOSTILE], [t for _, _, t in HOSTILE]
    start = time.monotonic()
    grades = grade_batch(responses, truths, mode="dapo")
    assert time.monotonic() - start < 5.0
    assert not any(g.correct for g in grades)


def test_symbolic_mode_bounds_every_case_and_keeps_working():
    cases = [*HOSTILE, SLOW_FOR_SYMPY]
    reward = MathReward(mode="symbolic", workers=2, timeout_s=1.0)
    try:
        reward.score_batch(["Answer: 0.5"], ["1/2"])  # start the workers outside the timed part
        start = time.monotonic()
        scores, correct, metrics = reward.score_batch([r for _, r, _ in cases], [t for _, _, t in cases])
        elapsed = time.monotonic() - start
        assert elapsed < 30.0  # one 1 s timeout, the rest guarded; slack for a loaded 2-core machine
        assert correct == [False] * len(cases) and scores == [-1.0] * len(cases)
        assert metrics["reward/timeouts"] == 1.0
        assert metrics["reward/parse_failures"] >= 5.0
        # the killed worker was replaced: the same reward still grades
        assert reward.score_batch(["Answer: \\frac{3}{6}", "Answer: 2"], ["0.5", "0.5"])[1] == [True, False]
    finally:
        reward.close()


@pytest.mark.parametrize("name,response,truth", HOSTILE, ids=[n for n, _, _ in HOSTILE])
def test_in_process_symbolic_mode_is_bounded_by_its_guards(name, response, truth):
    start = time.monotonic()
    (grade,) = grade_batch([response], [truth], mode="symbolic", workers=0)
    assert time.monotonic() - start < 5.0
    assert not grade.correct
