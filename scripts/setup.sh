#!/usr/bin/env bash
# Create .venv and install dapo-lab with its test/analysis/launcher/benchmark extras on a CPU-only Linux machine.
# torch is pinned to 2.13.0 in the SAME pip command: without the pin, lightning pulls a multi-GB CUDA torch.
# GPU users: `pip install -e '.[dev,launchers]'` into an environment that already has a CUDA torch >= 2.4.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PIP_CACHE_DIR=${PIP_CACHE_DIR:-$PWD/.cache/pip}
# A stamp of what the last complete install installed from: scripts/test.sh runs this script first, and with nothing
# changed there is nothing to resolve again (~10 s of pip each time). Remove .venv/.setup-stamp to force a reinstall.
stamp=.venv/.setup-stamp
if [ -f "$stamp" ] && [ -x .venv/bin/python ] && sha256sum --status -c "$stamp" 2>/dev/null; then
  echo "setup: .venv is installed from this pyproject.toml already ($stamp)"
  exit 0
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0" -e ".[dev,analysis,wandb,launchers,bench]"
# DeepSpeed (trainer=*_deepspeed_zero2/3) is source-only: no CUDA ops to build on CPU, and it must see this torch.
DS_BUILD_OPS=0 .venv/bin/python -m pip install -q --no-build-isolation "deepspeed==0.19.8"
sha256sum pyproject.toml scripts/setup.sh > "$stamp"
