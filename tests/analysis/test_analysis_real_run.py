"""End to end on a REAL tiny multirun: ``train.py -m debug=tiny`` → load_runs → both notebooks → table + PNGs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import built_once

from dapo_lab.analysis import load_runs

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "conf" / "debug" / "tiny.yaml"

# ~35 s on a loaded 2-core CPU (one process runs the 4 jobs), so not marked slow
pytestmark = pytest.mark.skipif(not TINY.is_file(), reason="needs conf/debug/tiny.yaml (a seconds-long CPU run)")


@pytest.fixture(scope="module")
def real_multirun(tmp_path_factory) -> Path:
    def make(tmp: Path) -> Path:
        sweep = tmp / "multirun"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
        proc = subprocess.run([sys.executable, "train.py", "-m", "debug=tiny",
                               "experiment=ablation/0_grpo,ablation/2_clip_higher", "seed=1,2",
                               f"hydra.sweep.dir={sweep}"], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        return sweep

    return built_once(tmp_path_factory, "real_multirun", make)


def test_real_multirun_loads_into_the_tidy_table(real_multirun):
    df = load_runs(real_multirun)
    runs = df.groupby("run")[["experiment", "clip", "seed"]].first()
    assert len(runs) == 4
    assert sorted(map(tuple, runs.values.tolist())) == [("ablation/0_grpo", "symmetric", 1),
                                                        ("ablation/0_grpo", "symmetric", 2),
                                                        ("ablation/2_clip_higher", "higher", 1),
                                                        ("ablation/2_clip_higher", "higher", 2)]
    assert set(df["debug"]) == {"tiny"}
    evals = df[df["metric"].str.fullmatch(r"eval/avg@\d+")]
    assert not evals.empty and set(evals.groupby("run")["step"].min()) == {0}  # the starting policy is step 0
    assert "train/entropy" in set(df["metric"]) and df["step"].max() >= 1


@pytest.mark.parametrize("name,expected", [
    ("entropy", {"entropy.png", "clipping.png"}),
    ("accuracy", {"ablation_table.md", "ablation_table.csv", "accuracy.png", "response_length.png", "reward.png",
                  "mechanisms.png"}),
])
def test_notebooks_on_a_real_multirun(name, expected, real_multirun, kernel, tmp_path):
    from dapo_lab.analysis.notebooks import execute_notebook

    out = tmp_path / "out"
    execute_notebook(REPO / "analysis" / f"{name}.ipynb", {"runs_dir": str(real_multirun), "out_dir": str(out)},
                     kernel_name=kernel, timeout=300)
    assert {p.name for p in out.iterdir()} == expected
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in out.glob("*.png"))
    if name == "accuracy":
        assert "| Naive GRPO |" in (out / "ablation_table.md").read_text()
