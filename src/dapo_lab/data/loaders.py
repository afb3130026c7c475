"""Loaders for real math datasets: rows from parquet / JSONL / JSON, mapped to `PromptExample`.

Three row schemas, detected from the columns (or named): verl/DAPO (`prompt` = chat messages,
`reward_model.ground_truth`, `data_source`), GSM8K (`question`, `answer` ending in `#### N`) and plain
`problem` / `answer` (MATH-500, AIME, AMC). Every problem gets DAPO's prompt template unless the file
already has it. A bad row (invalid JSON, a missing, empty or wrongly typed field, bytes that are not UTF-8 in a
field that is read) raises one ValueError naming the file, the row and the field, never a pandas KeyError or a
UnicodeDecodeError; with ``on_bad_row="skip"`` it is skipped instead, and one warning per file counts them.

Simplified: text files are decoded with ``surrogateescape``, so a stray byte becomes a lone surrogate that is
reported (or skipped) only where a field that is read holds it; a bad byte in an unread column (e.g. a
``solution``) is left alone, as that column is.
"""

from __future__ import annotations

import codecs
import dataclasses
import json
import logging
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dapo_lab.data.example import PromptExample, apply_dapo_template, strip_dapo_template

log = logging.getLogger(__name__)
SCHEMAS = ("auto", "verl", "gsm8k", "problem_answer")
ON_BAD_ROW = ("error", "skip")
SHOWN_BAD_ROWS = 3  # bad rows quoted in a file's skip warning
_SURROGATE = re.compile("[\ud800-\udfff]")
# A read row, or the ValueError that stands for a row that could not be read (invalid JSON).
Row = tuple[str, Any]


def resolve_path(path: str | Path) -> Path:
    """`path` with `~` expanded, relative to the current directory; a ValueError if it is not a file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"{path}: data file not found (resolved to {p.absolute()}); set data.train_path / "
                         "data.eval_path, or DAPO_DATA_DIR for the default paths")
    return p


def check_on_bad_row(on_bad_row: str) -> None:
    if on_bad_row not in ON_BAD_ROW:
        raise ValueError(f"data.on_bad_row must be one of {ON_BAD_ROW}, got {on_bad_row!r}")


def _decode(raw: bytes) -> str:
    # surrogateescape: a byte that is not UTF-8 becomes U+DC80..U+DCFF, reported by the field that holds it
    return raw.removeprefix(codecs.BOM_UTF8).decode("utf-8", errors="surrogateescape")


def read_rows(path: str | Path) -> list[Row]:
    """``(where, row)`` for every row of a `.parquet`, `.jsonl` or `.json` (a list of objects) file, rows as plain
    Python values; ``where`` is ``"<path> row <i>"``. A JSONL line that is not JSON comes as a ValueError in place
    of its row (the caller raises or skips it); blank lines are not rows.

    >>> import tempfile, os
    >>> with tempfile.NamedTemporaryFile("wb", suffix=".jsonl", delete=False) as f:
    ...     _ = f.write(b'{"a": 1}\\n\\n{oops\\n')
    >>> [(where[-5:], row) for where, row in read_rows(f.name)]  # doctest: +ELLIPSIS
    [('row 0', {'a': 1}), ('row 1', ValueError('... line 3: invalid JSON (Expecting property name ...)'))]
    >>> os.unlink(f.name)
    """
    p = resolve_path(path)
    if p.suffix == ".parquet":
        import pandas as pd

        try:
            records = pd.read_parquet(p).to_dict("records")
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: a text column is not valid UTF-8 ({e.reason} at byte {e.start}); "
                             "re-encode the file as UTF-8") from None
        return [(f"{path} row {i}", _plain(r)) for i, r in enumerate(records)]
    if p.suffix == ".jsonl":
        rows: list[Row] = []
        for n, line in enumerate(_decode(p.read_bytes()).split("\n"), start=1):
            if line.strip():
                try:
                    row: Any = json.loads(line)
                except json.JSONDecodeError as e:
                    row = ValueError(f"{path} line {n}: invalid JSON ({e.msg})")
                rows.append((f"{path} row {len(rows)}", row))
        return rows
    if p.suffix == ".json":
        try:
            data = json.loads(_decode(p.read_bytes()))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} line {e.lineno}: invalid JSON ({e.msg})") from None
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of rows, got {type(data).__name__}")
        return [(f"{path} row {i}", r) for i, r in enumerate(data)]
    raise ValueError(f"{p}: unsupported file type {p.suffix!r} (expected .parquet, .jsonl or .json)")


def _plain(value: Any) -> Any:
    """numpy arrays / scalars from parquet -> lists / Python scalars (recursively)."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def detect_schema(row: dict[str, Any], where: str) -> str:
    """The row schema, from the columns of a row.

    >>> detect_schema({"question": "q", "answer": "so 3\\n#### 3"}, "f row 0")
    'gsm8k'
    """
    if "prompt" in row and "reward_model" in row:
        return "verl"
    if "question" in row and isinstance(row.get("answer"), str) and "####" in row["answer"]:
        return "gsm8k"
    if ("problem" in row or "question" in row) and "answer" in row:
        return "problem_answer"
    raise ValueError(f"{where}: unrecognised columns {sorted(row)}; expected verl (prompt, reward_model), "
                     "gsm8k (question, answer with '#### N') or problem/answer")


