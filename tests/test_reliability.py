"""Kills, resumes and reproducibility, as a user meets them: ``tests/kill_check.py`` runs the real ``run.main`` on the
tiny config and SIGKILLs itself during generation, during an update, while a checkpoint or the metrics file is
being written; running the same command again (``resume=auto``) continues, and the finished ``metrics.csv`` equals an
uninterrupted run's, number for number."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import built_once, run_bounded
from zygote import Zygote

from dapo_lab.trainer.checkpoints import latest_checkpoint

SCRIPT = Path(__file__).with_name("kill_check.py")
STEPS = 4
TIMING = ("time/", "perf/")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
SERVER: list[Zygote] = []  # this module's fork server (the `server` fixture), for run()


@pytest.fixture(scope="module", autouse=True)
def server():
    """kill_check.py's runs forked from one interpreter that imported it: each run is a fresh process of its own
    (its own session, killed with SIGKILL) without paying torch's and transformers' imports again (~12 s of CPU)."""
    SERVER.append(Zygote(SCRIPT, ENV))
    yield
    SERVER.pop().close()


def run(run_dir: Path, *args: str, expect_kill: bool = False) -> None:
    SERVER[0].run([str(run_dir), str(STEPS), *args], run_dir.parent, timeout=180, expect_kill=expect_kill)


def run_fresh(run_dir: Path, *args: str) -> None:
    """``python kill_check.py ...`` in a new interpreter: its own string-hash seed, unlike the server's forks."""
    run_bounded([sys.executable, str(SCRIPT), str(run_dir), str(STEPS), *args], run_dir.parent, ENV, timeout=180)


def numbers(run_dir: Path) -> pd.DataFrame:
    """Every logged number but timings, one row per step (training and eval rows merged)."""
    df = pd.read_csv(run_dir / "csv" / "metrics.csv")
    columns = [c for c in df.columns if not c.startswith(TIMING)]
    return df[columns].groupby("step").first().sort_index()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, server) -> pd.DataFrame:
    def make(tmp: Path) -> pd.DataFrame:
        run(tmp / "run")
        return numbers(tmp / "run")

    return built_once(tmp_path_factory, "uninterrupted", make)


def test_the_same_config_twice_logs_the_same_numbers(tmp_path, uninterrupted):
    run_fresh(tmp_path / "again")  # a new interpreter (its own hash seed) against the server's fork
    again = numbers(tmp_path / "again")
    assert list(again.index) == list(range(STEPS + 1)) and again.shape[1] > 30
    pd.testing.assert_frame_equal(again, uninterrupted, check_exact=True)  # bitwise, every column, every step


def test_deterministic_mode_changes_nothing_on_cpu(tmp_path, uninterrupted):
    run(tmp_path / "det", "deterministic=true")
    pd.testing.assert_frame_equal(numbers(tmp_path / "det"), uninterrupted, check_exact=True)


@pytest.mark.parametrize("phase", ["generate", "update", "checkpoint", "csv", "eval"])
def test_a_run_killed_anywhere_resumes_to_the_uninterrupted_numbers(tmp_path, uninterrupted, phase):
    run_dir = tmp_path / "run"
    run(run_dir, phase, "2" if phase == "eval" else "3", expect_kill=True)  # SIGKILL in step 3 (eval: after step 2)
    # What the kill left: a readable metrics file with every finished step, and only complete checkpoints.
    left = numbers(run_dir)
    trained = left["actor/num_updates"].dropna().index.tolist()
    assert trained[:2] == [1, 2] and max(trained) <= 3
    newest = latest_checkpoint(run_dir)
    assert newest is not None and newest.name in ("step-000001.ckpt", "step-000002.ckpt", "step-000003.ckpt")
    if phase == "eval":  # step 2's checkpoint waits for the evaluation after it, which never finished
        assert newest.name == "step-000001.ckpt"
    if phase == "checkpoint":
        assert newest.name == "step-000002.ckpt" and (run_dir / "checkpoints" / ".tmp-step-000003.ckpt").exists()
    run(run_dir)  # the same command again: resume=auto
    pd.testing.assert_frame_equal(numbers(run_dir), uninterrupted, check_exact=True)
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))
    assert (run_dir / "policy" / "model.safetensors").is_file()


def test_resume_from_another_run_directory(tmp_path, uninterrupted):
    first = tmp_path / "first"
    run(first, "update", "3", expect_kill=True)
    second = tmp_path / "second"
    run(second, f"resume={first}")
    resumed = numbers(second)
    assert resumed["actor/num_updates"].dropna().index.tolist() == [3, 4]  # from first's step-2 checkpoint
    pd.testing.assert_frame_equal(resumed.loc[[3, 4]], uninterrupted.loc[[3, 4]], check_exact=True)


def test_a_multirun_job_logs_what_a_single_run_does(tmp_path):
    """`train.py -m seed=2,1` (jobs share one process, the first builds the model cache) against `train.py seed=1`
    alone: the same numbers, bitwise."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root / "tests" / "trainer"),
           "DAPO_CACHE": str(tmp_path / "cache")}
    common = ["debug=tiny", "trainer.max_steps=3", "reward=custom", "reward.fn=helpers:parity_reward"]
    run_bounded([sys.executable, "train.py", "-m", *common, "seed=2,1", f"hydra.sweep.dir={tmp_path / 'm'}"], root,
                env, timeout=240)
    run_bounded([sys.executable, "train.py", *common, "seed=1", f"hydra.run.dir={tmp_path / 'single'}"], root, env,
                timeout=240)
    job = numbers(tmp_path / "m" / "1")
    assert job["actor/num_updates"].dropna().index.tolist() == [1, 2, 3]
    pd.testing.assert_frame_equal(job, numbers(tmp_path / "single"), check_exact=True)
