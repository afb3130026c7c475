"""Truncated importance sampling weights: the formula, its edge cases, and that they carry no gradient."""

from __future__ import annotations

import pytest
import torch

from dapo_lab.algo.functional import truncated_importance_weights


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("cap", [1.0, 2.0, 5.0])
def test_equals_the_formula_over_random_shapes(seed, cap):
    gen = torch.Generator().manual_seed(seed)
    b, t = torch.randint(1, 9, (2,), generator=gen).tolist()
    trainer = -torch.rand(b, t, generator=gen, dtype=torch.float64) * 4  # log-probs
    engine = trainer + torch.randn(b, t, generator=gen, dtype=torch.float64)  # mismatched by ~1 nat
    expected = torch.minimum(torch.exp(trainer - engine), torch.tensor(cap, dtype=torch.float64))
    got = truncated_importance_weights(trainer, engine, cap=cap)
    assert got.shape == (b, t) and got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)


def test_hand_computed_values():
    trainer = torch.tensor([[-1.0, -1.0, -3.0, -0.1]])
    engine = torch.tensor([[-1.0, -2.0, -1.0, -9.0]])
    w = truncated_importance_weights(trainer, engine, cap=2.0)
    torch.testing.assert_close(w, torch.tensor([[1.0, 2.0, torch.exp(torch.tensor(-2.0)).item(), 2.0]]))


def test_huge_log_ratio_does_not_overflow_and_matching_logprobs_give_one():
    trainer = torch.tensor([[0.0, -1e4, -0.5]])
    engine = torch.tensor([[-1e4, 0.0, -0.5]])
    w = truncated_importance_weights(trainer, engine, cap=2.0)
    assert torch.isfinite(w).all()
    assert w.tolist() == [[2.0, 0.0, 1.0]]


def test_no_gradient_and_fp32_for_bf16_inputs():
    trainer = torch.randn(3, 4, requires_grad=True)
    engine = torch.randn(3, 4)
    assert not truncated_importance_weights(trainer, engine, cap=2.0).requires_grad
    w = truncated_importance_weights(trainer.detach().bfloat16(), engine.bfloat16(), cap=2.0)
    assert w.dtype == torch.float32


def test_weights_multiply_the_token_loss_as_a_constant():
    # The module's use: loss_t * w_t; the gradient w.r.t. logp is w times the unweighted one.
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    old, engine = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -1.0]])
    w = truncated_importance_weights(old, engine, cap=2.0)
    (-(logp - old).exp() * w).sum().backward()
    torch.testing.assert_close(logp.grad, -w)


def test_rejects_bad_cap_and_shapes():
    with pytest.raises(ValueError, match="cap"):
        truncated_importance_weights(torch.zeros(1, 2), torch.zeros(1, 2), cap=0.0)
    with pytest.raises(ValueError, match="shape"):
        truncated_importance_weights(torch.zeros(1, 2), torch.zeros(2, 1), cap=2.0)
