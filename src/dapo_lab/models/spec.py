"""Model components of `conf/model/`: `load(data=None) -> (model, tokenizer)` for every choice.

`TinyModel` builds the tiny Qwen2, warm-starts it on worked solutions its data source offers
(`dapo_lab.data.example.WarmStartSource`; cached under `cache_dir`, keyed by every setting that changes the
weights) and returns it as reloaded from that folder, so a fresh run and a cached one get identical objects.
`PretrainedModel` loads any Hugging Face causal LM by name or local path: a real model needs only its config file.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from dapo_lab.data.example import WarmStartSource
from dapo_lab.models.compile import backend_of

log = logging.getLogger(__name__)
DTYPES = ("float32", "bfloat16", "float16")
CACHE_FORMAT = 1  # bump when the warm start or the tokenizer changes what a cached folder holds


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise ValueError(f"model.dtype must be one of {DTYPES}, got {dtype!r}")


def save_on_this_process(model: PreTrainedModel, folder: str | Path, **kwargs: Any) -> None:
    """``model.save_pretrained(folder)`` that writes on whichever process calls it.

    transformers 5.x writes a model's files only on rank 0 once a process group is up (and silently writes nothing
    elsewhere); a cache folder built, or an engine's copy made, on another rank would then lack ``config.json`` and
    the weights. Those folders are this process's own, so the rank check is switched off for the call."""
    model.should_save_on_this_rank = lambda is_main_process: is_main_process  # shadows the method for this call
    try:
        model.save_pretrained(folder, **kwargs)
    finally:
        del model.should_save_on_this_rank


def check_model_path(name_or_path: str) -> None:
    """A ValueError naming ``model.name_or_path`` when it is a local path (absolute, ``./``, ``../``, ``~``) to no
    folder; a hub name (``Qwen/Qwen2.5-0.5B``) is left to transformers.

    >>> check_model_path("Qwen/Qwen2.5-0.5B")
    >>> check_model_path("/no/such/model")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: model.name_or_path='/no/such/model' could not be loaded: no such folder (resolved to ...); ...
    """
    if str(name_or_path).startswith(("/", ".", "~")):
        folder = Path(name_or_path).expanduser()
        if not folder.is_dir():
            raise ValueError(f"model.name_or_path={str(name_or_path)!r} could not be loaded: no such folder (resolved "
                             f"to {folder.absolute()}); give a local model folder or a Hugging Face hub name such as "
                             "Qwen/Qwen2.5-0.5B")


def check_tokenizer(tokenizer: PreTrainedTokenizerBase, where: str, use_chat_template: bool) -> None:
    """A ValueError unless the tokenizer has an EOS token (responses end with it; it also pads) and, when
    ``use_chat_template``, a chat template. ``where`` names the model (``model.name_or_path='...'``)."""
    if tokenizer.eos_token_id is None:
        raise ValueError(f"{where}: the tokenizer has no EOS token, so a response could never end (and padding has "
                         "no token): set \"eos_token\" in the folder's tokenizer_config.json, or use a model whose "
                         "tokenizer defines one")
    if use_chat_template and not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"model.use_chat_template=true, but the tokenizer of {where} has no chat template: set "
                         "model.use_chat_template=false (plain prompts), or give the model folder a chat template "
                         "(chat_template.jinja, or chat_template in tokenizer_config.json)")


