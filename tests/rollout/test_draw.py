"""The HF engine's token draw (inverse-CDF, one uniform per row) against the distribution it must sample."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dapo_lab.rollout.hf import draw, top_p_filter


def test_draw_frequencies_match_the_probabilities():
    """200k draws from a written-out distribution (unnormalised, zeros inside and at the ends): every frequency
    within 5 standard errors of its probability, zero-mass entries never drawn."""
    weights = torch.tensor([0.0, 4.0, 2.0, 0.0, 1.0, 1.0, 0.0])  # p = 1/2, 1/4, 1/8, 1/8 on entries 1, 2, 4, 5
    n = 200_000
    tokens = draw(weights.expand(n, -1), torch.Generator().manual_seed(7))
    freq = torch.bincount(tokens, minlength=7).double() / n
    p = (weights / weights.sum()).double()
    assert torch.all(freq[p == 0] == 0)
    assert torch.all((freq - p).abs() <= 5 * (p * (1 - p) / n).sqrt()), freq


def test_draw_is_seeded_and_rows_are_independent():
    probs = torch.softmax(torch.randn(64, 50), -1)
    first = draw(probs, torch.Generator().manual_seed(3))
    assert torch.equal(first, draw(probs, torch.Generator().manual_seed(3)))
    assert not torch.equal(first, draw(probs, torch.Generator().manual_seed(4)))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 6), st.floats(0.05, 1.0), st.integers(0, 2**31 - 1))
def test_draw_never_picks_a_token_outside_top_p(vocab, rows, top_p, seed):
    """After nucleus filtering (tokens outside the nucleus get zero probability) every drawn token is inside it."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, vocab, generator=gen) * 3
    probs = top_p_filter(logits, top_p).softmax(-1)
    for _ in range(20):
        token = draw(probs, gen)
        assert torch.all(probs.gather(-1, token[:, None]) > 0)
