"""The component classes: their choices agree with the functional layer and validate their arguments."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from dapo_lab.algo import (
    DecoupledClip,
    DynamicSampling,
    GroupAdvantage,
    KeepAll,
    KLInReward,
    KLLoss,
    NoKL,
    NoOverlong,
    OverlongFilter,
    OverlongFilterSoftPunishment,
    SeqMeanTokenMean,
    SeqMeanTokenSum,
    SeqMeanTokenSumNorm,
    SoftOverlongPunishment,
    SymmetricClip,
    TokenMean,
)
from dapo_lab.algo.sampling import prompts_to_fill


def test_symmetric_is_decoupled_with_equal_eps():
    gen = torch.Generator().manual_seed(0)
    logp, old = torch.randn(4, 6, generator=gen), torch.randn(4, 6, generator=gen)
    adv, mask = torch.randn(4, generator=gen), torch.rand(4, 6, generator=gen) > 0.3
    a, ma = SymmetricClip(eps=0.2)(logp, old, adv, mask)
    b, mb = DecoupledClip(eps_low=0.2, eps_high=0.2)(logp, old, adv, mask)
    assert torch.equal(a, b) and all(torch.equal(ma[k], mb[k]) for k in ma)


def test_clip_metrics_count_masked_tokens_only():
    old = torch.zeros(1, 4)
    logp = torch.log(torch.tensor([[2.0, 2.0, 1.0, 2.0]]))  # ratio 2 → above 1.28
    mask = torch.tensor([[True, True, True, False]])
    _, m = DecoupledClip()(logp, old, torch.tensor([1.0]), mask)
    assert m["actor/clipfrac_high"].item() == pytest.approx(2 / 3)
    assert m["actor/clipfrac_low"].item() == 0.0
    assert m["actor/ppo_kl"].item() == pytest.approx(-2 * torch.log(torch.tensor(2.0)).item() / 3)


@pytest.mark.parametrize(
    "build,match",
    [(lambda: DecoupledClip(eps_high=-0.1), "eps_high"), (lambda: DecoupledClip(eps_low=1.5), "eps_low"),
     (lambda: SymmetricClip(eps=-0.1), "eps"), (lambda: DecoupledClip(dual_clip=0.5), "dual_clip"),
     (lambda: SeqMeanTokenSumNorm(norm_len=0), "norm_len"), (lambda: KLLoss(kind="k9"), "kind"),
     (lambda: KLInReward(beta=-1.0), "beta"), (lambda: SoftOverlongPunishment(max_len=10, cache_len=20), "cache_len"),
     (lambda: DynamicSampling(metric="entropy"), "metric"), (lambda: DynamicSampling(max_gen_batches=0), "max_gen"),
     (lambda: DynamicSampling(fill_probability=1.0), "fill_probability")],
)
def test_bad_component_arguments_name_the_field(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_aggregations_modes():
    loss = torch.tensor([[1.0, 3.0], [2.0, 0.0]])
    mask = torch.tensor([[True, True], [True, False]])
    assert TokenMean()(loss, mask).item() == pytest.approx(2.0)
    assert SeqMeanTokenMean()(loss, mask).item() == pytest.approx(2.0)
    assert SeqMeanTokenSum()(loss, mask).item() == pytest.approx(3.0)
    assert SeqMeanTokenSumNorm(norm_len=4)(loss, mask).item() == pytest.approx(6 / 8)
    # The global count replaces the local one.
    assert TokenMean()(loss, mask, {"tokens": torch.tensor(6)}).item() == pytest.approx(1.0)
    assert SeqMeanTokenMean()(loss, mask, {"sequences": 4}).item() == pytest.approx(1.0)
    assert [a.global_counts for a in (TokenMean(), SeqMeanTokenSumNorm())] == [("tokens",), ("sequences",)]


def test_group_advantage_metrics():
    adv, m = GroupAdvantage()(torch.tensor([1.0, 1.0, 1.0, -1.0]), group_size=2)
    assert adv[:2].tolist() == [0.0, 0.0]
    assert m["advantage/zero_frac"].item() == 0.5
    drgrpo, _ = GroupAdvantage(scale_std=False)(torch.tensor([1.0, -1.0]), group_size=2)
    assert drgrpo.tolist() == [1.0, -1.0]


def test_kl_components():
    lp = torch.tensor([[0.0, -1.0]], requires_grad=True)
    ref = torch.tensor([[-0.5, -0.5]])
    mask = torch.tensor([[True, True]])
    assert not NoKL.needs_reference and KLInReward.needs_reference and KLLoss.needs_reference
    assert NoKL().sequence_penalty(lp, ref, mask).tolist() == [0.0]
    assert KLInReward(kind="k1", beta=2.0).sequence_penalty(lp, ref, mask).item() == pytest.approx(0.0)
    term = KLLoss(kind="k2", beta=2.0).token_loss(lp, ref)
    assert term.tolist()[0] == pytest.approx([0.25, 0.25])
    term.sum().backward()
    assert lp.grad.tolist()[0] == pytest.approx([1.0, -1.0])


def test_overlong_components():
    rewards = torch.tensor([1.0, 1.0, -1.0])
    lengths = torch.tensor([50, 90, 100])
    truncated = torch.tensor([False, False, True])
    r, keep, _ = NoOverlong()(rewards, lengths, truncated)
    assert torch.equal(r, rewards) and keep.all()
    r, keep, m = OverlongFilter()(rewards, lengths, truncated)
    assert torch.equal(r, rewards) and keep.tolist() == [True, True, False]
    assert m["overlong/filtered_frac"].item() == pytest.approx(1 / 3)
    r, keep, m = SoftOverlongPunishment(max_len=100, cache_len=20)(rewards, lengths, truncated)
    assert r.tolist() == pytest.approx([1.0, 0.5, -2.0]) and keep.all()
    assert m["overlong/penalty_mean"].item() == pytest.approx(-0.5)
    r, keep, _ = OverlongFilterSoftPunishment(max_len=100, cache_len=20)(rewards, lengths, truncated)
    assert r.tolist() == pytest.approx([1.0, 0.5, -2.0]) and keep.tolist() == [True, True, False]


def test_sampling_components():
    acc = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    keep, m = KeepAll().select(acc, group_size=2)
    assert keep.all() and m["sampling/informative_group_frac"].item() == pytest.approx(1 / 3)
    keep, m = DynamicSampling().select(acc, group_size=2)
    assert keep.tolist() == [False, True, False]
    assert m["sampling/discarded_group_frac"].item() == pytest.approx(2 / 3)
    assert DynamicSampling.dynamic and not KeepAll.dynamic


def binomial_tail(n: int, f: float, m: int) -> float:
    """P(Binomial(n, f) >= m), summed exactly term by term (in logs, so large n cannot overflow)."""
    log_f, log_q = math.log(f), math.log1p(-f)
    return sum(math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * log_f + (n - k) * log_q)
               for k in range(m, n + 1))


@given(missing=st.integers(1, 64), twentieths=st.integers(1, 19), probability=st.sampled_from([0.6, 0.75, 0.9, 0.95]))
def test_a_round_sized_to_fill_with_a_probability_does(missing, twentieths, probability):
    """prompts_to_fill's n prompts, each group informative with probability f, hold at least ``missing`` informative
    groups with at least the asked probability (the exact binomial tail, not the normal approximation it solves),
    and one prompt fewer does not satisfy the approximation it solves: the fewest such prompts."""
    f = twentieths / 20
    n = prompts_to_fill(missing, f, probability)
    assert binomial_tail(n, f, missing) >= probability
    z = {0.6: 0.2533471, 0.75: 0.6744898, 0.9: 1.2815516, 0.95: 1.6448536}[probability]  # standard-normal quantiles
    assert (n - 1) * f - z * math.sqrt((n - 1) * f * (1 - f)) < missing <= n * f - z * math.sqrt(n * f * (1 - f)) + 1e-6


@given(missing=st.integers(1, 256), twentieths=st.integers(1, 20), engines=st.integers(1, 8))
def test_half_probability_sizes_a_round_at_the_mean(missing, twentieths, engines):
    """At fill_probability 0.5 a round is ceil(missing / f) prompts in all (exact rational arithmetic here),
    split over the engines, between the minimum and the cap."""
    f = Fraction(twentieths, 20)
    sampler = DynamicSampling(oversample=True, fill_probability=0.5, max_round_prompts=10**6)
    expected = math.ceil(math.ceil(missing / f) / engines)
    assert sampler.round_prompts(missing, engines, minimum=1, informative=float(f)) == expected
    assert DynamicSampling(oversample=True, max_round_prompts=10**6).round_prompts(
        missing, engines, minimum=1, informative=float(f)) >= expected  # the default's 0.9: a margin, never less
