"""Data-parallel scaling on this machine: the default run's step with 1 process against 2 (each strategy), the same
global batch, side by side in one invocation.

    .venv/bin/python experiments/bench_scaling.py [--steps 6] [--trainers cpu cpu_ddp cpu_fsdp] [override ...]

Each configuration runs ``train.py`` (the default run: warm-started tiny model, 16 prompts × 8 responses per step)
for ``--steps`` steps with a small eval, as its own process tree; with N processes, ``batch.prompts_per_step`` and
``batch.gen_prompts`` are divided by N so the global batch is the same, and each process gets ``threads / N`` torch
threads (the 2 cores are shared). Reported, over the steps after the first: seconds per step, generated and trained
tokens per second summed over ranks (rank 0's own counts × N: the deal gives every rank the same number of groups),
generation rounds, and the speed-up against the 1-process run. Run it alone: another torch job skews it 10-100x.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
PROCESSES = {"cpu": 1, "cpu_ddp": 2, "cpu_fsdp": 2, "cpu_deepspeed_zero2": 2, "cpu_deepspeed_zero3": 2}


def run(trainer: str, steps: int, threads: int, overrides: list[str], out: Path) -> dict[str, float]:
    world = PROCESSES[trainer]
    # The same global batch whatever N: 16 prompts per step, 4 updates of 4 groups each.
    cmd = [sys.executable, "train.py", f"trainer={trainer}", f"trainer.max_steps={steps}",
           f"threads={threads // world}", f"batch.prompts_per_step={16 // world}", f"batch.gen_prompts={16 // world}",
           f"batch.mini_batch_prompts={4 // world}", "evaluation.max_prompts=16", f"evaluation.every={steps}",
           "trainer.enable_progress_bar=false", f"hydra.run.dir={out}", *overrides]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True,
                   env={**os.environ, "OMP_NUM_THREADS": str(threads // world)}, timeout=1800)
    wall = time.perf_counter() - start
    df = pd.read_csv(out / "csv" / "metrics.csv")
    train = df[df["actor/num_updates"].notna()].iloc[1:]  # the first step pays one-off allocations
    return {"processes": world, "s/step": train["time/step"].mean(), "generate s": train["time/generate"].mean(),
            "update s": train["time/update"].mean(),
            "generated tok/s": train["rollout/tokens"].mean() * world / train["time/step"].mean(),
            "rounds": train["sampling/num_gen_batches"].mean(), "wall s": wall, "steps timed": len(train)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--trainers", nargs="+", default=["cpu", "cpu_ddp", "cpu_fsdp"])
    args, overrides = parser.parse_known_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for trainer in args.trainers:
            rows[trainer] = run(trainer, args.steps, args.threads, overrides, Path(tmp) / trainer)
            print(trainer, json.dumps({k: round(v, 3) for k, v in rows[trainer].items()}), flush=True)
    base = rows[args.trainers[0]]["s/step"]
    print("\n| trainer | processes | s/step | generate s | update s | generated tok/s | rounds | speed-up |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|")
    for name, r in rows.items():
        print(f"| {name} | {r['processes']} | {r['s/step']:.2f} | {r['generate s']:.2f} | {r['update s']:.2f} | "
              f"{r['generated tok/s']:,.0f} | {r['rounds']:.1f} | {base / r['s/step']:.2f}x |")


if __name__ == "__main__":
    main()
