"""The real config, shrunk for trainer tests: ``conf/train.yaml`` + ``debug=tiny`` + the overrides below, built by
``dapo_lab.build`` exactly as a run builds it (no hand-made copy of ``build()``)."""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import torch
from filelock import FileLock
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from dapo_lab.build import Built, build, build_learner
from dapo_lab.trainer import DAPOLearner, PlainOptimization

CONF = Path(__file__).resolve().parents[2] / "conf"
# A 2-layer, 64-wide random-weight Qwen2 (debug=tiny), 4 prompts x 4 responses of <= 12 tokens per step, fp32.
TEST_OVERRIDES = [
    "debug=tiny", "max_response_len=12", "overlong=none", "++sampling.max_gen_batches=2", "data.train_size=64",
    "data.eval_size=8", "batch.micro_batch_size=8", "optim.decay=constant", "evaluation.max_prompts=8",
    "evaluation.batch_prompts=8", "generation.temperature=1.0", "rollout.attn_implementation=null",
    "rollout_correction.old_logprobs=recompute", "trainer.precision=32-true",
]
PARITY = ["reward=custom", "reward.fn=helpers:parity_reward"]


def tiny_config(*overrides: str) -> DictConfig:
    base = TEST_OVERRIDES
    if "rollout=vllm" in overrides:  # the HF engine's own setting does not apply
        base = [o for o in base if not o.startswith("rollout.attn_implementation")]
    if "sampling=none" not in overrides:
        # Rounds of batch.gen_prompts, not the default's adaptive oversampling: a ScriptedReward scripts one pattern
        # per round of 4 groups. A test of oversampling sets sampling.oversample=true after this (the last wins).
        base = [*base, "sampling.oversample=false"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=[*base, *overrides])


def make_learner(*overrides: str, **replace) -> DAPOLearner:
    """The learner of the tiny test config (``overrides``: Hydra overrides; ``replace``: built components)."""
    torch.manual_seed(0)
    return build_learner(tiny_config(*overrides), **replace)[0]


def make_run(tmp_path: Path, *overrides: str, steps: int = 2, **replace) -> Built:
    """Module and Lightning trainer of the tiny test config, writing under ``tmp_path`` (``csv/metrics.csv``)."""
    torch.manual_seed(0)
    cfg = tiny_config(f"trainer.max_steps={steps}", *overrides)
    return build(cfg, tmp_path, **replace)


def gradient_only(learner: DAPOLearner) -> PlainOptimization:
    """An optimization whose ``backward`` accumulates ``.grad`` (for gradient checks; nothing is stepped)."""
    params = list(learner.model.parameters())
    return PlainOptimization(torch.optim.SGD(params, lr=0.0), params, grad_clip=float("inf"))


def parity_reward(response: str, ground_truth: str) -> float:
    """A deterministic content-based reward that makes groups informative even for an untrained model."""
    return 1.0 if sum(map(ord, response)) % 2 else -1.0


class ScriptedReward:
    """Correctness from a script: call ``i`` marks group ``g`` all-right, all-wrong or mixed (``"R" / "W" / "M"``).
    Calls listed in ``nan_calls`` score NaN (a broken reward function), whatever their correctness."""

    def __init__(self, script: list[str], group_size: int, nan_calls: tuple[int, ...] = ()) -> None:
        self.script, self.group_size, self.calls, self.nan_calls = list(script), group_size, 0, set(nan_calls)

    def score_batch(self, responses, ground_truths):
        pattern = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        correct = []
        for kind in pattern:
            correct += {"R": [True] * self.group_size, "W": [False] * self.group_size,
                        "M": [True] + [False] * (self.group_size - 1)}[kind]
        assert len(correct) == len(responses)
        nan = self.calls - 1 in self.nan_calls
        return [float("nan") if nan else 1.0 if c else -1.0 for c in correct], correct, {}


