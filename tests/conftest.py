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
