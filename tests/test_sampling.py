"""The end-of-run sample report counts non-finite samples instead of hiding them."""

import json

import jax
import jax.numpy as jnp

from gen.evaluate import sampling


class _HalfBroken:
  """Samples whose every other row is NaN when the temperature is above 0.7."""

  def sample(self, params, rng, num, temperature):
    images = jax.random.uniform(rng, (num, 4, 4, 1)) * params["scale"]
    broken = (jnp.arange(num) % 2 == 0)[:, None, None, None] & (temperature > 0.7)
    return jnp.where(broken, jnp.nan, images)


def test_nonfinite_samples_are_counted_per_temperature(tmp_path):
  report = sampling.sample_report(_HalfBroken(), {"scale": jnp.float32(1.0)}, str(tmp_path),
                                  step=7, num_samples=10, temperatures=(1.0, 0.5))
  assert report["samples"]["T=1"] == {"nonfinite": 5, "of": 10, "file": "samples_T1.png"}
  assert report["samples"]["T=0.5"]["nonfinite"] == 0
  assert (tmp_path / "samples_T1.png").exists()
  assert (tmp_path / "images" / "samples_T0.5_0000007.png").exists()
  assert report["sampling_seconds_per_sample"] > 0
  json.dumps(report)  # goes into results.json as it is


def test_no_pictures_means_no_report(tmp_path):
  assert sampling.sample_report(_HalfBroken(), {"scale": jnp.float32(1.0)}, str(tmp_path),
                                step=0, num_samples=0, temperatures=(1.0,)) == {}
