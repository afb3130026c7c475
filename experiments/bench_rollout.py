"""Rollout engine throughput vs the raw cached forward passes it is built on (same model, same batch).

    .venv/bin/python experiments/bench_rollout.py [--threads 2] [--dtype bf16|fp32]

The raw figure times only ``model(token, cache)`` calls, the floor any decoder pays; the engine adds
sampling, bookkeeping and EOS checks. Also times a training update (forward + backward + AdamW) on the
same sequences. Random weights: throughput does not depend on them; EOS is disabled so every sequence
runs the full length. Run it alone: another torch process on the same 2 cores skews the numbers 10-100x.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from dapo_lab.models.tiny import build_tiny
from dapo_lab.rollout import HFEngine, SamplingParams
from dapo_lab.rollout.hf import _cache_kwarg
from dapo_lab.trainer.teacher_forced import response_logprobs


def raw_decode(model, prompts: torch.Tensor, new_tokens: int, autocast: bool) -> float:
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with torch.no_grad(), ctx:
        name = _cache_kwarg(model)
        start = time.perf_counter()
        out = model(input_ids=prompts, use_cache=True, logits_to_keep=1)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        for _ in range(new_tokens - 1):
            out = model(input_ids=token, use_cache=True, **{name: getattr(out, name)})
            token = out.logits[:, -1].argmax(-1, keepdim=True)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = build_tiny(seed=0)
    model.eval()
    engine = HFEngine(autocast="bf16" if args.dtype == "bf16" else None)
    engine.attach(model, eos_id=-1, pad_id=tok.pad_token_id)
    print(f"threads={args.threads} dtype={args.dtype} params={sum(p.numel() for p in model.parameters()) / 1e6:.2f}M")
    print("| batch x new tokens | raw forward tok/s | engine tok/s | engine / raw | update tok/s |")
    print("|---|---|---|---|---|")
    for batch, new in [(64, 64), (128, 96), (256, 96)]:
        prompt = torch.randint(0, 250, (batch, 24))
        raw_decode(model, prompt[:8], 4, args.dtype == "bf16")  # warm-up
        raw = batch * new / raw_decode(model, prompt, new, args.dtype == "bf16")
        params = SamplingParams(max_new_tokens=new, n=1, seed=0)
        start = time.perf_counter()
        out = engine.generate(prompt.tolist(), params)
        engine_tps = out.response_mask.sum().item() / (time.perf_counter() - start)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if args.dtype == "bf16" else contextlib.nullcontext()
        start = time.perf_counter()
        for rows in torch.arange(batch).split(64):
            with ctx:
                logp, _ = response_logprobs(model, [out.prompt_ids[i] for i in rows], out.response_ids[rows],
                                            pad_id=tok.pad_token_id)
            logp.mean().backward()
        optimizer.step()
        update_tps = out.response_mask.sum().item() / (time.perf_counter() - start)
        print(f"| {batch} x {new} | {raw:,.0f} | {engine_tps:,.0f} | {engine_tps / raw:.2f} | {update_tps:,.0f} |")


if __name__ == "__main__":
    main()
