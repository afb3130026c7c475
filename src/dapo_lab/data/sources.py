"""Data sources: the config components of `conf/data/` (the generated task is `task.RunningSumTask`)."""

from __future__ import annotations

from dataclasses import dataclass

from dapo_lab.data.example import PromptExample
from dapo_lab.data.loaders import load_examples


@dataclass(frozen=True)
class MathFileData:
    """A real math dataset from files: verl/DAPO, GSM8K or problem/answer rows (`schema="auto"` detects).

    Paths are relative to the current directory. A set that only provides evaluation problems may use the
    same file for both splits.

    Args:
        train_path: the parquet, JSONL or JSON file of training problems (a run needs it: null raises when the
            split is read).
        eval_path: the file of evaluation problems (a run needs it too); may be `train_path` for a set that only
            provides evaluation problems.
        schema: the row layout: `verl` (DAPO's: `prompt` chat messages, `reward_model.ground_truth`,
            `data_source`), `gsm8k` (`question`, `answer` ending in `#### N`), `problem_answer` (`problem`,
            `answer`), or `auto` (detected from the first row's columns).
        dedup: keep one row per problem text (DAPO-Math-17k repeats each ~100x, DAPO's AIME file 32x), so a
            step's prompts are distinct; a repeat with a different answer is logged and the first kept.
        template: wrap each bare problem in DAPO's prompt, which asks for the final `Answer:` line the reward
            (Eq. 7) reads; rows that already have it are unchanged.
        source: the dataset name given to every example (null: each row's `data_source`, else the file's stem).
        train_limit: keep the first this many training problems, after `dedup` (null: all).
        eval_limit: keep the first this many evaluation problems, after `dedup` (null: all).
    """

    train_path: str | None = None
    eval_path: str | None = None
    schema: str = "auto"
    dedup: bool = True
    template: bool = True
    source: str | None = None
    train_limit: int | None = None
    eval_limit: int | None = None

    def _load(self, path: str | None, limit: int | None, name: str) -> list[PromptExample]:
        if path is None:
            raise ValueError(f"MathFileData: no {name} configured (set data.{name}=...)")
        return load_examples(path, self.schema, self.dedup, self.template, self.source, limit)

    def train_examples(self) -> list[PromptExample]:
        return self._load(self.train_path, self.train_limit, "train_path")

    def eval_examples(self) -> list[PromptExample]:
        return self._load(self.eval_path, self.eval_limit, "eval_path")
