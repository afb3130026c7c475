"""Bad input, clear errors, before expensive work: every malformed row, prompt, model folder and option combination
gives one ValueError naming the file, the row and the field (or the split and the example, or the options);
``data.on_bad_row=skip`` skips the rows instead and counts them. Tiny temp files, the byte tokenizer, a
random-weight tiny model: no warm start, no training."""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hydra import compose, initialize_config_dir

from dapo_lab.build import build_components, build_learner
from dapo_lab.data.example import PromptExample, render_prompt
from dapo_lab.data.loaders import load_examples
from dapo_lab.data.sources import MathFileData
from dapo_lab.data.validate import CheckedPromptSet, check_prompts
from dapo_lab.models.spec import PretrainedModel, TinyModel
from dapo_lab.models.tokenizer import build_byte_tokenizer

CONF = Path(__file__).resolve().parents[2] / "conf"
LOADER_LOG = "dapo_lab.data.loaders"


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


# ------------------------------------------------------------------------------------------------ bad file rows
def plain(problem: str, answer) -> dict:
    return {"problem": problem, "answer": answer}


def verl(problem, answer, **extra) -> dict:
    return {"data_source": "toy", "prompt": [{"role": "user", "content": problem}],
            "reward_model": {"ground_truth": answer, "style": "rule"}, **extra}


def gsm8k(question: str, answer: str) -> dict:
    return {"question": question, "answer": answer}


GOOD = {"plain": (plain("What is 1+1?", "2"), plain("What is 2+2?", "4")),
        "verl": (verl("What is 1+1?", "2"), verl("What is 2+2?", "4")),
        "gsm8k": (gsm8k("What is 1+1?", "so\n#### 2"), gsm8k("What is 2+2?", "so\n#### 4"))}


@dataclass(frozen=True)
class BadRow:
    """Row 1 of a three-row file (rows 0 and 2 are good), its schema family, file type, and the error it gives."""

    name: str
    row: dict | bytes  # bytes: the raw JSONL line (or JSON list element)
    match: str  # regex for the message after "<path> "
    kind: str = "plain"
    suffix: str = ".jsonl"


