"""Two data-parallel ranks (gloo, CPU): exact global-count gradients and a Lightning DDP run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("ddp_check.py")


def run(mode: str, out: Path, port: int) -> None:
    env = {"DDP_CHECK_PORT": str(port), "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
           "PATH": "/usr/bin:/bin", "HOME": str(out), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), mode, str(out)], cwd=out, env=env, timeout=180,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_rank_gradients_sum_to_the_union_gradient(tmp_path):
    run("exact", tmp_path, 29533)
    result = json.loads((tmp_path / "exact.json").read_text())
    assert result["prompts_differ"]  # each rank trained on its own prompts
    assert result["tokens_per_rank"][0] != result["tokens_per_rank"][1]  # unequal token counts per rank
    assert result["max_rel_diff"] < 1e-4


def test_lightning_ddp_ranks_stay_identical(tmp_path):
    run("lightning", tmp_path, 29547)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["global_step"] == ranks[1]["global_step"] == 2
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-7)
