"""Symbolic equivalence: each equivalence class the grader promises, its negatives, and its guards."""

from __future__ import annotations

import pytest
import sympy

pytest.importorskip("math_verify")

from dapo_lab.reward.symbolic import (  # noqa: E402
    MAX_CHARS,
    ParseFailure,
    check_pair,
    check_text,
    check_tree,
    parse_math,
    plain_to_latex,
)

EQUAL = [
    # numbers: fractions, decimals, LaTeX fractions, padding
    ("1/2", "0.5"),
    (r"\frac{1}{2}", "0.5"),
    (r"\dfrac{3}{4}", "0.75"),
    (r"\frac12", "1/2"),
    ("045", "45"),
    ("1,000", "1000"),
    ("10^{3}", "1000"),
    ("-2/4", "-0.5"),
    # simple expressions
    ("x+1", "1+x"),
    ("x^2+2x+1", "(x+1)^2"),
    ("2x", r"x \cdot 2"),
    (r"\frac{x}{2}", "0.5x"),
    # roots and pi, LaTeX or plain
    (r"\sqrt{8}", r"2\sqrt{2}"),
    (r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}"),
    ("sqrt(2)/2", r"\frac{\sqrt{2}}{2}"),
    (r"\pi/2", r"\frac{\pi}{2}"),
    ("pi/2", r"\frac{\pi}{2}"),
    (r"2\pi", "6.283185307"),
    # tuples and intervals
    (r"\left( 3, \frac{\pi}{2} \right)", "(3, pi/2)"),
    ("(1, 2)", "(1,2)"),
    ("[1,2)", r"\left[1, 2\right)"),
    (r"(-\infty, 2]", "(-inf, 2]"),
    (r"\{1,2\}", r"\{2,1\}"),
    # percentages
    (r"50\%", "0.5"),
    (r"50\%", "50"),
    ("50%", r"\frac{1}{2}"),
    (r"12.5\%", "0.125"),
    # units, text, degrees and assignments around the number
    (r"5 \text{ cm}", "5"),
    (r"106^\circ", "106"),
    ("x = 3", "3"),
    (r"\text{(A)}", "A"),
    # vectors
    (r"\begin{pmatrix} 1/2 \\ 3 \end{pmatrix}", r"\begin{pmatrix} 0.5 \\ 3 \end{pmatrix}"),
]

DIFFERENT = [
    ("1/2", "2"),
    ("x+1", "x-1"),
    ("(1,2)", "(2,1)"),
    ("(1,2]", "(1,2)"),
    ("[1,2]", "(1,2)"),
    (r"\sqrt{2}", "2"),
    (r"\pi", "3.14"),
    ("0.33", "1/3"),
    ("x", "y"),
    ("2x", "x^2"),
    (r"\{1,2\}", r"\{1,2,3\}"),
    (r"50\%", "5"),
    ("-3", "3"),
    ("0", "5x - 7y + 11z + 4 = 0"),
    (r"\begin{pmatrix} 1 \\ 3 \end{pmatrix}", r"\begin{pmatrix} 3 \\ 1 \end{pmatrix}"),
]


@pytest.mark.parametrize("answer,truth", EQUAL, ids=[f"{a} = {b}" for a, b in EQUAL])
def test_equivalent_answers_are_equal(answer, truth):
    assert check_pair(answer, truth) == "equal"
    assert check_pair(truth, answer) == "equal"


@pytest.mark.parametrize("answer,truth", DIFFERENT, ids=[f"{a} != {b}" for a, b in DIFFERENT])
def test_different_answers_are_different(answer, truth):
    assert check_pair(answer, truth) == "different"


def test_one_third_to_six_places_counts_as_one_third():
    # math-verify rounds floats to 6 places: the precision a boxed decimal answer usually has
    assert check_pair("0.333333", "1/3") == "equal"
    assert check_pair("0.3333", "1/3") == "different"


