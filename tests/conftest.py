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
