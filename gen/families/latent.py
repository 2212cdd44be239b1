"""Latent generative models: a frozen first stage and a generative model of its codes.

The families composed (Rombach et al., 2022; Dai and Wipf's two-stage VAE,
2019): a finished autoencoder or VAE run (`config.latent.first_stage_workdir`,
its config and newest checkpoint) encodes every image to a code; the second
stage, the family that `config.model.name` trains (the diffusion family's
U-Net for feature-map codes), learns the distribution of those codes,
standardized per channel by statistics of the codes of train images. The
second stage never knows what it decodes to: samples are drawn as codes,
un-standardized and decoded by the first stage, and then measured as images
like every other family's.

The first stage's reconstructions bound what the composition can reach:
`reconstructor` gives them to the sample-quality report, which sets their FD
beside the samples'. gen.loop trains the first stage first when its workdir
holds no finished run (`prepare_first_stage`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gen import models, platform
from gen.data import SourceInfo, example_keys
from gen.errors import UserError
from gen.evaluate import sampling
from gen.families import FAMILIES

# Fixed keys of a VAE first stage's posterior draws: for the statistics, and
# for evaluation (with the example ids).
_STATISTICS_SEED, _EVAL_SEED = 11, 12
# Train images whose codes give the standardization statistics.
_STATISTICS_IMAGES = 10_000
# Families whose runs can be a first stage: they encode and decode.
FIRST_STAGE_FAMILIES = ("autoencoder", "vae")


def is_latent(config: ml_collections.ConfigDict) -> bool:
  return bool(config.get("latent") and config.latent.get("first_stage"))


def default_first_stage_workdir(config: ml_collections.ConfigDict, workdir: str) -> str:
  """A folder beside the run named after the first stage's config, so that
  latent runs on the same first stage share it: runs/latent ->
  runs/first_stage_spatial_autoencoder (runs/first_stage_<file>_<variant>)."""
  spec = config.latent.first_stage
  path, _, variant = spec.partition(":")
  name = os.path.splitext(os.path.basename(path))[0] + (f"_{variant}" if variant else "")
  return os.path.join(os.path.dirname(os.path.abspath(workdir)), f"first_stage_{name}")


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """'configs/spatial_autoencoder.py:digits' -> that file's get_config("digits")."""
  import importlib.util
  path, _, variant = spec.partition(":")
  if not os.path.exists(path):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.path.join(root, path)
  if not os.path.exists(path):
    raise UserError(f"config.latent.first_stage={spec!r}: no such config file")
  module_spec = importlib.util.spec_from_file_location("first_stage_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant)


def finished(workdir: str) -> bool:
  """Whether `workdir` holds a run that reached its num_steps and wrote results."""
  try:
    with open(os.path.join(workdir, "results.json")) as file:
      results = json.load(file)
    with open(os.path.join(workdir, "config.json")) as file:
      config = json.load(file)
  except (OSError, ValueError):
    return False
  return not results.get("preempted") and results.get("step", 0) >= config["train"]["num_steps"]


def prepare_first_stage(config: ml_collections.ConfigDict, workdir: str, train) -> (
    ml_collections.ConfigDict):
  """The config with config.latent.first_stage_workdir made absolute (default
  `default_first_stage_workdir`), after training the first stage there with
  `train(config, workdir)` when it holds no finished run (a stopped one
  resumes). The first stage's data must be the run's."""
  config = ml_collections.ConfigDict(config.to_dict())
  first_workdir = config.latent.first_stage_workdir or default_first_stage_workdir(
      config, workdir)
  config.latent.first_stage_workdir = os.path.abspath(first_workdir)
  if not finished(first_workdir):
    first_config = (_read_config(first_workdir) if os.path.exists(
        os.path.join(first_workdir, "config.json")) else load_config_file(
            config.latent.first_stage))
    check_first_stage(first_config, config, first_workdir)
    train(first_config, first_workdir)
  else:
    for line in model_differences(_read_config(first_workdir),
                                  load_config_file(config.latent.first_stage)):
      logging.warning("the finished first stage in %s differs from %s: %s; it is used as it "
                      "is (another first_stage_workdir trains a new one)", first_workdir,
                      config.latent.first_stage, line)
  return config


def model_differences(trained, wanted) -> list[str]:
  """config.model keys whose values differ between a trained run and a config file."""
  trained, wanted = trained.model.to_dict(), wanted.model.to_dict()
  normal = lambda value: list(value) if isinstance(value, (tuple, list)) else value
  return [f"config.model.{key}: {normal(trained.get(key))!r} there, "
          f"{normal(wanted.get(key))!r} in the file"
          for key in sorted(set(trained) | set(wanted))
          if normal(trained.get(key)) != normal(wanted.get(key))]


def _read_config(workdir: str) -> ml_collections.ConfigDict:
  with open(os.path.join(workdir, "config.json")) as file:
    return ml_collections.ConfigDict(json.load(file))


def check_first_stage(first_config, config, first_workdir: str) -> None:
  """One line naming the key at fault when the first stage cannot serve."""
  family = models.get(first_config.model.name).family
  if family not in FIRST_STAGE_FAMILIES:
    raise UserError(
        f"config.latent.first_stage_workdir={first_workdir!r} holds a run of "
        f"{first_config.model.name!r} ({family} family), which has no encoder; a first "
        f"stage is one of the families {', '.join(FIRST_STAGE_FAMILIES)}")
  if first_config.data.name != config.data.name:
    raise UserError(
        f"config.latent.first_stage_workdir={first_workdir!r} holds a run on "
        f"{first_config.data.name!r}, but config.data.name={config.data.name!r}")


def _load_first_stage(config: ml_collections.ConfigDict) -> "FirstStage":
  """The finished first stage in config.latent.first_stage_workdir (its
  dataset kept for the code statistics)."""
  from gen import restore  # restore builds families: imported when one is made
  first_workdir = config.latent.first_stage_workdir
  if not first_workdir or not finished(first_workdir):
    raise UserError(f"config.latent.first_stage_workdir={first_workdir!r} holds no "
                    f"finished run (experiments/main.py trains it first)")
  check_first_stage(_read_config(first_workdir), config, first_workdir)
  run = restore.load_run(first_workdir)
  return FirstStage(run.family, run.params, run.config, run.step, dataset=run.dataset)


@dataclasses.dataclass
class FirstStage:
  """What a latent model keeps of its frozen first stage: the family that
  encodes and decodes, its parameters, config and step, and the per-channel
  statistics that standardize its codes (None: computed from `dataset`, its
  train data)."""
  family: Any
  params: Any
  config: ml_collections.ConfigDict
  step: int
  code_mean: np.ndarray | None = None
  code_std: np.ndarray | None = None
  dataset: Any = None


@FAMILIES.register("latent")
class Latent:
  """A second-stage family (`inner`) trained on the codes of a frozen first stage.

  Everything the loop asks of a family is the inner family's, applied to
  codes; sampling and pictures go through the first stage's decoder.
  """

  code_name = None
  # Its second stages (the diffusion family, RealNVPVector) initialize from shapes.
  data_dependent_init = False

  def __init__(self, config: ml_collections.ConfigDict, info: SourceInfo,
               first_stage: FirstStage | None = None):
    """first_stage: given (a bundle's), or None: the finished run in
    config.latent.first_stage_workdir."""
    self.config, _ = platform.resolve(config)
    self.info = info
    if first_stage is None:
      first_stage = _load_first_stage(config)
    self.first = first_stage
    self.first_family, self.first_params = first_stage.family, first_stage.params
    # A VAE's codes are draws from its posterior q(z | x), a fresh one each
    # step: the second stage then models the aggregate posterior, the prior
    # the VAE's bound wants (Dai and Wipf, 2019), not the posterior means.
    self.posterior_samples = models.get(first_stage.config.model.name).family == "vae"
    if first_stage.code_mean is None:
      first_stage.code_mean, first_stage.code_std = self._code_statistics(
          first_stage.dataset)
    self.code_mean = np.asarray(first_stage.code_mean, np.float32)
    self.code_std = np.asarray(first_stage.code_std, np.float32)
    self.code_shape = tuple(self._encode_shape())
    entry = models.get(config.model.name)
    # A dense second stage (a flow prior) sees the codes flattened.
    self.flatten = getattr(entry.module, "vector_input", False)
    shape = (int(np.prod(self.code_shape)),) if self.flatten else self.code_shape
    # The labels stay the images': a conditional second stage models the codes of each class.
    self.code_info = SourceInfo(f"{info.name}/codes", shape, "latent", info.num_classes,
                                tuple(info.class_names))
    self.inner = FAMILIES.get(entry.family)(self.config, self.code_info)
    # What the loop reads off a family.
    for name in ("eval_loss_key", "final_eval_differs", "curve_keys", "model"):
      setattr(self, name, getattr(self.inner, name))
    self.dequantize_in_eval = self.first_family.dequantize_in_eval
    # A flow prior on a VAE's codes: the end of the run adds the VAE's bounds.
    self.vae_prior = self.posterior_samples and hasattr(self.inner, "log_likelihood")
    self.final_eval_differs = self.final_eval_differs or self.vae_prior

  # --- the codes ------------------------------------------------------------------
  def _encode_shape(self):
    dummy = jnp.zeros((1, *self.info.shape), jnp.float32)
    return jax.eval_shape(lambda x: self._raw_codes(self.first_params, x), dummy).shape[1:]

  def _raw_codes(self, first_params, x, keys=None):
    """x in the first stage's space -> its code. A VAE's: the posterior mean,
    or with `keys` (one per example) a draw from its posterior."""
    code = self.first_family.encode(first_params, x)
    if not isinstance(code, tuple):
      return code
    mean, log_var = code
    if keys is None:
      return mean
    noise = jax.vmap(lambda key: jax.random.normal(key, mean.shape[1:]))(keys)
    return mean + jnp.exp(0.5 * log_var) * noise

  def _code_keys(self, rng, batch):
    """Per-example keys of the posterior draws (None: the code is deterministic)."""
    return example_keys(rng, batch["uid"]) if self.posterior_samples else None

  def _code_statistics(self, dataset):
    """Per-channel mean and std [1, ..., c] of the codes of up to 10,000 train images
    of `dataset` (a VAE's: posterior draws, whose spread includes the posterior's own)."""
    from gen.families.autoencoder import train_codes
    codes = train_codes(lambda p, batch: self._raw_codes(
        p, self.first_family.prepare(batch, None, train=False),
        self._code_keys(jax.random.PRNGKey(_STATISTICS_SEED), batch)), self.first_params,
        dataset, _STATISTICS_IMAGES).astype(np.float64)
    axes = tuple(range(codes.ndim - 1))
    mean = codes.mean(axis=axes, keepdims=True)
    std = np.maximum(codes.std(axis=axes, keepdims=True), 1e-6)
    return mean.astype(np.float32), std.astype(np.float32)

  def encode(self, batch: dict, rng=None):
    """Raw batch -> standardized codes [b, *code_shape] float32; a VAE's are
    posterior draws from per-example keys of `rng`, its means without one."""
    x = self.first_family.prepare(batch, None, train=False)
    keys = None if rng is None else self._code_keys(rng, batch)
    codes = (self._raw_codes(self.first_params, x, keys) - self.code_mean) / self.code_std
    return codes.reshape(codes.shape[0], -1) if self.flatten else codes

  def log_prior(self, params, z):
    """[n, latent] raw codes -> [n] log density of the learned prior, nats: the
    second stage's log-likelihood of the standardized code, moved back to the
    raw code's units (a flow prior only: its density is exact)."""
    standardized = ((z.reshape(z.shape[0], *self.code_shape) - self.code_mean)
                    / self.code_std).reshape(z.shape[0], *self.code_info.shape)
    log_p, _ = self.inner.log_likelihood(params, standardized)
    return log_p - jnp.sum(jnp.log(self.code_std))

  def decode(self, codes):
    """Standardized codes -> images [b, h, w, c] in [0, 1]."""
    codes = codes.reshape(codes.shape[0], *self.code_shape)
    return self.first_family.decode_to_unit(self.first_params,
                                            codes * self.code_std + self.code_mean)

  def _code_batch(self, batch: dict, rng=None) -> dict:
    return {**batch, "x": self.encode(batch, rng)}

  def _split(self, rng):
    """(the key of the posterior draws, the inner family's key); without
    posterior draws the inner family keeps the whole key, as before."""
    if not self.posterior_samples:
      return None, rng
    code_rng, rng = jax.random.split(rng)
    return code_rng, rng

  # --- what the loop calls (the inner family's, on codes) ---------------------------
  def check_config(self) -> list[str]:
    return self.inner.check_config()

  def init_params(self, rng):
    return self.inner.init_params(rng)

  def num_params(self, params) -> int:
    return self.inner.num_params(params)

  def make_optimizer(self):
    return self.inner.make_optimizer()

  def init_opt_state(self, tx, params):
    return self.inner.init_opt_state(tx, params)

  def loss(self, params, batch, rng, step):
    code_rng, rng = self._split(rng)
    return self.inner.loss(params, self._code_batch(batch, code_rng), rng, step)

  def train_step(self, state, batch, rng, tx):
    code_rng, rng = self._split(rng)
    return self.inner.train_step(state, self._code_batch(batch, code_rng), rng, tx)

  def evaluate(self, params, batch, rng, final=False):
    # Evaluation's posterior draws come from a fixed key and the example ids.
    eval_rng = jax.random.PRNGKey(_EVAL_SEED) if self.posterior_samples else None
    metrics = self.inner.evaluate(params, self._code_batch(batch, eval_rng), rng, final)
    if final and self.vae_prior:
      metrics.update(self.vae_bounds(params, batch))
    return metrics

  def vae_bounds(self, params, batch) -> dict:
    """The first-stage VAE's bounds on the test images in bits/dim, with its
    N(0, I) prior and with the learned one, on the same posterior draws:
    one-sample ELBO and importance-weighted with K = config.eval.iw_samples."""
    vae, first_params = self.first_family, self.first_params
    x = vae.prepare(batch, None, train=False)
    target = vae.targets(batch, x)
    keys = example_keys(jax.random.PRNGKey(_EVAL_SEED + 1), batch["uid"])
    learned = lambda z: self.log_prior(params, z)
    name = vae._bound_name
    samples = self.config.eval.iw_samples
    chunk = min(self.config.eval.iw_chunk, samples) if samples else 1
    metrics = {}
    for count, label in ((1, "elbo"), (samples, f"iw{samples}")):
      if not count:
        continue
      size = 1 if count == 1 else chunk
      for prior, prefix in ((None, ""), (learned, "learned_prior_")):
        log_px = vae.iw_log_likelihood(first_params, x, target, keys, count, size, prior)
        metrics[f"{name}_{prefix}{label}_bound"] = vae._to_report_units(-log_px)
    return metrics

  def anomaly_scores(self, params, batch, rng):
    eval_rng = jax.random.PRNGKey(_EVAL_SEED) if self.posterior_samples else None
    return self.inner.anomaly_scores(params, self._code_batch(batch, eval_rng), rng)

  def to_pixels(self, images):
    return self.first_family.to_pixels(images)

  @property
  def num_classes(self) -> int:
    return getattr(self.inner, "num_classes", 0)

  def sample(self, params, rng, num: int, temperature=1.0, labels=None):
    """[num, h, w, c] images in [0, 1]: the second stage's codes, decoded (of
    classes `labels`, for a conditional second stage)."""
    kwargs = {} if labels is None else {"labels": labels}
    return self.decode(self.inner.sample_codes(params, rng, num, temperature, **kwargs))

  def sampler(self, params, dataset):
    return (lambda p, rng, count: self.sample(p, rng, count, 1.0)), params

  def reconstructor(self, params):
    """images -> decode(encode(images)), in [0, 1]: the first stage's floor."""
    return lambda batch: self.decode(self.encode(batch))

  def visualize(self, params, batch, rng):
    """samples (decoded), and rows of images over their reconstructions by the first stage."""
    from gen.families.base import interleave_rows
    from gen.data import to_unit
    x = self.first_family.prepare(batch, rng, train=False)
    originals = jnp.clip(to_unit(x, self.first.config.data.scale), 0.0, 1.0)
    return {"samples": self.sample(params, rng, batch["x"].shape[0]),
            "reconstructions": interleave_rows(originals, self.reconstructor(params)(batch))}

  def report(self, params, dataset, mesh, workdir, step):
    evaluation = self.config.eval
    report = sampling.sample_report(self, params, workdir, step, evaluation.num_images,
                                    evaluation.temperatures)
    report["first_stage"] = {"workdir": self.config.latent.first_stage_workdir,
                             "model": self.first.config.model.name, "step": self.first.step,
                             "code_shape": list(self.code_info.shape)}
    return report
