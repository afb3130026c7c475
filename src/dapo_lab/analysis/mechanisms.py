"""The mechanism table: for each DAPO technique, the quantity that shows what it is for, in the ablation row that adds
it against the row it builds on, over seeds.

    python -m dapo_lab.analysis.mechanisms multirun/ablation/cpu_ablation [--out DIR]

Each :class:`Evidence` turns one run's per-step metrics into one number (a mean over the steps, over the run's
second half, or the last value). The table gives that number's seed mean ± t-interval for the base row and for the
row with the technique, and the difference paired by seed (rows of one seed share the warm start and the prompt
order) with its own t-interval. ``verdict`` says whether the difference has the paper's sign with an interval that
excludes 0 (``yes``), the opposite sign likewise (``opposite``), or an interval that includes 0 (``unresolved``).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from dapo_lab.analysis.stats import mean_ci
from dapo_lab.analysis.tables import to_markdown

PerStep = Callable[[pd.DataFrame], pd.Series]  # a run's wide frame (index step, one column per metric) -> [steps]


def column(name: str) -> PerStep:
    """A logged metric as it is."""
    return lambda wide: wide[name] if name in wide else pd.Series(math.nan, index=wide.index)


def ratio(numerator: str, denominator: str) -> PerStep:
    """``Σ numerator / Σ denominator`` over the steps so far, at each step (NaN while the denominator's sum is 0): a
    step with one clipped token weighs no more than its share, unlike a mean of per-step ratios.

    >>> wide = pd.DataFrame({"a": [0.0, 1.0, 3.0], "b": [0.0, 2.0, 2.0]})
    >>> ratio("a", "b")(wide).tolist()
    [nan, 0.5, 1.0]
    """
    def per_step(wide: pd.DataFrame) -> pd.Series:
        num, den = column(numerator)(wide).fillna(0.0).cumsum(), column(denominator)(wide).fillna(0.0).cumsum()
        return num / den.where(den != 0)
    return per_step


def truncated_in_loss(wide: pd.DataFrame) -> pd.Series:
    """The share of sampled responses that are truncated and still in the loss: the truncation rate less what the
    overlong filter takes out (``overlong/filtered_frac``; 0 without a filter)."""
    filtered = column("overlong/filtered_frac")(wide).fillna(0.0)
    return (column("rollout/truncated_frac")(wide) - filtered).clip(lower=0.0)


@dataclass(frozen=True)
class Evidence:
    """One row of the mechanism table.

    Args:
        technique: the DAPO technique (the paper's name).
        row, base: the ablation row that adds it and the row it builds on (``experiment`` values).
        quantity: what is measured, in words.
        per_step: the quantity at each step of a run, from its metrics.
        over: one number per run: the ``mean`` over its steps, the ``late`` mean over its second half, or the
            ``last`` value.
        expect: the paper's direction for ``row − base``: ``+1`` up, ``−1`` down.
        scale: a display factor (100: a fraction shown in percent).
    """

    technique: str
    row: str
    base: str
    quantity: str
    per_step: PerStep
    over: Literal["mean", "late", "last"] = "mean"
    expect: int = 1
    scale: float = 1.0


EVIDENCE: tuple[Evidence, ...] = (
    Evidence("Overlong filtering", "ablation/1_overlong_filter", "ablation/0_grpo",
             "truncated responses in the loss (% of sampled)", truncated_in_loss, "mean", -1, 100.0),
    Evidence("Overlong filtering", "ablation/1_overlong_filter", "ablation/0_grpo",
             "truncation rate, final eval (%)", column("eval/truncated_frac"), "last", -1, 100.0),
    Evidence("Clip-Higher", "ablation/2_clip_higher", "ablation/1_overlong_filter",
             "policy entropy, second half (nats/token)", column("train/entropy"), "late", 1),
    Evidence("Clip-Higher", "ablation/2_clip_higher", "ablation/1_overlong_filter",
             "upper clip binds (% of tokens)", column("actor/clipfrac_high"), "mean", -1, 100.0),
    Evidence("Clip-Higher", "ablation/2_clip_higher", "ablation/1_overlong_filter",
             "up-clipped tokens with π_old < 0.2 (% of them)",
             ratio("actor/clipfrac_high_lowprob", "actor/clipfrac_high"), "last", 1, 100.0),
    Evidence("Soft overlong punishment", "ablation/3_soft_overlong", "ablation/2_clip_higher",
             "truncation rate of rollouts, second half (%)", column("rollout/truncated_frac"), "late", -1, 100.0),
    Evidence("Soft overlong punishment", "ablation/3_soft_overlong", "ablation/2_clip_higher",
             "mean response length of rollouts, second half", column("rollout/response_len_mean"), "late", -1),
    Evidence("Token-level loss", "ablation/4_token_loss", "ablation/3_soft_overlong",
             "loss weight on responses longer than the median (%)", column("train/long_response_weight"), "mean",
             1, 100.0),
    Evidence("Token-level loss", "ablation/4_token_loss", "ablation/3_soft_overlong",
             "policy entropy, second half (nats/token)", column("train/entropy"), "late", 1),
    Evidence("Dynamic sampling", "ablation/5_dapo", "ablation/4_token_loss",
             "informative groups among those trained on (%)",
             ratio("sampling/informative_group_frac", "sampling/kept_group_frac"), "last", 1, 100.0),
    Evidence("Dynamic sampling", "ablation/5_dapo", "ablation/4_token_loss",
             "final avg@4 (%)", column("eval/avg@4"), "last", 1, 100.0),
    Evidence("Dynamic sampling", "ablation/5_dapo", "ablation/4_token_loss",
             "avg@4 gain per million generated tokens (points)",
             lambda wide: gain_per_token(wide, "eval/avg@4"), "last", 1),
)


def gain_per_token(wide: pd.DataFrame, metric: str) -> pd.Series:
    """Accuracy points gained since step 0 per million tokens generated so far, at each step that evaluated.

    >>> wide = pd.DataFrame({"eval/avg@4": [0.5, math.nan, 0.75], "rollout/tokens": [math.nan, 1e6, 1e6]})
    >>> gain_per_token(wide, "eval/avg@4").tolist()  # +25 points over 2M tokens
    [nan, nan, 12.5]
    """
    acc = column(metric)(wide)
    tokens = column("rollout/tokens")(wide).fillna(0.0).cumsum()
    start = acc.dropna().iloc[0] if acc.notna().any() else math.nan
    return (100.0 * (acc - start) / (tokens / 1e6)).where(tokens > 0)


def run_values(df: pd.DataFrame, evidence: Evidence, by: str = "experiment") -> pd.Series:
    """One number per seed for ``evidence``'s ``row`` and ``base``: a Series indexed by ``(config, seed)``. A run that
    stopped before the others (an unfinished job of a sweep) is left out: its "last" value would be an earlier
    evaluation (with ``evaluation.interim_prompts``, step 0's) and its "late" half an earlier span."""
    both = df[df[by].isin([evidence.row, evidence.base])]
    if both.empty:
        return pd.Series(dtype=float)
    end = both["step"].max()
    out = {}
    for (config, seed, _run), runs in both.groupby([by, "seed", "run"], sort=True):
        if runs["step"].max() < end:
            continue
        wide = runs.pivot_table(index="step", columns="metric", values="value", aggfunc="last").sort_index()
        series = evidence.per_step(wide).dropna()
        if series.empty:
            value = math.nan
        elif evidence.over == "last":
            value = float(series.iloc[-1])
        elif evidence.over == "late":
            value = float(series[series.index > wide.index.max() / 2].mean())
        else:
            value = float(series.mean())
        out[(config, seed)] = value * evidence.scale
    return pd.Series(out, dtype=float)


def verdict(delta: float, ci: float, expect: int) -> str:
    """``yes`` when the interval of ``row − base`` excludes 0 on the paper's side, ``opposite`` when it excludes 0 on
    the other, else ``unresolved`` (also with one seed: no interval).

    >>> verdict(2.0, 1.0, 1), verdict(-2.0, 1.0, 1), verdict(2.0, 3.0, 1), verdict(-2.0, float("nan"), -1)
    ('yes', 'opposite', 'unresolved', 'unresolved')
    """
    if math.isnan(delta) or math.isnan(ci) or abs(delta) <= ci:
        return "unresolved"
    return "yes" if delta * expect > 0 else "opposite"


def mechanism_table(df: pd.DataFrame, evidence: Sequence[Evidence] = EVIDENCE, by: str = "experiment",
                    level: float = 0.95) -> pd.DataFrame:
    """One row per evidence whose row and base both ran: their means ± half-widths over seeds, the paired
    difference ``delta ± delta_ci`` over the seeds both have (``n``), and the verdict."""
    rows = []
    for ev in evidence:
        values = run_values(df, ev, by)
        if values.empty:
            continue
        row, base = values.get(ev.row), values.get(ev.base)
        if row is None or base is None:
            continue
        seeds = sorted(set(row.index) & set(base.index))
        delta, delta_ci, n = mean_ci([row[s] - base[s] for s in seeds], level)
        base_mean, base_ci, _ = mean_ci(base, level)
        row_mean, row_ci, _ = mean_ci(row, level)
        rows.append({"technique": ev.technique, "quantity": ev.quantity, "base": ev.base, "row": ev.row,
                     "base_mean": base_mean, "base_ci": base_ci, "row_mean": row_mean, "row_ci": row_ci,
                     "delta": delta, "delta_ci": delta_ci, "n": n, "expect": "+" if ev.expect > 0 else "−",
                     "verdict": verdict(delta, delta_ci, ev.expect)})
    return pd.DataFrame(rows)


def format_mechanisms(table: pd.DataFrame, floatfmt: str = ".2f") -> pd.DataFrame:
    """The table for reading: ``mean ± ci`` cells."""
    def pm(mean: float, ci: float, sign: bool = False) -> str:
        if math.isnan(mean):
            return ""
        text = format(mean, ("+" if sign else "") + floatfmt)
        return text if math.isnan(ci) else f"{text} ± {format(ci, floatfmt)}"

    return pd.DataFrame({
        "technique": table["technique"], "evidence": table["quantity"],
        "without": [pm(m, c) for m, c in zip(table["base_mean"], table["base_ci"])],
        "with": [pm(m, c) for m, c in zip(table["row_mean"], table["row_ci"])],
        "Δ (paired)": [pm(m, c, sign=True) for m, c in zip(table["delta"], table["delta_ci"])],
        "seeds": table["n"], "paper's sign": table["expect"], "shown": table["verdict"]})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The mechanism table of an ablation sweep.")
    parser.add_argument("runs_dir", help="the ablation multirun directory")
    parser.add_argument("--out", help="write mechanisms.md and mechanisms.csv here")
    args = parser.parse_args(argv)
    from dapo_lab.analysis import load_runs

    df = load_runs(args.runs_dir)
    table = mechanism_table(df)
    if table.empty:
        print(f"no ablation row and its base both ran under {args.runs_dir}", file=sys.stderr)
        return 1
    print_and_write(table, args.out, "mechanisms")
    return 0


def print_and_write(table: pd.DataFrame, out_dir: str | None, name: str) -> None:
    """Print ``table`` for reading and, with ``out_dir``, write ``<name>.md`` and ``<name>.csv`` there."""
    text = to_markdown(format_mechanisms(table))
    print(text)
    if out_dir:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.md").write_text(text + "\n")
        table.to_csv(out / f"{name}.csv", index=False)


if __name__ == "__main__":
    raise SystemExit(main())