BAD_ROWS = [
    BadRow("missing answer", {"problem": "p?"}, r"row 1: missing field 'answer'"),
    BadRow("empty answer", plain("p?", ""), r"row 1: empty ground truth \(field 'answer'\)"),
    BadRow("blank answer", plain("p?", "   "), r"row 1: empty ground truth \(field 'answer'\)"),
    BadRow("null answer", plain("p?", None), r"row 1: empty ground truth \(field 'answer' is null\)"),
    BadRow("list answer", plain("p?", [1, 2]), r"row 1: field 'answer' must be text or a number, got list \[1, 2\]"),
    BadRow("object answer", plain("p?", {"v": 3}), r"row 1: field 'answer' must be text or a number, got dict"),
    BadRow("boolean answer", plain("p?", True), r"row 1: field 'answer' must be text or a number, got bool True"),
    BadRow("NaN answer", b'{"problem": "p?", "answer": NaN}', r"row 1: empty ground truth \(field 'answer' is NaN\)"),
    BadRow("infinite answer", b'{"problem": "p?", "answer": Infinity}',
           r"row 1: field 'answer' must be a finite number, got inf"),
    BadRow("number problem", plain(7, "7"), r"row 1: field 'problem' must be a non-empty string, got int 7"),
    BadRow("null problem", plain(None, "7"), r"row 1: field 'problem' must be a non-empty string, got NoneType None"),
    BadRow("list problem", plain(["a"], "7"), r"row 1: field 'problem' must be a non-empty string, got list"),
    BadRow("empty problem", plain("", "7"), r"row 1: field 'problem' must be a non-empty string, got an empty string"),
    BadRow("no problem column", {"question_text": "p?", "answer": "3"}, r"row 1: missing field 'question'"),
    BadRow("row not an object", b"[1, 2]", r"row 1: expected an object, got list"),
    BadRow("invalid JSON line", b'{"problem": "p?", "answer": ', r"line 2: invalid JSON \("),
    BadRow("non-UTF-8 problem", b'{"problem": "caf\xe9?", "answer": "1"}',
           r"row 1: field 'problem' is not valid UTF-8 \(byte 0xe9 at character 3\)"),
    BadRow("non-UTF-8 answer", b'{"problem": "p?", "answer": "1\xff"}',
           r"row 1: field 'answer' is not valid UTF-8 \(byte 0xff at character 1\)"),
    BadRow("lone surrogate", b'{"problem": "p\\ud800?", "answer": "1"}',
           r"row 1: field 'problem' is not valid UTF-8 \(lone surrogate U\+D800 at character 1\)"),
    BadRow("non-UTF-8 in a .json file", b'{"problem": "\xff\xfe", "answer": "1"}',
           r"row 1: field 'problem' is not valid UTF-8 \(byte 0xff", suffix=".json"),
    BadRow("wrong type in a .json file", plain("p?", [2]), r"row 1: field 'answer' must be text or a number",
           suffix=".json"),
    BadRow("missing answer in parquet", plain("p?", None), r"row 1: empty ground truth \(field 'answer' is NaN\)",
           suffix=".parquet"),
    BadRow("verl: missing ground truth", {**verl("p?", "1"), "reward_model": {"style": "rule"}},
           r"row 1: missing field 'reward_model.ground_truth'", kind="verl"),
    BadRow("verl: list ground truth", verl("p?", ["1"]),
           r"row 1: field 'reward_model.ground_truth' must be text or a number, got list", kind="verl"),
    BadRow("verl: prompt is text", {**verl("p?", "1"), "prompt": "p?"},
           r"row 1: field 'prompt' must be a non-empty list of chat messages", kind="verl"),
    BadRow("verl: number content", verl(5, "1"), r"row 1: field 'prompt.content' must be a non-empty string, got int 5",
           kind="verl"),
    BadRow("verl: non-UTF-8 content",
           b'{"data_source": "toy", "prompt": [{"role": "user", "content": "\xc3("}], '
           b'"reward_model": {"ground_truth": "1"}}',
           r"row 1: field 'prompt.content' is not valid UTF-8 \(byte 0xc3", kind="verl"),
    BadRow("gsm8k: no #### line", gsm8k("q?", "no marker"),
           r"row 1: GSM8K answer has no '#### N' line \(field 'answer'\)", kind="gsm8k"),
]


def write_rows(path: Path, rows: list[dict | bytes]) -> Path:
    """Rows as JSONL, a JSON list, or parquet; a bytes row is written as is (JSON text, possibly broken)."""
    encoded = [r if isinstance(r, bytes) else json.dumps(r).encode() for r in rows]
    if path.suffix == ".jsonl":
        path.write_bytes(b"".join(line + b"\n" for line in encoded))
    elif path.suffix == ".json":
        path.write_bytes(b"[" + b",\n".join(encoded) + b"]")
    else:
        pd.DataFrame(rows).to_parquet(path)
    return path


def bad_file(tmp_path: Path, case: BadRow) -> Path:
    first, last = GOOD[case.kind]
    return write_rows(tmp_path / f"data{case.suffix}", [first, case.row, last])


@pytest.mark.parametrize("case", BAD_ROWS, ids=[c.name for c in BAD_ROWS])
def test_a_bad_row_is_one_error_naming_file_row_and_field(tmp_path, case):
    path = bad_file(tmp_path, case)
    data = MathFileData(train_path=str(path), eval_path=str(path))  # on_bad_row="error", the default
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))} {case.match}") as err:
        data.train_examples()
    assert type(err.value) is ValueError  # one plain error: no UnicodeDecodeError, KeyError or chained traceback
    assert err.value.__cause__ is None and (err.value.__context__ is None or err.value.__suppress_context__)


