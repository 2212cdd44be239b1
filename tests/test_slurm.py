"""Sweeps and jobs on a real Slurm (tests/slurm_cluster.py starts a one-node
one; without Slurm's binaries or root, these tests skip and say why).

Checked: a 2-run sweep as a job array gives the local launcher's table; a
2-task `srun` job (JAX's coordinator found from Slurm's environment) gives
the per-step losses of 1 process with the same 4 devices; a task sent TERM
part-way (as before a time limit) saves a checkpoint, requeues itself,
resumes and ends bitwise equal to an uninterrupted run. One cluster serves
all: the checks are one test, in one xdist worker.
"""

import csv
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from tests import slurm_cluster
from tests.helpers import ROOT, checkpoint_leaves, run_main, xla_flags

_SWEEP_FILE = '''
BASE_CONFIG = "configs/autoencoder.py:digits"
COMMON = {"train.num_steps": 20, "train.eval_every": 10, "checkpoint.every_steps": 10,
          "eval.num_images": 0}


def get_runs():
  return {"adam": {"optimizer.name": "adam"},
          "sgd": {"optimizer.name": "sgd", "optimizer.learning_rate": 0.1}}
'''


@pytest.fixture(scope="module")
def cluster():
  started, why = slurm_cluster.start()
  if started is None:
    pytest.skip(why)
  yield started
  started.stop()


def _sweep(cluster, sweep_file, workdir, *extra, wait=True):
  command = [sys.executable, os.path.join(ROOT, "experiments", "sweep.py"),
             f"--sweep={sweep_file}", f"--workdir={workdir}", *extra]
  env = {**os.environ, **cluster.env, "XLA_FLAGS": xla_flags(1), "PYTHONUNBUFFERED": "1"}
  if not wait:
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
  return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=600)


def _table(workdir):
  with open(os.path.join(workdir, "results.csv")) as file:
    return {row["run"]: row for row in csv.DictReader(file)}


def _losses(workdir):
  rows = map(json.loads, open(os.path.join(workdir, "metrics.jsonl")))
  return [(row["step"], row["loss"]) for row in rows if row["split"] == "train"]


def test_sweeps_and_jobs_run_on_slurm_and_a_signalled_task_resumes_bitwise(cluster, tmp_path):
  sweep_file = tmp_path / "grid.py"
  sweep_file.write_text(_SWEEP_FILE)

  # 1. The grid as a job array: the same table as local processes.
  local = _sweep(cluster, sweep_file, tmp_path / "local", "--parallel=2")
  assert local.returncode == 0, local.stderr[-2000:]
  on_slurm = _sweep(cluster, sweep_file, tmp_path / "slurm", "--launcher=slurm",
                    "--slurm_cpus_per_task=1", "--slurm_partition=debug")
  assert on_slurm.returncode == 0, on_slurm.stderr[-3000:]
  assert "submitting 2 runs as a Slurm array" in on_slurm.stderr
  assert _table(tmp_path / "slurm") == _table(tmp_path / "local")
  again = _sweep(cluster, sweep_file, tmp_path / "slurm", "--launcher=slurm")
  assert again.returncode == 0 and "submitting" not in again.stderr
  assert again.stderr.count("finished, not run again") == 2
  bad = _sweep(cluster, sweep_file, tmp_path / "bad", "--launcher=slurm",
               "--slurm_partition=nosuch")
  assert bad.returncode != 0
  assert bad.stderr.strip().splitlines()[-1].startswith("error: --slurm_partition='nosuch'")

  # 2. One run over 2 Slurm tasks: JAX's job from Slurm's environment.
  steps = ("--config.train.num_steps=30", "--config.train.log_every=1",
           "--config.train.eval_every=30", "--config.eval.num_images=0")
  two = cluster.run("srun", "-n", "2", "--cpus-per-task=1", sys.executable,
                    os.path.join(ROOT, "experiments", "main.py"),
                    "--config=configs/autoencoder.py:digits", f"--workdir={tmp_path / 'two'}",
                    *steps, cwd=ROOT, timeout=600,
                    env={"XLA_FLAGS": xla_flags(2), "JAX_PLATFORMS": "cpu"})
  assert two.returncode == 0, two.stderr[-3000:]
  one = run_main("configs/autoencoder.py:digits", str(tmp_path / "one"), *steps,
                 env={"XLA_FLAGS": xla_flags(4)})
  assert one.returncode == 0, one.stderr[-2000:]
  assert json.loads((tmp_path / "two" / "results.json").read_text())["processes"] == 2
  two_losses, one_losses = _losses(tmp_path / "two"), _losses(tmp_path / "one")
  assert [s for s, _ in two_losses] == [s for s, _ in one_losses] == list(range(1, 31))
  np.testing.assert_allclose([l for _, l in two_losses], [l for _, l in one_losses], rtol=1e-5)

  # 3. TERM part-way (Slurm's signal before a time limit): checkpoint, requeue, resume.
  long_sweep = tmp_path / "long.py"
  long_sweep.write_text(_SWEEP_FILE.replace('"train.num_steps": 20', '"train.num_steps": 400')
                        .replace('"checkpoint.every_steps": 10', '"checkpoint.every_steps": 50')
                        .replace('"train.eval_every": 10', '"train.eval_every": 400'))
  sweep = _sweep(cluster, long_sweep, tmp_path / "signalled", "--launcher=slurm",
                 "--only=adam", "--slurm_cpus_per_task=1", wait=False)
  checkpoints = tmp_path / "signalled" / "adam" / "checkpoints"
  deadline = time.time() + 300
  while time.time() < deadline and not (
      checkpoints.exists() and any(d.isdigit() for d in os.listdir(checkpoints))):
    time.sleep(0.2)
  assert checkpoints.exists(), "no checkpoint within 300 s"
  jobs = cluster.run("squeue", "-h", "-o", "%i").stdout.split()
  assert jobs, "the array task is not in the queue"
  cancelled = cluster.run("scancel", "--signal=TERM", jobs[0])
  assert cancelled.returncode == 0, cancelled.stderr
  output, _ = sweep.communicate(timeout=600)
  assert sweep.returncode == 0, output[-3000:]
  task_log = (tmp_path / "signalled" / "slurm" / "task_0.out").read_text()
  assert "stopped before the end: requeued" in task_log, task_log[-3000:]
  assert "resumed from" in task_log, task_log[-3000:]
  straight = run_main("configs/autoencoder.py:digits", str(tmp_path / "straight"),
                      "--config.train.num_steps=400", "--config.checkpoint.every_steps=50",
                      "--config.train.eval_every=400", "--config.eval.num_images=0",
                      env={"XLA_FLAGS": xla_flags(1)})
  assert straight.returncode == 0, straight.stderr[-2000:]
  for a, b in zip(checkpoint_leaves(tmp_path / "straight"),
                  checkpoint_leaves(tmp_path / "signalled" / "adam"), strict=True):
    np.testing.assert_array_equal(a, b)
