"""Interim evaluations (``evaluation.interim_prompts``): the first and last evaluation cover the whole split and log
``eval/*``; every evaluation logs ``eval_interim/*`` over the split's first prompts, with the draws those prompts get
in a full evaluation."""

from __future__ import annotations

import logging
import math

import pandas as pd
import pytest
from helpers import PARITY, favour_eos, make_run

from dapo_lab.trainer import EvalSettings

COLUMNS = ["avg@2", "response_len_mean", "truncated_frac", "num_prompts"]


def _evaluations(tmp_path, *overrides: str, steps: int = 3) -> pd.DataFrame:
    built = make_run(tmp_path, "sampling=none", "data.eval_size=16", "evaluation.max_prompts=16",
                     "evaluation.batch_prompts=4", "evaluation.every=1", *PARITY, *overrides, steps=steps)
    favour_eos(built.learner, logit_boost=3.0)  # responses of many lengths, some truncated: numbers that can differ
    built.trainer.num_sanity_val_steps = math.inf  # the step-0 evaluation, as dapo_lab.run starts a run
    built.trainer.fit(built.module)
    df = pd.read_csv(next(tmp_path.rglob("metrics.csv")))
    return df[df.filter(like="eval").notna().any(axis=1)].groupby("step").first()


def test_only_the_first_and_last_evaluations_cover_the_whole_split(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="dapo_lab.progress")
    evals = _evaluations(tmp_path, "evaluation.interim_prompts=8")
    said = [r.getMessage().split("  ")[0] for r in caplog.records if "eval at step" in r.getMessage()]
    assert said == ["eval at step 0", "interim eval at step 1", "interim eval at step 2", "eval at step 3"]
    assert list(evals.index) == [0, 1, 2, 3]
    assert evals["eval/num_prompts"].notna().tolist() == [True, False, False, True]
    assert evals.loc[[0, 3], "eval/num_prompts"].tolist() == [16, 16]
    assert evals["eval_interim/num_prompts"].tolist() == [8, 8, 8, 8]


def test_with_a_frozen_policy_every_interim_evaluation_sees_the_same_draws(tmp_path):
    # lr 1e-30: Adam steps of ~1e-30 leave fp32 weights as they are, so the policy never moves; each prompt's samples
    # are seeded by its batch, so every evaluation of the first 8 prompts (alone between, or inside a full evaluation
    # at steps 0 and 3) gives the same numbers.
    evals = _evaluations(tmp_path / "frozen", "evaluation.interim_prompts=8", "optim.lr=1e-30")
    interim = evals[[f"eval_interim/{c}" for c in COLUMNS]]
    assert (interim.nunique() == 1).all(), interim
    full = evals.loc[[0, 3], [f"eval/{c}" for c in COLUMNS]]
    assert (full.nunique() == 1).all(), full
    # the subset's numbers are its own, not the whole split's (the 16 prompts' lengths differ from the first 8's)
    plain = _evaluations(tmp_path / "plain", "optim.lr=1e-30", steps=1)
    assert plain.filter(like="eval_interim").empty
    assert plain.loc[0, "eval/response_len_mean"] == pytest.approx(full["eval/response_len_mean"].iloc[0])
    assert 1 < full["eval/response_len_mean"].iloc[0] < 12  # not every response truncated: the numbers carry draws
    assert interim["eval_interim/response_len_mean"].iloc[0] != pytest.approx(full["eval/response_len_mean"].iloc[0])


@pytest.mark.parametrize("interim", [0, 6, -4])
def test_an_interim_size_that_is_not_a_multiple_of_the_batch_is_refused(interim):
    with pytest.raises(ValueError, match="evaluation.interim_prompts must be a positive multiple"):
        EvalSettings(batch_prompts=4, interim_prompts=interim)


@pytest.mark.parametrize("step, max_steps, should_stop, full", [
    (0, 80, False, True),    # the starting point
    (40, 80, False, False),  # between: the interim subset
    (80, 80, False, True),   # the last step
    (20, 80, True, True),    # training stopped early (non-finite updates): Lightning's last evaluation
    (40, -1, False, True),   # no max_steps: no known last step, so every evaluation is full
])
def test_which_evaluations_are_full(step, max_steps, should_stop, full):
    from types import SimpleNamespace

    from dapo_lab.trainer.module import DAPOModule

    module = SimpleNamespace(global_step=step, trainer=SimpleNamespace(max_steps=max_steps, should_stop=should_stop))
    assert DAPOModule._full_evaluation(module) is full
