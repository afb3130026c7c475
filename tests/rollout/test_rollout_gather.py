"""The full-weight gather of the vLLM weight push under FSDP2 shards, whole and one tensor at a time (CPU, gloo, two
ranks; no vLLM needed).

FSDP1 refuses CPU, so Lightning's ``strategy=fsdp`` path (``summon_full_params`` in the module) and
DeepSpeed ZeRO-3 (``GatheredParameters``) are untested here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from helpers import run_bounded, worker_port

SCRIPT = Path(__file__).with_name("gather_check.py")


def test_fsdp2_shards_gather_to_the_full_weights_on_every_rank(tmp_path):
    env = {"GATHER_CHECK_PORT": str(worker_port(29541)), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
           "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    run_bounded([sys.executable, str(SCRIPT), str(tmp_path)], tmp_path, env, timeout=180)
    for rank in range(2):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert result == {"sharded": True, "same_names": True, "plain_tensors": True, "equal": True,
                          "streamed_equal": True, "streamed_order": True, "largest_is_one_tensor": True}, result
