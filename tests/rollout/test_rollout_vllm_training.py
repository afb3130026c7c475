"""DAPO steps with rollout=vllm: the engine samples from the current policy at every step (weights pushed),
with TIS switched on.

Needs vLLM, and the module wiring (``rollout.update_weights`` in ``on_train_batch_start`` and at the start of
validation; TIS in ``accumulate_gradients``).
"""

from __future__ import annotations

import importlib.util
import inspect

import helpers
import pandas as pd
import pytest

from dapo_lab.algo import KeepAll
from dapo_lab.module import DAPOModule
from dapo_lab.reward import FunctionReward

WIRED = "rollout.update_weights" in inspect.getsource(DAPOModule)
pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM not installed"),
    pytest.mark.skipif(not WIRED, reason="DAPOModule does not call rollout.update_weights yet"),
]


def test_every_step_samples_from_the_current_policy(tmp_path, monkeypatch):
    from dapo_lab.rollout import VLLMEngine

    # vLLM's CPU attention needs a head dimension of at least 32.
    monkeypatch.setattr(helpers, "TINY_DIMS", dict(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1,
                                                   intermediate_size=128))
    engine = VLLMEngine(dtype="float32", kv_cache_memory_bytes=64 * 2**20, tis_cap=2.0)
    # KeepAll: no surplus groups carried into the next step (those are one step off-policy by design).
    module = helpers.make_module(rollout=engine, reward=FunctionReward(helpers.parity_reward), sampling=KeepAll(),
                                 optim={"lr": 1e-2})
    try:
        trainer = helpers.make_trainer(tmp_path, steps=3)
        trainer.fit(module)
    finally:
        engine.close()
    metrics = pd.read_csv(next(tmp_path.rglob("metrics.csv"))).groupby("step").first()
    train = metrics.dropna(subset=["rollout/logprob_abs_diff_max"])
    assert list(train.index) == [1, 2, 3]
    # lr 1e-2 moves log-probs by ~0.1 per step: a missed push would show up here.
    assert (train["rollout/logprob_abs_diff_max"] < 1e-4).all(), train["rollout/logprob_abs_diff_max"]
    assert (train["actor/ppo_kl"].abs() > 0).any()  # the policy did move
    for name in ("rollout/tis_weight_mean", "rollout/tis_capped_frac"):  # logged where the module does
        if name in train:
            assert train[name].notna().all()
    assert metrics["eval/avg@2"].notna().any()
