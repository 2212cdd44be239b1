"""The generic loop: data parallelism, exact resume, preemption, non-finite losses."""

import json
import os
import signal
import time

import jax
import numpy as np
import pytest

from configs import autoencoder
from gen.data import ArraySource, SourceInfo
from gen import loop
from gen.train import metrics_io
from tests.helpers import check_bfloat16_run, checkpoint_leaves, run_main


def _digits_config(**train):
  config = autoencoder.get_config("digits")
  for key, value in train.items():
    config.train[key] = value
  return config


def _rows(workdir, split):
  return [r for r in metrics_io.read_metrics(os.path.join(workdir, "metrics.jsonl"))
          if r["split"] == split]


def test_eight_devices_give_the_loss_of_one(tmp_path):
  assert jax.device_count() == 8, "conftest sets 8 host devices"
  config = _digits_config()
  one = loop.train_and_evaluate(config, str(tmp_path / "one"), devices=jax.devices()[:1])
  eight = loop.train_and_evaluate(config, str(tmp_path / "eight"))
  assert (one["devices"], eight["devices"]) == (1, 8)
  train_one, train_eight = _rows(tmp_path / "one", "train"), _rows(tmp_path / "eight", "train")
  assert [r["step"] for r in train_one] == [10, 20, 30, 40]
  np.testing.assert_allclose([r["loss"] for r in train_eight],
                             [r["loss"] for r in train_one], rtol=1e-5)
  for key in ("loss", "mse"):
    np.testing.assert_allclose(eight["test"][key], one["test"][key], rtol=1e-5)


def test_steps_per_call_changes_nothing_but_speed(tmp_path):
  single = loop.train_and_evaluate(_digits_config(), str(tmp_path / "k1"))
  unrolled = loop.train_and_evaluate(_digits_config(steps_per_call=10), str(tmp_path / "k10"))
  looped = loop.train_and_evaluate(_digits_config(steps_per_call=10, unroll_steps=3),
                                   str(tmp_path / "k10_loop"))
  for scanned in (unrolled, looped):
    np.testing.assert_allclose(scanned["test"]["loss"], single["test"]["loss"], rtol=1e-6)


def test_outputs_in_the_workdir(tmp_path):
  results = loop.train_and_evaluate(_digits_config(), str(tmp_path))
  for name in ("config.json", "config.txt", "metrics.jsonl", "loss_curve.png",
               "reconstructions.png", "results.json"):
    assert (tmp_path / name).exists(), name
  assert any(name.startswith("events") for name in os.listdir(tmp_path / "tensorboard"))
  assert [r["step"] for r in _rows(tmp_path, "val")] == [20, 40]
  assert json.loads((tmp_path / "results.json").read_text())["test"] == results["test"]
  # 1437 digits minus 200 for validation; the test split is fixed at 360.
  assert results["val"]["mse"] > 0 and np.isfinite(results["test"]["mse"])


