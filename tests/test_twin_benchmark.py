"""experiments/benchmarks/twin_benchmark.py and op_microbenchmark.py run and print what they
promise."""

import os
import re
import subprocess
import sys

import pytest

from tests.helpers import subprocess_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script: str, *args: str) -> str:
  env = subprocess_env()
  env.pop("XLA_FLAGS", None)  # one device, as the benchmark runs
  script_path = os.path.join(ROOT, "experiments", "benchmarks", script)
  done = subprocess.run([sys.executable, script_path, *args],
                        env=env, capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  return done.stdout


def test_a_jax_python_without_jax_is_named():
  env = subprocess_env()
  done = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "benchmarks",
                                                      "twin_benchmark.py"),
                         "--cases=autoencoder", "--no_torch", "--jax_python=/bin/false"],
                        env=env, capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert done.returncode != 0
  assert "--jax_python=/bin/false: cannot import jax" in done.stderr


def test_twin_benchmark_prints_the_machine_and_a_ratio_per_family():
  have_torch = subprocess.run([sys.executable, "-c", "import torch"]).returncode == 0
  # --jax_python: another interpreter's JAX row beside this one's (here the same one).
  out = _run("twin_benchmark.py", "--cases=autoencoder", "--rounds=1", "--seconds=0.2",
             "--repeats=1", "--xla_variant=none", f"--jax_python={sys.executable}",
             *([] if have_torch else ["--no_torch"]))
  assert re.search(r"^CPU: .+; \d+ logical CPUs", out, re.M)
  assert re.search(r"^ISA flags present: .*; absent: ", out, re.M)
  assert "jax 0." in out
  row = re.search(r"^\| autoencoder \| JAX \(gen\) \| 128 \| ([\d,]+) \|\s*\| (\S+) \|", out, re.M)
  assert row and float(row.group(1).replace(",", "")) > 0
  import jax
  version = re.escape(jax.__version__)
  assert re.search(rf"^\| autoencoder \| JAX {version} \| 128 \| [\d,]+ ", out, re.M)
  assert re.search(rf"^\| autoencoder \| JAX {version} without gen's XLA:CPU flags \| 128 \| "
                   r"[\d,]+ ", out, re.M)
  assert re.search(r"^\| autoencoder \| JAX without gen's XLA:CPU flags \| 128 \| [\d,]+ ", out,
                   re.M)
  if have_torch:
    assert float(row.group(2)) > 0  # the ratio against the twin in the same run
    assert re.search(r"^\| autoencoder \| PyTorch \| 128 \| [\d,]+ \|\s*\| 1\.00 \|", out, re.M)


def test_op_microbenchmark_times_both_frameworks():
  pytest.importorskip("torch")
  out = _run("op_microbenchmark.py", "--cases=conv3x3_64")
  rows = [l for l in out.splitlines() if l.startswith("| conv3x3_64")]
  assert [r.split("|")[2].strip() for r in rows] == ["forward", "forward + backward"]
  for row in rows:
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert all(float(c.replace(",", "")) > 0 for c in cells[2:])
