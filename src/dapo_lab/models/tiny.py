"""A tiny Qwen2 built from a config: a real Hugging Face architecture (transformers and vLLM both load it)
with a few million parameters, untied embeddings (vLLM's in-place weight reload can leave a stale tied
head) and the local byte tokenizer. No downloads."""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from dapo_lab.models.tokenizer import build_byte_tokenizer


def round_up(n: int, multiple: int) -> int:
    """The smallest multiple of `multiple` that is >= n.

    >>> round_up(259, 64), round_up(256, 64)
    (320, 256)
    """
    return -(-n // multiple) * multiple


def tiny_config(
    tokenizer: PreTrainedTokenizerFast,
    hidden_size: int = 256,
    num_layers: int = 4,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 688,
    max_position_embeddings: int = 512,
    vocab_multiple: int = 64,
) -> Qwen2Config:
    """The Qwen2 config of the tiny model; the vocabulary is rounded up to `vocab_multiple`.

    >>> cfg = tiny_config(build_byte_tokenizer())
    >>> cfg.vocab_size, cfg.tie_word_embeddings, cfg.eos_token_id, cfg.pad_token_id
    (320, False, 256, 256)
    """
    return Qwen2Config(
        vocab_size=round_up(len(tokenizer), vocab_multiple),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_tiny(
    seed: int = 0, **dims: int
) -> tuple[Qwen2ForCausalLM, PreTrainedTokenizerFast]:
    """A freshly initialised tiny Qwen2 and its tokenizer (`dims` are `tiny_config`'s arguments).

    >>> model, tok = build_tiny(hidden_size=64, num_layers=1, intermediate_size=128)
    >>> type(model).__name__, sum(p.numel() for p in model.parameters())
    ('Qwen2ForCausalLM', 78144)
    """
    tokenizer = build_byte_tokenizer()
    config = tiny_config(tokenizer, **dims)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer
