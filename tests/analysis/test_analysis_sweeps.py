"""sweep_status / missing_runs: the jobs a sweep asked for (its multirun.yaml) against the runs that finished."""

from __future__ import annotations

import importlib.util
import json
import shutil
import warnings
from pathlib import Path

import pandas as pd
import pytest
import yaml

from dapo_lab.analysis import (
    IncompleteSweepWarning,
    MissingMetricsWarning,
    expected_jobs,
    load_runs,
    missing_runs,
    sweep_status,
)
from dapo_lab.analysis.sweeps import DONE
from dapo_lab.launch import DONE as LAUNCH_DONE

REPO = Path(__file__).resolve().parents[2]


def write_multirun(sweep: Path, params: dict[str, str], task: list[str],
                   target: str = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper") -> None:
    """The parts of Hydra's saved ``multirun.yaml`` that say which jobs a sweep runs."""
    sweep.mkdir(parents=True, exist_ok=True)
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {
        "sweeper": {"_target_": target, "max_batch_size": None, "params": params},
        "overrides": {"hydra": ["hydra.mode=MULTIRUN"], "task": task}}, "seed": 1}))


def finish(run: Path) -> None:
    (run / DONE).write_text(json.dumps({"objective": "eval/greedy_acc", "value": 0.5}))


@pytest.fixture
def half_done(fake_multirun) -> Path:
    """The fake sweep (rows 0 and 2 x seeds 1, 2 in folders 0-3, a crashed run in 4) as ``experiment=...
    seed=1,2``: jobs 0 and 2 finished, job 1 killed after a checkpoint, job 3 unfinished too."""
    write_multirun(fake_multirun, {"experiment": "ablation/0_grpo,ablation/2_clip_higher"}, ["seed=1,2"])
    finish(fake_multirun / "0")
    finish(fake_multirun / "2")
    (fake_multirun / "1" / "checkpoints").mkdir()
    for name in ("step-000001.ckpt", "step-000002.ckpt", ".tmp-step-000003.ckpt"):
        (fake_multirun / "1" / "checkpoints" / name).write_bytes(b"")
    return fake_multirun


def test_the_marker_name_is_the_launchers():
    assert DONE == LAUNCH_DONE


def test_expected_jobs_cross_the_sweepers_params_with_the_command_line(tmp_path):
    write_multirun(tmp_path, {"experiment": "a,b", "seed": "1,2,3"}, ["seed=1,2", "debug=tiny"])
    jobs = expected_jobs(tmp_path / "multirun.yaml")
    # the command line's seed=1,2 replaces the sweep file's 1,2,3 (Hydra's basic sweeper does the same)
    assert jobs == [[f"experiment={e}", f"seed={s}", "debug=tiny"] for e in "ab" for s in (1, 2)]
    write_multirun(tmp_path, {"x": "1,2"}, [], target="hydra_plugins.hydra_optuna_sweeper.OptunaSweeper")
    assert expected_jobs(tmp_path / "multirun.yaml") is None  # chosen as it goes: not known in advance


def test_sweep_status_matches_jobs_to_runs_by_their_saved_overrides(half_done):
    status = sweep_status(half_done)
    listed = status[status["job"].notna()]
    assert listed["overrides"].tolist() == ["experiment=ablation/0_grpo,seed=1", "experiment=ablation/0_grpo,seed=2",
                                            "experiment=ablation/2_clip_higher,seed=1",
                                            "experiment=ablation/2_clip_higher,seed=2"]
    assert listed["run"].tolist() == ["0", "1", "2", "3"]
    assert listed["status"].tolist() == ["finished", "unfinished", "finished", "unfinished"]
    assert listed["checkpoint_step"].tolist()[1] == 2  # the newest COMPLETE checkpoint: where a re-run continues
    # the crashed run 4 is not one of the sweep's jobs (an earlier version of it): listed, without a job number
    extra = status[status["job"].isna()]
    assert extra["run"].tolist() == ["4"] and extra["status"].tolist() == ["unfinished"]
    assert missing_runs(half_done)["run"].tolist() == ["1", "3", "4"]


def test_a_job_not_started_and_a_run_from_before_the_marker(half_done):
    write_multirun(half_done, {"experiment": "ablation/0_grpo,ablation/2_clip_higher"}, ["seed=1,2,3"])
    (half_done / "3" / "policy").mkdir()
    (half_done / "3" / "policy" / "config.json").write_text("{}")  # finished before done.json existed
    status = sweep_status(half_done).set_index("overrides")
    assert status.loc["experiment=ablation/0_grpo,seed=3", "status"] == "not started"
    assert pd.isna(status.loc["experiment=ablation/0_grpo,seed=3", "run"])
    assert status.loc["experiment=ablation/2_clip_higher,seed=2", "status"] == "finished"


def test_load_runs_warns_about_a_partly_finished_sweep_and_not_about_a_finished_one(half_done):
    with warnings.catch_warnings(), pytest.warns(IncompleteSweepWarning, match=(
            r"3 run\(s\) .* not finished: experiment=ablation/0_grpo,seed=2 \(unfinished, checkpoint at step 2\)")):
        warnings.simplefilter("ignore", MissingMetricsWarning)  # run 4 has no metrics
        df = load_runs(half_done)
    assert sorted(df["run"].unique()) == ["0", "1", "2", "3"]  # the rows logged so far are kept
    for run in ("1", "3"):
        finish(half_done / run)
    shutil.rmtree(half_done / "4")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_runs(half_done)
    assert sweep_status(half_done)["status"].tolist() == ["finished"] * 4


def test_no_sweep_no_status(fake_multirun):
    assert sweep_status(fake_multirun).empty  # no multirun.yaml: nothing to compare with (no warning either)


def test_the_ablation_table_leaves_unfinished_runs_out_and_says_so(half_done, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("ablation_table", REPO / "analysis" / "ablation_table.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the crashed run's MissingMetricsWarning
        assert cli.main([str(half_done), "--out", str(tmp_path / "a")]) == 0
    out, err = capsys.readouterr()
    assert "3 run(s) not finished, left out of the table" in err
    assert "experiment=ablation/0_grpo,seed=2 (unfinished, checkpoint at step 2)" in err
    # seed 1 of each row only: final eval/avg@4 = 0.1 + row/10 + 0.01 + 0.002
    assert "| Naive GRPO | 11.2 | 1 |  | 30 |  |" in out and "| + Clip-Higher | 31.2 | 1 | +20.0 | 38 | +8 |" in out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main([str(half_done), "--out", str(tmp_path / "b"), "--include-unfinished"]) == 0
    out, err = capsys.readouterr()
    assert "kept in the table" in err and "| Naive GRPO | 11.7 ± 6.4 | 2 |" in out
