"""Rollout engines behind one contract (:class:`RolloutEngine`): transformers (default) and vLLM."""

from dapo_lab.rollout.base import RolloutEngine, RolloutOutput, SamplingParams
from dapo_lab.rollout.hf import HFEngine

__all__ = ["RolloutEngine", "RolloutOutput", "SamplingParams", "HFEngine"]
