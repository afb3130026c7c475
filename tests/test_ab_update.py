"""experiments/ab_update.py times two row layouts of the update on one real batch and prints their table."""

import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "ab_update.py"


def run_table(tmp_path: Path, *args: str) -> tuple[str, dict[str, list[float]]]:
    """The script's output on the debug model, and its table: side -> [median s, tok/s, padded/real, of ceiling]."""
    env = {**os.environ, "DAPO_CACHE": str(tmp_path / "cache")}
    # sampling=none: the untrained debug model answers nothing right, so dynamic sampling would keep no group.
    command = [sys.executable, str(SCRIPT), "--pairs", "1", *args, "debug=tiny", "sampling=none"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, {m[0]: [float(x.replace(",", "")) for x in m[1:]] for m in re.findall(
        r"^\| ([^|]+?) \| ([\d.]+) \| ([\d,]+) \| ([\d.]+) \| ([\d.]+) \|$", done.stdout, flags=re.M)}


def test_ab_update_prints_both_sides_and_the_ceiling(tmp_path):
    stdout, rows = run_table(tmp_path, "--json", str(tmp_path / "ab.json"))
    assert set(rows) == {"A: left-padded", "B: prompt+response rows", "ceiling: no padding, eager"}
    # Each row computes at least its real tokens, and the new layout never more than the old one.
    assert 1.0 <= rows["B: prompt+response rows"][2] <= rows["A: left-padded"][2]
    speedup = float(re.search(r"B / A speed-up: ([\d.]+)x", stdout).group(1))
    # The printed speed-up is the ratio of the unrounded medians the JSON keeps (the table rounds them to 1 ms, which at
    # 66 ms alone moves a ratio by 1.5%), to the 3 printed decimals.
    seconds = json.loads((tmp_path / "ab.json").read_text())["seconds"]
    a, b = statistics.median(seconds["A"]), statistics.median(seconds["B"])
    assert abs(speedup - a / b) <= 0.0005 + 1e-9
    assert round(a, 3) == rows["A: left-padded"][0] and round(b, 3) == rows["B: prompt+response rows"][0]


def test_ab_update_compares_the_two_budget_cuts(tmp_path):
    _, rows = run_table(tmp_path, "--compare", "cut", "batch.max_tokens_per_micro_batch=300")
    assert set(rows) == {"A: passes filled", "B: fewest padded tokens", "ceiling: no padding, eager"}
    # The same passes count, never more padding (tests/trainer/test_trainer_balance.py proves it over every cut).
    assert 1.0 <= rows["B: fewest padded tokens"][2] <= rows["A: passes filled"][2]
