"""Policies: the tiny Qwen2 with its byte tokenizer and cached warm start, and pretrained models by name."""

from dapo_lab.models.spec import PretrainedModel, TinyModel
from dapo_lab.models.tiny import build_tiny, tiny_config
from dapo_lab.models.tokenizer import build_byte_tokenizer
from dapo_lab.models.warmstart import evaluate_accuracy, grade_generations, warm_start

__all__ = [
    "PretrainedModel",
    "TinyModel",
    "build_byte_tokenizer",
    "build_tiny",
    "evaluate_accuracy",
    "grade_generations",
    "tiny_config",
    "warm_start",
]
