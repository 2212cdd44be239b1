"""Running the real loop and the real command line from tests."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(config_file: str, workdir: str, *overrides: str, timeout: float = 300,
             env: dict | None = None, wait: bool = True):
  """experiments/main.py in a subprocess, as a user runs it."""
  command = [sys.executable, os.path.join(ROOT, "experiments", "main.py"),
             f"--config={config_file}", f"--workdir={workdir}", *overrides]
  process_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
  if not wait:
    return subprocess.Popen(command, cwd=ROOT, env=process_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
  return subprocess.run(command, cwd=ROOT, env=process_env, capture_output=True, text=True,
                        timeout=timeout)
