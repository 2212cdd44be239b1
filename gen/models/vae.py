"""VAE encoders and decoders: dense (MLP) and convolutional.

The encoder gives the mean and log-variance of a diagonal Gaussian q(z | x);
the decoder gives the parameters of p(x | z), how many per value depending
on `decoder` (gen.families.vae reads them):
  bernoulli  1: logits of binarized pixels;
  logistic   2: mean and log-scale of a discretized logistic per 8-bit value;
  gaussian   2: mean and log-scale of a Gaussian per value (2-D points).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen.models import layers, register

DECODERS = ("bernoulli", "logistic", "gaussian")


def decoder_outputs(decoder: str) -> int:
  if decoder not in DECODERS:
    raise ValueError(f"config.model.decoder={decoder!r} is not known; "
                     f"valid: {', '.join(DECODERS)}")
  return 1 if decoder == "bernoulli" else 2


class _VAEBase(nn.Module):
  """encode(x) -> (mean, log_var) [b, latent]; decode(z) -> [b, *data_shape, outputs].

  With num_classes > 0 (a conditional VAE) both also see the label, one-hot,
  beside the encoder's features and beside z; labels None is the all-zero
  vector ("no class": codes for a first stage, pictures). prior(labels) is
  p(z | y): N(0, I), or with class_prior a learned diagonal Gaussian per class
  (Sohn et al., 2015's conditional prior), which keeps the class in z where
  samples draw it from (docs/conditional.md: with N(0, I) the decoder reads
  the class from z and ignores the label)."""

  def __call__(self, x, labels=None):
    mean, _ = self.encode(x, labels)
    self.prior(labels, x.shape[0])  # creates the prior's parameters at init
    return self.decode(mean, labels)

  def setup_prior(self):
    if self.class_prior:
      table = lambda name: self.param(name, nn.initializers.zeros,
                                      (self.num_classes, self.latent_dim))
      self.prior_means, self.prior_log_vars = table("prior_mean"), table("prior_log_var")

  def prior(self, labels, batch: int):
    """(mean, log_var) of p(z | y), each [batch, latent]; N(0, I) without a class
    prior or without labels."""
    if not self.class_prior or labels is None:
      zeros = jnp.zeros((batch, self.latent_dim), jnp.float32)
      return zeros, zeros
    return self.prior_means[labels], self.prior_log_vars[labels]

  def with_label(self, h, labels):
    if not self.num_classes:
      return h
    onehot = (jnp.zeros((h.shape[0], self.num_classes), h.dtype) if labels is None
              else jax.nn.one_hot(labels, self.num_classes, dtype=h.dtype))
    return jnp.concatenate([h, onehot], axis=-1)


@register("vae", family="vae")
class DenseVAE(_VAEBase):
  data_shape: Sequence[int]
  latent_dim: int = 16
  hidden_sizes: Sequence[int] = (512, 256)
  activation: str = "relu"
  decoder: str = "bernoulli"
  num_classes: int = 0
  class_prior: bool = False
  dtype: Any = jnp.float32

  def setup(self):
    self.setup_prior()
    self.outputs = decoder_outputs(self.decoder)
    dense = lambda size: nn.Dense(size, dtype=self.dtype)
    self.encoder_layers = [dense(size) for size in self.hidden_sizes]
    self.posterior = dense(2 * self.latent_dim)
    self.decoder_layers = [dense(size) for size in reversed(self.hidden_sizes)]
    self.likelihood = dense(math.prod(self.data_shape) * self.outputs)

  def encode(self, x, labels=None):
    act = layers.activation(self.activation)
    h = self.with_label(x.reshape(x.shape[0], -1), labels)
    for layer in self.encoder_layers:
      h = act(layer(h))
    mean, log_var = jnp.split(self.posterior(h), 2, axis=-1)
    return mean, log_var

  def decode(self, z, labels=None):
    act = layers.activation(self.activation)
    h = self.with_label(z, labels)
    for layer in self.decoder_layers:
      h = act(layer(h))
    return self.likelihood(h).reshape(z.shape[0], *self.data_shape, self.outputs)


@register("conv_vae", family="vae")
class ConvVAE(_VAEBase):
  """Stride-2 3x3 convolutions down (one per entry of `channels`), a dense
  layer to the latent; the decoder mirrors it with transposed convolutions."""

  data_shape: Sequence[int]
  latent_dim: int = 16
  channels: Sequence[int] = (32, 64)
  hidden_size: int = 256
  activation: str = "relu"
  decoder: str = "logistic"
  conv_transpose_impl: str = "phases"
  num_classes: int = 0
  class_prior: bool = False
  dtype: Any = jnp.float32

  def setup(self):
    self.setup_prior()
    self.outputs = decoder_outputs(self.decoder)
    height, width, _ = self.data_shape
    factor = 2 ** len(self.channels)
    if height % factor or width % factor:
      raise ValueError(
          f"config.model.channels={tuple(self.channels)} halves the image "
          f"{len(self.channels)} times, but {height}x{width} is not divisible by {factor}")
    self.bottom = (height // factor, width // factor, self.channels[-1])
    dense = lambda size: nn.Dense(size, dtype=self.dtype)
    self.down = [nn.Conv(c, (3, 3), strides=(2, 2), dtype=self.dtype) for c in self.channels]
    self.encoder_dense = dense(self.hidden_size)
    self.posterior = dense(2 * self.latent_dim)
    self.decoder_dense = dense(self.hidden_size)
    self.decoder_bottom = dense(math.prod(self.bottom))
    ups = list(reversed(self.channels))[1:] + [self.channels[0]]
    self.up = [layers.ConvTranspose(c, 3, 2, self.conv_transpose_impl, self.dtype)
               for c in ups]
    self.likelihood = nn.Conv(self.data_shape[-1] * self.outputs, (3, 3), dtype=self.dtype)

  def encode(self, x, labels=None):
    act = layers.activation(self.activation)
    h = x
    for conv in self.down:
      h = act(conv(h))
    h = act(self.encoder_dense(self.with_label(h.reshape(h.shape[0], -1), labels)))
    mean, log_var = jnp.split(self.posterior(h), 2, axis=-1)
    return mean, log_var

  def decode(self, z, labels=None):
    act = layers.activation(self.activation)
    h = act(self.decoder_dense(self.with_label(z, labels)))
    h = act(self.decoder_bottom(h)).reshape(z.shape[0], *self.bottom)
    for conv in self.up:
      h = act(conv(h))
    out = self.likelihood(h)
    return out.reshape(z.shape[0], *self.data_shape, self.outputs)
