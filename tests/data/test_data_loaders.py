"""Loaders of real datasets on small files written here, and clear errors on bad input."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest

from dapo_lab.data.example import DAPO_PREFIX, DAPO_SUFFIX, PromptExample, apply_dapo_template, render_prompt
from dapo_lab.data.loaders import load_examples
from dapo_lab.data.sources import MathFileData
from dapo_lab.models.tokenizer import build_byte_tokenizer


def verl_row(problem: str, answer, source="math_dapo", templated=False, system=None):
    content = apply_dapo_template(problem) if templated else problem
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]
    return {"data_source": source, "prompt": messages, "ability": "MATH",
            "reward_model": {"ground_truth": answer, "style": "rule"}, "extra_info": {"index": 0}}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_verl_parquet_dedups_reports_conflicts_and_templates_once(tmp_path, caplog):
    rows = [verl_row("What is 1+1?", "2")] * 3 + [verl_row("What is 2+2?", "4", templated=True)]
    rows += [verl_row("What is 1+1? ", "3"), verl_row("Find x.", "045")]
    path = tmp_path / "train.parquet"
    pd.DataFrame(rows).to_parquet(path)
    with caplog.at_level(logging.INFO, logger="dapo_lab.data.loaders"):
        examples = load_examples(path)
    assert [e.ground_truth for e in examples] == ["2", "4", "45"]
    assert all(e.prompt.startswith(DAPO_PREFIX) and e.prompt.endswith(DAPO_SUFFIX) for e in examples)
    assert examples[1].prompt.count(DAPO_PREFIX) == 1  # already templated: unchanged
    assert examples[0].source == "math_dapo" and examples[0].messages is None
    assert "6 rows -> 3 distinct" in caplog.text
    assert "1 repeated problems have conflicting answers" in caplog.text and "['2', '3']" in caplog.text
    assert len(load_examples(path, dedup=False)) == 6


def test_verl_jsonl_keeps_system_messages_and_renders_them(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [verl_row("Add 2 and 3.", 5, system="Be brief.")])
    (ex,) = load_examples(path, template=False)
    assert ex.prompt == "Add 2 and 3." and ex.ground_truth == "5"
    assert [m["role"] for m in ex.messages] == ["system", "user"]
    text = render_prompt(ex, build_byte_tokenizer(), use_chat_template=True)
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nAdd 2 and 3.<|im_end|>\n"
                    "<|im_start|>assistant\n")
    assert render_prompt(ex, build_byte_tokenizer(), use_chat_template=False) == "Add 2 and 3."


def test_gsm8k_answers_lose_thousands_commas(tmp_path):
    rows = [{"question": "How many?", "answer": "2 * 617 = <<2*617=1234>>1234\n#### 1,234"},
            {"question": "Owed?", "answer": "so\n#### -5"}]
    examples = load_examples(write_jsonl(tmp_path / "gsm8k_test.jsonl", rows))
    assert [e.ground_truth for e in examples] == ["1234", "-5"]
    assert examples[0].source == "gsm8k_test" and examples[0].prompt == apply_dapo_template("How many?")


def test_problem_answer_rows_json_and_integer_answers(tmp_path):
    rows = [{"problem": "AIME one", "answer": "045"}, {"question": "AMC one", "answer": 27.0},
            {"problem": "MATH one", "answer": "\\frac{1}{2}"}]
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(rows))
    examples = load_examples(path, schema="problem_answer", source="mine")
    assert [e.ground_truth for e in examples] == ["45", "27", "\\frac{1}{2}"]
    assert {e.source for e in examples} == {"mine"}


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([verl_row("ok", "1"), {**verl_row("no answer", "1"), "reward_model": {"style": "rule"}}],
         r"row 1: missing field 'reward_model.ground_truth'"),
        ([verl_row("ok", "1"), verl_row("empty", "  ")], r"row 1: empty ground truth"),
        ([verl_row("ok", "1"), {**verl_row("x", "1"), "prompt": []}], r"row 1: field 'prompt' must be"),
        ([{"problem": "p", "answer": None}], r"row 0: empty ground truth"),
        ([{"question": "q", "answer": "#### 3"}, {"question": "q2", "answer": "no marker"}],
         r"row 1: GSM8K answer has no '#### N' line"),
        ([{"text": "what"}], r"row 0: unrecognised columns \['text'\]"),
    ],
)
def test_bad_rows_name_the_file_and_row(tmp_path, rows, message):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(ValueError, match=message) as err:
        load_examples(path)
    assert str(path) in str(err.value)


def test_missing_file_bad_json_and_unknown_type_are_clear(tmp_path):
    with pytest.raises(ValueError, match=r"nowhere\.parquet: data file not found"):
        load_examples(tmp_path / "nowhere.parquet")
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"problem": "p", "answer": "1"}\n{oops\n')
    with pytest.raises(ValueError, match=r"b\.jsonl line 2: invalid JSON"):
        load_examples(bad)
    csv = tmp_path / "d.csv"
    csv.write_text("a,b\n")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_examples(csv)
    with pytest.raises(ValueError, match="unknown schema"):
        load_examples(csv, schema="parquet")


def test_math_file_data_splits_and_limits(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"problem": f"p{i}", "answer": str(i)} for i in range(5)])
    data = MathFileData(train_path=str(train), eval_path=str(train), eval_limit=2)
    assert len(data.train_examples()) == 5 and len(data.eval_examples()) == 2
    assert all(isinstance(e, PromptExample) for e in data.train_examples())
    with pytest.raises(ValueError, match="no eval_path configured"):
        MathFileData(train_path=str(train)).eval_examples()
