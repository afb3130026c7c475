"""Model components (the ``model`` config group): ``load() -> (model, tokenizer)``.

``TinyModel`` builds the embedded default locally and warm-starts it on the running-sum task (cached,
keyed by everything that determines the weights, so later runs start in seconds). ``PretrainedModel``
loads a real checkpoint by hub name or local path with no code change — only the config.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from dapo_lab.data.task import RunningSumTask
from dapo_lab.models.tiny import build_tiny
from dapo_lab.models.warmstart import warm_start

log = logging.getLogger(__name__)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def default_cache_dir() -> Path:
    return Path(os.environ.get("DAPO_CACHE", ".cache/dapo_lab"))


@dataclass(frozen=True)
class TinyModel:
    """A few-M-parameter Qwen2 with a byte tokenizer, warm-started on worked running-sum solutions.

    ``warmstart_steps=0`` returns the freshly initialised model (tests). ``task`` holds the
    :class:`~dapo_lab.data.task.RunningSumTask` knobs the warm start trains on.
    """

    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 688
    max_position_embeddings: int = 512
    seed: int = 0
    warmstart_steps: int = 600
    warmstart_lr: float = 1e-3
    warmstart_batch_size: int = 64
    task: dict[str, Any] = field(default_factory=dict)
    cache_dir: str | None = None
    use_chat_template: bool = False

    def __post_init__(self) -> None:
        if self.warmstart_steps < 0:
            raise ValueError(f"model.warmstart_steps must be >= 0, got {self.warmstart_steps}")
        object.__setattr__(self, "task", dict(self.task))
        RunningSumTask(**self.task)  # validate the knobs now, before any training

    def dims(self) -> dict[str, int]:
        return dict(hidden_size=self.hidden_size, num_layers=self.num_layers, num_heads=self.num_heads,
                    num_kv_heads=self.num_kv_heads, intermediate_size=self.intermediate_size,
                    max_position_embeddings=self.max_position_embeddings)

    def cache_key(self) -> str:
        described = {k: v for k, v in asdict(self).items() if k not in ("cache_dir", "use_chat_template")}
        return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]

    def load(self) -> tuple[torch.nn.Module, Any]:
        model, tokenizer = build_tiny(seed=self.seed, **self.dims())
        if self.warmstart_steps == 0:
            return model, tokenizer
        folder = Path(self.cache_dir) if self.cache_dir else default_cache_dir()
        folder = folder / f"tiny-{self.cache_key()}"
        if not (folder / "config.json").is_file():
            log.info("warm-starting the tiny model (%d steps); cached at %s", self.warmstart_steps, folder)
            metrics = warm_start(model, tokenizer, RunningSumTask(**self.task), steps=self.warmstart_steps,
                                 lr=self.warmstart_lr, batch_size=self.warmstart_batch_size, seed=self.seed)
            folder.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            summary = {k: v for k, v in metrics.items() if not isinstance(v, list)}
            (tmp / "warmstart.json").write_text(json.dumps({"spec": asdict(self), **summary}, indent=1))
            try:
                tmp.rename(folder)  # atomic: a concurrent run either sees nothing or the whole folder
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        return model, tokenizer


@dataclass(frozen=True)
class PretrainedModel:
    """A real causal LM by hub name or local path (e.g. Qwen2.5-Math-7B)."""

    name_or_path: str
    dtype: str = "bfloat16"
    attn_implementation: str | None = "sdpa"
    gradient_checkpointing: bool = False
    use_chat_template: bool = True
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPES:
            raise ValueError(f"model.dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")

    def load(self) -> tuple[torch.nn.Module, Any]:
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.name_or_path, trust_remote_code=self.trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(
                self.name_or_path, dtype=_DTYPES[self.dtype], attn_implementation=self.attn_implementation,
                trust_remote_code=self.trust_remote_code)
        except OSError as err:
            raise ValueError(f"model.name_or_path={self.name_or_path!r} could not be loaded: {err}") from None
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if self.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        return model, tokenizer
