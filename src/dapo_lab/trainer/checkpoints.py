"""Checkpoints that a kill cannot corrupt: written under a temporary name, flushed to disk, then renamed.

``checkpoints/step-000040.ckpt`` (a file, or a folder of per-rank shards under a sharding strategy) appears only
once it is complete; ``checkpoints/last.ckpt`` is a symlink to the newest one, replaced atomically. A run killed
at any moment leaves the previous complete checkpoint in place, and :func:`latest_checkpoint` never picks up a
half-written one. Lightning's own ``ModelCheckpoint`` writes in place, and with ``save_top_k=0`` writes
``last.ckpt`` only at the end of training: a killed run kept nothing.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import lightning as L
import torch

from dapo_lab.trainer.distributed import full_state_dict

_STEP = re.compile(r"^step-(\d+)\.ckpt$")


def _fsync_tree(path: Path) -> None:
    """Flush a file, or every file of a folder and the folder itself, to disk."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for file in files:
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())
    folder = os.open(path if path.is_dir() else path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def checkpoint_step(path: str | Path) -> int:
    """The DAPO step a checkpoint was written after (from its name).

    >>> checkpoint_step("run/checkpoints/step-000040.ckpt")
    40
    """
    match = _STEP.match(Path(path).name)
    if match is None:
        raise ValueError(f"{path}: not a checkpoint written by dapo_lab (expected step-NNNNNN.ckpt)")
    return int(match.group(1))


def complete_checkpoints(dirpath: str | Path) -> list[Path]:
    """The complete checkpoints in ``dirpath``, oldest first (temporary names are never complete)."""
    folder = Path(dirpath)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run directory, or None."""
    done = complete_checkpoints(Path(run_dir) / "checkpoints")
    return done[-1] if done else None


class AtomicCheckpoint(L.Callback):
    """Save every ``every_n_steps`` DAPO steps and at the end of training; keep the newest ``keep``.

    Args:
        every_n_steps: DAPO steps between checkpoints (the last step is always saved).
        keep: complete checkpoints kept (older ones are deleted once a newer one is complete).
        dirpath: where they go (set by ``dapo_lab.build``: ``<run dir>/checkpoints``).
    """

    def __init__(self, every_n_steps: int = 10, keep: int = 2, dirpath: str | Path = "checkpoints") -> None:
        if every_n_steps < 1 or keep < 1:
            raise ValueError(f"checkpoint.every_n_steps and checkpoint.keep must be >= 1, got {every_n_steps}, {keep}")
        self.every_n_steps, self.keep, self.dirpath = every_n_steps, keep, Path(dirpath)
        self._pending: int | None = None

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args) -> None:
        step = trainer.global_step
        if not (step % self.every_n_steps == 0 or step >= trainer.max_steps > 0):
            return
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch and sum(trainer.num_val_batches or [0]) > 0:
            # An evaluation follows this step: save after it, or a kill during the evaluation would resume past an
            # evaluation that never finished (and its metrics would be missing for good).
            self._pending = step
        else:
            self.save(trainer, step)

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self._pending is not None and not trainer.sanity_checking:
            step, self._pending = self._pending, None
            self.save(trainer, step)

    def save(self, trainer: L.Trainer, step: int) -> Path:
        """Write checkpoint ``step`` atomically (a collective: every rank calls it)."""
        final = self.dirpath / f"step-{step:06d}.ckpt"
        tmp = self.dirpath / f".tmp-step-{step:06d}.ckpt"
        if trainer.is_global_zero:
            self.dirpath.mkdir(parents=True, exist_ok=True)
            _remove(tmp)
        trainer.strategy.barrier("dapo_checkpoint_start")
        trainer.save_checkpoint(tmp, weights_only=False)  # every rank writes its part; Lightning waits for all
        if trainer.is_global_zero:
            _fsync_tree(tmp)
            _remove(final)
            os.replace(tmp, final)
            link = self.dirpath / ".last.ckpt.tmp"
            _remove(link)
            os.symlink(final.name, link)
            os.replace(link, self.dirpath / "last.ckpt")
            _fsync_tree(self.dirpath)
            for old in complete_checkpoints(self.dirpath)[: -self.keep]:
                _remove(old)
        trainer.strategy.barrier("dapo_checkpoint_end")
        return final


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def save_policy(model: torch.nn.Module, tokenizer, folder: str | Path, write: bool = True) -> None:
    """The trained policy in ``save_pretrained`` format, gathered from shards (a collective: every rank calls it;
    only the rank with ``write`` writes), loadable by transformers and vLLM."""
    from dapo_lab.models.spec import save_on_this_process

    state = full_state_dict(model)
    if write:
        save_on_this_process(model, folder, state_dict=state)
        tokenizer.save_pretrained(folder)
