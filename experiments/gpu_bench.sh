#!/usr/bin/env bash
# experiments/bench_vs_trl.py on a lent GPU machine (one H100/H200, no internet): dapo-lab (and TRL, where it imports)
# on the same model folder, prompts and settings, at two shapes, each step under a timeout capped by the budget left
# (failures do not stop later steps):
#   a. --shape tiny: the warm-started default model, --rounds 3 --steps 6           -> $OUT/bench_tiny.json
#   b. --shape qwen2.5-0.5b: Qwen2.5-0.5B's dims, random weights, the task's 320-token vocabulary,
#      --rounds 2 --steps 5                                                         -> $OUT/bench_0.5b.json
#   c. $OUT/summary.md: both tables (tokens/s of every system; TRL / ours where TRL ran), nvidia-smi, versions.
#
#   run(command="bash experiments/gpu_bench.sh", carry=[".gpu-wheels", ".cache/dapo_lab"], timeout_s=480)
#
# The session that runs it records both systems' tokens/s (generated and generated+trained) and s/step of both
# shapes, with the GPU and versions from summary.md, in experiments/LOG.md.
#
# .gpu-wheels/ (ignored) holds pure-Python wheels of what the image lacks; only modules that fail to import are
# installed (pip --no-index --no-deps). Our side needs the set of experiments/gpu_check.sh; make it here with
#   .venv/bin/python -m pip wheel --no-deps -w .gpu-wheels hydra-core==1.3.8 omegaconf==2.3.1 \
#       antlr4-python3-runtime==4.9.3 math-verify==0.9.0 latex2sympy2_extended==1.11.0
# TRL (untried there) needs trl and datasets, which the image lacks, and their dependencies (the versions of .venv):
#   .venv/bin/python -m pip wheel --no-deps -w .gpu-wheels trl==1.16.0 datasets==5.2.0 accelerate==1.15.0 \
#       dill==0.4.1 fsspec==2026.9.0
#   .venv/bin/python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_17_x86_64 -d .gpu-wheels multiprocess==0.70.19 xxhash==4.1.0 psutil==7.2.2 \
#       pyarrow==26.0.1
# (multiprocess's wheels are per Python version; 3.12 is a guess at the image's: env.txt prints it). pyarrow is a
# ~40 MB binary wheel and the carry limit is 64 MiB in all (.cache/dapo_lab: ~13 MB), so TRL will likely be
# skipped there: bench_vs_trl.py then runs dapo-lab alone and its JSON says why under "notes" (no ratios).
# .cache/dapo_lab (ignored) holds the default 450-step warm start: carried, the tiny shape reuses it; else a
# GPU_BENCH_WARMSTART_STEPS-step one (default 150) is built on the machine's CPU first (~10-30 s).
#
# Budget: GPU_BENCH_BUDGET seconds (default 420), 20 s kept for the summary. GPU_BENCH_OURS picks dapo-lab's variants
# (default "recompute engine": the TRL twin and the default old-log-prob source; "bf16-decode" and "engine-compiled",
# model.compile=true with inductor's Triton kernels and a first step that compiles, are the others);
# GPU_BENCH_TINY / GPU_BENCH_05B replace the rounds and steps. bench_vs_trl.py rewrites its JSON after every run, so
# a step cut by its timeout keeps the runs it finished ("complete": false). Writes 6 files to $OUT: env.txt (install,
# versions, one line per step with its exit code), bench_tiny.{json,log}, bench_0.5b.{json,log}, summary.md.
set -u
START=$SECONDS
BUDGET=${GPU_BENCH_BUDGET:-420}
PY=${PY:-python3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/gpu_bench_out}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/gpu_bench.XXXXXX)
ENV_TXT="$OUT/env.txt"
: >"$ENV_TXT"

