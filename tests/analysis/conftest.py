"""Fake Hydra run directories, written the way Hydra and Lightning's CSVLogger write real ones.

``.hydra/hydra.yaml`` (``hydra.runtime.choices``), ``.hydra/config.yaml``, ``.hydra/overrides.yaml`` and a
wide, sparse ``csv/metrics.csv`` (one row per ``log_metrics`` call: the eval row and the train row of a step
are separate rows, NaN elsewhere).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd
import pytest
import yaml

BASE_CHOICES = {"model": "tiny", "data": "tiny_task", "reward": "dapo_math", "rollout": "hf", "clip": "higher",
                "loss": "token", "advantage": "grpo", "kl": "none", "overlong": "soft", "sampling": "dynamic",
                "trainer": "cpu", "logger": "csv", "experiment": None, "debug": None}
ROW_CHOICES = {
    "ablation/0_grpo": {"clip": "symmetric", "loss": "sample", "overlong": "none", "sampling": "none"},
    "ablation/1_overlong_filter": {"clip": "symmetric", "loss": "sample", "overlong": "filter", "sampling": "none"},
    "ablation/2_clip_higher": {"clip": "higher", "loss": "sample", "overlong": "filter", "sampling": "none"},
    "ablation/3_soft_overlong": {"clip": "higher", "loss": "sample", "overlong": "filter_soft", "sampling": "none"},
    "ablation/3_soft_overlong_only": {"clip": "higher", "loss": "sample", "overlong": "soft", "sampling": "none"},
    "ablation/4_token_loss": {"clip": "higher", "loss": "token", "overlong": "filter_soft", "sampling": "none"},
    "ablation/5_dapo": {"clip": "higher", "loss": "token", "overlong": "filter_soft", "sampling": "dynamic"},
}
HYDRA_GROUPS = {"hydra/launcher": "basic", "hydra/sweeper": "basic", "hydra/callbacks": None}

Metrics = Mapping[int, Mapping[str, float]]  # step -> {metric: value}; eval/* and the rest go on separate rows


def choices_for(experiment: str | None) -> dict[str, str | None]:
    return {**BASE_CHOICES, **ROW_CHOICES.get(experiment or "", {}), "experiment": experiment}


def write_csv(path: Path, metrics: Metrics) -> None:
    rows = []
    for step, values in sorted(metrics.items()):
        evals = {k: v for k, v in values.items() if k.startswith("eval/")}
        rest = {k: v for k, v in values.items() if not k.startswith("eval/")}
        rows += [{"epoch": 0, "step": step, **part} for part in (evals, rest) if part]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)


def write_run(run_dir: Path, experiment: str | None, seed: int, metrics: Metrics | None,
              extra_choices: Mapping[str, str | None] | None = None) -> Path:
    """One Hydra run directory; ``metrics=None`` leaves it without metrics (a crashed run)."""
    hydra_dir = run_dir / ".hydra"
    hydra_dir.mkdir(parents=True)
    choices = {**choices_for(experiment), **(extra_choices or {}), **HYDRA_GROUPS}
    overrides = [f"experiment={experiment}", f"seed={seed}"]
    (hydra_dir / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {
        "run": {"dir": "outputs/${now:%Y-%m-%d}/${now:%H-%M-%S}"},
        "job": {"override_dirname": ",".join(overrides)},
        "runtime": {"version": "1.3.2", "output_dir": str(run_dir), "choices": choices},
    }}, sort_keys=False))
    (hydra_dir / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "threads": 2, "max_response_len": 96}))
    (hydra_dir / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if metrics is not None:
        write_csv(run_dir / "csv" / "metrics.csv", metrics)
    return run_dir


def curve_metrics(row: int, seed: int, steps: int = 3) -> dict[int, dict[str, float]]:
    """Every metric the figures use, with known values: ``value = base + row/10 + seed/100 + step/1000``."""
    def v(base: float, step: int) -> float:
        return round(base + row / 10 + seed / 100 + step / 1000, 6)

    out: dict[int, dict[str, float]] = {}
    for step in range(steps):
        out[step] = {"eval/avg@4": v(0.1, step), "eval/pass@4": v(0.3, step), "eval/greedy_acc": v(0.2, step),
                     "eval/response_len_mean": 40 + v(0, step)}
        if step:  # training metrics from the first update on
            out[step].update({"train/entropy": v(0.5, step), "train/acc": v(0.15, step),
                              "train/reward_mean": v(-0.5, step), "rollout/acc": v(0.15, step),
                              "rollout/reward_mean": v(-0.6, step), "rollout/response_len_mean": 50 + v(0, step),
                              "rollout/truncated_frac": v(0.0, step), "actor/clipfrac_high": v(0.0, step) / 10,
                              "actor/clipfrac_low": v(0.0, step) / 20,
                              "actor/clipfrac_high_lowprob": v(0.0, step) / 12,
                              "train/long_response_weight": v(0.4, step),
                              "sampling/informative_group_frac": v(0.3, step)})
    return out


@pytest.fixture
def make_run() -> Callable[..., Path]:
    return write_run


@pytest.fixture
def fake_multirun(tmp_path: Path) -> Path:
    """A sweep ``experiment=ablation/0_grpo,ablation/2_clip_higher seed=1,2`` with 3 logged steps each, plus a
    crashed run with no metrics; folders named by ``hydra.job.num`` like ``hydra.sweep.subdir=${hydra.job.num}``."""
    root = tmp_path / "multirun" / "ablation" / "2026-01-01_00-00-00"
    num = 0
    for row, experiment in ((0, "ablation/0_grpo"), (2, "ablation/2_clip_higher")):
        for seed in (1, 2):
            write_run(root / str(num), experiment, seed, curve_metrics(row, seed))
            num += 1
    write_run(root / str(num), "ablation/5_dapo", 1, None)
    return root


@pytest.fixture
def kernel(tmp_path_factory, monkeypatch) -> str:
    """A kernelspec that starts THIS interpreter (the venv's), found first through JUPYTER_PATH: the
    notebooks must not run in whatever ``python`` is first on PATH."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / "dapo-lab-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "dapo-lab tests", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(root))
    return "dapo-lab-test"
