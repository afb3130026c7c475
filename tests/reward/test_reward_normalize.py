"""DAPO's extraction and Minerva's normalisation, one hand-written case per rule."""

from __future__ import annotations

import re
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dapo_lab.reward.normalize import (
    ANSWER_WINDOW,
    _first_math_span,
    _unwrap_boxed_to_last_brace,
    _unwrap_to_first_brace,
    as_rational,
    canonical_number,
    drops_equation,
    extract_answer,
    extract_dapo_answer,
    last_boxed_only_string,
    normalize_final_answer,
    remove_boxed,
)

# (raw, normalised): every rule of the paper's normalize_final_answer, and each addition of ours.
NORMALISATION = [
    # keep the text after the last "="
    ("x = 5", "5"),
    ("a = b = 7", "7"),
    # "an " / "a " deleted, spaces deleted, "\ " deleted, \mbox -> \text
    ("a 12", "12"),
    ("an 8", "8"),
    (r"3\ \mbox{cm}", "3"),
    # unit words and marks from the standard list
    ("5 feet", "5"),
    ("10 dollars", "10"),
    ("7 minutes", "7"),
    ("3 inches", "3"),
    ("2 hours", "2"),
    ("12 students", "12"),
    (r"4 \text{ cm}^2", "4"),
    (r"30^\circ", "30"),
    (r"30^{\circ}", "30"),
    (r"2\mathrm{th}", "2"),
    (r"1, 2, \ldots", "1,2,"),
    (r"\$36", "36"),
    (r"\text{and}", ","),
    (r"1 \text{and} 2", "1,2"),
    # $...$: the first math span is kept, dollar signs dropped
    (r"the value $\frac{1}{2}$ exactly", r"\frac{1}{2}"),
    (r"$7$.", "7"),
    # \text{}, \textbf{}, \overline{}, \boxed{} unwrapped
    (r"\text{Evelyn}", "Evelyn"),
    (r"\textbf{(C)}", "(C)"),
    (r"0.\overline{3}", "0.3"),
    (r"\boxed{\frac{3}{4}}", r"\frac{3}{4}"),
    # \left / \right dropped (ours), but \rightarrow kept
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})"),
    (r"\left[ 1, 2 \right)", "[1,2)"),
    (r"x \rightarrow 1", r"x\rightarrow1"),
    # \frac / \sqrt shorthand
    (r"\frac12", r"\frac{1}{2}"),
    (r"\dfrac12", r"\dfrac{1}{2}"),
    (r"\tfrac1{2}", r"\tfrac{1}{2}"),
    (r"\frac\pi2", r"\frac\pi2"),
    (r"\frac1{10}", r"\frac{1}{10}"),
    (r"\frac{10}3", r"\frac{10}{3}"),
    (r"\sqrt2", r"\sqrt{2}"),
    (r"3\sqrt3", r"3\sqrt{3}"),
    (r"\sqrt{12}", r"\sqrt{12}"),
    # thousands separators only in numbers shaped like them (ours: verl would also turn 1,2,3 into 123)
    ("1,000", "1000"),
    (r"10,\!080", "10080"),
    ("1{,}234{,}567", "1234567"),
    ("-12,345.5", "-12345.5"),
    ("1,2,3", "1,2,3"),
    ("(1,2)", "(1,2)"),
    # canonical numbers (ours): leading zeros, .5, trailing .0 and zeros
    ("045", "45"),
    ("000", "0"),
    (".5", "0.5"),
    ("-.25", "-0.25"),
    ("27.0", "27"),
    ("2.50", "2.5"),
    ("+3", "3"),
    # left alone
    ("1/2", "1/2"),
    (r"\pi", r"\pi"),
    ("x+1", "x+1"),
]


@pytest.mark.parametrize("raw,expected", NORMALISATION, ids=[r for r, _ in NORMALISATION])
def test_normalisation_rule(raw, expected):
    assert normalize_final_answer(raw) == expected


@pytest.mark.parametrize(
    "a,b",
    [("1/2", "2"), ("x+1", "x-1"), ("(1,2)", "(2,1)"), ("12", "120"), ("0.5", "5"), ("-3", "3"), ("1,2,3", "123")],
)
def test_normalisation_keeps_different_answers_different(a, b):
    assert normalize_final_answer(a) != normalize_final_answer(b)


@pytest.mark.parametrize("text,expected", [("5", "5"), ("0", "0"), ("-0.0", "0"), ("007.100", "7.1"), ("1.", "1")])
def test_canonical_number(text, expected):
    assert canonical_number(text) == expected


