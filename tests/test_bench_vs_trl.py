"""experiments/bench_vs_trl.py end to end at ``--tiny`` size: TRL and the three dapo-lab variants run in their own
processes, one timed step each, and the JSON holds positive, finite numbers for every system and the ratios.
Timings at this size mean nothing; the test checks the plumbing and the one-to-one mapping."""

import json
import math
import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl", reason="trl not installed (the bench extra: pip install -e '.[bench]')")

from helpers import run_bounded  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "bench_vs_trl.py"
NUMBERS = ("median_s_per_step", "generated_tokens_per_s", "generated_plus_trained_tokens_per_s", "peak_rss_mib")


def test_bench_vs_trl_tiny_round_reports_both_systems(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "DAPO_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, str(SCRIPT), "--tiny", "--rounds", "1", "--steps", "2", "--out", str(out)]
    printed = run_bounded(cmd, tmp_path, env, timeout=240)
    report = json.loads(out.read_text())
    assert set(report["systems"]) == {"trl", "dapo-lab recompute", "dapo-lab engine", "dapo-lab bf16 decode"}
    for name, system in report["systems"].items():
        assert system["steps_timed"] == 1, name  # 2 steps, the first not timed
        for key in NUMBERS:
            assert math.isfinite(system[key]) and system[key] > 0, (name, key, system[key])
    assert len(report["ratio"]) == 3 and all(math.isfinite(r) and r > 0 for r in report["ratio"].values())
    trl = report["settings"]["trl_config"]  # --tiny: 4 prompts x 4 completions, 4 updates of one group each
    assert (trl["num_generations"], trl["per_device_train_batch_size"], trl["steps_per_generation"]) == (4, 4, 4)
    assert (trl["loss_type"], trl["epsilon"], trl["epsilon_high"], trl["beta"]) == ("dapo", 0.2, 0.28, 0.0)
    assert report["trl_details"]["same_prompt_ids"]
    assert "not run" in report["vllm"]["dapo-lab vllm"]  # no --vllm-python: skipped, with the reason
    assert "| trl |" in printed and "| dapo-lab engine |" in printed
