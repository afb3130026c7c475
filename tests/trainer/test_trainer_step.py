"""The DAPO step: exact gradient accumulation, dynamic sampling, overlong filtering, parameter updates, resume."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from helpers import ScriptedReward, favour_eos, make_module, make_trainer, parity_reward

from dapo_lab.algo import KeepAll, OverlongFilter, SeqMeanTokenMean, SeqMeanTokenSumNorm, TokenMean
from dapo_lab.groups import assemble
from dapo_lab.reward import FunctionReward


@pytest.mark.parametrize("loss", [TokenMean(), SeqMeanTokenMean(), SeqMeanTokenSumNorm(norm_len=12)])
def test_micro_batches_give_the_mini_batch_gradient(loss):
    module = make_module(loss=loss, sampling=KeepAll(), reward=FunctionReward(parity_reward))
    favour_eos(module)  # responses of different lengths: the case where per-micro-batch means go wrong
    groups, _ = module.collect_groups()
    batch = assemble(groups, module.pad_id)
    assert batch.response_mask.sum(-1).unique().numel() > 1
    old_logp, _, _ = module._score_batch(batch)
    advantages = torch.randn(len(batch), generator=torch.Generator().manual_seed(0))
    old_logp = old_logp - 0.3 * torch.rand(old_logp.shape, generator=torch.Generator().manual_seed(1))  # clip binds
    rows = torch.arange(len(batch))

    def grads(micro: int) -> list[torch.Tensor]:
        object.__setattr__(module.batch_cfg, "micro_batch_size", micro)
        module.model.zero_grad(set_to_none=True)
        module.accumulate_gradients(batch, rows, old_logp, None, advantages)
        return [p.grad.clone() for p in module.model.parameters()]

    whole, pieces = grads(len(batch)), grads(3)
    for a, b in zip(whole, pieces):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    assert any(g.abs().sum() > 0 for g in whole)


def test_dynamic_sampling_refills_and_carries_surplus():
    module = make_module(reward=ScriptedReward(["MMWR", "MMMM", "MRMW"], group_size=4))
    groups, m = module.collect_groups()  # round 1 keeps 2, round 2 keeps 4 → 6: batch 4, surplus 2
    assert (m["sampling/num_gen_batches"], len(groups), len(module.surplus)) == (2, 4, 2)
    surplus = list(module.surplus)
    groups, m = module.collect_groups()  # starts from the 2 carried, one round keeps 2 more
    assert m["sampling/carried_groups"] == 2 and m["sampling/num_gen_batches"] == 1
    assert groups[:2] == surplus and len(groups) == 4 and m["sampling/bound_hit"] == 0.0


def test_dynamic_sampling_bound_never_crashes(tmp_path):
    module = make_module(reward=ScriptedReward(["RRWW"], group_size=4), sampling={"max_gen_batches": 3})
    groups, m = module.collect_groups()
    assert groups == [] and m["sampling/num_gen_batches"] == 3 and m["sampling/bound_hit"] == 1.0
    trainer = make_trainer(tmp_path, steps=1)
    trainer.fit(module)  # nothing informative: the step logs and moves on
    assert trainer.global_step == 1


def test_keep_all_trains_on_uninformative_groups():
    module = make_module(reward=ScriptedReward(["RRWW"], group_size=4), sampling=KeepAll())
    groups, m = module.collect_groups()
    assert len(groups) == 4 and m["sampling/num_gen_batches"] == 1


def test_overlong_filter_masks_exactly_the_truncated():
    module = make_module(overlong=OverlongFilter(), sampling=KeepAll())
    favour_eos(module, logit_boost=3.0)
    batch = assemble(module.collect_groups()[0], module.pad_id)
    assert 0 < batch.truncated.sum() < len(batch)
    assert torch.equal(batch.in_loss, ~batch.truncated)
    assert not batch.loss_mask[batch.truncated].any()
    assert torch.equal(batch.loss_mask[~batch.truncated], batch.response_mask[~batch.truncated])


def test_every_parameter_moves_after_one_step(tmp_path):
    module = make_module(reward=FunctionReward(parity_reward), sampling=KeepAll())
    before = {n: p.detach().clone() for n, p in module.model.named_parameters()}
    make_trainer(tmp_path, steps=1).fit(module)
    unchanged = [n for n, p in module.model.named_parameters() if torch.equal(p, before[n])]
    assert unchanged == []


def _metrics(path) -> pd.DataFrame:
    df = pd.read_csv(next(path.rglob("metrics.csv")))
    return df[df["actor/pg_loss"].notna()].set_index("step")


def test_resume_continues_like_an_uninterrupted_run(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    def run(out, steps, ckpt=None):
        module = make_module(reward=FunctionReward(parity_reward), sampling={"max_gen_batches": 3})
        trainer = make_trainer(out, steps=steps)
        trainer.callbacks.append(ModelCheckpoint(dirpath=out / "ckpt", save_last=True, save_top_k=0))
        trainer.checkpoint_callback  # noqa: B018
        trainer.fit(module, ckpt_path=ckpt)
        return trainer

    straight = tmp_path / "straight"
    run(straight, 4)
    first = tmp_path / "first"
    run(first, 2)
    second = tmp_path / "second"
    run(second, 4, ckpt=str(first / "ckpt" / "last.ckpt"))
    a, b = _metrics(straight), _metrics(second)
    assert list(b.index) == [3, 4]
    for col in ["rollout/acc", "train/entropy", "actor/pg_loss", "sampling/num_gen_batches", "actor/grad_norm"]:
        assert a.loc[[3, 4], col].tolist() == pytest.approx(b.loc[[3, 4], col].tolist(), rel=1e-5), col


def test_truncated_importance_sampling_reweights_token_losses():
    """With tis_cap, each token's loss is scaled by min(exp(trainer − engine), C): checked on the gradient."""
    from dapo_lab.rollout import HFEngine

    module = make_module(sampling=KeepAll(), reward=FunctionReward(parity_reward), loss=TokenMean())
    batch = assemble(module.collect_groups()[0], module.pad_id)
    old_logp, _, _ = module._score_batch(batch)
    shift = torch.where(torch.arange(batch.response_ids.shape[1]) % 2 == 0, -1.0, 0.3)  # engine off by ±
    batch.engine_logprobs = old_logp + shift  # weights exp(1)→capped at 2, and exp(-0.3)
    advantages = torch.randn(len(batch), generator=torch.Generator().manual_seed(0))
    rows = torch.arange(len(batch))

    def grad_of_first_param(engine) -> torch.Tensor:
        module.rollout = engine
        module.model.zero_grad(set_to_none=True)
        module.accumulate_gradients(batch, rows, old_logp, None, advantages)
        return next(module.model.parameters()).grad.clone()

    with_tis = grad_of_first_param(HFEngine(tis_cap=2.0))
    # Reference: the same loss with the weights folded into the advantages (per token), no TIS.
    weights = torch.minimum(torch.exp(-shift), torch.tensor(2.0)).expand_as(old_logp)
    module.model.zero_grad(set_to_none=True)
    module.rollout = HFEngine()
    module.accumulate_gradients(batch, rows, old_logp, None, advantages[:, None] * weights)
    reference = next(module.model.parameters()).grad.clone()
    torch.testing.assert_close(with_tis, reference, rtol=1e-4, atol=1e-8)
    assert not torch.allclose(with_tis, grad_of_first_param(HFEngine()))


