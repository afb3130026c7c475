"""The generated running-sum task: determinism, disjoint splits, gradable ground truths, difficulty knobs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dapo_lab.data.task import RunningSumTask, task_prompt, worked_solution
from dapo_lab.reward import grade


def test_same_seed_same_splits_other_seed_other_splits():
    a, b = RunningSumTask(train_size=200), RunningSumTask(train_size=200)
    assert a.eval_examples() == b.eval_examples() and a.train_examples() == b.train_examples()
    c = RunningSumTask(train_size=200, seed=1)
    assert c.eval_examples() != a.eval_examples() and c.train_examples() != a.train_examples()


@pytest.mark.parametrize("knobs", [{}, {"min_terms": 2, "max_terms": 3, "eval_size": 300}])
def test_train_and_eval_are_disjoint_by_problem(knobs):
    # Two or three single digits: 1,100 problems in all, so the eval split takes a large share of them.
    task = RunningSumTask(train_size=3000, **knobs)
    eval_prompts = {e.prompt for e in task.eval_examples()}
    assert len(eval_prompts) == task.eval_size  # distinct
    assert not eval_prompts & {e.prompt for e in task.train_examples()}


def test_stream_skips_eval_problems_and_streams_differ():
    task = RunningSumTask(max_terms=3, eval_size=300)
    x, y = task.iter_train_problems("x"), task.iter_train_problems("y")
    assert [next(x) for _ in range(20)] != [next(y) for _ in range(20)]
    stream = task.iter_train_problems("warmstart/0")
    assert not {next(stream) for _ in range(2000)} & set(task.eval_problems)


def test_every_ground_truth_grades_correct():
    task = RunningSumTask(train_size=500)
    for ex in task.eval_examples() + task.train_examples():
        assert grade(f"Answer: {ex.ground_truth}", ex.ground_truth, mode="dapo").correct, ex
    for terms in task.eval_problems:
        gt = str(sum(terms))
        assert grade(worked_solution(terms), gt, mode="dapo").correct
        assert not grade(worked_solution(terms), str(sum(terms) + 1), mode="dapo").correct


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 99), min_size=2, max_size=26))
def test_worked_solution_is_a_correct_chain(terms):
    lines = worked_solution(tuple(terms)).split("\n")
    assert len(lines) == len(terms) + 1 and lines[-1] == f"Answer: {sum(terms)}"
    total = terms[0]
    for i, line in enumerate(lines[1:-1], start=1):
        head, step = line.split(": ")
        assert head.split("=") == [chr(ord("a") + i), str(terms[i])]
        assert step == f"{total}+{terms[i]}={total + terms[i]}"
        total += terms[i]
    assert f"{chr(ord('a') + len(terms) - 1)}={terms[-1]}" in task_prompt(tuple(terms))


def test_difficulty_knobs_set_length_and_operands():
    def lengths(task):
        return [len(worked_solution(t)) for t in task.eval_problems]

    short, long = RunningSumTask(max_terms=3), RunningSumTask(min_terms=10, max_terms=12)
    assert max(lengths(short)) < min(lengths(long))
    assert all(len(t) in (10, 11, 12) for t in long.eval_problems)
    big = RunningSumTask(max_operand=999)
    assert max(max(t) for t in big.eval_problems) > 99


def test_longest_default_solutions_exceed_the_default_response_limit():
    # The trainer's default max_response_len is 96 tokens; one token per character plus eos.
    tokens = [len(worked_solution(t)) + 1 for t in RunningSumTask().eval_problems]
    over = sum(n > 96 for n in tokens) / len(tokens)
    assert 0.05 < over < 0.3, over
    assert min(tokens) < 32


@pytest.mark.parametrize("bad", [{"min_terms": 1}, {"min_terms": 5, "max_terms": 4}, {"max_terms": 27},
                                 {"max_operand": 0}, {"eval_size": -1}])
def test_bad_knobs_raise(bad):
    with pytest.raises(ValueError, match="RunningSumTask"):
        RunningSumTask(**bad)


def test_eval_size_larger_than_the_problem_space_raises():
    with pytest.raises(ValueError, match="distinct problems"):
        _ = RunningSumTask(min_terms=2, max_terms=2, max_operand=2, eval_size=20).eval_problems
