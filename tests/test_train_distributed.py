"""``python train.py trainer=<2-process strategy>`` end to end, as a user runs it (Hydra, Lightning's launcher):
2 DAPO steps, both evals, a checkpoint of the strategy's kind, and ONE final policy in ``save_pretrained`` format,
gathered from the shards, that transformers loads and that equals the weights of the final checkpoint."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import run_bounded, worker_port

ROOT = Path(__file__).resolve().parents[1]
DEEPSPEED = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed not installed")
PORTS = iter(range(29900, 29950))


def checkpoint_weights(path: Path, tmp_path: Path) -> dict[str, torch.Tensor]:
    """The policy's weights inside a checkpoint of any strategy (a file, a DCP folder, or a DeepSpeed folder)."""
    if path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    elif (path / "latest").is_file():  # DeepSpeed
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(path))
    else:  # torch.distributed.checkpoint shards
        from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

        dcp_to_torch_save(str(path), str(tmp_path / "merged.pt"))
        state = torch.load(tmp_path / "merged.pt", weights_only=False)["state_dict"]
    return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}


@pytest.mark.parametrize("trainer", ["cpu_ddp", "cpu_fsdp", pytest.param("cpu_deepspeed_zero3", marks=DEEPSPEED)])
def test_train_py_under_a_strategy_writes_one_gathered_policy(tmp_path, trainer):
    from transformers import AutoModelForCausalLM

    env = {**os.environ, "MASTER_PORT": str(worker_port(next(PORTS))), "PYTHONPATH": str(ROOT / "tests" / "trainer"),
           "OMP_NUM_THREADS": "1"}
    # DDP also runs with model.compile (the layers' training passes traced by dynamo; aot_eager: no C++ build).
    compile_ = ["model.compile=aot_eager"] if trainer == "cpu_ddp" else []
    run_bounded([sys.executable, "train.py", "debug=tiny", f"trainer={trainer}", "trainer.precision=32-true",
                 "reward=custom", "reward.fn=helpers:parity_reward", f"hydra.run.dir={tmp_path / 'run'}", *compile_],
                ROOT, env, timeout=300)
    run = tmp_path / "run"
    df = pd.read_csv(run / "csv" / "metrics.csv")
    assert df[df["actor/num_updates"].notna()]["step"].tolist() == [1, 2]
    assert df[df["eval/avg@2"].notna()]["step"].tolist() == [0, 2]
    policy = AutoModelForCausalLM.from_pretrained(run / "policy", dtype=torch.float32)
    saved = checkpoint_weights((run / "checkpoints" / "last.ckpt").resolve(), tmp_path)
    mine = policy.state_dict()
    assert set(saved) == set(mine) and len(mine) > 10
    for name, tensor in mine.items():
        torch.testing.assert_close(tensor, saved[name].float(), rtol=0, atol=0, msg=name)
