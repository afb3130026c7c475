"""experiments/bench_vs_trl.py: the options and the report without a training run (cheap, no torch), then end to end at
``--tiny`` size: TRL and dapo-lab's default variant run in their own processes, one timed step each, and the JSON
holds positive, finite numbers for every system and the ratio. Timings at that size mean nothing; the end-to-end test
checks the plumbing and the one-to-one mapping."""

import importlib.util
import json
import math
import os
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "bench_vs_trl.py"
NUMBERS = ("median_s_per_step", "generated_tokens_per_s", "generated_plus_trained_tokens_per_s", "peak_rss_mib")


def load_bench():
    """The script as a module (experiments/ is no package); its top level imports the standard library only."""
    spec = importlib.util.spec_from_file_location("bench_vs_trl", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = load_bench()


def test_tiny_does_not_combine_with_the_qwen_shape(capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--tiny", "--shape", "qwen2.5-0.5b"])
    assert "--tiny" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--tiny"):
        bench.overrides(tiny=True, shape="qwen2.5-0.5b")
    with pytest.raises(SystemExit):  # random weights: no warm start to size
        bench.parse_args(["--shape", "qwen2.5-0.5b", "--warmstart-steps", "100"])
    args = bench.parse_args(["--tiny", "--device", "cuda", "--skip-trl", "--ours", "recompute"])
    assert (args.shape, args.device, args.skip_trl, args.ours) == ("tiny", "cuda", True, ["recompute"])


def test_cpu_default_overrides_are_the_shared_setting_alone():
    assert bench.overrides() == [f"{k}={v}" for k, v in bench.SHARED.items()]
    assert bench.overrides(tiny=True) == [f"{k}={v}" for k, v in {**bench.SHARED, **bench.TINY}.items()]


def test_qwen_shape_and_cuda_overrides_reach_the_composed_config():
    ours = bench.overrides(shape="qwen2.5-0.5b", device="cuda")
    assert "model.hidden_size=896" in ours and "trainer.accelerator=gpu" in ours
    cfg = bench.compose_config(ours)
    m = cfg.model
    assert (m.hidden_size, m.num_layers, m.num_heads, m.num_kv_heads, m.intermediate_size, m.warmstart_steps) == (
        896, 24, 14, 2, 4864, 0)
    assert (cfg.trainer.accelerator, cfg.trainer.devices, cfg.trainer.strategy) == ("gpu", 1, "auto")
    assert cfg.batch.max_tokens_per_micro_batch == 2600  # token-budget passes stay on
    warm = bench.compose_config(bench.overrides(warmstart_steps=150))
    assert (warm.model.hidden_size, warm.model.warmstart_steps) == (256, 150)


@pytest.mark.parametrize("device,use_cpu", [("cpu", True), ("cuda", False)])
def test_trl_use_cpu_follows_the_device(device, use_cpu, tmp_path):
    cfg = bench.compose_config(bench.overrides(device=device))
    bench.check_mappable(cfg)
    trl = bench.trl_config(cfg, 3, "sdpa", str(tmp_path))
    assert trl["use_cpu"] is use_cpu and trl["bf16"] is True
    assert (trl["num_generations"], trl["per_device_train_batch_size"], trl["max_steps"]) == (8, 32, 12)


def summary(seconds: float) -> dict:
    return {"median_s_per_step": seconds, "steps_timed": 2, "generated_tokens_per_s": 1000.0,
            "generated_plus_trained_tokens_per_s": 2000.0, "mean_generated_tokens_per_step": 900.0,
            "peak_rss_mib": 1500.0, "s_per_step": [seconds, seconds]}


def report(systems: dict, notes: dict) -> dict:
    machine = {"nproc": 16, "torch_threads": 2, "load_avg_before": [0.1], "load_avg_after": [1.0], "commit": "0" * 40,
               "dirty": False, "device": "cuda", "gpu": "NVIDIA H200"}
    return {"machine": machine, "rounds": 1, "steps_per_run": 3, "shape": {"name": "qwen2.5-0.5b"},
            "systems": systems, "notes": notes, "vllm": {"dapo-lab vllm": "not run: no --vllm-python given"},
            "ratio": bench.ratios(systems)}


def test_report_without_trl_has_tokens_per_s_and_no_ratio(capsys):
    systems = {"dapo-lab recompute": summary(2.0), "dapo-lab engine": summary(1.5)}
    assert bench.ratios(systems) == {}
    bench.print_table(report(systems, {"trl": "not run: --skip-trl"}))
    printed = capsys.readouterr().out
    assert "| dapo-lab engine | 1.500 | 2 | 1,000 | 2,000 | 900 | 1,500 | n/a |" in printed
    assert "trl: not run: --skip-trl" in printed and "NVIDIA H200" in printed


def test_report_with_trl_has_ratios(capsys):
    systems = {"trl": summary(3.0), "dapo-lab recompute": summary(2.0)}
    assert bench.ratios(systems) == {"trl / dapo-lab recompute (median s/step)": 1.5}
    bench.print_table(report(systems, {}))
    assert "| dapo-lab recompute | 2.000 | 2 | 1,000 | 2,000 | 900 | 1,500 | 1.50x |" in capsys.readouterr().out


def test_bench_vs_trl_tiny_round_reports_both_systems(tmp_path):
    pytest.importorskip("trl", reason="trl not installed (the bench extra: pip install -e '.[bench]')")
    from helpers import run_bounded  # imports torch: only the end-to-end test needs it

    out = tmp_path / "bench.json"
    env = {**os.environ, "DAPO_CACHE": str(tmp_path / "cache")}
    # TRL and our default variant (each run is a process start-up of ~10 s here; the other variants differ from it
    # by config overrides, and their selection is tested above).
    cmd = [sys.executable, str(SCRIPT), "--tiny", "--rounds", "1", "--steps", "2", "--ours", "engine",
           "--out", str(out)]
    printed = run_bounded(cmd, tmp_path, env, timeout=240)
    report = json.loads(out.read_text())
    assert set(report["systems"]) == {"trl", "dapo-lab engine"}
    for name, system in report["systems"].items():
        assert system["steps_timed"] == 1, name  # 2 steps, the first not timed
        for key in NUMBERS:
            assert math.isfinite(system[key]) and system[key] > 0, (name, key, system[key])
    assert len(report["ratio"]) == 1 and all(math.isfinite(r) and r > 0 for r in report["ratio"].values())
    trl = report["settings"]["trl_config"]  # --tiny: 4 prompts x 4 completions, 4 updates of one group each
    assert (trl["num_generations"], trl["per_device_train_batch_size"], trl["steps_per_generation"]) == (4, 4, 4)
    assert (trl["loss_type"], trl["epsilon"], trl["epsilon_high"], trl["beta"]) == ("dapo", 0.2, 0.28, 0.0)
    assert trl["use_cpu"] is True and report["device"] == "cpu" and report["complete"] and report["notes"] == {}
    assert report["trl_details"]["same_prompt_ids"]
    assert "not run" in report["vllm"]["dapo-lab vllm"]  # no --vllm-python: skipped, with the reason
    assert "| trl |" in printed and "| dapo-lab engine |" in printed


def test_paired_ratios_divide_within_each_round(capsys):
    """A machine twice as slow in round 2 moves both sides: the per-round ratios stay 2.0, while the ratio of the
    pooled medians does not see the pairing."""
    trl, ours = summary(4.0), summary(2.0)
    trl["round_medians"], ours["round_medians"] = [4.0, 8.0, 4.4], [2.0, 4.0, 2.0]
    systems = {"trl": trl, "dapo-lab engine": ours, "dapo-lab vllm": {**summary(3.0), "round_medians": [3.0]}}
    paired = bench.paired_ratios(systems)
    assert list(paired) == ["trl / dapo-lab engine"]  # vLLM ran one round of three: not paired
    assert paired["trl / dapo-lab engine"]["per_round"] == [2.0, 2.0, 2.2]
    assert paired["trl / dapo-lab engine"]["median"] == 2.0
    assert bench.paired_ratios({"dapo-lab engine": ours}) == {}  # no TRL, no pairs
    bench.print_table({**report(systems, {}), "paired_ratio": paired})
    assert "trl / dapo-lab engine, per round (the same round's medians): 2.00, 2.00, 2.20; median 2.00x" in (
        capsys.readouterr().out)
