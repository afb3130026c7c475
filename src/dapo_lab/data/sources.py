"""Data sources: the config components of `conf/data/` (the generated task is `task.RunningSumTask`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from dapo_lab.data.example import PromptExample
from dapo_lab.data.loaders import SCHEMAS, check_on_bad_row, read_examples


@dataclass(frozen=True)
class MathFileData:
    """A real math dataset from files: verl/DAPO, GSM8K or problem/answer rows (`schema="auto"` detects).

    Paths are relative to the current directory. A set that only provides evaluation problems may use the
    same file for both splits. After a split is read, ``skipped_rows[split]`` (``"train"``, ``"eval"``) counts
    its bad rows that ``on_bad_row="skip"`` left out (``dapo_lab.data.validate`` logs them as
    ``data/skipped_rows``).

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
        on_bad_row: what a bad row does (invalid JSON, a missing, empty or wrongly typed field, bytes that are not
            UTF-8, and, once the model is loaded, a prompt that leaves no room for `generation.max_new_tokens` in the
            model's context): `error` raises one ValueError naming the file, the row and the field; `skip` leaves it
            out, and one warning per file counts them and quotes the first few.
    """

    train_path: str | None = None
    eval_path: str | None = None
    schema: str = "auto"
    dedup: bool = True
    template: bool = True
    source: str | None = None
    train_limit: int | None = None
    eval_limit: int | None = None
    on_bad_row: str = "error"
    skipped_rows: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_on_bad_row(self.on_bad_row)
        if self.schema not in SCHEMAS:
            raise ValueError(f"data.schema must be one of {SCHEMAS}, got {self.schema!r}")

    def _load(self, path: str | None, limit: int | None, split: str) -> list[PromptExample]:
        if path is None:
            raise ValueError(f"MathFileData: no {split}_path configured (set data.{split}_path=...)")
        examples, metrics = read_examples(path, self.schema, self.dedup, self.template, self.source, limit,
                                          self.on_bad_row)
        self.skipped_rows[split] = int(metrics["data/skipped_rows"])
        return examples

    def train_examples(self) -> list[PromptExample]:
        return self._load(self.train_path, self.train_limit, "train")

    def eval_examples(self) -> list[PromptExample]:
        return self._load(self.eval_path, self.eval_limit, "eval")
