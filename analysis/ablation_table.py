"""The DAPO ablation table (paper Table 1) from a Hydra multirun directory.

    python analysis/ablation_table.py multirun/ablation/cpu_ablation --out experiments/results/ablation

Prints the table and writes ``ablation_table.md`` and ``ablation_table.csv`` under ``--out`` (default: the
multirun directory); ``--figures`` also writes the training-curve PNGs there. Runs of the sweep that have not
finished (an interrupted sweep: re-run its command to finish them) are listed and left out of the table, whose
"last" value would otherwise be an earlier evaluation; ``--include-unfinished`` keeps them.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from dapo_lab.analysis import (
    ORDER,
    IncompleteSweepWarning,
    describe,
    format_ablation,
    load_runs,
    missing_runs,
    to_markdown,
    write_ablation_table,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", help="a multirun directory, one run directory, or a parent of several")
    parser.add_argument("--metric", help="metric to tabulate (default: the first eval/avg@k present)")
    parser.add_argument("--how", default="last", choices=["last", "max", "min", "first"],
                        help="which value of each run: at its last logged step (default), or its max/min")
    parser.add_argument("--out", help="output directory (default: RUNS_DIR)")
    parser.add_argument("--figures", action="store_true", help="also write the training-curve figures")
    parser.add_argument("--include-unfinished", action="store_true",
                        help="keep the runs of the sweep that have not finished (default: listed, left out)")
    args = parser.parse_args(argv)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IncompleteSweepWarning)  # listed below, with what is done about them
        df = load_runs(args.runs_dir)
    unfinished = missing_runs(args.runs_dir)
    if not unfinished.empty:
        what = "kept in" if args.include_unfinished else "left out of"
        print(f"{len(unfinished)} run(s) not finished, {what} the table (re-run the sweep's command to finish them):",
              file=sys.stderr)
        print("\n".join(f"  {line}" for line in describe(unfinished)), file=sys.stderr)
        if not args.include_unfinished:
            df = df[~df["run"].isin(set(unfinished["run"].dropna()))]
    if df.empty:
        print(f"no metrics under {args.runs_dir}", file=sys.stderr)
        return 1
    table, paths = write_ablation_table(df, args.out or args.runs_dir, args.metric, how=args.how)
    missing = [r for r in ORDER if r not in set(table["experiment"])]
    print(to_markdown(format_ablation(table)))
    if missing:
        print(f"\nnot in these runs: {', '.join(missing)}", file=sys.stderr)
    written = list(paths.values())
    if args.figures:
        from dapo_lab.analysis.plots import save_figures

        written += list(save_figures(df, args.out or args.runs_dir).values())
    print("\nwrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
