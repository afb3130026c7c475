"""Mathematical equivalence of two final answers, without ever evaluating the text as code.

Parsing goes through ``latex2sympy2_extended``: an ANTLR grammar that builds sympy objects with
``evaluate=False``. Nothing here calls ``eval``, ``sympify`` or ``parse_expr`` on the text (math-verify's
own ``parse`` does, for plain expressions, so it is not used); plain-math spellings (``sqrt(2)``, ``pi``,
``x**2``) are first rewritten to LaTeX. The comparison is ``math_verify.verify`` (numbers, expressions
via ``simplify``, tuples, intervals, sets, percentages).

Simplified: percentages are parsed here, not by the grammar, because with the ANTLR 4.9.3 runtime that
Hydra pins, ``latex2sympy2_extended`` 1.11 fails on ``50\\%`` (its 4.9.3 parser lacks a token it asks
for). ``50\\%`` equals ``50``, ``0.5`` and ``\\frac12`` (math-verify's rule).

Nothing in this module has a time bound. Static guards reject the known bombs before sympy evaluates
anything (answers over ``MAX_CHARS``, nesting over ``MAX_DEPTH``, trees over ``MAX_NODES``, numeric
powers over ``MAX_DIGITS`` digits, factorials over ``MAX_FACTORIAL``); the hard bound is the killable
worker process of ``checker.py``, which is where untrusted text should be checked.
"""

from __future__ import annotations

import logging
import math
import re
from functools import lru_cache
from typing import Literal

import sympy
from latex2sympy2_extended import latex2sympy
from latex2sympy2_extended.math_normalization import NormalizationConfig
from math_verify import verify
from math_verify.grader import should_treat_as_complex

from dapo_lab.reward.normalize import normalize_final_answer

Verdict = Literal["equal", "different", "parse_failure"]

# math-verify warns once that its own (SIGALRM) timeout is off: it is, on purpose (see checker.py).
logging.getLogger("math_verify").setLevel(logging.ERROR)

MAX_CHARS = 1000
MAX_DEPTH = 40
MAX_NODES = 2000
MAX_DIGITS = 10_000
MAX_POLY_DEGREE = 100
MAX_FACTORIAL = 1000


class ParseFailure(ValueError):
    """The text is not an answer this module can read safely (too big, too deep, or not math)."""


# ---------------------------------------------------------------------------------------------- guards
def check_text(text: str) -> None:
    """Raise ParseFailure when ``text`` is too long or too deeply nested to hand to the parser.

    >>> check_text(r"\\frac{1}{2}")
    >>> check_text("{" * 100 + "}" * 100)
    Traceback (most recent call last):
    ...
    dapo_lab.reward.symbolic.ParseFailure: nesting deeper than 40
    """
    if len(text) > MAX_CHARS:
        raise ParseFailure(f"answer longer than {MAX_CHARS} characters")
    depth = deepest = 0
    for ch in text:
        if ch in "{([":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "})]":
            depth -= 1
    if deepest > MAX_DEPTH:
        raise ParseFailure(f"nesting deeper than {MAX_DEPTH}")


def _value_bound(e: sympy.Basic) -> float:
    """Upper bound on ``|e|`` for a numeric exponent or factorial argument (inf when unknown or huge)."""
    if isinstance(e, sympy.Rational):
        try:
            return abs(float(e))
        except OverflowError:
            return math.inf
    digits = _digits(e)
    return 10.0**digits if digits < 300 else math.inf