def favour_eos(learner: DAPOLearner, logit_boost: float = 4.0) -> None:
    """Raise the EOS logit so that some responses end before the limit and others are truncated."""
    with torch.no_grad():
        head = learner.model.lm_head.weight
        hidden = learner.model.model.norm.weight
        head[learner.tokenizer.eos_token_id] = hidden.sign() * logit_boost / hidden.numel() ** 0.5


T = TypeVar("T")


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], T]) -> T:
    """``make(folder)``, run once per test session even when pytest-xdist spreads a module's tests over workers:
    the first worker to ask runs it under a file lock in a folder all workers share, the others wait and unpickle
    its result. For module fixtures that build a real run their tests only read."""
    root = tmp_path_factory.getbasetemp()
    root = root.parent if "PYTEST_XDIST_WORKER" in os.environ else root  # .../pytest-N: this session's workers
    folder, result = root / f"built-{name}", root / f"built-{name}.pickle"
    with FileLock(f"{folder}.lock"):
        if not result.is_file():
            shutil.rmtree(folder, ignore_errors=True)  # a worker's failed attempt: the next one starts clean
            folder.mkdir()
            result.write_bytes(pickle.dumps(make(folder)))
        return pickle.loads(result.read_bytes())


def worker_port(port: int, worker: str | None = None) -> int:
    """``port`` shifted into this pytest-xdist worker's own range (gw0: +0, gw1: +1000, ...), so that tests running in
    parallel workers never share a rendezvous port; unchanged without xdist.

    >>> worker_port(29533, "gw1"), worker_port(29533, "gw0")
    (30533, 29533)
    """
    worker = worker or os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return port + 1000 * int(worker.removeprefix("gw"))


def run_bounded(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 240,
                expect_kill: bool = False) -> str:
    """Run a (multi-process) command in its own session; past ``timeout`` seconds, SIGKILL the whole process group
    and fail: a hung gloo collective ignores SIGTERM, and a hang must fail the test, not stall CI."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"{cmd[1:]} hung for {timeout} s and was killed:\n{output[-3000:]}")
    if expect_kill:
        assert proc.returncode == -signal.SIGKILL, output[-3000:]
    else:
        assert proc.returncode == 0, output[-3000:]
    return output


def run_on_forked_ranks(main: Callable[[], None], world_size: int = 2) -> None:
    """``main()`` on ``world_size`` ranks of one node: this process is rank 0, the others are its forks, started as
    torchrun starts ranks (``LOCAL_RANK`` etc. set: Lightning launches no process of its own). The forks inherit the
    imports: ~12 s of CPU per interpreter on a 2-core machine, which Lightning's launcher pays again for each rank
    (its own launch is what ``tests/test_train_distributed.py`` runs). Call before any torch op or thread. If rank 0
    fails it SIGKILLs the forks (they would wait in a collective until the test's bound); it exits nonzero if a fork
    failed (a fork that fails mid-run leaves rank 0 in a collective: the test's bound then fails the run)."""
    os.environ.update(MASTER_ADDR=os.environ.get("MASTER_ADDR", "127.0.0.1"), NODE_RANK="0",
                      WORLD_SIZE=str(world_size), LOCAL_RANK="0")
    forks = []
    for rank in range(1, world_size):
        pid = os.fork()
        if pid == 0:
            os.environ["LOCAL_RANK"] = str(rank)
            main()  # an exception leaves through the interpreter's exit, with its traceback and status 1
            sys.stdout.flush(), sys.stderr.flush()
            os._exit(0)  # not the exit handlers rank 0 registered before the fork
        forks.append(pid)
    try:
        main()
    except BaseException:
        for pid in forks:
            os.kill(pid, signal.SIGKILL)
        raise
    failed = [status for pid in forks if (status := os.waitpid(pid, 0)[1]) != 0]
    if failed:
        sys.exit(f"{len(failed)} forked rank(s) failed (wait status {failed}); their output is above")
