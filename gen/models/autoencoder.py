"""Dense and convolutional autoencoders.

Both return decoder *logits*: the output activation is applied by the loss
(`gen.losses`), which can then use the numerically stable from-logits forms.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from gen.models import layers, register


class _DenseEncoder(nn.Module):
  hidden_sizes: Sequence[int]
  bottleneck: int
  activation: str
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    act = layers.activation(self.activation)
    h = x.reshape(x.shape[0], -1)
    for size in self.hidden_sizes:
      h = act(nn.Dense(size, dtype=self.dtype)(h))
    # The code is the bottleneck layer's activation, as in the course's Keras model.
    return act(nn.Dense(self.bottleneck, dtype=self.dtype)(h))


class _DenseDecoder(nn.Module):
  hidden_sizes: Sequence[int]
  output_shape: Sequence[int]
  activation: str
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z):
    act = layers.activation(self.activation)
    h = z
    for size in reversed(self.hidden_sizes):
      h = act(nn.Dense(size, dtype=self.dtype)(h))
    logits = nn.Dense(math.prod(self.output_shape), dtype=self.dtype)(h)
    return logits.reshape(z.shape[0], *self.output_shape)


@register("dense_autoencoder", family="autoencoder")
class DenseAutoencoder(nn.Module):
  """input -> hidden_sizes -> bottleneck -> reversed(hidden_sizes) -> input.

  x: [batch, *data_shape] float32 -> logits of the same shape.
  """

  data_shape: Sequence[int]
  bottleneck: int = 64
  hidden_sizes: Sequence[int] = (128,)
  activation: str = "relu"
  # Computation dtype (config.train.compute_dtype); parameters stay float32.
  dtype: Any = jnp.float32

  def setup(self):
    self.encoder = _DenseEncoder(self.hidden_sizes, self.bottleneck, self.activation,
                                 self.dtype)
    self.decoder = _DenseDecoder(self.hidden_sizes, self.data_shape, self.activation,
                                 self.dtype)

  def encode(self, x):
    return self.encoder(x)

  def decode(self, z):
    return self.decoder(z)

  def __call__(self, x):
    return self.decode(self.encode(x))


class _ConvEncoder(nn.Module):
  features: Sequence[int]
  bottleneck: int
  activation: str
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    act = layers.activation(self.activation)
    h = x
    for width in self.features:
      h = act(nn.Conv(width, (3, 3), strides=(2, 2), padding="SAME", dtype=self.dtype)(h))
    return act(nn.Dense(self.bottleneck, dtype=self.dtype)(h.reshape(h.shape[0], -1)))


class _ConvDecoder(nn.Module):
  features: Sequence[int]
  data_shape: Sequence[int]
  activation: str
  conv_transpose_impl: str
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z):
    act = layers.activation(self.activation)
    height, width, channels = self.data_shape
    scale = 2 ** len(self.features)
    h = act(nn.Dense(height // scale * width // scale * self.features[-1], dtype=self.dtype)(z))
    h = h.reshape(z.shape[0], height // scale, width // scale, self.features[-1])
    for width_out in reversed(self.features):
      h = act(layers.ConvTranspose(width_out, 3, 2, impl=self.conv_transpose_impl,
                                   dtype=self.dtype)(h))
    return nn.Conv(channels, (3, 3), padding="SAME", dtype=self.dtype)(h)


@register("conv_autoencoder", family="autoencoder")
class ConvAutoencoder(nn.Module):
  """Stride-2 convolutions down to a dense bottleneck, and back up.

  x: [batch, height, width, channels] float32 -> logits of the same shape.
  height and width must be divisible by 2 ** len(features).
  """

  data_shape: Sequence[int]
  bottleneck: int = 64
  features: Sequence[int] = (32, 64)
  activation: str = "relu"
  # How the stride-2 transposed convolutions are computed (gen.models.layers.
  # ConvTranspose): same parameters and outputs, different speed.
  conv_transpose_impl: str = "phases"
  dtype: Any = jnp.float32

  def setup(self):
    if self.conv_transpose_impl not in layers.CONV_TRANSPOSE_IMPLS:
      raise ValueError(f"config.model.conv_transpose_impl={self.conv_transpose_impl!r} is "
                       f"not known; valid: {', '.join(layers.CONV_TRANSPOSE_IMPLS)}")
    if len(self.data_shape) != 3:
      raise ValueError(f"config.model.name='conv_autoencoder' needs image data; "
                       f"got examples of shape {tuple(self.data_shape)}")
    scale = 2 ** len(self.features)
    if self.data_shape[0] % scale or self.data_shape[1] % scale:
      raise ValueError(
          f"config.model.features={tuple(self.features)} halves the image "
          f"{len(self.features)} times, so height and width must be divisible by "
          f"{scale}; the data is {tuple(self.data_shape)}")
    self.encoder = _ConvEncoder(self.features, self.bottleneck, self.activation, self.dtype)
    self.decoder = _ConvDecoder(self.features, self.data_shape, self.activation,
                                self.conv_transpose_impl, self.dtype)

  def encode(self, x):
    return self.encoder(x)

  def decode(self, z):
    return self.decoder(z)

  def __call__(self, x):
    return self.decode(self.encode(x))