def _digits(e: sympy.Basic) -> float:
    """Upper bound on the decimal digits sympy may need to evaluate ``e`` exactly (inf: too many).

    It also rejects (ParseFailure) the subtrees that must not be evaluated: huge powers and factorials.
    """
    if isinstance(e, sympy.Rational):
        return 1.0 + 0.30103 * max(e.p.bit_length(), e.q.bit_length())
    if isinstance(e, sympy.Float):
        value = abs(float(e))
        return abs(math.log10(value)) + 1.0 if 0.0 < value < math.inf else (1.0 if value == 0 else math.inf)
    if isinstance(e, (sympy.Pow, sympy.exp)):
        base, exp = (sympy.E, e.args[0]) if isinstance(e, sympy.exp) else e.args
        base_digits, exp_digits = _digits(base), _digits(exp)
        if exp.free_symbols:
            return base_digits + exp_digits
        exponent = _value_bound(exp)
        if base.free_symbols:
            if exponent > MAX_POLY_DEGREE:
                raise ParseFailure(f"power of an expression above degree {MAX_POLY_DEGREE}")
            return exponent * base_digits
        digits = exponent * base_digits
        if digits > MAX_DIGITS:
            raise ParseFailure(f"number with more than {MAX_DIGITS} digits")
        return digits
    if isinstance(e, (sympy.factorial, sympy.gamma, sympy.binomial, sympy.factorial2, sympy.subfactorial)):
        n = _value_bound(e.args[0])
        if n > MAX_FACTORIAL and not e.args[0].free_symbols:
            raise ParseFailure(f"factorial of a number above {MAX_FACTORIAL}")
        return n * math.log10(max(n, 2.0)) + sum(_digits(a) for a in e.args)
    return sum((_digits(a) for a in e.args), 1.0)


def check_tree(expr: sympy.Basic) -> None:
    """Raise ParseFailure when evaluating ``expr`` could take unbounded time or memory.

    >>> check_tree(sympy.Pow(2, 100, evaluate=False))
    >>> tower = sympy.Pow(9, sympy.Pow(9, sympy.Pow(9, 9, evaluate=False), evaluate=False), evaluate=False)
    >>> check_tree(tower)
    Traceback (most recent call last):
    ...
    dapo_lab.reward.symbolic.ParseFailure: number with more than 10000 digits
    """
    nodes = 0
    for _ in sympy.preorder_traversal(expr):
        nodes += 1
        if nodes > MAX_NODES:
            raise ParseFailure(f"expression with more than {MAX_NODES} nodes")
    _digits(expr)


# --------------------------------------------------------------------------------------------- parsing
_PERCENT = re.compile(r"^\s*\$?\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*\\?%\s*\$?\s*\.?\s*$")
_UNICODE = {"π": "\\pi ", "∞": "\\infty ", "−": "-", "×": "\\times ", "·": "\\cdot ", "÷": "\\div "}
_BARE_PI = re.compile(r"(?<![\\a-zA-Z])pi(?![a-zA-Z])")
_BARE_INF = re.compile(r"(?<![\\a-zA-Z])(?:infinity|inf)(?![a-zA-Z])")
_BARE_SQRT = re.compile(r"(?<![\\a-zA-Z])sqrt\s*\(")


_OPERAND = re.compile(r"\s*[+-]?\s*(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+|\\?[a-zA-Z]+)")
_CLOSING = {"(": ")", "{": "}", "[": "]"}


def _end_of_group(text: str, start: int) -> int:
    """Index after the bracket group opening at ``start`` (len(text) if it never closes)."""
    opening, depth = text[start], 0
    for i in range(start, len(text)):
        if text[i] == opening:
            depth += 1
        elif text[i] == _CLOSING[opening]:
            depth -= 1
            if depth == 0:
                return i + 1
    return len(text)


def _end_of_operand(text: str, start: int) -> int:
    """Index after the exponent operand starting at ``start``: an atom or a group, with its own powers."""
    m = _OPERAND.match(text, start)
    if m is not None:
        end = m.end()
    else:
        end = start + len(text[start:]) - len(text[start:].lstrip())
        if end >= len(text) or text[end] not in _CLOSING:
            return start
        end = _end_of_group(text, end)
    while text.startswith("^{", end):
        end = _end_of_group(text, end + 1)
    return end


def _power_to_latex(text: str) -> str:
    # Python's ** binds to the right (2**3**2 = 2**9); LaTeX's ^ needs braces to say so.
    while (p := text.rfind("**")) >= 0:
        end = _end_of_operand(text, p + 2)
        text = text[:p] + "^{" + text[p + 2 : end].strip() + "}" + text[end:]
    return text