@pytest.mark.parametrize("case", BAD_ROWS, ids=[c.name for c in BAD_ROWS])
def test_skip_leaves_a_bad_row_out_counts_it_and_warns_once(tmp_path, case, caplog):
    path = bad_file(tmp_path, case)
    data = MathFileData(train_path=str(path), eval_path=str(path), on_bad_row="skip")
    with caplog.at_level(logging.WARNING, logger=LOADER_LOG):
        examples = data.train_examples()
    assert [e.ground_truth for e in examples] == ["2", "4"]
    assert data.skipped_rows == {"train": 1}
    warnings = [r.getMessage() for r in caplog.records if r.name == LOADER_LOG and r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"{path}: skipped 1 bad rows of 3 (data.on_bad_row=skip); first: ")
    assert re.search(case.match, warnings[0]), warnings[0]
    assert examples[0].origin == f"{path} row 0" and examples[1].origin == f"{path} row 2"


def test_skip_counts_many_bad_rows_per_split_and_quotes_the_first_three(tmp_path, caplog):
    rows = [plain(f"p{i}?", str(i)) if i % 2 else plain(f"p{i}?", "") for i in range(10)]
    path = write_rows(tmp_path / "half.jsonl", rows)
    eval_path = write_rows(tmp_path / "eval.jsonl", [plain("e?", "1"), plain("f?", None)])
    data = MathFileData(train_path=str(path), eval_path=str(eval_path), on_bad_row="skip")
    with caplog.at_level(logging.WARNING, logger=LOADER_LOG):
        assert len(data.train_examples()) == 5 and len(data.eval_examples()) == 1
    assert data.skipped_rows == {"train": 5, "eval": 1}
    (train_warning, eval_warning) = [r.getMessage() for r in caplog.records if r.name == LOADER_LOG]
    assert "skipped 5 bad rows of 10" in train_warning
    assert train_warning.count("empty ground truth") == 3  # the first three, not all five
    assert str(eval_path) in eval_warning and "row 1: empty ground truth (field 'answer' is null)" in eval_warning


def test_a_bad_first_row_does_not_hide_the_schema_when_skipping(tmp_path):
    path = write_rows(tmp_path / "d.jsonl", [{"problem": "no answer"}, plain("p?", "1")])
    with pytest.raises(ValueError, match=r"row 0: unrecognised columns \['problem'\]"):
        load_examples(path)
    data = MathFileData(train_path=str(path), on_bad_row="skip")
    assert [e.ground_truth for e in data.train_examples()] == ["1"] and data.skipped_rows == {"train": 1}


def test_a_file_of_only_bad_rows_is_an_error_even_when_skipping(tmp_path):
    unknown = write_rows(tmp_path / "u.jsonl", [{"text": "x"}, b"{oops"])
    with pytest.raises(ValueError, match=r"u\.jsonl: no row has a recognisable schema .*; set data.schema"):
        load_examples(unknown, on_bad_row="skip")
    bad = write_rows(tmp_path / "d.jsonl", [plain("p?", ""), b"{oops"])
    with pytest.raises(ValueError, match=r"d\.jsonl: no usable rows: all 2 are bad \(first: row 0: empty ground"):
        load_examples(bad, on_bad_row="skip")


def test_on_bad_row_is_checked_and_spelled_like_the_constructor_in_every_file_config():
    with pytest.raises(ValueError, match=r"data.on_bad_row must be one of \('error', 'skip'\), got 'ignore'"):
        MathFileData(on_bad_row="ignore")
    files = [p for p in sorted((CONF / "data").glob("*.yaml")) if "MathFileData" in p.read_text()]
    assert len(files) >= 4
    for path in files:
        assert yaml.safe_load(path.read_text())["on_bad_row"] == "error", path
        line = next(x for x in path.read_text().splitlines() if x.startswith("on_bad_row:"))
        assert "# " in line, f"{path}: on_bad_row needs an inline comment"


