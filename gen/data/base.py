"""The one interface every dataset source implements.

A source is a random-access table of examples. The batching pipeline
(`gen.data.pipeline`) only ever asks a source for its length and for the rows
at an array of indices, so in-memory arrays and TFDS's `data_source` (which
reads rows from disk on demand) are handled by the same code.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np


@dataclasses.dataclass(frozen=True)
class SourceInfo:
  """What the model and the preprocessing need to know about a source.

  Attributes:
    name: dataset name as given in `config.data.name`.
    shape: shape of one example's `x`, e.g. (28, 28, 1) or (2,).
    kind: "image" (uint8 pixels in [0, 255]) or "vector" (float32 points).
    num_classes: number of labels, 0 when the data has none.
    class_names: optional human names of the labels.
  """

  name: str
  shape: tuple[int, ...]
  kind: str
  num_classes: int = 0
  class_names: tuple[str, ...] = ()


class Source(Protocol):
  """Random access to one split.

  `take(indices)` returns a dict with at least
    "x": [n, *info.shape], uint8 for kind="image", float32 for kind="vector";
    "label": [n] int32 (zeros when the data has no labels).
  """

  info: SourceInfo

  def __len__(self) -> int:
    ...

  def take(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    ...


class ArraySource:
  """A source held in memory as numpy arrays of equal length."""

  def __init__(self, info: SourceInfo, x: np.ndarray, label: np.ndarray | None = None):
    if label is None:
      label = np.zeros(len(x), np.int32)
    if len(x) != len(label):
      raise ValueError(f"{info.name}: {len(x)} examples but {len(label)} labels")
    self.info = info
    self.x = x
    self.label = label.astype(np.int32)

  def __len__(self) -> int:
    return len(self.x)

  def take(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    return {"x": self.x[indices], "label": self.label[indices]}
