"""Answer extraction and Minerva-style normalisation: DAPO's rule-based grader, as plain string code.

DAPO (arXiv 2503.14476, Eq. 7) rewards a response +1 when its final answer equals the ground truth and
-1 otherwise. The released grader (verl's ``math_dapo``) reads the last ``Answer: ...`` in the final 300
characters, normalises both sides with Minerva's ``normalize_final_answer`` (Lewkowycz et al. 2022) and
compares the strings. This module re-implements that rule; it is pure Python (regex and ``str``
methods), so it is fast and cannot hang on hostile text: the response is cut to 300 characters first.

Where this differs from verl's ``normalize_final_answer`` (each change only makes equal answers equal):

- ``\\left`` / ``\\right`` are dropped (``\\left( 3, \\pi \\right)`` = ``(3,\\pi)``);
- a number is written canonically: ``045`` -> ``45``, ``.5`` -> ``0.5``, ``27.0`` -> ``27``
  (AIME answers are zero-padded in some copies, AMC answers are floats);
- thousands separators are removed only from numbers shaped like ``1,234,567``; verl removes every
  comma from digit strings, so there ``1,2,3`` = ``123``;
- the ``\\frac12`` / ``\\sqrt2`` shorthand is expanded only for a single letter or digit.
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache

#: DAPO reads only this many characters at the end of a response (verl's ``solution_str[-300:]``).
ANSWER_WINDOW = 300

_ANSWER_RE = re.compile(r"Answer\s*:\s*([^\n]+)", re.IGNORECASE)

# Minerva's rewrite table, applied in order, then the words and marks it deletes. The deletion list is
# plain substring removal, exactly as in the paper's grader (so "feet" also goes from "feetball").
_SUBSTITUTIONS: tuple[tuple[str, str], ...] = (
    ("an ", ""), ("a ", ""), (".$", "$"), ("\\$", ""), ("\\ ", ""), (" ", ""), ("mbox", "text"),
    (",\\text{and}", ","), ("\\text{and}", ","), ("\\text{m}", "\\text{}"),
)  # fmt: skip
_UNIT_WORDS: tuple[str, ...] = (
    "square", "ways", "integers", "dollars", "mph", "inches", "hours", "km", "units", "\\ldots", "sue",
    "points", "feet", "minutes", "digits", "cents", "degrees", "cm", "gm", "pounds", "meters", "meals",
    "edges", "students", "childrentickets", "multiples",
)  # fmt: skip
_REMOVED_MARKS: tuple[str, ...] = (
    "\\text{s}", "\\text{.}", "\\text{\ns}", "\\text{}^2", "\\text{}^3", "\\text{\n}", "\\text{}",
    "\\mathrm{th}", "^\\circ", "^{\\circ}", "\\;", ",\\!", "{,}", '"', "\\dots",
)  # fmt: skip

_LEFT_RIGHT = re.compile(r"\\(?:left|right)(?![a-zA-Z])")
_FRAC_SHORT = re.compile(r"(\\[dt]?frac)([a-zA-Z0-9])([a-zA-Z0-9])")
_FRAC_HALF_SHORT = re.compile(r"(\\[dt]?frac)([a-zA-Z0-9])(?=\{)")
_FRAC_DEN_SHORT = re.compile(r"(\\[dt]?frac\{[^{}]*\})([a-zA-Z0-9])")
_SQRT_SHORT = re.compile(r"\\sqrt([a-zA-Z0-9])")
_THOUSANDS = re.compile(r"^[+-]?[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]*)?$")
_NUMBER = re.compile(r"^([+-]?)([0-9]*)(?:\.([0-9]*))?$")


def _unwrap_to_first_brace(text: str, command: str) -> str:
    # re.sub(r"\\command\{(.*?)\}", r"\1", text) in linear time: the regex rescans the rest of the line
    # for every unclosed "\command{", which is quadratic on hostile text.
    prefix, out, pos = command + "{", [], 0
    while (start := text.find(prefix, pos)) >= 0:
        close = text.find("}", start + len(prefix))
        if close < 0:
            break
        newline = text.find("\n", start + len(prefix), close)
        if newline >= 0:  # "." stops at a newline: nothing on this line from here on can match
            out.append(text[pos : newline + 1])
            pos = newline + 1
            continue
        out.append(text[pos:start] + text[start + len(prefix) : close])
        pos = close + 1
    return "".join(out) + text[pos:]


def _unwrap_boxed_to_last_brace(line: str) -> str:
    # re.sub(r"\\boxed\{(.*)\}", r"\1", line) for one line: the greedy match runs to its last "}".
    start, close = line.find("\\boxed{"), line.rfind("}")
    if start < 0 or close < start + len("\\boxed{"):
        return line
    return line[:start] + line[start + len("\\boxed{") : close] + line[close + 1 :]


def _first_math_span(line: str) -> str:
    # Minerva's re.sub(r"(.*?)(\$)(.*?)(\$)(.*)", "$\\3$", ...) per line, in linear time (the regex is
    # quadratic on a long line without two dollars).
    first = line.find("$")
    second = line.find("$", first + 1) if first >= 0 else -1
    return line if second < 0 else line[first : second + 1]


def extract_dapo_answer(response: str) -> str | None:
    """The text after the last ``Answer:`` in the final 300 characters, or None (DAPO's extraction).

    >>> extract_dapo_answer("so x = 3.\\nAnswer: $3$")
    '$3$'
    >>> extract_dapo_answer("Answer: 1\\nWait, I was wrong.\\nanswer : 2")
    '2'
    >>> extract_dapo_answer("Answer: 7" + "." * 300) is None  # only the last 300 characters count
    True
    """
    matches = _ANSWER_RE.findall(response[-ANSWER_WINDOW:])
    return matches[-1].strip() if matches else None


def last_boxed_only_string(text: str) -> str | None:
    """The last ``\\boxed{...}`` in ``text`` (braces matched, nested ones included), or None.

    >>> last_boxed_only_string(r"so \\boxed{1} or rather \\boxed{\\frac{1}{2}}.")
    '\\\\boxed{\\\\frac{1}{2}}'
    >>> last_boxed_only_string(r"\\boxed{1") is None  # unclosed
    True
    """
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth = 0
    for i in range(start + len("\\boxed"), len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return None


def remove_boxed(boxed: str) -> str:
    """The content of ``\\boxed{content}``; raises ValueError on anything else.

    >>> remove_boxed(r"\\boxed{\\frac{1}{2}}")
    '\\\\frac{1}{2}'
    """
    if not (boxed.startswith("\\boxed{") and boxed.endswith("}")):
        raise ValueError(f"not a \\boxed{{...}} string: {boxed[:50]!r}")
    return boxed[len("\\boxed{") : -1]


def extract_answer(response: str, *, accept_boxed: bool = False) -> str | None:
    """DAPO's ``Answer:`` extraction; with ``accept_boxed``, else the last ``\\boxed{}`` in the window.

    >>> extract_answer(r"... so the answer is $\\boxed{\\frac{1}{2}}$.", accept_boxed=True)
    '\\\\frac{1}{2}'
    >>> extract_answer(r"... so the answer is $\\boxed{\\frac{1}{2}}$.") is None
    True
    """
    answer = extract_dapo_answer(response)
    if answer is None and accept_boxed:
        boxed = last_boxed_only_string(response[-ANSWER_WINDOW:])
        answer = remove_boxed(boxed).strip() if boxed is not None else None
    return answer


def canonical_number(text: str) -> str | None:
    """``text`` as a canonical decimal if it is a plain number (``045`` -> ``45``), else None.

    >>> [canonical_number(s) for s in ["045", ".5", "-0.50", "27.0", "+3", "-0", "1e5", "."]]
    ['45', '0.5', '-0.5', '27', '3', '0', None, None]
    """
    m = _NUMBER.match(text)
    if m is None or not (m.group(2) or m.group(3)):
        return None
    sign, whole, frac = m.group(1), m.group(2).lstrip("0") or "0", (m.group(3) or "").rstrip("0")
    number = f"{whole}.{frac}" if frac else whole
    return "-" + number if sign == "-" and number != "0" else number


_FRACTION = re.compile(r"(-?)(?:\\[dt]?frac\{(-?[0-9]+)\}\{(-?[0-9]+)\}|(-?[0-9]+)/(-?[0-9]+))")


def as_rational(text: str) -> Fraction | None:
    """The exact value of a plainly written number (``-3``, ``0.25``, ``\\frac{1}{4}``, ``1/4``), else None.

    >>> as_rational(r"-\\frac{3}{6}"), as_rational("0.50"), as_rational("2/-4"), as_rational("x/2")
    (Fraction(-1, 2), Fraction(1, 2), Fraction(-1, 2), None)
    """
    if len(text) > 100:  # int() of thousands of digits is slow, and refused by Python >= 3.11
        return None
    m = _FRACTION.fullmatch(text)
    if m is not None:
        sign, num, den = m.group(1), m.group(2) or m.group(4), m.group(3) or m.group(5)
        if int(den) == 0:
            return None
        return Fraction(int(num), int(den)) * (-1 if sign else 1)
    number = canonical_number(text)
    return Fraction(number) if number is not None else None


def normalize_final_answer(answer: str) -> str:
    """Minerva's normalisation of a final answer (see the module docstring for the few additions).

    >>> normalize_final_answer(r"x = \\frac12 \\text{ cm}")
    '\\\\frac{1}{2}'
    >>> normalize_final_answer(r"$\\boxed{1,000}$ dollars")
    '1000'
    >>> normalize_final_answer(r"\\left( 3, \\frac{\\pi}{2} \\right)")
    '(3,\\\\frac{\\\\pi}{2})'
    >>> normalize_final_answer("045"), normalize_final_answer("27.0"), normalize_final_answer(".5")
    ('45', '27', '0.5')
    """
    answer = answer.split("=")[-1]
    for before, after in _SUBSTITUTIONS:
        answer = answer.replace(before, after)
    for word in _UNIT_WORDS + _REMOVED_MARKS:
        answer = answer.replace(word, "")

    answer = "\n".join(_first_math_span(line) for line in answer.split("\n"))
    for command in ("\\text", "\\textbf", "\\overline"):
        answer = _unwrap_to_first_brace(answer, command)
    answer = "\n".join(_unwrap_boxed_to_last_brace(line) for line in answer.split("\n"))
    answer = _LEFT_RIGHT.sub("", answer)

    answer = _FRAC_SHORT.sub(r"\1{\2}{\3}", answer)
    answer = _FRAC_HALF_SHORT.sub(r"\1{\2}", answer)
    answer = _FRAC_DEN_SHORT.sub(r"\1{\2}", answer)
    answer = _SQRT_SHORT.sub(r"\\sqrt{\1}", answer)
    answer = answer.replace("$", "").strip()

    if _THOUSANDS.match(answer):
        answer = answer.replace(",", "")
    return canonical_number(answer) or answer


_ASSIGNED_NAME = re.compile(r"^\\?[a-zA-Z]+(?:_\{?[a-zA-Z0-9]+\}?)?(?:\([a-zA-Z]\))?$")


def drops_equation(answer: str) -> bool:
    """Whether keeping only the text after the last ``=`` loses an equation, not just a name.

    Minerva's rule reads ``x = 5`` as ``5`` (right), but also ``5x + 4 = 0`` as ``0`` (a false match
    with the answer ``0`` in mode "dapo", kept there because it is the paper's grader).

    >>> drops_equation("x = 5"), drops_equation(r"$\\theta_1=\\pi$"), drops_equation("5x - 7y + 4 = 0")
    (False, False, True)
    """
    if "=" not in answer:
        return False
    name = answer.rsplit("=", 1)[0].replace("$", "").replace(" ", "")
    return _ASSIGNED_NAME.match(name) is None


@lru_cache(maxsize=8192)
def normalize_ground_truth(ground_truth: str) -> str:
    """``normalize_final_answer`` memoised: a batch repeats each ground truth once per sample."""
    return normalize_final_answer(ground_truth)
