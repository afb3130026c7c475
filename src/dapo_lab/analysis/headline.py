"""The paper's headline at any scale: what full DAPO spends to reach naive GRPO's final accuracy.

The paper (Fig. 1): DAPO passes DeepSeek's GRPO result "using 50% of the training steps". Here, per seed,
the target is the baseline run's own final evaluation, and the method run of the same seed (same warm start,
same prompt order) is read at each of its evaluations until one reaches it. At that step the method's cost is
counted three ways against the baseline's whole run:

- ``step_frac``: steps / baseline steps (the paper's measure);
- ``token_frac``: generated tokens (``rollout/tokens`` summed over steps 1..s) / the baseline's total: dynamic
  sampling generates more per step, so steps alone flatter it;
- ``time_frac``: training seconds (``time/step`` summed; evaluation excluded) / the baseline's total.

The step is the first *evaluation* step that reaches the target, so it is only as fine as ``evaluation.every``.
A seed whose method run never reaches the target gets NaN fractions and ``reached=False``; the summary says how
many seeds reached it and averages the fractions of those that did (with a t-interval over them).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from dapo_lab.analysis.stats import mean_ci
from dapo_lab.analysis.tables import to_markdown

SEED_COLUMNS = ("seed", "target", "method_final", "step", "baseline_steps", "reached", "step_frac", "token_frac",
                "time_frac")
COSTS = {"step_frac": "steps", "token_frac": "generated tokens", "time_frac": "training seconds"}


def first_step_reaching(curve: pd.Series, target: float) -> float:
    """The first step (the index of ``curve``, sorted) whose value is at least ``target``; NaN if none.

    >>> first_step_reaching(pd.Series([0.47, 0.53, 0.55, 0.54], index=[0, 10, 20, 30]), 0.544)
    20.0
    >>> first_step_reaching(pd.Series([0.4, 0.5], index=[0, 10]), 0.6)
    nan
    """
    hits = curve.sort_index()[lambda s: s >= target]
    return float(hits.index[0]) if len(hits) else math.nan


def cumulative(per_step: pd.Series, step: float) -> float:
    """Sum of a per-step metric over steps 1..``step`` (step 0 is the starting policy: nothing was spent).

    >>> cumulative(pd.Series([100.0, 120.0, 90.0], index=[1, 2, 3]), 2)
    220.0
    """
    return float(per_step[(per_step.index >= 1) & (per_step.index <= step)].sum())


def _series(runs: pd.DataFrame, metric: str) -> pd.Series:
    rows = runs[runs["metric"] == metric]
    return rows.groupby("step")["value"].last()


def _cost_frac(method_runs: pd.DataFrame, baseline_runs: pd.DataFrame, metric: str, step: float,
               baseline_steps: float) -> float:
    """The method's ``metric`` summed to ``step`` over the baseline's summed to its end (NaN: not reached)."""
    total = cumulative(_series(baseline_runs, metric), baseline_steps)
    return cumulative(_series(method_runs, metric), step) / total if not math.isnan(step) and total else math.nan


def headline(df: pd.DataFrame, method: str = "dapo", baseline: str = "grpo", metric: str = "eval/avg@4",
             by: str = "experiment") -> pd.DataFrame:
    """One row per seed that has both runs (``SEED_COLUMNS``), from ``load_runs``' tidy frame.

    ``target`` is the baseline's value of ``metric`` at its last evaluation; ``step`` the method's first evaluation
    step reaching it. A seed with only one of the two runs is left out (``load_runs`` already warned of an
    unfinished sweep). Raises ``ValueError`` naming what is missing when no seed has both.
    """
    for column in (by, "seed", "step", "metric", "value"):
        if column not in df.columns:
            raise ValueError(f"the runs frame has no {column!r} column (columns: {list(df.columns)})")
    rows = []
    for seed in sorted(df["seed"].dropna().unique()):
        of_seed = df[df["seed"] == seed]
        pair = {name: of_seed[of_seed[by] == name] for name in (method, baseline)}
        if any(runs.empty or runs["run"].nunique() != 1 for runs in pair.values()):
            continue  # one of the two is missing (or ambiguous: two runs of one experiment and seed)
        base_curve, method_curve = _series(pair[baseline], metric), _series(pair[method], metric)
        if base_curve.empty or method_curve.empty:
            continue
        target = float(base_curve.iloc[-1])
        base_steps = float(base_curve.index[-1])
        step = first_step_reaching(method_curve, target)
        reached = not math.isnan(step)

        rows.append({"seed": int(seed), "target": target, "method_final": float(method_curve.iloc[-1]),
                     "step": step, "baseline_steps": base_steps, "reached": reached,
                     "step_frac": step / base_steps if reached and base_steps else math.nan,
                     "token_frac": _cost_frac(pair[method], pair[baseline], "rollout/tokens", step, base_steps),
                     "time_frac": _cost_frac(pair[method], pair[baseline], "time/step", step, base_steps)})
    if not rows:
        found = sorted(df[by].dropna().astype(str).unique())
        raise ValueError(f"no seed has both a {by}={method} and a {by}={baseline} run with {metric} "
                         f"(found {by}: {found})")
    return pd.DataFrame(rows, columns=list(SEED_COLUMNS))


def summary(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Mean ± 95% t-interval of each cost fraction over the seeds that reached the target.

    >>> per_seed = pd.DataFrame({"reached": [True, True, True], "step_frac": [0.25, 0.375, 0.5],
    ...                          "token_frac": [0.8, 0.9, 1.0], "time_frac": [0.6, 0.7, 0.8]})
    >>> summary(per_seed)[["cost", "mean", "reached"]].to_dict("records")[0]
    {'cost': 'steps', 'mean': 0.375, 'reached': '3/3'}
    """
    hit = per_seed[per_seed["reached"]]
    out = []
    for column, label in COSTS.items():
        mean, half, n = mean_ci(hit[column])
        out.append({"cost": label, "mean": mean, "ci95": half, "n": n, "reached": f"{len(hit)}/{len(per_seed)}"})
    return pd.DataFrame(out)


