"""Samples for the end-of-run report: grids, timing and non-finite counts.

Any family that can sample (`Family.sample`) gets the same report: a grid
(or scatter) per temperature, the seconds per sample of a compiled sampler
on this machine, and how many samples were not finite. Non-finite samples
are counted, never dropped quietly; they are drawn as 0 in the pictures.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from gen.evaluate import plots
from gen.train import sharding


def nonfinite_rows(samples) -> int:
  """How many samples hold any non-finite value."""
  samples = np.asarray(samples).reshape(len(samples), -1)
  return int(np.sum(~np.all(np.isfinite(samples), axis=1)))


def save_samples(path: str, samples: np.ndarray, title: str = "") -> None:
  """[n, h, w, c] images in [0, 1] as a grid, or [n, 2] points as a scatter."""
  samples = np.nan_to_num(np.asarray(samples, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
  if samples.ndim == 4:
    plots.save_image_grid(path, samples, columns=8)
  else:
    plots.save_scatter(path, samples, title=title)


def sample_report(family, params, workdir: str, step: int, num_samples: int,
                  temperatures) -> dict:
  """Draws `num_samples` at each temperature; saves pictures; times the sampler.

  Returns {"samples": {"T=<t>": {"nonfinite": k, "of": n, "file": name}},
  "sampling_seconds_per_sample": s}. The time is of a second, compiled call
  at the first temperature, waited for with block_until_ready. Nothing (an
  empty dict) when num_samples is 0: config.eval.num_images=0 turns pictures off.
  """
  if not num_samples:
    return {}
  params = sharding.single_device(params)
  sample = jax.jit(family.sample, static_argnums=2)
  os.makedirs(os.path.join(workdir, "images"), exist_ok=True)
  report: dict = {"samples": {}}
  rng = jax.random.PRNGKey(step)
  for index, temperature in enumerate(temperatures):
    key = jax.random.fold_in(rng, index)
    samples = sample(params, key, num_samples, jnp.float32(temperature))
    samples = np.asarray(jax.device_get(samples))
    if index == 0:
      start = time.perf_counter()
      jax.block_until_ready(sample(params, jax.random.fold_in(key, 1), num_samples,
                                   jnp.float32(temperature)))
      report["sampling_seconds_per_sample"] = (time.perf_counter() - start) / num_samples
    name = f"samples_T{temperature:g}.png"
    save_samples(os.path.join(workdir, name), samples,
                 title=f"samples, temperature {temperature:g}, step {step}")
    save_samples(os.path.join(workdir, "images", f"samples_T{temperature:g}_{step:07d}.png"),
                 samples, title=f"samples, temperature {temperature:g}, step {step}")
    report["samples"][f"T={temperature:g}"] = {
        "nonfinite": nonfinite_rows(samples), "of": num_samples, "file": name}
  return report
