"""notebooks/colab.ipynb: committed as notebooks/make_colab.py writes it, and
runs top to bottom on CPU in a kernel of this interpreter (GEN_NOTEBOOK_TINY=1:
8x8 digits, 40 steps per model)."""

import importlib.util
import json
import os
import sys

import nbclient
import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

from tests.helpers import subprocess_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "colab.ipynb")


def _generator():
  spec = importlib.util.spec_from_file_location(
      "make_colab", os.path.join(ROOT, "notebooks", "make_colab.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_committed_notebook_is_what_the_generator_writes():
  with open(NOTEBOOK) as file:
    committed = file.read()
  assert committed == _generator().render(), (
      "notebooks/colab.ipynb differs from notebooks/make_colab.py: run "
      "python notebooks/make_colab.py")
  notebook = nbformat.reads(committed, as_version=4)
  nbformat.validate(notebook)
  for cell in notebook.cells:
    if cell.cell_type == "code":
      assert cell.outputs == [] and cell.execution_count is None, cell.id


def _runs_this_python(argv0: str) -> bool:
  # jupyter_client starts a spec whose argv[0] is a bare "python", "python3" or
  # "python3.11" with its own sys.executable.
  bare = {"python", f"python{sys.version_info[0]}", "python%d.%d" % sys.version_info[:2]}
  return argv0 in bare or os.path.realpath(argv0) == os.path.realpath(sys.executable)


def _use_this_python(tmp_path, monkeypatch) -> None:
  """Makes the "python3" kernel this interpreter (the venv's), registering nothing globally."""
  try:
    argv0 = KernelSpecManager().get_kernel_spec("python3").argv[0]
  except NoSuchKernel:
    argv0 = ""
  if argv0 and _runs_this_python(argv0):
    return
  # Another python3 kernelspec wins (a user's, say): shadow it from a temp dir.
  spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
  spec_dir.mkdir(parents=True)
  (spec_dir / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "Python 3 (gen tests)", "language": "python"}))
  monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(
      p for p in (str(tmp_path / "jupyter"), os.environ.get("JUPYTER_PATH")) if p))
  assert _runs_this_python(KernelSpecManager().get_kernel_spec("python3").argv[0])


def _texts(cell) -> str:
  return "\n".join(str(value) for output in cell.outputs
                   for value in [output.get("text", ""), *output.get("data", {}).values()])


def _pngs(cell) -> int:
  return sum("image/png" in output.get("data", {}) for output in cell.outputs)


@pytest.mark.slow
def test_notebook_runs_top_to_bottom_on_cpu(tmp_path, monkeypatch):
  _use_this_python(tmp_path, monkeypatch)
  # The kernel inherits this environment, with 2 forced CPU devices (as every
  # subprocess of the tests): the digits configs' batches split over 2.
  monkeypatch.setenv("XLA_FLAGS", subprocess_env()["XLA_FLAGS"])
  monkeypatch.setenv("GEN_NOTEBOOK_TINY", "1")
  monkeypatch.setenv("TMPDIR", str(tmp_path))  # the tiny run's workdirs, removed with it
  with open(NOTEBOOK) as file:
    notebook = nbformat.read(file, as_version=4)
  client = nbclient.NotebookClient(notebook, kernel_name="python3", timeout=180,
                                   startup_timeout=60,
                                   resources={"metadata": {"path": ROOT}})
  client.execute()  # raises CellExecutionError, with the traceback, on a failing cell

  cells = {cell.id: cell for cell in notebook.cells}
  for cell in notebook.cells:
    if cell.cell_type == "code":
      assert cell.execution_count is not None, cell.id
      assert not [o for o in cell.outputs if o.output_type == "error"], cell.id
  assert "gen is importable" in _texts(cells["install"])
  assert "TINY=True" in _texts(cells["settings"])
  # The loop's progress lines reach the notebook, and orbax's chatter does not.
  progress = _texts(cells["train-vae"])
  assert "step 40/40" in progress and "orbax" not in progress.lower()
  # Loss curve, reconstructions and samples of the VAE; loss curve and samples of the GAN.
  assert _pngs(cells["show-vae"]) == 3
  assert _pngs(cells["train-second"]) == 2
  assert "bits_per_dim_elbo_bound" in _texts(cells["show-vae"])
  [table] = [cell for cell in notebook.cells if "comparison" in cell.metadata.get("tags", [])]
  text = _texts(table)
  assert "VAE" in text and "DCGAN" in text, text
  assert "bits/dim" in text and "d_loss" in text, text
