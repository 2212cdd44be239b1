"""experiments/sweep.py: a grid from a file, N at once, finished runs not run again."""

import csv
import os
import subprocess
import sys

from tests.helpers import ROOT, xla_flags


_SWEEP_FILE = '''
BASE_CONFIG = "configs/autoencoder.py:digits"
COMMON = {"train.num_steps": 20, "train.eval_every": 10, "checkpoint.every_steps": 10}


def get_runs():
  return {"adam": {"optimizer.name": "adam"},
          "sgd": {"optimizer.name": "sgd", "optimizer.learning_rate": 0.1}}
'''


def _sweep(tmp_path, *extra):
  command = [sys.executable, os.path.join(ROOT, "experiments", "sweep.py"),
             f"--sweep={tmp_path / 'grid.py'}", f"--workdir={tmp_path / 'runs'}", *extra]
  env = dict(os.environ, XLA_FLAGS=xla_flags(1))  # one device per run, as a user's sweep on CPU
  return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_sweep_runs_in_parallel_tabulates_and_skips_finished_runs(tmp_path):
  (tmp_path / "grid.py").write_text(_SWEEP_FILE)
  first = _sweep(tmp_path, "--parallel=2")
  assert first.returncode == 0, first.stderr[-2000:]
  runs = tmp_path / "runs"
  with open(runs / "results.csv") as file:
    rows = {row["run"]: row for row in csv.DictReader(file)}
  assert set(rows) == {"adam", "sgd"}
  assert rows["sgd"]["optimizer.name"] == "sgd" and rows["adam"]["steps"] == "20"
  assert all(float(row["test/mse"]) > 0 for row in rows.values())
  assert len((runs / "results.md").read_text().strip().splitlines()) == 2 + 2
  assert (runs / "val_curves.png").stat().st_size > 0
  # Both ran at once: each started (config.json) before the other finished.
  start = {n: os.stat(runs / n / "config.json").st_mtime for n in rows}
  end = {n: os.stat(runs / n / "results.json").st_mtime for n in rows}
  assert start["adam"] < end["sgd"] and start["sgd"] < end["adam"]

  again = _sweep(tmp_path, "--parallel=2")
  assert again.returncode == 0, again.stderr[-2000:]
  for name in rows:
    assert f"{name}: finished, not run again" in again.stderr
    assert os.stat(runs / name / "results.json").st_mtime == end[name]


def test_a_broken_sweep_file_is_named(tmp_path):
  (tmp_path / "grid.py").write_text("COMMON = {}\n")
  result = _sweep(tmp_path)
  assert result.returncode != 0
  assert "grid.py must define BASE_CONFIG" in result.stderr