def plain_to_latex(text: str) -> str:
    """Rewrite plain-math spellings that the LaTeX grammar would misread.

    >>> plain_to_latex("sqrt(2)/2 + pi*x**2")
    '\\\\sqrt{2}/2 + \\\\pi*x^{2}'
    >>> plain_to_latex("2**3**(1+1)")
    '2^{3^{(1+1)}}'
    """
    for symbol, latex in _UNICODE.items():
        text = text.replace(symbol, latex)
    text = _power_to_latex(text)
    text = _BARE_PI.sub(r"\\pi", text)
    text = _BARE_INF.sub(r"\\infty", text)
    while (m := _BARE_SQRT.search(text)) is not None:
        depth, end = 1, m.end()
        while end < len(text) and depth:
            depth += {"(": 1, ")": -1}.get(text[end], 0)
            end += 1
        if depth:  # unbalanced: leave it to the grammar, which will refuse it
            break
        text = text[: m.start()] + "\\sqrt{" + text[m.end() : end - 1] + "}" + text[end:]
    return text


_LATEX_CONFIG = NormalizationConfig(basic_latex=True, units=True, malformed_operators=True, nits=True)


def _latex_to_sympy(text: str) -> sympy.Basic:
    percent = _PERCENT.match(text)
    if percent is not None:
        # math-verify's percentage form: X% is X * UnevaluatedExpr(1/100)
        number = sympy.Number(percent.group(1))
        return sympy.Mul(number, sympy.UnevaluatedExpr(sympy.Rational(1, 100)), evaluate=False)
    return latex2sympy(text, normalization_config=_LATEX_CONFIG, is_real=not should_treat_as_complex(text))


@lru_cache(maxsize=4096)
def _parse_or_none(text: str) -> sympy.Basic | None:
    # A sample group repeats its ground truth and often its answers: parse each string once per process.
    for candidate in dict.fromkeys((plain_to_latex(text), plain_to_latex(normalize_final_answer(text)))):
        try:
            check_text(candidate)
            expr = _latex_to_sympy(candidate)
            if isinstance(expr, sympy.MatrixBase):  # vectors, matrices: immutable, so cacheable
                expr = sympy.ImmutableMatrix(expr)
            if isinstance(expr, sympy.Basic):
                check_tree(expr)
                return expr
        except Exception:  # the grammar raises bare Exception, sympy anything: all mean "cannot read"
            continue
    return None


def parse_math(text: str) -> sympy.Basic:
    """Parse a final answer (LaTeX or plain math) into an unevaluated sympy object, or ParseFailure.

    The raw text is tried first, then its Minerva normalisation (units and ``\\text{}`` stripped).

    >>> parse_math(r"\\frac{\\sqrt{8}}{2}")
    sqrt(8)/2
    >>> parse_math("__import__('os').system('true')")
    Traceback (most recent call last):
    ...
    dapo_lab.reward.symbolic.ParseFailure: cannot parse "__import__('os').system('true')"
    """
    check_text(text)
    expr = _parse_or_none(text)
    if expr is None:
        raise ParseFailure(f"cannot parse {text[:60]!r}")
    return expr


def check_pair(answer: str, ground_truth: str) -> Verdict:
    """Whether ``answer`` is mathematically equal to ``ground_truth``; no time bound (see module doc).

    >>> check_pair("0.5", r"\\frac{1}{2}"), check_pair("1/2", "2"), check_pair("(2,1)", "(1,2)")
    ('equal', 'different', 'different')
    >>> check_pair("9^{9^{9^{9}}}", "1")
    'parse_failure'
    """
    try:
        gold, pred = parse_math(ground_truth), parse_math(answer)
    except ParseFailure:
        return "parse_failure"
    same = verify(gold, pred, float_rounding=6, numeric_precision=15, strict=True, timeout_seconds=None)
    return "equal" if same else "different"
