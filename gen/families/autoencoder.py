"""Autoencoders: reconstruct the input through a bottleneck.

The course's experiment compares output activations and losses, so both are
settings (`config.model.output_activation`, `config.model.loss`); test MSE on
[0, 1] pixels is computed for every pairing so that they can be compared.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gen import losses
from gen.data import to_unit
from gen.families import FAMILIES
from gen.families.base import Family, interleave_rows

_PROBABILITY_LOSSES = ("binary_crossentropy", "categorical_crossentropy", "kullback_leibler")
_DISTRIBUTION_LOSSES = ("categorical_crossentropy", "kullback_leibler")
# The range each output activation can produce.
_OUTPUT_RANGE = {"sigmoid": (0.0, 1.0), "softmax": (0.0, 1.0), "relu": (0.0, None),
                 "tanh": (-1.0, 1.0), "linear": (None, None)}


@FAMILIES.register("autoencoder")
class Autoencoder(Family):
  config_keys = ("loss", "output_activation", "code_noise")

  @property
  def code_noise(self) -> float:
    return float(self.config.model.get("code_noise", 0.0))

  def check_config(self) -> list[str]:
    model, data = self.config.model, self.config.data
    if model.loss not in losses.LOSSES:
      raise ValueError(f"config.model.loss={model.loss!r} is not known; "
                       f"valid: {', '.join(sorted(losses.LOSSES))}")
    if model.output_activation not in losses.ACTIVATIONS:
      raise ValueError(f"config.model.output_activation={model.output_activation!r} is "
                       f"not known; valid: {', '.join(losses.ACTIVATIONS)}")
    low = -1.0 if (data.scale == "symmetric" and self.info.kind == "image") else 0.0
    if self.info.kind == "image":
      out_low, _ = _OUTPUT_RANGE[model.output_activation]
      if out_low is not None and out_low > low:
        raise ValueError(
            f"config.model.output_activation={model.output_activation!r} cannot produce "
            f"the negative pixels of config.data.scale='symmetric' (targets in [-1, 1]); "
            f"use scale='unit' or output_activation='tanh' or 'linear'")
      if model.loss in _PROBABILITY_LOSSES and low < 0:
        raise ValueError(
            f"config.model.loss={model.loss!r} needs targets in [0, 1], but "
            f"config.data.scale='symmetric' gives [-1, 1]; use scale='unit'")
    if model.loss in _DISTRIBUTION_LOSSES and self.info.shape[-1] < 2:
      raise ValueError(
          f"config.model.loss={model.loss!r} compares distributions over the last axis, "
          f"which has size {self.info.shape[-1]} for {self.info.name}; "
          f"use binary_crossentropy for pixel intensities")
    if not 0.0 <= self.code_noise < 1.0:
      raise ValueError(f"config.model.code_noise={self.code_noise} must be in [0, 1): the "
                       f"noise's std against codes of unit RMS")
    warning = losses.check_pairing(model.loss, model.output_activation)
    return [warning] if warning else []

  def _reconstruct_logits(self, params, x, noise_rng=None):
    """Logits of decode(encode(x)); with `noise_rng` (training) and
    config.model.code_noise > 0, the decoder sees the code plus Gaussian noise
    of that std: a decoder trained so tolerates a second stage's small errors
    (measured: docs/diffusion.md)."""
    code = self.encode(params, x)
    if noise_rng is not None and self.code_noise > 0:
      code = code + self.code_noise * jax.random.normal(noise_rng, code.shape, code.dtype)
    return self.apply_model({"params": params}, code, method="decode")

  def loss(self, params, batch, rng, step):
    noise_rng = None
    if self.code_noise > 0:  # (without it, the same random stream as before)
      rng, noise_rng = jax.random.split(rng)
    x = self.prepare(batch, rng, train=True)
    logits = self._reconstruct_logits(params, x, noise_rng)
    per_example = losses.reconstruction_loss(
        self.config.model.loss, self.config.model.output_activation, logits, x)
    return jnp.mean(per_example), {}

  def reconstruct(self, params, x):
    """x: [batch, *shape] model-space input -> reconstruction in the same space."""
    logits = self._reconstruct_logits(params, x)
    return losses.apply_activation(self.config.model.output_activation, logits)

  def encode(self, params, x):
    code = self.apply_model({"params": params}, x, method="encode")
    if self.code_noise > 0:
      # Noise only means something against a fixed scale: each code is
      # divided by its RMS, or the encoder would grow its codes until the
      # noise no longer mattered.
      axes = tuple(range(1, code.ndim))
      code = code * jax.lax.rsqrt(jnp.mean(jnp.square(code), axis=axes, keepdims=True) + 1e-6)
    return code

  def decode_to_unit(self, params, code):
    """A code -> the image it decodes to, in [0, 1] (a latent model's last step)."""
    logits = self.apply_model({"params": params}, code, method="decode")
    images = losses.apply_activation(self.config.model.output_activation, logits)
    return jnp.clip(to_unit(images, self.config.data.scale), 0.0, 1.0)

  def sampler(self, params, dataset, max_codes: int = 10_000):
    """An autoencoder has no prior to sample; the simplest generative use of one
    fits a full-covariance Gaussian to the codes of (up to `max_codes`) train
    images and decodes draws from it. This gives the autoencoder a place in the
    same sample-quality table as the other families."""
    if self.info.kind != "image":
      return None
    codes = train_codes(lambda p, b: self.encode(p, self.prepare(b, None, train=False)),
                        params, dataset, max_codes)
    rows = dataset.train.rows[:max_codes]
    code_shape = codes.shape[1:]  # a conv autoencoder's code is a feature map
    codes = codes.reshape(len(rows), -1).astype(np.float64)
    mean, cov = codes.mean(axis=0), np.cov(codes, rowvar=False)
    # A small ridge: a dead code unit would make the covariance singular.
    chol = np.linalg.cholesky(cov + 1e-6 * np.eye(len(mean)) * max(np.trace(cov), 1e-6))

    def sample(sampler_params, rng, count):
      model_params, code_mean, code_chol = sampler_params
      z = code_mean + jax.random.normal(rng, (count, code_mean.shape[0])) @ code_chol.T
      return self.decode_to_unit(model_params, z.reshape(count, *code_shape))

    return sample, (params, jnp.asarray(mean, jnp.float32), jnp.asarray(chol, jnp.float32))

  code_name = "bottleneck activation"

  def reconstructor(self, params):
    """batch -> reconstructed images in [0, 1], for the reconstruction FD."""
    scale = self.config.data.scale
    return lambda batch: jnp.clip(to_unit(self.reconstruct(
        params, self.prepare(batch, None, train=False)), scale), 0.0, 1.0)

  def codes(self, params, batch):
    x = self.prepare(batch, None, train=False)
    code = self.encode(params, x)
    return code.reshape(code.shape[0], -1)

  def anomaly_scores(self, params, batch, rng):
    return {"reconstruction_mse": self.evaluate(params, batch, rng)["mse"]}

  def evaluate(self, params, batch, rng, final=False):
    x = self.prepare(batch, rng, train=False)
    logits = self._reconstruct_logits(params, x)
    model = self.config.model
    per_example = losses.reconstruction_loss(model.loss, model.output_activation, logits, x)
    recon = losses.apply_activation(model.output_activation, logits)
    axes = tuple(range(1, x.ndim))
    if self.info.kind == "image":
      # MSE on [0, 1] pixels, whatever the loss: the number runs are compared by.
      scale = self.config.data.scale
      error = to_unit(recon, scale) - to_unit(x, scale)
    else:
      error = recon - x
    return {"loss": per_example,
            "mse": jnp.mean(error ** 2, axis=axes),
            "mae": jnp.mean(jnp.abs(error), axis=axes)}

  def visualize(self, params, batch, rng):
    x = self.prepare(batch, rng, train=False)
    recon = self.reconstruct(params, x)
    if self.info.kind != "image":
      return {"reconstructions": recon}
    scale = self.config.data.scale
    interleaved = interleave_rows(to_unit(x, scale), to_unit(recon, scale))
    return {"reconstructions": jnp.clip(interleaved, 0.0, 1.0)}


def train_codes(encode, params, dataset, count: int, chunk: int = 1000) -> np.ndarray:
  """encode(params, raw batch) of the first `count` train rows, `chunk` at a
  time, as one numpy array (an autoencoder's Gaussian sampler and a latent
  model's code statistics)."""
  encode = jax.jit(encode)
  rows = dataset.train.rows[:count]
  codes = []
  for start in range(0, len(rows), chunk):
    batch = dataset.train_source.take(rows[start:start + chunk])
    batch = {"x": batch["x"], "uid": rows[start:start + chunk].astype(np.int32)}
    codes.append(np.asarray(encode(params, batch)))
  return np.concatenate(codes)
