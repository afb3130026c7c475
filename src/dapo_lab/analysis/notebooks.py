"""Execute an analysis notebook with other parameters, papermill-style, without papermill.

The notebooks keep a cell tagged ``parameters`` (``runs_dir``, ``out_dir``); a new cell tagged
``injected-parameters`` with the given values is inserted right after it, as papermill does, so
``papermill nb.ipynb out.ipynb -p runs_dir DIR`` works the same way where papermill is installed.

    python -m dapo_lab.analysis.notebooks analysis/entropy.ipynb runs_dir=multirun/ablation/X out_dir=/tmp/o
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def inject_parameters(nb: Any, parameters: Mapping[str, Any]) -> Any:
    """Insert an ``injected-parameters`` cell after the ``parameters`` cell (or first, if none); in place."""
    import nbformat

    source = "# Parameters\n" + "".join(f"{name} = {value!r}\n" for name, value in parameters.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    cell.id = "injected-parameters"
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    nb.cells.insert(tagged[0] + 1 if tagged else 0, cell)
    return nb


def execute_notebook(path: str | Path, parameters: Mapping[str, Any] | None = None, *,
                     output: str | Path | None = None, cwd: str | Path | None = None,
                     kernel_name: str = "python3", timeout: int = 600) -> Any:
    """Run the notebook at ``path`` with ``parameters`` injected, in ``cwd`` (default: its folder); write the
    executed copy to ``output`` if given (never over the clean source); return the executed notebook."""
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    if output is not None and Path(output).resolve() == path.resolve():
        raise ValueError("refusing to write outputs over the source notebook (keep notebooks output-free)")
    nb = inject_parameters(nbformat.read(path, as_version=4), parameters or {})
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name,
                            resources={"metadata": {"path": str(Path(cwd) if cwd else path.parent)}})
    client.execute()
    if output is not None:
        nbformat.write(nb, output)
    return nb


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or any("=" not in a for a in args[1:]):
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    notebook, *pairs = args
    # paths given here are relative to the caller's directory; the notebook runs in its own folder
    params = {k: str(Path(v).resolve()) if k.endswith("_dir") else v for k, v in (a.split("=", 1) for a in pairs)}
    out = Path(params.get("out_dir", ".")) / Path(notebook).name
    out.parent.mkdir(parents=True, exist_ok=True)
    execute_notebook(notebook, params, output=out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
