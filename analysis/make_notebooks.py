"""Write the analysis notebooks (``entropy.ipynb``, ``accuracy.ipynb``) from this file: their source of truth.

    python analysis/make_notebooks.py

The notebooks stay thin (each cell calls ``dapo_lab.analysis``) and output-free in git. Each has a cell
tagged ``parameters`` (``runs_dir``, ``out_dir``), so papermill or ``python -m dapo_lab.analysis.notebooks
analysis/entropy.ipynb runs_dir=DIR out_dir=DIR`` runs it on other runs. Relative defaults are relative to
this folder, where Jupyter runs a notebook.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

PARAMETERS = '''\
runs_dir = "../multirun/ablation"  # a multirun directory, one run directory, or a parent of several
out_dir = "../experiments/results/ablation"  # where the figures and tables go'''

LOAD = '''\
from IPython.display import Image, Markdown, display

from dapo_lab.analysis import {names}
from dapo_lab.analysis.plots import save_figures

runs = load_runs(runs_dir)  # one row per run x step x metric
runs.groupby("experiment", dropna=False)["seed"].agg(["nunique", "unique"])'''

RUN_WITH = ("Run on other runs: `python -m dapo_lab.analysis.notebooks analysis/{name}.ipynb runs_dir=DIR "
            "out_dir=DIR` (or papermill with `-p runs_dir DIR`).")

NOTEBOOKS: dict[str, list[tuple[str, str]]] = {
    "entropy": [
        ("md", "# Entropy across the ablation\n\nClip-higher (paper §3.1, Fig. 2): with the symmetric clip the "
               "policy's entropy collapses and exploration stops; a larger `eps_high` keeps it up. Entropy is "
               "computed from the logits over response tokens (`train/entropy`); `actor/clipfrac_high` shows how "
               "often the upper clip binds.\n\n" + RUN_WITH.format(name="entropy")),
        ("parameters", PARAMETERS),
        ("code", LOAD.format(names="ablation_table, format_ablation, load_runs, to_markdown")),
        ("code", 'figures = save_figures(runs, out_dir, names=["entropy", "clipping"])\n'
                 'for figure in figures.values():\n'
                 '    display(Image(filename=str(figure)))'),
        ("md", "The paper's Figure 3 view: `actor/clipfrac_high_lowprob` is the share of tokens stopped by the upper "
               "clip whose probability under π_old was below 0.2; its ratio to `actor/clipfrac_high` says whether the "
               "clip binds mostly on unlikely tokens. The mechanism table (`python -m dapo_lab.analysis.mechanisms`) "
               "gives each technique's evidence with paired seed intervals."),
        ("md", "Final entropy per configuration (mean ± 95% CI over seeds, t-distribution):"),
        ("code", 'entropy = ablation_table(runs, "train/entropy", paper={})\n'
                 "display(Markdown(to_markdown(format_ablation(entropy, floatfmt='.3f'))))"),
    ],
    "accuracy": [
        ("md", "# Accuracy: the ablation table (paper Table 1) and curves\n\nFinal evaluation accuracy per "
               "configuration, mean ± 95% CI over seeds, beside the paper's AIME 2024 avg@32 numbers "
               "(Qwen2.5-32B: compare the deltas, not the levels).\n\n" + RUN_WITH.format(name="accuracy")),
        ("parameters", PARAMETERS),
        ("code", LOAD.format(names="default_metric, format_ablation, load_runs, to_markdown, write_ablation_table")),
        ("code", "metric = default_metric(runs)  # the first eval/avg@k\n"
                 "table, paths = write_ablation_table(runs, out_dir, metric)\n"
                 "display(Markdown(to_markdown(format_ablation(table))))"),
        ("code", 'names = ["accuracy", "response_length", "reward", "mechanisms"]\n'
                 "figures = save_figures(runs, out_dir, names=names)\n"
                 "for path in figures.values():\n"
                 "    display(Image(filename=str(path)))"),
        ("md", "## Each technique's mechanism\n\nFor each technique, the quantity that shows what it is for, in the "
               "row that adds it against the row it builds on: seed means ± 95% CI, the difference paired by seed, "
               "and whether it has the paper's sign with an interval that excludes 0."),
        ("code", "from dapo_lab.analysis.mechanisms import format_mechanisms, mechanism_table\n\n"
                 "mechanisms = mechanism_table(runs)\n"
                 "display(Markdown(to_markdown(format_mechanisms(mechanisms)) if not mechanisms.empty\n"
                 "                 else 'No ablation row ran together with the row it builds on.'))"),
    ],
}


def build(name: str) -> nbformat.NotebookNode:
    """The notebook ``name`` as an output-free ``NotebookNode`` with stable cell ids."""
    cells = []
    for i, (kind, source) in enumerate(NOTEBOOKS[name]):
        if kind == "md":
            cell = new_markdown_cell(source)
        else:
            cell = new_code_cell(source, metadata={"tags": ["parameters"]} if kind == "parameters" else {})
        cell.id = f"{name}-{i}"
        cells.append(cell)
    return new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
        "language_info": {"name": "python"},
    })


def main() -> None:
    for name in NOTEBOOKS:
        path = HERE / f"{name}.ipynb"
        nbformat.write(build(name), path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
