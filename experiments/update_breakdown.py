"""Where the update's time goes against its ceiling, on one real step's batch, in one process.

    .venv/bin/python experiments/update_breakdown.py [--rounds 5] [--budgets 2600,2000,1400,4000] [override ...]

Trains two steps of the run (``conf/train.yaml`` plus Hydra overrides), keeps the last step's batch, and times on it:

1. **Passes**, forward and backward separately (no optimizer step), summed over the update's own passes: the
   step's shuffled mini-batches (``DAPOLearner.mini_batches``), each cut into token-budget micro-batches:
   - ``update``: the learner's log-probs of each pass (``DAPOLearner._logprobs``) with and without the entropy;
   - ``body, padded rows``: the decoder body alone on the same packed rows (no head, no log-probs);
   - ``body, mean-length rows``: the body on as many rows per pass, each the pass's mean real length (no padding);
   - ``ceiling pass``: that, plus the head over the mean response length and the log-probs (the ceiling's pass,
     ``update_ceiling.py``, at the update's pass count);
   - ``ceiling``: the ceiling's own passes, one per optimizer step.
   So: padding = body padded − body mean; pass count = ceiling pass − ceiling; head, log-probs, entropy = update −
   body padded.
2. **Token budgets**: the whole update replayed with each ``batch.max_tokens_per_micro_batch`` in ``--budgets``,
   interleaved with the ceiling, and each one's padded tokens per real one.

Every kind runs once untimed, then ``--rounds`` times in turn (order reversed every other round); medians are printed.
Run it alone: another torch process on the 2 cores skews it 10-100x.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from torch import Tensor

from dapo_lab.build import build, set_threads
from dapo_lab.trainer.optimization import PlainOptimization
from dapo_lab.trainer.teacher_forced import _token_logprobs, pack

sys.path.insert(0, str(Path(__file__).parent))
from update_ceiling import (  # noqa: E402  (a sibling script, not a package)
    capture_updates,
    ceiling_shapes,
    ceiling_update,
    replay_update,
    training_autocast,
)

CONF = Path(__file__).resolve().parents[1] / "conf"


def rounds_of(kinds: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[object]]:
    """Each kind's results over ``rounds`` rounds, after one untimed call of each; the order reversed every other."""
    for run in kinds.values():
        run()
    out: dict[str, list[object]] = {name: [] for name in kinds}
    for r in range(rounds):
        for name in (list(kinds) if r % 2 == 0 else list(kinds)[::-1]):
            out[name].append(kinds[name]())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--budgets", type=lambda text: [int(b) for b in text.split(",")],
                        default=[2600, 2000, 1400, 4000],
                        help="token budgets to replay, comma-separated (default 2600,2000,1400,4000)")
    args, overrides = parser.parse_known_args()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["trainer.max_steps=2", "trainer.enable_progress_bar=false",
                                                      "evaluation.every=3", *overrides])
    set_threads(cfg.get("threads"))
    with tempfile.TemporaryDirectory() as tmp:
        built = build(cfg, Path(tmp))
        captured = capture_updates(built.learner)
        built.trainer.fit(built.module)
    if captured.args is None:
        raise SystemExit("no step had an informative group: nothing to replay (try sampling=none)")
    learner, batch = built.learner, captured.args[0]
    model = learner.model.train()
    autocast = "bf16" in str(cfg.trainer.precision)
    updates = cfg.batch.prompts_per_step // cfg.batch.mini_batch_prompts
    minis = learner.mini_batches(batch, captured.args[4])  # the update's own (shuffled) mini-batches of that step
    passes = [rows for mini in minis for rows in learner._micro_batches(batch, mini)]
    lengths, responses = batch.row_lengths(), batch.response_mask.sum(-1).tolist()
    vocab = model.config.vocab_size

    def mean_of(values: list[int], rows: Tensor) -> int:
        return max(1, round(sum(values[i] for i in rows.tolist()) / len(rows)))

    def update_pass(entropy: bool) -> Callable[[Tensor], Tensor]:
        return lambda rows: learner._logprobs(model, batch, rows, with_entropy=entropy)[0].mean()

    def body_padded(rows: Tensor) -> Tensor:
        ids, _ = pack([batch.prompt_ids[i] for i in rows.tolist()], batch.response_ids[rows], learner.pad_id,
                      [responses[i] for i in rows.tolist()])  # [n, longest prompt + response]
        return model.model(input_ids=ids, use_cache=False).last_hidden_state.float().mean()

    def body_mean(rows: Tensor) -> Tensor:
        ids = torch.randint(3, vocab, (len(rows), mean_of(lengths, rows)))  # [n, mean length]
        return model.model(input_ids=ids, use_cache=False).last_hidden_state.float().mean()

    def ceiling_pass(rows: Tensor) -> Tensor:
        n, width, response = len(rows), mean_of(lengths, rows), mean_of(responses, rows)
        logits = model(input_ids=torch.randint(3, vocab, (n, width)), use_cache=False,
                       logits_to_keep=response + 1).logits[:, :-1]  # [n, r, V]
        return _token_logprobs(logits, torch.randint(3, vocab, (n, response)), 1.0, False)[0].mean()

    def forward_backward(loss_of: Callable[[Tensor], Tensor], over: list[Tensor]) -> tuple[float, float]:
        forward = backward = 0.0
        for rows in over:
            start = time.perf_counter()
            with training_autocast(autocast):
                loss = loss_of(rows)
            middle = time.perf_counter()
            loss.backward()
            forward, backward = forward + middle - start, backward + time.perf_counter() - middle
        model.zero_grad(set_to_none=True)
        return forward, backward

    kinds = {"update, with entropy": lambda: forward_backward(update_pass(True), passes),
             "update, no entropy": lambda: forward_backward(update_pass(False), passes),
             "body, padded rows": lambda: forward_backward(body_padded, passes),
             "body, mean-length rows": lambda: forward_backward(body_mean, passes),
             "ceiling pass, the update's passes": lambda: forward_backward(ceiling_pass, passes),
             "ceiling, one pass per update": lambda: forward_backward(ceiling_pass, list(minis))}
    times = rounds_of(kinds, args.rounds)
    real = sum(lengths)
    print(f"one step's batch: {len(batch)} rows, {real} real tokens, {len(passes)} passes of "
          f"{[len(p) for p in passes]} rows; {args.rounds} rounds, threads {torch.get_num_threads()}")
    print("| passes | forward s | backward s |\n|---|--:|--:|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(v[0] for v in values):.3f} | "
              f"{statistics.median(v[1] for v in values):.3f} |")

    optimization = PlainOptimization(torch.optim.AdamW(model.parameters(), lr=1e-12), model.parameters(),
                                     cfg.optim.grad_clip)
    shapes = ceiling_shapes(batch, updates) * cfg.batch.ppo_epochs
    base = learner.batch_cfg

    def with_budget(budget: int) -> float:
        learner.batch_cfg = dataclasses.replace(base, max_tokens_per_micro_batch=budget)
        try:
            return replay_update(model, captured, optimization, autocast)
        finally:
            learner.batch_cfg = base

    replays = {str(b): (lambda b=b: with_budget(b)) for b in args.budgets}
    replays["ceiling"] = lambda: ceiling_update(model, shapes, optimization, autocast)
    seconds = rounds_of(replays, args.rounds)
    ceiling = statistics.median(seconds["ceiling"])
    print("| max_tokens_per_micro_batch | passes | padded / real tokens | update s | of the ceiling |\n"
          "|--:|--:|--:|--:|--:|")
    for budget in args.budgets:
        learner.batch_cfg = dataclasses.replace(base, max_tokens_per_micro_batch=budget)
        cut = [rows for mini in minis for rows in learner._micro_batches(batch, mini)]
        learner.batch_cfg = base
        padded = sum(len(rows) * max(lengths[i] for i in rows.tolist()) for rows in cut)
        median = statistics.median(seconds[str(budget)])
        print(f"| {budget} | {len(cut)} | {padded / real:.3f} | {median:.3f} | {ceiling / median:.2f} |")
    print(f"| ceiling (no padding, {len(shapes)} passes) | {len(shapes)} | 1.000 | {ceiling:.3f} | 1.00 |")


if __name__ == "__main__":
    main()
