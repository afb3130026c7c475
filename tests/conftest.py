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

import sys  # noqa: E402

# tests/trainer/helpers.py (tiny setups, test rewards) is importable as `helpers` from every test and from
# `reward.fn=helpers:parity_reward` in composed configs.
sys.path.insert(0, str(Path(__file__).parent / "trainer"))
os.environ.setdefault("DAPO_CACHE", str(_CACHE / "dapo_lab"))

import pytest  # noqa: E402

# CI's vLLM stage (.ci/run-vllm) sets DAPO_REQUIRE_VLLM=1: there a test skipped for want of vLLM is a broken
# install, not an optional engine, so the skip is reported as a failure instead of passing silently.
REQUIRE_VLLM = os.environ.get("DAPO_REQUIRE_VLLM") == "1"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if REQUIRE_VLLM and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if "vllm" in reason.lower():
            report.outcome = "failed"
            report.longrepr = f"DAPO_REQUIRE_VLLM=1, but the test was skipped: {reason}"
    return report
