"""A small CNN classifier: the feature space of sample-quality metrics.

FID-style metrics need features that know the data. An Inception network
trained on ImageNet knows little about 28x28 grey clothes; a classifier
trained on the dataset itself does (and works offline). Its penultimate
layer is the feature space of gen.evaluate.fidelity.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from gen.models import register


@register("cnn_classifier", family="classifier")
class CNNClassifier(nn.Module):
  """Blocks of two 3x3 convolutions and a 2x2 max-pool, then a dense feature layer.

  Attributes:
    data_shape: one example's shape, e.g. (28, 28, 1).
    num_classes: number of labels.
    channels: convolution width of each block.
    feature_size: width of the penultimate (feature) layer.
    dropout: dropout rate before the last layer, in training only.
  """

  data_shape: tuple[int, ...]
  num_classes: int = 10
  channels: tuple[int, ...] = (32, 64)
  feature_size: int = 128
  dropout: float = 0.0
  dtype: Any = jnp.float32

  def features(self, x):
    """x: [batch, h, w, c] float32 -> [batch, feature_size] float32 (after ReLU)."""
    for width in self.channels:
      x = nn.relu(nn.Conv(width, (3, 3), dtype=self.dtype)(x))
      x = nn.relu(nn.Conv(width, (3, 3), dtype=self.dtype)(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
    x = x.reshape(x.shape[0], -1)
    return nn.relu(nn.Dense(self.feature_size, name="feature_layer", dtype=self.dtype)(x))

  @nn.compact
  def __call__(self, x, train: bool = False, return_features: bool = False):
    """x: [batch, h, w, c] -> logits [batch, num_classes] (and the features)."""
    features = self.features(x)
    hidden = nn.Dropout(self.dropout, deterministic=not train)(features)
    logits = nn.Dense(self.num_classes, name="logits", dtype=self.dtype)(hidden)
    return (logits, features) if return_features else logits
