"""experiments/bench_step.py runs a short real training and prints its phase table, the update against its ceiling
and the raw-forward floor."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "bench_step.py"


def test_bench_step_reports_phases_the_update_ceiling_and_the_raw_forward_ratio(tmp_path):
    env = {**os.environ, "DAPO_CACHE": str(tmp_path / "cache")}
    # sampling=none: the untrained debug model answers nothing right, so dynamic sampling would keep no group.
    command = [sys.executable, str(SCRIPT), "--steps", "2", "--pairs", "3", "debug=tiny", "sampling=none"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    table = dict(re.findall(r"^\| ([^|]+?) \| ([\d,.]+) \|$", done.stdout, flags=re.M))
    assert float(table["steps timed"]) == 1  # the first of the 2 steps is left out
    step = float(table["time/step"])
    assert 0 < float(table["time/generate"]) < step and 0 < float(table["time/update"]) < step
    raw = next(float(v.replace(",", "")) for k, v in table.items() if k.startswith("raw forward"))
    ratio = float(re.search(r"engine in training / raw forward: ([\d.]+)", done.stdout).group(1))
    assert raw > 0 and abs(ratio - float(table["perf/rollout_tokens_per_s"].replace(",", "")) / raw) < 0.01
    # The update against its ceiling: 3 pairs, so the median is one pair's ratio, printed alike in both places.
    per_pair = re.search(r"update / ceiling per pair: ([\d.]+), ([\d.]+), ([\d.]+)$", done.stdout, flags=re.M).groups()
    median = re.search(r"update / ceiling, 3 interleaved pairs on the last step's batch: ([\d.]+)",
                       done.stdout).group(1)
    assert median == sorted(per_pair, key=float)[1] and float(median) > 0
    # The table rounds to 3 decimals, the line to 2: they differ by at most half a unit of each.
    assert float(table["update / ceiling, median of pairs"]) == pytest.approx(float(median), abs=0.0055 + 1e-9)
    ceiling = float(table["update ceiling response tokens/s"].replace(",", ""))
    in_training = float(re.search(r"update in training \(mean of steps\) / ceiling, tokens/s: ([\d.]+)",
                                  done.stdout).group(1))
    assert abs(in_training - float(table["perf/update_tokens_per_s"].replace(",", "")) / ceiling) < 0.01
    engine = float(table["engine round tokens/s (one seeded round)"].replace(",", ""))
    direct = float(table["replayed round tokens/s, direct decode steps"].replace(",", ""))
    ratio = float(re.search(r"engine round / replayed round with direct decode steps: ([\d.]+)", done.stdout).group(1))
    assert direct > 0 and abs(ratio - engine / direct) < 0.01


def test_bench_step_refuses_a_single_step():
    done = subprocess.run([sys.executable, str(SCRIPT), "--steps", "1"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--steps must be >= 2" in done.stderr