export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false WANDB_MODE=offline
export HF_HOME="$WORK/hf" DAPO_CACHE="$WORK/dapo_cache" TRITON_CACHE_DIR="$WORK/triton" PIP_DISABLE_PIP_VERSION_CHECK=1

# step NAME FILE LIMIT CMD...: run CMD under a timeout capped by the budget left, its output appended to
# $OUT/FILE; returns CMD's exit code (2 when skipped for want of budget).
step() {
    local name=$1 file=$2 limit=$3 left t0=$SECONDS rc=0
    shift 3
    left=$((BUDGET - (SECONDS - START) - 20))
    if ((limit > left)); then limit=$left; fi
    if ((limit < 15)); then
        echo "step $name: skipped, budget spent" | tee -a "$ENV_TXT"
        return 2
    fi
    echo "==== $name ($(date -u +%T), limit $limit s)" >>"$OUT/$file"
    timeout -k 10 "$limit" "$@" >>"$OUT/$file" 2>&1 || rc=$?
    echo "step $name: rc=$rc in $((SECONDS - t0)) s (limit $limit s)" | tee -a "$ENV_TXT"
    return "$rc"
}

# ---------------------------------------------------------------- install what the image lacks
need=()
missing=()
want() {  # want MODULE WHEEL: queue .gpu-wheels/WHEEL-*.whl if MODULE does not import and the wheel was carried
    "$PY" -c "import $1" 2>/dev/null && return 0
    if compgen -G ".gpu-wheels/$2-[0-9]*.whl" >/dev/null; then
        need+=(.gpu-wheels/"$2"-[0-9]*.whl)
    else
        missing+=("$1")
    fi
}
{
    echo "== install ($(date -u +%FT%TZ), python: $(command -v "$PY"))"
    [ -d .gpu-wheels ] || echo "no .gpu-wheels/ here: was it carried? (carry=[\".gpu-wheels\"])"
    # ours (the set of gpu_check.sh, and pandas for the bench's harness), then TRL's where its wheel was carried
    # (optional: without them TRL is skipped and noted)
    pairs="hydra:hydra_core omegaconf:omegaconf antlr4:antlr4_python3_runtime math_verify:math_verify
           latex2sympy2_extended:latex2sympy2_extended sympy:sympy mpmath:mpmath pandas:pandas"
    if compgen -G ".gpu-wheels/trl-*.whl" >/dev/null; then
        pairs="$pairs trl:trl datasets:datasets accelerate:accelerate dill:dill multiprocess:multiprocess
               fsspec:fsspec xxhash:xxhash psutil:psutil pyarrow:pyarrow"
    fi
    for pair in $pairs; do
        want "${pair%%:*}" "${pair#*:}"
    done
    echo "installing: ${need[*]:-nothing}"
    echo "missing, no wheel carried: ${missing[*]:-none}"
    if ((${#need[@]})); then
        if ! timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-cache-dir "${need[@]}"; then
            echo "pip install into the interpreter failed: installing into $WORK/site (PYTHONPATH)"
            timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-cache-dir --target "$WORK/site" "${need[@]}"
            export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
        fi
    fi
    # src/ on the path of every interpreter, including the bench's train.py and TRL subprocesses (only where the
    # interpreter does not already import dapo_lab, e.g. from an editable install).
    if ! "$PY" -c 'import dapo_lab' 2>/dev/null; then
        purelib=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
        if echo "$ROOT/src" >"$purelib/dapo_lab_src.pth"; then echo "wrote $purelib/dapo_lab_src.pth"; fi
    fi
    export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
    "$PY" -c 'import dapo_lab, hydra, omegaconf, math_verify, pandas; print("dapo_lab from", dapo_lab.__file__)'
    "$PY" -c 'import datasets, trl; print("trl", trl.__version__, "imports: TRL runs")' 2>&1 | tail -1
} >>"$ENV_TXT" 2>&1

# ---------------------------------------------------------------- versions
VERSIONS="$WORK/versions.txt"
{
    echo "commit $(git rev-parse HEAD 2>/dev/null || echo "${GPU_BENCH_COMMIT:-unknown}")"
    nvidia-smi --query-gpu=name,memory.total --format=csv
    nvidia-smi --query-gpu=driver_version --format=csv,noheader
    timeout 120 "$PY" - <<'PY'
import importlib.metadata as md
import platform

import torch

print("python", platform.python_version())
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(0), "bf16", torch.cuda.is_bf16_supported())
for name in ["lightning", "transformers", "tokenizers", "hydra-core", "pandas", "trl", "datasets", "accelerate",
             "pyarrow"]:
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "-")
PY
} >"$VERSIONS" 2>&1
cat "$VERSIONS" >>"$ENV_TXT"
echo "== steps" >>"$ENV_TXT"

# ---------------------------------------------------------------- a, b: the bench at both shapes
# The carried warm start goes into $DAPO_CACHE (the 0.5b shape's 1.4 GB random folder is built there too).
WARM=()
if [ -d .cache/dapo_lab ]; then
    mkdir -p "$DAPO_CACHE" && cp -r .cache/dapo_lab/. "$DAPO_CACHE"/
    if [ -n "${GPU_BENCH_WARMSTART_STEPS:-}" ]; then WARM=(--warmstart-steps "$GPU_BENCH_WARMSTART_STEPS"); fi
else
    WARM=(--warmstart-steps "${GPU_BENCH_WARMSTART_STEPS:-150}")  # no cached 450-step folder: a shorter build
fi
echo "warm start: ${WARM[*]:-450 steps, the default (carried .cache/dapo_lab)}" >>"$ENV_TXT"
read -r -a OURS <<<"${GPU_BENCH_OURS:-recompute engine}"
read -r -a TINY_RUNS <<<"${GPU_BENCH_TINY:---rounds 3 --steps 6}"
read -r -a BIG_RUNS <<<"${GPU_BENCH_05B:---rounds 2 --steps 5}"
BENCH=("$PY" experiments/bench_vs_trl.py --device cuda --ours "${OURS[@]}")

# --timeout: one run's limit, so a hung run fails alone; the step's limit (the budget) bounds the whole bench.
step bench_tiny bench_tiny.log 200 "${BENCH[@]}" --shape tiny "${TINY_RUNS[@]}" ${WARM[@]+"${WARM[@]}"} \
    --timeout 100 --out "$OUT/bench_tiny.json"
step bench_0.5b bench_0.5b.log 400 "${BENCH[@]}" --shape qwen2.5-0.5b "${BIG_RUNS[@]}" \
    --timeout 150 --out "$OUT/bench_0.5b.json"

# ---------------------------------------------------------------- c: summary.md
{
    echo "# experiments/gpu_bench.sh ($(date -u +%FT%TZ), $((SECONDS - START)) s of $BUDGET)"
    echo
    echo '```'
    cat "$VERSIONS"
    grep '^step \|^warm start' "$ENV_TXT"
    echo '```'
    for name in tiny 0.5b; do
        echo
        echo "## bench_$name.json"
        timeout 15 "$PY" - "$OUT/bench_$name.json" <<'PY' || echo "(no table: see bench_$name.log)"
import json
import sys

sys.path.insert(0, "experiments")
import bench_vs_trl  # noqa: E402

report = json.load(open(sys.argv[1]))
report["machine"].setdefault("load_avg_after", [float("nan")])  # absent from a JSON cut short
print(f"complete: {report['complete']}; shape: {report['shape']['note']}")
print("ours:", " ".join(report["settings"]["ours_overrides"]))
bench_vs_trl.print_table(report)
PY
    done
} >"$OUT/summary.md" 2>&1
cat "$OUT/summary.md"
echo "total $((SECONDS - START)) s; files: $(ls "$OUT" | tr '\n' ' ')"
rm -rf "$WORK"
