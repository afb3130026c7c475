"""Model components: the cached tiny warm start, and a pretrained model loaded by path with no code change."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

import dapo_lab.models.warmstart as warmstart
from dapo_lab.data.task import RunningSumTask, worked_solution
from dapo_lab.models.spec import PretrainedModel, TinyModel

CONF = Path(__file__).resolve().parents[2] / "conf" / "model"
SMALL = {"hidden_size": 64, "num_layers": 2, "intermediate_size": 128, "warmstart_steps": 3}


def test_tiny_load_warm_starts_once_then_reuses_the_cache(tmp_path, monkeypatch):
    task = RunningSumTask(max_terms=4)
    spec = TinyModel(cache_dir=str(tmp_path), **SMALL)
    model, tok = spec.load(task)
    folder = spec.cache_path(task)
    assert (folder / "warmstart.json").is_file() and [p.name for p in tmp_path.iterdir()] == [folder.name]

    def no_training(*args, **kwargs):
        raise AssertionError("the cached warm start should have been reused")

    monkeypatch.setattr(warmstart, "warm_start", no_training)
    again, tok2 = spec.load(task)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    text = task.eval_examples()[0].prompt + worked_solution(task.eval_problems[0])
    assert tok2.decode(tok2(text)["input_ids"]) == text and tok2.padding_side == "left"
    assert type(tok2).__name__ == "Qwen2Tokenizer"


def test_cache_key_follows_weights_not_location(tmp_path):
    task = RunningSumTask()
    a = TinyModel(cache_dir=str(tmp_path), **SMALL)
    assert a.cache_path(task) != TinyModel(cache_dir=str(tmp_path), **{**SMALL, "seed": 1}).cache_path(task)
    assert a.cache_path(task) != a.cache_path(RunningSumTask(max_terms=5))
    assert a.cache_key(task) == TinyModel(cache_dir="elsewhere", use_chat_template=True, **SMALL).cache_key(task)


def test_pretrained_model_loads_a_local_folder(tmp_path):
    spec = TinyModel(cache_dir=str(tmp_path), **{**SMALL, "warmstart_steps": 0})
    tiny, _ = spec.load(RunningSumTask())
    folder = spec.cache_path(RunningSumTask())
    model, tok = PretrainedModel(name_or_path=str(folder), dtype="float32", attn_implementation="eager",
                                 gradient_checkpointing=True).load()
    assert getattr(model, "is_activation_checkpointing", None) or model.is_gradient_checkpointing
    assert tok.pad_token_id == 256
    assert all(torch.equal(a, b) for a, b in zip(tiny.state_dict().values(), model.state_dict().values()))
    bf16, _ = PretrainedModel(name_or_path=str(folder)).load()
    assert bf16.dtype == torch.bfloat16


def test_bad_model_settings_are_clear(tmp_path):
    with pytest.raises(ValueError, match="could not be loaded"):
        PretrainedModel(name_or_path=str(tmp_path / "missing")).load()
    with pytest.raises(ValueError, match="model.dtype"):
        PretrainedModel(name_or_path="x", dtype="fp8")
    with pytest.raises(ValueError, match="warmstart_steps"):
        TinyModel(warmstart_steps=-1)


@pytest.mark.parametrize("path", sorted(CONF.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_model_config_instantiates(path, monkeypatch):
    monkeypatch.setenv("DAPO_CACHE", "/tmp/unused")
    spec = instantiate(OmegaConf.load(path))
    assert isinstance(spec, (TinyModel, PretrainedModel)) and hasattr(spec, "use_chat_template")
    if isinstance(spec, PretrainedModel):
        assert spec.name_or_path.startswith("Qwen/Qwen2.5-")
    else:
        assert spec == TinyModel(cache_dir="/tmp/unused")  # the YAML spells out the defaults
