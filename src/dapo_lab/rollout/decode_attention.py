"""Attention for one decode step of grouped-query models, registered with transformers as ``"grouped"``.

At a decode step each row has one query per head and a key/value history per KV head. transformers' ``sdpa`` path,
given the left-padding mask the engine needs, packs the query heads of a KV head and calls the fused CPU kernel,
and rebuilds a 4-D mask from the 2-D one at every step. This kernel reads each KV head's keys once for all its
query heads with two batched matmuls (scores ``[B, kv, group, n]``), adds a mask the engine keeps for the whole
call, and softmaxes: 1.16x a default decode step with padded prompts (128 rows, 4 layers, 2026-12-01,
``experiments/README.md`` "Performance"). The prompt's prefill (many queries per row) still runs ``sdpa``.
"""

from __future__ import annotations

import torch
from torch import Tensor

NAME = "grouped"
COPY_STRIDED_KEYS = True  # see grouped_decode_attention (a switch for experiments/ab_engine-style A/Bs)


def grouped_decode_attention(query: Tensor, key: Tensor, value: Tensor, bias: Tensor, scaling: float) -> Tensor:
    """softmax(q·kᵀ · scaling + bias) · v for one query per row and head, each KV head shared by a group of query
    heads: query ``[B, H, 1, D]``, key/value ``[B, KV, n, D]`` (``H`` a multiple of ``KV``), bias ``[B, 1, 1, n]``
    (0 where a key is seen, −inf where it is masked) → ``[B, 1, H, D]`` (transformers' attention output layout).

    >>> q, k, v = torch.randn(3, 4, 1, 8), torch.randn(3, 2, 5, 8), torch.randn(3, 2, 5, 8)
    >>> bias = torch.zeros(3, 1, 1, 5); bias[0, ..., :2] = float("-inf")
    >>> expected = torch.nn.functional.scaled_dot_product_attention(
    ...     q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), attn_mask=bias)  # [B, H, 1, D]
    >>> torch.allclose(grouped_decode_attention(q, k, v, bias, 8 ** -0.5), expected.transpose(1, 2), atol=1e-6)
    True
    """
    batch, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    if COPY_STRIDED_KEYS and key.device.type == "cpu" and key.dtype != torch.float32 and not key.is_contiguous():
        # The preallocated cache hands a view of its filled part (each row's keys a block of a longer buffer).
        # With such a batch stride, the CPU's bf16 batched matmul against the transposed keys runs 3-4x slower
        # than copying them first (128 rows, 2 KV heads, 150 positions: 0.61-0.74 ms against 0.19 with the copy);
        # fp32's kernel is the other way round (0.18 ms strided, 0.32 with the copy), so fp32 keeps the view.
        key = key.contiguous()
    grouped = query.view(batch, kv_heads, heads // kv_heads, dim)  # [B, KV, G, D]: a KV head's queries together
    scores = torch.matmul(grouped, key.transpose(-1, -2))  # [B, KV, G, n]
    scores = scores.mul_(scaling).add_(bias)  # bias [B, 1, 1, n] broadcasts over heads and group
    out = torch.matmul(scores.softmax(-1), value)  # [B, KV, G, D]
    return out.view(batch, 1, heads, dim)


def _attention_forward(module: torch.nn.Module, query: Tensor, key: Tensor, value: Tensor,
                       attention_mask: Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                       **kwargs) -> tuple[Tensor, None]:
    """transformers' attention-function signature. A decode step with the engine's additive 4-D mask takes the
    grouped kernel; anything else (the prefill, a boolean or absent mask, sliding windows, sinks, dropout) is
    handed to ``sdpa`` unchanged."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    plain = (query.shape[2] == 1 and attention_mask is not None and attention_mask.is_floating_point()
             and attention_mask.shape[-2] == 1 and dropout == 0.0 and kwargs.get("sliding_window") is None
             and kwargs.get("s_aux") is None and kwargs.get("softcap") is None)
    if not plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    return grouped_decode_attention(query, key, value, attention_mask.to(query.dtype), scale), None


def register() -> bool:
    """Make ``"grouped"`` a transformers attention implementation (its masks built as ``sdpa``'s). False where this
    transformers has no attention registry (the engine then decodes with ``sdpa``)."""
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    except ImportError:
        return False
    AttentionInterface.register(NAME, _attention_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return True
