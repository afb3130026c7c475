"""The one place where configs become objects (``hydra.utils.instantiate`` is called only here).

Light components are built and cross-checked first, so an inconsistent config fails with one clear
``ValueError`` before any model or dataset is loaded. ``build_learner`` stops at the Lightning-free
:class:`~dapo_lab.trainer.DAPOLearner` (tests, notebooks); ``build`` wraps it in a ``DAPOModule`` and a
Lightning ``Trainer``. Both accept built objects that replace the config's (``reward=MyReward()``).
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf

from dapo_lab.data.example import render_prompt
from dapo_lab.data.validate import check_options, prompt_sets
from dapo_lab.models.compile import backend_of, compile_layers
from dapo_lab.rollout.hf import auto_decode_dtype
from dapo_lab.trainer.learner import DAPOLearner
from dapo_lab.trainer.logs import ProgressLog, StepProgressBar
from dapo_lab.trainer.module import DAPOModule

COMPONENT_GROUPS = ("clip", "loss", "advantage", "kl", "overlong", "sampling", "reward", "rollout")
SETTINGS = ("batch", "optim", "generation", "evaluation", "rollout_correction")


def instantiate(node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that surfaces a component's own error (e.g. ``ValueError: clip.eps_high
    must be >= 0``) instead of Hydra's wrapper around it."""
    try:
        return hydra_instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, (ValueError, ImportError, FileNotFoundError, TypeError)):
            raise cause from None
        raise


@dataclass
class Built:
    module: DAPOModule
    trainer: L.Trainer
    output_dir: Path

    @property
    def learner(self) -> DAPOLearner:
        return self.module.learner


def build_components(cfg: DictConfig, **replace: Any) -> dict[str, Any]:
    """Instantiate every component and settings node (``replace``: built objects used instead), and check that
    they fit together."""
    for key in (*COMPONENT_GROUPS, *SETTINGS, "model", "data", "trainer", "logger", "checkpoint"):
        if key not in cfg or cfg[key] is None:
            raise ValueError(f"config is missing the '{key}' node")
    unknown = set(replace) - {*COMPONENT_GROUPS, *SETTINGS}
    if unknown:
        raise ValueError(f"cannot replace {sorted(unknown)}: only {[*COMPONENT_GROUPS, *SETTINGS]}")
    nodes = {name: cfg[name] for name in (*COMPONENT_GROUPS, *SETTINGS)}
    nodes["rollout"] = resolve_decode_dtype(cfg.rollout, cfg.trainer)
    parts = {name: replace[name] if name in replace else instantiate(nodes[name]) for name in nodes}
    check_consistency(parts)
    check_options(cfg, parts)
    return parts


def resolve_decode_dtype(rollout: DictConfig, trainer: DictConfig) -> DictConfig:
    """The transformers engine's ``dtype: auto`` made concrete for this trainer (``rollout/hf.py``:
    ``auto_decode_dtype``: a bf16 copy for one CPU process, the policy itself elsewhere); any other node as is."""
    if not str(rollout.get("_target_", "")).endswith("HFEngine") or rollout.get("dtype") != "auto":
        return rollout
    resolved = copy.deepcopy(rollout)
    resolved.dtype = auto_decode_dtype(trainer, rollout.get("autocast"))
    return resolved


def check_consistency(parts: dict[str, Any]) -> None:
    max_new = parts["generation"].max_new_tokens
    overlong = parts["overlong"]
    if hasattr(overlong, "max_len") and overlong.max_len > max_new:
        raise ValueError(f"overlong.max_len={overlong.max_len} exceeds generation.max_new_tokens={max_new}: "
                         "the soft punishment would never reach its full penalty")
    if parts["evaluation"].k < 1:
        raise ValueError("evaluation.k must be >= 1")


