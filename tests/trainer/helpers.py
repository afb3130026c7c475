"""A tiny, fast DAPO setup built in plain Python (no Hydra, no warm start) for trainer tests."""

from __future__ import annotations

import functools
from dataclasses import replace

import lightning as L
import torch

from dapo_lab.algo import DecoupledClip, DynamicSampling, GroupAdvantage, NoKL, NoOverlong, TokenMean
from dapo_lab.data.example import render_prompt
from dapo_lab.data.task import RunningSumTask
from dapo_lab.models.tiny import build_tiny
from dapo_lab.module import DAPOModule
from dapo_lab.reward import MathReward
from dapo_lab.rollout import HFEngine
from dapo_lab.settings import BatchSettings, EvalSettings, GenerationSettings, OptimSettings

TINY_DIMS = dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128)


def make_module(**overrides) -> DAPOModule:
    torch.manual_seed(0)
    model, tokenizer = build_tiny(seed=0, **TINY_DIMS)
    task = RunningSumTask(min_terms=2, max_terms=4, train_size=64, eval_size=8)
    parts = dict(
        model=model, tokenizer=tokenizer, train_examples=task.train_examples(), eval_examples=task.eval_examples(),
        render=functools.partial(render_prompt, tokenizer=tokenizer, use_chat_template=False),
        reward=MathReward(mode="dapo"), rollout=HFEngine(), clip=DecoupledClip(), loss=TokenMean(),
        advantage=GroupAdvantage(), kl=NoKL(), overlong=NoOverlong(), sampling=DynamicSampling(max_gen_batches=2),
        batch=BatchSettings(group_size=4, prompts_per_step=4, gen_prompts=4, mini_batch_prompts=2,
                            micro_batch_size=8),
        optim=OptimSettings(lr=1e-3, weight_decay=0.0), generation=GenerationSettings(max_new_tokens=12),
        evaluation=EvalSettings(every=2, k=2, max_prompts=8, batch_prompts=8), seed=1,
    )
    for key, value in overrides.items():
        parts[key] = replace(parts[key], **value) if isinstance(value, dict) else value
    return DAPOModule(**parts)


def make_trainer(tmp_path, steps: int = 2, **kwargs) -> L.Trainer:
    args = dict(accelerator="cpu", devices=1, max_steps=steps, logger=L.pytorch.loggers.CSVLogger(tmp_path),
                enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, log_every_n_steps=1)
    return L.Trainer(**{**args, **kwargs})


def parity_reward(response: str, ground_truth: str) -> float:
    """A deterministic content-based reward that makes groups informative even for an untrained model."""
    return 1.0 if sum(map(ord, response)) % 2 else -1.0


class ScriptedReward:
    """Correctness from a script: call ``i`` marks group ``g`` all-right, all-wrong or mixed (``"R" / "W" / "M"``)."""

    def __init__(self, script: list[str], group_size: int) -> None:
        self.script, self.group_size, self.calls = list(script), group_size, 0

    def score_batch(self, responses, ground_truths):
        pattern = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        correct = []
        for kind in pattern:
            correct += {"R": [True] * self.group_size, "W": [False] * self.group_size,
                        "M": [True] + [False] * (self.group_size - 1)}[kind]
        assert len(correct) == len(responses)
        return [1.0 if c else -1.0 for c in correct], correct, {}


def favour_eos(module: DAPOModule, logit_boost: float = 4.0) -> None:
    """Raise the EOS logit so that some responses end before the limit and others are truncated."""
    with torch.no_grad():
        head = module.model.lm_head.weight
        hidden = module.model.model.norm.weight
        head[module.tokenizer.eos_token_id] = hidden.sign() * logit_boost / hidden.numel() ** 0.5