def test_engine_gap_metric_leaves_out_carried_surplus(tmp_path):
    # Step 1 keeps 6 informative groups (batch 4, surplus 2); step 2 trains on the 2 carried groups, sampled
    # before step 1's updates, plus 2 fresh ones. The HF engine decodes with the trainer's own weights, so the
    # gap on fresh rollouts is float noise; on the carried ones it is the policy's movement (lr 1e-2).
    module = make_module(reward=ScriptedReward(["MMWR", "MMMM", "MRMW"], group_size=4), optim={"lr": 1e-2})
    make_trainer(tmp_path, steps=2, limit_val_batches=0).fit(module)  # no eval: the script scores training only
    metrics = pd.read_csv(next(tmp_path.rglob("metrics.csv"))).groupby("step").first()
    train = metrics.dropna(subset=["sampling/carried_groups"])
    assert list(train["sampling/carried_groups"]) == [0, 2]
    assert (train["actor/ppo_kl"].abs() > 0).all()
    assert (train["rollout/logprob_abs_diff_max"] < 1e-4).all(), train["rollout/logprob_abs_diff_max"]


def test_engine_old_logprobs_are_the_recomputed_ones():
    """old_logprobs="engine" skips the forward: the HF engine sampled with the trainer's own fp32 weights,
    so its log-probs must equal the recompute and give the same policy gradient."""
    from dapo_lab.rollout import HFEngine

    module = make_module(sampling=KeepAll(), reward=FunctionReward(parity_reward))
    batch = assemble(module.collect_groups()[0], module.pad_id)
    recomputed, entropy, _ = module._score_batch(batch)
    module.rollout = HFEngine(old_logprobs="engine")
    module.rollout.attach(module.model, eos_id=module.tokenizer.eos_token_id, pad_id=module.pad_id)
    from_engine, no_entropy, _ = module._score_batch(batch)
    assert no_entropy is None and entropy is not None
    mask = batch.response_mask
    torch.testing.assert_close(from_engine[mask], recomputed[mask], rtol=0, atol=1e-5)
    advantages = torch.randn(len(batch), generator=torch.Generator().manual_seed(0))
    rows = torch.arange(len(batch))

    def grads(old_logp):
        module.model.zero_grad(set_to_none=True)
        stats = module.accumulate_gradients(batch, rows, old_logp, None, advantages, with_entropy=True)
        return [p.grad.clone() for p in module.model.parameters()], stats

    (a, stats), (b, _) = grads(from_engine), grads(recomputed)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-3, atol=1e-6)
    # The entropy measured in the update's forward is the old-log-prob pass's (same weights, same rows).
    assert stats["_entropy_tokens"] == mask.sum().item()
    assert stats["_entropy_sum"] / stats["_entropy_tokens"] == pytest.approx(
        (entropy * mask).sum().item() / mask.sum().item(), rel=1e-4)


