#!/usr/bin/env bash
# One-shot check of the CUDA paths on a lent GPU machine (one H100/H200, no internet), which CI never has:
# the trainer with strategy=fsdp and with the default strategy, the HF rollout engine on cuda (greedy vs
# model.generate, engine log-probs vs the trainer's recompute, fp32 and bf16 autocast, throughput), the FSDP
# weight gather behind the vLLM weight push (nccl, world size 1), and the CPU test suite on that stack.
#
#   run(command="bash experiments/gpu_check.sh", carry=[".gpu-wheels"], timeout_s=480)
#
# .gpu-wheels/ (ignored) holds pure-Python wheels of what the machine's image lacks (hydra-core, omegaconf,
# antlr4 4.9.3, math-verify, latex2sympy2_extended) and of the test stack in case it lacks that too; only
# modules that fail to import are installed. Every step has a timeout capped by a global budget
# (GPU_CHECK_BUDGET seconds, default 450) and failures do not stop later steps. Writes exactly 8 files to
# $OUT: env.txt (versions, install log, one line per step with its exit code), cuda_engine.txt, gather.txt,
# train_fsdp.log, train_auto.log, metrics_fsdp.csv, metrics_auto.csv, pytest.log.
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
: >"$ENV_TXT"

export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false WANDB_MODE=offline
export HF_HOME="$WORK/hf" DAPO_CACHE="$WORK/dapo_cache" TRITON_CACHE_DIR="$WORK/triton" PIP_DISABLE_PIP_VERSION_CHECK=1

# step FILE LIMIT_S CMD...: run CMD under a timeout capped by the budget left, output to $OUT/FILE.
step() {
    local file=$1 limit=$2 left t0=$SECONDS rc=0
    shift 2
    left=$((BUDGET - (SECONDS - START) - 10))
    if ((limit > left)); then limit=$left; fi
    if ((limit < 15)); then
        echo "step $file: skipped, budget spent" | tee -a "$ENV_TXT"
        return 0
    fi
    timeout -k 10 "$limit" "$@" >>"$OUT/$file" 2>&1 || rc=$?
    echo "step $file: rc=$rc in $((SECONDS - t0)) s (limit $limit s)" | tee -a "$ENV_TXT"
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
    # src/ on the path of every interpreter, including the tests' subprocesses that start with a bare env.
    purelib=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    if echo "$ROOT/src" >"$purelib/dapo_lab_src.pth"; then echo "wrote $purelib/dapo_lab_src.pth"; fi
    export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
    "$PY" -c 'import dapo_lab, hydra, omegaconf, math_verify; print("dapo_lab from", dapo_lab.__file__)'
} >>"$ENV_TXT" 2>&1

# ---------------------------------------------------------------- versions
{
    echo "== versions (commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
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
for name in ["lightning", "pytorch-lightning", "transformers", "tokenizers", "hydra-core", "omegaconf",
             "antlr4-python3-runtime", "math-verify", "latex2sympy2_extended", "sympy", "pandas", "numpy", "pytest",
             "pytest-xdist", "pytest-timeout", "hypothesis", "vllm"]:
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "-")
PY
    echo "== steps"
} >>"$ENV_TXT" 2>&1

# ---------------------------------------------------------------- (c) HF rollout engine on cuda
step cuda_engine.txt 120 "$PY" - <<'PY'
"""HFEngine on cuda: greedy tokens vs model.generate, engine log-probs vs the trainer's recompute (fp32 and
bf16 autocast, eager and sdpa decode), seeds, truncation invariants, cuda vs cpu, and decode throughput."""
import contextlib
import copy
import time
import traceback

import torch

from dapo_lab.models.tiny import build_tiny
from dapo_lab.trainer.teacher_forced import response_logprobs
from dapo_lab.rollout import HFEngine, SamplingParams

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

# ---------------------------------------------------------------- (d) FSDP weight gather (vLLM weight push)
step gather.txt 90 "$PY" - <<'PY'
"""full_state_dict on cuda with one nccl rank: FSDP2 (fully_shard), FSDP1 units nested in the model,
and FSDP1 wrapping a parent module (Lightning's strategy=fsdp) inside summon_full_params, as
DAPOModule.sync_rollout_weights does. One rank: FSDP1 falls back to NO_SHARD, FSDP2 shards over a mesh of 1."""
import os
import traceback

