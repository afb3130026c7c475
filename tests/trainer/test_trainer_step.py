"""The DAPO step: exact gradient accumulation, dynamic sampling, overlong filtering, parameter updates, resume."""

from __future__ import annotations

import copy

import lightning as L
import pandas as pd
import pytest
import torch
from helpers import PARITY, ScriptedReward, favour_eos, gradient_only, make_learner, make_run

from dapo_lab.trainer import PlainOptimization
from dapo_lab.trainer.balance import micro_batches
from dapo_lab.trainer.groups import assemble


@pytest.mark.parametrize("loss", ["token", "sample", "dr_grpo"])
def test_micro_batches_give_the_mini_batch_gradient(loss):
    learner = make_learner(f"loss={loss}", "sampling=none", *PARITY)
    favour_eos(learner)  # responses of different lengths: the case where per-micro-batch means go wrong
    batch = assemble(learner.collect_groups(0)[0].groups, learner.pad_id)
    assert batch.response_mask.sum(-1).unique().numel() > 1
    old_logp, _, _ = learner.score(batch)
    advantages = torch.randn(len(batch), generator=torch.Generator().manual_seed(0))
    old_logp = old_logp - 0.3 * torch.rand(old_logp.shape, generator=torch.Generator().manual_seed(1))  # clip binds
    rows = torch.arange(len(batch))

    def grads(micro: int) -> list[torch.Tensor]:
        object.__setattr__(learner.batch_cfg, "micro_batch_size", micro)
        learner.model.zero_grad(set_to_none=True)
        learner.accumulate_gradients(batch, rows, old_logp, None, advantages, gradient_only(learner))
        return [p.grad.clone() for p in learner.model.parameters()]

    whole, pieces = grads(len(batch)), grads(3)
    for a, b in zip(whole, pieces):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    assert any(g.abs().sum() > 0 for g in whole)


def test_token_budget_passes_read_the_row_lengths_once():
    # Once per call, not once per row: each read sums the whole [N, R] mask (3 s a mini-batch at 1k rows x 20k).
    learner = make_learner("sampling=none", "batch.max_tokens_per_micro_batch=120", *PARITY)
    favour_eos(learner)
    batch = assemble(learner.collect_groups(0)[0].groups, learner.pad_id)
    lengths, reads = batch.row_lengths(), []
    batch.row_lengths = lambda: reads.append(1) or lengths
    rows = torch.randperm(len(batch), generator=torch.Generator().manual_seed(0))  # a mini-batch's shuffled rows
    passes = learner._micro_batches(batch, rows)
    assert len(reads) == 1 and len(passes) > 1
    expected = micro_batches([lengths[i] for i in rows.tolist()], learner.batch_cfg.micro_batch_size, 120)
    assert [p.tolist() for p in passes] == [[rows[j].item() for j in part] for part in expected]
    assert all(len(p) * max(lengths[i] for i in p.tolist()) <= 120 or len(p) == 1 for p in passes)


def test_dynamic_sampling_refills_and_carries_surplus():
    learner = make_learner(reward=ScriptedReward(["MMWR", "MMMM", "MRMW"], group_size=4))
    shared, m = learner.collect_groups(0)  # round 1 keeps 2, round 2 keeps 4 → 6: batch 4, surplus 2
    assert (m["sampling/num_gen_batches"], len(shared.groups), len(learner.surplus)) == (2, 4, 2)
    surplus = list(learner.surplus)
    shared, m = learner.collect_groups(1)  # starts from the 2 carried, one round keeps 2 more
    assert m["sampling/carried_groups"] == 2 and m["sampling/num_gen_batches"] == 1
    assert shared.groups[:2] == surplus and len(shared.groups) == 4 and m["sampling/bound_hit"] == 0.0


def test_round_metrics_reduce_by_their_own_rule():
    """Two generation rounds: the step's response_len_max is the larger round's maximum (not their mean), token
    counts and generation time add up, accuracies average."""
    learner = make_learner(reward=ScriptedReward(["MWWW", "MMMW"], group_size=4))
    rounds = []
    original = learner._generate_round

    def spy(step, round_index, prompts):
        kept, metrics = original(step, round_index, prompts)
        if round_index == 0:
            metrics["rollout/response_len_max"] = 1.0  # so that the max and the mean of the rounds differ
        rounds.append(metrics)
        return kept, metrics

    learner._generate_round = spy
    _, m = learner.collect_groups(0)
    assert len(rounds) == 2 and rounds[1]["rollout/response_len_max"] > 1.0
    assert m["rollout/response_len_max"] == rounds[1]["rollout/response_len_max"]
    assert m["rollout/tokens"] == rounds[0]["rollout/tokens"] + rounds[1]["rollout/tokens"]
    assert m["time/generate"] == pytest.approx(rounds[0]["time/generate"] + rounds[1]["time/generate"])
    assert m["rollout/acc"] == pytest.approx((rounds[0]["rollout/acc"] + rounds[1]["rollout/acc"]) / 2)


