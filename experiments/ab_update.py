"""Two ways of running the update phase, timed interleaved in one process on the same real batch, beside the
update's ceiling measured in the same process.

    .venv/bin/python experiments/ab_update.py [--compare layout|compile|cut] [--pairs 6] [--json out.json] [overrides]

Builds the default run (``conf/train.yaml`` plus Hydra overrides), generates one real step's batch with the run's
own engine and dynamic sampling, and runs the learner's whole update on it (every mini-batch's forward/backward
passes, clipping and AdamW) alternately with side A and side B, the order reversed every other pair.

``--compare layout``:
- A: the left-padded layout (until 2026-12-01): every row of a pass padded to the pass's longest prompt plus its
  longest response, with an attention mask;
- B: ``trainer/teacher_forced.pack``: each row its prompt then its own response, padded only to the pass's
  longest ``prompt + response`` (what the token budget assumes), no attention mask.

``--compare cut``: how the token budget cuts a mini-batch's rows (sorted longest first) into passes:
- A: each pass filled while ``rows × its first row`` fits (until 2026-12-02);
- B: ``trainer/balance.micro_batches``: as few passes, and of those cuts the one computing the fewest padded tokens.

``--compare compile``: A eager, B with ``model.compile`` (``models/compile.py``: each decoder layer's training
forward compiled); the compilation happens in an untimed warm-up, whose time is printed.

 It prints each side's median seconds and response tokens/s, their ratio, the
padded/real token counts of the passes, and the ceiling: forward + backward + clip + AdamW of the same model on the
same number of real tokens with no padding at all, one pass per mini-batch. Run it alone: another torch process on the
2 cores skews it 10-100x.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from torch import Tensor

import dapo_lab.trainer.learner as learner_module
from dapo_lab.build import build, set_threads
from dapo_lab.models.compile import _COMPILED, compile_layers, compiled_layers, decoder_layers
from dapo_lab.trainer.balance import micro_batches
from dapo_lab.trainer.groups import assemble
from dapo_lab.trainer.optimization import PlainOptimization
from dapo_lab.trainer.teacher_forced import _token_logprobs, response_logprobs

sys.path.insert(0, str(Path(__file__).parent))
from update_ceiling import ceiling_shapes, ceiling_update, training_autocast  # noqa: E402  (a sibling script)

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


def filled_micro_batches(lengths: list[int], max_rows: int, max_tokens: int | None = None) -> list[list[int]]:
    """Side A of ``--compare cut``: the token-budget rule until 2026-12-02, each pass (rows sorted longest first)
    filled while ``rows × its first row`` fits; without a budget, ``micro_batches``'s consecutive runs."""
    if max_tokens is None:
        return micro_batches(lengths, max_rows)
    out: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        if out and len(out[-1]) < max_rows and (len(out[-1]) + 1) * lengths[out[-1][0]] <= max_tokens:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", choices=["layout", "compile", "cut"], default="layout")
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
    cuts = {"A": micro_batches, "B": micro_batches}
    if args.compare == "cut":
        layouts["A"], cuts["A"] = response_logprobs, filled_micro_batches
    autocast = "bf16" in str(cfg.trainer.precision)
    if args.compare == "compile":
        layouts["A"] = response_logprobs
        compile_layers(model)
        compiled = {layer: vars(layer)[_COMPILED] for layer in decoder_layers(model)}
    names = {"layout": ("A: left-padded", "B: prompt+response rows"), "compile": ("A: eager", "B: model.compile"),
             "cut": ("A: passes filled", "B: fewest padded tokens")}

    def timed_update(side: str) -> float:
        learner_module.response_logprobs, learner_module.micro_batches = layouts[side], cuts[side]
        if args.compare == "compile":
            for layer, forward in compiled.items():
                if side == "B":
                    setattr(layer, _COMPILED, forward)
                else:
                    vars(layer).pop(_COMPILED, None)
        start = time.perf_counter()
        with training_autocast(autocast):  # as Lightning's bf16-mixed step
            learner.update(batch, old_logp, None, advantages, 0, optimization)
        return time.perf_counter() - start

    timed_update("A")  # warm-up: AdamW state, allocator
    print(f"side B's warm-up (with any compilation): {timed_update('B'):.1f} s", flush=True)
    seconds: dict[str, list[float]] = {"A": [], "B": []}
    for pair in range(args.pairs):
        for side in ("AB" if pair % 2 == 0 else "BA"):
            seconds[side].append(timed_update(side))
    learner_module.response_logprobs, learner_module.micro_batches = response_logprobs, micro_batches

    # What the passes compute: rows x their padded width, per layout, against the rows' real tokens.
    lengths = batch.row_lengths()
    prompts = [len(p) for p in batch.prompt_ids]
    responses = batch.response_mask.sum(-1).tolist()
    minis = max(1, len(batch) // (cfg.batch.mini_batch_prompts * cfg.batch.group_size))
    padded = {"A": 0, "B": 0}
    for side in "AB":
        learner_module.micro_batches = cuts[side]
        for mini in learner.mini_batches(batch, 0):  # the update's own shuffled mini-batches (it ran with step 0)
            for rows in learner._micro_batches(batch, mini):
                rows = rows.tolist()
                if args.compare == "layout" and side == "A":
                    padded["A"] += len(rows) * (max(prompts[i] for i in rows) + max(responses[i] for i in rows))
                else:
                    padded[side] += len(rows) * max(lengths[i] for i in rows)
    learner_module.micro_batches = micro_batches
    real = sum(lengths)

    # The ceiling (update_ceiling.py): per optimizer step, one unpadded pass over as many rows as its mini-batch has,
    # each their mean real length: the same tokens at the model's rate (bench_step.py's, on this batch).
    shapes = ceiling_shapes(batch, minis) * cfg.batch.ppo_epochs

    def ceiling() -> float:
        with compiled_layers(model):  # the compiled forwards where side B's are installed, else eager
            return ceiling_update(model, shapes, optimization, autocast)

    gap = None
    if args.compare == "compile":  # what compilation changes in the numbers: one pass's log-probs, both ways
        rows = learner._micro_batches(batch, torch.arange(len(batch)))[0]
        mask = batch.response_mask[rows, : int(batch.response_mask[rows].sum(-1).max())]
        logps = []
        for side in "AB":
            for layer, forward in compiled.items():
                if side == "A":
                    vars(layer).pop(_COMPILED, None)
                else:
                    setattr(layer, _COMPILED, forward)
            with training_autocast(autocast):
                logps.append(learner._logprobs(model, batch, rows)[0].detach())
        for layer in compiled:  # and fp32, eager: the reference both bf16 sides approximate
            vars(layer).pop(_COMPILED, None)
        reference = learner._logprobs(model, batch, rows)[0].detach()
        gap = {"compiled vs eager, both bf16 autocast": (logps[0] - logps[1]).abs()[mask],
               "eager bf16 autocast vs fp32": (logps[0] - reference).abs()[mask],
               "compiled bf16 autocast vs fp32": (logps[1] - reference).abs()[mask]}
        for layer in compiled:  # the ceiling is the eager model's
            vars(layer).pop(_COMPILED, None)
    ceiling()
    ceiling_s = statistics.median(ceiling() for _ in range(3))
    compiled_ceiling = None
    if args.compare == "compile":  # the compiled model's own ceiling: the same unpadded passes, compiled
        for layer, forward in compiled.items():
            setattr(layer, _COMPILED, forward)
        ceiling()
        compiled_ceiling = statistics.median(ceiling() for _ in range(3))
    tokens = int(batch.response_mask.sum()) * cfg.batch.ppo_epochs
    a, b = statistics.median(seconds["A"]), statistics.median(seconds["B"])
    print(f"one real step's batch: {len(batch)} rows, {tokens} response tokens, {real} real tokens; "
          f"{args.pairs} interleaved pairs, threads {torch.get_num_threads()}")
    print("| side | median s | response tok/s | padded tokens / real | of the ceiling |\n|---|--:|--:|--:|--:|")
    if args.compare == "compile":  # one layout on both sides
        padded["A"] = padded["B"]
    print(f"| {names[args.compare][0]} | {a:.3f} | {tokens / a:,.0f} | {padded['A'] / real:.3f} | "
          f"{ceiling_s / a:.2f} |")
    print(f"| {names[args.compare][1]} | {b:.3f} | {tokens / b:,.0f} | {padded['B'] / real:.3f} | "
          f"{ceiling_s / b:.2f} |")
    print(f"| ceiling: no padding, eager | {ceiling_s:.3f} | {tokens / ceiling_s:,.0f} | 1.000 | 1.00 |")
    if compiled_ceiling is not None:
        print(f"| ceiling: no padding, compiled | {compiled_ceiling:.3f} | {tokens / compiled_ceiling:,.0f} | 1.000 | "
              f"{ceiling_s / compiled_ceiling:.2f} |")
        print(f"B against its own (compiled) ceiling: {compiled_ceiling / b:.2f}")
    print(f"B / A speed-up: {a / b:.3f}x")
    if gap is not None:
        for name, diff in gap.items():
            print(f"log-probs of one pass ({int(mask.sum())} tokens), {name}: |diff| mean "
                  f"{diff.mean():.2e}, max {diff.max():.2e}")
    if args.json:
        args.json.write_text(json.dumps({"compare": args.compare, "seconds": seconds, "ceiling_s": ceiling_s,
                                         "compiled_ceiling_s": compiled_ceiling,
                                         "padded": padded, "real": real,
                                         "response_tokens": tokens, "overrides": overrides}, indent=1))


if __name__ == "__main__":
    main()