def build_learner(cfg: DictConfig, **replace: Any) -> tuple[DAPOLearner, dict[str, Any]]:
    """The Lightning-free learner of ``cfg`` (model and data loaded), and the built settings and components."""
    parts = build_components(cfg, **replace)
    L.seed_everything(cfg.seed, workers=True)
    spec = instantiate(cfg.model)
    data = instantiate(cfg.data)
    examples = {"train": data.train_examples(), "eval": data.eval_examples()}  # bad rows fail before the model loads
    model, tokenizer = spec.load(data)  # a model that warm-starts does so on this data's worked solutions
    model.train()  # from_pretrained returns eval mode
    ref_model = copy.deepcopy(model).eval().requires_grad_(False) if parts["kl"].needs_reference else None
    backend = backend_of(getattr(spec, "compile", False))
    if backend:  # after the copy: the reference model scores once a step, eager
        compile_layers(model, backend)
    render = functools.partial(render_prompt, tokenizer=tokenizer,
                               use_chat_template=bool(getattr(spec, "use_chat_template", False)))
    train, eval_ = prompt_sets(data, examples, tokenizer, render, model, parts)  # prompts that fit the context
    learner = DAPOLearner(
        model=model, tokenizer=tokenizer, train=train, eval=eval_, ref_model=ref_model, seed=int(cfg.seed),
        max_consecutive_skips=parts["optim"].max_consecutive_skips,
        **{name: parts[name] for name in (*COMPONENT_GROUPS, *SETTINGS) if name != "optim"},
    )
    return learner, parts


def build(cfg: DictConfig, output_dir: Path, **replace: Any) -> Built:
    """Everything a run needs: components, model, data, learner, module, Lightning trainer."""
    check_compile(cfg)
    learner, parts = build_learner(cfg, **replace)
    module = DAPOModule(learner, parts["optim"])
    logger = instantiate(cfg.logger, save_dir=str(output_dir))
    # Every logger carries the resolved config: a W&B run page shows its settings, the CSV run a hparams.yaml.
    logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    checkpoints = instantiate(cfg.checkpoint, dirpath=output_dir / "checkpoints")
    trainer_args = dict(cfg.trainer)
    if isinstance(cfg.trainer.get("strategy"), DictConfig):  # e.g. dapo_lab.trainer.strategy.GradSyncDDPStrategy
        trainer_args["strategy"] = instantiate(cfg.trainer.strategy)
    # Lightning's own checkpointing is off: AtomicCheckpoint writes them (complete or not at all).
    callbacks = [checkpoints, ProgressLog()]
    if trainer_args.get("enable_progress_bar", True):
        callbacks.append(StepProgressBar())
    # The module shards the eval prompts itself (equal batch counts on every rank), and training has no data to
    # shard (the learner's prompt stream gives each rank its slice): no DistributedSampler.
    trainer = L.Trainer(**trainer_args, logger=logger, callbacks=callbacks, default_root_dir=str(output_dir),
                        enable_checkpointing=False, use_distributed_sampler=False, reload_dataloaders_every_n_epochs=1,
                        deterministic=bool(cfg.get("deterministic", False)))
    return Built(module=module, trainer=trainer, output_dir=output_dir)


def check_compile(cfg: DictConfig) -> None:
    """``model.compile`` with one process, DDP and FSDP2 (FSDP2 gathers a layer's parameters in hooks around its
    forward, outside the compiled code; tested), not with DeepSpeed: ZeRO-3's hooks gather each submodule's
    parameters inside the layer's forward (DeepSpeed's own ``engine.compile`` handles that), and ZeRO-1/2, which
    leave them in place, are not in the test suite."""
    strategy = cfg.trainer.get("strategy")
    target = str(strategy.get("_target_", "")) if isinstance(strategy, DictConfig) else ""
    name = target.rsplit(".", 1)[-1]
    if backend_of(cfg.model.get("compile", False)) and name == "DeepSpeedZeROStrategy":
        raise ValueError(f"model.compile={cfg.model.compile} works with one process, DDP and FSDP2 (trainer=cpu, "
                         f"gpu_ddp, gpu_fsdp, ...), not with DeepSpeed: set model.compile=false")


def set_threads(threads: int | None) -> None:
    """Pin torch's intra-op threads (on a shared 2-core CPU, oversubscription costs 10-100x)."""
    if threads:
        torch.set_num_threads(int(threads))
