#!/usr/bin/env bash
# One-shot check of the CUDA paths on a lent GPU machine (one H100/H200, no internet), which CI never has. In
# priority order, each step under a timeout capped by the budget left (failures do not stop later steps):
#   1. FSDP2 updates on the GPU against strategy=auto. The tiny model (default sizes) with a warm start built once
#      into $DAPO_CACHE (or reused from a carried .cache/dapo_lab), then three 3-step `train.py` runs with
#      sampling=none (every group trains) and evals at steps 0 and 3 on 64 prompts: trainer=gpu_fsdp in fp32
#      (param_dtype=null, 32-true), strategy=auto in fp32 (32-true), and trainer=gpu_fsdp as shipped (bf16 params,
#      fp32 reduce) for memory and time. experiments/gpu_check_compare.py compares the final policy/ folders
#      (max |diff| per tensor, ||fsdp - auto|| / ||auto - warm start||; fp32 runs must agree to rounding) and
#      records actor/num_updates, actor/grad_norm, time/step, evals and the peak CUDA memory of every run.
#   2. DeepSpeed ZeRO-2 and ZeRO-3 (devices=1, fp32 to compare with the auto run), only if `import deepspeed`
#      works there (the image has none; it is installed from .gpu-wheels when its wheels are there).
#   3. The HF rollout engine on cuda (greedy vs model.generate, engine log-probs vs the trainer's recompute in fp32
#      and bf16 autocast, seeds, truncation, throughput), the FSDP2 full-weight gather behind the vLLM weight push
#      (nccl, world size 1), and the CPU test suite on that stack.
#
#   run(command="GPU_CHECK_COMMIT=<git rev-parse HEAD here> bash experiments/gpu_check.sh",
#       carry=[".gpu-wheels", ".cache/dapo_lab"], timeout_s=480)
#
# .gpu-wheels/ (ignored) holds pure-Python wheels of what the image lacks (hydra-core, omegaconf, antlr4 4.9.3,
# math-verify, latex2sympy2_extended); only modules that fail to import are installed. Make it here with
#   .venv/bin/python -m pip wheel --no-deps -w .gpu-wheels hydra-core==1.3.8 omegaconf==2.3.1 \
#       antlr4-python3-runtime==4.9.3 math-verify==0.9.0 latex2sympy2_extended==1.11.0
# and, for step 2 (untried): DS_BUILD_OPS=0 .venv/bin/python -m pip wheel --no-deps --no-build-isolation -w
# .gpu-wheels deepspeed==0.19.8 hjson==3.1.0 pydantic==2.14.4 annotated-types==0.8.0 typing-inspection==0.4.5, and
# pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform
# manylinux_2_17_x86_64 -d .gpu-wheels pydantic-core==2.50.5.
# .cache/dapo_lab (ignored; carry it only if `du -sm .cache/dapo_lab` is well under 64) may hold the default
# 450-step warm start: then the runs use it, else a GPU_CHECK_WARMSTART_STEPS-step one (default 150) is built on
# the machine's CPU first (~10-30 s). The commit is `git rev-parse HEAD` there if .git travelled, else
# GPU_CHECK_COMMIT; summary.json also holds tree_hash, which this prints here for the same code:
#   find src conf train.py -type f \( -name '*.py' -o -name '*.yaml' \) -not -path '*/__pycache__/*' \
#       | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16
#
# Budget: GPU_CHECK_BUDGET seconds (default 450), with 30 s kept for the summary. Writes 8 files to $OUT (the
# device tool returns at most 8): summary.json (every number: runs, comparisons, checks, steps, versions, commit),
# compare.txt (the same, readable), env.txt (install log, versions, one line per step with its exit code),
# train.log (every train.py run), cuda_engine.txt, gather.txt, pytest.log, and runs.tar.gz (each run's
# metrics.csv, resolved_config.yaml and peak.json, the warm start's warmstart.json, the step table).
set -u
START=$SECONDS
BUDGET=${GPU_CHECK_BUDGET:-450}
PY=${PY:-python3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/gpu_check_out}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/gpu_check.XXXXXX)
ENV_TXT="$OUT/env.txt"
STEPS_TSV="$WORK/steps.tsv"
: >"$ENV_TXT"
: >"$STEPS_TSV"

