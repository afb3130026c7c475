"""Supervised warm start of the tiny model on worked solutions, and a small sampled-accuracy probe.

A plain torch loop (no Lightning: one model, one optimizer, a fixed number of steps). The loss covers the
response tokens and the closing eos only, never the prompt, so the model learns to answer and to stop.
Deterministic given the seed on one machine and thread count (CPU bf16 matmuls may round differently
elsewhere). `evaluate_accuracy` is deliberately simple; the trainer has its own evaluation.

Small batches: the number of updates, not of samples, decides when the model learns the keyed lookup
that the task needs (probes, 0.8M model, 2-12 terms, same 19k samples: batch 64 x 300 steps reached 5%
greedy, batch 16 x 1200 steps 88%). Batches are length-bucketed so padding costs little.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from dapo_lab.data.example import PromptExample, WarmStartSource
from dapo_lab.trainer.schedule import lr_at

IGNORE = -100


def sft_batch(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], responses: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Right-padded `input_ids`, `attention_mask` and `labels` (IGNORE on prompt and padding; the
    response is followed by eos).

    >>> from dapo_lab.models.tokenizer import build_byte_tokenizer
    >>> b = sft_batch(build_byte_tokenizer(), ["Add 1 2\\n", "Q\\n"], ["Answer: 3", "A"])
    >>> b["input_ids"].shape, b["labels"][1, :5].tolist(), b["attention_mask"][1].sum().item()
    (torch.Size([2, 18]), [-100, -100, 65, 256, -100], 4)
    """
    eos = tokenizer.eos_token_id
    rows, labels = [], []
    for p, r in zip(prompts, responses):
        p_ids = tokenizer(p, add_special_tokens=False)["input_ids"]
        r_ids = tokenizer(r, add_special_tokens=False)["input_ids"] + [eos]
        rows.append(p_ids + r_ids)
        labels.append([IGNORE] * len(p_ids) + r_ids)
    width = max(map(len, rows))
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)  # [B, T]
    label_ids = torch.full((len(rows), width), IGNORE, dtype=torch.long)  # [B, T]
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # [B, T]
    for i, (row, lab) in enumerate(zip(rows, labels)):
        input_ids[i, : len(row)] = torch.tensor(row)
        label_ids[i, : len(lab)] = torch.tensor(lab)
        mask[i, : len(row)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": label_ids}


def response_nll(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token NLL over the labelled (response) tokens."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # [B, T, V]
    targets = batch["labels"][:, 1:]  # [B, T-1]
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE)


def warm_start(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    data: WarmStartSource,
    steps: int,
    lr: float = 1e-3,
    batch_size: int = 16,
    warmup_steps: int = 20,
    final_lr_frac: float = 0.1,
    weight_decay: float = 0.0,
    bf16: bool = True,
    seed: int = 0,
    log_every: int = 0,
) -> dict[str, float | list[float]]:
    """Train `model` in place on `steps` batches of worked solutions from `data` (`data.warmstart_batches`).

    Returns metrics: `warmstart/loss_first`, `warmstart/loss_last` (mean of the last 10 steps),
    `warmstart/seconds`, `warmstart/steps` and the full `warmstart/losses` curve.
    """
    torch.manual_seed(seed)
    batches = data.warmstart_batches(batch_size, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay)
    model.train()
    losses: list[float] = []
    start = time.perf_counter()
    for step in range(steps):
        prompts, solutions = next(batches)
        batch = sft_batch(tokenizer, prompts, solutions)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup_steps, final_lr_frac)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = response_nll(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f"warmstart step {step:4d} loss {losses[-1]:.4f} {time.perf_counter() - start:6.1f}s",
                  flush=True)
    model.eval()
    tail = losses[-10:] or [float("nan")]
    return {
        "warmstart/loss_first": losses[0] if losses else float("nan"),
        "warmstart/loss_last": sum(tail) / len(tail),
        "warmstart/seconds": time.perf_counter() - start,
        "warmstart/steps": float(steps),
        "warmstart/losses": losses,
    }


def _default_grade(response: str, ground_truth: str) -> bool:
    from dapo_lab.reward import grade  # the platform's grader (DAPO mode)

    return bool(grade(response, ground_truth, mode="dapo").correct)


@torch.no_grad()
def grade_generations(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[PromptExample],
    temperature: float = 1.0,
    n: int = 1,
    max_new_tokens: int = 256,
    batch_size: int = 256,
    use_chat_template: bool = False,
    bf16: bool = True,
    grade_fn: Callable[[str, str], bool] | None = None,
    seed: int = 0,
) -> list[bool]:
    """Whether each of `n` generations per example is graded correct, example-major (`temperature=0`:
    greedy). Batched `generate` with left padding; pure sampling at `temperature` (no top-k / top-p)."""
    from dapo_lab.data.example import render_prompt

    grade_fn = grade_fn or _default_grade
    torch.manual_seed(seed)
    model.eval()
    old_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    prompts = [render_prompt(e, tokenizer, use_chat_template) for e in examples for _ in range(n)]
    truths = [e.ground_truth for e in examples for _ in range(n)]
    sampling = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) if temperature > 0 else {
        "do_sample": False}
    results: list[bool] = []
    try:
        for i in range(0, len(prompts), batch_size):
            enc = tokenizer(prompts[i : i + batch_size], return_tensors="pt", padding=True,
                            add_special_tokens=False)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                     eos_token_id=tokenizer.eos_token_id, **sampling)  # [b, P + new]
            texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            results += [bool(grade_fn(t, g)) for t, g in zip(texts, truths[i : i + batch_size])]
    finally:
        tokenizer.padding_side = old_side
    return results


def evaluate_accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[PromptExample],
    temperature: float = 1.0,
    n: int = 1,
    max_new_tokens: int = 256,
    **kwargs: Any,
) -> float:
    """Fraction of `n` generations per example graded correct by the platform's grader (DAPO mode);
    `kwargs` go to `grade_generations` (batch_size, use_chat_template, bf16, grade_fn, seed)."""
    results = grade_generations(model, tokenizer, examples, temperature, n, max_new_tokens, **kwargs)
    return sum(results) / max(1, len(results))
