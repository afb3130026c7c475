"""Multi-node launch, proven on one machine: two "nodes" of one process each, started the way torchrun starts them
(``torchrun --nnodes 2 --node-rank {0,1} --master-addr 127.0.0.1``) and the way ``srun`` does (SLURM's variables
only), run 2 DAPO steps of ``train.py`` and log what the single-node 2-process run logs (Lightning launching its own
second process), number for number."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import built_once, run_bounded, worker_port

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["debug=tiny", "trainer=cpu_ddp", "trainer.precision=32-true", "reward=custom",
          "reward.fn=helpers:parity_reward", "checkpoint.every_n_steps=1"]
TIMING = ("time/", "perf/")


def numbers(run_dir: Path) -> pd.DataFrame:
    df = pd.read_csv(run_dir / "csv" / "metrics.csv")
    return df[[c for c in df.columns if not c.startswith(TIMING)]].groupby("step").first().sort_index()


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tests" / "trainer"),
            "DAPO_CACHE": str(tmp / "cache")}


@pytest.fixture(scope="module")
def one_node(tmp_path_factory) -> pd.DataFrame:
    """The reference: one machine, Lightning starting the second process itself."""
    def make(tmp: Path) -> pd.DataFrame:
        run_bounded([sys.executable, "train.py", *COMMON, "trainer.devices=2", f"hydra.run.dir={tmp / 'run'}"],
                    ROOT, {**_env(tmp), "MASTER_PORT": str(worker_port(29961))}, timeout=240)
        return numbers(tmp / "run")

    return built_once(tmp_path_factory, "one_node", make)


def _run_nodes(cmds: list[list[str]], envs: list[dict[str, str]]) -> None:
    """Start every "node" on its own, as on separate machines; SIGKILL the lot at the time bound."""
    nodes = [subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for cmd, env in zip(cmds, envs)]
    try:
        outputs = [node.communicate(timeout=240)[0] for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                os.killpg(node.pid, 9)
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(o[-2000:] for o in outputs)


def _check(run_dir: Path, one: pd.DataFrame) -> None:
    two = numbers(run_dir)
    assert two["actor/num_updates"].dropna().index.tolist() == [1, 2]
    assert (two["sampling/batch_groups"].dropna() == 8).all()  # 4 groups per process, 2 processes
    pd.testing.assert_frame_equal(two, one, check_exact=False, rtol=1e-6)
    assert (run_dir / "policy" / "model.safetensors").is_file()


def test_two_nodes_through_torchrun_equal_one_node_with_two_processes(tmp_path, one_node):
    torchrun = Path(sys.executable).with_name("torchrun")
    cmds = [[str(torchrun), "--nnodes", "2", "--nproc-per-node", "1", f"--node-rank={node}",
             "--master-addr", "127.0.0.1", "--master-port", str(worker_port(29962)), "train.py", *COMMON,
             "trainer.devices=1", "trainer.num_nodes=2", f"hydra.run.dir={tmp_path / 'two_nodes'}"] for node in (0, 1)]
    _run_nodes(cmds, [_env(tmp_path)] * 2)
    _check(tmp_path / "two_nodes", one_node)


def test_two_nodes_as_srun_tasks_equal_one_node_with_two_processes(tmp_path, one_node):
    """What ``srun`` gives each task of ``scripts/slurm_train.sbatch`` (2 nodes x 1 task): SLURM's variables only,
    no RANK / LOCAL_RANK; Lightning's SLURM environment and dapo-lab's rank-0 checks must agree on who is who."""
    cmd = [sys.executable, "train.py", *COMMON, "trainer.devices=1", "trainer.num_nodes=2",
           f"hydra.run.dir={tmp_path / 'srun'}"]
    env = {k: v for k, v in _env(tmp_path).items()
           if not k.startswith("SLURM_") and k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK")}
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "dapo", "SLURM_NTASKS": "2", "SLURM_NNODES": "2",
             "SLURM_NTASKS_PER_NODE": "1", "SLURM_NODELIST": "127.0.0.1", "MASTER_PORT": str(worker_port(29963))}
    envs = [{**env, **slurm, "SLURM_PROCID": str(task), "SLURM_LOCALID": "0", "SLURM_NODEID": str(task)}
            for task in (0, 1)]
    _run_nodes([cmd, cmd], envs)
    _check(tmp_path / "srun", one_node)
