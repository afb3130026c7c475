"""The transformers rollout engine against model.generate and the trainer's own log-probs."""

from __future__ import annotations

import pytest
import torch
from helpers import favour_eos, make_learner

from dapo_lab.rollout import SamplingParams
from dapo_lab.rollout.hf import top_p_filter
from dapo_lab.trainer.teacher_forced import response_logprobs


@pytest.fixture(scope="module")
def module():
    m = make_learner()
    favour_eos(m, logit_boost=3.0)
    return m


def prompts_of(module, count=6):
    return [module.train.ids(i) for i in range(count)]


def test_greedy_matches_model_generate_with_left_padding(module):
    prompts = prompts_of(module, 4)
    assert len({len(p) for p in prompts}) > 1  # different lengths: left padding is exercised
    out = module.rollout.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=10))
    eos = module.tokenizer.eos_token_id
    for row, prompt in enumerate(prompts):
        ref = module.model.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=False,
                                    eos_token_id=eos, pad_token_id=eos)[0, len(prompt):]
        got = out.response_ids[row][out.response_mask[row]]
        assert got.tolist() == ref.tolist()


def test_truncation_flags_and_masks(module):
    out = module.rollout.generate(prompts_of(module), SamplingParams(max_new_tokens=12, n=4, seed=3))
    eos = module.tokenizer.eos_token_id
    assert 0 < out.truncated.float().mean() < 1  # both kinds present
    for row in range(len(out)):
        tokens = out.response_ids[row][out.response_mask[row]].tolist()
        if out.truncated[row]:
            assert len(tokens) == 12 and eos not in tokens
        else:
            assert tokens[-1] == eos and eos not in tokens[:-1]
        assert not out.response_mask[row, len(tokens):].any()


def test_n_samples_grouped_contiguously_and_seeded(module):
    prompts = prompts_of(module, 3)
    params = SamplingParams(max_new_tokens=8, n=4, seed=11)
    a, b = module.rollout.generate(prompts, params), module.rollout.generate(prompts, params)
    assert a.prompt_ids == [p for p in prompts for _ in range(4)]
    assert torch.equal(a.response_ids, b.response_ids)
    c = module.rollout.generate(prompts, SamplingParams(max_new_tokens=8, n=4, seed=12))
    assert not torch.equal(a.response_ids, c.response_ids)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_engine_logprobs_match_trainer_recompute(module, temperature):
    out = module.rollout.generate(prompts_of(module), SamplingParams(temperature=temperature, max_new_tokens=10,
                                                                     n=2, seed=5))
    with torch.no_grad():
        lp, _ = response_logprobs(module.model, out.prompt_ids, out.response_ids, pad_id=module.pad_id,
                                  temperature=temperature)
    diff = (lp - out.logprobs).abs()[out.response_mask]
    assert diff.max() < 1e-4  # fp32: KV-cached decode vs one teacher-forced pass


def test_top_p_filter_keeps_smallest_nucleus():
    probs = torch.tensor([[0.1, 0.4, 0.2, 0.3]])
    kept = top_p_filter(probs.log(), 0.65).isfinite()
    assert kept.tolist() == [[False, True, False, True]]  # 0.4 + 0.3 ≥ 0.65
    assert top_p_filter(probs.log(), 0.05).isfinite().sum() == 1  # the top token always stays


@pytest.mark.parametrize("chunk", [1, 3, 5])
def test_chunked_logprobs_give_the_same_values_and_gradients(module, chunk):
    """batch.logprob_chunk_tokens: the LM head over a few positions at a time, recomputed in the backward."""
    out = module.rollout.generate(prompts_of(module, 4), SamplingParams(max_new_tokens=11, n=2, seed=2))
    model = module.model
    weights = torch.arange(out.response_ids.shape[1], dtype=torch.float32)  # every position matters differently

    def run(chunk_tokens):
        model.zero_grad(set_to_none=True)
        lp, ent = response_logprobs(model, out.prompt_ids, out.response_ids, pad_id=module.pad_id, temperature=0.8,
                                    with_entropy=True, chunk_tokens=chunk_tokens)
        (lp * weights).sum().backward()
        return lp.detach(), ent, [p.grad.clone() for p in model.parameters()]

    whole, chunked = run(None), run(chunk)
    torch.testing.assert_close(chunked[0], whole[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(chunked[1], whole[1], rtol=0, atol=1e-5)
    for a, b in zip(chunked[2], whole[2]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert "forward" not in vars(model.get_output_embeddings())  # the head is itself again


def test_the_default_cpu_run_decodes_a_bf16_copy_that_follows_the_policy(tmp_path, monkeypatch):
    """The default (rollout.dtype=auto, one CPU process, bf16-mixed): a bf16 copy decodes, its log-probs are π_old
    (no recompute: no rollout/logprob_abs_diff), and the final evaluation (step 2, after the last update) decoded
    with the trained weights, cast."""
    import pandas as pd
    from helpers import PARITY, make_run

    monkeypatch.setattr("dapo_lab.rollout.hf.cpu_has_bf16", lambda: True)  # the copy's path on any CPU
    built = make_run(tmp_path, "trainer.precision=bf16-mixed", "rollout_correction.old_logprobs=auto", *PARITY)
    learner = built.module.learner
    assert (learner.rollout.dtype, learner.old_logprobs) == ("bf16", "engine")
    before = [p.detach().clone() for p in learner.model.parameters()]
    built.trainer.fit(built.module)
    copy_ = learner.rollout._copy
    assert copy_ is not None and copy_ is not learner.model
    assert any(not torch.equal(a, b) for a, b in zip(before, learner.model.parameters()))  # it trained
    for (name, mine), theirs in zip(copy_.named_parameters(), learner.model.parameters()):
        assert mine.dtype == torch.bfloat16 and torch.equal(mine, theirs.detach().to(torch.bfloat16)), name
    metrics = pd.read_csv(tmp_path / "csv" / "metrics.csv")
    assert "train/entropy" in metrics and "rollout/logprob_abs_diff" not in metrics
