"""The update phase with this project's row layout against the left-padded layout it replaced, timed interleaved
in one process on the same real batch, beside the update's ceiling measured in the same process.

    .venv/bin/python experiments/ab_update.py [--pairs 6] [--json out.json] [override ...]

Builds the default run (``conf/train.yaml`` plus Hydra overrides), generates one real step's batch with the run's
own engine and dynamic sampling, and runs the learner's whole update on it (every mini-batch's forward/backward
passes, clipping and AdamW) alternately with

- A: the left-padded layout (until 2026-12-01): every row of a pass padded to the pass's longest prompt plus its
  longest response, with an attention mask;
- B: ``trainer/teacher_forced.pack``: each row its prompt then its own response, padded only to the pass's
  longest ``prompt + response`` (what the token budget assumes), no attention mask,

the order reversed every other pair. It prints each side's median seconds and response tokens/s, their ratio, the
padded/real token counts of the passes, and the ceiling: forward + backward + clip + AdamW of the same model on the
same rows' real tokens with no padding at all, one pass per mini-batch. Run it alone: another torch process on the
2 cores skews it 10-100x.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from torch import Tensor

import dapo_lab.trainer.learner as learner_module
from dapo_lab.build import build, set_threads
from dapo_lab.trainer.groups import assemble
from dapo_lab.trainer.optimization import PlainOptimization
from dapo_lab.trainer.teacher_forced import _token_logprobs, response_logprobs

CONF = Path(__file__).resolve().parents[1] / "conf"


def left_padded_logprobs(model: torch.nn.Module, prompt_ids: list[list[int]], response_ids: Tensor, *, pad_id: int,
                         temperature: float = 1.0, with_entropy: bool = False, **_: object
                         ) -> tuple[Tensor, Tensor | None]:
    """Side A, the layout before 2026-12-01: prompts left-padded to the longest, responses right-padded to ``R``,
    positions counting real tokens, an attention mask, the head over the last ``R + 1`` positions."""
    width = max(len(p) for p in prompt_ids)
    n, r = response_ids.shape
    prompts = torch.full((n, width), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((n, width), dtype=torch.long)
    for row, p in enumerate(prompt_ids):
        prompts[row, width - len(p):] = torch.tensor(p, dtype=torch.long)
        prompt_mask[row, width - len(p):] = 1
    input_ids = torch.cat([prompts, response_ids], dim=1)  # [N, P+R]
    attention = torch.cat([prompt_mask, torch.ones((n, r), dtype=torch.long)], dim=1)  # [N, P+R]
    positions = (attention.cumsum(-1) - 1).clamp(min=0)  # [N, P+R]
    logits = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=False,
                   logits_to_keep=r + 1).logits[:, :-1]  # [N, R, V]
    return _token_logprobs(logits, response_ids, temperature, with_entropy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--json", type=Path, help="also write the timings here")
    args, overrides = parser.parse_known_args()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["trainer.enable_progress_bar=false", *overrides])
    set_threads(cfg.get("threads"))
    with tempfile.TemporaryDirectory() as tmp:
        built = build(cfg, Path(tmp))
    learner = built.learner
    shared, _ = learner.collect_groups(0)
    batch = assemble(shared.groups, learner.pad_id, shared.positions, shared.total, cfg.batch.group_size)
    old_logp, _, _ = learner.score(batch)
    advantages, _ = learner.advantage(batch.rewards, cfg.batch.group_size)
    model = learner.model.train()
    optimization = PlainOptimization(torch.optim.AdamW(model.parameters(), lr=1e-12), model.parameters(), 1.0)
    layouts = {"A": left_padded_logprobs, "B": response_logprobs}

    def timed_update(side: str) -> float:
        learner_module.response_logprobs = layouts[side]
        start = time.perf_counter()
        learner.update(batch, old_logp, None, advantages, 0, optimization)
        return time.perf_counter() - start

    timed_update("A"), timed_update("B")  # warm-up: AdamW state, allocator
    seconds: dict[str, list[float]] = {"A": [], "B": []}
    for pair in range(args.pairs):
        for side in ("AB" if pair % 2 == 0 else "BA"):
            seconds[side].append(timed_update(side))
    learner_module.response_logprobs = response_logprobs

    # What the passes compute: rows x their padded width, per layout, against the rows' real tokens.
    lengths = batch.row_lengths()
    prompts = [len(p) for p in batch.prompt_ids]
    responses = batch.response_mask.sum(-1).tolist()
    minis = len(batch) // (cfg.batch.mini_batch_prompts * cfg.batch.group_size)
    padded = {"A": 0, "B": 0}
    for mini in torch.arange(len(batch)).tensor_split(minis):
        for rows in learner._micro_batches(batch, mini):
            rows = rows.tolist()
            padded["A"] += len(rows) * (max(prompts[i] for i in rows) + max(responses[i] for i in rows))
            padded["B"] += len(rows) * max(lengths[i] for i in rows)
    real = sum(lengths)

    # The ceiling: the same rows, one unpadded pass per mini-batch (each row alone: no padding, no mask), i.e. the
    # same tokens at the model's rate with nothing lost to layout. Rows of one length share a forward.
    def ceiling_update() -> float:
        start = time.perf_counter()
        optimization.zero_grad()
        for mini in torch.arange(len(batch)).tensor_split(minis):
            by_length: dict[int, list[int]] = {}
            for i in mini.tolist():
                by_length.setdefault(lengths[i], []).append(i)
            for rows in by_length.values():
                ids = torch.tensor([batch.prompt_ids[i] + batch.response_ids[i, :responses[i]].tolist() for i in rows])
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled="bf16" in str(cfg.trainer.precision)):
                    logits = model(input_ids=ids, use_cache=False).logits  # [n, L, V]
                    loss = torch.log_softmax(logits.float(), -1)[..., 0].mean()
                optimization.backward(loss)
            optimization.step(last=False)
            optimization.zero_grad()
        return time.perf_counter() - start

    ceiling_update()
    ceiling = statistics.median(ceiling_update() for _ in range(3))
    tokens = int(batch.response_mask.sum()) * cfg.batch.ppo_epochs
    a, b = statistics.median(seconds["A"]), statistics.median(seconds["B"])
    print(f"one real step's batch: {len(batch)} rows, {tokens} response tokens, {real} real tokens; "
          f"{args.pairs} interleaved pairs, threads {torch.get_num_threads()}")
    print("| side | median s | response tok/s | padded tokens / real | of the ceiling |\n|---|--:|--:|--:|--:|")
    print(f"| A: left-padded | {a:.3f} | {tokens / a:,.0f} | {padded['A'] / real:.3f} | {ceiling / a:.2f} |")
    print(f"| B: prompt+response rows | {b:.3f} | {tokens / b:,.0f} | {padded['B'] / real:.3f} | {ceiling / b:.2f} |")
    print(f"| ceiling: no padding | {ceiling:.3f} | {tokens / ceiling:,.0f} | 1.000 | 1.00 |")
    print(f"B / A speed-up: {a / b:.3f}x")
    if args.json:
        args.json.write_text(json.dumps({"seconds": seconds, "ceiling_s": ceiling, "padded": padded, "real": real,
                                         "response_tokens": tokens, "overrides": overrides}, indent=1))


if __name__ == "__main__":
    main()
