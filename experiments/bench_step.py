"""Where a default DAPO step's time goes, and the rollout engine against raw forwards, in one process.

    .venv/bin/python experiments/bench_step.py [--steps 10] [--pairs 5] [override ...]

Builds the default run (``conf/train.yaml`` plus any Hydra overrides, e.g. ``rollout=vllm``), trains
``--steps`` steps without evaluations, and prints the mean phase times and throughputs the run logged
(``time/*``, ``perf/*``, ``sampling/num_gen_batches``). Then the update's ceiling: the last step's update replayed
on its own batch against a forward+backward+AdamW of the same tokens unpadded (``update_ceiling.py``), in
``--pairs`` interleaved pairs, and the median fraction reached. Then, on the same model, it times raw cached forward
passes at the size of one generation round (``gen_prompts × group_size`` rows × ``max_new_tokens``), the floor
any decoder pays, so the engine's in-training throughput is compared with it side by side. In training,
responses end at different lengths, so late decode steps run on few rows; the fixed-length comparison with EOS
off is ``experiments/bench_rollout.py``. Run it alone: another torch process on the 2 cores skews it 10-100x.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from dapo_lab.analysis.runs import read_metrics_csv
from dapo_lab.build import build, set_threads
from dapo_lab.rollout.direct_decode import direct_decoder
from dapo_lab.rollout.hf import _cache_kwarg
from dapo_lab.rollout.kv_cache import preallocated_cache
from dapo_lab.trainer.optimization import PlainOptimization

sys.path.insert(0, str(Path(__file__).parent))
from bench_rollout import raw_decode  # noqa: E402  (a sibling script, not a package)
from update_ceiling import (  # noqa: E402
    CapturedUpdate,
    capture_updates,
    ceiling_shapes,
    ceiling_update,
    fraction_of_ceiling,
    paired,
    replay_update,
)

CONF = Path(__file__).resolve().parents[1] / "conf"
PHASES = ["time/generate", "time/grade", "time/old_logprob", "time/weight_sync", "time/update", "time/step",
          "perf/rollout_tokens_per_s", "perf/update_tokens_per_s", "sampling/num_gen_batches",
          "rollout/response_len_mean", "rollout/tokens", "train/tokens", "rollout/logprob_abs_diff"]


def train_steps(cfg: DictConfig, out: Path, pairs: int) -> dict[str, float]:
    """Train ``cfg.trainer.max_steps`` steps; the mean of each logged phase metric over the steps after the first;
    then the same-process ceilings."""
    set_threads(cfg.get("threads"))
    built = build(cfg, out)
    captured = capture_updates(built.learner)
    built.trainer.fit(built.module)
    long = read_metrics_csv(next(out.rglob("metrics.csv")))  # step, metric, value
    frame = long.pivot_table(index="step", columns="metric", values="value")  # one row per step
    steps = frame.dropna(subset=["time/step"]).iloc[1:]  # the first step pays one-off allocations
    means = {name: float(steps[name].mean()) for name in PHASES if name in steps and steps[name].notna().any()}
    means["steps timed"] = float(len(steps))
    bench_update_ceiling(built, cfg, captured, pairs, means)  # first: the raw forward switches to the decode kernel
    bench_raw_forward(built, cfg, means)
    if hasattr(built.learner.rollout, "attn_implementation"):  # the HF engine (vLLM's runs in another process)
        bench_round(built, cfg, means)
    return means


def bench_update_ceiling(built, cfg: DictConfig, captured: CapturedUpdate, pairs: int,
                         means: dict[str, float]) -> None:
    """The last step's update replayed on its own batch against the update's ceiling on the same token count
    (``update_ceiling.py``), in ``pairs`` interleaved pairs; AdamW at lr 1e-12, so the model the decode benches
    below time is the trained one."""
    if captured.args is None:  # no step had an informative group: nothing was updated
        return
    learner, batch = built.learner, captured.args[0]
    model = learner.model.train()  # with the kernel it trains with (the engine restores it after decoding)
    optimization = PlainOptimization(torch.optim.AdamW(model.parameters(), lr=1e-12), model.parameters(),
                                     cfg.optim.grad_clip)
    autocast = "bf16" in str(cfg.trainer.precision)
    updates = cfg.batch.prompts_per_step // cfg.batch.mini_batch_prompts
    shapes = ceiling_shapes(batch, updates) * cfg.batch.ppo_epochs
    update_s, ceiling_s = paired(lambda: replay_update(model, captured, optimization, autocast),
                                 lambda: ceiling_update(model, shapes, optimization, autocast), pairs)
    tokens = int(batch.response_mask.sum()) * cfg.batch.ppo_epochs
    means["update replayed on the last step's batch, median s"] = statistics.median(update_s)
    means[f"update ceiling, median s ({len(shapes)} unpadded passes, {tokens} response tokens)"] = (
        statistics.median(ceiling_s))
    means["update ceiling response tokens/s"] = tokens / statistics.median(ceiling_s)
    fraction, per_pair = fraction_of_ceiling(update_s, ceiling_s)
    means["update / ceiling, median of pairs"] = fraction
    means["pairs"] = float(pairs)
    print("update / ceiling per pair: " + ", ".join(f"{r:.2f}" for r in per_pair))


def bench_raw_forward(built, cfg: DictConfig, means: dict[str, float]) -> None:
    learner = built.learner
    rows = cfg.batch.gen_prompts * cfg.batch.group_size
    new = int(cfg.generation.max_new_tokens)
    prompts = [learner.train.ids(i) for i in range(rows)]
    width = min(len(p) for p in prompts)
    batch = torch.tensor([p[:width] for p in prompts])  # [rows, P] (cut to the shortest: no padding)
    model = decoding_model(learner)
    # The floor with the attention kernel the engine decodes with (the HF engine switches the tiny model to sdpa).
    kernel = getattr(learner.rollout, "attn_implementation", None)
    if kernel is not None:
        model.set_attn_implementation(kernel)
    raw_decode(model, batch[:8], 4, autocast=False)  # warm-up
    seconds = raw_decode(model, batch, new, autocast=False)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    means[f"raw forward tokens/s ({rows} rows x {new}, {dtype}, {kernel or 'own'} attention)"] = rows * new / seconds


def decoding_model(learner) -> torch.nn.Module:
    """What the engine decodes with (the default's bf16 copy on one CPU process), in eval mode: the ceilings of
    decoding are measured on it, not on the fp32 policy."""
    return getattr(learner.rollout, "decoding_model", learner.model).eval()


def replay_decode(model, prompts: torch.Tensor, lengths: list[int]) -> float:
    """Seconds for raw cached forwards that do exactly one round's work: ``prompts`` ``[B, P]`` prefilled, then
    row ``b`` decoded for ``lengths[b]`` tokens, each row leaving the batch (and its cache) the step it ends. The
    ideal decoder of that round, with no sampling, bookkeeping or padding mask: a same-shape ceiling."""
    order = sorted(range(len(lengths)), key=lambda b: -lengths[b])  # longest first: a finished row is a suffix
    ends = [lengths[b] for b in order]
    with torch.no_grad():
        name = _cache_kwarg(model)
        start = time.perf_counter()
        out = model(input_ids=prompts[order], use_cache=True, logits_to_keep=1)
        token = out.logits[:, -1].argmax(-1, keepdim=True)  # [b, 1]
        live = len(order)
        for step in range(1, ends[0]):
            still = sum(end > step for end in ends)  # rows with a token left to produce at this step
            cache = getattr(out, name)
            if still < live:
                cache.batch_select_indices(torch.arange(still))
                token, live = token[:still], still
            out = model(input_ids=token, use_cache=True, **{name: cache})
            token = out.logits[:, -1].argmax(-1, keepdim=True)
        return time.perf_counter() - start


def replay_direct(model, prompts: torch.Tensor, lengths: list[int]) -> float | None:
    """:func:`replay_decode` with the engine's direct decode steps (``rollout/direct_decode.py``) instead of the
    model's forward: the same round's shape at the fastest per-step arithmetic this project has, with no sampling,
    bookkeeping or padding. None where the model has no direct decoder."""
    order = sorted(range(len(lengths)), key=lambda b: -lengths[b])
    ends, width = [lengths[b] for b in order], prompts.shape[1]
    with torch.no_grad():
        cache = preallocated_cache(width + ends[0])
        decoder = direct_decoder(model, width + ends[0])
        if cache is None or decoder is None:
            return None
        bias = torch.zeros(len(order), 1, 1, width + ends[0], dtype=next(model.parameters()).dtype)
        start = time.perf_counter()
        out = model(input_ids=prompts[order], use_cache=True, logits_to_keep=1, **{_cache_kwarg(model): cache})
        token, live = out.logits[:, -1].argmax(-1), len(order)  # [b]
        for step in range(1, ends[0]):
            still = sum(end > step for end in ends)
            if still < live:
                cache.batch_select_indices(torch.arange(still))
                token, bias, live = token[:still], bias[:still], still
            positions = torch.full((live,), width - 1 + step)
            token = decoder(token, positions, cache, bias[..., : width + step]).argmax(-1)
        return time.perf_counter() - start


def bench_round(built, cfg: DictConfig, means: dict[str, float]) -> None:
    """One seeded generation round with the engine, then :func:`replay_decode` of the same round's shape (prompts
    cut to the shortest, the engine's response lengths): the engine's tokens/s against the ideal decoder's."""
    from dapo_lab.rollout import SamplingParams

    learner = built.learner
    prompts = [learner.train.ids(i) for i in range(cfg.batch.gen_prompts)]
    params = SamplingParams(temperature=cfg.generation.temperature, top_p=cfg.generation.top_p,
                            max_new_tokens=cfg.generation.max_new_tokens, n=cfg.batch.group_size, seed=0)
    learner.rollout.update_weights(learner.model)
    learner.rollout.generate(prompts[:2], params)  # warm-up
    start = time.perf_counter()
    out = learner.rollout.generate(prompts, params)
    engine_seconds = time.perf_counter() - start
    lengths = out.lengths.tolist()
    width = min(len(p) for p in prompts)
    batch = torch.tensor([p[:width] for p in out.prompt_ids])  # [N, P]
    model = decoding_model(learner)
    kernel = getattr(learner.rollout, "attn_implementation", None)
    if kernel is not None:
        model.set_attn_implementation(kernel)
    replay_seconds = sorted(replay_decode(model, batch, lengths) for _ in range(3))[1]
    tokens = sum(lengths)
    means["engine round tokens/s (one seeded round)"] = tokens / engine_seconds
    means[f"replayed round tokens/s (same shape, {len(lengths)} rows, {tokens} tokens)"] = tokens / replay_seconds
    direct = [replay_direct(model, batch, lengths) for _ in range(3)]
    if None not in direct:
        means["replayed round tokens/s, direct decode steps"] = tokens / sorted(direct)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--pairs", type=int, default=5, help="interleaved update/ceiling pairs (default 5)")
    args, overrides = parser.parse_known_args()
    if args.steps < 2:
        parser.error("--steps must be >= 2 (the first step is not timed)")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            f"trainer.max_steps={args.steps}", "trainer.enable_progress_bar=false",
            f"evaluation.every={args.steps + 1}", *overrides])
    with tempfile.TemporaryDirectory() as tmp:
        means = train_steps(cfg, Path(tmp), args.pairs)
    print(f"default run, {args.steps} steps, overrides {overrides or 'none'}, threads {torch.get_num_threads()}")
    print("| metric | mean |\n|---|--:|")
    for name, value in means.items():
        print(f"| {name} | {value:,.3f} |" if value < 100 else f"| {name} | {value:,.0f} |")
    raw = next(value for name, value in means.items() if name.startswith("raw forward"))
    if "rollout/tokens" in means and "train/tokens" in means:  # dynamic sampling's cost: tokens decoded, not trained
        print(f"generated tokens per trained token: {means['rollout/tokens'] / means['train/tokens']:.2f}")
    if "perf/rollout_tokens_per_s" in means:
        print(f"engine in training / raw forward: {means['perf/rollout_tokens_per_s'] / raw:.2f}")
    replayed = [value for name, value in means.items() if name.startswith("replayed round")]
    if replayed:
        engine = means["engine round tokens/s (one seeded round)"]
        print(f"engine round / replayed same-shape round: {engine / replayed[0]:.2f}")
        if "replayed round tokens/s, direct decode steps" in means:
            print("engine round / replayed round with direct decode steps: "
                  f"{engine / means['replayed round tokens/s, direct decode steps']:.2f}")
    if "update / ceiling, median of pairs" in means:
        print(f"update / ceiling, {args.pairs} interleaved pairs on the last step's batch: "
              f"{means['update / ceiling, median of pairs']:.2f}")
        if "perf/update_tokens_per_s" in means:  # not paired: the steps and the ceiling minutes apart
            print("update in training (mean of steps) / ceiling, tokens/s: "
                  f"{means['perf/update_tokens_per_s'] / means['update ceiling response tokens/s']:.2f}")


if __name__ == "__main__":
    main()
