"""The notebooks run top to bottom against the emulator, and are committed without outputs.

Each notebook starts its own emulator, so no token or network is needed. The kernel
inherits this process's environment, including the fast ``PROLIFIC_POLL_INTERVAL`` and
the isolated ``PROLIFIC_INGEST_CACHE`` set by ``conftest.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = ["01-quickstart", "02-annotation-analysis", "03-data-lake"]


def _code_cells(nb: Any) -> list[Any]:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def test_the_notebooks_are_all_there() -> None:
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert nb.cells[0].cell_type == "markdown", "a notebook starts by saying what it shows"
    cells = _code_cells(nb)
    assert cells
    dirty = [i for i, cell in enumerate(cells) if cell.outputs or cell.execution_count is not None]
    assert dirty == [], f"code cells {dirty} of {path.name} have outputs: clear them"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_without_errors(path: Path, tmp_path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=120,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    cells = _code_cells(nb)
    assert all(cell.execution_count is not None for cell in cells)
    outputs = [output for cell in cells for output in cell.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    assert errors == []
    stderr = [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    assert stderr == [], "the notebook wrote to stderr (a warning?)"
    assert any(o.output_type in ("execute_result", "display_data") for o in outputs)
    assert list(tmp_path.iterdir()) == [], "the notebook left files in its working directory"
