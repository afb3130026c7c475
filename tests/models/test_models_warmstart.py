"""The warm start: a reduced budget lowers the loss (fast); the full budget reaches the accuracy band (slow)."""

from __future__ import annotations

import time

import pytest
import torch

from dapo_lab.data.task import RunningSumTask
from dapo_lab.models.spec import TinyModel
from dapo_lab.models.tiny import build_tiny
from dapo_lab.models.warmstart import evaluate_accuracy, sft_batch, warm_start

SMALL = {"hidden_size": 64, "num_layers": 2, "intermediate_size": 128}


def test_reduced_budget_lowers_the_loss_deterministically():
    task = RunningSumTask(max_terms=4)
    runs = []
    for _ in range(2):
        model, tok = build_tiny(**SMALL)
        runs.append(warm_start(model, tok, task, steps=25, lr=3e-3, batch_size=16, warmup_steps=5))
    losses = runs[0]["warmstart/losses"]
    assert sum(losses[-5:]) / 5 < 0.6 * losses[0]
    assert runs[0]["warmstart/losses"] == runs[1]["warmstart/losses"]
    assert runs[0]["warmstart/loss_last"] < runs[0]["warmstart/loss_first"]


def test_sft_batch_labels_only_the_response_and_eos():
    _, tok = build_tiny(**SMALL)
    b = sft_batch(tok, ["Add a=1 b=2\n", "Add a=3\n"], ["b=2: 1+2=3\nAnswer: 3", "Answer: 3"])
    labelled = [tok.decode([i for i in row if i != -100]) for row in b["labels"].tolist()]
    assert labelled == ["b=2: 1+2=3\nAnswer: 3<|endoftext|>", "Answer: 3<|endoftext|>"]
    assert (b["attention_mask"].sum(1) == torch.tensor([len("Add a=1 b=2\nb=2: 1+2=3\nAnswer: 3") + 1,
                                                         len("Add a=3\nAnswer: 3") + 1])).all()


def test_evaluate_accuracy_grades_generations():
    model, tok = build_tiny(**SMALL)
    examples = RunningSumTask(max_terms=3, eval_size=6).eval_examples()
    seen = []

    def grade_all_correct(response: str, truth: str) -> bool:
        seen.append(truth)
        return True

    acc = evaluate_accuracy(model, tok, examples, temperature=1.0, n=2, max_new_tokens=4, grade_fn=grade_all_correct)
    assert acc == 1.0 and len(seen) == 12 and tok.padding_side == "right"
    # An untrained model, graded by the platform's grader, solves nothing.
    assert evaluate_accuracy(model, tok, examples, temperature=0, max_new_tokens=4) == 0.0


@pytest.mark.slow
def test_full_warm_start_reaches_the_accuracy_band(tmp_path):
    """The default warm start (conf/model/tiny.yaml) on the default task: 20-60% sampled at T=1."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the documented budget: both cores
    try:
        task, spec = RunningSumTask(), TinyModel(cache_dir=str(tmp_path))
        start = time.perf_counter()
        model, tok = spec.load(task)
        seconds = time.perf_counter() - start
        examples = task.eval_examples()
        sampled = evaluate_accuracy(model, tok, examples, temperature=1.0, max_new_tokens=256)
        greedy = evaluate_accuracy(model, tok, examples, temperature=0.0, max_new_tokens=256)
    finally:
        torch.set_num_threads(threads)
    print(f"warm start {seconds:.0f}s: sampled {sampled:.3f} greedy {greedy:.3f}")
    assert 0.2 <= sampled <= 0.6 and greedy >= sampled
