"""The two partitions of a data-parallel step (``trainer/balance.py``), as properties over random inputs.

The issue's contract: after the deal, every rank holds the same number of groups (± one) and the ranks' token
totals differ by at most one group's tokens; a rank's rows become passes that cover every row once and respect the
row cap and the token budget."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dapo_lab.trainer.balance import balanced_partition, micro_batches

TOKENS = st.lists(st.integers(1, 4000), max_size=80)  # a group's response tokens (G responses of up to 500)


@settings(max_examples=300, deadline=None)
@given(tokens=TOKENS, parts=st.integers(1, 9))
def test_the_deal_gives_every_group_once_equal_counts_and_totals_within_one_group(tokens, parts):
    bins = balanced_partition(tokens, parts)
    assert len(bins) == parts
    assert sorted(i for b in bins for i in b) == list(range(len(tokens)))  # nothing lost, nothing twice
    counts = [len(b) for b in bins]
    assert max(counts) - min(counts) <= 1
    totals = [sum(tokens[i] for i in b) for b in bins]
    assert max(totals) - min(totals) <= max(tokens, default=0)
    assert all(b == sorted(b) for b in bins)
    assert balanced_partition(list(tokens), parts) == bins  # every rank computes the same deal from the same list


def test_the_deal_on_a_hand_worked_case():
    # Longest first, the lightest bin takes the longest of each deal: (9 → A, 7 → B), then (5 → B at 7, 3 → A at 9),
    # then at 12 / 12 the tie goes to the lower bin: (2 → A, 1 → B). A = {9, 3, 2} = 14 tokens, B = {7, 5, 1} = 13.
    tokens = [5, 1, 9, 3, 7, 2]
    assert balanced_partition(tokens, 2) == [[2, 3, 5], [0, 1, 4]]
    # Halves in list order would give 15 vs 12; alternating by index, 21 vs 6.


@settings(max_examples=300, deadline=None)
@given(lengths=st.lists(st.integers(1, 600), max_size=70), max_rows=st.integers(1, 40),
       budget=st.one_of(st.none(), st.integers(1, 5000)))
def test_micro_batches_cover_every_row_once_within_the_caps(lengths, max_rows, budget):
    passes = micro_batches(lengths, max_rows, budget)
    assert sorted(i for p in passes for i in p) == list(range(len(lengths)))
    assert all(1 <= len(p) <= max_rows for p in passes)
    if budget is None:  # consecutive runs, in order, all full but the last
        assert [i for p in passes for i in p] == list(range(len(lengths)))
        assert all(len(p) == max_rows for p in passes[:-1])
    else:  # what a padded pass computes, rows x its longest row, stays within the budget (a lone long row excepted)
        assert all(len(p) * max(lengths[i] for i in p) <= budget for p in passes if len(p) > 1)