def test_engine_old_logprobs_run_logs_the_same_first_step(tmp_path):
    """A Trainer run with old_logprobs="engine" logs train/entropy from the update's forward; with one update
    per step that forward sees the pre-update policy, so step 1 matches the recompute run's metrics."""
    from dapo_lab.rollout import HFEngine

    def run(out, engine):
        module = make_module(rollout=engine, sampling=KeepAll(), reward=FunctionReward(parity_reward),
                             batch={"mini_batch_prompts": 4})
        make_trainer(out, steps=2, limit_val_batches=0).fit(module)
        return _metrics(out)

    recompute, engine = run(tmp_path / "a", HFEngine()), run(tmp_path / "b", HFEngine(old_logprobs="engine"))
    assert "rollout/logprob_abs_diff" in recompute and "rollout/logprob_abs_diff" not in engine
    for col in ["train/entropy", "train/token_prob_mean", "actor/pg_loss", "rollout/acc"]:
        assert engine.loc[1, col] == pytest.approx(recompute.loc[1, col], rel=1e-4, abs=1e-6), col
    assert engine["train/entropy"].notna().all() and (engine["actor/num_updates"] == 1).all()


@pytest.mark.parametrize("kwargs, match", [({"old_logprobs": "trainer"}, "rollout.old_logprobs"),
                                           ({"old_logprobs": "engine", "tis_cap": 2.0}, "rollout.tis_cap")])
def test_old_logprobs_setting_is_checked(kwargs, match):
    from dapo_lab.rollout import HFEngine

    with pytest.raises(ValueError, match=match):
        HFEngine(**kwargs)


def test_cosine_decay_follows_the_formula(tmp_path):
    """optim.decay=cosine: the lr of step s (0-based, T steps, no warmup) is lr·(m + (1 − m)·½(1 + cos(π s/(T−1))))."""
    import math

    lr, m, steps = 1e-3, 0.1, 3
    module = make_module(sampling=KeepAll(), reward=FunctionReward(parity_reward),
                         optim={"lr": lr, "decay": "cosine", "min_lr_ratio": m})
    make_trainer(tmp_path, steps=steps, limit_val_batches=0).fit(module)
    logged = _metrics(tmp_path)["actor/lr"].tolist()
    expected = [lr * (m + (1 - m) * 0.5 * (1 + math.cos(math.pi * s / (steps - 1)))) for s in range(steps)]
    assert logged == pytest.approx(expected, rel=1e-6)
    assert logged[-1] == pytest.approx(lr * m)


@pytest.mark.parametrize("kwargs, match", [({"decay": "linear"}, "optim.decay"),
                                           ({"min_lr_ratio": 1.5}, "optim.min_lr_ratio")])
def test_decay_settings_are_checked(kwargs, match):
    from dapo_lab.settings import OptimSettings

    with pytest.raises(ValueError, match=match):
        OptimSettings(**kwargs)
