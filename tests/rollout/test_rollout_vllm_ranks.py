"""vLLM under data parallelism: 2 CPU ranks, each driving its own colocated engine (verl's hybrid-engine layout),
fed by a weight push every step. After each push both engines decode exactly what the policy itself decodes, and
the same on both ranks (they hold the same weights). Needs vLLM (CI's vLLM stage, .ci/run-vllm)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
from helpers import run_bounded, worker_port

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM not installed")
SCRIPT = Path(__file__).with_name("vllm_ranks_check.py")


def test_every_rank_engine_decodes_the_current_policy(tmp_path):
    threads = os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "0")
    env = {**os.environ, "MASTER_PORT": str(worker_port(29971)), "OMP_NUM_THREADS": "1",
           "VLLM_CPU_OMP_THREADS_BIND": threads, "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    run_bounded([sys.executable, str(SCRIPT), str(tmp_path)], tmp_path, env, timeout=600)
    ranks = json.loads((tmp_path / "ranks.json").read_text())
    assert [[s["step"] for s in rank] for rank in ranks] == [[0, 1], [0, 1]]
    for rank in ranks:
        for seen in rank:
            assert seen["vllm"] == seen["hf"], seen  # the engine holds the policy's current weights
    assert ranks[0] == ranks[1]  # both ranks' engines hold the same weights
    assert ranks[0][0]["hf"] != ranks[0][1]["hf"]  # step 1's updates changed what the policy decodes
