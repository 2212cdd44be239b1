"""Generator/discriminator pairs: DCGAN (Radford et al., 2016) and a 2-D MLP pair.

A pair is one Flax module whose parameters are {"generator": ...,
"discriminator": ...}, so the GAN family can give each half its own optimizer
and test that each phase of a step touches only its own half. `generate` and
`discriminate` are the two methods; `__call__` runs both (for init).

The generator's batch norm keeps no running averages: in training it uses
the statistics of the batch at hand; in evaluation and sampling those of a
fixed reference batch of latents (see BatchStatisticsNorm), so that a sample
does not depend on the batch it is drawn in. The discriminator's spectral
normalization is flax's nn.SpectralNorm, whose power-iteration vector is
state in the variable collection "spectral", carried between train steps.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen.models import register
from gen.models import layers
from gen.models.layers import activation

GENERATOR_NORMS = ("batch", "layer", "none")


SPECTRAL_COLLECTION = "spectral"


def maybe_spectral_norm(layer: nn.Module, iterations: int, x, update: bool):
  """layer(x), through flax's nn.SpectralNorm when `iterations` > 0.

  The power iteration's vector u is state (collection "spectral") carried
  from step to step, as Miyato et al. (2018) do: one iteration per step then
  tracks the largest singular value closely. Restarted from a fixed vector on
  every call, one iteration underestimated it by 24-42% (measured on this
  DCGAN's kernels), so the "normalized" layers were not 1-Lipschitz.
  `update` stores the new u (training); evaluation reads it.
  """
  if not iterations:
    return layer(x)
  return nn.SpectralNorm(layer, n_steps=iterations, collection_name=SPECTRAL_COLLECTION)(
      x, update_stats=update)


class BatchStatisticsNorm(nn.Module):
  """Batch normalization by batch statistics, with no running averages.

  A pure function of parameters and input (no mutable collection). Under
  jit on a device mesh the mean is over the whole (sharded) batch, as on one
  device. With reference_rows = r > 0 the statistics come from the first r
  rows alone and normalize every row: a fixed reference batch in front of
  the real rows makes each output a function of its own input only, not of
  the batch it is drawn in (virtual batch normalization, Salimans et al.,
  2016; used here for evaluation and sampling, not in training).
  """

  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x, reference_rows: int = 0):
    statistics_of = x[:reference_rows] if reference_rows else x
    # Statistics in float32 whatever the compute dtype.
    statistics_of = statistics_of.astype(jnp.float32)
    # One pass for both moments (XLA fuses the two sums), then one
    # multiply-add per element: E[x^2] - E[x]^2, clipped at 0, as flax's
    # BatchNorm with use_fast_variance.
    rows = statistics_of.reshape(-1, x.shape[-1])
    mean = layers.sum_rows(rows) / rows.shape[0]
    mean_square = layers.sum_rows(jnp.square(rows)) / rows.shape[0]
    variance = jnp.maximum(mean_square - jnp.square(mean), 0.0)
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
    bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],))
    multiplier = scale * jax.lax.rsqrt(variance + self.epsilon)
    out = x.astype(jnp.float32) * multiplier + (bias - mean * multiplier)
    return out.astype(x.dtype)


def _normalize(kind: str, x, reference_rows: int):
  if kind == "batch":
    return BatchStatisticsNorm()(x, reference_rows)
  if kind == "layer":
    return nn.LayerNorm(dtype=x.dtype)(x)  # statistics in float32 (flax's default)
  return x


class _Pair(nn.Module):
  """Shared by both pairs: `__call__` touches every parameter once (for init)."""

  def __call__(self, z, x, labels=None):
    return self.generate(z, labels), self.discriminate(x, labels)


class _ConvGenerator(nn.Module):
  data_shape: tuple[int, ...]
  channels: Sequence[int]
  norm: str
  conv_transpose_impl: str
  num_classes: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z, labels=None, reference_rows: int = 0):
    height, width, out_channels = self.data_shape
    ups = len(self.channels)
    start_h, start_w = height // 2 ** ups, width // 2 ** ups
    if self.num_classes:
      # A learned class embedding beside z (the width of z) feeds the first layer.
      embedding = nn.Embed(self.num_classes, z.shape[-1], name="class_embedding")
      z = jnp.concatenate([z, embedding(labels).astype(z.dtype)], axis=-1)
    x = nn.Dense(start_h * start_w * self.channels[0] * 2, dtype=self.dtype)(z)
    x = x.reshape(z.shape[0], start_h, start_w, self.channels[0] * 2)
    x = nn.relu(_normalize(self.norm, x, reference_rows))
    for width_out in self.channels:
      x = layers.ConvTranspose(width_out, 4, 2, self.conv_transpose_impl, self.dtype)(x)
      x = nn.relu(_normalize(self.norm, x, reference_rows))
    return jnp.tanh(nn.Conv(out_channels, (3, 3), dtype=self.dtype)(x))


class _ConvDiscriminator(nn.Module):
  channels: Sequence[int]
  spectral_norm_iterations: int
  num_classes: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, labels=None, update: bool = False):
    iterations = self.spectral_norm_iterations
    for width in self.channels:
      conv = nn.Conv(width, (4, 4), strides=(2, 2), padding="SAME", dtype=self.dtype)
      x = nn.leaky_relu(maybe_spectral_norm(conv, iterations, x, update), 0.2)
    features = x.reshape(x.shape[0], -1)
    logits = maybe_spectral_norm(nn.Dense(1, dtype=self.dtype), iterations, features,
                                 update)[:, 0]
    if not self.num_classes:
      return logits
    # The projection discriminator (Miyato and Koyama, 2018): the logit gains
    # <V y, phi(x)>. V y is a bias-free dense layer on the one-hot label (one
    # row of V), so spectral normalization applies to V as to every kernel.
    one_hot = jax.nn.one_hot(labels, self.num_classes, dtype=features.dtype)
    projection = nn.Dense(features.shape[-1], use_bias=False, dtype=self.dtype,
                          name="class_projection")
    embedded = maybe_spectral_norm(projection, iterations, one_hot, update)
    return logits + jnp.sum(embedded * features, axis=-1)


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
  # > 0: class-conditional; the generator sees a class embedding beside z,
  # the discriminator projects the label onto its features.
  num_classes: int = 0
  dtype: Any = jnp.float32

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
                                    self.generator_norm, self.conv_transpose_impl,
                                    self.num_classes, self.dtype)
    self.discriminator = _ConvDiscriminator(tuple(self.discriminator_channels),
                                            self.spectral_norm_iterations, self.num_classes,
                                            self.dtype)

  @property
  def batch_dependent(self) -> bool:
    """Whether a generated image depends on the rest of its batch (batch norm)."""
    return self.generator_norm == "batch"

  def generate(self, z, labels=None, reference_rows: int = 0):
    """z: [b, latent_dim] (and labels [b] when conditional) -> images
    [b, h, w, c] in [-1, 1]; normalization statistics from the first
    `reference_rows` rows when > 0."""
    return self.generator(z, labels, reference_rows)

  def discriminate(self, x, labels=None, update: bool = False):
    """x: [b, h, w, c] in [-1, 1] (and labels [b] when conditional) -> logits
    [b] (real > 0); `update` advances the spectral normalization's power
    iteration (collection "spectral")."""
    return self.discriminator(x, labels, update)


class _MLP(nn.Module):
  hidden_sizes: Sequence[int]
  out: int
  act: str
  spectral_norm_iterations: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, update: bool = False):
    iterations = self.spectral_norm_iterations
    dense = lambda size: nn.Dense(size, dtype=self.dtype)
    for size in self.hidden_sizes:
      x = activation(self.act)(maybe_spectral_norm(dense(size), iterations, x, update))
    return maybe_spectral_norm(dense(self.out), iterations, x, update)


@register("mlp_gan", family="gan")
class MLPGAN(_Pair):
  """A generator and discriminator of MLPs, for 2-D points (toy2d)."""

  data_shape: tuple[int, ...]
  latent_dim: int = 2
  hidden_sizes: tuple[int, ...] = (128, 128, 128)
  activation: str = "relu"
  spectral_norm_iterations: int = 0
  dtype: Any = jnp.float32

  def setup(self):
    dims = self.data_shape[-1]
    # The generator's parameters never pass through spectral normalization.
    self.generator = _MLP(tuple(self.hidden_sizes), dims, self.activation, 0, self.dtype)
    self.discriminator = _MLP(tuple(self.hidden_sizes), 1, self.activation,
                              self.spectral_norm_iterations, self.dtype)

  batch_dependent = False

  num_classes = 0  # toy2d has no labels

  def generate(self, z, labels=None, reference_rows: int = 0):
    """z: [b, latent_dim] -> points [b, dims]."""
    del labels, reference_rows  # unconditional; no batch statistics
    return self.generator(z)

  def discriminate(self, x, labels=None, update: bool = False):
    """x: [b, dims] -> logits [b]."""
    del labels
    return self.discriminator(x, update)[:, 0]
