"""The mechanism table against values worked out by hand from fake ablation runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from dapo_lab.analysis import load_runs
from dapo_lab.analysis.mechanisms import EVIDENCE, Evidence, column, main, mechanism_table, run_values

ROW0, ROW1 = "ablation/0_grpo", "ablation/1_overlong_filter"


def metrics(truncated: list[float], filtered: list[float], entropy: list[float]) -> dict[int, dict[str, float]]:
    """Steps 1..n with these rollout truncation rates, filtered fractions and entropies."""
    return {step: {"rollout/truncated_frac": t, "overlong/filtered_frac": f, "train/entropy": h}
            for step, (t, f, h) in enumerate(zip(truncated, filtered, entropy), start=1)}


@pytest.fixture
def runs(tmp_path: Path, make_run) -> Path:
    root = tmp_path / "ablation"
    # Row 0 keeps every truncated response in the loss; row 1 filters them all out.
    for seed, t in [(1, 0.10), (2, 0.20), (3, 0.30)]:
        make_run(root / f"r0s{seed}", ROW0, seed, metrics([t, t + 0.1], [0.0, 0.0], [1.0, 2.0 + seed]))
        make_run(root / f"r1s{seed}", ROW1, seed, metrics([t, t], [t, t], [1.0, 2.5 + seed]))
    make_run(root / "r1s4", ROW1, 4, metrics([0.5, 0.5], [0.5, 0.5], [1.0, 1.0]))  # no base run: not paired
    return root


def test_truncated_share_of_the_loss_and_its_paired_difference(runs: Path) -> None:
    evidence = Evidence("Overlong filtering", ROW1, ROW0, "truncated in loss (%)", EVIDENCE[0].per_step, "mean", -1,
                        100.0)
    values = run_values(load_runs(runs), evidence)
    # Row 0, seed 1: truncated 0.10 and 0.20 at its two steps, none filtered: mean 0.15 -> 15%. Row 1: all filtered.
    assert values[(ROW0, 1)] == pytest.approx(15.0) and values[(ROW0, 3)] == pytest.approx(35.0)
    assert values[(ROW1, 2)] == pytest.approx(0.0) and values[(ROW1, 4)] == pytest.approx(0.0)
    table = mechanism_table(load_runs(runs), [evidence]).iloc[0]
    # Paired over seeds 1-3: differences -15, -25, -35: mean -25, std 10, t(0.975, 2) = 4.3027 -> 10 * 4.3027 / sqrt 3.
    assert table["n"] == 3 and table["delta"] == pytest.approx(-25.0)
    assert table["delta_ci"] == pytest.approx(4.302653 * 10 / math.sqrt(3), rel=1e-5)
    assert table["verdict"] == "yes"  # down, as the paper expects, and the interval excludes 0
    assert table["row_mean"] == pytest.approx(0.0) and math.isnan(table["row_ci"]) is False


def test_late_means_use_the_second_half_and_an_interval_across_zero_is_unresolved(runs: Path) -> None:
    evidence = Evidence("Clip-Higher", ROW1, ROW0, "entropy", column("train/entropy"), "late", 1)
    table = mechanism_table(load_runs(runs), [evidence]).iloc[0]
    # Second half = step 2 only: row 1 is 0.5 above row 0 in every paired seed: zero spread, a certain +0.5.
    assert table["delta"] == pytest.approx(0.5) and table["delta_ci"] == pytest.approx(0.0)
    assert table["verdict"] == "yes"
    flipped = mechanism_table(load_runs(runs), [Evidence("x", ROW1, ROW0, "entropy", column("train/entropy"),
                                                         "mean", -1)]).iloc[0]
    assert flipped["delta"] == pytest.approx(0.25) and flipped["verdict"] == "opposite"


def test_rows_that_did_not_run_are_left_out(runs: Path) -> None:
    table = mechanism_table(load_runs(runs))
    assert set(table["row"]) == {ROW1} and set(table["base"]) == {ROW0}


def test_command_line_writes_the_table(runs: Path, tmp_path: Path, capsys) -> None:
    assert main([str(runs), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "mechanisms.md").read_text()
    assert "Overlong filtering" in text and "-25.00 ±" in text and text.strip() in capsys.readouterr().out


def test_a_run_that_stopped_early_is_left_out(runs: Path, make_run) -> None:
    # seed 5 of row 0 stopped after 1 of 2 steps: its "last" would be an earlier value; without it seed 5 is unpaired
    make_run(runs / "r0s5", ROW0, 5, metrics([0.9], [0.0], [9.0]))
    make_run(runs / "r1s5", ROW1, 5, metrics([0.1, 0.1], [0.1, 0.1], [1.0, 1.0]))
    values = run_values(load_runs(runs), EVIDENCE[0])
    assert (ROW0, 5) not in values.index and (ROW1, 5) in values.index
    assert mechanism_table(load_runs(runs), [EVIDENCE[0]]).iloc[0]["n"] == 3
