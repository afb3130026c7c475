"""The embedded default task: running sums of a labelled list of numbers, in DAPO's `Answer:` format.

    prompt:   "Add a=3 b=5 c=8 d=1. Last line: Answer: <sum>\n"
    solution: "a=3\nb=5: 3+5=8\nc=8: 8+8=16\nd=1: 16+1=17\nAnswer: 17"

A correct solution needs one line per term, so its length grows with the difficulty knob `max_terms`;
`max_operand` sets operand sizes (9: single digits). Each line starts by copying `label=value` from the
prompt (a unique key, the pattern an induction head completes), then adds that value to the total that
ends the line above: every step reads only nearby tokens or a keyed lookup. Unlabelled lists
("3 5 8 1" -> "3+5=8") make the model find the k-th of repeated digits by position; in the probes below a
0.8M model had not learned it after 400 steps. (What mattered most was the number of updates: batch 16
learned the lookup in ~500 steps where batch 64 had not in 300; see `models/warmstart.py`.)
With the defaults (2-8 terms) correct solutions take 25-105 tokens with the byte tokenizer (one per
character, plus eos): 2-5 terms 25-66, 6 terms 69-79, 7 terms 86-92, 8 terms 97-105. The 8-term ones (~14%)
exceed the trainer's default 96-token response limit, so overlong filtering and soft punishment have
something to act on; the soft-punishment buffer must start after 92 tokens or it penalises correct 6-7-term
solutions (tests/test_configs.py checks the configs). Splits are disjoint by problem (the tuple of terms): the eval
split is drawn first from its own seeded stream, and train draws skip every eval problem.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from itertools import islice

from dapo_lab.data.example import PromptExample

Terms = tuple[int, ...]
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def task_prompt(terms: Terms) -> str:
    """The short prompt of the embedded task (it still asks for the `Answer:` line).

    >>> task_prompt((3, 5, 8, 1))
    'Add a=3 b=5 c=8 d=1. Last line: Answer: <sum>\\n'
    """
    labelled = " ".join(f"{LETTERS[i]}={t}" for i, t in enumerate(terms))
    return f"Add {labelled}. Last line: Answer: <sum>\n"


def worked_solution(terms: Terms) -> str:
    """One line per term (its label and value, then the step), then the answer line; no trailing newline:
    eos follows.

    >>> print(worked_solution((3, 5, 8, 1)))
    a=3
    b=5: 3+5=8
    c=8: 8+8=16
    d=1: 16+1=17
    Answer: 17
    """
    lines, total = [f"a={terms[0]}"], terms[0]
    for i, t in enumerate(terms[1:], start=1):
        lines.append(f"{LETTERS[i]}={t}: {total}+{t}={total + t}")
        total += t
    return "\n".join(lines + [f"Answer: {total}"])


def length_bucketed(
    problems: Iterator[Terms], batch_size: int, seed: int, pool_batches: int = 16
) -> Iterator[list[Terms]]:
    """Batches of similar length (sorted within a pool of `pool_batches` batches, served in a seeded random
    order): the longest problems are ~10x the shortest, so plain batches would be mostly padding.

    >>> problems = [(1,) * n for n in (3, 1, 2, 1, 3, 2, 4, 4)]
    >>> sorted([len(t) for t in b] for b in length_bucketed(iter(problems), 2, seed=0, pool_batches=4))
    [[1, 1], [2, 2], [3, 3], [4, 4]]
    """
    rng = random.Random(f"warmstart/buckets/{seed}")
    while True:
        pool = sorted(islice(problems, batch_size * pool_batches), key=len)
        if not pool:
            return
        chunks = [pool[i : i + batch_size] for i in range(0, len(pool), batch_size)]
        rng.shuffle(chunks)
        yield from chunks


@dataclass(frozen=True)
class RunningSumTask:
    """Generated running-sum problems; a data source (`train_examples` / `eval_examples`).

    Args:
        min_terms: the fewest numbers in a problem (>= 2). The count is drawn uniformly from
            `[min_terms, max_terms]`, and a correct solution has one line per term.
        max_terms: the most numbers in a problem (<= 26, one letter each): the difficulty and the longest correct
            solution (8: 97-105 tokens, beyond the default 96-token response limit, so overlong shaping acts).
        max_operand: each number is drawn from `0..max_operand` (9: single digits).
        seed: seeds both splits (the eval problems are the same for every run with this seed and these knobs) and
            the warm start's problem stream.
        train_size: training problems, drawn from a seeded stream that skips every eval problem.
        eval_size: distinct evaluation problems.
        source: the dataset name on every example (`data_source`).

    >>> task = RunningSumTask(min_terms=2, max_terms=4, eval_size=5, train_size=3)
    >>> [e.ground_truth for e in task.eval_examples()] == [e.ground_truth for e in task.eval_examples()]
    True
    >>> ex = task.train_examples()[0]
    >>> ex.prompt.startswith("Add "), ex.source
    (True, 'running_sum')
    """

    min_terms: int = 2
    max_terms: int = 8
    max_operand: int = 9
    seed: int = 0
    train_size: int = 20_000
    eval_size: int = 500
    source: str = "running_sum"

    def __post_init__(self) -> None:
        if not 2 <= self.min_terms <= self.max_terms <= len(LETTERS):
            raise ValueError(f"RunningSumTask: need 2 <= min_terms <= max_terms <= 26, got "
                             f"min_terms={self.min_terms}, max_terms={self.max_terms}")
        if self.max_operand < 1 or self.eval_size < 0 or self.train_size < 0:
            raise ValueError(f"RunningSumTask: max_operand must be >= 1 and sizes >= 0, got {self}")

    def sample_terms(self, rng: random.Random) -> Terms:
        n = rng.randint(self.min_terms, self.max_terms)
        return tuple(rng.randint(0, self.max_operand) for _ in range(n))

    def example(self, terms: Terms) -> PromptExample:
        return PromptExample(prompt=task_prompt(terms), ground_truth=str(sum(terms)), source=self.source)

    @cached_property
    def eval_problems(self) -> tuple[Terms, ...]:
        """`eval_size` distinct problems, the same for every run with this seed and these knobs."""
        rng = random.Random(f"running_sum/eval/{self.seed}")
        seen: dict[Terms, None] = {}
        for _ in range(100 * self.eval_size + 1000):
            if len(seen) == self.eval_size:
                break
            seen.setdefault(self.sample_terms(rng), None)
        if len(seen) < self.eval_size:
            raise ValueError(f"RunningSumTask: only {len(seen)} distinct problems for eval_size="
                             f"{self.eval_size}; raise max_terms or max_operand")
        return tuple(seen)

    def iter_train_problems(self, stream: str = "train") -> Iterator[Terms]:
        """An endless, seeded stream of problems outside the eval split (`stream` names independent ones)."""
        eval_set = set(self.eval_problems)
        rng = random.Random(f"running_sum/{stream}/{self.seed}")
        misses = 0
        while True:
            terms = self.sample_terms(rng)
            if terms in eval_set:
                misses += 1
                if misses > 10_000:
                    raise ValueError("RunningSumTask: the eval split covers every problem; shrink eval_size")
                continue
            misses = 0
            yield terms

    def train_examples(self) -> list[PromptExample]:
        stream = self.iter_train_problems()
        return [self.example(next(stream)) for _ in range(self.train_size)]

    def eval_examples(self) -> list[PromptExample]:
        return [self.example(t) for t in self.eval_problems]

    # ------------------------------------------------------------------ what a warm start needs
    def warmstart_batches(self, batch_size: int, seed: int) -> Iterator[tuple[list[str], list[str]]]:
        """Endless ``(prompts, worked solutions)`` batches from the train side of the split, of similar lengths
        (see :func:`length_bucketed`), for a supervised warm start (``dapo_lab.models.warmstart``).

        >>> prompts, solutions = next(RunningSumTask(max_terms=3).warmstart_batches(2, seed=0))
        >>> len(prompts), solutions[0].splitlines()[-1].startswith("Answer: ")
        (2, True)
        """
        for terms in length_bucketed(self.iter_train_problems(stream=f"warmstart/{seed}"), batch_size, seed):
            yield [task_prompt(t) for t in terms], [worked_solution(t) for t in terms]

    def fingerprint(self) -> dict:
        """Every setting that changes the warm-start batches (part of a cached warm start's key)."""
        return dataclasses.asdict(self)