class AlternatingReward:
    """Group i (counted over the whole run) is mixed when i is even, all right when odd: half the groups inform."""

    def __init__(self, group_size: int) -> None:
        self.group_size, self.groups = group_size, 0

    def score_batch(self, responses, ground_truths):
        correct = []
        for _ in range(len(responses) // self.group_size):
            correct += [True] + [self.groups % 2 == 1] * (self.group_size - 1)
            self.groups += 1
        return [1.0 if c else -1.0 for c in correct], correct, {}


@pytest.mark.parametrize("oversample, rounds, prompts", [(False, [2, 2], [8, 8]), (True, [2, 1], [8, 8])])
def test_oversampling_sizes_rounds_from_the_informative_fraction(oversample, rounds, prompts):
    """Half the groups inform. Without oversampling each step needs 2 rounds of 4 prompts. With it, step 1 measures
    the fraction (0.5) and step 2 asks for ceil(4 / 0.5) = 8 prompts at once: one round, the same prompts in all."""
    learner = make_learner(f"++sampling.oversample={str(oversample).lower()}", "++sampling.max_round_prompts=16",
                           "sampling.fill_probability=0.5", reward=AlternatingReward(group_size=4))
    got = [learner.collect_groups(step)[1] for step in range(2)]
    assert [m["sampling/num_gen_batches"] for m in got] == rounds
    assert [m["sampling/round_prompts"] for m in got] == prompts
    assert all(m["sampling/batch_groups"] == 4 and m["sampling/bound_hit"] == 0 for m in got)
    assert learner.informative_frac == pytest.approx(0.5)


def test_dynamic_sampling_bound_never_crashes(tmp_path):
    built = make_run(tmp_path, "sampling.max_gen_batches=3", "+trainer.limit_val_batches=0", steps=1,
                     reward=ScriptedReward(["RRWW"], group_size=4))
    shared, m = built.learner.collect_groups(0)
    assert shared.groups == [] and m["sampling/num_gen_batches"] == 3 and m["sampling/bound_hit"] == 1.0
    built.trainer.fit(built.module)  # nothing informative: the step logs and moves on
    assert built.trainer.global_step == 1


class _Snapshots(L.Callback):
    """Weights and optimizer state after every training step."""

    def __init__(self) -> None:
        self.states: list[tuple[dict, dict]] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        weights = {n: p.detach().clone() for n, p in module.model.named_parameters()}
        self.states.append((weights, copy.deepcopy(trainer.optimizers[0].state_dict()["state"])))


def _assert_same_state(before: tuple[dict, dict], after: tuple[dict, dict]) -> None:
    moved = [n for n, p in after[0].items() if not torch.equal(p, before[0][n])]
    assert moved == [], f"the empty step changed {len(moved)} weights, e.g. {moved[:3]}"
    assert before[1].keys() == after[1].keys()
    for index, state in after[1].items():
        for key, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(before[1][index][key])), (index, key)


def test_empty_step_after_a_normal_one_changes_nothing(tmp_path):
    """Step 1 trains; step 2 finds nothing informative anywhere. Step 2 must not replay step 1's last gradient
    through AdamW: every weight and the optimizer state stay as step 1 left them (the step counter advances)."""
    snapshots = _Snapshots()
    built = make_run(tmp_path, "sampling.max_gen_batches=2", "+trainer.limit_val_batches=0", steps=2,
                     reward=ScriptedReward(["MMMM", "RRWW"], group_size=4))
    built.trainer.callbacks.append(snapshots)
    built.trainer.fit(built.module)
    assert built.trainer.global_step == 2 and len(snapshots.states) == 2
    metrics = pd.read_csv(tmp_path / "csv" / "metrics.csv").groupby("step").first()
    assert metrics.loc[1, "actor/num_updates"] == 2 and metrics.loc[2, "actor/num_updates"] == 0
    _assert_same_state(*snapshots.states)


