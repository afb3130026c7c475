"""DAPO steps with rollout=vllm: the engine samples from the current policy at every step (weights pushed),
with TIS switched on. Needs vLLM (CI's vLLM stage)."""

from __future__ import annotations

import importlib.util

import pandas as pd
import pytest
from helpers import PARITY, make_run

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM not installed")


def test_every_step_samples_from_the_current_policy(tmp_path):
    # vLLM's CPU attention needs a head dimension of at least 32: 2 heads of 32 (1 KV head).
    # sampling=none: no surplus groups carried into the next step (those are one step off-policy by design).
    built = make_run(tmp_path, "rollout=vllm", "rollout.dtype=float32", "rollout.kv_cache_memory_bytes=67108864",
                     "model.num_heads=2", "model.num_kv_heads=1", "rollout_correction.tis_cap=2.0", "sampling=none",
                     "optim.lr=1e-2", *PARITY, steps=3)
    try:
        assert built.learner.old_logprobs == "recompute"  # auto: vLLM's log-probs are not the trainer's own
        built.trainer.fit(built.module)
    finally:
        built.learner.close()
    metrics = pd.read_csv(tmp_path / "csv" / "metrics.csv").groupby("step").first()
    train = metrics.dropna(subset=["rollout/logprob_abs_diff_max"])
    assert list(train.index) == [1, 2, 3]
    # lr 1e-2 moves log-probs by ~0.1 per step: a missed push would show up here.
    assert (train["rollout/logprob_abs_diff_max"] < 1e-4).all(), train["rollout/logprob_abs_diff_max"]
    assert (train["actor/ppo_kl"].abs() > 0).any()  # the policy did move
    for name in ("rollout/tis_weight_mean", "rollout/tis_capped_frac"):
        assert train[name].notna().all()
    assert metrics["eval/avg@2"].notna().any()
