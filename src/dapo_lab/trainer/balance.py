"""Which rank trains which group, and how a rank's rows become micro-batches: the two partitions that make a
data-parallel DAPO step balanced and hang-free.

After dynamic sampling, ranks hold different numbers of groups of different lengths. :func:`balanced_partition`
deals the step's groups out so every rank holds the same number (± one) and about the same number of tokens
(verl's ``balance_batch`` idea, with a longest-first deal). :func:`micro_batches` cuts a rank's rows into
forward/backward passes by row count or by a token budget; ranks then agree on the largest count and pad with
zero-weight dummy passes (see ``DAPOLearner.accumulate_gradients``), because under FSDP or ZeRO-3 every forward
is a collective.
"""

from __future__ import annotations

from collections.abc import Sequence


def balanced_partition(tokens: Sequence[int], parts: int) -> list[list[int]]:
    """Deal items (their ``tokens``) to ``parts`` bins: equal counts (± one), token totals within one item.

    Items go longest first, ``parts`` at a time: the longest of each deal to the lightest bin, the next to the next
    lightest, and so on. Every bin gets one item per full deal, so counts differ by at most one; and pairing the
    heaviest remaining item with the lightest bin keeps ``max(total) − min(total) ≤ max(tokens)`` (an induction over
    the deals: a bin that was heavier gets a lighter item). Ties break by bin index, so every rank computes the same
    partition from the same list. Returns each bin's item indices, in ascending order.

    >>> balanced_partition([5, 1, 9, 3, 7, 2], parts=2)
    [[2, 3, 5], [0, 1, 4]]
    >>> balanced_partition([4, 4, 4], parts=2)
    [[0, 2], [1]]
    >>> balanced_partition([], parts=3)
    [[], [], []]
    """
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    order = sorted(range(len(tokens)), key=lambda i: (-tokens[i], i))  # longest first, stable
    bins: list[list[int]] = [[] for _ in range(parts)]
    totals = [0] * parts
    for start in range(0, len(order), parts):
        deal = order[start : start + parts]
        lightest = sorted(range(parts), key=lambda b: (totals[b], len(bins[b]), b))[: len(deal)]
        for item, b in zip(deal, lightest):
            bins[b].append(item)
            totals[b] += tokens[item]
    return [sorted(b) for b in bins]


def micro_batches(lengths: Sequence[int], max_rows: int, max_tokens: int | None = None) -> list[list[int]]:
    """Cut rows (their padded ``lengths``, prompt + response) into micro-batches.

    Without ``max_tokens``: consecutive runs of ``max_rows`` rows, in order. With it (token-budget micro-batching,
    verl's ``ppo_max_token_len_per_gpu``): rows sorted longest first are cut into consecutive passes in which
    ``rows × longest row`` — what a padded forward computes — stays within the budget (a row longer than the budget
    goes alone), at most ``max_rows`` rows each: the fewest such passes, and among cuts with that many, the one that
    computes the fewest padded tokens (:func:`_fewest_padded`). Filling each pass greedily instead also gives the
    fewest passes, but in a shuffled mini-batch its last pass spans the widest range of lengths: 1.216 padded tokens
    per real one against 1.152 on one default batch. Returns lists of positions into ``lengths``.

    >>> micro_batches([3, 5, 2, 4, 1], max_rows=2)
    [[0, 1], [2, 3], [4]]
    >>> micro_batches([3, 5, 2, 4, 1], max_rows=8, max_tokens=10)
    [[1, 3], [0, 2, 4]]
    >>> micro_batches([30], max_rows=8, max_tokens=10)
    [[0]]
    >>> micro_batches([10, 9, 5, 5, 5, 5], max_rows=8, max_tokens=30)  # 2 x 10 + 4 x 5; greedily 3 x 10 + 3 x 5
    [[0, 1], [2, 3, 4, 5]]
    """
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    if max_tokens is None:
        return [list(range(i, min(i + max_rows, len(lengths)))) for i in range(0, len(lengths), max_rows)]
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [[order[k] for k in range(a, b)] for a, b in _fewest_padded([lengths[i] for i in order], max_rows,
                                                                        max_tokens)]


def _fewest_padded(desc: Sequence[int], max_rows: int, max_tokens: int) -> list[tuple[int, int]]:
    """Cut lengths sorted longest first into consecutive passes ``[a, b)``: the fewest passes within the caps, then
    the fewest padded tokens ``Σ (b − a) × desc[a]``; of equal cuts, the one whose last pass is shortest, so the result
    is the same wherever it is computed.

    A pass's cost depends only on its own rows, so the best cut of the first ``j`` rows extends a best cut of the
    first ``a``: a dynamic program over ``j``, each step trying the passes that can end at ``j`` (at most
    ``max_rows``, and no more than the budget allows at the length of its first row), with the cost compared as the
    pair (passes, padded tokens).

    >>> _fewest_padded([10, 9, 5, 5, 5, 5], max_rows=8, max_tokens=30)
    [(0, 2), (2, 6)]
    """
    n = len(desc)
    best: list[tuple[int, int, int]] = [(0, 0, 0)] + [(n + 1, 0, 0)] * n  # per prefix: (passes, padded, cut)
    for end in range(1, n + 1):
        for start in range(end - 1, max(-1, end - 1 - max_rows), -1):
            rows = end - start
            if rows > 1 and rows * desc[start] > max_tokens:  # longer rows first: an earlier start only costs more
                break
            cost = (best[start][0] + 1, best[start][1] + rows * desc[start], start)
            if cost[:2] < best[end][:2]:
                best[end] = cost
    cuts, end = [], n
    while end:
        start = best[end][2]
        cuts.append((start, end))
        end = start
    return cuts[::-1]
