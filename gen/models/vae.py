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
import jax.numpy as jnp

from gen.models import layers, register

DECODERS = ("bernoulli", "logistic", "gaussian")


def decoder_outputs(decoder: str) -> int:
  if decoder not in DECODERS:
    raise ValueError(f"config.model.decoder={decoder!r} is not known; "
                     f"valid: {', '.join(DECODERS)}")
  return 1 if decoder == "bernoulli" else 2


class _VAEBase(nn.Module):
  """encode(x) -> (mean, log_var) [b, latent]; decode(z) -> [b, *data_shape, outputs]."""

  def __call__(self, x):
    mean, _ = self.encode(x)
    return self.decode(mean)


@register("vae", family="vae")
class DenseVAE(_VAEBase):
  data_shape: Sequence[int]
  latent_dim: int = 16
  hidden_sizes: Sequence[int] = (512, 256)
  activation: str = "relu"
  decoder: str = "bernoulli"
  dtype: Any = jnp.float32

  def setup(self):
    self.outputs = decoder_outputs(self.decoder)
    dense = lambda size: nn.Dense(size, dtype=self.dtype)
    self.encoder_layers = [dense(size) for size in self.hidden_sizes]
    self.posterior = dense(2 * self.latent_dim)
    self.decoder_layers = [dense(size) for size in reversed(self.hidden_sizes)]
    self.likelihood = dense(math.prod(self.data_shape) * self.outputs)

  def encode(self, x):
    act = layers.activation(self.activation)
    h = x.reshape(x.shape[0], -1)
    for layer in self.encoder_layers:
      h = act(layer(h))
    mean, log_var = jnp.split(self.posterior(h), 2, axis=-1)
    return mean, log_var

  def decode(self, z):
    act = layers.activation(self.activation)
    h = z
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
  dtype: Any = jnp.float32

  def setup(self):
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

  def encode(self, x):
    act = layers.activation(self.activation)
    h = x
    for conv in self.down:
      h = act(conv(h))
    h = act(self.encoder_dense(h.reshape(h.shape[0], -1)))
    mean, log_var = jnp.split(self.posterior(h), 2, axis=-1)
    return mean, log_var

  def decode(self, z):
    act = layers.activation(self.activation)
    h = act(self.decoder_dense(z))
    h = act(self.decoder_bottom(h)).reshape(z.shape[0], *self.bottom)
    for conv in self.up:
      h = act(conv(h))
    out = self.likelihood(h)
    return out.reshape(z.shape[0], *self.data_shape, self.outputs)
