"""``main(cfg)``: build, evaluate the starting policy, train, evaluate, save; returns the final eval metric."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dapo_lab.build import build, set_threads

log = logging.getLogger(__name__)


def _output_dir(cfg: DictConfig) -> Path:
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # composed without @hydra.main (tests, notebooks)
        return Path(cfg.get("output_dir") or ".").resolve()


def main(cfg: DictConfig) -> float:
    set_threads(cfg.get("threads"))
    out = _output_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out / "resolved_config.yaml", resolve=True)
    built = build(cfg, out)
    trainer, module = built.trainer, built.module
    ckpt = None
    if cfg.get("resume"):
        ckpt = Path(cfg.resume) / "checkpoints" / "last.ckpt"
        if not ckpt.is_file():
            raise ValueError(f"resume={cfg.resume}: no checkpoint at {ckpt}")
    else:
        trainer.validate(module, verbose=False)  # step 0: every run records its own starting point
    trainer.fit(module, ckpt_path=str(ckpt) if ckpt else None)
    if trainer.global_step % module.learner.evaluator.settings.every != 0:
        trainer.validate(module, verbose=False)
    module.model.save_pretrained(out / "policy")
    module.learner.tokenizer.save_pretrained(out / "policy")
    module.learner.close()
    final = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("eval/")}
    log.info("final eval: %s", final)
    return final.get(cfg.get("objective", "eval/greedy_acc"), float("nan"))
