#!/usr/bin/env bash
# Hyperparameter probe of the default run on a lent GPU machine: several `train.py` configurations at once on
# one GPU (the tiny model needs < 1 GiB each), so a question that costs an hour of the 2-core CPU takes minutes.
# Accuracy effects carry over to the CPU default (same algorithm, same data; bf16 numerics differ slightly);
# timings do not. Uses the install step of gpu_check.sh (carry .gpu-wheels).
#
#   run(command="bash experiments/gpu_probe.sh", carry=[".gpu-wheels"], timeout_s=420)
#
# Writes $OUT/summary.txt (eval curve per configuration) and $OUT/env.txt.
set -u
PY=${PY:-python3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/gpu_check_out}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/gpu_probe.XXXXXX)
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false DAPO_CACHE="$WORK/cache"
need=()
for pair in hydra:hydra_core omegaconf:omegaconf antlr4:antlr4_python3_runtime math_verify:math_verify \
            latex2sympy2_extended:latex2sympy2_extended; do
    "$PY" -c "import ${pair%%:*}" 2>/dev/null || need+=(.gpu-wheels/"${pair#*:}"-[0-9]*.whl)
done
((${#need[@]})) && "$PY" -m pip install -q --no-index --no-deps --no-cache-dir "${need[@]}" >"$OUT/env.txt" 2>&1
export PYTHONPATH="$ROOT/src"
GPU="trainer.accelerator=gpu trainer.devices=1 trainer.enable_progress_bar=false threads=2 evaluation.every=25 +logger.flush_logs_every_n_steps=5"
STEPS=${STEPS:-100}
# Warm start once (cached under DAPO_CACHE), then every configuration in parallel.
timeout 200 "$PY" -c "
from hydra import compose, initialize_config_dir
from dapo_lab.build import instantiate
with initialize_config_dir(config_dir='$ROOT/conf', version_base=None):
    cfg = compose('train')
instantiate(cfg.model).load(task=instantiate(cfg.data))
" >>"$OUT/env.txt" 2>&1
declare -A RUNS=(
  [default]=""
  [lr3e5]="optim.lr=3e-5"
  [lr8e5]="optim.lr=8e-5"
  [len128]="max_response_len=128 overlong_cache_len=32"
  [mb1_lr15e6]="batch.mini_batch_prompts=1 optim.lr=1.5e-5"
  [g16]="batch.group_size=16 batch.prompts_per_step=8 batch.gen_prompts=8 batch.mini_batch_prompts=2"
  [grpo]="experiment=grpo"
  [lr5e5_mb2]="batch.mini_batch_prompts=2 optim.lr=5e-5"
)
for name in "${!RUNS[@]}"; do
    # shellcheck disable=SC2086
    timeout 330 "$PY" train.py $GPU trainer.max_steps=$STEPS ${RUNS[$name]} hydra.run.dir="$WORK/$name" \
        >"$WORK/$name.log" 2>&1 &
done
wait
{
    for name in "${!RUNS[@]}"; do
        echo "== $name: ${RUNS[$name]}"
        "$PY" - "$WORK/$name" <<'PY'
import csv, glob, sys
files = glob.glob(f"{sys.argv[1]}/csv/**/metrics.csv", recursive=True) + glob.glob(f"{sys.argv[1]}/**/metrics.csv", recursive=True)
if not files:
    print("no metrics"); sys.exit()
rows = list(csv.DictReader(open(files[0])))
for r in rows:
    if r.get("eval/avg@4"):
        print(f"step {int(float(r['step'])):4d} avg@4 {float(r['eval/avg@4']):.3f} greedy {float(r['eval/greedy_acc']):.3f} "
              f"pass@4 {float(r['eval/pass@4']):.3f} trunc {float(r['eval/truncated_frac']):.3f}")
ent = [float(r["train/entropy"]) for r in rows if r.get("train/entropy")]
clip = [float(r["actor/clipfrac_high"]) + float(r["actor/clipfrac_low"]) for r in rows if r.get("actor/clipfrac_high")]
if ent:
    print(f"entropy first {ent[0]:.3f} last {ent[-1]:.3f}; clipfrac mean {sum(clip)/len(clip):.4f}; steps {len(ent)}")
PY
        tail -n 3 "$WORK/$name.log" | cut -c1-300
    done
} >"$OUT/summary.txt" 2>&1
cat "$OUT/summary.txt"
