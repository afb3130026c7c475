"""From the tidy run table to the paper's shapes: final values, seed-averaged curves, the ablation table.

Everything here takes the frame of ``load_runs`` (``run``, config columns, ``seed``, ``step``, ``metric``,
``value``). A *configuration* is one value of the ``by`` column(s), ``experiment`` by default (the ablation
rows); the runs of one configuration are its seeds.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from dapo_lab.analysis.stats import ci_half_width, mean_ci

# Table 1 of the DAPO paper (AIME 2024 avg@32, Qwen2.5-32B), in its order. The soft-only variant is ours.
ORDER: tuple[str, ...] = (
    "ablation/0_grpo", "ablation/1_overlong_filter", "ablation/2_clip_higher", "ablation/3_soft_overlong",
    "ablation/3_soft_overlong_only", "ablation/4_token_loss", "ablation/5_dapo",
)
PAPER: dict[str, float] = {
    "ablation/0_grpo": 30, "ablation/1_overlong_filter": 36, "ablation/2_clip_higher": 38,
    "ablation/3_soft_overlong": 41, "ablation/4_token_loss": 42, "ablation/5_dapo": 50,
}
LABELS: dict[str, str] = {
    "ablation/0_grpo": "Naive GRPO",
    "ablation/1_overlong_filter": "+ Overlong Filtering",
    "ablation/2_clip_higher": "+ Clip-Higher",
    "ablation/3_soft_overlong": "+ Soft Overlong Punishment",
    "ablation/3_soft_overlong_only": "+ Soft Overlong Punishment instead of filtering (variant)",
    "ablation/4_token_loss": "+ Token-level Loss",
    "ablation/5_dapo": "+ Dynamic Sampling (DAPO)",
}
# The row each row adds one technique to (the table is cumulative; the variant branches off row 2).
PARENT: dict[str, str] = {
    "ablation/1_overlong_filter": "ablation/0_grpo", "ablation/2_clip_higher": "ablation/1_overlong_filter",
    "ablation/3_soft_overlong": "ablation/2_clip_higher", "ablation/3_soft_overlong_only": "ablation/2_clip_higher",
    "ablation/4_token_loss": "ablation/3_soft_overlong", "ablation/5_dapo": "ablation/4_token_loss",
}
_PERCENT = re.compile(r"/(avg@|pass@|maj@)|acc")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?( ± .*)?$")


def _select(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    sel = df[df["metric"] == metric]
    if sel.empty:
        raise KeyError(f"metric {metric!r} is not in the runs; present: {sorted(df['metric'].unique())}")
    return sel


def _by(df: pd.DataFrame, by: str | Sequence[str]) -> list[str]:
    cols = [by] if isinstance(by, str) else list(by)
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise KeyError(f"no column {missing} to group configurations by; columns: {list(df.columns)}")
    return cols


def default_metric(df: pd.DataFrame) -> str:
    """The first ``eval/avg@k`` metric present (smallest k), the table's default.

    >>> default_metric(pd.DataFrame({"metric": ["train/acc", "eval/avg@16", "eval/avg@4"]}))
    'eval/avg@4'
    """
    found = sorted({m for m in df["metric"].unique() if re.fullmatch(r"eval/avg@\d+", m)},
                   key=lambda m: int(m.rsplit("@", 1)[1]))
    if not found:
        raise ValueError(f"no eval/avg@k metric in the runs; present: {sorted(df['metric'].unique())}")
    return found[0]


def final_metric(df: pd.DataFrame, metric: str, how: str = "last") -> pd.DataFrame:
    """One row per run: ``metric`` at the last step it was logged (``how="last"``), or at its ``"first"``
    step, or its ``"max"`` / ``"min"`` over steps (``step`` says where). Columns as in ``df``."""
    sel = _select(df, metric)
    pick = {"last": ("step", "idxmax"), "first": ("step", "idxmin"),
            "max": ("value", "idxmax"), "min": ("value", "idxmin")}
    if how not in pick:
        raise ValueError(f"how must be one of {sorted(pick)}, got {how!r}")
    column, method = pick[how]
    index = getattr(sel.groupby("run")[column], method)()
    return sel.loc[index.to_numpy()].sort_values("run", kind="stable").reset_index(drop=True)


def curves(df: pd.DataFrame, metric: str, by: str | Sequence[str] = "experiment",
           level: float = 0.95) -> pd.DataFrame:
    """Per configuration and step: the seed mean, the t-interval half-width ``ci`` and its band ``lo``/``hi``
    (NaN where one seed logged that step), and ``n`` seeds. An empty config slot groups as ``"none"``."""
    cols = _by(df, by)
    sel = _select(df, metric).copy()
    sel[cols] = sel[cols].astype(object).where(sel[cols].notna(), "none")
    g = sel.groupby([*cols, "step"], sort=True)["value"].agg(["mean", "std", "count"]).reset_index()
    g["ci"] = [ci_half_width(s, int(n), level) for s, n in zip(g["std"], g["count"])]
    g["lo"], g["hi"] = g["mean"] - g["ci"], g["mean"] + g["ci"]
    return g.rename(columns={"count": "n"}).drop(columns="std")[[*cols, "step", "mean", "ci", "lo", "hi", "n"]]


def percent_scale(metric: str) -> float:
    """100 for accuracy-like metrics (the paper reports them in percent), else 1.

    >>> percent_scale("eval/avg@4"), percent_scale("train/acc"), percent_scale("train/entropy")
    (100.0, 100.0, 1.0)
    """
    return 100.0 if _PERCENT.search(metric) else 1.0


def _base(row: str, before: Sequence[str], parent: Mapping[str, str]) -> str | None:
    """The row ``row`` is compared with: its nearest ancestor in ``parent`` that is in the table (a sweep
    that skipped row 1 compares row 2 with row 0), else the previous row of the table.

    >>> _base("c", ["a"], {"c": "b", "b": "a"}), _base("z", ["a", "c"], {}), _base("a", [], {})
    ('a', 'c', None)
    """
    node = parent.get(row)
    while node is not None and node not in before:
        node = parent.get(node)
    return node if node is not None else (before[-1] if before else None)


def ablation_table(df: pd.DataFrame, metric: str, rows: Sequence[str] | None = ORDER,
                   paper: Mapping[str, float] = PAPER, *, how: str = "last", by: str = "experiment",
                   parent: Mapping[str, str] = PARENT, labels: Mapping[str, str] = LABELS,
                   scale: float | None = None, level: float = 0.95) -> pd.DataFrame:
    """The paper's Table 1 shape: one row per configuration, in ``rows`` order (those that ran; ``None``:
    every configuration present), with the final ``metric`` over seeds: ``mean``, t-interval half-width
    ``ci`` (NaN with one seed), ``n`` seeds, ``delta`` to the row it builds on (``vs``: its nearest
    ``parent`` ancestor in the table, else the previous row), and the paper's number and delta (same
    ``vs``). Values are multiplied by ``scale`` (default ``percent_scale(metric)``: accuracies in percent,
    like the paper)."""
    finals = final_metric(df, metric, how=how)
    _by(finals, by)
    dup = finals.groupby(by, dropna=False)["seed"].apply(lambda s: s.duplicated().any())
    if dup.any():
        warnings.warn(f"configurations {list(dup[dup].index)} have several runs with the same seed (two sweeps "
                      "under one root?): they are pooled as if independent", UserWarning, stacklevel=2)
    present = list(dict.fromkeys(finals[by].dropna()))
    order = [r for r in rows if r in present] if rows is not None else (
        [r for r in ORDER if r in present] + sorted(r for r in present if r not in ORDER))
    scale = percent_scale(metric) if scale is None else scale
    out = []
    for i, row in enumerate(order):
        mean, ci, n = mean_ci(finals.loc[finals[by] == row, "value"] * scale, level)
        out.append({by: row, "label": labels.get(row, row), "n": n, "mean": mean, "ci": ci,
                    "vs": _base(row, order[:i], parent), "paper": float(paper.get(row, math.nan))})
    table = pd.DataFrame(out, columns=[by, "label", "n", "mean", "ci", "vs", "paper"])
    means = dict(zip(table[by], table["mean"]))
    table["delta"] = [m - means.get(v, math.nan) if isinstance(v, str) else math.nan
                      for m, v in zip(table["mean"], table["vs"])]
    table["paper_delta"] = [p - paper.get(v, math.nan) if isinstance(v, str) else math.nan
                            for p, v in zip(table["paper"], table["vs"])]
    table.attrs.update(metric=metric, how=how, scale=scale, level=level)
    return table[[by, "label", "n", "mean", "ci", "delta", "vs", "paper", "paper_delta"]]


def _cell(value: object, floatfmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, float):
        return format(value, floatfmt)
    return str(value).replace("|", "\\|").replace("\n", " ")


def to_markdown(table: pd.DataFrame, floatfmt: str = ".1f", index: bool = False) -> str:
    """A GitHub-flavoured markdown table (no ``tabulate`` needed); NaN blank; numbers, and text columns
    holding only numbers (``"+1.5"``, ``"41.2 ± 3.0"``), right-aligned.

    >>> print(to_markdown(pd.DataFrame({"row": ["a", "b|c"], "x": [1.25, float("nan")], "n": [3, 1]})))
    | row | x | n |
    |:--|--:|--:|
    | a | 1.2 | 3 |
    | b\\|c |  | 1 |
    """
    frame = table.reset_index() if index else table
    numeric = [(pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c]))
               or (len(frame) > 0 and frame[c].map(lambda v: isinstance(v, str) and (
                   v == "" or _NUMBER.match(v) is not None)).all() and (frame[c] != "").any())
               for c in frame.columns]
    lines = ["| " + " | ".join(_cell(str(c), floatfmt) for c in frame.columns) + " |",
             "|" + "|".join("--:" if num else ":--" for num in numeric) + "|"]
    for values in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v.item() if hasattr(v, "item") else v, floatfmt)
                                        for v in values) + " |")
    return "\n".join(lines)


def format_ablation(table: pd.DataFrame, floatfmt: str = ".1f") -> pd.DataFrame:
    """The ablation table for reading: ``mean ± ci`` in one column, signed deltas, the paper beside it."""
    metric = table.attrs.get("metric", "metric")
    unit = " (%)" if table.attrs.get("scale") == 100.0 else ""

    def pm(mean: float, ci: float) -> str:
        if math.isnan(mean):
            return ""
        return format(mean, floatfmt) + ("" if math.isnan(ci) else " ± " + format(ci, floatfmt))

    def signed(x: float, fmt: str = floatfmt) -> str:
        return "" if math.isnan(x) else format(x, "+" + fmt)

    level = round(100 * table.attrs.get("level", 0.95))
    return pd.DataFrame({
        "configuration": table["label"],
        f"{metric}{unit}, mean ± {level}% CI": [pm(m, c) for m, c in zip(table["mean"], table["ci"])],
        "seeds": table["n"],
        "Δ": [signed(d) for d in table["delta"]],
        "paper": [_cell(p, ".0f") for p in table["paper"]],
        "paper Δ": [signed(d, "g") for d in table["paper_delta"]],
    })


def write_ablation_table(df: pd.DataFrame, out_dir: str | Path, metric: str | None = None,
                         **kwargs: object) -> tuple[pd.DataFrame, dict[str, Path]]:
    """Compute the ablation table (``metric`` default: ``default_metric(df)``) and write
    ``ablation_table.md`` (for reading) and ``ablation_table.csv`` (the numbers) under ``out_dir``."""
    table = ablation_table(df, metric or default_metric(df), **kwargs)  # type: ignore[arg-type]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "ablation_table.md", "csv": out / "ablation_table.csv"}
    attrs = table.attrs
    what = {"last": "at the last logged step", "first": "at the first logged step"}.get(attrs["how"],
                                                                                  f"{attrs['how']} over steps")
    note = (f"Final `{attrs['metric']}` ({what}) over seeds; Δ: change from the row it builds on; "
            "paper: DAPO Table 1 (AIME 2024 avg@32, Qwen2.5-32B).")
    skipped = [r for r in kwargs.get("rows", ORDER) or () if r not in set(table[kwargs.get("by", "experiment")])]
    if skipped:
        note += f"\n\nNot in these runs: {', '.join(skipped)} (Δ compares with the nearest earlier row that ran)."
    paths["md"].write_text(to_markdown(format_ablation(table)) + "\n\n" + note + "\n")
    table.to_csv(paths["csv"], index=False)
    return table, paths
