"""experiments/bench_eval.py evaluates a built run once per batch size and prints one table row each."""

import os
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "bench_eval.py"


def test_bench_eval_prints_a_row_per_batch_size(tmp_path):
    env = {**os.environ, "DAPO_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, str(SCRIPT), "--batch-prompts", "3", "8", "--max-prompts", "8", "debug=tiny"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "eval split: 8 prompts" in done.stdout
    rows = re.findall(r"^\| (\d+) \| ([\d.]+) \| ([\d,]+) \| ([\d.]+) \| ([\d.]+|nan) \|$", done.stdout, flags=re.M)
    assert [int(r[0]) for r in rows] == [3, 8]
    # Seconds to the millisecond: at 0.1 s a call, one decimal printed 0.0 on a fast machine (CI, 2026-12-02).
    assert all(float(r[1]) > 0 and float(r[2].replace(",", "")) > 0 and 0 <= float(r[3]) <= 1 for r in rows)
    assert rows[0][4] == rows[1][4]  # greedy decoding does not depend on how prompts are batched
