"""Analysis of runs: Hydra run directories → one tidy table → the ablation table, curves and figures.

Plotting (``dapo_lab.analysis.plots``) and notebook execution (``dapo_lab.analysis.notebooks``) need the
``analysis`` extra (matplotlib, nbclient); they are not imported here, so loading runs needs only pandas.
"""

from dapo_lab.analysis.runs import (
    MissingMetricsWarning,
    find_run_dirs,
    load_runs,
    load_wandb_offline,
    read_metrics_csv,
    run_config,
)
from dapo_lab.analysis.stats import mean_ci, t_quantile
from dapo_lab.analysis.sweeps import IncompleteSweepWarning, describe, expected_jobs, missing_runs, sweep_status
from dapo_lab.analysis.tables import (
    LABELS,
    ORDER,
    PAPER,
    PARENT,
    ablation_table,
    curves,
    default_metric,
    final_metric,
    format_ablation,
    to_markdown,
    write_ablation_table,
)

__all__ = [
    "LABELS", "ORDER", "PAPER", "PARENT", "IncompleteSweepWarning", "MissingMetricsWarning", "ablation_table",
    "curves", "default_metric", "describe", "expected_jobs", "final_metric", "find_run_dirs", "format_ablation",
    "load_runs", "load_wandb_offline", "mean_ci", "missing_runs", "read_metrics_csv", "run_config", "sweep_status",
    "t_quantile", "to_markdown", "write_ablation_table",
]
