"""Sweeps over launchers and machines, and sweeps that survive an interruption, run as a user runs them.

One 2-job sweep (``sweep=ablation`` cut to row 5 x seeds 1, 2 on the tiny config) three ways: straight through
with ``hydra/launcher=submitit_local`` (separate job processes, each claiming one of 2 GPU slots); and with the
basic launcher killed in job 1's second step, then the same command again under ``hydra/launcher=joblib`` (2
workers): the re-run skips the finished job (its files untouched), continues job 1 from its checkpoint, and ends
with the numbers of the uninterrupted sweep. The SLURM example differs from submitit_local only by the executor:
its settings are checked down to the sbatch script submitit would submit.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
from helpers import built_once, run_bounded
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from dapo_lab import launch
from dapo_lab.analysis import IncompleteSweepWarning, load_runs, missing_runs, sweep_status, sweeps

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SWEEP = ["sweep=ablation", "experiment=ablation/5_dapo", "seed=1,2", "debug=tiny", "reward=custom",
         "reward.fn=helpers:parity_reward", "checkpoint.every_n_steps=1"]  # debug=tiny: 2 steps, threads=1
TIMING = ("time/", "perf/")
# The basic launcher's process SIGKILLs itself when job 1 starts its second DAPO step (its step-1 checkpoint is
# written): a machine taken away mid-sweep.
KILLER = """
import os, runpy, signal, sys
from hydra.core.hydra_config import HydraConfig
from dapo_lab.trainer.learner import DAPOLearner

original = DAPOLearner.step

def step(self, index, optimization):
    if HydraConfig.get().job.num == 1 and index == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, index, optimization)

DAPOLearner.step = step
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tests" / "trainer"),
            "DAPO_CACHE": str(tmp / "cache")}


def train(tmp: Path, *args: str, script: list[str] | None = None, expect_kill: bool = False) -> str:
    cmd = [sys.executable, *(script or []), str(ROOT / "train.py"), *SWEEP, *args]
    return run_bounded(cmd, ROOT, env(tmp), timeout=180, expect_kill=expect_kill)


def numbers(sweep: Path) -> pd.DataFrame:
    df = load_runs(sweep)
    return df[~df["metric"].str.startswith(TIMING)].reset_index(drop=True)


def runs_by_seed(sweep: Path) -> dict[int, Path]:
    status = sweep_status(sweep)
    return {int(OmegaConf.load(sweep / run / ".hydra" / "config.yaml").seed): sweep / run for run in status["run"]}


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The sweep straight through, its 2 jobs in parallel processes (submitit_local), spread over 2 GPU slots."""
    def make(tmp: Path) -> Path:
        train(tmp, "hydra/launcher=submitit_local", "hydra.launcher.gpus_per_node=2", "hydra.launcher.timeout_min=5",
              "sweep_gpus=2", f"hydra.sweep.dir={tmp / 'sweep'}")
        return tmp / "sweep"

    return built_once(tmp_path_factory, "straight_sweep", make)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> dict:
    """The sweep killed in job 1 (basic launcher), what the analysis saw then, and the same command again (joblib)."""
    def make(tmp: Path) -> dict:
        sweep = tmp / "sweep"
        killer = tmp / "killer.py"
        killer.write_text(KILLER)
        train(tmp, f"hydra.sweep.dir={sweep}", script=[str(killer)], expect_kill=True)
        before = {"status": sweep_status(sweep), "runs": runs_by_seed(sweep), "cli": status_cli(sweep)}
        with pytest.warns(IncompleteSweepWarning, match=r"1 run\(s\) .* not finished: .*seed=2 \(unfinished, "
                                                        r"checkpoint at step 1\)"):
            before["frame"] = load_runs(sweep)
        first = before["runs"][1]
        before["untouched"] = {p: p.stat().st_mtime_ns for p in (first / "csv" / "metrics.csv", first / "done.json")}
        output = train(tmp, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}")
        return {"sweep": sweep, "before": before, "output": output, "cli_after": status_cli(sweep)}

    return built_once(tmp_path_factory, "interrupted_sweep", make)


def status_cli(sweep: Path) -> tuple[int, str]:
    """``python -m dapo_lab.analysis.sweeps <sweep>``: its exit code and what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = sweeps.main([str(sweep)])
    return code, out.getvalue()