export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false WANDB_MODE=offline
export HF_HOME="$WORK/hf" DAPO_CACHE="$WORK/dapo_cache" TRITON_CACHE_DIR="$WORK/triton" PIP_DISABLE_PIP_VERSION_CHECK=1
COMMIT=$(git rev-parse HEAD 2>/dev/null || echo "${GPU_CHECK_COMMIT:-unknown}")
TREE_HASH=$(find src conf train.py -type f \( -name '*.py' -o -name '*.yaml' \) -not -path '*/__pycache__/*' \
    | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)

# step NAME FILE LIMIT CMD...: run CMD under a timeout capped by the budget left, its output appended to
# $OUT/FILE; returns CMD's exit code (2 when skipped for want of budget).
step() {
    local name=$1 file=$2 limit=$3 left t0=$SECONDS rc=0
    shift 3
    left=$((BUDGET - (SECONDS - START) - 30))
    if ((limit > left)); then limit=$left; fi
    if ((limit < 15)); then
        echo "step $name: skipped, budget spent" | tee -a "$ENV_TXT"
        printf '%s\t%s\tskipped\t0\t%s\n' "$name" "$file" "$limit" >>"$STEPS_TSV"
        return 2
    fi
    echo "==== $name ($(date -u +%T), limit $limit s)" >>"$OUT/$file"
    timeout -k 10 "$limit" "$@" >>"$OUT/$file" 2>&1 || rc=$?
    echo "step $name: rc=$rc in $((SECONDS - t0)) s (limit $limit s)" | tee -a "$ENV_TXT"
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$file" "$rc" "$((SECONDS - t0))" "$limit" >>"$STEPS_TSV"
    return "$rc"
}

# ---------------------------------------------------------------- install what the image lacks
{
    echo "== install ($(date -u +%FT%TZ), python: $(command -v "$PY"))"
    need=()
    if [ -d .gpu-wheels ]; then
        pairs="hydra:hydra_core omegaconf:omegaconf antlr4:antlr4_python3_runtime math_verify:math_verify
               latex2sympy2_extended:latex2sympy2_extended sympy:sympy mpmath:mpmath pytest:pytest pluggy:pluggy
               iniconfig:iniconfig pygments:pygments packaging:packaging hypothesis:hypothesis
               sortedcontainers:sortedcontainers attrs:attrs pytest_timeout:pytest_timeout"
        if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
            pairs="$pairs exceptiongroup:exceptiongroup tomli:tomli"
        fi
        if compgen -G ".gpu-wheels/deepspeed-*.whl" >/dev/null; then  # step 2's optional extra
            pairs="$pairs deepspeed:deepspeed hjson:hjson pydantic:pydantic pydantic_core:pydantic_core
                   annotated_types:annotated_types typing_inspection:typing_inspection"
        fi
        for pair in $pairs; do
            "$PY" -c "import ${pair%%:*}" 2>/dev/null || need+=(.gpu-wheels/"${pair#*:}"-[0-9]*.whl)
        done
    else
        echo "no .gpu-wheels/ here: was it carried? (carry=[\".gpu-wheels\"])"
    fi
    echo "installing: ${need[*]:-nothing}"
    if ((${#need[@]})); then
        if ! timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-cache-dir "${need[@]}"; then
            echo "pip install into the interpreter failed: installing into $WORK/site (PYTHONPATH)"
            timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-cache-dir --target "$WORK/site" "${need[@]}"
            export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
        fi
    fi
    # src/ on the path of every interpreter, including the tests' subprocesses that start with a bare env (only
    # where the interpreter does not already import dapo_lab, e.g. from an editable install).
    if ! "$PY" -c 'import dapo_lab' 2>/dev/null; then
        purelib=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
        if echo "$ROOT/src" >"$purelib/dapo_lab_src.pth"; then echo "wrote $purelib/dapo_lab_src.pth"; fi
    fi
    export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
    "$PY" -c 'import dapo_lab, hydra, omegaconf, math_verify; print("dapo_lab from", dapo_lab.__file__)'
} >>"$ENV_TXT" 2>&1

# ---------------------------------------------------------------- versions
{
    echo "== versions (commit $COMMIT, tree_hash $TREE_HASH)"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    timeout 120 "$PY" - <<'PY'
import importlib.metadata as md
import platform

import torch

print("python", platform.python_version())
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0),
          "bf16", torch.cuda.is_bf16_supported())
print("nccl", torch.cuda.nccl.version() if torch.cuda.is_available() else None)
print("tf32 matmul allowed:", torch.backends.cuda.matmul.allow_tf32)
for name in ["lightning", "pytorch-lightning", "transformers", "tokenizers", "hydra-core", "omegaconf",
             "antlr4-python3-runtime", "math-verify", "latex2sympy2_extended", "sympy", "pandas", "numpy", "pytest",
             "pytest-xdist", "pytest-timeout", "hypothesis", "safetensors", "deepspeed", "vllm"]:
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "-")
PY
    echo "== steps"
} >>"$ENV_TXT" 2>&1

