"""Hostile model output reaches only the grader: random and adversarial strings thrown at ``grade_batch`` in both
modes always come back, in bounded time, as one valid ``Grade`` per response (+1 or -1, a known status), never as
an exception; and once the checker is closed none of its worker processes is left.

Sized for a shared 2-core machine: the whole file runs in well under 30 s (``symbolic`` examples are few, as a
pair that reaches sympy may cost a worker's full timeout and a replacement's start).
"""

from __future__ import annotations

import math
import os
import time
import typing
from datetime import timedelta
from pathlib import Path

import pytest

pytest.importorskip("math_verify")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from dapo_lab.reward.checker import SymbolicChecker  # noqa: E402
from dapo_lab.reward.grader import Grade, GradeStatus, grade_batch  # noqa: E402

WORKERS, TIMEOUT_S = 2, 1.0
WORKER_START_S = 5.0  # a replacement worker's start (a fresh interpreter importing sympy), on a loaded machine
MAX_BATCH = 4
STATUSES = set(typing.get_args(GradeStatus))


def symbolic_bound(batch: int) -> float:
    """The most one symbolic batch may take: every pair that reaches sympy is at worst one timeout plus a
    replacement's start, ``WORKERS`` at a time; plus slack for the string work and a loaded machine."""
    return math.ceil(batch / WORKERS) * (TIMEOUT_S + WORKER_START_S) + 5.0


DAPO_BOUND_S = 5.0  # pure Python on at most 300 characters of each response: milliseconds, plus slack

# Pieces of LaTeX and plain math (and marks a tokenizer can emit) that random concatenation turns into
# answers the parser must refuse or decide quickly.
PIECES = ["\\frac{", "\\dfrac", "}", "{", "\\boxed{", "Answer:", "Answer: ", "^", "^{", "10", "9", "0", "1", "**",
          "!", "\\sqrt{", "\\sqrt", "(", ")", "[", "]", "$", "$$", "\\left(", "\\right)", "x", "y", "=", "\\infty",
          "\\pi", ",", ".", "-", "+", "/", "*", "e", "E", "%", "\\%", "\\text{", "\\\\", " ", "\n", "\x00", "\u200f",
          "\u202e", "\ufeff", "\\cdot", "\\times", "\\begin{pmatrix}", "&", "\\end{pmatrix}", "_", "\\sum", "\\int",
          "\\binom{", "\\log", "\\sin", "i", "I", "\\mathbb{R}", "\\{", "\\}", "\\in", "\\le", "<", ">", "::", "#"]
# Hand-written attacks: parser bombs, huge numbers, deep nesting, control and bidi marks, lone surrogates.
ADVERSARIAL = [
    "\\boxed{" * 1000,
    "\\boxed{" * 1000 + "1" + "}" * 1000,
    "Answer:" * 5000,
    "Answer: " + "Answer:" * 1000 + " 1",
    "Answer: 10^{10^{10^{10}}}",
    "Answer: 10^{10^{10^{10^{10^{10}}}}}",
    "Answer: 2^{2^{2^{2^{2^{2}}}}}",
    "Answer: 10**10**10",
    "Answer: " + "\\frac{1}{" * 200 + "2" + "}" * 200,
    "Answer: " + "\\frac" * 500,
    "Answer: 99999999999!",
    "Answer: (10^{6})!!",
    "Answer: \\binom{10^{6}}{5 \\cdot 10^{5}}",
    "Answer: " + "\\sqrt{" * 100,
    "Answer: 1\x00",
    "\x00" * 10_000,
    "Answer: \u202e1\u202c",
    "Answer: \u200f42\u200e",
    "Answer: \ud800",
    "Answer: \udcff\udcfe",
    "Answer: " + "9" * 5000,
    "Answer: 1e999999999",
    "Answer: 0.1^{-10^{10}}",
    "Answer: x^{10^{6}}",
    "Answer: (x+y+z+w)^{100}",
    "Answer: \\begin{pmatrix}" + "1&" * 500 + "\\end{pmatrix}",
    "Answer: " + "(" * 1000,
    "Answer: " + ")" * 1000,
    "Answer: " + "}{" * 500,
    "\\boxed{\\boxed{\\boxed{1}}}",
    "Answer: " + "$$" * 100,
    "Answer: " + "\\left(" * 100,
    "Answer: " + "1," * 5000,
    "Answer: \\infty - \\infty",
    "Answer: 0/0",
    "Answer: \\frac{1}{0}",
    "Answer: nan",
    "Answer: __import__('os').system('echo pwned')",
    "Answer: \\text{" + "a" * 10_000 + "}",
    "A" * 10**6,
    "Answer: " + "\n" * 1000 + "1",
    "Answer:\r\n1",
    "Answer: ٣",
    "Answer: ½",
    "Answer: １２",
    "Answer: \\mathbb{R}^{\\aleph_0}",
    "Answer: x = " + "x = " * 500,
    "Answer: \\sum_{i=1}^{10^{10}} i",
    "Answer: \\prod_{k=1}^{10^{9}} k",
    "Answer: \\int_0^{\\infty} e^{-x^2} dx",
    "Answer: \\lim_{x \\to 0} \\frac{\\sin x}{x}",
    "Answer: Matrix([[1,2],[3,4]])",
    "Answer: 10^{10^{3}} - 10^{10^{3}}",
]
# Ground truths come from datasets (trusted, but not always tidy); some hostile ones too.
TRUTHS = ["1", "0", "-3", "45", "\\frac{1}{2}", "0.5", "x+1", "(1,2)", "\\sqrt{2}", "\\pi", "[0, 1)", "50\\%",
          "\\infty", "2^{100}", "x^2+2x+1", "\\{1,2\\}", "5x+4=0", "10^{10^{10^{10}}}", "\\frac{" * 50, "", " "]
