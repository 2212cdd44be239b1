"""VAE and RealNVP through experiments/main.py: train, report, checkpoint, resume."""

import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.helpers import run_main

# (config, overrides that make it a seconds-long run, a metric that must be in test results)
RUNS = {
    "realnvp_digits": ("configs/realnvp.py:digits", [], "bits_per_dim_exact"),
    "realnvp2d_ring8": ("configs/realnvp2d.py:quick", [], "nll_exact"),
    "vae_digits": ("configs/vae.py:digits", [], "bits_per_dim_iw20_bound"),
    "vae_toy2d": ("configs/vae.py:toy2d",
                  ["--config.train.num_steps=40", "--config.train.eval_every=20",
                   "--config.train.log_every=10", "--config.checkpoint.every_steps=10",
                   "--config.data.toy2d.num_train=3000", "--config.data.validation_size=500",
                   "--config.data.toy2d.num_test=1000", "--config.eval.num_images=200",
                   "--config.eval.iw_samples=20", "--config.eval.iw_chunk=10",
                   "--config.model.kl_warmup_steps=20"],
                  "nll_iw20_bound"),
}
# A constant learning rate, so that a run stopped at step 20 and continued to
# 40 follows the same schedule as one run straight to 40.
_CONSTANT = ["--config.optimizer.schedule=constant", "--config.optimizer.warmup_steps=0"]


def _checkpoint_leaves(workdir):
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  restored = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore())
  manager.close()
  return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(restored)]


@pytest.mark.parametrize("name", sorted(RUNS))
def test_trains_reports_and_resumes_exactly(tmp_path, name):
  config, overrides, metric = RUNS[name]
  overrides = overrides + _CONSTANT
  straight = run_main(config, str(tmp_path / "straight"), *overrides,
                      "--config.train.num_steps=40")
  assert straight.returncode == 0, straight.stdout + straight.stderr
  results = json.loads((tmp_path / "straight" / "results.json").read_text())
  assert np.isfinite(results["test"][metric]), results["test"]
  # Every sample grid is reported with its count of non-finite samples.
  for temperature in ("T=1", "T=0.8", "T=0.6"):
    entry = results["samples"][temperature]
    assert entry["nonfinite"] == 0 and (tmp_path / "straight" / entry["file"]).exists()
  assert results["sampling_seconds_per_sample"] > 0

  stopped = tmp_path / "stopped"
  # Pictures off in the first half: they cost compilation, not what is tested here.
  first = run_main(config, str(stopped), *overrides, "--config.train.num_steps=20",
                   "--config.eval.num_images=0")
  assert first.returncode == 0, first.stdout + first.stderr
  second = run_main(config, str(stopped), *overrides, "--config.train.num_steps=40")
  assert second.returncode == 0, second.stdout + second.stderr
  assert "resumed from" in second.stderr and os.path.join("checkpoints", "20") in second.stderr
  for a, b in zip(_checkpoint_leaves(tmp_path / "straight"), _checkpoint_leaves(stopped),
                  strict=True):
    np.testing.assert_array_equal(a, b)
