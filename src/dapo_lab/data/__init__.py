"""Datasets as plain lists of `PromptExample`: the generated running-sum task (the default) and real math
sets from files (verl/DAPO, GSM8K, problem/answer rows)."""

from dapo_lab.data.example import (
    DAPO_PREFIX,
    DAPO_SUFFIX,
    PromptExample,
    apply_dapo_template,
    render_prompt,
    strip_dapo_template,
)
from dapo_lab.data.loaders import deduplicate, load_examples
from dapo_lab.data.sources import MathFileData
from dapo_lab.data.task import RunningSumTask, task_prompt, worked_solution

__all__ = [
    "DAPO_PREFIX",
    "DAPO_SUFFIX",
    "MathFileData",
    "PromptExample",
    "RunningSumTask",
    "apply_dapo_template",
    "deduplicate",
    "load_examples",
    "render_prompt",
    "strip_dapo_template",
    "task_prompt",
    "worked_solution",
]
