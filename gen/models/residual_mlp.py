"""A residual MLP denoiser for gen.families.ddpm: small codes, flattened.

x_t [b, h, w, c] and the time t [b] -> [b, h, w, c] (noise, v or velocity,
whatever the family's objective asks of it).

The input is flattened and projected to `width`; then `num_blocks` residual
blocks, each LayerNorm -> Dense(width * expansion) -> scale and shift by the
time embedding (adaLN, as in DiT) -> SiLU -> dropout -> Dense(width), its
output layer zero-initialized so every block starts as the identity; a final
LayerNorm and a zero-initialized projection back to h * w * c.

Why an MLP where images take a U-Net: for the 7x7x4 codes of a latent model
the U-Net's convolutions at 8x8 and 4x4 spend most of their FLOPs on padding
and tiny feature maps, while a dense layer's matrix products are what a CPU
(or an accelerator) runs fastest: at equal training time the MLP sees several
times more examples (measured: docs/diffusion.md). The second stage of a
two-stage VAE (Dai and Wipf, 2019) is an MLP for the same reason.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from gen.models import register
from gen.models.unet import class_embedding, timestep_embedding


class ResidualBlock(nn.Module):
  width: int
  expansion: int
  dropout: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h, embedding, train: bool):
    y = nn.LayerNorm(dtype=self.dtype)(h)
    y = nn.Dense(self.width * self.expansion, dtype=self.dtype)(y)
    scale, shift = jnp.split(nn.Dense(2 * self.width * self.expansion, dtype=self.dtype,
                                      kernel_init=nn.initializers.zeros_init())(embedding), 2, -1)
    y = nn.silu(y * (1.0 + scale) + shift)
    y = nn.Dropout(self.dropout, deterministic=not train)(y)
    y = nn.Dense(self.width, dtype=self.dtype, kernel_init=nn.initializers.zeros_init())(y)
    return h + y


@register("residual_mlp", family="ddpm")
class ResidualMLP(nn.Module):
  """Attributes:
    data_shape: (h, w, c) of one input (set by the loop).
    width: the residual stream's width.
    num_blocks: residual blocks.
    expansion: each block's hidden layer is width * expansion wide.
    dropout: rate inside the blocks, in training only (rng "dropout").
  """

  data_shape: Sequence[int]
  width: int = 1024
  num_blocks: int = 6
  expansion: int = 2
  dropout: float = 0.0
  num_classes: int = 0  # as gen.models.unet.UNet's
  dtype: Any = jnp.float32

  def check(self) -> None:
    """Raises ValueError, naming the config key, on settings that cannot work."""
    for key in ("width", "num_blocks", "expansion"):
      if getattr(self, key) < 1:
        raise ValueError(f"config.model.{key}={getattr(self, key)} must be >= 1")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"config.model.dropout={self.dropout} must be in [0, 1)")

  @nn.compact
  def __call__(self, x, t, train: bool, labels=None):
    self.check()
    batch = x.shape[0]
    size = math.prod(x.shape[1:])
    embedding = timestep_embedding(t, 256)
    embedding = nn.Dense(self.width, dtype=self.dtype)(embedding)
    embedding = nn.silu(nn.Dense(self.width, dtype=self.dtype)(nn.silu(embedding)))
    embedding = embedding + class_embedding(self.num_classes, self.width, labels, batch,
                                            self.dtype)
    h = nn.Dense(self.width, dtype=self.dtype)(x.reshape(batch, size))
    for _ in range(self.num_blocks):
      h = ResidualBlock(self.width, self.expansion, self.dropout, self.dtype)(h, embedding, train)
    h = nn.LayerNorm(dtype=self.dtype)(h)
    out = nn.Dense(size, dtype=self.dtype, kernel_init=nn.initializers.zeros_init())(h)
    return out.reshape(x.shape).astype(x.dtype)
