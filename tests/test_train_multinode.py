"""Multi-node launch, proven on one machine: two "nodes" of one process each (``torchrun --nnodes 2 --node-rank
{0,1} --master-addr 127.0.0.1``, Lightning picks up torchrun's environment) run 2 DAPO steps of ``train.py`` and log
what the single-node 2-process run logs (Lightning launching its own second process), number for number."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
from helpers import run_bounded

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["debug=tiny", "trainer=cpu_ddp", "trainer.precision=32-true", "reward=custom",
          "reward.fn=helpers:parity_reward", "checkpoint.every_n_steps=1"]
TIMING = ("time/", "perf/")


def numbers(run_dir: Path) -> pd.DataFrame:
    df = pd.read_csv(run_dir / "csv" / "metrics.csv")
    return df[[c for c in df.columns if not c.startswith(TIMING)]].groupby("step").first().sort_index()


def test_two_nodes_through_torchrun_equal_one_node_with_two_processes(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tests" / "trainer"),
           "DAPO_CACHE": str(tmp_path / "cache")}
    run_bounded([sys.executable, "train.py", *COMMON, "trainer.devices=2", f"hydra.run.dir={tmp_path / 'one_node'}"],
                ROOT, {**env, "MASTER_PORT": "29961"}, timeout=240)
    torchrun = Path(sys.executable).with_name("torchrun")
    nodes = []
    for node in (0, 1):  # one process per "node", each started on its own, as on two machines
        cmd = [str(torchrun), "--nnodes", "2", "--nproc-per-node", "1", f"--node-rank={node}",
               "--master-addr", "127.0.0.1", "--master-port", "29962", "train.py", *COMMON, "trainer.devices=1",
               "trainer.num_nodes=2", f"hydra.run.dir={tmp_path / 'two_nodes'}"]
        nodes.append(subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    try:
        outputs = [node.communicate(timeout=240)[0] for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                os.killpg(node.pid, 9)
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    two, one = numbers(tmp_path / "two_nodes"), numbers(tmp_path / "one_node")
    assert two["actor/num_updates"].dropna().index.tolist() == [1, 2]
    assert (two["sampling/batch_groups"].dropna() == 8).all()  # 4 groups per process, 2 processes
    pd.testing.assert_frame_equal(two, one, check_exact=False, rtol=1e-6)
    assert (tmp_path / "two_nodes" / "policy" / "model.safetensors").is_file()