def test_submitit_local_runs_both_jobs_each_on_its_own_gpu_slot(straight):
    runs = runs_by_seed(straight)
    assert sorted(runs) == [1, 2] and list(sweep_status(straight)["status"]) == ["finished"] * 2
    assert list((straight / ".submitit").iterdir())  # submitit's own job folders: it did launch them
    claims = [re.search(r"GPU slot (\d) of 2 \(job (\d), pid (\d+)\): CUDA_VISIBLE_DEVICES=(\d)",
                        (run / "train.log").read_text()) for run in runs.values()]
    assert all(claims), "a job did not log its GPU slot"
    assert claims[0].group(3) != claims[1].group(3)  # separate processes
    # submitit_local showed both GPUs (gpus_per_node=2) to each job. The job that claims first takes slot 0. A job
    # that claims while the other still logs must take the other slot; one that claims after the other's last log
    # line may find slot 0 still held (the process outlives its last line while it exits) or free again. Each line
    # starts with its timestamp, and the timestamps sort as text.
    lines = [[line for line in (run / "train.log").read_text().splitlines() if line.startswith("[20")]
             for run in runs.values()]
    claimed_at = [next(line[1:24] for line in job if "GPU slot" in line) for job in lines]
    first, second = sorted(range(2), key=lambda j: claimed_at[j])
    assert claims[first].group(4) == "0", (claimed_at, claims)
    while_first_logs = claimed_at[second] <= lines[first][-1][1:24]
    allowed = ("1",) if while_first_logs else ("0", "1")
    assert claims[second].group(4) in allowed, (claimed_at, lines[first][-1], claims)


def test_an_interrupted_sweep_is_reported_missing_then_finished_by_the_same_command(interrupted):
    before, sweep = interrupted["before"], interrupted["sweep"]
    status = before["status"].set_index("job")
    assert list(status["status"]) == ["finished", "unfinished"] and status.loc[1, "checkpoint_step"] == 1
    code, printed = before["cli"]  # what a user sees from the command line, and a script can wait on
    assert code == 1 and ": 1/2 finished" in printed and "-- seed=2 (unfinished, checkpoint at step 1)" in printed
    code, printed = interrupted["cli_after"]
    assert code == 0 and ": 2/2 finished" in printed and "-- " not in printed
    assert sorted(before["frame"]["seed"].unique()) == [1, 2]  # the killed job's rows so far are readable
    # The re-run (joblib this time) skipped the finished job: nothing of it was rewritten ...
    assert all(p.stat().st_mtime_ns == t for p, t in before["untouched"].items())
    assert "Joblib.Parallel" in interrupted["output"] and "nothing to redo" in interrupted["output"]
    # ... and continued the killed one from its step-1 checkpoint to the end.
    second = before["runs"][2]
    assert re.search(r"resuming from \S*step-000001\.ckpt", (second / "train.log").read_text())
    assert missing_runs(sweep).empty and list(sweep_status(sweep)["status"]) == ["finished"] * 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", IncompleteSweepWarning)
        df = load_runs(sweep)
    trained = df[df["metric"] == "actor/num_updates"].groupby("seed")["step"].apply(list).to_dict()
    assert trained == {1: [1, 2], 2: [1, 2]}


def test_the_analysis_reads_every_launchers_runs_the_same_way(straight, interrupted):
    """submitit_local straight through, basic killed + joblib resumed: the same run names (the launcher is not in
    the folder names), columns, seeds and numbers."""
    a, b = numbers(straight), numbers(interrupted["sweep"])
    assert list(a.columns) == list(b.columns) and "hydra/launcher" not in a.columns
    assert sorted(a["seed"].unique()) == [1, 2] and sorted(a["run"].unique()) == sorted(b["run"].unique())
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_the_slurm_example_composes_into_an_sbatch_script(tmp_path, monkeypatch):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["sweep=ablation", "hydra/launcher=slurm_gpu"],
                      return_hydra_config=True)
    conf = cfg.hydra.launcher
    assert conf._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (conf.partition, conf.gpus_per_node, conf.tasks_per_node, conf.timeout_min) == ("gpu", 1, 1, 240)
    assert (conf.cpus_per_task, conf.mem_gb, conf.max_num_timeout) == (8, 64, 3)
    fixed = OmegaConf.to_container(cfg.hydra.sweep)["dir"]  # unresolved: no timestamp, the same at every start
    assert fixed == "multirun/ablation/${hydra.runtime.choices.scale}" and cfg.resume == "auto"
    # What SlurmLauncher.launch hands submitit, up to the submission itself (submitit wants an srun on PATH).
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\n")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    params = {k: v for k, v in OmegaConf.to_container(conf).items()
              if k not in ("_target_", "submitit_folder", "max_num_timeout")}
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor = submitit.AutoExecutor(cluster="slurm", folder=tmp_path / "submitit", slurm_max_num_timeout=3)
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()
                                  if k != "name"}, name="train")
    script = executor._executor._make_submission_file_text("python job.py", "uid")
    for line in ("--partition=gpu", "--gpus-per-node=1", "--ntasks-per-node=1", "--cpus-per-task=8", "--mem=64GB",
                 "--time=240"):
        assert f"#SBATCH {line}\n" in script


