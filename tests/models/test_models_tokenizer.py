"""The byte tokenizer survives save_pretrained + AutoTokenizer (transformers 5.x rebuilds Qwen2's pipeline)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from dapo_lab.data.example import PromptExample, apply_dapo_template, render_prompt
from dapo_lab.data.task import RunningSumTask, worked_solution
from dapo_lab.models.tiny import build_tiny


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Original and reloaded tokenizer of a saved tiny model folder (config.json says qwen2)."""
    folder = tmp_path_factory.mktemp("tiny")
    model, tok = build_tiny(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return tok, AutoTokenizer.from_pretrained(folder)


def task_strings() -> list[str]:
    task = RunningSumTask(train_size=300, max_terms=12)
    examples = task.eval_examples() + task.train_examples()
    solutions = [worked_solution(t) for t in task.eval_problems]
    return [e.prompt for e in examples] + solutions + [e.prompt + s for e, s in zip(examples, solutions)]


def test_reload_is_qwen2_with_the_right_special_ids(saved):
    tok, reloaded = saved
    assert type(reloaded).__name__ == "Qwen2Tokenizer"  # the trap: its own pipeline, not tokenizer.json's
    for t in (tok, reloaded):
        assert t.eos_token == t.pad_token == "<|endoftext|>" and t.eos_token_id == t.pad_token_id == 256
        assert t.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]) == [257, 258]
        assert len(t) == 259


def test_every_task_string_round_trips_exactly_after_reload(saved):
    tok, reloaded = saved
    strings = task_strings()
    ids = reloaded(strings, add_special_tokens=False)["input_ids"]
    assert ids == tok(strings, add_special_tokens=False)["input_ids"]
    assert reloaded.batch_decode(ids) == strings
    assert all(len(i) == len(s) for i, s in zip(ids, strings))  # ASCII: one token per character


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60))
def test_arbitrary_text_round_trips(saved, text):
    import unicodedata

    _, reloaded = saved
    text = unicodedata.normalize("NFC", text)  # Qwen2's normalizer is NFC
    assert reloaded.decode(reloaded(text, add_special_tokens=False)["input_ids"]) == text


def test_spaces_newlines_and_dapo_prompts_survive(saved):
    _, reloaded = saved
    for s in ["  two  spaces\n\n\tand tabs \n", "Answer: 17", apply_dapo_template("Find $x^2$ if x = 3.")]:
        assert reloaded.decode(reloaded(s)["input_ids"]) == s


def test_chat_template_after_reload(saved):
    tok, reloaded = saved
    ex = PromptExample("Add a=1 b=2", "3", "toy")
    text = render_prompt(ex, reloaded, use_chat_template=True)
    assert text == render_prompt(ex, tok, use_chat_template=True)
    assert text == "<|im_start|>user\nAdd a=1 b=2<|im_end|>\n<|im_start|>assistant\n"
    ids = reloaded(text, add_special_tokens=False)["input_ids"]
    assert ids[0] == 257 and ids.count(258) == 1
    assert reloaded.decode(ids, skip_special_tokens=True) == "user\nAdd a=1 b=2\nassistant\n"