# ---------------------------------------------------------------- 1. FSDP2 on the GPU against strategy=auto
# train.py in-process under a wrapper that records torch.cuda's peak memory of the whole run into $PEAK_JSON.
cat >"$WORK/train_peak.py" <<'PY'
"""train.py in this process, then what the run used of the GPU into $PEAK_JSON: torch.cuda's peak allocated and
reserved memory over the whole run (model build, evaluations, steps, checkpoints, the final save)."""
import json
import os
import runpy
import sys
import time

import torch

start, code = time.perf_counter(), 1
sys.argv = [os.path.abspath("train.py"), *sys.argv[1:]]
print("train.py", *sys.argv[1:], flush=True)
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
    code = 0
except SystemExit as stop:  # Hydra exits 1 on an error it has printed
    code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
finally:
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    peak = {"exit": code, "wall_s": round(time.perf_counter() - start, 2), "cuda": cuda,
            "max_allocated_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
            "max_reserved_mib": torch.cuda.max_memory_reserved() / 2**20 if cuda else None}
    with open(os.environ["PEAK_JSON"], "w") as handle:
        json.dump(peak, handle)
    print("peak:", peak, flush=True)
sys.exit(code)
PY

# The warm start, once: every run below loads the same folder of $DAPO_CACHE (the key covers model.* and data.*).
if [ -d .cache/dapo_lab ]; then mkdir -p "$DAPO_CACHE" && cp -r .cache/dapo_lab/. "$DAPO_CACHE"/; fi
WS_ENV="$WORK/warmstart.env" step warmstart train.log 150 "$PY" - <<'PY'
"""Find the default 450-step warm start in $DAPO_CACHE (carried), else build GPU_CHECK_WARMSTART_STEPS (default 150)
steps there on the CPU; write WS (its steps) and WS_DIR (its folder) to $WS_ENV for the runs."""
import os
import time

import torch
from hydra import compose, initialize_config_dir

from dapo_lab.build import instantiate

torch.set_num_threads(min(8, os.cpu_count() or 1))
wanted = os.environ.get("GPU_CHECK_WARMSTART_STEPS")
candidates = [int(wanted)] if wanted else [450, 150]
with initialize_config_dir(config_dir=os.path.abspath("conf"), version_base=None):
    configs = [compose("train", overrides=[f"model.warmstart_steps={steps}"]) for steps in candidates]
data = instantiate(configs[0].data)
specs = [instantiate(cfg.model) for cfg in configs]
spec = next((s for s in specs if (s.cache_path(data) / "warmstart.json").is_file()), specs[-1])
start = time.perf_counter()
spec.load(data)
print(f"warm start: {spec.warmstart_steps} steps at {spec.cache_path(data)} in {time.perf_counter() - start:.1f} s "
      f"({torch.get_num_threads()} threads)")
with open(os.environ["WS_ENV"], "w") as handle:
    handle.write(f"WS={spec.warmstart_steps}\nWS_DIR={spec.cache_path(data)}\n")
PY
WS=${GPU_CHECK_WARMSTART_STEPS:-150} WS_DIR=""
if [ -f "$WORK/warmstart.env" ]; then . "$WORK/warmstart.env"; fi

COMMON=(trainer.devices=1 sampling=none trainer.max_steps=3 evaluation.every=3 evaluation.max_prompts=64
        checkpoint.every_n_steps=3 trainer.enable_progress_bar=false "model.warmstart_steps=$WS")