SIMPLE_TRUTHS = ["1", "-3", "45", "\\frac{1}{2}", "0.5", "x+1", "(1,2)", "\\sqrt{2}", "\\pi"]

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=300)  # all of unicode but lone surrogates
MATHY = st.lists(st.sampled_from(PIECES), max_size=80).map("".join)
REPEATED = st.builds(lambda piece, n: piece * n, st.sampled_from(PIECES), st.integers(1, 2000))
BODY = st.one_of(TEXT, MATHY, REPEATED, st.sampled_from(ADVERSARIAL))
RESPONSE = st.one_of(
    BODY,
    BODY.map(lambda s: "Answer: " + s),
    BODY.map(lambda s: "\\boxed{" + s + "}"),
    st.tuples(BODY, BODY).map(lambda t: t[0] + "\nAnswer: " + t[1]),
)
TRUTH = st.one_of(st.sampled_from(TRUTHS), MATHY, TEXT)
BATCH = st.lists(st.tuples(RESPONSE, TRUTH), min_size=1, max_size=MAX_BATCH)
# database=None: no .hypothesis/ folder; the strategies are cheap, but the machine may be loaded
FUZZ = settings(database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def assert_valid(grades: list[Grade], n: int, mode: str) -> None:
    assert isinstance(grades, list) and len(grades) == n
    for g in grades:
        assert isinstance(g, Grade) and g.status in STATUSES
        assert g.score in (1.0, -1.0) and g.correct == (g.score == 1.0) == (g.status == "correct")
        assert (g.extracted is None) == (g.status == "no_answer")
        if mode == "dapo":
            assert g.status in ("correct", "wrong", "no_answer") and not g.symbolic


# ------------------------------------------------------------------------------------------- worker processes
def children() -> set[int]:
    """Process ids of this process's live children (zombies included: an unreaped worker is a leak too)."""
    me = str(os.getpid())
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if fields[1] == me:
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()  # a zombie (exited, never reaped) is still there: a leak too


@pytest.fixture(scope="module")
def checker():
    before = children()
    checker = SymbolicChecker(workers=WORKERS, timeout_s=TIMEOUT_S)
    checker.check([("0.5", "\\frac{1}{2}")])  # start the workers outside the timed examples
    seen: set[int] = set(checker._pool.pids)
    yield checker, seen
    seen.update(checker._pool.pids)
    checker.close()
    assert checker._pool.pids == []
    assert [pid for pid in seen if alive(pid)] == []
    assert children() - before == set()


# ----------------------------------------------------------------------------------------------------- the fuzz
@settings(FUZZ, max_examples=1000, deadline=timedelta(seconds=DAPO_BOUND_S))
@given(batch=BATCH)
@example(batch=[(r, "1") for r in ADVERSARIAL[:MAX_BATCH]])
def test_dapo_mode_always_returns_a_valid_grade_fast(batch):
    responses, truths = [r for r, _ in batch], [t for _, t in batch]
    start = time.monotonic()
    grades = grade_batch(responses, truths, mode="dapo")
    assert time.monotonic() - start < DAPO_BOUND_S
    assert_valid(grades, len(batch), "dapo")


@settings(FUZZ, max_examples=150, deadline=timedelta(seconds=symbolic_bound(MAX_BATCH)))
@given(batch=BATCH)
def test_symbolic_mode_always_returns_a_valid_grade_in_bounded_time(checker, batch):
    checker, seen = checker
    responses, truths = [r for r, _ in batch], [t for _, t in batch]
    start = time.monotonic()
    grades = grade_batch(responses, truths, mode="symbolic", checker=checker)
    assert time.monotonic() - start < symbolic_bound(len(batch))
    assert_valid(grades, len(batch), "symbolic")
    seen.update(checker._pool.pids)


def test_every_adversarial_string_in_both_modes(checker):
    assert_valid(grade_batch(ADVERSARIAL, ["7"] * len(ADVERSARIAL), mode="dapo"), len(ADVERSARIAL), "dapo")
    checker, seen = checker
    for start in range(0, len(ADVERSARIAL), 8):
        chunk = ADVERSARIAL[start : start + 8]
        t0 = time.monotonic()
        grades = grade_batch(chunk, ["7"] * len(chunk), mode="symbolic", checker=checker)  # none of them is 7
        assert time.monotonic() - t0 < symbolic_bound(len(chunk))
        assert_valid(grades, len(chunk), "symbolic")
        assert not any(g.correct for g in grades), [c[:40] for c, g in zip(chunk, grades) if g.correct]
        seen.update(checker._pool.pids)


@settings(FUZZ, max_examples=100, deadline=None)
@given(prefix=TEXT, truth=st.sampled_from(SIMPLE_TRUTHS))
def test_a_final_answer_line_survives_any_text_before_it(prefix, truth):
    (dapo,) = grade_batch([prefix + "\nAnswer: " + truth], [truth], mode="dapo")
    (symbolic,) = grade_batch([prefix + "\nAnswer: " + truth], [truth], mode="symbolic", workers=0)
    assert dapo.correct and symbolic.correct


def test_a_checker_made_for_one_call_leaves_no_process():
    before = children()
    grades = grade_batch(["Answer: (x+y+z+w)^{100}", "Answer: \\frac{2}{4}", "Answer: " + "{" * 50 + "1" + "}" * 50],
                         ["(w+x+y+z)^{99}(x+y+z+w+1)", "0.5", "1"], mode="symbolic", workers=WORKERS,
                         timeout_s=TIMEOUT_S)
    assert [g.status for g in grades] == ["timeout", "correct", "parse_failure"]
    assert children() - before == set()
