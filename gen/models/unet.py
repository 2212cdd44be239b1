"""The noise-prediction U-Net of DDPM (Ho et al., 2020), for gen.families.ddpm.

x_t [b, h, w, c] and the timestep t [b] -> predicted noise [b, h, w, c].

  - t enters through a sinusoidal embedding and a two-layer MLP, added (by a
    dense layer of its own) inside every residual block;
  - residual blocks: GroupNorm, SiLU, 3x3 conv, + time embedding, GroupNorm,
    SiLU, dropout, 3x3 conv, and a 1x1 conv on the skip path when the width
    changes;
  - one level per entry of `channel_mults` (width channels * mult), each with
    `num_res_blocks` residual blocks; a stride-2 conv halves the resolution
    between levels, nearest-neighbour upsampling and a 3x3 conv doubles it
    back; the way up takes the output of every block of the way down through
    a skip connection (num_res_blocks + 1 blocks per level, as in the paper);
  - single-head self-attention after the blocks of every level whose spatial
    size is in `attention_resolutions`, and always in the middle, between the
    two residual blocks at the lowest resolution.

Images whose side is not a multiple of 2 ** (len(channel_mults) - 1) are
padded up to one (see `padding`) and the output is cropped back.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen.models import layers, register


def timestep_embedding(t, dim: int, max_period: float = 10_000.0):
  """[b] timesteps (int or float) -> [b, dim] float32 sinusoidal features.

  Half the features are sines, half cosines, of t at frequencies from 1 down
  to 1 / max_period, geometrically spaced (the Transformer's position code),
  so that both neighbouring and distant timesteps are told apart.
  """
  half = dim // 2
  frequencies = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  angles = t.astype(jnp.float32)[:, None] * frequencies[None, :]
  embedding = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
  if dim % 2:
    embedding = jnp.pad(embedding, ((0, 0), (0, 1)))
  return embedding


def class_embedding(num_classes: int, dim: int, labels, batch: int, dtype):
  """[b, dim] learned embedding of each label (0 for an unconditional model);
  labels None, or the index num_classes, is the "no class" row."""
  if not num_classes:
    if labels is not None:
      raise ValueError("class labels given to an unconditional model: set "
                       "config.model.num_classes")
    return jnp.zeros((batch, dim), dtype)
  if labels is None:
    labels = jnp.full((batch,), num_classes, jnp.int32)
  return nn.Embed(num_classes + 1, dim, dtype=dtype)(labels)


def padding(size: int, multiple: int) -> tuple[int, int]:
  """(before, after) that take `size` up to the next multiple of `multiple`,
  split as evenly as possible so the image stays centred."""
  total = -size % multiple
  return total // 2, total - total // 2


class ResBlock(nn.Module):
  """x [b, h, w, c_in], time embedding [b, e] -> [b, h, w, features]."""

  features: int
  num_groups: int
  dropout: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, embedding, train: bool):
    # GroupNorm's statistics are float32 whatever the dtype (flax's default).
    norm = lambda: layers.GroupNorm(self.num_groups, dtype=self.dtype)
    h = nn.silu(norm()(x))
    h = nn.Conv(self.features, (3, 3), dtype=self.dtype)(h)
    # A per-channel shift by the timestep: every block knows the noise level.
    h = h + nn.Dense(self.features, dtype=self.dtype)(nn.silu(embedding))[:, None, None, :]
    h = nn.silu(norm()(h))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    # Zero-initialized, so that each block starts as the identity on its skip
    # path (as in the paper's code): a deep U-Net then trains from step 0.
    h = nn.Conv(self.features, (3, 3), kernel_init=nn.initializers.zeros_init(),
                dtype=self.dtype)(h)
    if x.shape[-1] != self.features:
      x = nn.Conv(self.features, (1, 1), dtype=self.dtype)(x)
    return x + h


class AttentionBlock(nn.Module):
  """Single-head self-attention over the h * w positions, with a residual."""

  num_groups: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, height, width, channels = x.shape
    h = layers.GroupNorm(self.num_groups, dtype=self.dtype)(x)
    h = h.reshape(b, height * width, channels)
    query, key, value = jnp.split(nn.Dense(3 * channels, dtype=self.dtype)(h), 3, axis=-1)
    # The softmax in float32: in bfloat16 its sum over positions loses digits.
    logits = jnp.einsum("bqc,bkc->bqk", query, key).astype(jnp.float32) / math.sqrt(channels)
    weights = jax.nn.softmax(logits, axis=-1).astype(value.dtype)
    h = jnp.einsum("bqk,bkc->bqc", weights, value)
    # Zero-initialized output projection: the block starts as the identity.
    h = nn.Dense(channels, kernel_init=nn.initializers.zeros_init(), dtype=self.dtype)(h)
    return x + h.reshape(b, height, width, channels)


@register("unet", family="ddpm")
class UNet(nn.Module):
  """Predicts the noise in x_t; see the module docstring for the layout.

  Attributes:
    data_shape: (h, w, c) of one image (set by the loop).
    channels: width of the first level.
    channel_mults: one per resolution level; level i is channels * mult[i] wide.
    num_res_blocks: residual blocks per level on the way down (one more up).
    attention_resolutions: heights of the (padded) feature maps after whose
      blocks self-attention is applied, e.g. (16,) for 32x32 images; each
      must be the height of some level.
    dropout: rate in the residual blocks, in training only (rng "dropout").
    num_groups: GroupNorm groups; must divide channels * every mult.
    num_classes: 0 = unconditional; else a class embedding (num_classes + 1
      rows, the last for "no class", what classifier-free guidance's
      unconditional half and label dropout use) is added to the time
      embedding.
  """

  data_shape: Sequence[int]
  channels: int = 64
  channel_mults: Sequence[int] = (1, 2, 2)
  num_res_blocks: int = 2
  attention_resolutions: Sequence[int] = (8,)
  dropout: float = 0.1
  num_groups: int = 8
  num_classes: int = 0
  # Computation dtype (config.train.compute_dtype); parameters stay float32.
  dtype: Any = jnp.float32

  def level_sizes(self, height: int) -> list[int]:
    """The height of the feature maps at each level, after padding."""
    size = height + sum(padding(height, 2 ** (len(self.channel_mults) - 1)))
    return [size // 2 ** level for level in range(len(self.channel_mults))]

  def check(self, height: int, width: int) -> None:
    """Raises ValueError, naming the config key, on settings that cannot work."""
    if not self.channel_mults or any(m < 1 for m in self.channel_mults):
      raise ValueError(f"config.model.channel_mults={tuple(self.channel_mults)} must be a "
                       f"non-empty tuple of positive integers")
    if self.num_res_blocks < 1:
      raise ValueError(f"config.model.num_res_blocks={self.num_res_blocks} must be >= 1")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"config.model.dropout={self.dropout} must be in [0, 1)")
    widths = sorted({self.channels * m for m in self.channel_mults})
    if self.num_groups < 1 or any(w % self.num_groups for w in widths):
      raise ValueError(f"config.model.num_groups={self.num_groups} must divide every width "
                       f"of config.model.channels * channel_mults: {widths}")
    sizes = self.level_sizes(height)
    missing = sorted(set(self.attention_resolutions) - set(sizes))
    if missing:
      raise ValueError(
          f"config.model.attention_resolutions={tuple(self.attention_resolutions)}: no level "
          f"has size {missing}; the levels of {height}x{width} images with "
          f"channel_mults={tuple(self.channel_mults)} are {sizes}")

  @nn.compact
  def __call__(self, x, t, train: bool, labels=None):
    """x: [b, h, w, c] float32; t: [b] int or float timesteps; labels: [b] class
    indices (num_classes = none; None = none for all) -> [b, h, w, c] noise."""
    _, height, width, out_channels = x.shape
    self.check(height, width)
    # Reflect padding, not zeros: the padded border then carries the same
    # noise level and pixel statistics as the image at every t, so the
    # network needs no special case for a clean (zero) frame around noise.
    multiple = 2 ** (len(self.channel_mults) - 1)
    pad_h, pad_w = padding(height, multiple), padding(width, multiple)
    if any(pad_h + pad_w):
      x = jnp.pad(x, ((0, 0), pad_h, pad_w, (0, 0)), mode="reflect")

    embedding_dim = 4 * self.channels
    embedding = timestep_embedding(t, self.channels)
    dense = lambda size: nn.Dense(size, dtype=self.dtype)
    conv = lambda width, **kwargs: nn.Conv(width, (3, 3), dtype=self.dtype, **kwargs)
    embedding = dense(embedding_dim)(nn.silu(dense(embedding_dim)(embedding)))
    embedding = embedding + class_embedding(self.num_classes, embedding_dim, labels,
                                            x.shape[0], self.dtype)

    block = lambda features: ResBlock(features, self.num_groups, self.dropout, self.dtype)
    attend = lambda h: (AttentionBlock(self.num_groups, self.dtype)(h)
                        if h.shape[1] in self.attention_resolutions else h)
    last = len(self.channel_mults) - 1

    h = conv(self.channels)(x)
    skips = [h]
    for level, mult in enumerate(self.channel_mults):
      for _ in range(self.num_res_blocks):
        h = attend(block(self.channels * mult)(h, embedding, train))
        skips.append(h)
      if level != last:
        h = conv(h.shape[-1], strides=(2, 2))(h)
        skips.append(h)

    h = block(h.shape[-1])(h, embedding, train)
    h = AttentionBlock(self.num_groups, self.dtype)(h)
    h = block(h.shape[-1])(h, embedding, train)

    for level, mult in reversed(list(enumerate(self.channel_mults))):
      for _ in range(self.num_res_blocks + 1):
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        h = attend(block(self.channels * mult)(h, embedding, train))
      if level != 0:
        # Nearest-neighbour 2x upsampling as a repeat: jax.image.resize's
        # gather differentiates into a scatter-add, slow on XLA:CPU; the
        # values are identical.
        h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
        h = conv(h.shape[-1])(h)

    h = nn.silu(layers.GroupNorm(self.num_groups, dtype=self.dtype)(h))
    # Zero-initialized: the untrained model predicts eps = 0, so the first loss
    # is E[eps^2] = 1 whatever the other initial weights do, and the first
    # updates are not fighting a large random output.
    out = conv(out_channels, kernel_init=nn.initializers.zeros_init())(h)
    return out[:, pad_h[0]:pad_h[0] + height, pad_w[0]:pad_w[0] + width, :]
