"""``main(cfg)``: build, evaluate the starting policy, train, evaluate, save; returns the final eval metric."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dapo_lab.build import build, set_threads
from dapo_lab.launch import check_resumed_settings, claim_gpu, export_slurm_ranks, finish, finished_objective
from dapo_lab.trainer.checkpoints import checkpoint_step, latest_checkpoint, save_policy
from dapo_lab.trainer.logs import csv_path, quiet_third_party, truncate_metrics

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
    quiet_third_party()
    export_slurm_ranks()  # srun's tasks: torchrun's rank variables, before anything asks "am I rank 0?"
    set_threads(cfg.get("threads"))
    out = _output_dir(cfg)
    check_resumed_settings(cfg, out)  # resume=auto continues only the experiment this directory holds
    if (done := finished_objective(cfg, out)) is not None:  # resume=auto on a finished run (a re-run sweep)
        return done
    claim_gpu(cfg, out)  # sweep_gpus: one GPU of the machine per job process, before anything touches CUDA
    out.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out / "resolved_config.yaml", resolve=True)
    ckpt = resume_checkpoint(cfg.get("resume"), out)
    # Rows this directory holds beyond the checkpoint (a killed run's step in flight, or all of them when starting
    # over) are redone: drop them first, so metrics.csv ends as an uninterrupted run's would. (Rank 0 only: Lightning
    # starts the other ranks by running this script again.)
    if all(os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK", "NODE_RANK")):
        own = ckpt is not None and ckpt.parent.parent == out
        truncate_metrics(csv_path(out), checkpoint_step(ckpt) if own else -1)
    built = build(cfg, out)
    trainer, module = built.trainer, built.module
    if ckpt is None:
        # Step 0: every run records its own starting point, evaluated inside fit (Lightning's sanity check over the
        # whole eval split) rather than by a separate validate(): one strategy set-up (DeepSpeed ZeRO-3 breaks on
        # an inference engine built on the module before the training one); a resumed run skips it.
        trainer.num_sanity_val_steps = float("inf")
    else:
        log.info("resuming from %s", ckpt)
    trainer.fit(module, ckpt_path=str(ckpt) if ckpt else None)  # evaluates every evaluation.every steps and at the end
    save_policy(module.model, module.learner.tokenizer, out / "policy", write=trainer.is_global_zero)
    module.learner.close()
    if module.stop_reason:
        log.error("training stopped: %s", module.stop_reason)
        raise SystemExit(f"training stopped: {module.stop_reason}")
    final = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("eval/")}
    log.info("final eval: %s", final)
    return finish(cfg, out, final, write=trainer.is_global_zero)  # done.json, then the objective