RUN_ARGS=()
train_run() {  # train_run NAME LIMIT OVERRIDES...: 3 steps of train.py into $WORK/run_NAME
    local name=$1 limit=$2
    shift 2
    mkdir -p "$WORK/run_$name"
    RUN_ARGS+=(--run "$name=$WORK/run_$name")
    step "train_$name" train.log "$limit" env PEAK_JSON="$WORK/run_$name/peak.json" \
        "$PY" "$WORK/train_peak.py" "${COMMON[@]}" "hydra.run.dir=$WORK/run_$name" "$@"
}

summarize() {  # summary.json and compare.txt from what has run so far; runs.tar.gz: the runs' small files
    timeout 30 "$PY" experiments/gpu_check_compare.py "${RUN_ARGS[@]}" --pair fsdp32:auto32 \
        --pair ds_zero2:auto32 --pair ds_zero3:auto32 --report-pair fsdp_bf16:auto32 ${WS_DIR:+--initial "$WS_DIR"} \
        --steps "$STEPS_TSV" --meta "commit=$COMMIT" --meta "tree_hash=$TREE_HASH" --meta "budget_s=$BUDGET" \
        --meta "elapsed_s=$((SECONDS - START))" --meta "warmstart_steps=$WS" --meta "deepspeed_importable=$DS_OK" \
        --out "$OUT/summary.json" >"$OUT/compare.txt" 2>&1 || echo "summary: rc=$? (compare.txt)" | tee -a "$ENV_TXT"
    (cd "$WORK" && find . -maxdepth 3 \( -name metrics.csv -o -name resolved_config.yaml -o -name peak.json \
        -o -name warmstart.json -o -name steps.tsv \) -print0 | tar --null -czf "$OUT/runs.tar.gz" -T -)
}

DS_OK=false
train_run fsdp32 120 trainer=gpu_fsdp trainer.strategy.param_dtype=null
train_run auto32 100 trainer.accelerator=gpu trainer.strategy=auto trainer.precision=32-true
train_run fsdp_bf16 100 trainer=gpu_fsdp
summarize

# ---------------------------------------------------------------- 2. DeepSpeed ZeRO-2/3 on the GPU, if it imports
if step deepspeed_import env.txt 60 "$PY" -c 'import deepspeed; print("deepspeed", deepspeed.__version__)'; then
    DS_OK=true
    train_run ds_zero2 100 trainer=gpu_deepspeed_zero2 trainer.precision=32-true
    train_run ds_zero3 100 trainer=gpu_deepspeed_zero3 trainer.precision=32-true
    summarize
fi

# ---------------------------------------------------------------- 3a. HF rollout engine on cuda
step cuda_engine cuda_engine.txt 90 "$PY" - <<'PY'
"""HFEngine on cuda: greedy tokens vs model.generate, engine log-probs vs the trainer's recompute (fp32 and
bf16 autocast, eager and sdpa decode), seeds, truncation invariants, cuda vs cpu, and decode throughput."""
import contextlib
import copy
import time
import traceback

import torch

from dapo_lab.models.tiny import build_tiny
from dapo_lab.rollout import HFEngine, SamplingParams
from dapo_lab.trainer.teacher_forced import response_logprobs

DIMS = dict(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128)
TEXTS = ["12+7=", "3+4+5=", "1=", "9+9+9+9=", "40+2=", "7+8+9+10+11="]
print("tf32 matmul allowed:", torch.backends.cuda.matmul.allow_tf32)

model, tok = build_tiny(seed=0, **DIMS)
model.set_attn_implementation("eager")  # as conf/model/tiny.yaml trains it
with torch.no_grad():  # raise EOS's logit so some responses stop early (tests/rollout/test_rollout_contract.py)
    hidden = model.model.norm.weight
    model.lm_head.weight[tok.eos_token_id] = hidden.sign() * 3.0 / hidden.numel() ** 0.5
model.eval()
cpu_model = copy.deepcopy(model)
model.cuda()
eos, pad = tok.eos_token_id, tok.pad_token_id
prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS]


def autocast(on: bool):
    return torch.autocast("cuda", dtype=torch.bfloat16) if on else contextlib.nullcontext()


def rows(out) -> list[list[int]]:
    return [ids[m].tolist() for ids, m in zip(out.response_ids, out.response_mask)]


