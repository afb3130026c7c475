"""experiments/update_breakdown.py prints where the update's time goes against its ceiling, on one real batch."""

import os
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "update_breakdown.py"


def test_update_breakdown_prints_both_tables(tmp_path):
    env = {**os.environ, "DAPO_CACHE": str(tmp_path / "cache")}
    # sampling=none: the untrained debug model answers nothing right, so dynamic sampling would keep no group.
    command = [sys.executable, str(SCRIPT), "--rounds", "1", "--budgets", "400,100000", "debug=tiny",
               "sampling=none"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    kinds = dict(re.findall(r"^\| ([a-z][^|]+?) \| ([\d.]+ \| [\d.]+) \|$", done.stdout, flags=re.M))
    assert set(kinds) == {"update, with entropy", "update, no entropy", "body, padded rows", "body, mean-length rows",
                          "ceiling pass, the update's passes", "ceiling, one pass per update"}
    assert all(float(x) > 0 for pair in kinds.values() for x in pair.split(" | "))
    budgets = {int(b): (int(n), float(p), float(s), float(f)) for b, n, p, s, f in re.findall(
        r"^\| (\d+) \| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", done.stdout, flags=re.M)}
    line = re.search(r"^\| ceiling \(no padding, (\d+) passes\) \| \1 \| 1\.000 \| ([\d.]+) \| 1\.00 \|$",
                     done.stdout, flags=re.M)
    updates, ceiling = int(line.group(1)), float(line.group(2))
    # A budget larger than any mini-batch: one pass per update, the most padding; a small one: more passes, less.
    (small_passes, small_pad, _, _), (big_passes, big_pad, _, _) = budgets[400], budgets[100000]
    assert small_passes > big_passes == updates and 1.0 <= small_pad <= big_pad
    for _, _, seconds, fraction in budgets.values():  # each fraction is the ceiling's median over the budget's
        assert abs(fraction - ceiling / seconds) <= 0.005 + 0.0005 * (ceiling + 1) / seconds ** 2