def _field(row: dict[str, Any], dotted: str, where: str) -> Any:
    value: Any = row
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            raise ValueError(f"{where}: missing field {dotted!r}")
        value = value[key]
    return value


def check_utf8(text: str, where: str, name: str) -> str:
    """``text``, or a ValueError naming the field when it holds bytes that were not UTF-8 (or a lone surrogate).

    >>> check_utf8(b"caf\\xe9".decode("utf-8", "surrogateescape"), "f row 2", "problem")
    Traceback (most recent call last):
    ...
    ValueError: f row 2: field 'problem' is not valid UTF-8 (byte 0xe9 at character 3)
    """
    bad = _SURROGATE.search(text)
    if bad is not None:
        code = ord(bad.group())
        what = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"lone surrogate U+{code:04X}"
        raise ValueError(f"{where}: field {name!r} is not valid UTF-8 ({what} at character {bad.start()})")
    return text


def clean_answer(value: Any, where: str, name: str = "answer") -> str:
    """A non-empty answer string from text or a number; integer-valued numbers lose padding and `.0` (AIME "045",
    AMC 27.0). Anything else (null, NaN, a list, a boolean, infinity) raises a ValueError naming the field ``name``.

    >>> clean_answer("045", "f"), clean_answer(27.0, "f"), clean_answer(" \\\\frac{1}{2} ", "f")
    ('45', '27', '\\\\frac{1}{2}')
    >>> clean_answer(["1", "2"], "f row 3")
    Traceback (most recent call last):
    ...
    ValueError: f row 3: field 'answer' must be text or a number, got list ['1', '2']
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):  # parquet's missing values are NaN
        raise ValueError(f"{where}: empty ground truth (field {name!r} is {'null' if value is None else 'NaN'})")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{where}: field {name!r} must be text or a number, got {type(value).__name__} {value!r:.80}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: field {name!r} must be a finite number, got {value}")
        if value.is_integer():
            value = int(value)
    text = check_utf8(str(value).strip(), where, name)
    if re.fullmatch(r"-?\d+", text):
        text = str(int(text))
    if not text:
        raise ValueError(f"{where}: empty ground truth (field {name!r})")
    return text


def _text(value: Any, where: str, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        got = "an empty string" if isinstance(value, str) else f"{type(value).__name__} {value!r:.80}"
        raise ValueError(f"{where}: field {name!r} must be a non-empty string, got {got}")
    return check_utf8(value, where, name)


def verl_example(row: dict[str, Any], where: str, template: bool, source: str) -> PromptExample:
    messages = _field(row, "prompt", where)
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise ValueError(f"{where}: field 'prompt' must be a non-empty list of chat messages")
    messages = [{"role": _text(m.get("role"), where, "prompt.role"),
                 "content": _text(m.get("content"), where, "prompt.content")} for m in messages]
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        raise ValueError(f"{where}: field 'prompt' has no user message")
    if template:
        messages[users[-1]]["content"] = apply_dapo_template(messages[users[-1]]["content"])
    data_source = row.get("data_source")
    return PromptExample(
        prompt=messages[users[-1]]["content"],
        ground_truth=clean_answer(_field(row, "reward_model.ground_truth", where), where, "reward_model.ground_truth"),
        source=check_utf8(str(data_source), where, "data_source") if data_source else source,
        messages=messages if len(messages) > 1 else None,
        origin=where,
    )


def gsm8k_example(row: dict[str, Any], where: str, template: bool, source: str) -> PromptExample:
    """A GSM8K row: the number after `####`, without thousands commas.

    >>> gsm8k_example({"question": "q?", "answer": "a\\n#### 1,234"}, "f row 0", False, "gsm8k").ground_truth
    '1234'
    """
    question = _text(_field(row, "question", where), where, "question")
    answer = _text(_field(row, "answer", where), where, "answer")
    if "####" not in answer:
        raise ValueError(f"{where}: GSM8K answer has no '#### N' line (field 'answer')")
    final = answer.rsplit("####", 1)[1].strip().replace(",", "")
    return PromptExample(apply_dapo_template(question) if template else question,
                         clean_answer(final, where), source, origin=where)


def problem_answer_example(row: dict[str, Any], where: str, template: bool, source: str) -> PromptExample:
    name = "problem" if "problem" in row else "question"
    problem = _text(_field(row, name, where), where, name)
    return PromptExample(apply_dapo_template(problem) if template else problem,
                         clean_answer(_field(row, "answer", where), where), source, origin=where)


PARSERS: dict[str, Callable[[dict[str, Any], str, bool, str], PromptExample]] = {
    "verl": verl_example, "gsm8k": gsm8k_example, "problem_answer": problem_answer_example}


def deduplicate(examples: list[PromptExample]) -> tuple[list[PromptExample], dict[str, list[str]]]:
    """Keep the first example of each problem text (template stripped, whitespace normalised); return
    them and the repeated problems whose answers disagree (problem -> distinct answers in file order).

    >>> ex = [PromptExample("p", "1", "s"), PromptExample("p", "1", "s"), PromptExample(" p", "2", "s")]
    >>> kept, conflicts = deduplicate(ex)
    >>> len(kept), conflicts
    (1, {'p': ['1', '2']})
    """
    first: dict[str, PromptExample] = {}
    answers: dict[str, list[str]] = {}
    for ex in examples:
        key = " ".join(strip_dapo_template(ex.prompt).split())
        first.setdefault(key, ex)
        seen = answers.setdefault(key, [])
        if ex.ground_truth not in seen:
            seen.append(ex.ground_truth)
    return list(first.values()), {k: v for k, v in answers.items() if len(v) > 1}


def _detect(rows: list[Row], on_bad_row: str, path: str | Path) -> str:
    """The schema of the first row (with ``skip``: of the first row that has one)."""
    for where, row in rows:
        try:
            if not isinstance(row, dict):
                raise row if isinstance(row, ValueError) else ValueError(
                    f"{where}: expected an object, got {type(row).__name__}")
            return detect_schema(row, where)
        except ValueError:
            if on_bad_row == "error":
                raise
    raise ValueError(f"{path}: no row has a recognisable schema "
                     "(verl, gsm8k or problem/answer); set data.schema")


def read_examples(
    path: str | Path,
    schema: str = "auto",
    dedup: bool = True,
    template: bool = True,
    source: str | None = None,
    limit: int | None = None,
    on_bad_row: str = "error",
) -> tuple[list[PromptExample], dict[str, float]]:
    """The examples of one file and ``{"data/skipped_rows": n}``; see :func:`load_examples`."""
    if schema not in SCHEMAS:
        raise ValueError(f"{path}: unknown schema {schema!r}; expected one of {SCHEMAS}")
    check_on_bad_row(on_bad_row)
    rows = read_rows(path)
    if not rows:
        raise ValueError(f"{path}: no rows")
    default_source = source or Path(path).stem
    parse = PARSERS[_detect(rows, on_bad_row, path) if schema == "auto" else schema]
    examples, bad = [], []
    for where, row in rows:
        try:
            if isinstance(row, ValueError):
                raise row
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected an object, got {type(row).__name__}")
            ex = parse(row, where, template, default_source)
        except ValueError as err:
            if on_bad_row == "error":
                raise err from None
            bad.append(str(err).removeprefix(f"{path} "))
            continue
        examples.append(ex if source is None else dataclasses.replace(ex, source=source))
    if bad:
        log.warning("%s: skipped %d bad rows of %d (data.on_bad_row=skip); first: %s", path, len(bad), len(rows),
                    " | ".join(bad[:SHOWN_BAD_ROWS]))
    if not examples:
        raise ValueError(f"{path}: no usable rows: all {len(rows)} are bad (first: {bad[0]})")
    if dedup:
        n = len(examples)
        examples, conflicts = deduplicate(examples)
        if len(examples) < n:
            log.info("%s: %d rows -> %d distinct problems", path, n, len(examples))
        if conflicts:
            shown = "; ".join(f"{p[:60]!r}: {a}" for p, a in list(conflicts.items())[:5])
            log.warning("%s: %d repeated problems have conflicting answers (kept the first): %s",
                        path, len(conflicts), shown)
    return (examples[:limit] if limit is not None else examples), {"data/skipped_rows": float(len(bad))}


def load_examples(
    path: str | Path,
    schema: str = "auto",
    dedup: bool = True,
    template: bool = True,
    source: str | None = None,
    limit: int | None = None,
    on_bad_row: str = "error",
) -> list[PromptExample]:
    """The examples of one file; `source` defaults to the row's `data_source`, else the file's stem.

    ``on_bad_row="error"``: the first bad row raises one ValueError naming the file, the row and the field;
    ``"skip"``: bad rows are left out and one warning counts them and quotes the first few.

    >>> import tempfile, os
    >>> with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
    ...     _ = f.write('{"problem": "1+1?", "answer": "2"}\\n{"problem": "2+2?", "answer": ""}\\n')
    >>> load_examples(f.name)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ...jsonl row 1: empty ground truth (field 'answer')
    >>> [e.ground_truth for e in load_examples(f.name, on_bad_row="skip")]
    ['2']
    >>> os.unlink(f.name)
    """
    return read_examples(path, schema, dedup, template, source, limit, on_bad_row)[0]