def generate_greedy(m, bf16: bool, max_new: int = 16) -> list[list[int]]:
    device, refs = next(m.parameters()).device, []
    with torch.no_grad(), autocast(bf16):
        for p in prompts:
            o = m.generate(torch.tensor([p], device=device), max_new_tokens=max_new, do_sample=False,
                           eos_token_id=eos, pad_token_id=eos)
            refs.append(o[0, len(p):].tolist())
    return refs


def recompute(m, out, temperature: float, bf16: bool) -> torch.Tensor:
    with torch.no_grad(), autocast(bf16):
        lp, _ = response_logprobs(m, out.prompt_ids, out.response_ids, pad_id=pad, temperature=temperature or 1.0)
    return lp.cpu()


def section(title: str):
    def wrap(fn):
        print(f"\n== {title}", flush=True)
        try:
            fn()
        except Exception:
            print("FAILED:\n" + traceback.format_exc())
        return fn
    return wrap


ENGINES = {"fp32_eager": HFEngine(), "fp32_sdpa": HFEngine(attn_implementation="sdpa"),
           "bf16_eager": HFEngine(autocast="bf16"), "bf16_sdpa": HFEngine(autocast="bf16", attn_implementation="sdpa")}
for engine in ENGINES.values():
    engine.attach(model, eos_id=eos, pad_id=pad)


@section("greedy tokens vs model.generate on cuda (rows equal / 6)")
def _greedy():
    ref_fp32, ref_bf16 = generate_greedy(model, False), generate_greedy(model, True)
    for name, engine in ENGINES.items():
        got = rows(engine.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=16)))
        same32 = sum(a == b for a, b in zip(got, ref_fp32))
        same16 = sum(a == b for a, b in zip(got, ref_bf16))
        print(f"{name}: vs generate fp32 {same32}/6, vs generate bf16-autocast {same16}/6")
    print("generate fp32 vs generate bf16:", sum(a == b for a, b in zip(ref_fp32, ref_bf16)), "/6")
    cpu = HFEngine()
    cpu.attach(cpu_model, eos_id=eos, pad_id=pad)
    got_cpu = rows(cpu.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=16)))
    print("cpu fp32 engine vs cuda generate fp32:", sum(a == b for a, b in zip(got_cpu, ref_fp32)), "/6")


@section("engine log-probs vs trainer recompute: max |diff| over response tokens (contract tolerance 1e-4 fp32)")
def _logprobs():
    for name, engine in ENGINES.items():
        for temperature in (0.0, 1.0, 0.7):
            out = engine.generate(prompts, SamplingParams(temperature=temperature, max_new_tokens=12, n=3, seed=5))
            m = out.response_mask
            d32 = (recompute(model, out, temperature, False) - out.logprobs).abs()[m]
            d16 = (recompute(model, out, temperature, True) - out.logprobs).abs()[m]
            print(f"{name} T={temperature}: vs fp32 recompute max {d32.max():.2e} mean {d32.mean():.2e} | "
                  f"vs bf16 recompute max {d16.max():.2e} | pad zero {bool((out.logprobs[~m] == 0).all())} "
                  f"| all < 0 {bool((out.logprobs[m] < 0).all())} | tokens {int(m.sum())}")


@section("cuda vs cpu recompute of the same responses (fp32), and entropy")
def _cross_device():
    out = ENGINES["fp32_eager"].generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=12, n=3, seed=5))
    with torch.no_grad():
        lp_gpu, ent_gpu = response_logprobs(model, out.prompt_ids, out.response_ids, pad_id=pad, with_entropy=True)
        lp_cpu, ent_cpu = response_logprobs(cpu_model, out.prompt_ids, out.response_ids, pad_id=pad,
                                            with_entropy=True)
    m = out.response_mask
    print("logp max |cuda - cpu|:", f"{(lp_gpu.cpu() - lp_cpu).abs()[m].max():.2e}")
    print("entropy max |cuda - cpu|:", f"{(ent_gpu.cpu() - ent_cpu).abs()[m].max():.2e}")