def test_empty_step_without_lightning_changes_nothing():
    learner = make_learner(reward=ScriptedReward(["MMMM", "RRWW"], group_size=4))
    params = list(learner.model.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    optimization = PlainOptimization(optimizer, params, grad_clip=1.0)
    assert learner.step(0, optimization)["actor/num_updates"] == 2
    before = ({n: p.detach().clone() for n, p in learner.model.named_parameters()},
              copy.deepcopy(optimizer.state_dict()["state"]))
    assert learner.step(1, optimization)["actor/num_updates"] == 0
    _assert_same_state(before, ({n: p.detach() for n, p in learner.model.named_parameters()},
                                optimizer.state_dict()["state"]))


def test_a_nan_update_is_skipped_with_the_optimizer_untouched(caplog):
    """Step 2's rewards are NaN (a broken reward function): its advantages and losses are NaN. Both of its updates
    are skipped and counted; weights and AdamW state stay as step 1 left them; step 3 trains again."""
    learner = make_learner(reward=ScriptedReward(["MMMM"], group_size=4, nan_calls=(1,)))
    params = list(learner.model.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    optimization = PlainOptimization(optimizer, params, grad_clip=1.0)
    first = learner.step(0, optimization)
    before = ({n: p.detach().clone() for n, p in learner.model.named_parameters()},
              copy.deepcopy(optimizer.state_dict()["state"]))
    with caplog.at_level("WARNING"):
        second = learner.step(1, optimization)
    assert (first["actor/num_updates"], first["actor/skipped_updates"]) == (2, 0)
    assert (second["actor/num_updates"], second["actor/skipped_updates"]) == (0, 2)
    assert "actor/pg_loss" not in second  # no NaN mean of the skipped updates' losses
    _assert_same_state(before, ({n: p.detach() for n, p in learner.model.named_parameters()},
                                optimizer.state_dict()["state"]))
    assert "non-finite loss or gradient" in caplog.text and "(8 non-finite)" in caplog.text  # the batch statistics
    third = learner.step(2, optimization)
    assert third["actor/num_updates"] == 2 and learner.consecutive_skips == 0


def test_too_many_nan_updates_stop_the_run_with_a_checkpoint(tmp_path):
    built = make_run(tmp_path, "optim.max_consecutive_skips=1", "+trainer.limit_val_batches=0", steps=4,
                     reward=ScriptedReward(["MMMM"], group_size=4, nan_calls=(1, 2, 3)))
    snapshots = _Snapshots()
    built.trainer.callbacks.append(snapshots)
    built.trainer.fit(built.module)
    # Step 2's two updates were both NaN: 2 in a row, more than 1, so the run stopped at the end of step 2 (of 4).
    assert built.trainer.global_step == 2
    reason = built.module.stop_reason
    assert "2 updates in a row had a NaN/Inf loss or gradient (optim.max_consecutive_skips=1)" in reason
    saved = tmp_path / "checkpoints" / "step-000002.ckpt"
    assert f"last good state saved to {saved}" in reason
    weights = torch.load(saved, weights_only=False)["state_dict"]
    good = snapshots.states[0][0]  # after step 1, the last update that went through
    assert all(torch.equal(weights[f"model.{n}"], p) for n, p in good.items())
    metrics = pd.read_csv(tmp_path / "csv" / "metrics.csv")
    assert metrics["actor/num_updates"].dropna().tolist() == [2]  # step 1 only: nothing logged as trained after it


def test_keep_all_trains_on_uninformative_groups():
    learner = make_learner("sampling=none", reward=ScriptedReward(["RRWW"], group_size=4))
    shared, m = learner.collect_groups(0)
    assert len(shared.groups) == 4 and m["sampling/num_gen_batches"] == 1


def test_overlong_filter_masks_exactly_the_truncated():
    learner = make_learner("overlong=filter", "sampling=none")
    favour_eos(learner, logit_boost=3.0)
    batch = assemble(learner.collect_groups(0)[0].groups, learner.pad_id)
    assert 0 < batch.truncated.sum() < len(batch)
    assert torch.equal(batch.in_loss, ~batch.truncated)
    assert not batch.loss_mask[batch.truncated].any()
    assert torch.equal(batch.loss_mask[~batch.truncated], batch.response_mask[~batch.truncated])


def test_every_parameter_moves_after_one_step(tmp_path):
    built = make_run(tmp_path, "sampling=none", *PARITY, steps=1)
    before = {n: p.detach().clone() for n, p in built.module.model.named_parameters()}
    built.trainer.fit(built.module)
    unchanged = [n for n, p in built.module.model.named_parameters() if torch.equal(p, before[n])]
    assert unchanged == []


def _metrics(path) -> pd.DataFrame:
    df = pd.read_csv(next(path.rglob("metrics.csv")))
    return df[df["actor/pg_loss"].notna()].set_index("step")


def test_resume_continues_like_an_uninterrupted_run(tmp_path):
    def run(out, steps, ckpt=None):
        built = make_run(out, "sampling.max_gen_batches=3", *PARITY, steps=steps)
        built.trainer.fit(built.module, ckpt_path=ckpt)

    run(tmp_path / "straight", 4)
    run(tmp_path / "first", 2)
    run(tmp_path / "second", 4, ckpt=str(tmp_path / "first" / "checkpoints" / "last.ckpt"))
    a, b = _metrics(tmp_path / "straight"), _metrics(tmp_path / "second")
    assert list(b.index) == [3, 4]
    for col in ["rollout/acc", "train/entropy", "actor/pg_loss", "sampling/num_gen_batches", "actor/grad_norm"]:
        assert a.loc[[3, 4], col].tolist() == pytest.approx(b.loc[[3, 4], col].tolist(), rel=1e-5), col


def test_truncated_importance_sampling_reweights_token_losses():
    """With tis_cap, each token's loss is scaled by min(exp(trainer − engine), C): checked on the gradient."""
    learner = make_learner("sampling=none", *PARITY, "rollout_correction.tis_cap=2.0")
    batch = assemble(learner.collect_groups(0)[0].groups, learner.pad_id)
    old_logp, _, _ = learner.score(batch)
    shift = torch.where(torch.arange(batch.response_ids.shape[1]) % 2 == 0, -1.0, 0.3)  # engine off by ±
    batch.engine_logprobs = old_logp + shift  # weights exp(1)→capped at 2, and exp(-0.3)
    advantages = torch.randn(len(batch), generator=torch.Generator().manual_seed(0))
    rows = torch.arange(len(batch))

    def grad_of_first_param(tis_cap, adv) -> torch.Tensor:
        learner.tis_cap = tis_cap
        learner.model.zero_grad(set_to_none=True)
        learner.accumulate_gradients(batch, rows, old_logp, None, adv, gradient_only(learner))
        return next(learner.model.parameters()).grad.clone()

    with_tis = grad_of_first_param(2.0, advantages)
    # Reference: the same loss with the weights folded into the advantages (per token), no TIS.
    weights = torch.minimum(torch.exp(-shift), torch.tensor(2.0)).expand_as(old_logp)
    reference = grad_of_first_param(None, advantages[:, None] * weights)
    torch.testing.assert_close(with_tis, reference, rtol=1e-4, atol=1e-8)
    assert not torch.allclose(with_tis, grad_of_first_param(None, advantages))


def test_engine_gap_metric_leaves_out_carried_surplus(tmp_path):
    # Step 1 keeps 6 informative groups (batch 4, surplus 2); step 2 trains on the 2 carried groups, sampled
    # before step 1's updates, plus 2 fresh ones. The HF engine decodes with the trainer's own weights, so the
    # gap on fresh rollouts is float noise; on the carried ones it is the policy's movement (lr 1e-2).
    built = make_run(tmp_path, "optim.lr=1e-2", "+trainer.limit_val_batches=0", steps=2,
                     reward=ScriptedReward(["MMWR", "MMMM", "MRMW"], group_size=4))
    built.trainer.fit(built.module)  # no eval: the script scores training only
    metrics = pd.read_csv(next(tmp_path.rglob("metrics.csv"))).groupby("step").first()
    train = metrics.dropna(subset=["sampling/carried_groups"])
    assert list(train["sampling/carried_groups"]) == [0, 2]
    assert (train["actor/ppo_kl"].abs() > 0).all()
    assert (train["rollout/logprob_abs_diff_max"] < 1e-4).all(), train["rollout/logprob_abs_diff_max"]


def test_engine_old_logprobs_are_the_recomputed_ones():
    """old_logprobs=engine skips the forward: the HF engine sampled with the trainer's own fp32 weights, so its
    log-probs must equal the recompute and give the same policy gradient."""
    learner = make_learner("sampling=none", *PARITY)
    batch = assemble(learner.collect_groups(0)[0].groups, learner.pad_id)
    recomputed, entropy, _ = learner.score(batch)
    learner.old_logprobs = "engine"
    from_engine, no_entropy, _ = learner.score(batch)
    assert no_entropy is None and entropy is not None
    mask = batch.response_mask
    torch.testing.assert_close(from_engine[mask], recomputed[mask], rtol=0, atol=1e-5)
    advantages = torch.randn(len(batch), generator=torch.Generator().manual_seed(0))
    rows = torch.arange(len(batch))

    def grads(old_logp):
        from dapo_lab.trainer.learner import EntropyTally

        learner.model.zero_grad(set_to_none=True)
        tally = EntropyTally()
        learner.accumulate_gradients(batch, rows, old_logp, None, advantages, gradient_only(learner), tally)
        return [p.grad.clone() for p in learner.model.parameters()], tally

    (a, tally), (b, _) = grads(from_engine), grads(recomputed)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-3, atol=1e-6)
    # The entropy measured in the update's forward is the old-log-prob pass's (same weights, same rows).
    assert tally.tokens == mask.sum().item()
    assert tally.total / tally.tokens == pytest.approx((entropy * mask).sum().item() / mask.sum().item(), rel=1e-4)


def test_engine_old_logprobs_run_logs_the_same_first_step(tmp_path):
    """A Trainer run with old_logprobs=engine logs train/entropy from the update's forward; with one update per
    step that forward sees the pre-update policy, so step 1 matches the recompute run's metrics."""

    def run(out, old_logprobs):
        built = make_run(out, "sampling=none", *PARITY, "batch.mini_batch_prompts=4", "+trainer.limit_val_batches=0",
                         f"rollout_correction.old_logprobs={old_logprobs}")
        built.trainer.fit(built.module)
        return _metrics(out)

    recompute, engine = run(tmp_path / "a", "recompute"), run(tmp_path / "b", "engine")
    assert "rollout/logprob_abs_diff" in recompute and "rollout/logprob_abs_diff" not in engine
    for col in ["train/entropy", "train/token_prob_mean", "actor/pg_loss", "rollout/acc"]:
        assert engine.loc[1, col] == pytest.approx(recompute.loc[1, col], rel=1e-4, abs=1e-6), col
    assert engine["train/entropy"].notna().all() and (engine["actor/num_updates"] == 1).all()


@pytest.mark.parametrize("kwargs, match", [({"old_logprobs": "trainer"}, "rollout_correction.old_logprobs"),
                                           ({"old_logprobs": "engine", "tis_cap": 2.0}, "rollout_correction.tis_cap"),
                                           ({"tis_cap": 0.0}, "rollout_correction.tis_cap")])
def test_rollout_correction_is_checked(kwargs, match):
    from dapo_lab.trainer import RolloutCorrection

    with pytest.raises(ValueError, match=match):
        RolloutCorrection(**kwargs)


@pytest.mark.parametrize("rollout, old_logprobs, resolved", [
    ("hf", "auto", "engine"), ("hf", "recompute", "recompute"), ("hf", "engine", "engine")])
def test_old_logprobs_auto_follows_the_engine(rollout, old_logprobs, resolved):
    learner = make_learner(f"rollout={rollout}", f"rollout_correction.old_logprobs={old_logprobs}")
    assert learner.old_logprobs == resolved
    bf16 = make_learner("rollout.autocast=bf16", "rollout_correction.old_logprobs=auto")
    assert bf16.old_logprobs == "recompute"  # its log-probs carry bf16 numerics: the trainer recomputes


def test_cosine_decay_follows_the_formula(tmp_path):
    """optim.decay=cosine: the lr of step s (0-based, T steps, no warmup) is lr·(m + (1 − m)·½(1 + cos(π s/(T−1))))."""
    import math

    lr, m, steps = 1e-3, 0.1, 3
    built = make_run(tmp_path, "sampling=none", *PARITY, f"optim.lr={lr}", "optim.decay=cosine",
                     f"optim.min_lr_ratio={m}", "+trainer.limit_val_batches=0", steps=steps)
    built.trainer.fit(built.module)
    logged = _metrics(tmp_path)["actor/lr"].tolist()
    expected = [lr * (m + (1 - m) * 0.5 * (1 + math.cos(math.pi * s / (steps - 1)))) for s in range(steps)]
    assert logged == pytest.approx(expected, rel=1e-6)
    assert logged[-1] == pytest.approx(lr * m)


@pytest.mark.parametrize("kwargs, match", [({"decay": "linear"}, "optim.decay"),
                                           ({"min_lr_ratio": 1.5}, "optim.min_lr_ratio")])
def test_decay_settings_are_checked(kwargs, match):
    from dapo_lab.trainer import OptimSettings

    with pytest.raises(ValueError, match=match):
        OptimSettings(**kwargs)
