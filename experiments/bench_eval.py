"""What one evaluation of the default run costs, by how many prompts a generation call takes.

    .venv/bin/python experiments/bench_eval.py [--batch-prompts 32 64 128 256] [--max-prompts N] [override ...]

Builds the default run (``conf/train.yaml`` plus overrides; the warm start is cached), then evaluates the warm-started
policy on the eval split once per ``--batch-prompts`` value, with the run's own evaluator (avg@k samples and greedy,
the engine's fast path) and prints seconds, decoded tokens/s and the metrics, which must not depend on the batch
size beyond sampling noise (each call seeds its samples from its first prompt, so they do change a little). Run it
alone: another torch process on the 2 cores skews it 10-100x.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from dapo_lab.build import build, set_threads

CONF = Path(__file__).resolve().parents[1] / "conf"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-prompts", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--max-prompts", type=int, help="evaluate only the first N problems")
    args, overrides = parser.parse_known_args()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["trainer.enable_progress_bar=false", *overrides])
    set_threads(cfg.get("threads"))
    with tempfile.TemporaryDirectory() as tmp:
        built = build(cfg, Path(tmp))
        evaluator = built.learner.evaluator
        built.learner.model.eval()  # as in Lightning's validation loop
        evaluator.rollout.update_weights(built.learner.model)  # the engine decodes the current policy
        count = min(len(evaluator), args.max_prompts or len(evaluator))
        print(f"eval split: {count} prompts, k={evaluator.settings.k}, greedy={evaluator.settings.greedy}, "
              f"max_new_tokens={evaluator.max_new_tokens}")
        print("| prompts per call | seconds | decoded tok/s | avg@k | greedy |\n|--:|--:|--:|--:|--:|")
        settings = evaluator.settings
        for size in args.batch_prompts:
            evaluator.settings = dataclasses.replace(settings, batch_prompts=size)
            start, rows = time.perf_counter(), []
            for first in range(0, count, size):
                rows += evaluator.evaluate(list(range(first, min(first + size, count))))
            seconds = time.perf_counter() - start
            metrics = evaluator.summarize(rows)
            k = settings.k
            tokens = sum(r["len"] * k for r in rows)  # sampled tokens (the greedy pass not counted)
            print(f"| {size} | {seconds:.3f} | {tokens / seconds:,.0f} | {metrics[f'eval/avg@{k}']:.3f} | "
                  f"{metrics.get('eval/greedy_acc', float('nan')):.3f} |")
        evaluator.settings = settings


if __name__ == "__main__":
    main()
