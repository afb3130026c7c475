"""Model dimensions for the memory plan (``python -m dapo_lab.plan``), without downloading anything.

Where the dimensions come from, in order: the tiny model's config node (through the same
:func:`dapo_lab.models.tiny.tiny_config` the model is built with), a local ``model.name_or_path`` folder's
``config.json``, or the Qwen2.5 table below for a hub name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ModelDims:
    """The shape of a Qwen2 decoder (Hugging Face ``Qwen2Config`` names in brackets).

    Args:
        name: what the plan calls the model.
        hidden: ``h`` [hidden_size].
        layers: ``L`` [num_hidden_layers].
        heads: query heads ``a`` [num_attention_heads].
        kv_heads: key/value heads (GQA) [num_key_value_heads].
        intermediate: SwiGLU width ``i`` [intermediate_size].
        vocab: ``V`` [vocab_size].
        tied: the LM head is the embedding matrix [tie_word_embeddings].
        source: where the numbers came from.
    """

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool
    source: str = ""

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_hidden(self) -> int:
        """Width of one K (or V) projection: ``kv_heads × head_dim``."""
        return self.kv_heads * self.head_dim


# Published config.json values of the Qwen2.5 base models (huggingface.co/Qwen/Qwen2.5-{0.5B,1.5B,7B,32B}, the
# "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size",
# "vocab_size" and "tie_word_embeddings" fields). Their parameter counts by `param_count`: 494,032,768 /
# 1,543,714,304 / 7,615,616,512 / 32,763,876,352, the totals in the models' safetensors indexes (0.49B / 1.54B /
# 7.61B / 32.8B on the model cards).
QWEN25: dict[str, ModelDims] = {
    "0.5B": ModelDims("Qwen2.5-0.5B", 896, 24, 14, 2, 4864, 151936, True),
    "1.5B": ModelDims("Qwen2.5-1.5B", 1536, 28, 12, 2, 8960, 151936, True),
    "7B": ModelDims("Qwen2.5-7B", 3584, 28, 28, 4, 18944, 152064, False),
    "32B": ModelDims("Qwen2.5-32B", 5120, 64, 40, 8, 27648, 152064, False),
}


def param_count(d: ModelDims) -> int:
    """Parameters of a Qwen2 causal LM (q/k/v projections with bias, o and MLP without, two RMSNorms per layer):

        V·h·(1 if tied else 2) + h + L·(2h² + 2h·h_kv + h + 2·h_kv + 3h·i + 2h),   h_kv = kv_heads·head_dim

    >>> param_count(ModelDims("t", 64, 1, 4, 2, 128, 320, False))  # build_tiny(64, 1 layer, 128)'s doctest count
    78144
    >>> param_count(QWEN25["7B"]), param_count(QWEN25["0.5B"])
    (7615616512, 494032768)
    """
    h, kv = d.hidden, d.kv_hidden
    per_layer = 2 * h * h + 2 * h * kv + h + 2 * kv + 3 * h * d.intermediate + 2 * h
    return d.vocab * h * (1 if d.tied else 2) + h + d.layers * per_layer


def linear_params(d: ModelDims) -> int:
    """Parameters that enter a matmul (every projection with its bias, and the LM head): what bf16 autocast casts.

    >>> linear_params(ModelDims("t", 64, 1, 4, 2, 128, 320, False))  # 78144 less the embedding and 3 norms
    57472
    """
    h, kv = d.hidden, d.kv_hidden
    return d.layers * (2 * h * h + 2 * h * kv + h + 2 * kv + 3 * h * d.intermediate) + d.vocab * h


def layer_params(d: ModelDims) -> int:
    """Parameters of one decoder layer (an FSDP2 unit)."""
    return (param_count(d) - d.vocab * d.hidden * (1 if d.tied else 2) - d.hidden) // d.layers


def from_hf_config(config: dict[str, Any], name: str, source: str) -> ModelDims:
    """Dims from a Hugging Face ``config.json`` dict (or a ``Qwen2Config.to_dict()``)."""
    return ModelDims(name, config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"],
                     config.get("num_key_value_heads") or config["num_attention_heads"], config["intermediate_size"],
                     config["vocab_size"], bool(config.get("tie_word_embeddings", False)), source)


def qwen25_by_name(name_or_path: str) -> ModelDims | None:
    """The table entry a hub name refers to (``Qwen/Qwen2.5-32B``, ``Qwen2.5-7B-Instruct``, ...), else None.

    >>> qwen25_by_name("Qwen/Qwen2.5-32B-Instruct").hidden, qwen25_by_name("gpt2")
    (5120, None)
    """
    match = re.search(r"qwen2\.5-(?:math-)?(\d+(?:\.\d+)?b)", name_or_path.lower())
    if match is None or match.group(1).upper() not in QWEN25:
        return None
    return QWEN25[match.group(1).upper()]


def model_dims(model_cfg: dict[str, Any]) -> ModelDims:
    """The dims of a composed ``model`` node: TinyModel's own keys, a local folder's config.json, or the table."""
    target = str(model_cfg.get("_target_", ""))
    if target.endswith("TinyModel"):
        from dapo_lab.models.tiny import tiny_config
        from dapo_lab.models.tokenizer import build_byte_tokenizer

        keys = ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size",
                "max_position_embeddings")
        config = tiny_config(build_byte_tokenizer(), **{k: int(model_cfg[k]) for k in keys if k in model_cfg})
        dims = from_hf_config(config.to_dict(), "tiny Qwen2", "conf/model/tiny.yaml via models.tiny.tiny_config")
        return dims
    name = str(model_cfg.get("name_or_path", ""))
    config_file = Path(name).expanduser() / "config.json"
    if config_file.is_file():
        return from_hf_config(json.loads(config_file.read_text()), Path(name).name, str(config_file))
    dims = qwen25_by_name(name)
    if dims is None:
        raise ValueError(f"model.name_or_path={name!r}: no local config.json there and not a Qwen2.5 size the plan "
                         f"knows ({', '.join(QWEN25)}); give a local folder with the model's config.json")
    return ModelDims(**{**dims.__dict__, "source": "published Qwen2.5 config.json values: plan_model.QWEN25"})
