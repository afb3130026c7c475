"""Decode steps of a Qwen2- or Llama-architecture model computed from its weights, without transformers' forward.

A decode step of the tiny default is ~150 small tensor ops, and on a 2-core CPU transformers' forward spends about
as long again around them (mask and rotary bookkeeping, output records, module hooks): 2.0 to 6.4 ms of a step at 2
rows, which is where a round's last steps run, as responses end. This module does the same arithmetic directly:
q/k/v in one matmul and gate/up in one, each with its weight transposed once per ``generate`` call, the rotary
tables made once for every position, keys and values written into the engine's preallocated cache, and the
grouped-query kernel of ``decode_attention``. The RMSNorm and rotary formulas are transformers' own, op for op, so
fp32 logits agree with the model's forward to ~1e-6 (the fused matmuls sum in another order). Decode steps
1.2-1.6x faster at 128 down to 2 rows (2026-12-01, ``experiments/README.md`` "Performance").

Anything it cannot reproduce exactly is left to the model's forward: ``direct_decoder`` returns None (architectures
other than these two, sliding-window layers, position-dependent rope scaling, wrapped or biased-MLP projections,
sharded or ZeRO-3-partitioned weights).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dapo_lab.rollout.decode_attention import grouped_decode_attention

# Qwen2 (and Qwen2.5) and Llama share the decoder layer up to q/k/v biases, which the packed layer carries.
_SUPPORTED = {"qwen2": "Qwen2DecoderLayer", "llama": "LlamaDecoderLayer"}
# Rope variants whose cos/sin depend on the position alone (so a table made once serves every step).
_STATIC_ROPE = {None, "default", "linear", "llama3", "yarn"}


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """transformers' Qwen2/Llama RMSNorm, op for op (the variance in fp32): ``[..., d] -> [..., d]``.

    >>> rms_norm(torch.tensor([[3.0, 4.0]]), torch.ones(2), 0.0)  # rms = sqrt((9 + 16) / 2)
    tensor([[0.8485, 1.1314]])
    """
    x32 = x.to(torch.float32)
    return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotary embedding as transformers' ``apply_rotary_pos_emb`` (``x·cos + rotate_half(x)·sin``); ``cos``/``sin``
    broadcast to ``x``.

    >>> rotate(torch.tensor([1.0, 2.0]), torch.zeros(2), torch.ones(2))  # a quarter turn: (x1, x2) -> (-x2, x1)
    tensor([-2.,  1.])
    """
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


@dataclass(frozen=True)
class PackedLayer:
    """One decoder layer's weights, laid out for ``x @ w`` at a decode step (``d`` hidden, ``q``/``kv`` heads × head
    dim, ``i`` the MLP width)."""

    qkv: Tensor  # [d, q + 2·kv]: q_proj, k_proj, v_proj transposed side by side
    qkv_bias: Tensor | None  # [q + 2·kv]
    out: Tensor  # [q, d]
    out_bias: Tensor | None  # [d] (Llama's attention_bias)
    gate_up: Tensor  # [d, 2·i]
    down: Tensor  # [i, d]
    norm_in: Tensor  # [d]
    norm_post: Tensor  # [d]
    eps_in: float
    eps_post: float


def _plain_linear(module: torch.nn.Module, bias_ok: bool) -> bool:
    # Exactly nn.Linear: a LoRA, quantized or otherwise wrapped projection computes more than its .weight.
    return type(module) is torch.nn.Linear and (bias_ok or module.bias is None) and \
        type(module.weight) is torch.nn.Parameter and type(module.weight.data) is torch.Tensor


def _unsupported(model: torch.nn.Module) -> str | None:
    """Why this model's decode steps must go through its own forward, or None."""
    config = getattr(model, "config", None)
    kind = getattr(config, "model_type", None)
    if kind not in _SUPPORTED:
        return f"model_type {kind!r}"
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None or not all(type(layer).__name__ == _SUPPORTED[kind] for layer in layers):
        return "decoder layers of another class"
    if any(layer_type != "full_attention" for layer_type in getattr(config, "layer_types", None) or []):
        return "sliding-window layers"
    if getattr(config, "hidden_act", None) != "silu":
        return f"hidden_act {getattr(config, 'hidden_act', None)!r}"
    if any(hasattr(p, "ds_id") or p.numel() == 0 for p in model.parameters()):
        # DeepSpeed ZeRO-3 gathers a module's partitioned weights in hooks around its forward, which these steps skip.
        return "partitioned (DeepSpeed ZeRO-3) weights"
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", rope.get("type")) not in _STATIC_ROPE:
        return f"rope_type {rope.get('rope_type')!r}"
    for layer in layers:
        attn, mlp = layer.self_attn, layer.mlp
        if not all(_plain_linear(m, True) for m in (attn.q_proj, attn.k_proj, attn.v_proj)):
            return "wrapped q/k/v projections"
        if not _plain_linear(attn.o_proj, True):
            return "a wrapped output projection"
        if not all(_plain_linear(m, False) for m in (mlp.gate_proj, mlp.up_proj, mlp.down_proj)):
            return "wrapped or biased MLP projections"
    if type(inner.embed_tokens) is not torch.nn.Embedding or not _plain_linear(model.lm_head, False):
        return "wrapped embeddings or LM head"
    return None


