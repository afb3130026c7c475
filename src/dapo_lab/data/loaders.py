"""Loaders for real math datasets: rows from parquet / JSONL / JSON, mapped to `PromptExample`.

Three row schemas, detected from the columns (or named): verl/DAPO (`prompt` = chat messages,
`reward_model.ground_truth`, `data_source`), GSM8K (`question`, `answer` ending in `#### N`) and plain
`problem` / `answer` (MATH-500, AIME, AMC). Every problem gets DAPO's prompt template unless the file
already has it. Bad input raises one ValueError naming the file and the row, never a pandas KeyError.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dapo_lab.data.example import PromptExample, apply_dapo_template, strip_dapo_template

log = logging.getLogger(__name__)
SCHEMAS = ("auto", "verl", "gsm8k", "problem_answer")


def resolve_path(path: str | Path) -> Path:
    """`path` with `~` expanded, relative to the current directory; a ValueError if it is not a file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"{path}: data file not found (resolved to {p.absolute()}); set data.train_path / "
                         "data.eval_path, or DAPO_DATA_DIR for the default paths")
    return p


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a `.parquet`, `.jsonl` or `.json` (a list of objects) file, as plain Python dicts."""
    p = resolve_path(path)
    if p.suffix == ".parquet":
        import pandas as pd

        return [_plain(r) for r in pd.read_parquet(p).to_dict("records")]
    if p.suffix == ".jsonl":
        rows = []
        with p.open(encoding="utf-8") as f:
            for i, line in enumerate(f):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{p} line {i + 1}: invalid JSON ({e.msg})") from None
        return rows
    if p.suffix == ".json":
        rows = json.loads(p.read_text(encoding="utf-8"))
        if not isinstance(rows, list):
            raise ValueError(f"{p}: expected a JSON list of rows, got {type(rows).__name__}")
        return rows
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


def clean_answer(value: Any, where: str) -> str:
    """A non-empty answer string; integer-valued numbers lose padding and `.0` (AIME "045", AMC 27.0).

    >>> clean_answer("045", "f"), clean_answer(27.0, "f"), clean_answer(" \\\\frac{1}{2} ", "f")
    ('45', '27', '\\\\frac{1}{2}')
    """
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = "" if value is None else str(value).strip()
    if re.fullmatch(r"-?\d+", text):
        text = str(int(text))
    if not text:
        raise ValueError(f"{where}: empty ground truth")
    return text


def _text(value: Any, where: str, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: field {name!r} must be a non-empty string, got {value!r:.80}")
    return value


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
    return PromptExample(
        prompt=messages[users[-1]]["content"],
        ground_truth=clean_answer(_field(row, "reward_model.ground_truth", where), where),
        source=str(row.get("data_source") or source),
        messages=messages if len(messages) > 1 else None,
    )


def gsm8k_example(row: dict[str, Any], where: str, template: bool, source: str) -> PromptExample:
    """A GSM8K row: the number after `####`, without thousands commas.

    >>> gsm8k_example({"question": "q?", "answer": "a\\n#### 1,234"}, "f row 0", False, "gsm8k").ground_truth
    '1234'
    """
    question = _text(_field(row, "question", where), where, "question")
    answer = _text(_field(row, "answer", where), where, "answer")
    if "####" not in answer:
        raise ValueError(f"{where}: GSM8K answer has no '#### N' line")
    final = answer.rsplit("####", 1)[1].strip().replace(",", "")
    return PromptExample(apply_dapo_template(question) if template else question,
                         clean_answer(final, where), source)


def problem_answer_example(row: dict[str, Any], where: str, template: bool, source: str) -> PromptExample:
    problem = _text(row.get("problem", row.get("question")), where, "problem")
    return PromptExample(apply_dapo_template(problem) if template else problem,
                         clean_answer(_field(row, "answer", where), where), source)


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


def load_examples(
    path: str | Path,
    schema: str = "auto",
    dedup: bool = True,
    template: bool = True,
    source: str | None = None,
    limit: int | None = None,
) -> list[PromptExample]:
    """The examples of one file; `source` defaults to the row's `data_source`, else the file's stem."""
    if schema not in SCHEMAS:
        raise ValueError(f"{path}: unknown schema {schema!r}; expected one of {SCHEMAS}")
    rows = read_rows(path)
    if not rows:
        raise ValueError(f"{path}: no rows")
    default_source = source or Path(path).stem
    if schema == "auto":
        schema = detect_schema(rows[0], f"{path} row 0")
    parse = PARSERS[schema]
    examples = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{path} row {i}: expected an object, got {type(row).__name__}")
        ex = parse(row, f"{path} row {i}", template, default_source)
        examples.append(ex if source is None else PromptExample(ex.prompt, ex.ground_truth, source, ex.messages))
    if dedup:
        n = len(examples)
        examples, conflicts = deduplicate(examples)
        if len(examples) < n:
            log.info("%s: %d rows -> %d distinct problems", path, n, len(examples))
        if conflicts:
            shown = "; ".join(f"{p[:60]!r}: {a}" for p, a in list(conflicts.items())[:5])
            log.warning("%s: %d repeated problems have conflicting answers (kept the first): %s",
                        path, len(conflicts), shown)
    return examples[:limit] if limit is not None else examples
