"""The notebooks under docs/notebooks execute from top to bottom, hidden solutions included, so a stale
solution fails here (nbclient with the current interpreter's Jupyter kernel)."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebooks extra is not installed (pip install -e '.[notebooks]')")
nbclient = pytest.importorskip("nbclient", reason="the notebooks extra is not installed (pip install -e '.[notebooks]')")
pytest.importorskip("ipykernel", reason="the notebooks extra is not installed (pip install -e '.[notebooks]')")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "docs" / "notebooks").glob("*.ipynb"))


def test_there_are_three_notebooks() -> None:
    assert [p.name for p in NOTEBOOKS] == ["01-secure-aggregation-by-hand.ipynb", "02-communication-overhead.ipynb",
                                           "03-robust-aggregation.ipynb"]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes_with_its_hidden_solutions(path: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    solutions = [c for c in nb.cells if "solution" in c.metadata.get("tags", [])]
    # exercises whose solutions are code cells, collapsed (hidden source) but executed below
    assert len(solutions) >= 2
    assert all(c.cell_type == "code" and c.metadata["jupyter"]["source_hidden"] for c in solutions)
    assert all("assert" in c.source for c in solutions)  # each solution checks its own answer
    monkeypatch.delenv("MPLBACKEND", raising=False)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert all(c.execution_count for c in nb.cells if c.cell_type == "code")
