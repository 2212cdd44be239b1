"""Test setup: 8 virtual CPU devices, so every loop test runs data-parallel,
and XLA's backend optimizations off.

Most of the suite's time is compiling small programs that then run for
milliseconds: without LLVM's optimization passes XLA:CPU compiles them 2-3x
faster (a flow's jitted init: 6.0 s -> 2.0 s), and computes the same
operations. The subprocesses of experiments/ that tests launch inherit both
flags. XLA reads them once, when jax first initializes its backend, so they
are set here before any test imports jax.
"""

import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8"
                           " --xla_backend_optimization_level=0").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # configs/ is imported as a package from the repo root
  sys.path.insert(0, ROOT)


# The longest tests (seconds each on 2 cores; they run experiments/ in
# subprocesses), started first: pytest-xdist hands tests out in order, and a
# long one started last keeps one worker busy while the other has finished.
_LONGEST = (
    "tests/test_ddpm.py::test_trains_reports_and_resumes_exactly_with_ema",  # 90
    "tests/test_multiprocess.py::",  # 30 + 15
    "tests/test_compare.py::test_a_real_comparison",  # 50
    "tests/test_gan.py::test_dcgan_trains_checkpoints_ema_and_resumes_exactly",  # 45
    "tests/test_likelihood_runs.py::",  # 20-40 each
    "tests/test_train_loop.py::test_killed_run_resumes_bitwise",  # 40
    "tests/test_device_suite.py::test_tiny_run_reports_every_case",  # 35
    "tests/test_notebook.py::",  # 25
)


def pytest_collection_modifyitems(config, items):
  def rank(item):
    for index, prefix in enumerate(_LONGEST):
      if item.nodeid.startswith(prefix):
        return index
    return len(_LONGEST)
  items.sort(key=rank)  # stable: the others keep their order
