"""A run's input checked before the expensive work: option combinations before anything loads, every prompt
against the model's context before any generation.

``dapo_lab.build`` calls :func:`check_options` from ``build_components`` (built settings and components, nothing
loaded) and :func:`prompt_sets` from ``build_learner`` (tokenizer and model loaded). Each problem is one
ValueError naming the fields (or the split, the example and its file row); a prompt that does not fit is left
out and counted instead when the data source says ``on_bad_row="skip"`` (``MathFileData``).

Simplified: a prompt is checked once, as rendered and tokenized for the policy, and those token ids are the ones
the trainer uses (the prompt set's cache is filled here), so the check costs one batched tokenizer call per
split, not a second pass over the data.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig

from dapo_lab.data.example import PromptExample, WarmStartSource
from dapo_lab.data.loaders import SHOWN_BAD_ROWS, check_on_bad_row
from dapo_lab.models.spec import check_model_path
from dapo_lab.trainer.evaluation import eval_metric_names
from dapo_lab.trainer.prompts import PromptSet

log = logging.getLogger(__name__)
TOKENIZE_CHUNK = 4096  # prompts per batched tokenizer call
_POSITIONS = ("max_position_embeddings", "n_positions", "max_sequence_length")


# ---------------------------------------------------------------------------------------- option combinations
def check_options(cfg: DictConfig, parts: dict[str, Any]) -> None:
    """One ValueError naming the fields of the first combination of options that cannot work together.

    Single options check themselves when built; the combinations ``batch.mini_batch_prompts`` must divide
    ``batch.prompts_per_step`` and ``rollout_correction.old_logprobs=engine`` excludes ``tis_cap`` are checked by
    their settings classes, ``overlong.max_len`` <= ``generation.max_new_tokens`` by ``build.check_consistency``.
    Checked here, from the built ``parts`` and the config's ``trainer``, ``model`` and ``data`` nodes (not built
    yet):

    - ``optim.decay=cosine`` without ``trainer.max_steps`` (the decay needs the run's length; the module's
      optimizer set-up used to find out only after the model had loaded);
    - ``batch.gen_prompts`` x rounds (``sampling.max_gen_batches``; 1 without dynamic sampling) below
      ``batch.prompts_per_step``: no step could fill its batch;
    - ``rollout.tensor_parallel_size`` > 1 without ``rollout.distributed_executor_backend=external_launcher``;
    - ``rollout.max_model_len`` <= ``generation.max_new_tokens``: no room for any prompt;
    - ``model.name_or_path``: a local path to no folder;
    - ``model.warmstart_steps`` > 0 with a data source that offers no worked solutions;
    - ``data.on_bad_row`` other than ``error`` or ``skip``;
    - ``objective`` (the final metric a sweep optimises and ``done.json`` records) that no evaluation logs, e.g.
      ``eval/greedy_acc`` with ``evaluation.greedy=false``: it would be NaN after hours of training.
    """
    batch, sampling, rollout = parts["batch"], parts["sampling"], parts["rollout"]
    max_new = parts["generation"].max_new_tokens
    decay, max_steps = getattr(parts["optim"], "decay", "constant"), cfg.trainer.get("max_steps", -1)
    if decay != "constant" and not (isinstance(max_steps, int) and max_steps > 0):
        raise ValueError(f"optim.decay={decay} needs the run's length: set trainer.max_steps (got {max_steps}), "
                         "or use optim.decay=constant")

    dynamic = bool(getattr(sampling, "dynamic", False))
    rounds = int(getattr(sampling, "max_gen_batches", 1)) if dynamic else 1
    if rounds * batch.gen_prompts < batch.prompts_per_step:
        if dynamic:
            raise ValueError(f"sampling.max_gen_batches={rounds} rounds x batch.gen_prompts={batch.gen_prompts} "
                             f"prompts < batch.prompts_per_step={batch.prompts_per_step}: a step could never fill its "
                             "batch; raise sampling.max_gen_batches or batch.gen_prompts")
        raise ValueError(f"batch.gen_prompts={batch.gen_prompts} < batch.prompts_per_step={batch.prompts_per_step} "
                         f"with sampling={type(sampling).__name__} (one generation round per step): every step would "
                         f"train on {batch.gen_prompts} groups; set batch.gen_prompts >= batch.prompts_per_step")

    tensor_parallel = getattr(rollout, "tensor_parallel_size", 1)
    if tensor_parallel > 1 and getattr(rollout, "distributed_executor_backend", None) != "external_launcher":
        raise ValueError(f"rollout.tensor_parallel_size={tensor_parallel} needs rollout.distributed_executor_backend="
                         "external_launcher (each trainer rank holds one shard of the colocated engine), got "
                         f"{getattr(rollout, 'distributed_executor_backend', None)!r}")
    max_model_len = getattr(rollout, "max_model_len", None)
    if max_model_len is not None and max_model_len <= max_new:
        raise ValueError(f"rollout.max_model_len={max_model_len} leaves no room for a prompt beside "
                         f"generation.max_new_tokens={max_new}: raise rollout.max_model_len or lower max_response_len")

    evaluation, objective = parts["evaluation"], cfg.get("objective")
    logged = eval_metric_names(evaluation)
    if objective is not None and objective not in logged:
        raise ValueError(f"objective={objective} is not logged by this run's evaluation (evaluation.k="
                         f"{evaluation.k}, evaluation.greedy={evaluation.greedy}); choose one of {logged}")

    model, data = cfg.model, cfg.data
    if model.get("name_or_path"):
        check_model_path(str(model.name_or_path))
    if (model.get("warmstart_steps") or 0) > 0 and data.get("_target_"):
        try:
            source = get_class(str(data._target_))
        except (ImportError, ValueError):  # not importable, or a factory function: instantiating it will tell
            source = None
        if source is not None and not issubclass(source, WarmStartSource):
            raise ValueError(f"model.warmstart_steps={model.warmstart_steps} warm-starts the tiny model on worked "
                             f"solutions of its data, and data={source.__name__} offers none: use data=tiny_task, set "
                             "model.warmstart_steps=0 (random weights), or use a pretrained model")
    if data.get("on_bad_row") is not None:
        check_on_bad_row(str(data.on_bad_row))


# ------------------------------------------------------------------------------------ prompts and the context
def context_limit(model: Any, rollout: Any = None) -> tuple[int | None, str]:
    """The most tokens a prompt and its response may take together, and the setting that says so: the model's
    ``max_position_embeddings`` (or ``n_positions``...), or a smaller ``rollout.max_model_len``; None if unknown.

    >>> from types import SimpleNamespace as NS
    >>> context_limit(NS(config=NS(max_position_embeddings=512)), NS(max_model_len=256))
    (256, 'rollout.max_model_len')
    """
    config = getattr(model, "config", None)
    limit, name = None, ""
    for attr in _POSITIONS:
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            limit, name = value, f"model.config.{attr}"
            break
    max_model_len = getattr(rollout, "max_model_len", None)
    if max_model_len is not None and (limit is None or max_model_len < limit):
        limit, name = int(max_model_len), "rollout.max_model_len"
    return limit, name


def _describe(split: str, index: int, example: Any) -> str:
    where = f"{split} example {index}"
    if isinstance(example, PromptExample):
        where += f" (source {example.source!r}" + (f", {example.origin})" if example.origin else ")")
    return where


def _type_problem(example: Any) -> str | None:
    if not isinstance(example, PromptExample):
        return f"expected a PromptExample, got {type(example).__name__}"
    for name in ("prompt", "ground_truth", "source"):
        value = getattr(example, name)
        if not isinstance(value, str) or not value.strip():
            return f"field {name!r} must be a non-empty string, got {type(value).__name__} {value!r:.60}"
    return None


def check_prompts(
    examples: Sequence[PromptExample],
    tokenizer: Any,
    render: Callable[[PromptExample], str],
    max_context: int | None,
    max_new_tokens: int,
    on_bad_row: str = "error",
    split: str = "train",
    context_name: str = "the model's context",
) -> tuple[list[PromptExample], list[list[int]], int]:
    """The examples whose rendered prompt plus ``max_new_tokens`` fits ``max_context`` tokens (None: no limit),
    their prompt token ids, and how many were left out.

    A prompt that does not fit, renders to no tokens, or an example of the wrong type is, with
    ``on_bad_row="error"``, one ValueError naming the split, the example's index, its source and file row; with
    ``"skip"`` it is left out, counted, and one warning per split quotes the first few.

    >>> from dapo_lab.models.tokenizer import build_byte_tokenizer
    >>> ex = [PromptExample("Add 1 2", "3", "toy"), PromptExample("Add " + "9 " * 50, "450", "toy")]
    >>> kept, ids, skipped = check_prompts(ex, build_byte_tokenizer(), lambda e: e.prompt, 64, 32, "skip")
    >>> [e.ground_truth for e in kept], len(ids[0]), skipped
    (['3'], 7, 1)
    >>> check_prompts(ex, build_byte_tokenizer(), lambda e: e.prompt, 64, 32, split="eval")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: eval example 1 (source 'toy'): the prompt is 104 tokens; with generation.max_new_tokens=32 ...
    """
    check_on_bad_row(on_bad_row)
    room = math.inf if max_context is None else max_context - max_new_tokens
    bad: list[str] = []

    def reject(index: int, problem: str) -> None:
        message = f"{_describe(split, index, examples[index])}: {problem}"
        if on_bad_row == "error":
            raise ValueError(message)
        bad.append(message)

    typed = []
    for i, ex in enumerate(examples):
        problem = _type_problem(ex)
        if problem is None:
            typed.append(i)
        else:
            reject(i, problem)
    texts = [render(examples[i]) for i in typed]
    ids: list[list[int]] = []
    for start in range(0, len(texts), TOKENIZE_CHUNK):  # batched: one Rust call per chunk for a fast tokenizer
        ids += tokenizer(texts[start : start + TOKENIZE_CHUNK], add_special_tokens=False)["input_ids"]
    kept, kept_ids = [], []
    for i, tokens in zip(typed, ids):
        if not tokens:
            reject(i, "the prompt renders to no tokens")
        elif len(tokens) > room:
            reject(i, f"the prompt is {len(tokens)} tokens; with generation.max_new_tokens={max_new_tokens} it needs "
                      f"{len(tokens) + max_new_tokens} > {context_name}={max_context}: shorten it, lower "
                      "generation.max_new_tokens (max_response_len), or, for file data, set data.on_bad_row=skip "
                      "to leave such prompts out")
        else:
            kept.append(examples[i])
            kept_ids.append(list(tokens))
    if bad:
        log.warning("%s: skipped %d of %d prompts (data.on_bad_row=skip); first: %s", split, len(bad),
                    len(examples), " | ".join(bad[:SHOWN_BAD_ROWS]))
    if examples and not kept:
        raise ValueError(f"{split}: no usable prompt is left: all {len(examples)} were skipped (first: {bad[0]})")
    return kept, kept_ids, len(bad)


class CheckedPromptSet(PromptSet):
    """A :class:`PromptSet` whose prompts were checked and tokenized up front (its cache filled with those ids);
    ``skipped_rows`` counts the rows of its split that were left out (bad file rows and prompts that did not fit)."""

    def __init__(self, examples: Sequence[PromptExample], tokenizer: Any, render: Callable[[PromptExample], str],
                 ids: Sequence[list[int]], skipped_rows: int = 0) -> None:
        super().__init__(examples, tokenizer, render)
        if len(ids) != len(self.examples):
            raise ValueError(f"{len(ids)} token id lists for {len(self.examples)} examples")
        self._ids.update(enumerate(ids))  # the ids PromptSet.ids() would compute, already computed
        self.skipped_rows = skipped_rows


def prompt_sets(data: Any, examples: dict[str, list[PromptExample]], tokenizer: Any,
                render: Callable[[PromptExample], str], model: Any,
                parts: dict[str, Any]) -> tuple[CheckedPromptSet, CheckedPromptSet]:
    """The train and eval prompt sets of ``examples`` (``{"train": ..., "eval": ...}``, read from ``data``), every
    prompt checked against the context of ``model`` (and ``rollout.max_model_len``) with
    ``generation.max_new_tokens`` of room; logs ``data/skipped_rows`` (bad file rows + prompts left out)."""
    on_bad_row = getattr(data, "on_bad_row", "error")
    limit, name = context_limit(model, parts["rollout"])
    max_new = parts["generation"].max_new_tokens
    file_skips = getattr(data, "skipped_rows", None) or {}
    sets = []
    for split in ("train", "eval"):
        kept, ids, too_long = check_prompts(examples[split], tokenizer, render, limit, max_new, on_bad_row, split,
                                            name or "the model's context")
        sets.append(CheckedPromptSet(kept, tokenizer, render, ids, int(file_skips.get(split, 0)) + too_long))
    train, eval_ = sets
    log.info("data/skipped_rows=%d (train %d, eval %d)", train.skipped_rows + eval_.skipped_rows,
             train.skipped_rows, eval_.skipped_rows)
    return train, eval_
