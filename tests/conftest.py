"""Test setup: 8 virtual CPU devices, so every loop test runs data-parallel,
and XLA's backend optimizations off.

Most of the suite's time is compiling small programs that then run for
milliseconds: without LLVM's optimization passes XLA:CPU compiles them 2-3x
faster (a flow's jitted init: 6.0 s -> 2.0 s), and computes the same
operations. The subprocesses of experiments/ that tests launch inherit both
flags. XLA reads them once, when jax first initializes its backend, so they
are set here before any test imports jax.
"""

import atexit
import os
import shutil
import sys
import tempfile

import pytest

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8"
                           " --xla_backend_optimization_level=0").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# One persistent compilation cache for the whole session: pytest's own
# process creates it before it starts the xdist workers, which inherit the
# variables, as do the experiments/ subprocesses they run. The same programs
# compile in many tests (a stop-and-resume test runs one three times; every
# family's step is built by several files), and a program compiled by one
# worker is then read back by the other.
if "GEN_TESTS_JAX_CACHE" not in os.environ:
  os.environ["GEN_TESTS_JAX_CACHE"] = tempfile.mkdtemp(prefix="gen-tests-jax-cache-")
  atexit.register(shutil.rmtree, os.environ["GEN_TESTS_JAX_CACHE"], ignore_errors=True)
os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ["GEN_TESTS_JAX_CACHE"]
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # configs/ is imported as a package from the repo root
  sys.path.insert(0, ROOT)


# The longest tests (seconds each on a slower machine of this kind, 2 cores,
# in the full suite), started first: pytest-xdist hands tests out in order,
# and a long one started last keeps one worker busy while the other has
# finished.
_LONGEST = (
    "tests/test_ddpm.py::test_trains_reports_and_resumes_exactly_with_ema",  # 117
    "tests/test_multiprocess.py::",  # 80
    "tests/test_compare.py::test_a_real_comparison",  # 60
    "tests/test_device_suite.py::test_tiny_run_reports_every_case",  # 52
    "tests/test_train_loop.py::test_killed_run_resumes_bitwise",  # 44
    "tests/test_likelihood_runs.py::",  # 15-38 each
    "tests/test_gan.py::test_dcgan_trains_checkpoints_ema_and_resumes_exactly",  # 28
    "tests/test_notebook.py::",  # 23
)


def pytest_collection_modifyitems(config, items):
  def rank(item):
    for index, prefix in enumerate(_LONGEST):
      if item.nodeid.startswith(prefix):
        return index
    return len(_LONGEST)
  items.sort(key=rank)  # stable: the others keep their order


@pytest.fixture
def fully_optimized_steps(monkeypatch):
  """The loop's train and evaluation steps compiled at XLA's full backend
  optimization, which XLA_FLAGS above turn off: for the few in-process runs
  whose hundreds of convolution steps cost more than their compilation."""
  from gen.train import steps
  measured = steps._compiler_options
  monkeypatch.setattr(steps, "_compiler_options", lambda family: {
      **(measured(family) or {}), "xla_backend_optimization_level": 3})


@pytest.fixture(scope="session")
def digits_classifier(tmp_path_factory):
  """A classifier of 8x8 digits trained by the project's own loop (seconds)."""
  from configs import classifier as classifier_config
  from gen import loop
  workdir = str(tmp_path_factory.mktemp("classifier"))
  config = classifier_config.get_config("digits")
  config.train.num_steps = 200
  # 400 held out, so that 300 unseen images can form a baseline.
  config.data.validation_size = 400
  results = loop.train_and_evaluate(config, workdir)
  assert results["test"]["accuracy"] > 0.8, results["test"]
  return workdir
