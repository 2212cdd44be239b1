"""Runs that never lose work and never make a user wait for nothing.

Each test here failed on the code before its fix (issue 15, "Runs and
data"): minutes of TFDS retries offline, a damaged newest checkpoint that
stopped the run, a changed model that ended in an orbax traceback, two runs
writing into one workdir, Ctrl-C without a checkpoint, a traceback for an
unwritable workdir, and a first run that ended on a warning.
"""

import json
import os
import signal
import time

import numpy as np
import pytest

from configs import autoencoder
from gen import loop
from gen.data import sources
from gen.train import workdir as workdir_lib
from tests.helpers import run_main

_OFFLINE = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
            "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}


def test_offline_without_data_says_what_is_missing_within_seconds(tmp_path, monkeypatch):
  """No network (every request refused) and nothing prepared: one line that says
  what is missing and how to get it, in seconds (TFDS's retries took minutes)."""
  env = dict(_OFFLINE, TFDS_DATA_DIR=str(tmp_path / "tfds"))
  start = time.time()
  result = run_main("configs/autoencoder.py", str(tmp_path / "run"),
                    "--config.data.name=mnist", env=env, timeout=60)
  assert time.time() - start < 30
  assert result.returncode == 1
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: TFDS has no prepared copy of 'mnist'") and "reachable" in last
  assert "Traceback" not in result.stderr
  # Fashion-MNIST without Debian's package: the package's install line is kept.
  for name, value in _OFFLINE.items():
    monkeypatch.setenv(name, value)
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  monkeypatch.setattr(sources, "FASHION_MNIST_DIR", str(tmp_path / "no-package"))
  config = autoencoder.get_config()
  start = time.time()
  with pytest.raises(sources.DataNotFoundError,
                     match="apt-get install -y dataset-fashion-mnist.*not reachable|"
                           "not reachable.*apt-get install -y dataset-fashion-mnist"):
    sources.load_source(config.data, "train")
  assert time.time() - start < 30


def _quick_config(**train):
  config = autoencoder.get_config("digits")
  config.eval.num_images = 0
  for key, value in train.items():
    config.train[key] = value
  return config


def test_a_damaged_newest_checkpoint_is_set_aside_and_the_one_before_resumes(tmp_path):
  workdir = str(tmp_path)
  loop.train_and_evaluate(_quick_config(num_steps=30), workdir)
  newest = tmp_path / "checkpoints" / "30"
  files = sorted((p for p in newest.rglob("*") if p.is_file() and "ocdbt" in str(p)),
                 key=lambda p: -p.stat().st_size)[:3]
  assert len(files) == 3
  rng = np.random.default_rng(0)
  for path in files:  # as a crash mid-write or a bad disk would leave them
    path.write_bytes(rng.integers(0, 256, path.stat().st_size, np.uint8).tobytes())
  results = loop.train_and_evaluate(_quick_config(num_steps=40), workdir)
  assert results["step"] == 40
  [aside] = results["damaged_checkpoints_set_aside"]
  assert aside["step"] == 30 and "checkpoints_damaged" in aside["moved_to"]
  moved = tmp_path / aside["moved_to"]
  assert moved.exists() and sorted(p.name for p in moved.rglob("*") if p.is_file())
  # Resumed from 20, the newest that reads; the metrics from 21 on were recomputed.
  rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  train_steps = [r["step"] for r in rows if r["split"] == "train"]
  assert train_steps == sorted(set(train_steps)) and train_steps[-1] == 40


def test_a_changed_model_is_refused_naming_the_keys_and_a_longer_run_resumes(tmp_path):
  workdir = str(tmp_path)
  loop.train_and_evaluate(_quick_config(num_steps=20), workdir)
  changed = _quick_config(num_steps=20)
  changed.model.bottleneck = 4
  with pytest.raises(workdir_lib.ConfigChangedError,
                     match=r"config.model.bottleneck: 8 -> 4.*new --workdir"):
    loop.train_and_evaluate(changed, workdir)
  # Nothing was overwritten: the workdir still describes the first run.
  assert json.loads((tmp_path / "config.json").read_text())["model"]["bottleneck"] == 8
  longer = loop.train_and_evaluate(_quick_config(num_steps=30), workdir)
  assert longer["step"] == 30


def _wait_for(condition, seconds=120.0):
  deadline = time.time() + seconds
  while time.time() < deadline:
    if condition():
      return True
    time.sleep(0.05)
  return False


