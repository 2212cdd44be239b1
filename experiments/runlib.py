"""Runs of experiments/main.py as subprocesses: what sweep.py and compare.py share.

Each run is experiments/main.py in its own process and workdir, so a killed
batch of runs resumes every unfinished run from its last checkpoint, and a
run with results.json is finished and is not run again.
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import time
from typing import Iterable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_command(base_config: str, workdir: str, overrides: dict) -> list[str]:
  """The experiments/main.py command line of one run."""
  flags_ = [f"--config.{key}={flag_value(value)}" for key, value in overrides.items()]
  return [sys.executable, os.path.join(ROOT, "experiments", "main.py"),
          f"--config={base_config}", f"--workdir={workdir}", *flags_]


def flag_value(value) -> str:
  if isinstance(value, (tuple, list)):
    return "(" + ",".join(str(v) for v in value) + ("," if len(value) == 1 else "") + ")"
  return str(value)


def is_finished(run_dir: str) -> bool:
  return os.path.exists(os.path.join(run_dir, "results.json"))


def launch(name: str, command: list[str], run_dir: str) -> tuple[str, int, float]:
  """Runs `command`, appending its output to <run_dir>/log.txt; (name, status, seconds)."""
  os.makedirs(run_dir, exist_ok=True)
  start = time.time()
  with open(os.path.join(run_dir, "log.txt"), "a") as log:
    code = subprocess.call(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
  return name, code, time.time() - start


def launch_all(jobs: Iterable[tuple[str, list[str], str]], parallel: int,
               report=None) -> list[str]:
  """Runs (name, command, run_dir) jobs, `parallel` at once; returns the failed names.

  report(name, status, seconds) is called as each finishes.
  """
  failed = []
  with concurrent.futures.ThreadPoolExecutor(max(1, parallel)) as pool:
    futures = [pool.submit(launch, *job) for job in jobs]
    for future in concurrent.futures.as_completed(futures):
      name, code, seconds = future.result()
      if report:
        report(name, code, seconds)
      if code:
        failed.append(name)
  return failed
