"""``main(cfg)``: build, evaluate the starting policy, train, evaluate, save; returns the final eval metric."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dapo_lab.build import build, set_threads
from dapo_lab.trainer.checkpoints import latest_checkpoint, save_policy

log = logging.getLogger(__name__)


def _output_dir(cfg: DictConfig) -> Path:
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # composed without @hydra.main (tests, notebooks)
        return Path(cfg.get("output_dir") or ".").resolve()


def resume_checkpoint(resume: str | None, out: Path) -> Path | None:
    """The checkpoint to continue from: ``resume=<run dir>`` (its newest complete one), ``resume=auto`` (this run
    directory's newest, if any: re-running an interrupted command with a fixed run dir continues it), or None."""
    if not resume:
        return None
    if str(resume) == "auto":
        return latest_checkpoint(out)
    ckpt = latest_checkpoint(resume)
    if ckpt is None:
        raise ValueError(f"resume={resume}: no complete checkpoint under {Path(resume) / 'checkpoints'}")
    return ckpt


def main(cfg: DictConfig) -> float:
    set_threads(cfg.get("threads"))
    out = _output_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out / "resolved_config.yaml", resolve=True)
    ckpt = resume_checkpoint(cfg.get("resume"), out)
    built = build(cfg, out)
    trainer, module = built.trainer, built.module
    if ckpt is None:
        # Step 0: every run records its own starting point, evaluated inside fit (Lightning's sanity check over the
        # whole eval split) rather than by a separate validate(): one strategy set-up (DeepSpeed ZeRO-3 breaks on
        # an inference engine built on the module before the training one); a resumed run skips it.
        trainer.num_sanity_val_steps = float("inf")
    else:
        log.info("resuming from %s", ckpt)
    trainer.fit(module, ckpt_path=str(ckpt) if ckpt else None)
    if trainer.global_step % module.learner.evaluator.settings.every != 0:
        trainer.validate(module, verbose=False)
    save_policy(module.model, module.learner.tokenizer, out / "policy", write=trainer.is_global_zero)
    module.learner.close()
    final = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("eval/")}
    log.info("final eval: %s", final)
    return final.get(cfg.get("objective", "eval/greedy_acc"), float("nan"))