def test_one_run_per_workdir_ctrl_c_saves_and_the_end_is_a_summary(tmp_path):
  long_run = ["--config.train.num_steps=100000", "--config.checkpoint.every_steps=100000",
              "--config.train.eval_every=100000", "--config.train.log_every=10",
              "--config.eval.num_images=0"]
  first = run_main("configs/autoencoder.py:digits", str(tmp_path), *long_run, wait=False)
  metrics = tmp_path / "metrics.jsonl"
  assert _wait_for(lambda: metrics.exists() and metrics.read_text())
  # A second run on the same workdir refuses at once, naming the first.
  second = run_main("configs/autoencoder.py:digits", str(tmp_path), timeout=60)
  assert second.returncode == 1
  assert f"in use by process {first.pid}" in second.stderr.strip().splitlines()[-1]
  assert "Traceback" not in second.stderr
  # Ctrl-C: a checkpoint, then a clean exit that says where it is.
  first.send_signal(signal.SIGINT)
  output, _ = first.communicate(timeout=60)
  assert first.returncode == 0, output
  assert "Traceback" not in output and "KeyboardInterrupt" not in output
  saved = [int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()]
  assert len(saved) == 1 and 0 < saved[0] < 100000
  assert f"stopped at step {saved[0]} on Ctrl-C" in output
  assert os.path.join("checkpoints", str(saved[0])) in output
  # The lock went with the process: the next run resumes, and ends on a
  # summary, not on a warning.
  finish = run_main("configs/autoencoder.py:digits", str(tmp_path),
                    f"--config.train.num_steps={saved[0] + 10}",
                    "--config.checkpoint.every_steps=10", "--config.train.log_every=10",
                    f"--config.train.eval_every={saved[0] + 10}")
  assert finish.returncode == 0, finish.stderr
  lines = [line for line in finish.stderr.splitlines() if line[:1] in "IWE"]
  assert "resumed from" in finish.stderr
  summary = lines[-4:]
  assert "done: dense_autoencoder" in summary[0] and summary[-1].split("]", 1)[1].startswith(
      " files:")
  assert not any(line.startswith("W") and "sample quality" in line for line in lines)
  assert "sample quality: not measured (no classifier" in finish.stderr


def test_an_unwritable_workdir_is_one_line_before_anything_is_built(tmp_path):
  result = run_main("configs/autoencoder.py:digits", "/proc/gen-test-workdir", timeout=60)
  assert result.returncode == 1
  lines = result.stderr.strip().splitlines()
  assert lines[-1].startswith("error: --workdir=/proc/gen-test-workdir: cannot create or "
                              "write to it")
  assert "Traceback" not in result.stderr and "data digits" not in result.stderr


def test_a_signal_during_the_final_evaluation_stops_it_at_the_next_batch(tmp_path,
                                                                         monkeypatch):
  """SIGTERM while the test split is evaluated: the run stops at the next batch
  (its final checkpoint is already saved), writes no results, and the same
  command evaluates it and ends as an uninterrupted run does."""
  import jax
  from gen import data as data_lib
  from gen import families
  from gen.errors import EvaluationStopped
  from gen.train import sharding, steps
  config = autoencoder.get_config("digits")
  config.train.num_steps = 20
  config.eval.batch_size = 48  # 8 batches of the 360 test images; 8 devices divide it
  config.eval.num_images = 0
  straight = loop.train_and_evaluate(config, str(tmp_path / "straight"))
  real = steps.evaluate_split

  def signalled(eval_fn, params, dataset, split, batch_size, mesh, stop=None):
    if split == "test":
      os.kill(os.getpid(), signal.SIGTERM)  # the handler only sets a flag
    return real(eval_fn, params, dataset, split, batch_size, mesh, stop)

  monkeypatch.setattr(loop, "evaluate_split", signalled)
  workdir = tmp_path / "signalled"
  stopped = loop.train_and_evaluate(config, str(workdir))
  assert stopped == {"step": 20, "preempted": True}
  assert not (workdir / "results.json").exists()
  monkeypatch.setattr(loop, "evaluate_split", real)
  again = loop.train_and_evaluate(config, str(workdir))
  assert again["test"] == straight["test"]
  # A stop asked after two batches ends the split there.
  dataset = data_lib.load(config)
  family = families.make(config, dataset.info)
  mesh = sharding.make_mesh(jax.devices()[:1])
  params = jax.jit(family.init_params)(jax.random.PRNGKey(0))
  answers = iter([False, False, True])
  with pytest.raises(EvaluationStopped, match="after 2 of 8 batches"):
    steps.evaluate_split(steps.make_eval_fn(family, mesh), params, dataset, "test", 48, mesh,
                         stop=lambda: next(answers))


def test_a_full_disk_ends_the_run_in_one_line_and_a_copy_with_room_resumes(tmp_path):
  """A workdir on a 200 KiB tmpfs: the second checkpoint does not fit. The run
  ends with one line naming the workdir, the disk and the last good
  checkpoint, leaves no half-written checkpoint, and the workdir copied to a
  disk with room resumes from it and finishes."""
  import shutil
  import subprocess
  if os.geteuid() != 0 or shutil.which("mount") is None:
    pytest.skip("mounting a small tmpfs needs root")
  disk = tmp_path / "tiny"
  disk.mkdir()
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(disk)],
                           capture_output=True, text=True)
  if mounted.returncode:
    pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
  try:
    steps = ("--config.train.num_steps=400", "--config.checkpoint.every_steps=50",
             "--config.eval.num_images=0")
    full = run_main("configs/autoencoder.py:digits", str(disk / "run"), *steps)
    assert full.returncode != 0
    lines = [line for line in full.stderr.splitlines() if not line.startswith(("I1", "W1"))]
    assert len(lines) == 1, full.stderr[-3000:]
    assert lines[0].startswith(f"error: the disk holding {disk / 'run'} is full ({disk}: ")
    assert "the last good checkpoint is step 50" in lines[0]
    assert sorted(os.listdir(disk / "run" / "checkpoints")) == ["50"]
    shutil.copytree(disk / "run", tmp_path / "roomy")
  finally:
    subprocess.run(["umount", str(disk)], check=False)
  resumed = run_main("configs/autoencoder.py:digits", str(tmp_path / "roomy"), *steps)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert "resumed from" in resumed.stderr
  assert json.loads((tmp_path / "roomy" / "results.json").read_text())["step"] == 400
