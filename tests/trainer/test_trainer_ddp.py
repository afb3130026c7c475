"""Two data-parallel ranks (gloo, CPU): the gradients of the ranks' shares, summed, are the union batch's gradient
(the Lightning runs under each strategy: test_trainer_distributed.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from helpers import run_bounded, worker_port

SCRIPT = Path(__file__).with_name("ddp_check.py")


def run(mode: str, out: Path, port: int) -> None:
    port = worker_port(port)
    env = {"DDP_CHECK_PORT": str(port), "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
           "PATH": "/usr/bin:/bin", "HOME": str(out), "HF_HUB_OFFLINE": "1"}
    run_bounded([sys.executable, str(SCRIPT), mode, str(out)], out, env, timeout=180)


def test_rank_gradients_sum_to_the_union_gradient(tmp_path):
    run("exact", tmp_path, 29533)
    result = json.loads((tmp_path / "exact.json").read_text())
    assert result["prompts_differ"]  # each rank trained on its own prompts
    assert result["tokens_per_rank"][0] != result["tokens_per_rank"][1]  # unequal token counts per rank
    assert result["max_rel_diff"] < 1e-4


def test_ranks_sharing_a_tensor_parallel_engine_generate_once(tmp_path):
    run("tensor_parallel", tmp_path, 29535)
    result = json.loads((tmp_path / "tp.json").read_text())
    # Both ranks ran the same generate calls (one engine); the batch holds each group once, dealt 2 + 2.
    assert result == {"same_generation": True, "groups_per_rank": [2, 2], "distinct_groups": 4, "batch_groups": 4}
