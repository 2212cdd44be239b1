"""Generator/discriminator pairs: DCGAN (Radford et al., 2016) and a 2-D MLP pair.

A pair is one Flax module whose parameters are {"generator": ...,
"discriminator": ...}, so the GAN family can give each half its own optimizer
and test that each phase of a step touches only its own half. `generate` and
`discriminate` are the two methods; `__call__` runs both (for init).

Normalization holds no hidden state: the generator's batch norm always uses
the statistics of the batch it is given (no running averages; a sample
depends on the batch it is drawn in, as in training), and the
discriminator's spectral normalization runs its power iteration from a fixed
start vector on every call instead of carrying one between steps.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen.models import register
from gen.models import layers
from gen.models.layers import activation

GENERATOR_NORMS = ("batch", "layer", "none")


def spectral_normalize(kernel, iterations: int):
  """kernel / sigma_max(kernel), sigma from `iterations` of power iteration.

  The kernel is read as a [fan_in, fan_out] matrix. The iteration starts from
  a fixed vector, so the result is a pure function of the kernel; its
  vectors are constants to differentiation (Miyato et al., 2018, do the same).
  """
  matrix = kernel.reshape(-1, kernel.shape[-1])
  v = jnp.ones((matrix.shape[1],), matrix.dtype) / jnp.sqrt(matrix.shape[1])
  weights = jax.lax.stop_gradient(matrix)
  for _ in range(iterations):
    u = weights @ v
    u = u / (jnp.linalg.norm(u) + 1e-12)
    v = weights.T @ u
    v = v / (jnp.linalg.norm(v) + 1e-12)
  sigma = u @ matrix @ v
  return kernel / sigma


class SNDense(nn.Module):
  """nn.Dense whose kernel is spectrally normalized when `iterations` > 0."""

  features: int
  iterations: int = 0

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    if self.iterations:
      kernel = spectral_normalize(kernel, self.iterations)
    return x @ kernel + bias


class SNConv(nn.Module):
  """A strided 'SAME' convolution whose kernel is spectrally normalized when
  `iterations` > 0."""

  features: int
  kernel_size: int = 4
  stride: int = 2
  iterations: int = 0

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (k, k, x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    if self.iterations:
      kernel = spectral_normalize(kernel, self.iterations)
    y = jax.lax.conv_general_dilated(x, kernel, (self.stride, self.stride), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + bias


class BatchStatisticsNorm(nn.Module):
  """Batch normalization by the statistics of the batch at hand, always.

  Unlike nn.BatchNorm it keeps no running averages (no mutable collection):
  a pure function of parameters and input. Under jit on a device mesh the
  mean is over the whole (sharded) batch, as on one device.
  """

  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x):
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axis=axes)
    variance = jnp.mean(jnp.square(x - mean), axis=axes)
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
    bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],))
    return (x - mean) * jax.lax.rsqrt(variance + self.epsilon) * scale + bias


def _normalize(kind: str, x):
  if kind == "batch":
    return BatchStatisticsNorm()(x)
  if kind == "layer":
    return nn.LayerNorm()(x)
  return x


class _Pair(nn.Module):
  """Shared by both pairs: `__call__` touches every parameter once (for init)."""

  def __call__(self, z, x):
    return self.generate(z), self.discriminate(x)


class _ConvGenerator(nn.Module):
  data_shape: tuple[int, ...]
  channels: Sequence[int]
  norm: str
  conv_transpose_impl: str

  @nn.compact
  def __call__(self, z):
    height, width, out_channels = self.data_shape
    ups = len(self.channels)
    start_h, start_w = height // 2 ** ups, width // 2 ** ups
    x = nn.Dense(start_h * start_w * self.channels[0] * 2)(z)
    x = x.reshape(z.shape[0], start_h, start_w, self.channels[0] * 2)
    x = nn.relu(_normalize(self.norm, x))
    for width_out in self.channels:
      x = layers.ConvTranspose(width_out, 4, 2, self.conv_transpose_impl)(x)
      x = nn.relu(_normalize(self.norm, x))
    return jnp.tanh(nn.Conv(out_channels, (3, 3))(x))


class _ConvDiscriminator(nn.Module):
  channels: Sequence[int]
  spectral_norm_iterations: int

  @nn.compact
  def __call__(self, x):
    for width in self.channels:
      x = nn.leaky_relu(SNConv(width, iterations=self.spectral_norm_iterations)(x), 0.2)
    x = x.reshape(x.shape[0], -1)
    return SNDense(1, self.spectral_norm_iterations)(x)[:, 0]


@register("dcgan", family="gan")
class DCGAN(_Pair):
  """DCGAN for images in [-1, 1].

  Generator: z [b, latent_dim] -> dense to (h / 2^L) x (w / 2^L) x 2 c_0 ->
  L stride-2 transposed convolutions of widths `generator_channels`
  (c_0, ..., c_{L-1}), each followed by normalization and ReLU -> 3x3 conv
  -> tanh. Discriminator: stride-2 4x4 convolutions of widths
  `discriminator_channels` with leaky ReLU (0.2) -> one logit.
  The image side must be divisible by 2^L (28 = 7 x 4: L = 2).
  """

  data_shape: tuple[int, ...]
  latent_dim: int = 64
  generator_channels: tuple[int, ...] = (128, 64)
  discriminator_channels: tuple[int, ...] = (64, 128)
  generator_norm: str = "batch"
  spectral_norm_iterations: int = 0
  # gen.models.layers.ConvTranspose: "phases" is the fast one on CPU.
  conv_transpose_impl: str = "phases"

  def setup(self):
    if self.generator_norm not in GENERATOR_NORMS:
      raise ValueError(f"config.model.generator_norm={self.generator_norm!r}; valid: "
                       f"{', '.join(GENERATOR_NORMS)}")
    height, width = self.data_shape[:2]
    factor = 2 ** len(self.generator_channels)
    if height % factor or width % factor:
      raise ValueError(
          f"config.model.generator_channels={tuple(self.generator_channels)} doubles the "
          f"size {len(self.generator_channels)} times, so the image side must be divisible "
          f"by {factor}; {height}x{width} is not")
    self.generator = _ConvGenerator(tuple(self.data_shape), tuple(self.generator_channels),
                                    self.generator_norm, self.conv_transpose_impl)
    self.discriminator = _ConvDiscriminator(tuple(self.discriminator_channels),
                                            self.spectral_norm_iterations)

  def generate(self, z):
    """z: [b, latent_dim] -> images [b, h, w, c] in [-1, 1]."""
    return self.generator(z)

  def discriminate(self, x):
    """x: [b, h, w, c] in [-1, 1] -> logits [b] (real > 0)."""
    return self.discriminator(x)


class _MLP(nn.Module):
  hidden_sizes: Sequence[int]
  out: int
  act: str
  spectral_norm_iterations: int = 0

  @nn.compact
  def __call__(self, x):
    for size in self.hidden_sizes:
      x = activation(self.act)(SNDense(size, self.spectral_norm_iterations)(x))
    return SNDense(self.out, self.spectral_norm_iterations)(x)


@register("mlp_gan", family="gan")
class MLPGAN(_Pair):
  """A generator and discriminator of MLPs, for 2-D points (toy2d)."""

  data_shape: tuple[int, ...]
  latent_dim: int = 2
  hidden_sizes: tuple[int, ...] = (128, 128, 128)
  activation: str = "relu"
  spectral_norm_iterations: int = 0

  def setup(self):
    dims = self.data_shape[-1]
    # The generator's parameters never pass through spectral normalization.
    self.generator = _MLP(tuple(self.hidden_sizes), dims, self.activation)
    self.discriminator = _MLP(tuple(self.hidden_sizes), 1, self.activation,
                              self.spectral_norm_iterations)

  def generate(self, z):
    """z: [b, latent_dim] -> points [b, dims]."""
    return self.generator(z)

  def discriminate(self, x):
    """x: [b, dims] -> logits [b]."""
    return self.discriminator(x)[:, 0]
