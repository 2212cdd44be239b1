"""Settings measured on XLA:CPU are "auto": chosen per backend, with their reason."""

import json

import pytest

from configs import autoencoder, conv_autoencoder, ddpm, gan
from gen import loop, platform


def test_auto_resolves_per_backend_and_names_the_measurement():
  config = conv_autoencoder.get_config()
  cpu, why_cpu = platform.resolve(config, "cpu")
  assert (cpu.model.conv_transpose_impl, cpu.train.steps_per_call,
          cpu.train.unroll_steps) == ("phases", 10, 10)
  assert "experiments/benchmark.py" in why_cpu["model.conv_transpose_impl"]["why"]
  for backend in ("gpu", "tpu"):
    native, why = platform.resolve(config, backend)
    assert (native.model.conv_transpose_impl, native.train.steps_per_call,
            native.train.unroll_steps) == ("dilated", 1, 1)
    assert all("not measured" in choice["why"] or "not been measured" in choice["why"]
               for choice in why.values())
  # The U-Net and the DCGAN run one step per call everywhere; the DCGAN's
  # transposed convolutions follow the backend too.
  assert platform.resolve(ddpm.get_config(), "cpu")[0].train.steps_per_call == 1
  assert platform.resolve(gan.get_config(), "gpu")[0].model.conv_transpose_impl == "dilated"


def test_explicit_values_stay_and_auto_fits_the_step_counts():
  config = conv_autoencoder.get_config()
  config.train.num_steps, config.train.log_every = 120, 4
  config.train.eval_every, config.checkpoint.every_steps = 60, 60
  resolved, why = platform.resolve(config, "cpu")
  assert resolved.train.steps_per_call == 4  # the largest <= 10 dividing 120, 4, 60, 60
  assert "divides" in why["train.steps_per_call"]["why"]
  explicit = autoencoder.get_config()
  explicit.train.steps_per_call = "5"  # as --config.train.steps_per_call=5 arrives
  resolved, why = platform.resolve(explicit, "gpu")
  assert resolved.train.steps_per_call == 5 and "train.steps_per_call" not in why
  bad = autoencoder.get_config()
  bad.train.steps_per_call = "fast"
  with pytest.raises(ValueError, match="config.train.steps_per_call='fast'"):
    loop.train_and_evaluate(bad, "/tmp/unused-gen-workdir")


def test_a_run_logs_and_records_what_auto_became(tmp_path):
  config = autoencoder.get_config("digits")
  config.eval.num_images = 0
  results = loop.train_and_evaluate(config, str(tmp_path))
  recorded = json.loads((tmp_path / "results.json").read_text())["auto_settings"]
  assert recorded == results["auto_settings"]
  assert recorded["train.steps_per_call"]["value"] == 1
  assert recorded["train.unroll_steps"]["value"] == 10
  assert json.loads((tmp_path / "config.json").read_text())["train"]["steps_per_call"] == 1