@pytest.mark.parametrize(
    "text,expected",
    [("sqrt(2)", r"\sqrt{2}"), ("sqrt(x+(1))", r"\sqrt{x+(1)}"), ("sqrt(2", "sqrt(2"),
     ("2**10", "2^{10}"), ("2**3**2", "2^{3^{2}}"), ("x**-1 + 1", "x^{-1} + 1"), ("2** 3", "2^{3}"), ("**", "^{}"),
     ("pi", r"\pi"), (r"\pi", r"\pi"), ("spin", "spin"), ("inf", r"\infty"), ("π/3", r"\pi /3"), ("−2", "-2")],
)  # fmt: skip
def test_plain_to_latex(text, expected):
    assert plain_to_latex(text) == expected


def test_python_powers_bind_to_the_right():
    assert check_pair("2**3**2", "512") == "equal"
    assert check_pair("2**3**2", "64") == "different"
    assert check_pair("(x+1)**2", "x^2+2x+1") == "equal"


def test_parse_returns_unevaluated_sympy():
    expr = parse_math(r"\frac{6}{4}")
    assert isinstance(expr, sympy.Basic)
    assert sympy.simplify(expr) == sympy.Rational(3, 2)


@pytest.mark.parametrize("text", ["", r"\frac{1}{", "())(", "1 +", "@#", "I do not know.", "__import__('os')"])
def test_unreadable_answers_are_parse_failures(text):
    assert check_pair(text, "1") == "parse_failure"
    assert check_pair("1", text) == "parse_failure"


def test_words_read_as_a_product_of_symbols_are_not_equal_to_a_number():
    # the LaTeX grammar reads letters as symbols: not a parse failure, but never equal to the truth
    assert check_pair("the answer is unknown!!", "1") == "different"


def test_text_is_never_evaluated_as_python(tmp_path):
    marker = tmp_path / "pwned"
    for payload in [
        f"__import__('os').system('touch {marker}')",
        f"(lambda: __import__('os').system('touch {marker}'))()",
        f"exec(\"open('{marker}', 'w')\")",
    ]:
        assert check_pair(payload, "0") in ("parse_failure", "different")
        assert check_pair("0", payload) in ("parse_failure", "different")
    assert not marker.exists()


def test_text_guards():
    check_text("(" * 40 + ")" * 40)
    with pytest.raises(ParseFailure, match="nesting"):
        check_text(r"\frac{" * 41 + "1" + "}" * 41)
    with pytest.raises(ParseFailure, match="longer"):
        check_text("1" * (MAX_CHARS + 1))


def _pow(base, exp):
    return sympy.Pow(base, exp, evaluate=False)


@pytest.mark.parametrize(
    "expr",
    [_pow(2, 1000), _pow(10, 1000), _pow(_pow(2, 10), 100), _pow(sympy.Symbol("x") + 1, 50),
     sympy.factorial(100, evaluate=False), _pow(sympy.Rational(1, 2), 500), _pow(2, sympy.Symbol("n"))],
)  # fmt: skip
def test_tree_guard_accepts_reasonable_sizes(expr):
    check_tree(expr)


@pytest.mark.parametrize(
    "expr",
    [_pow(9, _pow(9, 9)), _pow(9, _pow(9, _pow(9, 9))), _pow(10, 10**6), _pow(_pow(10, 1000), 1000),
     _pow(sympy.Rational(1, 3), 10**9), _pow(sympy.Symbol("x") + 1, 10**4),
     sympy.factorial(10**6, evaluate=False), sympy.factorial(_pow(10, 10), evaluate=False)],
)  # fmt: skip
def test_tree_guard_rejects_bombs(expr):
    with pytest.raises(ParseFailure):
        check_tree(expr)


@pytest.mark.parametrize("bomb", ["9^{9^{9^{9}}}", "9**9**9**9", "10^{10^{10}}", "(10^{6})!", r"\frac{1}{2}^{10^{9}}"])
def test_bombs_are_refused_before_sympy_evaluates_them(bomb):
    assert check_pair(bomb, "1") == "parse_failure"
