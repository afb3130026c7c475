"""Decode steps computed from the weights (rollout/direct_decode.py) against the model's own forward.

The reference is transformers' forward on the same cache state, step by step, with the same tokens fed to both:
Qwen2 (q/k/v biases) and Llama (no biases, untied head), fp32 and bf16 weights, left-padded prompts. And every
model the decoder cannot reproduce exactly is refused (the engine then runs the model's forward).
"""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

from dapo_lab.rollout import HFEngine, SamplingParams
from dapo_lab.rollout.decode_attention import register
from dapo_lab.rollout.direct_decode import _unsupported, direct_decoder, rms_norm, rotate
from dapo_lab.rollout.hf import _cache_kwarg
from dapo_lab.rollout.kv_cache import preallocated_cache

SHAPE = dict(vocab_size=97, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=96, max_position_embeddings=128)


def randomized(model):
    """transformers initialises biases to 0 and norm weights to 1, which would hide a bias or norm left out."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                param.add_(0.3 * torch.randn_like(param))
    return model.eval()


def qwen2(**extra):
    torch.manual_seed(0)
    return randomized(Qwen2ForCausalLM(Qwen2Config(**SHAPE, tie_word_embeddings=True, **extra)))


def llama(**extra):
    torch.manual_seed(0)
    return randomized(LlamaForCausalLM(LlamaConfig(**SHAPE, tie_word_embeddings=False, **extra)))


def test_rms_norm_and_rotary_are_the_written_out_formulas():
    x, w = torch.randn(3, 8), torch.randn(8)
    expected = w * x / torch.sqrt((x * x).sum(-1, keepdim=True) / 8 + 1e-6)  # RMSNorm: x / rms(x) · w
    assert torch.allclose(rms_norm(x, w, 1e-6), expected, atol=1e-6)
    angle = torch.rand(4) * 6  # rotary: the pairs (x_i, x_{i+4}) turned by angle_i
    cos, sin = torch.cat([angle.cos()] * 2), torch.cat([angle.sin()] * 2)
    v = torch.randn(8)
    first, second = v[:4] * angle.cos() - v[4:] * angle.sin(), v[4:] * angle.cos() + v[:4] * angle.sin()
    assert torch.allclose(rotate(v, cos, sin), torch.cat([first, second]), atol=1e-6)


@pytest.mark.parametrize("make", [qwen2, llama, lambda: llama(attention_bias=True)],
                         ids=["qwen2", "llama", "llama_biased"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_decode_steps_match_the_models_forward(make, dtype):
    register()
    model = make().to(dtype)
    model.set_attn_implementation("grouped")
    torch.manual_seed(1)
    rows, width, steps = 5, 7, 6
    ids = torch.randint(3, 97, (rows, width))  # [B, P]
    attn = torch.ones(rows, width, dtype=torch.long)
    for row, pad in enumerate([0, 2, 0, 5, 1]):  # left padding of different lengths
        attn[row, :pad] = 0
    positions = (attn.cumsum(-1) - 1).clamp(min=0)
    caches = [preallocated_cache(width + steps), preallocated_cache(width + steps)]
    bias = torch.zeros(rows, 1, 1, width + steps, dtype=dtype)
    bias[:, 0, 0, :width].masked_fill_(attn == 0, float("-inf"))
    with torch.no_grad():
        for cache in caches:
            model(input_ids=ids, attention_mask=attn, position_ids=positions, use_cache=True, logits_to_keep=1,
                  **{_cache_kwarg(model): cache})
        decoder = direct_decoder(model, width + steps)
        assert decoder is not None
        last = positions[:, -1]
        for step in range(steps):
            token = torch.randint(3, 97, (rows,))
            last, seen = last + 1, width + step + 1
            mine = decoder(token, last, caches[0], bias[..., :seen])  # [B, V]
            theirs = model(input_ids=token[:, None], attention_mask=bias[..., :seen], position_ids=last[:, None],
                           use_cache=True, **{_cache_kwarg(model): caches[1]}).logits[:, -1]
            tol = 1e-5 if dtype == torch.float32 else 0.05 * theirs.abs().max().item()
            assert (mine.float() - theirs.float()).abs().max() < tol, step
            assert caches[0].get_seq_length() == caches[1].get_seq_length() == seen


def test_the_engine_samples_the_same_tokens_either_way():
    """Seeded sampling with rows ending early (EOS favoured) and a second call after a weight change: the direct
    steps and the model's forward draw the same tokens."""
    model = qwen2()
    with torch.no_grad():  # EOS (2) with a logit of ~2 on the mean hidden state: rows leave at different steps
        hidden = model.model(input_ids=torch.randint(3, 97, (4, 16))).last_hidden_state.mean((0, 1))  # [d]
        model.lm_head.weight[2] = 2.0 * hidden / hidden.norm() ** 2
    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13, 14], [15]]
    params = SamplingParams(temperature=1.0, max_new_tokens=20, n=4, seed=3)
    outs = {}
    for direct in (True, False):
        engine = HFEngine(attn_implementation="grouped", direct_decode=direct)
        engine.attach(model, eos_id=2, pad_id=0)
        first = engine.generate(prompts, params)
        with torch.no_grad():
            model.model.layers[0].mlp.down_proj.weight.mul_(1.5)  # the next call must see the new weights
        outs[direct] = (first, engine.generate(prompts, params))
        with torch.no_grad():
            model.model.layers[0].mlp.down_proj.weight.div_(1.5)
    for mine, theirs in zip(outs[True], outs[False]):
        assert mine.lengths.min() < 10 and mine.truncated.any()
        assert torch.equal(mine.response_ids, theirs.response_ids)
        assert (mine.logprobs - theirs.logprobs).abs().max() < 1e-5
    assert not torch.equal(outs[True][0].logprobs, outs[True][1].logprobs)


class LoraLike(torch.nn.Linear):
    """A projection that computes more than its weight (as a LoRA adapter does)."""


def test_models_it_cannot_reproduce_are_refused():
    assert _unsupported(qwen2()) is None and _unsupported(llama(attention_bias=True)) is None
    torch.manual_seed(0)
    other = Qwen3ForCausalLM(Qwen3Config(**SHAPE, head_dim=16))
    assert "qwen3" in _unsupported(other)  # q/k norms: another layer
    windowed = qwen2(use_sliding_window=True, sliding_window=4, max_window_layers=1)
    assert _unsupported(windowed) == "sliding-window layers"
    assert "rope_type" in _unsupported(llama(rope_scaling={"rope_type": "dynamic", "factor": 2.0}))
    assert "hidden_act" in _unsupported(qwen2(hidden_act="gelu"))
    wrapped = qwen2()
    old = wrapped.model.layers[1].self_attn.q_proj
    wrapped.model.layers[1].self_attn.q_proj = LoraLike(old.in_features, old.out_features)
    assert _unsupported(wrapped) == "wrapped q/k/v projections"
    assert direct_decoder(wrapped, 16) is None
    assert "biased" in _unsupported(llama(mlp_bias=True))
    zero3 = qwen2()
    zero3.model.norm.weight.ds_id = 7  # how DeepSpeed ZeRO-3 marks a partitioned parameter (gathered in hooks)
    assert "ZeRO-3" in _unsupported(zero3)
