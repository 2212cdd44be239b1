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


def check_halvings(model_name: str, data_shape, features) -> None:
  """ValueError naming the key when images cannot be halved once per entry of `features`."""
  if len(data_shape) != 3:
    raise ValueError(f"config.model.name={model_name!r} needs image data; "
                     f"got examples of shape {tuple(data_shape)}")
  scale = 2 ** len(features)
  if data_shape[0] % scale or data_shape[1] % scale:
    raise ValueError(
        f"config.model.features={tuple(features)} halves the image "
        f"{len(features)} times, so height and width must be divisible by "
        f"{scale}; the data is {tuple(data_shape)}")


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
    check_halvings("conv_autoencoder", self.data_shape, self.features)
    self.encoder = _ConvEncoder(self.features, self.bottleneck, self.activation, self.dtype)
    self.decoder = _ConvDecoder(self.features, self.data_shape, self.activation,
                                self.conv_transpose_impl, self.dtype)

  def encode(self, x):
    return self.encoder(x)

  def decode(self, z):
    return self.decoder(z)

  def __call__(self, x):
    return self.decode(self.encode(x))


class _ResidualBlock(nn.Module):
  """x + conv(act(conv(act(x)))), 3x3 convolutions, no normalization (the
  batch-norm-free autoencoders of latent diffusion's first stage work with
  GroupNorm; at these sizes plain residuals train as well and faster on CPU)."""

  features: int
  activation: str
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    act = layers.activation(self.activation)
    if x.shape[-1] != self.features:
      x = nn.Conv(self.features, (1, 1), dtype=self.dtype)(x)
    h = nn.Conv(self.features, (3, 3), dtype=self.dtype)(act(x))
    # Zero-initialized: each block starts as the identity.
    h = nn.Conv(self.features, (3, 3), kernel_init=nn.initializers.zeros_init(),
                dtype=self.dtype)(act(h))
    return x + h


class _SpatialEncoder(nn.Module):
  features: Sequence[int]
  code_channels: int
  num_res_blocks: int
  activation: str
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    block = lambda width: _ResidualBlock(width, self.activation, self.dtype)
    h = nn.Conv(self.features[0], (3, 3), dtype=self.dtype)(x)
    for width in self.features:
      for _ in range(self.num_res_blocks):
        h = block(width)(h)
      h = nn.Conv(width, (3, 3), strides=(2, 2), dtype=self.dtype)(h)
    for _ in range(self.num_res_blocks):
      h = block(self.features[-1])(h)
    act = layers.activation(self.activation)
    return nn.Conv(self.code_channels, (3, 3), dtype=self.dtype)(act(h))


class _SpatialDecoder(nn.Module):
  features: Sequence[int]
  out_channels: int
  num_res_blocks: int
  activation: str
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z):
    block = lambda width: _ResidualBlock(width, self.activation, self.dtype)
    h = nn.Conv(self.features[-1], (3, 3), dtype=self.dtype)(z)
    for _ in range(self.num_res_blocks):
      h = block(self.features[-1])(h)
    for width in reversed(self.features):
      # Nearest-neighbour 2x as a repeat (its gradient is a cheap reshape-sum).
      h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
      h = nn.Conv(width, (3, 3), dtype=self.dtype)(h)
      for _ in range(self.num_res_blocks):
        h = block(width)(h)
    act = layers.activation(self.activation)
    return nn.Conv(self.out_channels, (3, 3), dtype=self.dtype)(act(h))


@register("spatial_autoencoder", family="autoencoder")
class SpatialAutoencoder(nn.Module):
  """An autoencoder whose code is a small feature map: the first stage of a
  latent generative model (configs/latent.py), as in latent diffusion
  (Rombach et al., 2022).

  Encoder: a 3x3 convolution, then per entry of `features` residual blocks
  and a stride-2 convolution; residual blocks at the lowest resolution and a
  3x3 convolution to `code_channels`. The decoder mirrors it, upsampling by
  nearest-neighbour repetition and a 3x3 convolution (no transposed
  convolutions: they are XLA:CPU's slowest layer, docs/cpu_speed.md).
  x: [batch, h, w, c] -> logits [batch, h, w, c]; the code is
  [batch, h / 2^L, w / 2^L, code_channels], L = len(features).
  """

  data_shape: Sequence[int]
  features: Sequence[int] = (32, 64)
  code_channels: int = 4
  num_res_blocks: int = 1
  activation: str = "silu"
  dtype: Any = jnp.float32

  def setup(self):
    check_halvings("spatial_autoencoder", self.data_shape, self.features)
    if self.code_channels < 1:
      raise ValueError(f"config.model.code_channels={self.code_channels} must be >= 1")
    self.encoder = _SpatialEncoder(self.features, self.code_channels, self.num_res_blocks,
                                   self.activation, self.dtype)
    self.decoder = _SpatialDecoder(self.features, self.data_shape[-1], self.num_res_blocks,
                                   self.activation, self.dtype)

  def encode(self, x):
    return self.encoder(x)

  def decode(self, z):
    return self.decoder(z)

  def __call__(self, x):
    return self.decode(self.encode(x))
