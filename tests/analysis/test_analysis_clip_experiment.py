"""Clip-Higher's focused experiment: settings read from the runs, the comparison per number of updates by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from dapo_lab.analysis import load_runs
from dapo_lab.analysis.clip_experiment import clip_table, main, with_settings


def metrics(updates: int, entropy: list[float], clipfrac: float) -> dict[int, dict[str, float]]:
    return {step: {"actor/num_updates": updates, "train/entropy": h, "actor/clipfrac_high": clipfrac,
                   "actor/clipfrac_high_lowprob": clipfrac / 2, "actor/clipprob_high": clipfrac * 0.1}
            for step, h in enumerate(entropy, start=1)}


@pytest.fixture
def runs(tmp_path: Path, make_run) -> Path:
    root = tmp_path / "clip_higher"
    for seed in (1, 2, 3):
        for clip, late in (("symmetric", 0.10), ("higher", 0.20 + seed / 100)):
            # 16 updates: entropy falls from 0.5 to `late`; at 1 update the two clips are the same run
            make_run(root / f"u16{clip}{seed}", None, seed, metrics(16, [0.5, 0.5, late, late], 0.02),
                     {"clip": clip})
            make_run(root / f"u1{clip}{seed}", None, seed, metrics(1, [0.5, 0.5, 0.4, 0.4], 0.0), {"clip": clip})
    return root


def test_settings_come_from_the_logged_updates_and_the_clip(runs: Path) -> None:
    settings = set(with_settings(load_runs(runs))["setting"])
    assert settings == {"16 updates/symmetric", "16 updates/higher", "1 updates/symmetric", "1 updates/higher"}


def test_entropy_effect_per_number_of_updates(runs: Path) -> None:
    table = clip_table(load_runs(runs)).set_index(["technique", "quantity"])
    entropy = "policy entropy, second half (nats/token)"
    at16 = table.loc[("Clip-Higher, 16 updates/step", entropy)]
    # second half = steps 3-4: higher 0.21/0.22/0.23 against 0.10: paired differences 0.11, 0.12, 0.13
    assert at16["delta"] == pytest.approx(0.12) and at16["n"] == 3 and at16["verdict"] == "yes"
    at1 = table.loc[("Clip-Higher, 1 update/step", entropy)]
    assert at1["delta"] == pytest.approx(0.0) and at1["verdict"] == "unresolved"
    lowprob = table.loc[("Clip-Higher, 16 updates/step", "up-clipped tokens with π_old < 0.2 (% of them)")]
    assert lowprob["row_mean"] == pytest.approx(50.0) and lowprob["base_mean"] == pytest.approx(50.0)


def test_command_line_writes_table_and_curves(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main([str(runs), "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"clip_higher.md", "clip_higher.csv", "clip_entropy.png",
                                               "clip_clip_fractions.png"}
