"""The one example type every dataset maps to, what a data source offers, DAPO's prompt template, and prompt
rendering."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

DAPO_PREFIX = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
)
DAPO_SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:".'


@dataclass(frozen=True)
class PromptExample:
    """One prompt with its reference answer.

    `prompt` is the user's text (already templated); `messages`, when set, is the full chat to render with
    a chat template (e.g. a verl row with a system message). `source` names the dataset (`data_source`).
    `origin`, when known, is where it was read (`"train.jsonl row 12"`), for error messages; it is not part of
    the example's identity.
    """

    prompt: str
    ground_truth: str
    source: str
    messages: list[dict[str, str]] | None = None
    origin: str | None = field(default=None, compare=False, repr=False)

    def chat(self) -> list[dict[str, str]]:
        """The conversation to give a chat template.

        >>> PromptExample("2+2?", "4", "toy").chat()
        [{'role': 'user', 'content': '2+2?'}]
        """
        if self.messages:
            return [dict(m) for m in self.messages]
        return [{"role": "user", "content": self.prompt}]


class DataSource(Protocol):
    """A component of ``conf/data/``: the two splits as lists of :class:`PromptExample`."""

    def train_examples(self) -> list[PromptExample]: ...

    def eval_examples(self) -> list[PromptExample]: ...


@runtime_checkable
class WarmStartSource(Protocol):
    """A data source that can also teach a freshly built model its answer format: worked solutions for a
    supervised warm start (the embedded tiny model needs one; a pretrained model does not).

    ``warmstart_batches(batch_size, seed)`` yields endless ``(prompts, responses)`` batches; ``fingerprint()`` is
    every setting that changes them (it keys the cached warm start).
    """

    def warmstart_batches(self, batch_size: int, seed: int) -> Iterator[tuple[list[str], list[str]]]: ...

    def fingerprint(self) -> dict: ...


def apply_dapo_template(problem: str) -> str:
    """DAPO's prompt around a bare problem; a problem that already has it is returned unchanged.

    >>> p = apply_dapo_template("What is 1+1?")
    >>> p.startswith("Solve the following") and p.endswith('after "Answer:".')
    True
    >>> apply_dapo_template(p) == p
    True
    """
    if problem.startswith(DAPO_PREFIX) or problem.rstrip().endswith(DAPO_SUFFIX.strip()):
        return problem
    return DAPO_PREFIX + problem + DAPO_SUFFIX


def strip_dapo_template(prompt: str) -> str:
    """The bare problem inside a DAPO-templated prompt (the key for deduplication).

    >>> strip_dapo_template(apply_dapo_template("What is 1+1?"))
    'What is 1+1?'
    """
    if prompt.startswith(DAPO_PREFIX):
        prompt = prompt[len(DAPO_PREFIX):]
    if prompt.endswith(DAPO_SUFFIX):
        prompt = prompt[: -len(DAPO_SUFFIX)]
    return prompt.strip()


def render_prompt(example: PromptExample, tokenizer: Any, use_chat_template: bool) -> str:
    """The text the policy is conditioned on: the chat template with a generation prompt for chat models,
    the plain prompt for base models. Asking for the chat template of a tokenizer that has none is a ValueError
    (it used to fall back to the plain prompt silently: a run then trained on prompts it did not ask for).

    >>> from dapo_lab.models.tokenizer import build_byte_tokenizer
    >>> ex = PromptExample("Add 1 2", "3", "toy")
    >>> render_prompt(ex, build_byte_tokenizer(), use_chat_template=False)
    'Add 1 2'
    >>> render_prompt(ex, build_byte_tokenizer(), use_chat_template=True)
    '<|im_start|>user\\nAdd 1 2<|im_end|>\\n<|im_start|>assistant\\n'
    """
    if not use_chat_template:
        return example.prompt
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("model.use_chat_template=true, but the tokenizer has no chat template: set "
                         "model.use_chat_template=false (plain prompts) or use a tokenizer that has a chat_template")
    return tokenizer.apply_chat_template(example.chat(), tokenize=False, add_generation_prompt=True)