# --------------------------------------------------------------------------------- prompts and the model's context
def file_examples(tmp_path: Path, problems: list[str]) -> tuple[Path, list[PromptExample]]:
    path = write_rows(tmp_path / "ctx.jsonl", [plain(p, str(i)) for i, p in enumerate(problems)])
    return path, load_examples(path, template=False, dedup=False)


@pytest.mark.parametrize("split", ["train", "eval"])
def test_a_prompt_longer_than_the_context_names_split_example_and_file_row(tmp_path, split):
    path, examples = file_examples(tmp_path, ["short?", "x" * 40, "fine?"])
    tok = build_byte_tokenizer()
    with pytest.raises(ValueError) as err:
        check_prompts(examples, tok, lambda e: e.prompt, max_context=64, max_new_tokens=32, split=split,
                      context_name="model.config.max_position_embeddings")
    assert str(err.value).startswith(
        f"{split} example 1 (source 'ctx', {path} row 1): the prompt is 40 tokens; with generation.max_new_tokens=32 "
        "it needs 72 > model.config.max_position_embeddings=64")
    kept, ids, skipped = check_prompts(examples, tok, lambda e: e.prompt, 64, 32, on_bad_row="skip", split=split)
    assert [e.prompt for e in kept] == ["short?", "fine?"] and skipped == 1
    assert ids == [tok(e.prompt, add_special_tokens=False)["input_ids"] for e in kept]


@pytest.mark.parametrize(
    "example, render, match",
    [(PromptExample("ok", 3, "custom"), None, r"train example 0 \(source 'custom'\): field 'ground_truth' must be a "
                                                r"non-empty string, got int 3"),
     ({"prompt": "p", "answer": "1"}, None, r"train example 0: expected a PromptExample, got dict"),
     (PromptExample("ok", "3", "custom"), lambda e: "", r"train example 0 \(source 'custom'\): the prompt renders "
                                                       r"to no tokens")],
    ids=["wrong type from a custom source", "not an example", "renders to nothing"])
def test_examples_of_a_custom_source_are_checked_too(example, render, match):
    with pytest.raises(ValueError, match=match):
        check_prompts([example], build_byte_tokenizer(), render or (lambda e: e.prompt), 512, 32)


def tiny_file_config(path: Path, *overrides: str):
    """debug=tiny (a random-weight 64-wide tiny model, context 512, max_response_len 24) reading ``path``."""
    return compose_train("debug=tiny", "data=math500", "~data.max_terms", "~data.train_size", "~data.eval_size",
                         f"data.train_path={path}", f"data.eval_path={path}", "data.template=false", *overrides)


def test_build_learner_checks_every_prompt_against_the_context_before_generating(tmp_path, caplog):
    # debug=tiny: context 512, 24 new tokens -> room for 488 prompt tokens (one byte tokenizer token per character)
    problems = ["What is 1+1?", "y" * 489, "What is 2+2?", "z" * 488]
    path = write_rows(tmp_path / "long.jsonl", [plain(p, str(i)) for i, p in enumerate(problems)])
    with pytest.raises(ValueError) as err:
        build_learner(tiny_file_config(path))
    assert str(err.value).startswith(
        f"train example 1 (source 'math500', {path} row 1): the prompt is 489 tokens; with "
        "generation.max_new_tokens=24 it needs 513 > model.config.max_position_embeddings=512")
    with caplog.at_level(logging.INFO, logger="dapo_lab.data.validate"):
        learner, _ = build_learner(tiny_file_config(path, "data.on_bad_row=skip"))
    assert isinstance(learner.train, CheckedPromptSet) and len(learner.train) == 3
    assert learner.train.skipped_rows == learner.evaluator.prompts.skipped_rows == 1
    assert "data/skipped_rows=2 (train 1, eval 1)" in caplog.text
    assert learner.train.ids(2) == learner.tokenizer("z" * 488, add_special_tokens=False)["input_ids"]


