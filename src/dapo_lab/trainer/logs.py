"""What a run shows and keeps while it runs: a CSV that a kill cannot lose, one progress line per step in the log
file, a terminal bar that counts DAPO steps, and third-party noise kept out of the way.

- :class:`CSVLogger`: ``metrics.csv`` rewritten at every step under a temporary name, flushed, then renamed
  (Lightning's own flushes every 100 steps and appends in place: a run killed at minute 11 of 12 kept the step-0
  row only).
- :func:`truncate_metrics`: a resumed run in its own directory keeps the rows up to its checkpoint's step.
- :class:`ProgressLog`: ``step 12/80 acc 0.61 reward 0.22 entropy 0.034 len 61 rounds 2 7.3 s`` in ``train.log``.
- :class:`StepProgressBar`: the terminal bar over ``max_steps`` DAPO steps with accuracy, reward, entropy and rounds.
"""

from __future__ import annotations

import csv
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger("dapo_lab.progress")


class _AtomicCSVWriter:
    """All rows in memory, the whole file rewritten atomically at each save (header = every key seen so far)."""

    NAME_METRICS_FILE = "metrics.csv"

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self.metrics_file_path = os.path.join(log_dir, self.NAME_METRICS_FILE)
        os.makedirs(log_dir, exist_ok=True)
        self.rows: list[dict[str, Any]] = []
        if os.path.isfile(self.metrics_file_path):  # a resumed run in the same directory
            with open(self.metrics_file_path, newline="") as handle:
                self.rows = [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        row = {k: float(v) for k, v in metrics.items()}
        self.rows.append({**row, "step": len(self.rows) if step is None else step})

    def log_hparams(self, params: dict[str, Any]) -> None:  # the resolved config is saved by run.py
        pass

    def save(self) -> None:
        keys = list(dict.fromkeys(k for row in self.rows for k in row))
        keys = sorted(k for k in keys if k != "step") + ["step"]
        tmp = f"{self.metrics_file_path}.tmp"
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.rows)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.metrics_file_path)


class CSVLogger(LightningCSVLogger):
    """Lightning's CSV logger, saved atomically at every step (see the module docstring).

    Args:
        save_dir: the run directory (set by ``dapo_lab.build``).
        name: sub-folder of ``save_dir`` (``csv``: ``<run dir>/csv/metrics.csv``).
        version: a further sub-folder ("" for none).
    """

    def __init__(self, save_dir: str, name: str = "csv", version: str = "") -> None:
        super().__init__(save_dir=save_dir, name=name, version=version, flush_logs_every_n_steps=1)

    @property
    def experiment(self) -> _AtomicCSVWriter:
        if self._experiment is None:
            self._experiment = _AtomicCSVWriter(self.log_dir)
        return self._experiment

    @rank_zero_only  # as Lightning's: one writer, whatever the number of ranks
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.experiment.log_metrics(metrics, step)
        self.experiment.save()



def truncate_metrics(path: str | Path, after_step: int) -> None:
    """Keep only the rows of steps ``<= after_step`` of a metrics CSV (all of them go for ``after_step < 0``): a run
    resumed in its own directory redoes the steps after its checkpoint, and a fresh start there redoes them all."""
    path = Path(path)
    if not path.is_file():
        return
    writer = _AtomicCSVWriter(str(path.parent))
    writer.rows = [row for row in writer.rows if float(row["step"]) <= after_step]
    writer.save()


def _value(metrics: dict[str, Any], name: str) -> float | None:
    value = metrics.get(name)
    return None if value is None else float(value)


class ProgressLog(L.Callback):
    """One line per DAPO step (and per evaluation) to the Python log, which Hydra writes to ``train.log``."""

    STEP = (("train/acc", "acc", "{:.3f}"), ("rollout/reward_mean", "reward", "{:+.3f}"),
            ("train/entropy", "entropy", "{:.4f}"), ("rollout/response_len_mean", "len", "{:.1f}"),
            ("sampling/num_gen_batches", "rounds", "{:.0f}"), ("actor/skipped_updates", "skipped", "{:.0f}"),
            ("time/step", "", "{:.1f} s"))
    EVAL = (("eval/avg@", "avg@k", "{:.4f}"), ("eval/pass@", "pass@k", "{:.4f}"),
            ("eval/greedy_acc", "greedy", "{:.4f}"))

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.ckpt_path:
            log.info("resumed at step %d of %d", trainer.global_step, trainer.max_steps)

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        metrics = trainer.callback_metrics
        parts = [f"step {trainer.global_step}/{trainer.max_steps}"]
        for name, label, fmt in self.STEP:
            value = _value(metrics, name)
            if value is not None and not (name == "actor/skipped_updates" and value == 0):
                parts.append(f"{label} {fmt.format(value)}".strip())
        log.info("  ".join(parts))

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        # A full evaluation logs eval/*; an interim one (evaluation.interim_prompts) only eval_interim/*.
        stage = "eval/" if any(k.startswith("eval/") for k in trainer.callback_metrics) else "eval_interim/"
        metrics = {k.replace(stage, "eval/", 1): v for k, v in trainer.callback_metrics.items() if k.startswith(stage)}
        parts = [f"{'eval' if stage == 'eval/' else 'interim eval'} at step {trainer.global_step}"]
        for prefix, label, fmt in self.EVAL:
            name = next((k for k in metrics if k.startswith(prefix)), None)
            if name is not None:
                parts.append(f"{name.removeprefix('eval/') if label.endswith('@k') else label} "
                             f"{fmt.format(float(metrics[name]))}")
        if len(parts) > 1:
            log.info("  ".join(parts))


class StepProgressBar(TQDMProgressBar):
    """The terminal bar over the run's DAPO steps (not Lightning's "epochs", which are the spans between
    evaluations), with a few live metrics."""

    SHOWN = (("train/acc", "acc"), ("rollout/reward_mean", "reward"), ("train/entropy", "entropy"),
             ("sampling/num_gen_batches", "rounds"))

    @property
    def sanity_check_description(self) -> str:
        return "Evaluating step 0"

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        bar = self.train_progress_bar
        if bar.total != trainer.max_steps:
            bar.reset(total=trainer.max_steps)
            bar.initial = 0
        bar.n = trainer.global_step
        bar.set_description("DAPO step")
        bar.refresh()

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        bar = self.train_progress_bar
        if bar is not None and not bar.disable:
            bar.n = trainer.global_step
            bar.set_postfix(self.get_metrics(trainer, module), refresh=False)
            bar.refresh()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        pass  # one bar for the whole run

    def get_metrics(self, trainer: L.Trainer, module: L.LightningModule) -> dict[str, Any]:
        metrics = trainer.callback_metrics
        return {label: f"{float(metrics[name]):.3g}" for name, label in self.SHOWN if name in metrics}


def quiet_third_party() -> None:
    """Keep tips, deprecation notices and loading bars of the stack out of the user's terminal and log: Lightning's
    start-up tips and device lines, PyTorch pytree / checkpoint-loading notices, transformers' weight-loading bars."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    warnings.filterwarnings("ignore", message=r".*`weights_only` was not set")
    warnings.filterwarnings("ignore", message=r".*Found \d+ module\(s\) in eval mode")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # transformers is a dependency; keep this helper importable without it
        pass


def csv_path(run_dir: str | Path) -> Path:
    """Where a run's metrics are (``<run dir>/csv/metrics.csv``)."""
    return Path(run_dir) / "csv" / _AtomicCSVWriter.NAME_METRICS_FILE