def test_killed_run_resumes_bitwise(tmp_path):
  overrides = ["--config.train.num_steps=600", "--config.checkpoint.every_steps=50",
               "--config.train.eval_every=100", "--config.train.log_every=50"]
  config = "configs/autoencoder.py:digits"
  straight = run_main(config, str(tmp_path / "straight"), *overrides)
  assert straight.returncode == 0, straight.stdout + straight.stderr

  interrupted = tmp_path / "interrupted"
  process = run_main(config, str(interrupted), *overrides, wait=False)
  deadline = time.time() + 120
  checkpoints = interrupted / "checkpoints"
  while time.time() < deadline:
    done = [d for d in os.listdir(checkpoints)] if checkpoints.exists() else []
    if any(d.isdigit() and int(d) >= 100 for d in done):
      break
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  process.wait()
  killed_at = max(int(d) for d in os.listdir(checkpoints) if d.isdigit())
  assert 100 <= killed_at < 600, f"kill came too late to test resume ({killed_at})"

  resumed = run_main(config, str(interrupted), *overrides)
  assert resumed.returncode == 0, resumed.stdout + resumed.stderr
  assert "resumed from" in resumed.stderr
  for a, b in zip(checkpoint_leaves(tmp_path / "straight"), checkpoint_leaves(interrupted), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # The metrics file has each step once, as if never interrupted.
  steps = [r["step"] for r in _rows(interrupted, "train")]
  assert steps == sorted(set(steps)) and steps[-1] == 600
  # The same run in bfloat16 (the autoencoder family's mixed-precision check).
  straight_results = json.loads((tmp_path / "straight" / "results.json").read_text())
  check_bfloat16_run(config, tmp_path, overrides, straight_results, num_steps=600)


def test_sigterm_saves_a_checkpoint_before_exit(tmp_path):
  overrides = ["--config.train.num_steps=100000", "--config.checkpoint.every_steps=100000",
               "--config.train.eval_every=100000", "--config.train.log_every=10"]
  process = run_main("configs/autoencoder.py:digits", str(tmp_path), *overrides, wait=False)
  deadline = time.time() + 120
  metrics = tmp_path / "metrics.jsonl"
  while time.time() < deadline and not (metrics.exists() and metrics.read_text()):
    time.sleep(0.05)
  process.send_signal(signal.SIGTERM)
  output, _ = process.communicate(timeout=60)
  assert process.returncode == 0, output
  saved = [int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()]
  # No periodic save is due before step 100000: this one is the SIGTERM's.
  assert len(saved) == 1 and 0 < saved[0] < 100000
  assert f"stopped at step {saved[0]}" in output


def _toy_with_a_nan(bad_row):
  def load_source(data_config, split):
    points = np.random.default_rng(0 if split == "train" else 1).normal(size=(400, 2))
    points = points.astype(np.float32)
    if split == "train":
      points[bad_row] = np.nan
    return ArraySource(SourceInfo("toy", (2,), "vector"), points)
  return load_source


def _toy_config(**train):
  config = _digits_config(**train)
  config.data.name = "toy"
  config.data.validation_size = 80
  config.model.bottleneck = 1
  config.model.loss = "mean_squared_error"
  config.model.output_activation = "linear"
  config.eval.num_images = 0
  return config


def _steps_touching(config, row, num_steps):
  from gen import data
  batches = data.load(config).train
  assert row in batches.rows, "the NaN row must be a training row"
  return [s for s in range(num_steps) if row in batches.batch_at(s)["uid"]]


def test_nonfinite_loss_stops_and_names_the_step(tmp_path, monkeypatch):
  from gen.data import sources
  monkeypatch.setattr(sources, "load_source", _toy_with_a_nan(bad_row=399))
  config = _toy_config()
  first_bad = _steps_touching(config, 399, config.train.num_steps)[0]
  with pytest.raises(loop.NonFiniteLossError,
                     match=rf"at step {first_bad + 1};.*Last good checkpoint"):
    loop.train_and_evaluate(config, str(tmp_path))
  saved = [int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()]
  assert all(step <= first_bad for step in saved)
  if saved:
    for leaf in checkpoint_leaves(tmp_path):
      assert np.all(np.isfinite(np.asarray(leaf)))


def test_nonfinite_updates_can_be_skipped_and_their_count_survives_a_resume(tmp_path,
                                                                          monkeypatch):
  from gen.data import sources
  monkeypatch.setattr(sources, "load_source", _toy_with_a_nan(bad_row=399))
  config = _toy_config(skip_nonfinite=True, num_steps=60)
  touching = _steps_touching(config, 399, 60)
  assert any(s < 30 for s in touching) and any(s >= 30 for s in touching)
  results = loop.train_and_evaluate(config, str(tmp_path / "straight"))
  assert results["skipped_updates"] == len(touching) > 0
  for leaf in checkpoint_leaves(tmp_path / "straight"):
    assert np.all(np.isfinite(np.asarray(leaf)))
  assert np.isfinite(results["test"]["loss"])
  # Stopped at 30 and resumed: the count goes on from the checkpoint (it
  # restarted at 0 when the loop kept it in a local variable).
  loop.train_and_evaluate(_toy_config(skip_nonfinite=True, num_steps=30), str(tmp_path / "two"))
  resumed = loop.train_and_evaluate(config, str(tmp_path / "two"))
  assert resumed["skipped_updates"] == len(touching)


def test_the_loop_runs_on_a_tfds_dataset(tmp_path):
  """A TFDS name goes through the same loop; TFDS's mock data stands in for the download."""
  import tensorflow_datasets as tfds

  config = _digits_config(batch_size=16, num_steps=20, eval_every=10, log_every=10)
  config.data.name = "mnist"
  config.data.validation_size = 32
  config.model.hidden_sizes = (32,)
  config.eval.batch_size = 32
  with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, num_examples=96):
    results = loop.train_and_evaluate(config, str(tmp_path))
  assert [r["step"] for r in _rows(tmp_path, "train")] == [10, 20]
  assert results["step"] == 20 and np.isfinite(results["test"]["mse"])
  # The dense model was built for MNIST's 28x28x1 images: 784 inputs.
  assert results["num_params"] == 2 * 784 * 32 + 784 + 32 + 2 * 32 * 8 + 8 + 32
  assert (tmp_path / "reconstructions.png").exists()