import torch
import torch.distributed as dist

os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
os.environ.setdefault("MASTER_PORT", "29611")
torch.cuda.set_device(0)
dist.init_process_group("nccl", rank=0, world_size=1)
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP  # noqa: E402

from dapo_lab.models.tiny import build_tiny  # noqa: E402
from dapo_lab.trainer.distributed import full_state_dict  # noqa: E402


def fresh():
    model, _ = build_tiny(seed=0, hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128)
    return model.cuda(), {k: v.clone() for k, v in model.state_dict().items()}


def report(name, full, reference):
    names = sorted(full) == sorted(reference)
    result = {"same_names": names, "plain_tensors": all(type(v) is torch.Tensor for v in full.values()),
              "equal": names and all(torch.equal(full[k].cpu(), reference[k].cpu()) for k in reference),
              "devices": sorted({str(v.device) for v in full.values()})}
    if not names:
        result["missing"] = sorted(set(reference) - set(full))[:4]
        result["extra"] = sorted(set(full) - set(reference))[:4]
    print(name, result, flush=True)


def case(fn, *args):
    try:
        fn(*args)
    except Exception:
        print(fn.__name__, *args, "FAILED:\n" + traceback.format_exc(), flush=True)


def fsdp2():
    from torch.distributed.fsdp import fully_shard

    model, reference = fresh()
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    print("fsdp2 sharded:", all(type(p).__name__ == "DTensor" for p in model.parameters()))
    report("fsdp2", full_state_dict(model), reference)


def fsdp1_nested(use_orig_params):
    model, reference = fresh()
    for i, layer in enumerate(model.model.layers):
        model.model.layers[i] = FSDP(layer, device_id=0, use_orig_params=use_orig_params)
    report(f"fsdp1_nested use_orig_params={use_orig_params}", full_state_dict(model), reference)


def fsdp1_root(use_orig_params):
    model, reference = fresh()
    parent = torch.nn.Module()
    parent.model = model  # like the LightningModule that holds the policy
    root = FSDP(parent, device_id=0, use_orig_params=use_orig_params)
    with FSDP.summon_full_params(root, writeback=False):
        full = {k: v.clone() for k, v in full_state_dict(root.module.model).items()}
    report(f"fsdp1_root+summon use_orig_params={use_orig_params}", full, reference)


case(fsdp2)
for orig in (True, False):
    case(fsdp1_nested, orig)
    case(fsdp1_root, orig)
dist.destroy_process_group()
PY

# ---------------------------------------------------------------- (a) trainer smoke runs on the GPU
run_train() {  # run_train NAME OVERRIDES...
    local name=$1
    shift
    step "train_$name.log" 150 "$PY" train.py debug=tiny trainer.max_steps=3 "hydra.run.dir=$WORK/run_$name" "$@"
    local csv
    csv=$(find "$WORK/run_$name" -name metrics.csv 2>/dev/null | head -n 1)
    if [ -n "$csv" ]; then cp "$csv" "$OUT/metrics_$name.csv"; else echo "no metrics.csv for $name" >>"$ENV_TXT"; fi
}
run_train fsdp trainer=gpu_fsdp trainer.devices=1
run_train auto trainer.accelerator=gpu trainer.devices=1 trainer.strategy=auto trainer.precision=bf16-mixed

# ---------------------------------------------------------------- (b) the CPU test suite on this stack
xdist=()
if "$PY" -c 'import xdist' 2>/dev/null; then xdist=(-n 6); fi
OMP_NUM_THREADS=2 step pytest.log 240 "$PY" -m pytest -p no:cacheprovider -m "not slow" --timeout 150 -rfEs \
    --durations 15 ${xdist[@]+"${xdist[@]}"} tests/algo tests/trainer tests/rollout tests/models tests/test_configs.py \
    src/dapo_lab

echo "total $((SECONDS - START)) s; files: $(ls "$OUT" | tr '\n' ' ')" | tee -a "$ENV_TXT"
rm -rf "$WORK"
