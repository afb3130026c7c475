"""The `conf/data/` configs on the real copies in ../shared/data (skipped where that folder is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dapo_lab.data.example import DAPO_PREFIX, DAPO_SUFFIX
from dapo_lab.data.loaders import load_examples
from dapo_lab.data.task import RunningSumTask

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "README.md").is_file(), reason=f"{DATA} is absent")


def data_config(name: str, monkeypatch):
    monkeypatch.setenv("DAPO_DATA_DIR", str(DATA))
    return instantiate(OmegaConf.load(ROOT / "conf" / "data" / f"{name}.yaml"))


def test_tiny_task_config_is_the_default_task(monkeypatch):
    task = data_config("tiny_task", monkeypatch)
    assert isinstance(task, RunningSumTask) and task.eval_size >= 500
    assert task == RunningSumTask(max_terms=task.max_terms, eval_size=task.eval_size)


@needs_data
def test_dapo_math_17k(monkeypatch, caplog):
    data = data_config("dapo_math_17k", monkeypatch)
    train = data.train_examples()
    # 17,917 rows. Exact text: 627 repeats, 11 with a conflicting answer (data README). Dedup compares the
    # whitespace-normalised problem, which also merges 102 copies that differ only in spacing (12 conflicts).
    assert len(train) == 17_188
    assert "12 repeated problems have conflicting answers" in caplog.text
    assert all(e.prompt.startswith(DAPO_PREFIX) and e.prompt.endswith(DAPO_SUFFIX) for e in train)
    assert all(e.ground_truth.lstrip("-").isdigit() for e in train)
    # The published format (template already in the file) gives the same prompts.
    published = load_examples(DATA / "dapo" / "dapo-math-17k.dapo-format.jsonl")
    assert [e.prompt for e in published] == [e.prompt for e in train]
    assert len(data.eval_examples()) == 30


@needs_data
def test_aime24_dapo_file_and_plain_file_agree(monkeypatch):
    dapo = data_config("aime24", monkeypatch).eval_examples()
    plain = load_examples(DATA / "aime24.jsonl")
    assert len(dapo) == len(plain) == 30
    assert sorted(e.ground_truth for e in dapo) == sorted(e.ground_truth for e in plain)
    assert len(load_examples(DATA / "dapo" / "aime-2024.parquet", dedup=False)) == 960


@needs_data
def test_math500_and_gsm8k(monkeypatch):
    math500 = data_config("math500", monkeypatch).eval_examples()
    assert len(math500) == 500 and math500[0].source == "math500"
    gsm8k = data_config("gsm8k", monkeypatch)
    test, train = gsm8k.eval_examples(), gsm8k.train_examples()
    assert len(test) == 1319 and len(train) >= 7400
    assert all("," not in e.ground_truth and e.ground_truth.lstrip("-").isdigit() for e in test + train)