def test_bad_rows_and_skip_counts_reach_build_learner_before_the_model_loads(tmp_path, monkeypatch, caplog):
    path = write_rows(tmp_path / "d.jsonl", [plain("What is 1+1?", "2"), plain("p?", ""), plain("q?", "1")])

    def no_model(*args, **kwargs):
        raise AssertionError("the model loaded before the data was checked")

    with monkeypatch.context() as patch:
        patch.setattr(TinyModel, "load", no_model)
        with pytest.raises(ValueError, match=rf"^{re.escape(str(path))} row 1: empty ground truth \(field 'answer'\)$"):
            build_learner(tiny_file_config(path))
    with caplog.at_level(logging.INFO, logger="dapo_lab.data.validate"):
        learner, _ = build_learner(tiny_file_config(path, "data.on_bad_row=skip"))
    assert len(learner.train) == 2 and learner.train.skipped_rows == 1
    assert "data/skipped_rows=2 (train 1, eval 1)" in caplog.text


# --------------------------------------------------------------------------------------- model folder and tokenizer
@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """A random-weight tiny model saved as a Hugging Face folder (byte tokenizer: EOS and a chat template)."""
    cache = tmp_path_factory.mktemp("tiny")
    spec = TinyModel(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64,
                     warmstart_steps=0, cache_dir=str(cache))
    spec.load()
    return spec.cache_path()


def broken_copy(folder: Path, dest: Path, case: str) -> Path:
    shutil.copytree(folder, dest)
    if case == "no EOS token":
        config = json.loads((dest / "tokenizer_config.json").read_text())
        config.update(eos_token=None, pad_token=None, unk_token=None)
        (dest / "tokenizer_config.json").write_text(json.dumps(config))
    elif case == "no chat template":
        (dest / "chat_template.jinja").unlink()
    return dest


@pytest.mark.parametrize(
    "case, kwargs, match",
    [("missing folder", {}, r"^model.name_or_path='{path}' could not be loaded: no such folder"),
     ("no EOS token", {"use_chat_template": False},
      r"^model.name_or_path='{path}': the tokenizer has no EOS token, so a response could never end"),
     ("no chat template", {"use_chat_template": True},
      r"^model.use_chat_template=true, but the tokenizer of model.name_or_path='{path}' has no chat template: set "
      r"model.use_chat_template=false")],
)
def test_bad_model_folders_name_the_model_field(tiny_folder, tmp_path, case, kwargs, match):
    path = tmp_path / "model" if case == "missing folder" else broken_copy(tiny_folder, tmp_path / "model", case)

    def no_weights(*args, **kwargs):
        raise AssertionError("the weights loaded before the tokenizer was checked")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("dapo_lab.models.spec.AutoModelForCausalLM.from_pretrained", no_weights)
        with pytest.raises(ValueError, match=match.format(path=path)):
            PretrainedModel(name_or_path=str(path), dtype="float32", **kwargs).load()


def test_no_chat_template_is_fine_for_plain_prompts_and_an_error_for_chat_ones(tiny_folder, tmp_path):
    path = broken_copy(tiny_folder, tmp_path / "model", "no chat template")
    _, tok = PretrainedModel(name_or_path=str(path), dtype="float32", use_chat_template=False).load()
    example = PromptExample("Add 1 2", "3", "toy")
    assert render_prompt(example, tok, use_chat_template=False) == "Add 1 2"
    with pytest.raises(ValueError, match=r"^model.use_chat_template=true, but the tokenizer has no chat template"):
        render_prompt(example, tok, use_chat_template=True)  # it used to fall back to the plain prompt silently


# ------------------------------------------------------------------------------------- option combinations
@dataclass
class EngineSettings:
    """Stands in for a built vLLM engine (not installed here): only the settings the checks read."""

    tensor_parallel_size: int = 1
    distributed_executor_backend: str | None = None
    max_model_len: int | None = None
    logprobs_match_trainer = False


