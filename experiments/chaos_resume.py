"""Random SIGKILLs against the resume path: how many kills, what survived, what was lost.

    .venv/bin/python experiments/chaos_resume.py [--runs 5] [--steps 6] [--kills 4] [--trainer cpu] [--seed 0] \
        [--min-delay S] [--max-delay S] [override ...]

Each run is the tiny test configuration (``tests/kill_check.py``: checkpoint every step, evals every 2 steps, a fixed
run directory, ``resume=auto``). The run is started, SIGKILLed (its whole process group: every rank) after a random
delay, started again with the same command, and so on ``--kills`` times; then it is left to finish. Its final
``metrics.csv`` is compared, every logged number but timings, with an uninterrupted run's. After each kill the
script also checks what a kill may leave: the metrics file parses, and the newest checkpoint loads.

Prints one line per kill (when, the newest complete checkpoint, the last logged step) and a summary; writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "kill_check.py"
TIMING = ("time/", "perf/")


OVERRIDES: list[str] = []


def start(run_dir: Path, steps: int, trainer: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": str(random.randint(29000, 29999))}
    return subprocess.Popen([sys.executable, str(SCRIPT), str(run_dir), str(steps), f"trainer={trainer}", *OVERRIDES],
                            cwd=run_dir.parent, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def numbers(run_dir: Path) -> pd.DataFrame:
    df = pd.read_csv(run_dir / "csv" / "metrics.csv")
    return df[[c for c in df.columns if not c.startswith(TIMING)]].groupby("step").first().sort_index()


def newest_checkpoint(run_dir: Path) -> str:
    from dapo_lab.trainer.checkpoints import latest_checkpoint

    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        return "none"
    if ckpt.is_file():
        torch.load(ckpt, map_location="cpu", weights_only=False)  # a complete checkpoint loads
    return ckpt.name


def one_run(base: Path, index: int, args: argparse.Namespace, reference: pd.DataFrame, rng: random.Random) -> dict:
    run_dir = base / f"run{index}"
    run_dir.mkdir()
    kills = []
    for _ in range(args.kills):
        proc = start(run_dir, args.steps, args.trainer)
        delay = rng.uniform(args.min_delay, args.max_delay)
        try:
            proc.wait(timeout=delay)  # finished before the kill came
            break
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        logged = None
        if (run_dir / "csv" / "metrics.csv").is_file():  # it parses whenever the kill came
            trained = numbers(run_dir).get("actor/num_updates")
            logged = None if trained is None else trained.dropna().index.max()
        kills.append({"after_s": round(delay, 2), "newest_checkpoint": newest_checkpoint(run_dir),
                      "last_logged_step": None if logged is None or pd.isna(logged) else int(logged)})
        print(f"run {index} kill {len(kills)} at {delay:.1f} s: {kills[-1]}", flush=True)
    proc = start(run_dir, args.steps, args.trainer)
    proc.wait(timeout=600)
    final = numbers(run_dir)
    same = final.shape == reference.shape and final.equals(reference)
    return {"run": index, "kills": kills, "exit": proc.returncode, "identical_to_uninterrupted": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--kills", type=int, default=4)
    parser.add_argument("--trainer", default="cpu")
    parser.add_argument("--min-delay", type=float, default=2.0)
    parser.add_argument("--max-delay", type=float, default=9.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="JSON results (default: print only)")
    args, overrides = parser.parse_known_args()
    OVERRIDES.extend(overrides)  # Hydra overrides for every run, e.g. batch.group_size=8
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        straight = base / "straight"
        straight.mkdir()
        start(straight, args.steps, args.trainer).wait(timeout=600)
        reference = numbers(straight)
        results = [one_run(base, i, args, reference, rng) for i in range(args.runs)]
    kills = [k for r in results for k in r["kills"]]
    summary = {"trainer": args.trainer, "overrides": OVERRIDES, "runs": len(results), "kills": len(kills),
               "runs_identical_to_uninterrupted": sum(r["identical_to_uninterrupted"] for r in results),
               "runs_finished": sum(r["exit"] == 0 for r in results), "results": results}
    print(json.dumps({k: v for k, v in summary.items() if k != "results"}))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    start_time = time.time()
    main()
    print(f"{time.time() - start_time:.0f} s")
