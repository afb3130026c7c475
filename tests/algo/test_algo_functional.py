"""dapo_lab.algo.functional against hand-computed values and formulas written out here, element by element."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dapo_lab.algo import SeqMeanTokenMean, SeqMeanTokenSum, SeqMeanTokenSumNorm, TokenMean
from dapo_lab.algo import functional as F

FAST = settings(max_examples=60, deadline=None)


# ---------------------------------------------------------------- group advantages
def reference_advantages(rewards: list[float], group_size: int, scale_std: bool, eps: float) -> list[float]:
    """Eq. 9 written out with Python floats, one group at a time."""
    out = []
    for start in range(0, len(rewards), group_size):
        group = rewards[start : start + group_size]
        mean = sum(group) / len(group)
        std = math.sqrt(sum((r - mean) ** 2 for r in group) / (len(group) - 1))
        for r in group:
            if all(x == group[0] for x in group):
                out.append(0.0)
            else:
                out.append((r - mean) / (std + eps) if scale_std else r - mean)
    return out


def test_group_advantages_hand_computed():
    # One right out of four: mean -0.5, unbiased std = sqrt((1.5² + 3·0.5²)/3) = 1.
    adv = F.group_advantages(torch.tensor([1.0, -1.0, -1.0, -1.0]), group_size=4, eps=0.0)
    assert torch.allclose(adv, torch.tensor([1.5, -0.5, -0.5, -0.5]))


def test_group_advantages_all_equal_group_is_exactly_zero():
    rewards = torch.tensor([0.1, 0.1, 0.1, 0.7, 0.7, 0.7], dtype=torch.float32)
    assert torch.equal(F.group_advantages(rewards, 3), torch.zeros(6))
    assert torch.equal(F.group_advantages(rewards, 3, scale_std=False), torch.zeros(6))


@FAST
@given(
    groups=st.integers(1, 4),
    group_size=st.integers(2, 6),
    data=st.data(),
    scale_std=st.booleans(),
)
def test_group_advantages_matches_formula(groups, group_size, data, scale_std):
    rewards = data.draw(
        st.lists(st.sampled_from([-1.0, 1.0, 0.5, -0.25, 0.0]), min_size=groups * group_size,
                 max_size=groups * group_size)
    )
    got = F.group_advantages(torch.tensor(rewards, dtype=torch.float64), group_size, scale_std=scale_std)
    want = reference_advantages(rewards, group_size, scale_std, 1e-6)
    assert got.tolist() == pytest.approx(want, rel=1e-9, abs=1e-9)


def test_group_advantages_bf16_and_dtype():
    rewards = torch.tensor([1.0, -1.0, 1.0, 1.0], dtype=torch.bfloat16)
    adv = F.group_advantages(rewards, 2)
    assert adv.dtype == torch.bfloat16
    assert adv.float().tolist() == pytest.approx([0.7071, -0.7071, 0.0, 0.0], abs=1e-2)


@pytest.mark.parametrize(
    "rewards,group_size,match",
    [(torch.zeros(5), 2, "multiple of group_size"), (torch.zeros(4), 1, "group_size must be >= 2"),
     (torch.zeros(2, 2), 2, "1-D")],
)
def test_group_advantages_errors(rewards, group_size, match):
    with pytest.raises(ValueError, match=match):
        F.group_advantages(rewards, group_size)


# ---------------------------------------------------------------- clipped policy loss
def reference_token_loss(ratio: float, adv: float, eps_low: float, eps_high: float, dual: float | None) -> float:
    clipped_ratio = min(max(ratio, 1 - eps_low), 1 + eps_high)
    loss = max(-ratio * adv, -clipped_ratio * adv)
    if dual is not None and adv < 0:
        loss = min(loss, -dual * adv)
    return loss


@FAST
@given(
    ratios=st.lists(st.floats(0.05, 5.0), min_size=1, max_size=12),
    advs=st.lists(st.floats(-3.0, 3.0), min_size=12, max_size=12),
    eps_low=st.floats(0.0, 0.5),
    eps_high=st.floats(0.0, 0.8),
    dual=st.one_of(st.none(), st.floats(1.5, 5.0)),
)
def test_clipped_policy_loss_matches_formula(ratios, advs, eps_low, eps_high, dual):
    n = len(ratios)
    old = torch.randn(1, n, dtype=torch.float64)
    logp = old + torch.log(torch.tensor([ratios], dtype=torch.float64))
    adv = torch.tensor([advs[:n]], dtype=torch.float64)  # per-token [1, T]
    loss, low, high = F.clipped_policy_loss(logp, old, adv, eps_low=eps_low, eps_high=eps_high, dual_clip=dual)
    for t in range(n):
        r, a = ratios[t], advs[t]
        assert loss[0, t].item() == pytest.approx(reference_token_loss(r, a, eps_low, eps_high, dual), rel=1e-9)
        assert high[0, t].item() == (a > 0 and r > 1 + eps_high + 1e-12) or abs(r - (1 + eps_high)) < 1e-9
        assert low[0, t].item() == (a < 0 and r < 1 - eps_low - 1e-12) or abs(r - (1 - eps_low)) < 1e-9


def test_clip_higher_paper_probability_example():
    """Old prob 0.01: symmetric ε=0.2 stops the gradient above 0.012; ε_high=0.28 above 0.0128."""
    old = torch.log(torch.tensor([[0.01, 0.01, 0.01]]))
    logp = torch.log(torch.tensor([[0.0119, 0.0125, 0.0129]])).requires_grad_(True)
    adv = torch.tensor([1.0])
    for eps_high, expect_grad in [(0.2, [True, False, False]), (0.28, [True, True, False])]:
        loss, _, high = F.clipped_policy_loss(logp, old, adv, eps_low=0.2, eps_high=eps_high)
        (grad,) = torch.autograd.grad(loss.sum(), logp)
        assert (grad[0] != 0).tolist() == expect_grad
        assert high[0].tolist() == [not g for g in expect_grad]


def test_gradient_zero_exactly_where_clip_binds():
    # Four cases: (A>0, r high) clipped; (A>0, r low) not; (A<0, r low) clipped; (A<0, r high) not.
    ratio = torch.tensor([[1.5, 0.5, 0.5, 1.5]], dtype=torch.float64)
    old = torch.zeros(1, 4, dtype=torch.float64)
    logp = torch.log(ratio).requires_grad_(True)
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]], dtype=torch.float64)
    loss, low, high = F.clipped_policy_loss(logp, old, adv, eps_low=0.2, eps_high=0.28)
    (grad,) = torch.autograd.grad(loss.sum(), logp)
    assert grad[0].tolist() == pytest.approx([0.0, -0.5, 0.0, 1.5])  # d(-r·A)/dlogp = -r·A
    assert high[0].tolist() == [True, False, False, False]
    assert low[0].tolist() == [False, False, True, False]


def test_dual_clip_caps_negative_advantage_loss():
    old = torch.zeros(1, 2)
    logp = torch.log(torch.tensor([[10.0, 2.0]])).requires_grad_(True)
    loss, _, _ = F.clipped_policy_loss(logp, old, torch.tensor([-1.0]), eps_low=0.2, eps_high=0.28, dual_clip=3.0)
    assert loss[0].tolist() == pytest.approx([3.0, 2.0])  # min(10, 3)·1 and the unclipped 2
    (grad,) = torch.autograd.grad(loss.sum(), logp)
    assert grad[0, 0] == 0 and grad[0, 1] != 0


def test_clipped_policy_loss_extreme_log_ratio_is_finite():
    loss, _, _ = F.clipped_policy_loss(torch.tensor([[0.0]]), torch.tensor([[-1e4]]), torch.tensor([-1.0]),
                                       eps_low=0.2, eps_high=0.28)
    assert torch.isfinite(loss).all()


@pytest.mark.parametrize(
    "kwargs,match",
    [(dict(eps_low=0.2, eps_high=-0.1), "eps_high"), (dict(eps_low=1.0, eps_high=0.2), "eps_low"),
     (dict(eps_low=0.2, eps_high=0.2, dual_clip=1.0), "dual_clip")],
)
def test_clipped_policy_loss_bad_args(kwargs, match):
    with pytest.raises(ValueError, match=match):
        F.clipped_policy_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2), **kwargs)


def test_clipped_policy_loss_shape_mismatch():
    with pytest.raises(ValueError, match="shape mismatch"):
        F.clipped_policy_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2), eps_low=0.2, eps_high=0.2)
    with pytest.raises(ValueError, match="advantages"):
        F.clipped_policy_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3), eps_low=0.2, eps_high=0.2)


# ---------------------------------------------------------------- aggregation
AGGREGATIONS = [TokenMean(), SeqMeanTokenMean(), SeqMeanTokenSum(), SeqMeanTokenSumNorm(norm_len=4)]


def test_token_vs_sample_loss_paper_example():
    """A long response [2, 0]-token-loss pattern beside ten 1-token responses of loss 0.5.

    Per sample: the long response's mean is 1 → (1 + 10·0.5) / 11 = 6/11.
    Per token: (2 + 0 + 10·0.5) / 12 = 7/12: each of the long response's tokens weighs like any other.
    """
    loss = torch.tensor([[2.0, 0.0]] + [[0.5, 9.9]] * 10)  # 9.9 sits under the mask: must not count
    mask = torch.tensor([[True, True]] + [[True, False]] * 10)
    assert F.token_mean(loss, mask).item() == pytest.approx(7 / 12)
    assert F.seq_mean_token_mean(loss, mask).item() == pytest.approx(6 / 11)
    assert F.seq_mean_token_sum(loss, mask).item() == pytest.approx(7 / 11)
    assert F.seq_mean_token_sum_norm(loss, mask, norm_len=4).item() == pytest.approx(7 / 44)


def test_aggregate_ignores_empty_rows_in_sequence_count():
    loss = torch.tensor([[1.0, 1.0], [5.0, 5.0]])
    mask = torch.tensor([[True, True], [False, False]])  # row 2 filtered out (e.g. truncated)
    for fn, want in [(F.token_mean, 1.0), (F.seq_mean_token_mean, 1.0), (F.seq_mean_token_sum, 2.0)]:
        assert fn(loss, mask).item() == pytest.approx(want)
    assert F.token_mean(loss, torch.zeros_like(mask)).item() == 0.0  # nothing: 0, not NaN
    assert F.count_sequences(mask).item() == 1 and F.count_tokens(mask).item() == 2


@FAST
@given(
    batch=st.integers(2, 12),
    length=st.integers(1, 9),
    which=st.integers(0, len(AGGREGATIONS) - 1),
    seed=st.integers(0, 10_000),
    data=st.data(),
)
def test_micro_batches_with_global_counts_sum_to_the_whole(batch, length, which, seed, data):
    """Σ over micro-batches (or ranks) of agg(piece, the whole's counts) == agg(whole), for every aggregation with
    exactly the counts it declares in ``global_counts``."""
    agg = AGGREGATIONS[which]
    gen = torch.Generator().manual_seed(seed)
    loss = torch.randn(batch, length, generator=gen, dtype=torch.float64)
    mask = torch.rand(batch, length, generator=gen) < 0.7
    cuts = sorted(data.draw(st.sets(st.integers(1, batch - 1), max_size=batch - 1)))
    bounds = [0, *cuts, batch]
    counts = {name: F.LOSS_COUNTS[name](mask) for name in agg.global_counts}
    whole = agg(loss, mask)
    pieces = sum(agg(loss[a:b], mask[a:b], counts) for a, b in zip(bounds[:-1], bounds[1:]))
    assert pieces.item() == pytest.approx(whole.item(), rel=1e-9, abs=1e-12)


def test_local_denominators_would_be_wrong():
    """Why the global counts matter: averaging per-micro-batch token means over-weights short pieces."""
    loss = torch.tensor([[1.0, 1.0, 1.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    whole = F.token_mean(loss, mask)  # 7 / 4
    naive = (F.token_mean(loss[:1], mask[:1]) + F.token_mean(loss[1:], mask[1:])) / 2
    exact = sum(F.token_mean(loss[i : i + 1], mask[i : i + 1], tokens=mask.sum()) for i in (0, 1))
    assert whole.item() == pytest.approx(1.75) and naive.item() == pytest.approx(2.5)
    assert exact.item() == pytest.approx(1.75)


@pytest.mark.parametrize("fn", [F.token_mean, F.seq_mean_token_mean, F.seq_mean_token_sum,
                                lambda loss, mask: F.seq_mean_token_sum_norm(loss, mask, norm_len=2)])
def test_aggregate_errors_and_bf16(fn):
    with pytest.raises(ValueError, match="mask must be bool"):
        fn(torch.zeros(1, 1), torch.ones(1, 1))
    with pytest.raises(ValueError, match="shape mismatch"):
        fn(torch.zeros(1, 2), torch.ones(1, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"loss must be \[B, T\]"):
        fn(torch.zeros(2), torch.ones(2, dtype=torch.bool))
    # 4096 bf16 tokens of 1.0 + 0.01: bf16 accumulation alone would lose the 0.01s.
    loss = torch.full((4, 1024), 1.01, dtype=torch.bfloat16)
    out = F.token_mean(loss, torch.ones(4, 1024, dtype=torch.bool))
    assert out.dtype == torch.float32 and out.item() == pytest.approx(1.0078125)  # bf16(1.01) exactly


def test_dr_grpo_norm_len_must_be_positive():
    with pytest.raises(ValueError, match="norm_len"):
        F.seq_mean_token_sum_norm(torch.zeros(1, 1), torch.ones(1, 1, dtype=torch.bool), norm_len=0)


# ---------------------------------------------------------------- KL
@FAST
@given(lp=st.floats(-8, 0), ref=st.floats(-8, 0))
def test_kl_estimators_match_formulas(lp, ref):
    t, r = torch.tensor([[lp]], dtype=torch.float64), torch.tensor([[ref]], dtype=torch.float64)
    assert F.kl_estimate(t, r, "k1").item() == pytest.approx(lp - ref)
    assert F.kl_estimate(t, r, "k2").item() == pytest.approx(0.5 * (lp - ref) ** 2)
    k3 = F.kl_estimate(t, r, "k3").item()
    assert k3 == pytest.approx(math.exp(ref - lp) - (ref - lp) - 1, rel=1e-9, abs=1e-12)
    assert k3 >= 0


def test_kl_unbiased_on_average():
    """E_{x~p}[k1] = E[k3] = KL(p‖q) for a two-point distribution, computed exactly."""
    p, q = torch.tensor([0.3, 0.7], dtype=torch.float64), torch.tensor([0.6, 0.4], dtype=torch.float64)
    true_kl = (p * (p / q).log()).sum().item()
    for kind in ("k1", "k3"):
        per_x = F.kl_estimate(p.log().unsqueeze(0), q.log().unsqueeze(0), kind)[0]
        assert (p * per_x).sum().item() == pytest.approx(true_kl)
    with pytest.raises(ValueError, match="unknown KL"):
        F.kl_estimate(p, q, "k4")


# ---------------------------------------------------------------- soft overlong penalty
def test_soft_overlong_trl_example():
    """TRL's test: 90 tokens with L_max=100, L_cache=20 sits halfway into the buffer → −0.5."""
    assert F.soft_overlong_penalty(torch.tensor([90]), max_len=100, cache_len=20).item() == pytest.approx(-0.5)


@FAST
@given(length=st.integers(0, 300), max_len=st.integers(10, 200), frac=st.floats(0.05, 1.0),
       factor=st.floats(0.0, 2.0))
def test_soft_overlong_matches_eq13(length, max_len, frac, factor):
    cache = max(1, int(max_len * frac))
    if length <= max_len - cache:
        want = 0.0
    elif length <= max_len:
        want = ((max_len - cache) - length) / cache
    else:
        want = -1.0
    got = F.soft_overlong_penalty(torch.tensor([length]), max_len=max_len, cache_len=cache, factor=factor)
    assert got.item() == pytest.approx(want * factor, rel=1e-5, abs=1e-6)


def test_soft_overlong_bad_args():
    with pytest.raises(ValueError, match="cache_len"):
        F.soft_overlong_penalty(torch.tensor([1]), max_len=10, cache_len=20)
    with pytest.raises(ValueError, match="cache_len"):
        F.soft_overlong_penalty(torch.tensor([1]), max_len=10, cache_len=0)


# ---------------------------------------------------------------- informative groups
def test_informative_groups_tolerates_float_noise():
    values = torch.tensor([0.5, 0.5 + 1e-9, 1.0, -1.0, 1.0, 1.0], dtype=torch.float64)
    assert F.informative_groups(values, 2).tolist() == [False, True, False]
    # Plain std != 0 would call the first group informative: the reason for the tolerance.
    assert values[:2].std() != 0


@FAST
@given(groups=st.lists(st.lists(st.sampled_from([0.0, 1.0]), min_size=4, max_size=4), min_size=1, max_size=6))
def test_informative_groups_is_zero_lt_correct_lt_g(groups):
    flat = torch.tensor([v for g in groups for v in g])
    want = [0 < sum(g) < len(g) for g in groups]
    assert F.informative_groups(flat, 4).tolist() == want


# ---------------------------------------------------------------- entropy
@FAST
@given(seed=st.integers(0, 10_000), scale=st.floats(0.1, 30.0))
def test_entropy_matches_definition(seed, scale):
    logits = torch.randn(3, 11, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale
    p = torch.softmax(logits, -1)
    want = -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(-1)
    assert torch.allclose(F.entropy_from_logits(logits), want, atol=1e-9)


def test_entropy_huge_masked_and_bf16_logits():
    huge = torch.tensor([[1e30, 1e30, 0.0], [5e4, -5e4, -float("inf")]])
    assert F.entropy_from_logits(huge).tolist() == pytest.approx([math.log(2), 0.0], abs=1e-6)
    logits = torch.randn(2, 4, 50)
    bf16 = F.entropy_from_logits(logits.to(torch.bfloat16))
    assert bf16.dtype == torch.float32
    assert torch.allclose(bf16, F.entropy_from_logits(logits.to(torch.bfloat16).float()))
    assert torch.allclose(bf16, F.entropy_from_logits(logits), atol=0.05)


@pytest.mark.parametrize("chunk", [1, 3, 7, 100])
def test_entropy_chunked_equals_full(chunk):
    logits = torch.randn(2, 5, 64)
    assert torch.allclose(F.entropy_from_logits_chunked(logits, chunk), F.entropy_from_logits(logits))
    assert F.entropy_from_logits_chunked(logits, chunk).shape == (2, 5)


def test_masked_helpers():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    m = torch.tensor([[True, False, True], [False, False, False]])
    assert F.masked_sum(x, m).item() == 4.0
    assert F.masked_mean(x, m, dim=-1).tolist() == [2.0, 0.0]
    with pytest.raises(ValueError, match="shape mismatch"):
        F.masked_mean(x, m[:, :2])
