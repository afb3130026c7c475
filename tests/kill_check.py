"""Run ``dapo_lab.run.main`` on the tiny test config and SIGKILL itself at a chosen point; run by test_reliability.py.

    python kill_check.py RUN_DIR STEPS [PHASE STEP] [override ...]

PHASE is where the process kills itself during DAPO step STEP (1-based): ``generate`` (inside the rollout
engine's generate), ``update`` (before the step's second optimizer update, after its first), ``eval`` (during the
evaluation after the step), ``checkpoint`` (after the checkpoint is written under its temporary name, before the
rename), ``csv`` (after metrics.csv's temporary file is written, before the rename). Without PHASE the run
completes. The run directory is fixed and ``resume=auto``, so running the same command again continues from the
newest complete checkpoint.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "trainer"))
from helpers import PARITY, tiny_config  # noqa: E402

import dapo_lab.trainer.checkpoints as checkpoints  # noqa: E402
import dapo_lab.trainer.logs as logs  # noqa: E402
from dapo_lab.rollout.hf import HFEngine  # noqa: E402
from dapo_lab.run import main  # noqa: E402
from dapo_lab.trainer.evaluation import Evaluator  # noqa: E402
from dapo_lab.trainer.learner import DAPOLearner  # noqa: E402

STATE = {"step": 0}


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(phase: str, step: int) -> None:
    """Patch the chosen point to kill the process during DAPO step ``step``."""
    original_step = DAPOLearner.step

    def counting_step(self, index, optimization):
        STATE["step"] = index + 1
        return original_step(self, index, optimization)

    DAPOLearner.step = counting_step
    if phase == "generate":
        original = HFEngine.generate

        def generate(self, prompts, params):
            if STATE["step"] == step and params.temperature > 0 and params.n > 2:  # a training round, not an eval
                die()
            return original(self, prompts, params)

        HFEngine.generate = generate
    elif phase == "eval":
        original_eval = Evaluator.evaluate

        def evaluate(self, indices):
            if STATE["step"] == step:  # the evaluation after step `step`
                die()
            return original_eval(self, indices)

        Evaluator.evaluate = evaluate
    elif phase == "update":
        original_acc = DAPOLearner.accumulate_gradients
        calls = {"n": 0}

        def accumulate(self, batch, mini, *args, **kwargs):
            if STATE["step"] == step:
                calls["n"] += 1
                if calls["n"] == 2:  # the step's second update: the first one has already changed the weights
                    die()
            return original_acc(self, batch, mini, *args, **kwargs)

        DAPOLearner.accumulate_gradients = accumulate
    elif phase == "checkpoint":
        original_fsync = checkpoints._fsync_tree

        def fsync_then_die(path):
            original_fsync(path)
            if ".tmp-step" in path.name and STATE["step"] == step:
                die()

        checkpoints._fsync_tree = fsync_then_die
    elif phase == "csv":
        original_replace = os.replace

        def replace_or_die(src, dst):
            if str(src).endswith("metrics.csv.tmp") and STATE["step"] == step:
                die()
            return original_replace(src, dst)

        logs.os.replace = replace_or_die
    else:
        raise SystemExit(f"unknown phase {phase}")


if __name__ == "__main__":
    run_dir, steps, rest = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    if rest and "=" not in rest[0]:
        arm(rest[0], int(rest[1]))
        rest = rest[2:]
    cfg = tiny_config(*PARITY, f"trainer.max_steps={steps}", "checkpoint.every_n_steps=1", "checkpoint.keep=2",
                      "evaluation.every=2", "resume=auto", f"+output_dir={run_dir}", *rest)
    main(cfg)
