"""Benchmark the math reward: responses graded per second in both modes, and its false matches.

Asked: the grader runs on every rollout (thousands per step); target >= 2,000 responses/s in mode
"dapo" on 2 cores, and ~0 false positives on real answers.

Command (from the repo root):  .venv/bin/python experiments/bench_reward.py
Responses are ~2,000 characters: a MATH-500 solution (``../shared/data``; synthetic text without it)
cut to length, ending with ``Answer: <x>``; half carry their row's answer, half another row's. Mode
"symbolic" starts cold (fresh worker caches) after its workers are up; start-up is timed separately.

Measured 2025-11-26 on the 2 shared CPU cores of the dev box (load average ~3 from other jobs):
dapo 47,105 responses/s (33k-69k over three runs, one process); symbolic 249 responses/s (2 workers;
285 of 1,000 decided by equivalence, 0 timeouts). MATH-500: own answer correct 500/500 in both modes;
dapo matches 12 pairs of distinct answers, 11 the same value and 1 false ("0" = "5x - 7y + 11z + 4 = 0",
the paper's keep-after-"=" rule); symbolic: 0 false matches over 1,992 shifted pairs.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from itertools import permutations
from pathlib import Path

from dapo_lab.reward import MathReward, grade_batch
from dapo_lab.reward.normalize import normalize_final_answer

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
LENGTH = 2000


def load_rows() -> list[tuple[str, str]]:
    """(solution, answer) pairs: MATH-500 when present, else synthetic."""
    path = DATA / "math500.jsonl"
    if path.exists():
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return [(r["solution"], r["answer"]) for r in rows]
    rng = random.Random(0)
    fraction = "\\frac{{{}}}{{{}}}"
    answers = [
        rng.choice([str(rng.randint(0, 999)), fraction.format(rng.randint(1, 9), rng.randint(2, 9))])
        for _ in range(500)
    ]
    return [(f"We compute step {i}, then simplify. " * 40, a) for i, a in enumerate(answers)]


def make_batch(rows: list[tuple[str, str]], n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    responses, truths = [], []
    for k in range(n):
        i = rng.randrange(len(rows))
        solution, truth = rows[i]
        answer = truth if k % 2 == 0 else rows[(i + 1 + rng.randrange(len(rows) - 1)) % len(rows)][1]
        tail = f"\nAnswer: {answer}"
        body = (solution * (LENGTH // max(len(solution), 1) + 1))[: LENGTH - len(tail)]
        responses.append(body + tail)
        truths.append(truth)
    return responses, truths


def bench_dapo(rows: list[tuple[str, str]], n: int) -> float:
    reward = MathReward(mode="dapo")
    best = 0.0
    for seed in range(3):
        responses, truths = make_batch(rows, n, seed)
        start = time.perf_counter()
        reward.score_batch(responses, truths)
        best = max(best, n / (time.perf_counter() - start))
    return best


def bench_symbolic(rows: list[tuple[str, str]], n: int, workers: int) -> tuple[float, float, dict[str, float]]:
    reward = MathReward(mode="symbolic", workers=workers, timeout_s=2.0)
    try:
        start = time.perf_counter()
        reward.score_batch(["Answer: x+1"], ["1+x"])  # goes to sympy: starts the workers
        startup = time.perf_counter() - start
        responses, truths = make_batch(rows, n, seed=100)
        start = time.perf_counter()
        _, _, metrics = reward.score_batch(responses, truths)
        return n / (time.perf_counter() - start), startup, metrics
    finally:
        reward.close()


def false_matches(answers: list[str], workers: int, shifts: tuple[int, ...]) -> None:
    """Own answer -> correct (false negatives); other rows' different answers -> incorrect."""
    distinct = sorted(set(answers))
    normal = {a: normalize_final_answer(a) for a in distinct}
    pairs = list(permutations(distinct, 2))
    dapo_matches = sorted({tuple(sorted(p)) for p in pairs if normal[p[0]] == normal[p[1]]})
    print(f"dapo: all {len(pairs)} ordered pairs of distinct answers; {len(dapo_matches)} unordered pairs match:")
    for a, b in dapo_matches:
        print(f"    {a!r} == {b!r}")
    for mode in ("dapo", "symbolic"):
        own = grade_batch([f"...\nAnswer: {a}" for a in answers], answers, mode=mode, workers=workers)
        print(f"{mode}: own answer correct {sum(g.correct for g in own)}/{len(answers)}")
    for shift in shifts:
        shifted = answers[shift:] + answers[:shift]
        keep = [i for i in range(len(answers)) if shifted[i] != answers[i]]
        grades = grade_batch(
            [f"...\nAnswer: {shifted[i]}" for i in keep], [answers[i] for i in keep], mode="symbolic", workers=workers
        )
        hits = [(shifted[i], answers[i]) for g, i in zip(grades, keep) if g.correct]
        timeouts = sum(g.status == "timeout" for g in grades)
        print(
            f"symbolic, shift {shift}: {len(keep)} pairs of distinct answers, {len(hits)} correct, {timeouts} timeouts"
        )
        for a, b in hits:
            print(f"    {a!r} == {b!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000, help="responses per timed batch (dapo)")
    parser.add_argument("--n-symbolic", type=int, default=1000, help="responses per timed batch (symbolic)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shifts", type=int, nargs="*", default=[1, 7, 100, 250])
    args = parser.parse_args()
    rows = load_rows()
    print(f"data: {'MATH-500' if (DATA / 'math500.jsonl').exists() else 'synthetic'}, {len(rows)} rows")
    print(f"dapo: {bench_dapo(rows, args.n):,.0f} responses/s (1 process, {args.n} x {LENGTH} chars, best of 3)")
    rate, startup, metrics = bench_symbolic(rows, args.n_symbolic, args.workers)
    print(
        f"symbolic: {rate:,.0f} responses/s ({args.workers} workers, {args.n_symbolic} x {LENGTH} chars, cold caches; "
        f"worker start {startup:.1f} s); decided by equivalence {metrics['reward/symbolic_checks']:.0f}, "
        f"timeouts {metrics['reward/timeouts']:.0f}, parse failures {metrics['reward/parse_failures']:.0f}"
    )
    false_matches([answer for _, answer in rows], args.workers, tuple(args.shifts))


if __name__ == "__main__":
    main()
