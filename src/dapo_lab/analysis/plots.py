"""Training curves from the tidy run table: one line per configuration, the seeds' 95% CI as a band.

Figures are built with ``matplotlib.figure.Figure`` and saved through the Agg canvas, never through
``pyplot``: no global figure registry to leak from loops, no backend to select, and the same code works in a
script, a test and a notebook.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from dapo_lab.analysis.tables import LABELS, ORDER, curves

# figure name -> metric patterns (fnmatch), one panel per metric present
FIGURES: dict[str, tuple[str, ...]] = {
    "entropy": ("train/entropy", "actor/clipfrac_high", "actor/clipfrac_low"),
    # eval_interim/*: every evaluation point on the interim subset (evaluation.interim_prompts); eval/*: the whole
    # split, at the evaluations that covered it
    "accuracy": ("eval_interim/avg@*", "eval/avg@*", "eval/pass@*", "eval_interim/greedy_acc", "eval/greedy_acc",
                 "train/acc"),
    "response_length": ("rollout/response_len_mean", "eval/response_len_mean", "rollout/truncated_frac"),
    "reward": ("train/reward_mean", "rollout/reward_mean", "rollout/acc"),
    # the paper's Figure 3 view: how often the upper clip binds, and on unlikely tokens (pi_old < 0.2)
    "clipping": ("actor/clipfrac_high", "actor/clipfrac_high_lowprob", "actor/clipfrac_low", "actor/ppo_kl"),
    # what the other techniques act on: long responses' loss weight, informative groups, filtered responses
    "mechanisms": ("train/long_response_weight", "sampling/informative_group_frac", "overlong/filtered_frac",
                   "sampling/num_gen_batches"),
}


def match_metrics(df: pd.DataFrame, patterns: Sequence[str]) -> list[str]:
    """The metrics of ``df`` matching ``patterns``, in pattern order.

    >>> match_metrics(pd.DataFrame({"metric": ["eval/avg@4", "train/acc", "eval/avg@16"]}), ["eval/avg@*"])
    ['eval/avg@4', 'eval/avg@16']
    """
    present = list(dict.fromkeys(df["metric"]))
    out: list[str] = []
    for pattern in patterns:
        hits = sorted(fnmatch.filter(present, pattern), key=lambda m: (len(m), m))
        out += [m for m in hits if m not in out]
    return out


def _order(keys: Sequence[str]) -> list[str]:
    return [k for k in ORDER if k in keys] + sorted(k for k in keys if k not in ORDER)


def plot_curves(df: pd.DataFrame, metric: str, ax: Axes, by: str = "experiment", level: float = 0.95) -> Axes:
    """One line per configuration of ``metric`` over steps on ``ax``, with the seed CI band."""
    c = curves(df, metric, by=by, level=level)
    keys = _order(list(dict.fromkeys(c[by])))
    for i, key in enumerate(keys):
        part = c[c[by] == key]
        color = f"C{ORDER.index(key) if key in ORDER else len(ORDER) + i}"
        n = int(part["n"].max())
        ax.plot(part["step"], part["mean"], color=color, marker="." if len(part) < 30 else None,
                label=f"{LABELS.get(key, key)} (n={n})")
        if part["ci"].notna().any():
            ax.fill_between(part["step"], part["lo"], part["hi"], color=color, alpha=0.2, linewidth=0)
    ax.set_title(metric)
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    return ax


def figure(df: pd.DataFrame, metrics: Sequence[str], title: str | None = None, by: str = "experiment",
           ncols: int = 2) -> Figure:
    """A grid of ``plot_curves`` panels, one per metric, with one shared legend."""
    if not metrics:
        raise ValueError("no metric to plot")
    ncols = min(ncols, len(metrics))
    nrows = -(-len(metrics) // ncols)
    fig = Figure(figsize=(5.5 * ncols, 3.6 * nrows + 0.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, metric in zip(axes, metrics):
        plot_curves(df, metric, ax, by=by)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(3, len(labels)), fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def save_figures(df: pd.DataFrame, out_dir: str | Path, names: Sequence[str] | None = None,
                 by: str = "experiment", dpi: int = 120) -> dict[str, Path]:
    """Write ``<name>.png`` under ``out_dir`` for each figure of ``FIGURES`` (or ``names``) that has at least
    one of its metrics in the runs; returns ``name -> path``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in names or FIGURES:
        metrics = match_metrics(df, FIGURES[name])
        if not metrics:
            continue
        fig = figure(df, metrics, title=name.replace("_", " "), by=by)
        path = out / f"{name}.png"
        fig.savefig(path, dpi=dpi)
        written[name] = path
    return written