class DirectDecoder:
    """``decoder(tokens, positions, cache, bias) -> logits``: one decode step for ``b`` rows, their keys and values
    appended to ``cache`` (the engine's ``preallocated_cache``, already holding the prompt).

    Built once per ``generate`` call from the current weights (it holds transposed copies of the linear weights:
    one more copy of them in memory for the call).
    """

    def __init__(self, model: torch.nn.Module, max_positions: int) -> None:
        inner, config = model.model, model.config
        self.embed = inner.embed_tokens.weight  # [V, d]
        self.head = model.lm_head.weight.t().contiguous()  # [d, V]
        self.norm, self.norm_eps = inner.norm.weight, inner.norm.variance_epsilon
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        first = inner.layers[0].self_attn
        self.head_dim, self.scaling = first.head_dim, first.scaling
        self.layers = [self._pack(layer) for layer in inner.layers]
        positions = torch.arange(max_positions, device=self.embed.device)[None]  # [1, P]
        cos, sin = inner.rotary_emb(self.embed[:1], positions)  # [1, P, head_dim] in the weights' dtype
        self.cos, self.sin = cos[0], sin[0]  # [P, head_dim]

    @staticmethod
    def _pack(layer: torch.nn.Module) -> PackedLayer:
        attn, mlp = layer.self_attn, layer.mlp
        projections = (attn.q_proj, attn.k_proj, attn.v_proj)
        biases = [m.bias for m in projections]
        if all(b is None for b in biases):
            qkv_bias = None
        else:  # Llama with attention_bias on some projections only would be odd, but zeros reproduce it
            qkv_bias = torch.cat([b if b is not None else m.weight.new_zeros(m.out_features)
                                  for m, b in zip(projections, biases)])
        return PackedLayer(
            qkv=torch.cat([m.weight for m in projections]).t().contiguous(), qkv_bias=qkv_bias,
            out=attn.o_proj.weight.t().contiguous(), out_bias=attn.o_proj.bias,
            gate_up=torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).t().contiguous(),
            down=mlp.down_proj.weight.t().contiguous(),
            norm_in=layer.input_layernorm.weight, norm_post=layer.post_attention_layernorm.weight,
            eps_in=layer.input_layernorm.variance_epsilon, eps_post=layer.post_attention_layernorm.variance_epsilon)

    def __call__(self, tokens: Tensor, positions: Tensor, cache: object, bias: Tensor) -> Tensor:
        """``tokens [b]``, ``positions [b]`` (each row's position of this token), ``bias [b, 1, 1, n]`` (0 on keys
        seen, −inf on the prompt's padding; ``n`` = the cache's length after this step) → logits ``[b, V]``."""
        rows = tokens.shape[0]
        hidden = self.embed[tokens]  # [b, d]
        cos, sin = self.cos[positions][:, None, None], self.sin[positions][:, None, None]  # [b, 1, 1, head_dim]
        q_kv = self.heads + self.kv_heads
        for index, layer in enumerate(self.layers):
            x = rms_norm(hidden, layer.norm_in, layer.eps_in)  # [b, d]
            qkv = x @ layer.qkv if layer.qkv_bias is None else torch.addmm(layer.qkv_bias, x, layer.qkv)
            qkv = qkv.view(rows, q_kv + self.kv_heads, 1, self.head_dim)  # [b, heads + 2·kv, 1, head_dim]
            rotated = rotate(qkv[:, :q_kv], cos, sin)  # queries and keys: [b, heads + kv, 1, head_dim]
            keys, values = cache.layers[index].update(rotated[:, self.heads :], qkv[:, q_kv:])  # [b, kv, n, hd]
            attended = grouped_decode_attention(rotated[:, : self.heads], keys, values, bias, self.scaling)
            attended = attended.reshape(rows, -1)  # [b, q]
            hidden = hidden + (attended @ layer.out if layer.out_bias is None
                               else torch.addmm(layer.out_bias, attended, layer.out))
            x = rms_norm(hidden, layer.norm_post, layer.eps_post)
            gate_up = x @ layer.gate_up  # [b, 2·i]
            width = gate_up.shape[-1] // 2
            hidden = hidden + (torch.nn.functional.silu(gate_up[:, :width]) * gate_up[:, width:]) @ layer.down
        return rms_norm(hidden, self.norm, self.norm_eps) @ self.head  # [b, V]


def direct_decoder(model: torch.nn.Module, max_positions: int) -> DirectDecoder | None:
    """A ``DirectDecoder`` for ``model``'s current weights, or None where its decode steps need its own forward."""
    if _unsupported(model) is not None:
        return None
    return DirectDecoder(model, max_positions)
