"""The tiny Qwen2: a real HF architecture that saves, reloads (AutoModelForCausalLM) and generates."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM, AutoTokenizer

from dapo_lab.models.tiny import build_tiny

SMALL = {"hidden_size": 64, "num_layers": 2, "intermediate_size": 128}


def test_default_dims_are_a_few_million_untied_parameters():
    from pathlib import Path

    dims = OmegaConf.to_container(OmegaConf.load(Path(__file__).parents[2] / "conf/model/tiny.yaml"))
    model, _ = build_tiny(**{k: dims[k] for k in ("hidden_size", "num_layers", "num_heads", "num_kv_heads",
                                                  "intermediate_size", "max_position_embeddings")})
    n = sum(p.numel() for p in model.parameters())
    assert 1e6 < n < 10e6
    assert not model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    assert model.config.vocab_size % 64 == 0 and model.config.model_type == "qwen2"


def test_same_seed_same_weights():
    a, _ = build_tiny(seed=3, **SMALL)
    b, _ = build_tiny(seed=3, **SMALL)
    c, _ = build_tiny(seed=4, **SMALL)
    assert torch.equal(a.lm_head.weight, b.lm_head.weight) and not torch.equal(a.lm_head.weight, c.lm_head.weight)


def test_saves_reloads_and_generates(tmp_path):
    torch.manual_seed(0)
    model, tok = build_tiny(**SMALL)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    rtok = AutoTokenizer.from_pretrained(tmp_path)
    rtok.padding_side = "left"
    enc = rtok(["Add a=1 b=2. Last line: Answer: <sum>\n", "Add a=3\n"], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.allclose(model(**enc).logits, reloaded(**enc).logits, atol=1e-5)
        out = reloaded.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=rtok.pad_token_id)
    width = enc["input_ids"].shape[1]
    assert out.shape[0] == 2 and width < out.shape[1] <= width + 8
    assert all(isinstance(t, str) for t in rtok.batch_decode(out[:, enc["input_ids"].shape[1]:]))