@pytest.mark.parametrize(
    "text,expected",
    [("7", Fraction(7)), ("-0.125", Fraction(-1, 8)), (r"\frac{6}{8}", Fraction(3, 4)),
     (r"\dfrac{-1}{3}", Fraction(-1, 3)), (r"-\tfrac{1}{3}", Fraction(-1, 3)), ("10/4", Fraction(5, 2)),
     ("-1/-2", Fraction(1, 2))],
)  # fmt: skip
def test_as_rational(text, expected):
    assert as_rational(text) == expected


@pytest.mark.parametrize("text", ["1/0", r"\frac{1}{0}", "x/2", r"\frac{\pi}{2}", "1/2/3", "1e5", "1" * 101, "50\\%"])
def test_as_rational_refuses_everything_else(text):
    assert as_rational(text) is None


@pytest.mark.parametrize("text", ["", "-", ".", "1e3", "1/2", "0x10", "1,000", "١٢"])
def test_canonical_number_rejects_non_numbers(text):
    assert canonical_number(text) is None


def test_extraction_takes_the_last_answer_to_the_end_of_its_line():
    response = "Step 1. Answer: 3 is tempting.\nBut no.\nANSWER:  $4$ \nThat is all."
    assert extract_dapo_answer(response) == "$4$"


def test_extraction_is_case_insensitive_and_allows_space_before_colon():
    assert extract_dapo_answer("answer : 12") == "12"
    assert extract_dapo_answer("The final ANSWER:7") == "7"


def test_extraction_ignores_answers_before_the_last_300_characters():
    early = "Answer: 42\n" + "reasoning " * 40
    assert len(early) > ANSWER_WINDOW
    assert extract_dapo_answer(early) is None
    assert extract_dapo_answer("." * 1000 + "\nAnswer: 42") == "42"


def test_extraction_window_edge_is_exact():
    tail = "nswer: 7\n"  # the window starts right after the "A": no match
    cut = "Answer: 7\n" + "." * (ANSWER_WINDOW - len(tail))
    assert extract_dapo_answer(cut) is None
    assert extract_dapo_answer(cut[:-1]) == "7"


def test_extraction_needs_a_colon_and_something_after_it():
    assert extract_dapo_answer("The answer is 5") is None
    assert extract_dapo_answer("Answer: 5\nAnswer:") == "5"  # an empty last one does not match


def test_boxed_extraction_matches_nested_braces():
    text = r"first \boxed{1}, then \boxed{\frac{\sqrt{2}}{2}} done"
    assert last_boxed_only_string(text) == r"\boxed{\frac{\sqrt{2}}{2}}"
    assert remove_boxed(last_boxed_only_string(text)) == r"\frac{\sqrt{2}}{2}"
    assert last_boxed_only_string("no box here") is None
    assert last_boxed_only_string(r"\boxed{\frac{1}{2}") is None
    with pytest.raises(ValueError):
        remove_boxed("boxed{1}")


def test_boxed_is_only_a_fallback_and_only_in_symbolic_extraction():
    assert extract_answer(r"so $\boxed{5}$") is None
    assert extract_answer(r"so $\boxed{5}$", accept_boxed=True) == "5"
    assert extract_answer("\\boxed{5}\nAnswer: 6", accept_boxed=True) == "6"
    assert extract_answer("\\boxed{5}" + "." * ANSWER_WINDOW, accept_boxed=True) is None


@pytest.mark.parametrize(
    "text,expected",
    [("x = 5", False), ("k=3", False), (r"f(x) = 2x+1", False), (r"a_{1} = 2", False), ("7", False),
     ("5x + 4 = 0", True), ("x + y = 3", True), ("x >= 5", True)],
)  # fmt: skip
def test_drops_equation(text, expected):
    assert drops_equation(text) is expected


# The paper's regexes are quadratic on long hostile lines; ours are linear rewrites that must agree.
_PIECES = st.sampled_from(["\\text{", "\\textbf{", "\\overline{", "\\boxed{", "{", "}", "$", "a", "1", "\n", " "])


@settings(max_examples=400, deadline=None)
@given(st.lists(_PIECES, max_size=25).map("".join))
def test_linear_rewrites_agree_with_the_minerva_regexes(text):
    for command in ("\\text", "\\textbf", "\\overline"):
        expected = re.sub(re.escape(command) + r"\{(.*?)\}", r"\1", text)
        assert _unwrap_to_first_brace(text, command) == expected
    boxed = "\n".join(_unwrap_boxed_to_last_brace(line) for line in text.split("\n"))
    assert boxed == re.sub(r"(\\boxed\{)(.*)(\})", r"\2", text)
    spans = "\n".join(_first_math_span(line) for line in text.split("\n"))
    assert spans == re.sub(r"(.*?)(\$)(.*?)(\$)(.*)", "$\\3$", text)
