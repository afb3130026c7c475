"""The ablation-table CLI and the figures, on a fake multirun tree."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest

from dapo_lab.analysis import MissingMetricsWarning, load_runs
from dapo_lab.analysis.plots import FIGURES, figure, save_figures

REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def runs(fake_multirun) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingMetricsWarning)  # the fake sweep's crashed run
        return load_runs(fake_multirun)


def test_cli_writes_the_table_with_the_first_eval_avg_metric(fake_multirun, tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, str(REPO / "analysis" / "ablation_table.py"), str(fake_multirun),
                           "--out", str(out), "--figures"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "skipping run 4" in proc.stderr and "not in these runs: ablation/1_overlong_filter" in proc.stderr
    # final eval/avg@4 = 0.1 + row/10 + seed/100 + 2/1000 -> row 0: 11.7 ± t(.975,1)*0.707; row 2: 31.7
    assert "| Naive GRPO | 11.7 ± 6.4 | 2 |  | 30 |  |" in proc.stdout
    # row 1 did not run: row 2 is compared with row 0, here and in the paper's column
    assert "| + Clip-Higher | 31.7 ± 6.4 | 2 | +20.0 | 38 | +8 |" in proc.stdout
    assert (out / "ablation_table.md").read_text().startswith("| configuration | eval/avg@4 (%), mean ± 95% CI |")
    csv = pd.read_csv(out / "ablation_table.csv")
    assert csv["experiment"].tolist() == ["ablation/0_grpo", "ablation/2_clip_higher"]
    assert csv["mean"].tolist() == pytest.approx([11.7, 31.7])
    assert all((out / f"{name}.png").read_bytes().startswith(PNG_MAGIC) for name in FIGURES)


def test_cli_metric_option_and_default_out_dir(fake_multirun):
    proc = subprocess.run([sys.executable, str(REPO / "analysis" / "ablation_table.py"), str(fake_multirun),
                           "--metric", "eval/greedy_acc"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "eval/greedy_acc (%)" in proc.stdout and (fake_multirun / "ablation_table.csv").is_file()


def test_figures_one_line_per_configuration_with_a_seed_band(runs, tmp_path):
    fig = figure(runs, ["train/entropy", "eval/avg@4", "train/acc"])
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["train/entropy", "eval/avg@4", "train/acc"]
    for ax in axes:
        assert [line.get_label() for line in ax.lines] == ["Naive GRPO (n=2)", "+ Clip-Higher (n=2)"]
        assert len(ax.collections) == 2  # one shaded CI band per configuration
    entropy = axes[0].lines[0]
    assert list(entropy.get_xdata()) == [1, 2]  # logged from the first update on
    assert list(entropy.get_ydata()) == pytest.approx([0.5 + 0.015 + 0.001, 0.5 + 0.015 + 0.002])

    one_seed = runs[runs["seed"] == 1]
    assert len(figure(one_seed, ["train/entropy"]).axes[0].collections) == 0  # one seed: no band

    written = save_figures(runs, tmp_path)
    assert sorted(written) == sorted(FIGURES)
    assert all(p.read_bytes().startswith(PNG_MAGIC) and p.stat().st_size > 10_000 for p in written.values())
    only = save_figures(runs[runs["metric"] == "train/entropy"], tmp_path / "only")
    assert list(only) == ["entropy"]  # figures with none of their metrics are not drawn
