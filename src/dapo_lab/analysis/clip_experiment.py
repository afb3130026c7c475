"""Clip-Higher's focused experiment (``sweep=clip_higher``): updates per rollout step x symmetric / higher clip.

    python -m dapo_lab.analysis.clip_experiment multirun/clip_higher/cpu [--out DIR]

Each run is a *setting* ``"<updates> updates/<clip>"`` (updates per step read from the logged
``actor/num_updates``; the clip from the run's config). For every number of updates, the table compares Clip-Higher
with the symmetric clip as :mod:`dapo_lab.analysis.mechanisms` compares ablation rows: per-run evidence, seed means
± t-intervals, the difference paired by seed, and whether it has the paper's sign. ``--out`` also writes the entropy
and clip-fraction curves by setting.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from dapo_lab.analysis.mechanisms import Evidence, PerStep, column, mechanism_table, print_and_write, ratio


def with_settings(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` plus ``updates`` (the run's median ``actor/num_updates``) and ``setting`` (``"<updates> updates/<clip>"``)
    columns; runs that logged no update are left out.

    >>> df = pd.DataFrame({"run": ["a", "a", "b"], "clip": ["higher"] * 3, "seed": [1] * 3, "step": [1, 1, 1],
    ...                    "metric": ["actor/num_updates", "train/entropy", "train/entropy"], "value": [4, 0.3, 0.2]})
    >>> with_settings(df)["setting"].tolist()
    ['4 updates/higher', '4 updates/higher']
    """
    updates = df[df["metric"] == "actor/num_updates"].groupby("run")["value"].median().round().astype(int)
    out = df[df["run"].isin(updates.index)].copy()
    out["updates"] = out["run"].map(updates)
    out["setting"] = [f"{u} updates/{c}" for u, c in zip(out["updates"], out["clip"])]
    return out


def change_from_start(name: str, window: int = 10) -> PerStep:
    """A metric's mean over the last ``window`` steps so far, as a % change from its mean over the run's first
    ``window`` steps: how far entropy has fallen (collapse) or risen since the start, at each step.

    >>> wide = pd.DataFrame({"e": [0.2, 0.2, 0.1, 0.1]})
    >>> change_from_start("e", window=2)(wide).round(6).tolist()
    [nan, 0.0, -25.0, -50.0]
    """
    def per_step(wide: pd.DataFrame) -> pd.Series:
        values = column(name)(wide)
        start = values.dropna().iloc[:window].mean()
        return 100.0 * (values.rolling(window, min_periods=window).mean() / start - 1.0)
    return per_step


def evidence_for(updates: int) -> list[Evidence]:
    """Clip-Higher against the symmetric clip at ``updates`` updates per step: what the clip does and what it is for."""
    row, base = f"{updates} updates/higher", f"{updates} updates/symmetric"
    technique = f"Clip-Higher, {updates} update{'s' if updates != 1 else ''}/step"
    return [
        Evidence(technique, row, base, "policy entropy, second half (nats/token)", column("train/entropy"), "late", 1),
        Evidence(technique, row, base, "entropy change, last 10 vs first 10 steps (%)",
                 change_from_start("train/entropy"), "last", 1),
        Evidence(technique, row, base, "upper clip binds (% of tokens)", column("actor/clipfrac_high"), "mean", -1,
                 100.0),
        Evidence(technique, row, base, "up-clipped tokens with π_old < 0.2 (% of them)",
                 ratio("actor/clipfrac_high_lowprob", "actor/clipfrac_high"), "last", 1, 100.0),
        Evidence(technique, row, base, "mean π_old of up-clipped tokens", ratio("actor/clipprob_high",
                                                                                 "actor/clipfrac_high"), "last", -1),
        Evidence(technique, row, base, "final avg@4 (%)", column("eval/avg@4"), "last", 1, 100.0),
    ]


def clip_table(df: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """The comparison at every number of updates per step present in ``df`` (the frame of ``load_runs``)."""
    runs = with_settings(df)
    evidence = [e for u in sorted(runs["updates"].unique()) for e in evidence_for(int(u))]
    return mechanism_table(runs, evidence, by="setting", level=level)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Clip-Higher's focused experiment: the table and the curves.")
    parser.add_argument("runs_dir", help="the sweep=clip_higher multirun directory")
    parser.add_argument("--out", help="write clip_higher.md, clip_higher.csv and the curves here")
    args = parser.parse_args(argv)
    from dapo_lab.analysis import load_runs

    df = load_runs(args.runs_dir)
    table = clip_table(df)
    if table.empty:
        print(f"no setting ran with both clips under {args.runs_dir}", file=sys.stderr)
        return 1
    print_and_write(table, args.out, "clip_higher")
    if args.out:
        out = Path(args.out)
        from dapo_lab.analysis.plots import figure, match_metrics

        runs = with_settings(df)
        for name, patterns in {"entropy": ["train/entropy", "eval_interim/avg@*", "eval/avg@*"],
                               "clip_fractions": ["actor/clipfrac_high", "actor/clipfrac_high_lowprob",
                                                  "actor/clipfrac_low"]}.items():
            if metrics := match_metrics(runs, patterns):
                figure(runs, metrics, title=name, by="setting").savefig(out / f"clip_{name}.png", dpi=120)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