@section("seeds reproduce; truncation flags, masks and padding")
def _seeds_and_truncation():
    for name, engine in ENGINES.items():
        params = SamplingParams(temperature=1.0, max_new_tokens=10, n=3, seed=21)
        a, b = engine.generate(prompts, params), engine.generate(prompts, params)
        c = engine.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=10, n=3, seed=22))
        same = torch.equal(a.response_ids, b.response_ids) and torch.equal(a.logprobs, b.logprobs)
        problems = []
        for row, tokens in enumerate(rows(a)):
            if a.truncated[row] and (len(tokens) != 10 or eos in tokens):
                problems.append(row)
            if not a.truncated[row] and (tokens[-1] != eos or eos in tokens[:-1]):
                problems.append(row)
            if (a.response_ids[row, len(tokens):] != pad).any():
                problems.append(row)
        print(f"{name}: same seed equal {same}, other seed differs {not torch.equal(a.response_ids, c.response_ids)}, "
              f"truncated {a.truncated.float().mean():.2f}, bad rows {problems}")


@section("decode throughput, default tiny size (hidden 256, 4 layers), EOS off, 96 new tokens, tokens/s")
def _throughput():
    big, big_tok = build_tiny(seed=0, hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2,
                              intermediate_size=688)
    big.set_attn_implementation("eager")
    big.cuda().eval()
    gen = torch.Generator().manual_seed(0)
    for batch in (128, 1024):
        batch_prompts = torch.randint(0, 256, (batch, 24), generator=gen).tolist()
        for name, engine in {"fp32_sdpa": HFEngine(attn_implementation="sdpa", max_batch=batch),
                             "bf16_sdpa": HFEngine(autocast="bf16", attn_implementation="sdpa", max_batch=batch),
                             "fp32_eager": HFEngine(max_batch=batch)}.items():
            engine.attach(big, eos_id=-1, pad_id=big_tok.pad_token_id)
            params = SamplingParams(temperature=1.0, max_new_tokens=96, seed=1)
            engine.generate(batch_prompts, params)  # warm-up
            torch.cuda.synchronize()
            start = time.perf_counter()
            out = engine.generate(batch_prompts, params)
            torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            print(f"batch {batch} {name}: {int(out.response_mask.sum()) / seconds:,.0f} tok/s ({seconds:.2f} s)")
    print("peak cuda memory", f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
PY

# ---------------------------------------------------------------- 3b. FSDP2 weight gather (vLLM weight push)
step gather gather.txt 45 "$PY" - <<'PY'
"""full_state_dict on cuda with one nccl rank under FSDP2 (fully_shard on each layer and the root, a mesh of 1), as
the vLLM engine's weight push (VLLMEngine.update_weights) and save_policy read it."""
import os
import traceback

import torch
import torch.distributed as dist

os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
os.environ.setdefault("MASTER_PORT", "29611")
torch.cuda.set_device(0)
dist.init_process_group("nccl", rank=0, world_size=1)
from torch.distributed.fsdp import fully_shard  # noqa: E402

from dapo_lab.models.tiny import build_tiny  # noqa: E402
from dapo_lab.trainer.distributed import full_state_dict  # noqa: E402

try:
    model, _ = build_tiny(seed=0, hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128)
    model.cuda()
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    print("fsdp2 sharded:", all(type(p).__name__ == "DTensor" for p in model.parameters()))
    full = full_state_dict(model)
    names = sorted(full) == sorted(reference)
    print("fsdp2", {"same_names": names, "plain_tensors": all(type(v) is torch.Tensor for v in full.values()),
                    "equal": names and all(torch.equal(full[k].cpu(), reference[k].cpu()) for k in reference),
                    "devices": sorted({str(v.device) for v in full.values()})}, flush=True)
except Exception:
    print("fsdp2 FAILED:\n" + traceback.format_exc(), flush=True)
dist.destroy_process_group()
PY

# ---------------------------------------------------------------- 3c. the CPU test suite on this stack
xdist=()
if "$PY" -c 'import xdist' 2>/dev/null; then xdist=(-n 6); fi
step pytest pytest.log 120 env OMP_NUM_THREADS=2 "$PY" -m pytest -p no:cacheprovider -m "not slow" --timeout 100 \
    -rfEs --durations 15 ${xdist[@]+"${xdist[@]}"} tests/algo tests/trainer tests/rollout tests/models \
    tests/test_configs.py src/dapo_lab

summarize
echo "total $((SECONDS - START)) s; files: $(ls "$OUT" | tr '\n' ' ')" | tee -a "$ENV_TXT"
sed -n '/^== checks/,$p' "$OUT/compare.txt"
rm -rf "$WORK"
