"""The grouped decode kernel against the attention formula written out: softmax(q·kᵀ/√d + mask)·v per query head,
each query head reading its KV head (query head h uses KV head h // (H / KV), as transformers' ``repeat_kv``)."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dapo_lab.rollout.decode_attention import grouped_decode_attention


def reference(query, key, value, keep):
    """Per row and head, the textbook formula with loops: query ``[B, H, 1, D]``, key/value ``[B, KV, n, D]``,
    keep ``[B, n]`` bool → ``[B, 1, H, D]``."""
    batch, heads, _, dim = query.shape
    group = heads // key.shape[1]
    out = torch.zeros(batch, 1, heads, dim, dtype=torch.float64)
    for b in range(batch):
        for h in range(heads):
            k, v = key[b, h // group].double(), value[b, h // group].double()  # [n, D]
            scores = k @ query[b, h, 0].double() / math.sqrt(dim)  # [n]
            scores[~keep[b]] = float("-inf")
            out[b, 0, h] = scores.softmax(-1) @ v
    return out


@settings(max_examples=40, deadline=None)
@given(batch=st.integers(1, 4), kv_heads=st.integers(1, 3), group=st.sampled_from([1, 2, 4]),
       dim=st.sampled_from([4, 8, 16]), length=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_grouped_decode_attention_is_the_formula(batch, kv_heads, group, dim, length, seed):
    gen = torch.Generator().manual_seed(seed)
    query = torch.randn(batch, kv_heads * group, 1, dim, generator=gen)
    key, value = (torch.randn(batch, kv_heads, length, dim, generator=gen) for _ in range(2))
    keep = torch.rand(batch, length, generator=gen) < 0.7
    keep[:, -1] = True  # the newest key (the row's own token) is always seen
    bias = torch.zeros(batch, 1, 1, length).masked_fill(~keep[:, None, None], float("-inf"))
    got = grouped_decode_attention(query, key, value, bias, dim ** -0.5)
    assert got.shape == (batch, 1, kv_heads * group, dim)
    torch.testing.assert_close(got.double(), reference(query, key, value, keep), atol=1e-5, rtol=1e-5)


def test_a_key_view_into_a_larger_buffer_reads_only_its_positions():
    """The engine's cache hands the kernel views of the filled positions of larger buffers: what lies beyond
    them (here NaN) never reaches the output."""
    buffer = torch.full((2, 1, 9, 4), float("nan"))
    buffer[:, :, :5] = torch.randn(2, 1, 5, 4)
    query = torch.randn(2, 2, 1, 4)
    out = grouped_decode_attention(query, buffer[:, :, :5], buffer[:, :, :5], torch.zeros(2, 1, 1, 5), 0.5)
    assert torch.isfinite(out).all()


def test_a_bf16_key_view_gives_what_its_contiguous_copy_gives():
    """In bf16 the kernel copies a strided key view before its matmul (CPU speed, decode_attention.py): the result
    is the contiguous keys' bit for bit, and the view's NaN tail is still never read."""
    gen = torch.Generator().manual_seed(3)
    buffer = torch.full((5, 2, 40, 16), float("nan"), dtype=torch.bfloat16)
    buffer[:, :, :23] = torch.randn(5, 2, 23, 16, generator=gen).to(torch.bfloat16)
    query = torch.randn(5, 4, 1, 16, generator=gen).to(torch.bfloat16)
    bias = torch.zeros(5, 1, 1, 23, dtype=torch.bfloat16)
    bias[0, ..., :3] = float("-inf")  # a left-padded row
    view = buffer[:, :, :23]
    assert not view.is_contiguous()
    got = grouped_decode_attention(query, view, view, bias, 0.25)
    assert torch.isfinite(got).all()
    assert torch.equal(got, grouped_decode_attention(query, view.contiguous(), view.contiguous(), bias, 0.25))
    keep = torch.ones(5, 23, dtype=torch.bool)
    keep[0, :3] = False
    torch.testing.assert_close(got.double(), reference(query, view, view, keep), atol=0.03, rtol=0.03)
