"""Rollout engines behind one contract (:class:`RolloutEngine`): transformers (default) and vLLM."""

from dapo_lab.rollout.base import RolloutEngine, RolloutOutput, SamplingParams
from dapo_lab.rollout.hf import HFEngine
from dapo_lab.rollout.vllm import VLLMEngine  # imports vllm only when an engine starts

__all__ = ["RolloutEngine", "RolloutOutput", "SamplingParams", "HFEngine", "VLLMEngine"]
