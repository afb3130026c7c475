"""Hydra run directories → ONE tidy DataFrame: one row per run × step × metric.

Columns: ``run`` (the run directory relative to the root given), one column per Hydra config group with the
option the run used (``experiment``, ``clip``, ``loss``, ``overlong``, ``sampling``, ...), ``seed``, ``step``,
``metric``, ``value``.

The config columns are read from what Hydra saved in each run's ``.hydra/`` (``hydra.yaml``'s
``hydra.runtime.choices`` and ``config.yaml``'s ``seed``), never parsed from folder names: the sweep's
``subdir`` pattern is cosmetic (it can be shortened, reordered, or set to ``${hydra.job.num}``), the saved
config is what the run actually composed.

Metrics come from Lightning's CSVLogger file (``csv/metrics.csv``: wide, sparse, a ``step`` column, one
column per metric, NaN where a metric was not logged on that row). A run logged with ``logger=wandb``
instead is read from its local ``.wandb`` log (see ``wandb_log``). ``step`` is the number of DAPO steps
completed (0 = the starting policy, where the first evaluation is logged).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml

from dapo_lab.analysis.sweeps import warn_missing
from dapo_lab.analysis.wandb_log import history_long, read_wandb_log

KEY_COLUMNS = ("run", "step", "metric", "value")
NON_METRIC_COLUMNS = ("step", "epoch")


class MissingMetricsWarning(UserWarning):
    """A run directory holds no metrics (a crashed, killed or still-running job); it is skipped."""


def find_run_dirs(root: str | Path) -> list[Path]:
    """Every Hydra run directory (one holding ``.hydra/hydra.yaml``) at or under ``root``, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no such directory: {root}")
    return sorted(p.parent.parent for p in root.rglob("hydra.yaml") if p.parent.name == ".hydra")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"malformed YAML in {path}: {err}") from err
    return data if isinstance(data, dict) else {}


def run_config(run_dir: str | Path) -> dict[str, Any]:
    """A Hydra run's config columns: its group choices (``hydra.runtime.choices``, Hydra's own ``hydra/*``
    groups left out; ``None`` for an empty slot such as ``debug: null``) and its ``seed``."""
    hydra_dir = Path(run_dir) / ".hydra"
    choices = _read_yaml(hydra_dir / "hydra.yaml").get("hydra", {}).get("runtime", {}).get("choices") or {}
    info: dict[str, Any] = {group: None if option is None else str(option)
                            for group, option in choices.items() if not group.startswith("hydra/")}
    config_yaml = hydra_dir / "config.yaml"
    info["seed"] = _read_yaml(config_yaml).get("seed") if config_yaml.is_file() else None
    return info


def read_metrics_csv(path: str | Path) -> pd.DataFrame:
    """One Lightning ``metrics.csv`` (wide, sparse) → long ``step, metric, value`` rows, NaNs dropped.

    A malformed file raises one ``ValueError`` naming it; an empty (zero-byte) file gives no rows.
    """
    path = Path(path)
    try:
        wide = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame({"step": pd.Series(dtype="int64"), "metric": pd.Series(dtype="str"),
                             "value": pd.Series(dtype="float64")})
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueError(f"malformed metrics CSV {path}: {err}") from err
    if "step" not in wide.columns:
        raise ValueError(f"malformed metrics CSV {path}: no 'step' column (columns: {list(wide.columns)})")
    metrics = [c for c in wide.columns if c not in NON_METRIC_COLUMNS]
    try:
        numeric = wide[["step", *metrics]].apply(pd.to_numeric)
    except (ValueError, TypeError) as err:
        raise ValueError(f"malformed metrics CSV {path}: non-numeric value ({err})") from err
    long = numeric.melt(id_vars="step", var_name="metric", value_name="value").dropna(subset=["value"])
    steps = long["step"]
    if steps.isna().any() or (steps % 1 != 0).any():
        raise ValueError(f"malformed metrics CSV {path}: a logged value has a missing or non-integer step")
    return long.astype({"step": "int64", "metric": "str", "value": "float64"})


def _nearest_run(path: Path, run_dirs: set[Path]) -> Path | None:
    return next((p for p in path.parents if p in run_dirs), None)


def _wandb_files(directory: Path) -> list[Path]:
    """Local W&B run logs (``wandb/offline-run-*/run-*.wandb`` or an online run's ``run-*/``), oldest first."""
    return sorted(p for p in directory.rglob("*.wandb") if p.parent.name.startswith(("offline-run-", "run-")))


def _wandb_frame(files: Iterable[Path]) -> tuple[pd.DataFrame, dict[str, Any]]:
    triples, config = [], {}
    for file in files:
        rows, cfg = read_wandb_log(file)
        triples += history_long(rows)
        config.update(cfg)
    frame = pd.DataFrame(triples, columns=["step", "metric", "value"])
    return frame.astype({"step": "int64", "metric": "str", "value": "float64"}), config


def _run_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).as_posix()
    return path.name if rel == "." else rel


