"""Several processes as one JAX job, on this CPU: 2 local processes with 2 host
devices each, their collectives through gloo, stand in for 2 hosts.

Checked: the same per-step losses and test metrics as 1 process with 4
devices; a job SIGKILLed part-way and restarted ends bitwise equal to an
uninterrupted one; when one process dies the other exits with an error in
bounded time instead of waiting in a collective.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np

from tests.helpers import ROOT, checkpoint_leaves, run_main, xla_flags

_CONFIG = "configs/autoencoder.py:digits"
# Pictures off: they are not what is tested, and cost compilation.
_COMMON = ("--config.eval.num_images=0",)


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("localhost", 0))
    return probe.getsockname()[1]


def _env(devices: int) -> dict:
  return {"XLA_FLAGS": xla_flags(devices), "JAX_PLATFORMS": "cpu"}


def _start_job(workdir, *overrides, processes: int = 2) -> list[subprocess.Popen]:
  """experiments/main.py as `processes` processes of one job, 2 devices each."""
  address = f"localhost:{_free_port()}"
  return [run_main(_CONFIG, str(workdir), *_COMMON, *overrides,
                   f"--coordinator_address={address}", f"--num_processes={processes}",
                   f"--process_id={index}", env=_env(2), wait=False)
          for index in range(processes)]


def _finish(job, timeout=240) -> list[str]:
  outputs = [process.communicate(timeout=timeout)[0] for process in job]
  for process, output in zip(job, outputs):
    assert process.returncode == 0, output
  return outputs


def _rows(workdir, split):
  path = os.path.join(workdir, "metrics.jsonl")
  return [row for row in map(json.loads, open(path)) if row["split"] == split]


def test_two_processes_train_as_one_and_a_killed_job_resumes_bitwise(tmp_path):
  # One straight job serves both comparisons: each 2-process job costs both
  # cores for its imports and compilations. Few checkpoints: each is a save
  # across both processes, most of a step's cost here.
  steps = ("--config.train.num_steps=120", "--config.checkpoint.every_steps=20",
           "--config.train.eval_every=60", "--config.train.log_every=1",
           "--config.optimizer.schedule=constant")
  _finish(_start_job(tmp_path / "straight", *steps))

  # The same losses and test metrics as 1 process with the same 4 devices.
  one = run_main(_CONFIG, str(tmp_path / "one"), *_COMMON, *steps, env=_env(4))
  assert one.returncode == 0, one.stderr
  two_rows, one_rows = _rows(tmp_path / "straight", "train"), _rows(tmp_path / "one", "train")
  assert [r["step"] for r in two_rows] == [r["step"] for r in one_rows] == list(range(1, 121))
  np.testing.assert_allclose([r["loss"] for r in two_rows], [r["loss"] for r in one_rows],
                             rtol=1e-5)
  two = json.loads((tmp_path / "straight" / "results.json").read_text())
  single = json.loads((tmp_path / "one" / "results.json").read_text())
  assert two["processes"] == 2 and two["devices"] == single["devices"] == 4
  for split in ("val", "test"):
    assert two[split].keys() == single[split].keys()
    for key in two[split]:
      np.testing.assert_allclose(two[split][key], single[split][key], rtol=1e-5, err_msg=key)
  # Only process 0 wrote: one row per step, not two.
  assert len(_rows(tmp_path / "straight", "test")) == 1

  killed = tmp_path / "killed"
  # A short heartbeat timeout keeps the test short; the default is 30 s.
  job = _start_job(killed, *steps, "--heartbeat_timeout=10")
  checkpoints = killed / "checkpoints"
  deadline = time.time() + 180
  while time.time() < deadline:
    if checkpoints.exists() and any(d.isdigit() and int(d) >= 40 for d in os.listdir(checkpoints)):
      break
    time.sleep(0.05)
  # One process dies: the other must not wait for it forever.
  job[1].send_signal(signal.SIGKILL)
  start = time.time()
  survivor_output, _ = job[0].communicate(timeout=120)
  waited = time.time() - start
  job[1].wait()
  assert job[0].returncode != 0, survivor_output
  assert "another task died" in survivor_output
  assert waited < 60, f"the surviving process took {waited:.0f} s to stop"
  saved = max(int(d) for d in os.listdir(checkpoints) if d.isdigit())
  assert 40 <= saved < 120

  outputs = _finish(_start_job(killed, *steps))
  assert "resumed from" in outputs[0]
  for a, b in zip(checkpoint_leaves(tmp_path / "straight"), checkpoint_leaves(killed),
                  strict=True):
    np.testing.assert_array_equal(a, b)
