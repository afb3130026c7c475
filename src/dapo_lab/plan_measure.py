"""Measure what the plan predicts: the peak resident memory of the tiny model's training step on CPU.

Run it in a fresh process (peak RSS is per process)::

    python -m dapo_lab.plan_measure '{"rows": 32, "prompt_lens": [62, 38], "response_len": 96}'

prints JSON (MiB): ``first_peak`` (one forward + backward + AdamW step, as the default trainer runs it: fp32
weights under bf16 autocast, temperature-scaled log-probs, entropy from the same logits), ``steady_peak`` (a second
forward + backward with the gradients and AdamW state of the first alive, as every later micro-batch of a run has
them), the RSS after the first forward and the bytes glibc held free in its heap then (``mallinfo2``).

Why a warm-up on a throwaway model first: torch's one-time allocations (kernel caches, thread pools) then belong to
the baseline, not to the step. Peaks are counted from the RSS before the step: ``VmHWM`` also holds the peak of
whatever ran before (imports: ``baseline_peak_above_rss``, 0-55 MiB, varying run to run), which a step's peak must
exceed to show (resetting it through ``/proc/self/clear_refs`` lost part of the step's peak here).

The allocator matters: glibc's default malloc raises its mmap threshold to the size of the first large block freed,
so later temporaries come from its heap and stay resident after they are freed (``heap_free_after_forward``). With
``MALLOC_MMAP_THRESHOLD_=131072`` (fixed) every large block goes back to the OS when freed and RSS follows the live
tensors, which is what the plan counts.
"""

from __future__ import annotations

import ctypes
import json
import resource
import sys
from typing import Any

import torch

MiB = 2**20


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


def heap_free_bytes() -> int:
    """Bytes glibc's malloc holds free in its arenas (freed by the program, not returned to the OS); 0 if unknown."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        return int(libc.mallinfo2().fordblks)
    except (OSError, AttributeError):
        return 0


def rss_bytes() -> int:
    """Current resident set size (``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def peak_rss_bytes() -> int:
    """Peak resident set size of this process's memory map so far (``VmHWM`` of ``/proc/self/status``).

    Not ``ru_maxrss``: the kernel carries that across ``exec``, and Python's ``subprocess`` starts children with
    ``vfork``, so a child's ``ru_maxrss`` starts at its parent's peak (a long pytest run's: 520 MiB seen in CI, above
    the whole step). ``VmHWM`` belongs to the map ``exec`` created."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) * 1024


def _forward(model: torch.nn.Module, prompts: list[list[int]], responses: torch.Tensor, temperature: float,
             entropy: bool) -> torch.Tensor:
    from dapo_lab.trainer.teacher_forced import response_logprobs

    logp, _ = response_logprobs(model, prompts, responses, pad_id=0, temperature=temperature,
                                with_entropy=entropy)  # [N, R]
    return -(logp * torch.linspace(-1, 1, len(prompts))[:, None]).mean()  # stands in for the clipped loss


def measure(rows: int, prompt_lens: list[int], response_len: int, dims: dict[str, int] | None = None,
            attention: str = "eager", checkpointing: bool = False, temperature: float = 0.8,
            entropy: bool = True, threads: int = 1) -> dict[str, Any]:
    """Peak RSS increases (MiB) of the tiny model's step on ``rows`` rows (prompt lengths cycle through
    ``prompt_lens``; every response ``response_len`` tokens)."""
    from dapo_lab.models.tiny import build_tiny

    torch.set_num_threads(threads)
    prompts = [[5] * prompt_lens[i % len(prompt_lens)] for i in range(rows)]
    responses = torch.randint(1, 250, (rows, response_len), generator=torch.Generator().manual_seed(0))  # [N, R]

    def build(**kw: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        model = build_tiny(**kw)[0]
        model.config._attn_implementation = attention
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        return model, torch.optim.AdamW(model.parameters(), lr=1e-4)

    warm, warm_opt = build(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _forward(warm, prompts[:2], responses[:2, :3], temperature, entropy).backward()
        warm_opt.step()
    del warm, warm_opt
    base, base_peak, base_free = rss_bytes(), peak_rss_bytes(), heap_free_bytes()

    model, opt = build(**(dims or {}))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # Lightning's bf16-mixed wraps the whole training step
        loss = _forward(model, prompts, responses, temperature, entropy)
        after_forward, heap_free = rss_bytes(), heap_free_bytes()
        loss.backward()
        opt.step()
        first_peak = peak_rss_bytes()
        _forward(model, prompts, responses, temperature, entropy).backward()  # gradients and AdamW state alive
    steady_peak = peak_rss_bytes()
    return {"first_peak": (first_peak - base) / MiB, "steady_peak": (steady_peak - base) / MiB,
            "after_forward": (after_forward - base) / MiB, "heap_free_after_forward": (heap_free - base_free) / MiB,
            "baseline_rss": base / MiB, "baseline_peak_above_rss": (base_peak - base) / MiB,
            "params": sum(p.numel() for p in model.parameters())}


def saved_tensor_bytes(model: torch.nn.Module, prompts: list[list[int]], responses: torch.Tensor,
                       temperature: float = 0.8, autocast: bool = True) -> int:
    """Bytes of the distinct storages autograd saves for the backward of one log-prob forward, parameters excluded
    (read off the graph's ``_saved_*`` attributes; autocast's bf16 copies of the weights count)."""
    from dapo_lab.trainer.teacher_forced import response_logprobs

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logp, _ = response_logprobs(model, prompts, responses, pad_id=0, temperature=temperature)  # [N, R]
    storages: dict[int, int] = {}
    seen, stack = set(), [logp.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        for name in dir(node):
            if not name.startswith("_saved_"):
                continue
            value = getattr(node, name)
            for t in value if isinstance(value, (tuple, list)) else [value]:
                if isinstance(t, torch.Tensor) and t.numel() and t.untyped_storage().data_ptr() not in params:
                    storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        stack += [fn for fn, _ in node.next_functions]
    return sum(storages.values())


if __name__ == "__main__":
    print(json.dumps(measure(**json.loads(sys.argv[1]))))