def report(per_seed: pd.DataFrame, metric: str, method: str, baseline: str) -> str:
    """The per-seed table and the summary as markdown."""
    seeds = per_seed.assign(target=100 * per_seed["target"], method_final=100 * per_seed["method_final"])
    lines = [f"{method} against {baseline}'s final {metric} (per seed, accuracies in %):", "",
             to_markdown(seeds, floatfmt=".3g"), "",
             f"{method}'s cost to reach it, as a fraction of {baseline}'s whole run:", "",
             to_markdown(summary(per_seed), floatfmt=".3f")]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m dapo_lab.analysis.headline DIR``: the headline table of a sweep=headline directory."""
    import argparse
    import warnings

    from dapo_lab.analysis.runs import load_runs

    parser = argparse.ArgumentParser(prog="python -m dapo_lab.analysis.headline", description=main.__doc__)
    parser.add_argument("root", help="the sweep directory (or any folder holding both experiments' runs)")
    parser.add_argument("--metric", default="eval/avg@4")
    parser.add_argument("--method", default="dapo")
    parser.add_argument("--baseline", default="grpo")
    parser.add_argument("--out", help="also write headline.md and the curves' figures (seed bands; needs the "
                                      "analysis extra) to this folder")
    args = parser.parse_args(argv)
    if not Path(args.root).is_dir():
        parser.error(f"no such directory: {args.root}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = load_runs(args.root)
    for warning in caught:
        print(f"warning: {warning.message}")
    try:
        per_seed = headline(df, args.method, args.baseline, args.metric)
    except ValueError as err:
        parser.exit(1, f"error: {err}\n")
    text = report(per_seed, args.metric, args.method, args.baseline)
    print(text)
    if args.out:
        from dapo_lab.analysis.plots import save_figures

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "headline.md").write_text(text + "\n")
        written = save_figures(df, out)
        print(f"wrote {out / 'headline.md'} and {', '.join(str(p) for p in written.values())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