def test_gpu_slots_fill_the_gpus_round_robin_and_free_with_their_process(tmp_path):
    held = [launch.claim_slot(tmp_path, gpus=2, jobs_per_gpu=2) for _ in range(4)]
    assert [slot for slot, _ in held] == [0, 1, 2, 3]
    assert [launch.slot_gpus(2, 2)[slot] for slot, _ in held] == [0, 1, 0, 1]  # 2 jobs on each of 2 GPUs
    with pytest.raises(RuntimeError, match="all 4 GPU slots"):
        launch.claim_slot(tmp_path, gpus=2, jobs_per_gpu=2)
    held[1][1].close()  # the job process holding slot 1 ended
    held[1] = launch.claim_slot(tmp_path, gpus=2, jobs_per_gpu=2)
    assert held[1][0] == 1
    # Another process sees the locks too (flock is per open file, across processes).
    probe = ("import sys; from dapo_lab.launch import claim_slot\n"
             "try: claim_slot(sys.argv[1], 2, 2)\nexcept RuntimeError: print('full')")
    done = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "full", done.stderr


def test_a_process_keeps_its_gpu_and_maps_slots_onto_the_visible_devices(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    monkeypatch.delenv(launch.SLOT_ENV, raising=False)
    monkeypatch.setattr(launch, "_held", [])
    cfg = OmegaConf.create({"sweep_gpus": 2, "jobs_per_gpu": 1})
    assert launch.claim_gpu(cfg, tmp_path) == "4"
    # The next job of the same (joblib worker) process: CUDA may be initialised already, so the device stays.
    assert launch.claim_gpu(cfg, tmp_path) is None and os.environ["CUDA_VISIBLE_DEVICES"] == "4"
    launch._held[0].close()
    assert launch.claim_gpu(OmegaConf.create({"sweep_gpus": None}), tmp_path) is None
    monkeypatch.delenv(launch.SLOT_ENV)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ValueError, match="shows 0 device"):
        launch.claim_gpu(cfg, tmp_path)


def test_the_completion_marker_skips_only_a_finished_run_resumed_as_it_was(tmp_path):
    cfg = OmegaConf.create({"resume": "auto", "objective": "eval/greedy_acc", "trainer": {"max_steps": 2}})
    assert launch.finished_objective(cfg, tmp_path) is None  # nothing finished here yet
    assert launch.finish(cfg, tmp_path, {"eval/greedy_acc": 0.25, "eval/avg@2": 0.5}) == 0.25
    assert [p.name for p in tmp_path.iterdir()] == ["done.json"]  # written under a temporary name, then renamed
    assert launch.finished_objective(cfg, tmp_path) == 0.25  # the same command again: nothing to redo
    assert launch.finished_objective(OmegaConf.merge(cfg, {"threads": 1}), tmp_path) == 0.25
    further = OmegaConf.merge(cfg, {"trainer": {"max_steps": 4}})
    assert launch.finished_objective(further, tmp_path) is None and not (tmp_path / "done.json").exists()
    launch.finish(cfg, tmp_path, {"eval/greedy_acc": 0.25})
    assert launch.finished_objective(OmegaConf.merge(cfg, {"resume": None}), tmp_path) is None  # starts over
    assert not (tmp_path / "done.json").exists()


def test_resume_auto_refuses_a_run_directory_that_trained_other_settings(tmp_path):
    recorded = OmegaConf.create({"resume": "auto", "seed": 1, "threads": 2, "clip": {"eps_high": 0.28},
                                 "model": {"cache_dir": "/a"}, "data": {"train_path": "/x.parquet"},
                                 "trainer": {"max_steps": 20}})
    launch.check_resumed_settings(recorded, tmp_path)  # a fresh directory: nothing recorded, nothing to compare
    OmegaConf.save(recorded, tmp_path / "resolved_config.yaml")
    # Another machine, thread count, cache, data copy or a longer run: the same experiment, it continues.
    moved = OmegaConf.merge(recorded, {"threads": 8, "model": {"cache_dir": "/b"}, "data": {"train_path": "/y"},
                                       "trainer": {"max_steps": 80}})
    launch.check_resumed_settings(moved, tmp_path)
    edited = OmegaConf.merge(recorded, {"clip": {"eps_high": 0.2}, "seed": 2})
    with pytest.raises(ValueError, match=r"other settings \(clip.eps_high: 0.28 -> 0.2; seed: 1 -> 2\)"):
        launch.check_resumed_settings(edited, tmp_path)
    launch.check_resumed_settings(OmegaConf.merge(edited, {"resume": None}), tmp_path)  # starting over is allowed