def _load_folder(path: str | Path, dtype: str, attn_implementation: str, gradient_checkpointing: bool,
                 trust_remote_code: bool = False, use_chat_template: bool = False,
                 where: str | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    where = where or f"model.name_or_path={str(path)!r}"
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except OSError as err:
        raise ValueError(f"{where} could not be loaded: {err}") from None
    check_tokenizer(tokenizer, where, use_chat_template)  # before the weights: a bad tokenizer fails fast
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=getattr(torch, dtype), attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code)
    except OSError as err:
        raise ValueError(f"{where} could not be loaded: {err}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # generation-ready; training code pads its own tensors
    if gradient_checkpointing:  # renamed in transformers 5.x; the old name warns
        (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
    return model, tokenizer


@dataclass(frozen=True)
class PretrainedModel:
    """A Hugging Face causal LM by hub name or local folder (e.g. `Qwen/Qwen2.5-0.5B`).

    Args:
        name_or_path: a Hugging Face hub name or a local folder with the model's config, weights and tokenizer.
        dtype: the dtype the weights are loaded, trained and decoded in: `float32`, `bfloat16` or `float16`.
        attn_implementation: the transformers attention kernel: `eager`, `sdpa`, or `flash_attention_2` where
            installed.
        gradient_checkpointing: recompute activations during the backward pass: far less activation memory for
            long responses, at the cost of a second forward.
        use_chat_template: render prompts with the tokenizer's chat template (verl, and so DAPO, does this even for
            base models); false: the plain prompt text.
        trust_remote_code: let transformers run Python code shipped with the model's repository (needed by some
            architectures; it runs whatever that repository holds).
        compile: compile each decoder layer's training forward and backward with `torch.compile`
            (`models/compile.py`): true (inductor), false, or a backend name; the rollout and evaluation stay
            eager. Costs a compilation at the first update (cached on disk for the next run); one process, DDP or
            FSDP2 (not DeepSpeed).
    """

    name_or_path: str
    dtype: str = "bfloat16"
    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = False
    use_chat_template: bool = True
    trust_remote_code: bool = False
    compile: bool | str = False

    def __post_init__(self) -> None:
        _check_dtype(self.dtype)
        backend_of(self.compile)

    def load(self, data: object = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """The model and tokenizer (`data` is accepted for a common interface and ignored: no warm start)."""
        check_model_path(self.name_or_path)
        return _load_folder(self.name_or_path, self.dtype, self.attn_implementation,
                            self.gradient_checkpointing, self.trust_remote_code, self.use_chat_template)


@dataclass(frozen=True)
class TinyModel:
    """The embedded default policy: a tiny Qwen2 warm-started on the generated task.

    Dims go to `tiny.tiny_config`; `warmstart_*` to `warmstart.warm_start` (`warmstart_steps=0`: random
    init). `load(data)` warm-starts on the worked solutions of `data` (the run's data source), which must then be a
    `WarmStartSource`.

    Args:
        hidden_size: the width of the residual stream.
        num_layers: the number of transformer blocks.
        num_heads: query heads per layer (divides `hidden_size`).
        num_kv_heads: key/value heads per layer (grouped-query attention, as in Qwen2; divides `num_heads`).
        intermediate_size: the width of each block's MLP.
        max_position_embeddings: the longest prompt + response the model takes (and vLLM's default
            `max_model_len`).
        dtype: the dtype the cached weights are loaded, trained and decoded in: `float32`, `bfloat16` or
            `float16`.
        attn_implementation: the transformers attention kernel for training (`eager`, `sdpa`); the rollout may
            decode with another (`rollout.attn_implementation`).
        gradient_checkpointing: recompute activations during the backward pass (less memory, a second forward).
        use_chat_template: render prompts with the tokenizer's chat template; false: the plain prompts the warm
            start trained on.
        seed: seeds the random initialisation and the warm start's batches (part of the cache key).
        warmstart_steps: supervised steps on the data's worked solutions before RL, so the policy starts with the
            `Answer:` format and some accuracy (as a base model would); 0: random weights, and any data source works.
        warmstart_lr: the warm start's peak AdamW learning rate (20 warmup steps, then cosine decay to 0.1x).
        warmstart_batch_size: worked solutions per warm-start step: the number of updates, not of samples, decides
            when the model learns the task (see `models/warmstart.py`).
        warmstart_bf16: run the warm start under CPU bf16 autocast (faster on CPU; the weights keep their dtype).
        cache_dir: the folder of warm-started models, one subfolder per hash of the settings that change the
            weights (`cache_key`), so a second run with the same settings skips the warm start. Not in the key.
        compile: compile each decoder layer's training forward and backward with `torch.compile`
            (`models/compile.py`): true (inductor), false, or a backend name. The update ~1.4x faster on a 2-core
            CPU after a compilation of ~80 s (~15 s once cached on disk), so it pays off beyond ~100 steps; the
            rollout and evaluation stay eager. One process, DDP or FSDP2 (not DeepSpeed).
    """

    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 688
    max_position_embeddings: int = 512
    dtype: str = "float32"
    attn_implementation: str = "eager"
    gradient_checkpointing: bool = False
    use_chat_template: bool = False
    seed: int = 0
    warmstart_steps: int = 450
    warmstart_lr: float = 1e-3
    warmstart_batch_size: int = 16
    warmstart_bf16: bool = True
    cache_dir: str = ".cache/dapo_lab"
    compile: bool | str = False

    def __post_init__(self) -> None:
        _check_dtype(self.dtype)
        backend_of(self.compile)
        if self.warmstart_steps < 0:
            raise ValueError(f"model.warmstart_steps must be >= 0, got {self.warmstart_steps}")

    def dims(self) -> dict[str, int]:
        return {"hidden_size": self.hidden_size, "num_layers": self.num_layers, "num_heads": self.num_heads,
                "num_kv_heads": self.num_kv_heads, "intermediate_size": self.intermediate_size,
                "max_position_embeddings": self.max_position_embeddings}

    def cache_key(self, data: object = None) -> str:
        """A hash of everything that changes the warm-started weights (the data only when there is a warm start).

        >>> from dapo_lab.data.task import RunningSumTask
        >>> TinyModel().cache_key(RunningSumTask()) == TinyModel(cache_dir="elsewhere").cache_key(RunningSumTask())
        True
        >>> TinyModel().cache_key(RunningSumTask()) == TinyModel(seed=1).cache_key(RunningSumTask())
        False
        """
        settings = {k: v for k, v in dataclasses.asdict(self).items()
                    if k.startswith("warmstart_") or k == "seed"}
        fingerprint = self._warmstart_source(data).fingerprint() if self.warmstart_steps > 0 else None
        blob = json.dumps({"format": CACHE_FORMAT, "dims": self.dims(), "warmstart": settings,
                           "task": fingerprint}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def cache_path(self, data: object = None) -> Path:
        return Path(self.cache_dir).expanduser() / f"tiny-{self.cache_key(data)}"

    def _warmstart_source(self, data: object) -> WarmStartSource:
        if not isinstance(data, WarmStartSource):
            raise ValueError(f"model=tiny warm-starts on worked solutions of its data, and {type(data).__name__} "
                             "offers none (no warmstart_batches/fingerprint): use data=tiny_task, or set "
                             "model.warmstart_steps=0 (random weights), or use a pretrained model")
        return data

    def load(self, data: object = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        path = self.cache_path(data)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Several processes (data-parallel ranks, sweep jobs) may ask for the same folder at once: one builds it,
        # the others wait for it under a lock on the cache folder, then read it.
        lock = os.open(path.parent, os.O_RDONLY)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (path / "warmstart.json").is_file():
                self._build_into(path, data)
            else:
                log.info("tiny model: reusing the warm start cached at %s", path)
        finally:
            os.close(lock)  # releases the lock
        return _load_folder(path, self.dtype, self.attn_implementation, self.gradient_checkpointing,
                            use_chat_template=self.use_chat_template, where=f"model=tiny (cached at {path})")

    def _build_into(self, path: Path, data: object) -> None:
        from dapo_lab.models.tiny import build_tiny
        from dapo_lab.models.warmstart import warm_start

        model, tokenizer = build_tiny(seed=self.seed, **self.dims())
        model.set_attn_implementation(self.attn_implementation)
        metrics: dict[str, Any] = {}
        if self.warmstart_steps > 0:
            log.info("tiny model: warm start, %d steps (cached at %s)", self.warmstart_steps, path)
            metrics = warm_start(model, tokenizer, self._warmstart_source(data), steps=self.warmstart_steps,
                                 lr=self.warmstart_lr,
                                 batch_size=self.warmstart_batch_size, bf16=self.warmstart_bf16,
                                 seed=self.seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
        try:
            save_on_this_process(model, tmp)
            tokenizer.save_pretrained(tmp)
            task = self._warmstart_source(data).fingerprint() if self.warmstart_steps > 0 else None
            record = {"model": dataclasses.asdict(self), "task": task, "metrics": metrics}
            (tmp / "warmstart.json").write_text(json.dumps(record, indent=1))
            os.rename(tmp, path)  # atomic; fails if another process got there first
        except OSError:
            if not (path / "warmstart.json").is_file():
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
