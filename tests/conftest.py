"""Keep every cache of the stack out of the home directory, and torch on the machine's 2 cores."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_CACHE = Path(tempfile.gettempdir()) / "dapo_lab_test_cache"
for var, sub in [("HF_HOME", "hf"), ("XDG_CACHE_HOME", "xdg"), ("WANDB_DIR", "wandb"), ("MPLCONFIGDIR", "mpl"),
                 ("TRITON_CACHE_DIR", "triton")]:
    os.environ.setdefault(var, str(_CACHE / sub))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")
# Under pytest-xdist (scripts/test.sh runs one worker per core) each worker's torch gets one thread, set before torch is
# imported: workers with a thread per core each would oversubscribe the cores, and OpenMP's spin-waits then slow them
# 10-100x. Subprocesses inherit it unless a test sets their threads itself.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"

import sys  # noqa: E402

# tests/trainer/helpers.py (tiny setups, test rewards) is importable as `helpers` from every test and from
# `reward.fn=helpers:parity_reward` in composed configs.
sys.path.insert(0, str(Path(__file__).parent / "trainer"))
os.environ.setdefault("DAPO_CACHE", str(_CACHE / "dapo_lab"))
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(_CACHE / "torch_extensions"))  # DeepSpeed's JIT build, once

import pytest  # noqa: E402

# CI sets DAPO_REQUIRE_VLLM=1 in its vLLM stage (.ci/run-vllm) and DAPO_REQUIRE_DEEPSPEED=1 in scripts/test.sh: there a
# test skipped for want of that package is a broken install, not an optional engine, so the skip is reported as a
# failure instead of passing silently.
REQUIRED = [name for name in ("vllm", "deepspeed") if os.environ.get(f"DAPO_REQUIRE_{name.upper()}") == "1"]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if REQUIRED and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        missing = [name for name in REQUIRED if name in reason.lower()]
        if missing:
            report.outcome = "failed"
            report.longrepr = f"DAPO_REQUIRE_{missing[0].upper()}=1, but the test was skipped: {reason}"
    return report
