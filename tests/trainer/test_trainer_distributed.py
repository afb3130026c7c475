"""Two CPU ranks (gloo) under each data-parallel strategy: exactly the single-process union-batch run, identical
update counts on both ranks, collectives that line up, and a SIGKILLed run that resumes like an uninterrupted one.

Every multi-process run goes through ``helpers.run_bounded``: its own session, a wall-clock bound, and SIGKILL for
the whole process group when the bound is hit (a hung gloo collective ignores SIGTERM), so a hang fails the test
instead of stalling CI.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pandas as pd
import pytest
from dist_check import reference
from helpers import run_bounded, worker_port

SCRIPT = Path(__file__).with_name("dist_check.py")
PORTS = iter(range(29700, 29800))


DEEPSPEED = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None,
    reason="deepspeed not installed (DS_BUILD_OPS=0 pip install --no-build-isolation deepspeed)")


def run(out: Path, *args: str, timeout: int = 240, debug: bool = False, expect_kill: bool = False) -> str:
    # DeepSpeed JIT-builds a CPU helper on first use (~25 s): one build for the whole suite.
    extensions = os.environ.get("TORCH_EXTENSIONS_DIR", str(Path(os.environ.get("DAPO_CACHE", out)) / "torch_ext"))
    env = {"MASTER_PORT": str(worker_port(next(PORTS))), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
           "HOME": str(out), "HF_HUB_OFFLINE": "1", "TORCH_EXTENSIONS_DIR": extensions,
           **({"TORCH_DISTRIBUTED_DEBUG": "DETAIL"} if debug else {})}
    return run_bounded([sys.executable, str(SCRIPT), *args], out, env, timeout, expect_kill)


@pytest.mark.parametrize("trainer, budget, debug, compiled", [
    ("cpu_ddp", None, False, False),
    ("cpu_fsdp", 100, True, True),  # FSDP: token-budget passes, collectives checked (DETAIL), compiled layers
    pytest.param("cpu_deepspeed_zero2", None, False, False, marks=DEEPSPEED),
    pytest.param("cpu_deepspeed_zero3", None, False, False, marks=DEEPSPEED)],
    ids=["cpu_ddp", "cpu_fsdp-token_budget-detail-compiled", "cpu_deepspeed_zero2", "cpu_deepspeed_zero3"])
def test_two_ranks_train_exactly_like_one_process_on_the_union_batch(tmp_path, trainer, budget, debug, compiled):
    extra = ["--budget", str(budget)] if budget else []
    # model.compile under FSDP2: its hooks gather each layer's parameters around the compiled forward (dist_check's
    # counting backend: dynamo's capture, run as traced, counted); the reference stays eager.
    extra += ["--set", "model.compile=counting_dynamo"] if compiled else []
    run(tmp_path, "train", trainer, str(tmp_path), "3", *extra, debug=debug)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    if compiled:  # every rank ran its layers compiled, never falling back to eager at dynamo's recompile limit
        import torch._dynamo

        limit = torch._dynamo.config.recompile_limit
        assert all(r["compiled"]["calls"] > 0 and 0 < r["compiled"]["graphs"] < limit for r in ranks), ranks
    # Both ranks made the same updates; each held 4 of the 8 groups every step, although in step 2 rank 0's own
    # rounds kept none (the deal moved groups to it), and passes were padded with dummies where ranks differed.
    assert ranks[0]["global_step"] == ranks[1]["global_step"] == 3
    assert [c["actor/num_updates"] for c in ranks[0]["counts"]] == [c["actor/num_updates"] for c in ranks[1]["counts"]]
    assert all(c["sampling/rank_groups"] == 4 and c["sampling/batch_groups"] == 8 for r in ranks for c in r["counts"])
    assert sum(c["actor/dummy_passes"] for r in ranks for c in r["counts"]) > 0
    if trainer == "cpu_deepspeed_zero3":  # ZeRO-3's module hooks are off in every generation call, back on after
        hooks = [n for r in ranks for n in r["hooks"]]
        assert {n for where, n in hooks if where == "inside"} == {0}, hooks
        outside = {n for where, n in hooks if where == "outside"}
        assert len(outside) == 1 and outside.pop() > 0, hooks  # the same hooks restored after every call
    for perturb in (False, True):  # the reference and its control, here: they need no process group
        reference(tmp_path, 3, budget, perturb)
    exact = json.loads((tmp_path / "reference.json").read_text())
    control = json.loads((tmp_path / "perturbed.json").read_text())
    assert exact["steps"] == 3 and exact["movement"] > 1.0  # training moved the weights
    assert exact["gap_over_movement"] < 1e-4, exact  # float-rounding apart (fp32; measured 7.5e-6)
    assert control["gap_over_movement"] > 0.1, control  # another mini-batch order is far apart: the check can fail


@pytest.mark.parametrize("trainer", ["cpu_ddp", "cpu_fsdp"])
def test_run_killed_after_step_2_resumes_like_an_uninterrupted_one(tmp_path, trainer):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    straight.mkdir(), killed.mkdir()
    run(straight, "train", trainer, str(straight), "4", "--parity")
    run(killed, "train", trainer, str(killed), "4", "--parity", "--kill-at", "2", expect_kill=True)
    saved = killed / "checkpoints" / "step-000002.ckpt"
    if trainer == "cpu_fsdp":  # a sharded checkpoint: one file per rank
        assert {"__0_0.distcp", "__1_0.distcp", "meta.pt"} <= {p.name for p in saved.iterdir()}
    else:
        assert saved.is_file()
    assert not (killed / "checkpoints" / "step-000003.ckpt").exists()
    run(killed, "train", trainer, str(killed), "4", "--parity", "--resume")
    a = pd.read_csv(straight / "csv" / "metrics.csv").groupby("step").first()
    b = pd.read_csv(killed / "csv" / "metrics.csv").groupby("step").first()
    # The killed run's rows of steps 1-2 stay in metrics.csv; the resumed run adds 3-4, equal to the straight run's.
    assert list(b.dropna(subset=["actor/num_updates"]).index) == [1, 2, 3, 4]
    for col in ["rollout/acc", "rollout/tokens", "train/entropy", "actor/pg_loss", "actor/grad_norm",
                "sampling/num_gen_batches"]:
        assert b.loc[[1, 2, 3, 4], col].tolist() == pytest.approx(a.loc[[1, 2, 3, 4], col].tolist(), rel=1e-5), col
