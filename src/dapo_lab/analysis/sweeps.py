"""Which runs of a sweep finished: the jobs a multirun asked for against the run directories that hold a
``done.json`` (written last by ``dapo_lab.run.main``; see ``dapo_lab.launch``).

The expected jobs are rebuilt from the sweep's ``multirun.yaml`` (Hydra saves it at every start) the way Hydra's
basic sweeper builds them: ``hydra.sweeper.params`` and the command line's overrides, crossed. A job is matched to
its run directory by the overrides Hydra saved there (``.hydra/overrides.yaml``), not by folder names, so it works
for any ``hydra.sweep.subdir`` and any launcher (basic, joblib, submitit). Another sweeper (Optuna, ...) chooses its
jobs as it goes: only the run directories present are reported then.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

DONE = "done.json"  # dapo_lab.launch.DONE (not imported: reading results needs no torch)
STATUS_COLUMNS = ("sweep", "job", "overrides", "run", "status", "checkpoint_step")
_CKPT = re.compile(r"^step-(\d+)\.ckpt$")


class IncompleteSweepWarning(UserWarning):
    """Some jobs of a sweep have not finished (interrupted, still running, or not started)."""


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def expected_jobs(multirun_yaml: str | Path) -> list[list[str]] | None:
    """Each job's overrides, in job-number order, as Hydra's basic sweeper builds them from a saved
    ``multirun.yaml``; None for another sweeper (its jobs are not known in advance)."""
    config = _read_yaml(Path(multirun_yaml)) or {}
    hydra = config.get("hydra") or {}
    sweeper = hydra.get("sweeper") or {}
    if not str(sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return None
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
    arguments = [*params, *((hydra.get("overrides") or {}).get("task") or [])]
    overrides = OverridesParser.create().parse_overrides(arguments)
    return BasicSweeper.split_arguments(overrides, None)[0]


def run_status(run_dir: str | Path) -> tuple[str, int | None]:
    """``("finished" | "unfinished", newest complete checkpoint step or None)`` of one run directory. Finished: it
    holds ``done.json``, or (a run from before the marker) its final ``policy/``."""
    run_dir = Path(run_dir)
    steps = [int(m.group(1)) for p in (run_dir / "checkpoints").glob("step-*.ckpt") if (m := _CKPT.match(p.name))]
    finished = (run_dir / DONE).is_file() or (run_dir / "policy" / "config.json").is_file()
    return ("finished" if finished else "unfinished"), (max(steps) if steps else None)


def _job_overrides(run_dir: Path) -> tuple[str, ...]:
    saved = _read_yaml(run_dir / ".hydra" / "overrides.yaml")
    return tuple(sorted(saved)) if isinstance(saved, list) else ()


def _rel(path: Path, root: Path) -> str:
    rel = path.relative_to(root).as_posix()
    return path.name if rel == "." else rel


def sweep_status(root: str | Path) -> pd.DataFrame:
    """One row per job of every sweep (a directory holding ``multirun.yaml``) at or under ``root``: ``sweep`` and
    ``run`` (directories relative to ``root``, as ``load_runs`` names runs; missing for a job not started),
    ``job`` (its number; None for a run directory the sweep does not list), ``overrides`` (those of the swept keys,
    comma-joined: what tells the job from the others; all of a run the sweep does not list), ``status``
    (``finished``, ``unfinished``: started but no ``done.json``, or ``not started``) and ``checkpoint_step`` (the
    newest complete checkpoint: where a re-run continues). Empty when there is no sweep."""
    root = Path(root)
    rows: list[dict[str, Any]] = []
    for multirun in sorted(root.rglob("multirun.yaml")):
        sweep_dir = multirun.parent
        runs = {p.parent.parent: _job_overrides(p.parent.parent)
                for p in sweep_dir.rglob("overrides.yaml") if p.parent.name == ".hydra"}
        by_overrides = {overrides: run for run, overrides in sorted(runs.items())}
        jobs = expected_jobs(multirun) or []
        values: dict[str, set[str]] = {}
        for job in jobs:
            for override in job:
                values.setdefault(override.split("=", 1)[0], set()).add(override)
        swept = {key for key, seen in values.items() if len(seen) > 1}
        listed: set[Path] = set()
        for num, job in enumerate(jobs):
            run = by_overrides.get(tuple(sorted(job)))
            status, step = ("not started", None) if run is None else run_status(run)
            listed |= {run} - {None}
            named = [o for o in job if o.split("=", 1)[0] in swept] or job  # what tells this job from the others
            rows.append({"sweep": _rel(sweep_dir, root), "job": num, "overrides": ",".join(named),
                         "run": None if run is None else _rel(run, root), "status": status, "checkpoint_step": step})
        for run, overrides in sorted(runs.items()):
            if run not in listed:  # another sweeper's jobs, or a run left from an earlier version of the sweep
                status, step = run_status(run)
                rows.append({"sweep": _rel(sweep_dir, root), "job": None, "overrides": ",".join(overrides),
                             "run": _rel(run, root), "status": status, "checkpoint_step": step})
    frame = pd.DataFrame(rows, columns=list(STATUS_COLUMNS))
    return frame.astype({"job": "Int64", "checkpoint_step": "Int64"})


def missing_runs(root: str | Path) -> pd.DataFrame:
    """The jobs of the sweeps at or under ``root`` that have not finished (``sweep_status`` rows)."""
    status = sweep_status(root)
    return status[status["status"] != "finished"].reset_index(drop=True)


def describe(missing: pd.DataFrame) -> list[str]:
    """One line per ``sweep_status`` row: ``seed=2 (unfinished, checkpoint at step 10)``."""
    return [f"{r.overrides} ({r.status}" + ("" if pd.isna(r.checkpoint_step) else
                                           f", checkpoint at step {r.checkpoint_step}") + ")"
            for r in missing.itertuples()]


def warn_missing(root: str | Path, stacklevel: int = 2) -> pd.DataFrame:
    """``missing_runs``, and one ``IncompleteSweepWarning`` naming them when there are any."""
    missing = missing_runs(root)
    if not missing.empty:
        warnings.warn(f"{len(missing)} run(s) of the sweep under {root} not finished: {'; '.join(describe(missing))}."
                      " Re-run the sweep's command (resume=auto) to finish them.", IncompleteSweepWarning,
                      stacklevel=stacklevel + 1)
    return missing


def main(argv: list[str] | None = None) -> int:
    """``python -m dapo_lab.analysis.sweeps DIR``: every job of the sweeps under DIR and its status; exit 1 while
    some have not finished (so a script can wait on it)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m dapo_lab.analysis.sweeps", description=main.__doc__)
    parser.add_argument("root", help="a sweep directory (holding multirun.yaml) or a folder of them")
    root = parser.parse_args(argv).root
    if not Path(root).is_dir():
        parser.error(f"no such directory: {root}")
    status = sweep_status(root)
    for sweep, jobs in status.groupby("sweep", sort=False):
        done = int((jobs["status"] == "finished").sum())
        print(f"{sweep}: {done}/{len(jobs)} finished")
        for line, row in zip(describe(jobs), jobs.itertuples()):
            print(f"  {'ok ' if row.status == 'finished' else '-- '}{line}")
    if status.empty:
        print(f"no sweep (multirun.yaml) under {root}")
    return 0 if not status.empty and (status["status"] == "finished").all() else 1


if __name__ == "__main__":
    raise SystemExit(main())
