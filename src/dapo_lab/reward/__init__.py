"""Rule-based math reward (DAPO Eq. 7): +1 if the final answer is right, -1 otherwise.

- ``normalize``: DAPO's ``Answer:`` extraction and Minerva normalisation (pure string code);
- ``symbolic``: safe sympy equivalence (no eval; static guards against expression bombs);
- ``pool`` / ``checker``: killable worker processes that give every symbolic check a hard time bound;
- ``grader``: ``grade`` / ``grade_batch`` in mode ``"dapo"`` (the paper's) or ``"symbolic"``;
- ``rewards``: ``MathReward`` and ``FunctionReward``, the Hydra components of ``conf/reward/``.

Importing this package loads neither sympy nor math-verify: mode ``"dapo"`` needs neither.
"""

from dapo_lab.reward.checker import SymbolicChecker
from dapo_lab.reward.grader import Grade, grade, grade_batch, summarize
from dapo_lab.reward.normalize import extract_answer, normalize_final_answer
from dapo_lab.reward.rewards import FunctionReward, MathReward

__all__ = [
    "FunctionReward",
    "Grade",
    "MathReward",
    "SymbolicChecker",
    "extract_answer",
    "grade",
    "grade_batch",
    "normalize_final_answer",
    "summarize",
]
