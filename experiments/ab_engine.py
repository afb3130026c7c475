"""Two settings of the rollout engine, timed interleaved in one process on the same seeded round.

    .venv/bin/python experiments/ab_engine.py --a attn_implementation=sdpa --b attn_implementation=grouped \
        [--pairs 8] [--prompts 16] [override ...]

Builds the default run's policy (``conf/train.yaml`` plus Hydra overrides) and its engine, then generates the
same seeded round (``--prompts`` training prompts × ``group_size``, the run's temperature and length) alternately
with the engine's attributes set to A and to B, the order reversed every other pair, and prints each side's median
seconds and tokens/s, their ratio, and whether the two decoded the same tokens. Interleaving is what makes a
10% lever visible on a machine whose speed drifts more than that between separate runs (this 2-core CPU drifted
by up to 30% in a day). Run it alone: another torch process on the 2 cores skews it 10-100x.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml
from hydra import compose, initialize_config_dir

from dapo_lab.build import build, set_threads
from dapo_lab.rollout import SamplingParams

CONF = Path(__file__).resolve().parents[1] / "conf"


def settings(pairs: list[str]) -> dict[str, object]:
    """``["attn_implementation=sdpa", "max_batch=64"]`` → ``{"attn_implementation": "sdpa", "max_batch": 64}``.

    >>> settings(["dtype=null", "max_batch=64", "attn_implementation=grouped"])
    {'dtype': None, 'max_batch': 64, 'attn_implementation': 'grouped'}
    """
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"engine setting {pair!r} is not name=value")
        out[name] = yaml.safe_load(value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", nargs="+", required=True, help="engine attributes of side A, name=value")
    parser.add_argument("--b", nargs="+", required=True, help="engine attributes of side B, name=value")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=16, help="training prompts per round (× group_size rows)")
    parser.add_argument("--json", type=Path, help="also write the timings here")
    args, overrides = parser.parse_known_args()
    sides = {"A": settings(args.a), "B": settings(args.b)}
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["trainer.enable_progress_bar=false", *overrides])
    set_threads(cfg.get("threads"))
    with tempfile.TemporaryDirectory() as tmp:
        learner = build(cfg, Path(tmp)).learner
    engine = learner.rollout
    for name in {key for side in sides.values() for key in side}:
        if not hasattr(engine, name):
            raise SystemExit(f"{type(engine).__name__} has no setting {name!r}")
    prompts = [learner.train.ids(i) for i in range(args.prompts)]
    params = SamplingParams(temperature=cfg.generation.temperature, top_p=cfg.generation.top_p,
                            max_new_tokens=cfg.generation.max_new_tokens, n=cfg.batch.group_size, seed=0)
    engine.update_weights(learner.model)
    engine.generate(prompts[:2], params)  # warm-up: kernels, allocator
    seconds, outs = {"A": [], "B": []}, {}
    for pair in range(args.pairs):
        for side in ("A", "B") if pair % 2 == 0 else ("B", "A"):
            for name, value in sides[side].items():
                setattr(engine, name, value)
            start = time.perf_counter()
            outs[side] = engine.generate(prompts, params)
            seconds[side].append(time.perf_counter() - start)
    tokens = {side: int(out.response_mask.sum()) for side, out in outs.items()}
    median = {side: statistics.median(times) for side, times in seconds.items()}
    print(f"{args.pairs} interleaved pairs, {len(prompts) * params.n} rows, threads {torch.get_num_threads()}, "
          f"overrides {overrides or 'none'}")
    for side in ("A", "B"):
        print(f"{side} {sides[side]}: median {median[side]:.3f} s, {tokens[side] / median[side]:,.0f} tok/s, "
              f"all {[round(t, 3) for t in seconds[side]]}")
    same = torch.equal(outs["A"].response_ids, outs["B"].response_ids)
    diff = (outs["A"].logprobs - outs["B"].logprobs).abs().max().item() if same else float("nan")
    print(f"A / B seconds: {median['A'] / median['B']:.3f}; same tokens: {same}; max log-prob diff {diff:.1e}")
    if args.json:
        args.json.write_text(json.dumps({"sides": sides, "seconds": seconds, "tokens": tokens, "same": same}))


if __name__ == "__main__":
    main()