COMBINATIONS = [
    (["overlong.max_len=1000"], {}, r"overlong.max_len=1000 exceeds generation.max_new_tokens=96"),
    (["rollout_correction.old_logprobs=engine", "rollout_correction.tis_cap=2.0"], {},
     r"rollout_correction.tis_cap corrects the gap .* old_logprobs='engine' removes"),
    (["batch.mini_batch_prompts=3"], {}, r"batch.mini_batch_prompts=3 must divide batch.prompts_per_step=16"),
    (["trainer.max_steps=-1"], {}, r"optim.decay=cosine needs the run's length: set trainer.max_steps \(got -1\)"),
    (["sampling=none", "batch.gen_prompts=8"], {},
     r"batch.gen_prompts=8 < batch.prompts_per_step=16 with sampling=KeepAll \(one generation round per step\)"),
    (["sampling.max_gen_batches=1", "batch.gen_prompts=8"], {},
     r"sampling.max_gen_batches=1 rounds x batch.gen_prompts=8 prompts < batch.prompts_per_step=16"),
    ([], {"rollout": EngineSettings(tensor_parallel_size=2)},
     r"rollout.tensor_parallel_size=2 needs rollout.distributed_executor_backend=external_launcher"),
    ([], {"rollout": EngineSettings(max_model_len=96)},
     r"rollout.max_model_len=96 leaves no room for a prompt beside generation.max_new_tokens=96"),
    (["model=qwen2.5_0.5b", "model.name_or_path=/no/such/qwen"], {},
     r"model.name_or_path='/no/such/qwen' could not be loaded: no such folder"),
    (["data=gsm8k"], {},
     r"model.warmstart_steps=450 warm-starts the tiny model on worked solutions of its data, and data=MathFileData "
     r"offers none"),
    (["data=gsm8k", "model.warmstart_steps=0", "data.on_bad_row=ignore"], {}, r"data.on_bad_row must be one of"),
    (["evaluation.greedy=false"], {}, r"objective=eval/greedy_acc is not logged by this run's evaluation \(evaluation.k"
                                      r"=4, evaluation.greedy=False\); choose one of \['eval/avg@4'"),
    (["objective=eval/avg@32"], {}, r"objective=eval/avg@32 is not logged"),
]


@pytest.mark.parametrize("overrides, replace, match", COMBINATIONS, ids=[m.split(" ")[0] for _, _, m in COMBINATIONS])
def test_incompatible_options_fail_in_build_components(overrides, replace, match):
    with pytest.raises(ValueError, match=match):
        build_components(compose_train(*overrides), **replace)


@pytest.mark.parametrize("overrides", [[], ["debug=tiny"], ["scale=paper"], ["experiment=grpo"],
                                       ["scale=paper", "experiment=grpo"], ["rollout_correction.tis_cap=2.0"],
                                       ["data=gsm8k", "model.warmstart_steps=0", "data.on_bad_row=skip"],
                                       ["optim.decay=constant", "trainer.max_steps=-1"]],
                         ids=lambda o: " ".join(o) or "default")
def test_valid_combinations_still_build(overrides):
    build_components(compose_train(*overrides), rollout=EngineSettings(tensor_parallel_size=2,
                                                                       distributed_executor_backend="external_launcher",
                                                                       max_model_len=4096 * 8))
    build_components(compose_train(*overrides))



def test_the_generated_task_passes_the_context_check_with_its_prompts_tokenized_once():
    learner, _ = build_learner(compose_train("debug=tiny"))
    train = learner.train
    assert isinstance(train, CheckedPromptSet) and train.skipped_rows == 0 and len(train) == 256
    for i in (0, 17, 255):  # the cache holds what PromptSet.ids would have computed
        assert train.ids(i) == learner.tokenizer(train.examples[i].prompt, add_special_tokens=False)["input_ids"]
