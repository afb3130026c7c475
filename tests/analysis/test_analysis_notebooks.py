"""The analysis notebooks: thin, output-free, generated, and executable on other runs with a venv kernel."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")

from dapo_lab.analysis.notebooks import execute_notebook, main  # noqa: E402

ANALYSIS = Path(__file__).resolve().parents[2] / "analysis"
NOTEBOOKS = ("entropy", "accuracy")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _generator():
    spec = importlib.util.spec_from_file_location("make_notebooks", ANALYSIS / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_thin_output_free_and_generated(name):
    nb = nbformat.read(ANALYSIS / f"{name}.ipynb", as_version=4)
    assert nb == _generator().build(name), "regenerate with: python analysis/make_notebooks.py"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "runs_dir = " in params[0].source and "out_dir = " in params[0].source
    assert sum(len(c.source.splitlines()) for c in code) < 25  # logic lives in dapo_lab.analysis


EXPECTED = {
    "entropy": ["entropy.png", "clipping.png"],
    "accuracy": ["ablation_table.md", "ablation_table.csv", "accuracy.png", "response_length.png", "reward.png",
                 "mechanisms.png"],
}


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes_on_other_runs(name, kernel, fake_multirun, tmp_path):
    runs_dir, out_dir = fake_multirun, tmp_path / "out"
    nb = nbformat.read(ANALYSIS / f"{name}.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    copy = tmp_path / f"{name}.ipynb"
    nbformat.write(nb, copy)

    done = execute_notebook(copy, {"runs_dir": str(runs_dir), "out_dir": str(out_dir)}, cwd=ANALYSIS,
                            kernel_name=kernel, output=tmp_path / f"{name}.out.ipynb", timeout=300)
    assert done.cells[2].metadata.tags == ["injected-parameters"]  # right after the parameters cell
    assert done.cells[-1].outputs[0].text.strip() == sys.executable
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(EXPECTED[name])
    for path in out_dir.glob("*.png"):
        assert path.read_bytes().startswith(PNG_MAGIC) and path.stat().st_size > 10_000
    images = [o for c in done.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == len([p for p in EXPECTED[name] if p.endswith(".png")])
    if name == "accuracy":
        table = (out_dir / "ablation_table.md").read_text()
        assert "| Naive GRPO |" in table and "| + Clip-Higher |" in table


def test_notebook_runner_refuses_to_write_over_the_source_and_checks_usage(tmp_path, capsys):
    with pytest.raises(ValueError, match="refusing to write outputs over the source"):
        execute_notebook(ANALYSIS / "entropy.ipynb", {}, output=ANALYSIS / "entropy.ipynb", kernel_name="nope")
    assert main(["analysis/entropy.ipynb", "runs_dir"]) == 2
    assert "python -m dapo_lab.analysis.notebooks" in capsys.readouterr().err
