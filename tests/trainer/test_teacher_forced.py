"""The trainer's log-prob pass against each row computed alone, unpadded, by hand."""

from __future__ import annotations

import pytest
import torch

from dapo_lab.models.tiny import build_tiny
from dapo_lab.trainer.teacher_forced import pack, response_logprobs

PROMPTS = [[5, 6, 7], [8], [9, 10, 11, 12, 13], [14, 15]]
LENGTHS = [4, 6, 1, 3]  # real response tokens per row; the rest of each row of RESPONSES is padding


def responses(pad: int) -> torch.Tensor:
    ids = torch.randint(20, 200, (len(PROMPTS), max(LENGTHS)), generator=torch.Generator().manual_seed(0))
    return ids.masked_fill(torch.arange(ids.shape[1])[None] >= torch.tensor(LENGTHS)[:, None], pad)  # [N, R]


def alone(model: torch.nn.Module, prompt: list[int], response: list[int], temperature: float) -> torch.Tensor:
    """One row, no padding anywhere: log softmax(logits / T) of each response token, from the full logits."""
    logits = model(input_ids=torch.tensor([prompt + response])).logits[0].float() / temperature  # [P+R, V]
    logp = torch.log_softmax(logits[len(prompt) - 1 : -1], dim=-1)  # position t - 1 predicts token t
    return logp[torch.arange(len(response)), torch.tensor(response)]  # [R]


def test_pack_pads_each_row_only_past_its_own_end():
    ids, starts = pack(PROMPTS, responses(pad=0), pad_id=0, response_lengths=LENGTHS)
    assert ids.shape == (4, max(len(p) + k for p, k in zip(PROMPTS, LENGTHS)))  # 9, not max P + max R = 11
    assert starts.tolist() == [len(p) for p in PROMPTS]
    for row, (p, k) in enumerate(zip(PROMPTS, LENGTHS)):
        assert ids[row, : len(p)].tolist() == p and (ids[row, len(p) + k :] == 0).all()


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("chunk", [None, 2])
def test_logprobs_and_gradients_match_each_row_alone(attention, chunk):
    model = build_tiny(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=48)[0]
    model.config._attn_implementation = attention
    ids = responses(pad=0)
    weights = torch.linspace(-1.0, 2.0, ids.shape[1])  # every position counts differently in the "loss"

    logp, entropy = response_logprobs(model, PROMPTS, ids, pad_id=0, response_lengths=LENGTHS, temperature=0.7,
                                      with_entropy=True, chunk_tokens=chunk)  # [N, R]
    mask = torch.arange(ids.shape[1])[None] < torch.tensor(LENGTHS)[:, None]
    (logp * weights * mask).sum().backward()
    got = [p.grad.clone() for p in model.parameters()]

    model.zero_grad(set_to_none=True)
    total = 0.0
    for row, (p, k) in enumerate(zip(PROMPTS, LENGTHS)):
        expected = alone(model, p, ids[row, :k].tolist(), 0.7)  # [k]
        torch.testing.assert_close(logp[row, :k].detach(), expected.detach(), rtol=0, atol=2e-6)
        total = total + (expected * weights[:k]).sum()
        probs = torch.softmax(model(input_ids=torch.tensor([p + ids[row, :k].tolist()])).logits[0, len(p) - 1 : -1]
                              .float() / 0.7, dim=-1)  # [k, V]
        torch.testing.assert_close(entropy[row, :k], -(probs * probs.log()).sum(-1).detach(), rtol=0, atol=2e-5)
    total.backward()
    for a, b in zip(got, model.parameters()):
        torch.testing.assert_close(a, b.grad, rtol=1e-4, atol=1e-6)
    assert "forward" not in vars(model.get_output_embeddings())  # the head is itself again
