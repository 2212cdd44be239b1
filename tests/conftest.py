"""Test setup: 8 virtual CPU devices, so every loop test runs data-parallel.

XLA reads the flag once, when jax first initializes its backend, so it is set
here before any test imports jax.
"""

import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # configs/ is imported as a package from the repo root
  sys.path.insert(0, ROOT)
