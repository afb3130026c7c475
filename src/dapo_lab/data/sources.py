"""Data sources: the config components of `conf/data/` (the generated task is `task.RunningSumTask`)."""

from __future__ import annotations

from dataclasses import dataclass

from dapo_lab.data.example import PromptExample
from dapo_lab.data.loaders import load_examples


@dataclass(frozen=True)
class MathFileData:
    """A real math dataset from files: verl/DAPO, GSM8K or problem/answer rows (`schema="auto"` detects).

    Paths are relative to the current directory. A set that only provides evaluation problems may use the
    same file for both splits. `dedup` keeps one row per problem text (DAPO-Math-17k repeats each ~100x,
    DAPO's AIME file 32x); `template` wraps bare problems in DAPO's prompt.
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
