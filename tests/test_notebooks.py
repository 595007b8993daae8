"""Execute every notebook in notebooks/ top to bottom, as a reader would; each asserts the numbers its prose claims.

The notebooks are committed without outputs (checked here too), so what a reader sees is always what this run
produced. Each runs in a fresh kernel of *this* interpreter, in an empty working directory that is not notebooks/:
a notebook needs only the installed package, wherever it is opened from.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow  # executes every notebook (about a minute and a half on 2 cores)

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = ("01_logistic_regression", "02_softmax_mnist", "03_kernels", "04_documents")
CELL_TIMEOUT_SECONDS = 300
# A kernelspec of our own, so the kernel is this interpreter even where a user-wide "python3" spec points elsewhere.
KERNEL_NAME = "linclass-gpu-tests"


@pytest.fixture
def this_interpreter_kernel(tmp_path, monkeypatch) -> str:
    """Register a kernelspec running ``sys.executable`` (in a temporary Jupyter path) and return its name."""
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "linclass_gpu tests", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return KERNEL_NAME


def test_every_notebook_is_tested():
    assert sorted(path.stem for path in NOTEBOOK_DIR.glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_without_outputs(name):
    path = NOTEBOOK_DIR / f"{name}.ipynb"
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, (
                f"{path.name}: strip the outputs before committing")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_uses_only_the_installed_package(name):
    """Nothing from the repository's other folders (tests/ helpers on sys.path, paths relative to notebooks/)."""
    notebook = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    code = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    for pattern in (r"sys\.path", r"\bPath\.cwd\(\)", r"\.\./", r"^\s*(from|import)\s+(tests|tolerances)\b"):
        assert not re.search(pattern, code, flags=re.MULTILINE), f"{name}.ipynb: {pattern!r} ties it to the repository"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes(name, this_interpreter_kernel, tmp_path):
    path = NOTEBOOK_DIR / f"{name}.ipynb"
    notebook = nbformat.read(path, as_version=4)
    working_directory = tmp_path / "elsewhere"  # not notebooks/, and not below it
    working_directory.mkdir()
    client = NotebookClient(notebook, timeout=CELL_TIMEOUT_SECONDS, kernel_name=this_interpreter_kernel,
                            resources={"metadata": {"path": str(working_directory)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, when a cell (an assert) fails
    # An error while *displaying* a result (a figure that fails to render) is recorded but does not stop execution.
    errors = [f"{output.ename}: {output.evalue}" for cell in notebook.cells if cell.cell_type == "code"
              for output in cell.outputs if output.output_type == "error"]
    assert not errors, f"{path.name}: {errors}"
