"""final_metric, curves and the ablation table against hand-computed means, t-intervals and deltas."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from dapo_lab.analysis import ablation_table, curves, default_metric, final_metric, format_ablation, to_markdown

T975 = {1: 12.706204736174698, 2: 4.302652729749464}  # Student t 0.975 quantiles (scipy.stats.t.ppf)


def tidy(rows: list[tuple[str, str, int, int, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["run", "experiment", "seed", "step", "metric", "value"])


def finals(experiment: str, values: list[float], first_run: int) -> list[tuple]:
    """Each seed logs a decoy at step 0 and its final value at step 5 (seed i at run first_run + i)."""
    out = []
    for i, value in enumerate(values):
        run = f"r{first_run + i}"
        out += [(run, experiment, i + 1, 0, "eval/avg@4", 0.9), (run, experiment, i + 1, 5, "eval/avg@4", value),
                (run, experiment, i + 1, 5, "train/entropy", 2.0)]
    return out


@pytest.fixture
def runs() -> pd.DataFrame:
    return tidy(finals("ablation/3_soft_overlong_only", [0.40, 0.40, 0.46], 10)  # listed first: order is ORDER's
                + finals("ablation/0_grpo", [0.30, 0.32, 0.34], 0)
                + finals("ablation/1_overlong_filter", [0.36], 3)
                + finals("ablation/2_clip_higher", [0.40, 0.44], 4)
                + finals("dapo", [0.5], 20))


def test_ablation_table_matches_hand_computed_mean_ci_and_deltas(runs):
    table = ablation_table(runs, "eval/avg@4")
    assert table["experiment"].tolist() == ["ablation/0_grpo", "ablation/1_overlong_filter",
                                            "ablation/2_clip_higher", "ablation/3_soft_overlong_only"]
    assert table["n"].tolist() == [3, 1, 2, 3]
    # percent, like the paper: means 32, 36, 42, 42
    assert table["mean"].tolist() == pytest.approx([32.0, 36.0, 42.0, 42.0])
    # half-width t(0.975, n-1) * sd / sqrt(n): sd 2 (n=3); none (n=1); sd 2*sqrt(2) (n=2); sd sqrt(12) (n=3)
    expected_ci = [T975[2] * 2 / math.sqrt(3), math.nan, T975[1] * 2, T975[2] * math.sqrt(12) / math.sqrt(3)]
    assert table["ci"].tolist() == pytest.approx(expected_ci, rel=1e-9, nan_ok=True)
    # each row against the row it builds on; the soft-only variant branches off clip-higher, not row 3
    assert pd.isna(table["vs"][0])
    assert table["vs"].tolist()[1:] == ["ablation/0_grpo", "ablation/1_overlong_filter", "ablation/2_clip_higher"]
    assert table["delta"].tolist() == pytest.approx([math.nan, 4.0, 6.0, 0.0], nan_ok=True)
    assert table["paper"].tolist() == pytest.approx([30, 36, 38, math.nan], nan_ok=True)
    assert table["paper_delta"].tolist() == pytest.approx([math.nan, 6, 2, math.nan], nan_ok=True)
    assert table.attrs == {"metric": "eval/avg@4", "how": "last", "scale": 100.0, "level": 0.95}


def test_ablation_table_all_rows_scale_and_how(runs):
    table = ablation_table(runs, "eval/avg@4", rows=None, how="max")
    assert table["experiment"].tolist()[-1] == "dapo" and table["vs"].tolist()[-1] == "ablation/3_soft_overlong_only"
    assert table["mean"].tolist()[0] == pytest.approx(90.0)  # the step-0 decoy is every run's max
    entropy = ablation_table(runs, "train/entropy", paper={})
    assert entropy["mean"].tolist() == pytest.approx([2.0] * 4) and entropy["paper"].isna().all()


def test_ablation_table_warns_on_pooled_duplicate_seeds(runs):
    doubled = pd.concat([runs, runs.assign(run=runs["run"] + "_again")])
    with pytest.warns(UserWarning, match="several runs with the same seed"):
        ablation_table(doubled, "eval/avg@4")


def test_format_ablation_and_markdown(runs):
    table = ablation_table(runs, "eval/avg@4")
    text = format_ablation(table)
    assert text.columns.tolist() == ["configuration", "eval/avg@4 (%), mean ± 95% CI", "seeds", "Δ", "paper",
                                     "paper Δ"]
    assert text.iloc[:, 1].tolist() == ["32.0 ± 5.0", "36.0", "42.0 ± 25.4", "42.0 ± 8.6"]
    assert text["Δ"].tolist() == ["", "+4.0", "+6.0", "+0.0"]
    assert text["paper"].tolist() == ["30", "36", "38", ""]
    md = to_markdown(text).splitlines()
    assert md[0].startswith("| configuration | eval/avg@4 (%), mean ± 95% CI | seeds |")
    assert md[1] == "|:--|--:|--:|--:|--:|--:|"  # numbers right-aligned, also when formatted as text
    assert md[2] == "| Naive GRPO | 32.0 ± 5.0 | 3 |  | 30 |  |"


def test_final_metric_picks_the_last_logged_step_per_run(runs):
    last = final_metric(runs, "eval/avg@4")
    assert len(last) == runs["run"].nunique() and set(last["step"]) == {5}
    first = final_metric(runs, "eval/avg@4", how="first")
    assert set(first["value"]) == {0.9}
    assert final_metric(runs, "eval/avg@4", how="min").set_index("run").loc["r0", "value"] == 0.30
    with pytest.raises(KeyError, match="'eval/nope' is not in the runs; present: .*'eval/avg@4'"):
        final_metric(runs, "eval/nope")
    with pytest.raises(ValueError, match="how must be one of"):
        final_metric(runs, "eval/avg@4", how="median")


def test_curves_mean_and_band_per_configuration_and_step():
    df = tidy([("a", "x", 1, 1, "m", 1.0), ("b", "x", 2, 1, "m", 3.0), ("a", "x", 1, 2, "m", 5.0),
               ("c", None, 1, 1, "m", 7.0)])
    c = curves(df, "m")
    assert c.columns.tolist() == ["experiment", "step", "mean", "ci", "lo", "hi", "n"]
    assert c[["experiment", "step", "mean", "n"]].values.tolist() == [["none", 1, 7.0, 1], ["x", 1, 2.0, 2],
                                                                      ["x", 2, 5.0, 1]]
    half = T975[1] * math.sqrt(2) / math.sqrt(2)
    assert c["ci"].tolist() == pytest.approx([math.nan, half, math.nan], nan_ok=True)
    assert c["lo"].tolist()[1] == pytest.approx(2.0 - half) and c["hi"].tolist()[1] == pytest.approx(2.0 + half)
    with pytest.raises(KeyError, match="no column"):
        curves(df, "m", by="clip")


def test_default_metric():
    assert default_metric(tidy([("a", "x", 1, 0, "eval/pass@8", 1.0), ("a", "x", 1, 0, "eval/avg@8", 1.0)])) == \
        "eval/avg@8"
    with pytest.raises(ValueError, match="no eval/avg@k metric"):
        default_metric(tidy([("a", "x", 1, 0, "train/acc", 1.0)]))
