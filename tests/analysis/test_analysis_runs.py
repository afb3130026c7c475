"""load_runs: Hydra run directories → one exact tidy frame; config from Hydra's saved files, not folder names."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pandas as pd
import pytest

from dapo_lab.analysis import MissingMetricsWarning, find_run_dirs, load_runs, load_wandb_offline, read_metrics_csv

GROUPS = ["model", "data", "reward", "rollout", "clip", "loss", "advantage", "kl", "overlong", "sampling",
          "trainer", "logger", "experiment", "debug"]


def expected_row(run: str, experiment: str, clip: str, loss: str, overlong: str, seed: int, step: int,
                 metric: str, value: float) -> dict:
    choices = {"model": "tiny", "data": "tiny_task", "reward": "dapo_math", "rollout": "hf", "clip": clip,
               "loss": loss, "advantage": "grpo", "kl": "none", "overlong": overlong, "sampling": "none",
               "trainer": "cpu", "logger": "csv", "experiment": experiment, "debug": None}
    return {"run": run, **choices, "seed": seed, "step": step, "metric": metric, "value": value}


def test_load_runs_exact_tidy_frame_with_config_from_hydra_files(tmp_path, make_run):
    root = tmp_path / "sweep"
    # Folder names lie on purpose: the loader must read .hydra/, never parse these.
    make_run(root / "experiment=ablation" / "5_dapo,seed=3", "ablation/0_grpo", 1,
             {0: {"eval/avg@4": 0.25}, 1: {"train/entropy": 0.75, "train/acc": 0.5}, 2: {"eval/avg@4": 0.5}})
    make_run(root / "clip=symmetric,seed=9", "ablation/2_clip_higher", 2,
             {0: {"eval/avg@4": 0.125}, 1: {"train/entropy": 1.5}})
    df = load_runs(root)

    a, b = "experiment=ablation/5_dapo,seed=3", "clip=symmetric,seed=9"
    g0 = {"experiment": "ablation/0_grpo", "clip": "symmetric", "loss": "sample", "overlong": "none", "seed": 1}
    g2 = {"experiment": "ablation/2_clip_higher", "clip": "higher", "loss": "sample", "overlong": "filter",
          "seed": 2}
    expected = pd.DataFrame([
        expected_row(b, **g2, step=0, metric="eval/avg@4", value=0.125),
        expected_row(b, **g2, step=1, metric="train/entropy", value=1.5),
        expected_row(a, **g0, step=0, metric="eval/avg@4", value=0.25),
        expected_row(a, **g0, step=1, metric="train/acc", value=0.5),
        expected_row(a, **g0, step=1, metric="train/entropy", value=0.75),
        expected_row(a, **g0, step=2, metric="eval/avg@4", value=0.5),
    ]).astype({"seed": "Int64", "step": "int64", "value": "float64"})
    assert list(df.columns) == ["run", *GROUPS, "seed", "step", "metric", "value"]
    assert df["seed"].dtype == "Int64" and df["step"].dtype == "int64" and df["value"].dtype == "float64"
    pd.testing.assert_frame_equal(df.astype(object), expected.astype(object))
    assert not any(c.startswith("hydra/") for c in df.columns)  # Hydra's own groups are not config columns


def test_single_run_dir_and_a_parent_of_several_multiruns(tmp_path, make_run):
    one = make_run(tmp_path / "mr_a" / "0", "ablation/0_grpo", 1, {0: {"eval/avg@4": 0.5}})
    make_run(tmp_path / "mr_b" / "0", "ablation/0_grpo", 2, {0: {"eval/avg@4": 0.75}})
    single = load_runs(one)
    assert single["run"].tolist() == ["0"] and single["value"].tolist() == [0.5]
    both = load_runs(tmp_path)
    assert both["run"].tolist() == ["mr_a/0", "mr_b/0"] and both["seed"].tolist() == [1, 2]
    assert find_run_dirs(tmp_path) == [tmp_path / "mr_a" / "0", tmp_path / "mr_b" / "0"]


def test_metrics_csv_found_anywhere_under_the_run_dir_and_versions_merged(tmp_path, make_run):
    run = make_run(tmp_path / "0", "ablation/0_grpo", 1, None)
    for version, frame in enumerate([
        pd.DataFrame({"step": [0, 1], "eval/avg@4": [0.25, math.nan], "train/acc": [math.nan, 0.5]}),
        pd.DataFrame({"step": [1, 2], "train/acc": [0.625, 0.75]}),
    ]):
        (run / "logs" / f"version_{version}").mkdir(parents=True)
        frame.to_csv(run / "logs" / f"version_{version}" / "metrics.csv", index=False)
    df = load_runs(tmp_path)
    # one value per run x step x metric: the later file wins where both logged a step (a resumed run)
    assert list(zip(df["step"], df["metric"], df["value"])) == [
        (0, "eval/avg@4", 0.25), (1, "train/acc", 0.625), (2, "train/acc", 0.75)]


def test_run_without_metrics_is_skipped_with_a_warning_naming_it(fake_multirun):
    with pytest.warns(MissingMetricsWarning, match=r"skipping run 4 \(.*/4\): no metrics.csv"):
        df = load_runs(fake_multirun)
    assert sorted(df["run"].unique()) == ["0", "1", "2", "3"]
    assert "ablation/5_dapo" not in set(df["experiment"])


def test_all_runs_without_metrics_give_an_empty_frame(tmp_path, make_run):
    make_run(tmp_path / "0", "ablation/0_grpo", 1, None)
    with pytest.warns(MissingMetricsWarning):
        df = load_runs(tmp_path)
    assert df.empty and {"run", "seed", "step", "metric", "value"} <= set(df.columns)


@pytest.mark.parametrize("text,reason", [
    ("step,eval/avg@4\n0,0.5\n1,0.5,0.7,0.1\n", "Expected 2 fields"),
    ("step,eval/avg@4\n0,0.5\n1,abc\n", "non-numeric"),
    ("epoch,eval/avg@4\n0,0.5\n", "no 'step' column"),
    ("step,eval/avg@4\n0,0.5\n,0.25\n", "missing or non-integer step"),
])
def test_malformed_csv_raises_one_clear_error_naming_the_file(tmp_path, make_run, text, reason):
    run = make_run(tmp_path / "run", "ablation/0_grpo", 1, None)
    (run / "csv").mkdir()
    (run / "csv" / "metrics.csv").write_text(text)
    with pytest.raises(ValueError, match=rf"malformed metrics CSV .*run/csv/metrics\.csv.*{reason}"):
        load_runs(tmp_path)


def test_no_run_dir_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="no Hydra run directory"):
        load_runs(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_runs(tmp_path / "absent")


def test_read_metrics_csv_melts_sparse_rows(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,eval/avg@4,step,train/entropy\n0,0.25,0,\n0,,1,1.5\n0,0.5,1,\n")
    long = read_metrics_csv(path)
    assert long.to_dict("list") == {"step": [0, 1, 1], "metric": ["eval/avg@4", "eval/avg@4", "train/entropy"],
                                    "value": [0.25, 0.5, 1.5]}
    path.write_text("")
    assert read_metrics_csv(path).empty


# ---------------------------------------------------------------- W&B offline runs
def _log_offline(directory: Path, rows: list[dict], config: dict) -> Path:
    wandb = pytest.importorskip("wandb")
    run = wandb.init(project="dapo-lab-test", dir=str(directory), mode="offline", config=config,
                     settings=wandb.Settings(silent=True, console="off", x_disable_stats=True))
    for row in rows:
        run.log(row)
    run.finish()
    wandb.teardown()  # finish() can return before W&B's core process has flushed the log
    (found,) = directory.glob("wandb/offline-run-*/run-*.wandb")
    return found


ROWS = [  # what Lightning's WandbLogger logs: each row carries trainer/global_step
    {"eval/avg@4": 0.25, "trainer/global_step": 0},
    {"train/entropy": 1.5, "train/acc": 0.5, "note": "text", "trainer/global_step": 1},
    {"eval/avg@4": 0.5, "trainer/global_step": 2},
]


def test_wandb_offline_run_inside_a_hydra_run_dir_reads_like_the_csv(tmp_path, make_run):
    run = make_run(tmp_path / "mr" / "0", "ablation/2_clip_higher", 3, None, {"logger": "wandb"})
    _log_offline(run, ROWS, {"seed": 99})
    for df in (load_wandb_offline(tmp_path / "mr"), load_runs(tmp_path / "mr")):  # load_runs falls back to it
        assert set(df["run"]) == {"0"} and set(df["experiment"]) == {"ablation/2_clip_higher"}
        assert set(df["logger"]) == {"wandb"} and df["seed"].tolist() == [3] * 4  # Hydra's seed, not W&B's
        assert list(zip(df["step"], df["metric"], df["value"])) == [
            (0, "eval/avg@4", 0.25), (1, "train/acc", 0.5), (1, "train/entropy", 1.5), (2, "eval/avg@4", 0.5)]
    with pytest.warns(MissingMetricsWarning, match="no metrics.csv"):
        assert load_runs(tmp_path / "mr", source="csv").empty


def test_bare_wandb_offline_run_takes_its_config(tmp_path):
    _log_offline(tmp_path, ROWS[:1], {"seed": 4, "clip": "higher", "nested": {"a": 1}})
    df = load_wandb_offline(tmp_path)
    assert df["run"].iloc[0].startswith("wandb/offline-run-")
    assert df[["clip", "seed", "step", "metric", "value"]].values.tolist() == [["higher", 4, 0, "eval/avg@4", 0.25]]
    assert "nested" not in df.columns


def test_corrupt_and_truncated_wandb_logs(tmp_path):
    path = _log_offline(tmp_path, ROWS, {})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])  # a killed run: the tail is cut; what was written still loads
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingMetricsWarning)
        load_wandb_offline(tmp_path)
    corrupt = bytearray(data)
    corrupt[40] ^= 0xFF
    path.write_bytes(bytes(corrupt))
    with pytest.raises(ValueError, match=r"run-.*\.wandb: corrupt W&B transaction log \(checksum"):
        load_wandb_offline(tmp_path)
    path.write_bytes(b"")  # created, nothing flushed yet: no rows, not an error
    with pytest.warns(MissingMetricsWarning):
        assert load_wandb_offline(tmp_path).empty
    path.write_bytes(b"not a wandb file")
    with pytest.raises(ValueError, match="not a W&B transaction log"):
        load_wandb_offline(tmp_path)