def _tidy(frames: list[pd.DataFrame]) -> pd.DataFrame:
    if not frames:
        return pd.DataFrame({"run": pd.Series(dtype="str"), "seed": pd.Series(dtype="Int64"),
                             "step": pd.Series(dtype="int64"), "metric": pd.Series(dtype="str"),
                             "value": pd.Series(dtype="float64")})
    df = pd.concat(frames, ignore_index=True)
    config = [c for c in df.columns if c not in (*KEY_COLUMNS, "seed")]
    df = df[["run", *config, "seed", "step", "metric", "value"]]
    seed = pd.to_numeric(df["seed"], errors="coerce")
    if seed.notna().sum() == df["seed"].notna().sum() and (seed.dropna() % 1 == 0).all():
        df = df.assign(seed=seed.astype("Int64"))
    # one value per run × step × metric: the later file wins (a resumed run that re-logged a step)
    df = df.drop_duplicates(["run", "step", "metric"], keep="last")
    return df.sort_values(["run", "step", "metric"], kind="stable").reset_index(drop=True)


def load_runs(root: str | Path, source: Literal["auto", "csv", "wandb"] = "auto") -> pd.DataFrame:
    """Load a Hydra multirun directory, a single run directory, or a parent of several, into one tidy frame.

    ``source``: ``"csv"`` reads Lightning's ``metrics.csv`` files (found with ``rglob`` under each run dir),
    ``"wandb"`` local ``.wandb`` logs, ``"auto"`` the CSV where a run has one and its W&B log otherwise.
    A run directory with no metrics is skipped with a ``MissingMetricsWarning`` naming it. When ``root`` holds a
    sweep (its ``multirun.yaml``) whose jobs have not all finished, an ``IncompleteSweepWarning`` lists them (an
    unfinished run's rows are kept: ``analysis.sweeps.missing_runs`` says which runs they are).
    """
    if source not in ("auto", "csv", "wandb"):
        raise ValueError(f"source must be 'auto', 'csv' or 'wandb', got {source!r}")
    root = Path(root)
    run_dirs = find_run_dirs(root)
    if not run_dirs:
        raise FileNotFoundError(f"no Hydra run directory (one holding .hydra/hydra.yaml) at or under {root}")
    runs = set(run_dirs)
    csvs: dict[Path, list[Path]] = {d: [] for d in run_dirs}
    if source in ("auto", "csv"):
        for csv in sorted(root.rglob("metrics.csv")):
            owner = _nearest_run(csv, runs)
            if owner is not None:
                csvs[owner].append(csv)
    frames = []
    for run_dir in run_dirs:
        name = _run_name(run_dir, root)
        if csvs[run_dir]:
            metrics = pd.concat([read_metrics_csv(p) for p in csvs[run_dir]], ignore_index=True)
        else:
            wandb_files = [f for f in _wandb_files(run_dir) if _nearest_run(f, runs) == run_dir]
            if source == "csv" or not wandb_files:
                what = {"csv": "metrics.csv", "wandb": ".wandb log"}.get(source, "metrics.csv or .wandb log")
                warnings.warn(f"skipping run {name} ({run_dir}): no {what} (crashed, killed or still running?)",
                              MissingMetricsWarning, stacklevel=2)
                continue
            metrics = _wandb_frame(wandb_files)[0]
        frames.append(metrics.assign(run=name, **run_config(run_dir)))
    warn_missing(root, stacklevel=2)
    return _tidy(frames)


def load_wandb_offline(root: str | Path) -> pd.DataFrame:
    """Local W&B runs (``wandb/offline-run-*/``) at or under ``root`` → the same tidy frame as ``load_runs``.

    A W&B run inside a Hydra run directory (``WandbLogger(save_dir=<run dir>)``, as ``build`` does) takes
    that directory's name and config columns, so CSV and W&B results line up. A bare W&B run is named by
    its own directory, and its config columns are the top-level scalars of its W&B config.
    """
    root = Path(root)
    files = _wandb_files(root)
    if not files:
        raise FileNotFoundError(f"no W&B run log (wandb/offline-run-*/run-*.wandb) at or under {root}")
    runs = set(find_run_dirs(root))
    groups: dict[Path, list[Path]] = {}
    for file in files:
        groups.setdefault(_nearest_run(file, runs) or file.parent, []).append(file)
    frames = []
    for owner, owned in sorted(groups.items()):
        metrics, wandb_config = _wandb_frame(owned)
        if owner in runs:
            info = run_config(owner)
        else:
            info = {k: v for k, v in wandb_config.items()
                    if k not in KEY_COLUMNS and (isinstance(v, (str, int, float, bool)) or v is None)}
            info.setdefault("seed", None)
        if metrics.empty:
            warnings.warn(f"skipping run {_run_name(owner, root)} ({owner}): its W&B log holds no metrics",
                          MissingMetricsWarning, stacklevel=2)
            continue
        frames.append(metrics.assign(run=_run_name(owner, root), **info))
    return _tidy(frames)
