"""VAE and RealNVP through experiments/main.py: train, report, checkpoint, resume."""

import numpy as np
import pytest

from tests.helpers import check_bfloat16_run, check_stop_and_resume

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


@pytest.mark.parametrize("name", sorted(RUNS))
def test_trains_reports_and_resumes_exactly(tmp_path, name):
  config, overrides, metric = RUNS[name]
  results = check_stop_and_resume(config, tmp_path, overrides)
  assert np.isfinite(results["test"][metric]), results["test"]
  if name.endswith("_digits"):  # one image run per family in bfloat16 too
    check_bfloat16_run(config, tmp_path, overrides, results)
  # Every sample grid is reported with its count of non-finite samples.
  for temperature in ("T=1", "T=0.8", "T=0.6"):
    entry = results["samples"][temperature]
    assert entry["nonfinite"] == 0 and (tmp_path / "straight" / entry["file"]).exists()
  assert results["sampling_seconds_per_sample"] > 0
