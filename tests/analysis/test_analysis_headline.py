"""The headline (DAPO's cost to reach naive GRPO's final accuracy) against values worked out by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from dapo_lab.analysis import load_runs
from dapo_lab.analysis.headline import headline, main, summary


def metrics(evals: dict[int, float], tokens: float, seconds: float, steps: int) -> dict[int, dict[str, float]]:
    """Evaluations at the given steps; every step 1..steps generates ``tokens`` and trains for ``seconds``."""
    out: dict[int, dict[str, float]] = {s: {"eval/avg@4": v} for s, v in evals.items()}
    for step in range(1, steps + 1):
        out.setdefault(step, {}).update({"rollout/tokens": tokens, "time/step": seconds})
    return out


@pytest.fixture
def runs(tmp_path: Path, make_run) -> Path:
    root = tmp_path / "headline"
    # seed 1: GRPO ends at 0.50 (its dip to 0.40 is not the target); DAPO reaches 0.50 exactly at step 10.
    make_run(root / "grpo1", "grpo", 1, metrics({0: 0.47, 10: 0.40, 20: 0.50}, tokens=100, seconds=3.0, steps=20))
    make_run(root / "dapo1", "dapo", 1, metrics({0: 0.47, 10: 0.50, 20: 0.60}, tokens=250, seconds=2.4, steps=20))
    # seed 2: DAPO never reaches GRPO's 0.55.
    make_run(root / "grpo2", "grpo", 2, metrics({0: 0.47, 10: 0.50, 20: 0.55}, tokens=100, seconds=3.0, steps=20))
    make_run(root / "dapo2", "dapo", 2, metrics({0: 0.47, 10: 0.52, 20: 0.54}, tokens=250, seconds=2.4, steps=20))
    # seed 3: DAPO only (its GRPO run is missing): left out.
    make_run(root / "dapo3", "dapo", 3, metrics({0: 0.47, 20: 0.60}, tokens=250, seconds=2.4, steps=20))
    # seed 4: reached at step 20 of 20.
    make_run(root / "grpo4", "grpo", 4, metrics({0: 0.47, 10: 0.45, 20: 0.52}, tokens=100, seconds=3.0, steps=20))
    make_run(root / "dapo4", "dapo", 4, metrics({0: 0.47, 10: 0.51, 20: 0.53}, tokens=200, seconds=2.0, steps=20))
    return root


def test_per_seed_costs_match_hand_computed_values(runs: Path) -> None:
    table = headline(load_runs(runs)).set_index("seed")
    assert list(table.index) == [1, 2, 4]
    one = table.loc[1]
    assert one["target"] == 0.50 and one["step"] == 10 and one["reached"]
    assert one["step_frac"] == pytest.approx(10 / 20)
    assert one["token_frac"] == pytest.approx(10 * 250 / (20 * 100))   # 1.25: more tokens per step
    assert one["time_frac"] == pytest.approx(10 * 2.4 / (20 * 3.0))    # 0.40
    two = table.loc[2]
    assert not two["reached"] and math.isnan(two["step"]) and math.isnan(two["token_frac"])
    assert two["method_final"] == 0.54
    four = table.loc[4]
    assert four["step_frac"] == 1.0 and four["token_frac"] == pytest.approx(2.0)


def test_summary_averages_the_seeds_that_reached_the_target(runs: Path) -> None:
    rows = summary(headline(load_runs(runs))).set_index("cost")
    steps = rows.loc["steps"]
    assert steps["reached"] == "2/3" and steps["n"] == 2
    assert steps["mean"] == pytest.approx(0.75)
    # t(0.975, 1) * std([0.5, 1.0]) / sqrt(2) = 12.7062 * 0.35355 / 1.41421
    assert steps["ci95"] == pytest.approx(12.7062047 * 0.5 / 2 ** 0.5 / 2 ** 0.5, rel=1e-6)
    assert rows.loc["training seconds", "mean"] == pytest.approx((0.4 + 40 / 60) / 2)


def test_no_pair_is_one_clear_error(tmp_path: Path, make_run) -> None:
    make_run(tmp_path / "r" / "dapo1", "dapo", 1, metrics({0: 0.4, 10: 0.5}, tokens=1, seconds=1, steps=10))
    with pytest.raises(ValueError, match="no seed has both a experiment=dapo and a experiment=grpo run"):
        headline(load_runs(tmp_path / "r"))


def test_command_line_prints_both_tables(runs: Path, capsys) -> None:
    assert main([str(runs)]) == 0
    out = capsys.readouterr().out
    assert "| seed |" in out and "| steps |" in out and "2/3" in out


def test_command_line_writes_the_report_and_figures(runs: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("matplotlib")
    assert main([str(runs), "--out", str(tmp_path / "out")]) == 0
    assert "2/3" in (tmp_path / "out" / "headline.md").read_text()
    assert (tmp_path / "out" / "accuracy.png").stat().st_size > 1000


def test_command_line_names_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "nope")])
    assert exit_info.value.code == 2
